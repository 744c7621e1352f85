"""The one lazy-cache idiom: results computed once per object (a tokenizer, a processor).

Entries are held weakly by the object they describe, so they go away with
it; objects that cannot be weakly referenced are simply not cached. Nothing
is stored on collators, which keeps them small to pickle and safe to share
between threads.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

__all__ = ["ObjectCache"]

T = TypeVar("T")


class ObjectCache:
    """Values keyed by ``(owner object, key)``; an entry lives as long as its owner."""

    def __init__(self) -> None:
        self._entries: weakref.WeakKeyDictionary[Any, dict[Hashable, Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def get_or_compute(self, owner: Any, key: Hashable, compute: Callable[[], T]) -> T:
        """The cached value for ``(owner, key)``, computing and storing it on first use."""
        try:
            with self._lock:
                per_owner = self._entries.get(owner)
                if per_owner is not None and key in per_owner:
                    return per_owner[key]  # type: ignore[no-any-return]
        except TypeError:  # the owner cannot be weakly referenced, or is unhashable
            return compute()
        value = compute()  # outside the lock: computing may render templates
        try:
            with self._lock:
                self._entries.setdefault(owner, {})[key] = value
        except TypeError:
            pass
        return value

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()
