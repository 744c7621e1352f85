"""Optional packages, imported where they are used."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, hint: str) -> ModuleType:
    """Import ``module``, or raise [`MissingDependencyError`][vlm_collate.MissingDependencyError].

    ``hint`` says who needs it and what to install, for example
    ``"Parquet shards need pyarrow: pip install 'vlm-collate[parquet]'"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(hint) from exc
