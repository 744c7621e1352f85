"""Offline processor builders for model families, one module each.

Each module calls [`vlm_collate.testing.register_family`][vlm_collate.testing.register_family] when
imported;
importing this package imports them all.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
