"""Giving public names the module path users import them from."""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["publish"]


def publish(namespace: Mapping[str, Any], names: Iterable[str], module: str) -> None:
    """Set ``__module__`` of the classes and functions ``names`` of ``namespace`` to ``module``.

    Pickles, Hydra ``_target_`` paths, reprs and the docs then name
    ``vlm_collate.Qwen25VLCollator`` rather than the private file that
    defines it, so moving code between private modules breaks nobody.
    """
    for name in names:
        value = namespace[name]
        if isinstance(value, (type, types.FunctionType)):
            value.__module__ = module
