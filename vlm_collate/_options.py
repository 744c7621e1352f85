"""attrs validators shared by the collators and the label policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from .errors import ConfigurationError

__all__ = ["one_of"]


def one_of(*choices: str) -> Callable[[Any, attrs.Attribute, Any], None]:
    """A validator accepting only ``choices``; anything else is a
    [`ConfigurationError`][vlm_collate.ConfigurationError]."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            options = ", ".join(repr(choice) for choice in choices)
            msg = f"'{attribute.name}' must be one of {options} (got {value!r})."
            raise ConfigurationError(msg)

    return check
