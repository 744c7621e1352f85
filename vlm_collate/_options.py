"""attrs validators shared by the collators and the label policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch

from .errors import ConfigurationError

__all__ = ["one_of", "positive_or_none", "to_dtype"]


def one_of(*choices: str) -> Callable[[Any, attrs.Attribute, Any], None]:
    """A validator accepting only ``choices``; anything else is a :class:`ConfigurationError`."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            options = ", ".join(repr(choice) for choice in choices)
            msg = f"'{attribute.name}' must be one of {options} (got {value!r})."
            raise ConfigurationError(msg)

    return check


def positive_or_none(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A validator accepting None or an int > 0 (not a bool)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        msg = f"'{attribute.name}' must be a positive int or None (got {value!r})."
        raise ConfigurationError(msg)


def to_dtype(value: Any) -> torch.dtype | str | None:
    """Convert a dtype option: a ``torch.dtype``, its name, ``"auto"`` or None."""
    if value is None or value == "auto" or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str):
        dtype = getattr(torch, value.removeprefix("torch."), None)
        if isinstance(dtype, torch.dtype):
            return dtype
    msg = f"'pixel_dtype' must be a torch dtype, its name, 'auto' or None (got {value!r})."
    raise ConfigurationError(msg)
