"""Per-call state that stays right when one collator serves several threads.

A collator instance is shared: by the threads of a ``ThreadPoolExecutor``, or
copied into each ``DataLoader`` worker process. What one call leaves behind
for its caller (its [`CollateReport`][vlm_collate.CollateReport]) is kept per thread,
so two concurrent calls never read each other's report, and the counters
that add up over calls are updated under a lock.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["CallState"]


class CallState:
    """Each thread's result of its last call, and a lock for shared counters.

    It pickles (and copies) as a fresh, empty state: a collator sent to a
    spawned worker starts with no report, as a new collator would.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self.lock = threading.Lock()

    def get(self, name: str) -> Any:
        """The value this thread last stored under ``name``, or None."""
        return getattr(self._local, name, None)

    def set(self, name: str, value: Any) -> None:
        """Store ``value`` under ``name`` for this thread only."""
        setattr(self._local, name, value)

    def __reduce__(self) -> tuple[type[CallState], tuple[()]]:
        return (CallState, ())

    def __deepcopy__(self, memo: dict[int, Any]) -> CallState:
        return CallState()
