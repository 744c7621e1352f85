"""The attrs validators and converters of every collator, wrapper and policy option.

Options are checked when an object is built, so a wrong value fails at
construction with a [`ConfigurationError`][vlm_collate.ConfigurationError] naming the
field, what it expects and what it got, never later in the middle of a batch
as a bare ``TypeError``. Booleans must be real ``bool`` values (a YAML string
``"False"`` is truthy), and ints must be ints (``True`` is not a length).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import attrs
import torch

from .errors import ConfigurationError

__all__ = [
    "MAX_TOKENS",
    "Validator",
    "boolean",
    "exception_types",
    "instance_of",
    "int_at_least",
    "integer",
    "is_callable",
    "non_negative_int",
    "non_negative_int_or_none",
    "one_of",
    "optional",
    "positive_int",
    "positive_int_or_none",
    "sequence_like",
    "string",
    "strings",
    "subset_of",
    "to_dict",
    "to_names",
    "to_pixel_dtype",
    "to_pixel_dtype_or_auto",
    "token_count",
    "token_count_or_none",
]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

#: Upper bound of every length option (max_length, pad_to_multiple_of, pack_size): 16M
#: tokens. Larger values are typos that would make the padding step allocate gigabytes.
MAX_TOKENS = 2**24


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fail(attribute: attrs.Attribute[Any], expected: str, value: Any) -> None:
    msg = f"'{attribute.name}' must be {expected} (got {value!r})."
    raise ConfigurationError(msg)


def one_of(*choices: Any, why: str = "") -> Validator:
    """A validator accepting only ``choices``; ``why`` explains the restriction."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        try:
            known = value in choices
        except (TypeError, ValueError, RuntimeError):  # arrays and odd objects are no choice
            known = False
        if not known or isinstance(value, bool) is not any(isinstance(c, bool) for c in choices):
            options = ", ".join(repr(choice) for choice in choices)
            reason = f" for {why}" if why else ""
            _fail(attribute, f"one of {options}{reason}", value)

    return check


def optional(validator: Validator) -> Validator:
    """``validator``, with None accepted as well."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            validator(instance, attribute, value)

    return check


def boolean(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """True or False, and nothing that merely looks like one (``"no"``, ``0``)."""
    if not isinstance(value, bool):
        _fail(attribute, "True or False", value)


def integer(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Any int (not a bool)."""
    if not _is_int(value):
        _fail(attribute, "an int", value)


def int_at_least(minimum: int) -> Validator:
    """An int (not a bool) of at least ``minimum``."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not _is_int(value) or value < minimum:
            _fail(attribute, f"an int of at least {minimum}", value)

    return check


def positive_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """An int > 0."""
    if not _is_int(value) or value <= 0:
        _fail(attribute, "a positive int", value)


def positive_int_or_none(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """An int > 0, or None."""
    if value is not None and (not _is_int(value) or value <= 0):
        _fail(attribute, "a positive int or None", value)


def token_count(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A length in tokens: an int in ``[1, MAX_TOKENS]``."""
    if not _is_int(value) or not 0 < value <= MAX_TOKENS:
        _fail(attribute, f"a positive int of at most {MAX_TOKENS}", value)


def token_count_or_none(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A length in tokens (an int in ``[1, MAX_TOKENS]``), or None."""
    if value is not None and (not _is_int(value) or not 0 < value <= MAX_TOKENS):
        _fail(attribute, f"a positive int of at most {MAX_TOKENS} or None", value)


def non_negative_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """An int >= 0."""
    if not _is_int(value) or value < 0:
        _fail(attribute, "a non-negative int", value)


def non_negative_int_or_none(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """An int >= 0 (a token id), or None."""
    if value is not None and (not _is_int(value) or value < 0):
        _fail(attribute, "a non-negative int or None", value)


def string(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A str."""
    if not isinstance(value, str):
        _fail(attribute, "a string", value)


def strings(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A tuple of str (after a ``tuple`` converter)."""
    if not isinstance(value, tuple) or not all(isinstance(item, str) for item in value):
        _fail(attribute, "a sequence of strings", value)


def subset_of(allowed: Collection[str]) -> Validator:
    """A tuple whose every item is one of ``allowed``."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        unknown = [item for item in value if item not in allowed]
        if unknown:
            names = ", ".join(repr(name) for name in sorted(allowed))
            _fail(attribute, f"a sequence of names among {names}", tuple(value))

    return check


def _to_names(value: Any, field: attrs.Attribute[Any]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        names = tuple(value)
        if all(isinstance(name, str) for name in names):
            return names
    _fail(field, "a name or a sequence of names, as strings", value)
    raise AssertionError("unreachable")  # pragma: no cover


#: Converter: one name or an iterable of names, as a tuple of str.
to_names = attrs.Converter(_to_names, takes_field=True)


def instance_of(kind: type) -> Validator:
    """An instance of ``kind``."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, kind):
            msg = f"'{attribute.name}' must be a {kind.__name__} (got {type(value).__name__})."
            raise ConfigurationError(msg)

    return check


def is_callable(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Anything callable."""
    if not callable(value):
        msg = f"'{attribute.name}' must be callable (got {type(value).__name__})."
        raise ConfigurationError(msg)


def sequence_like(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Something that supports ``len()`` and indexing (a dataset)."""
    missing = [name for name in ("__len__", "__getitem__") if not hasattr(type(value), name)]
    if missing:
        msg = (
            f"'{attribute.name}' must support len() and indexing "
            f"(got {type(value).__name__}, which lacks {' and '.join(missing)})."
        )
        raise ConfigurationError(msg)


def exception_types(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A non-empty tuple of Exception subclasses."""
    if not value or not all(isinstance(t, type) and issubclass(t, Exception) for t in value):
        _fail(attribute, "a non-empty tuple of Exception subclasses", value)


def _to_dict(value: Any, field: attrs.Attribute[Any]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        _fail(field, "a mapping with str keys", value)
    return dict(value)


#: Converter: a mapping option (such as ``processor_kwargs``) as a fresh dict with str keys.
to_dict = attrs.Converter(_to_dict, takes_field=True)


def _dtype_of(value: Any) -> torch.dtype | None:
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, str):
        found = getattr(torch, value.removeprefix("torch."), None)
        if isinstance(found, torch.dtype):
            return found
    return None


def to_pixel_dtype(value: Any) -> torch.dtype | None:
    """A floating torch dtype (or its name, ``"bfloat16"``), or None to keep the input's."""
    if value is None:
        return None
    dtype = _dtype_of(value)
    if dtype is None or not dtype.is_floating_point:
        msg = (
            "'pixel_dtype' must be a floating torch dtype (torch.float32, torch.bfloat16, ...), "
            f"its name or None (got {value!r})."
        )
        raise ConfigurationError(msg)
    return dtype


def to_pixel_dtype_or_auto(value: Any) -> torch.dtype | str | None:
    """As `to_pixel_dtype`, and ``"auto"`` for the family default."""
    if isinstance(value, str) and value == "auto":
        return value
    try:
        return to_pixel_dtype(value)
    except ConfigurationError:
        msg = (
            "'pixel_dtype' must be a floating torch dtype (torch.float32, torch.bfloat16, ...), "
            f"its name, 'auto' or None (got {value!r})."
        )
        raise ConfigurationError(msg) from None
