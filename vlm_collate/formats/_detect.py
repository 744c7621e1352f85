"""Choosing a row format by name, or by the shape of the row (``format="auto"``).

Detection is strict: ``"auto"`` picks a format only when exactly one fits the
row, and otherwise raises a [`SampleError`][vlm_collate.SampleError] that lists every
format with what the row lacks for it (or the formats that all fit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from ..errors import ConfigurationError, SampleError, SampleTypeError
from ._formats import (
    Cauldron,
    Conversation,
    LlamaFactory,
    Messages,
    OpenAIChat,
    RowFormat,
    ShareGPT,
)

__all__ = ["FORMATS", "AutoFormat", "convert", "detect", "get_format"]

FORMATS: Mapping[str, type[RowFormat]] = {
    cls.name: cls for cls in (Conversation, Messages, ShareGPT, LlamaFactory, OpenAIChat, Cauldron)
}
_ALIASES = {
    "trl": "messages",
    "hf": "messages",
    "llava": "sharegpt",
    "llava_onevision": "sharegpt",
    "llama_factory": "llamafactory",
    "the_cauldron": "cauldron",
}


@attrs.frozen(kw_only=True)
class AutoFormat(RowFormat):
    """Converts each row with the one format that fits it, or says why none or several do."""

    name: ClassVar[str] = "auto"

    def missing(self, row: Mapping[str, Any]) -> str | None:
        return None

    def convert(self, row: Any, index: int | None = None) -> Any:
        chosen = self.detect(row, index)
        return attrs.evolve(chosen, roles=self.roles, base=self.base).convert(row, index)

    def detect(self, row: Any, index: int | None = None) -> RowFormat:
        """The format instance that fits ``row``; raises when none or several fit."""
        if not isinstance(row, Mapping):
            msg = f"expected a row as a mapping (got {type(row).__name__})"
            raise SampleTypeError(msg, sample_index=index)
        formats = [cls() for cls in FORMATS.values()]
        problems = {fmt.name: fmt.missing(row) for fmt in formats}
        fitting = [fmt for fmt in formats if problems[fmt.name] is None]
        if len(fitting) == 1:
            return fitting[0]
        keys = ", ".join(repr(key) for key in list(row)[:8]) or "none"
        if fitting:
            names = ", ".join(fmt.name for fmt in fitting)
            msg = (
                f"the row (keys: {keys}) fits several formats ({names}); pass format= to choose one"
            )
        else:
            reasons = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
            msg = f"no format fits the row (keys: {keys}): {reasons}"
        raise SampleError(msg, sample_index=index)


def get_format(
    value: str | RowFormat, *, roles: Mapping[str, str] | None = None, base: Any = None
) -> RowFormat:
    """The converter for ``value``: a format name, ``"auto"`` or a
    [`RowFormat`][vlm_collate.formats.RowFormat].

    Args:
        value: ``"conversation"``, ``"messages"`` (or ``"trl"``), ``"sharegpt"``
            (or ``"llava"``), ``"llamafactory"``, ``"openai"``, ``"cauldron"``,
            ``"auto"``, or a configured [`RowFormat`][vlm_collate.formats.RowFormat].
        roles: Role renames over the format's own map (``{"bot": "assistant"}``).
        base: Folder relative media paths are resolved against.

    Raises:
        ConfigurationError: ``value`` names no format.
    """
    if isinstance(value, RowFormat):
        if roles is None and base is None:
            return value
        changes = {"roles": roles} if roles is not None else {}
        return attrs.evolve(value, **changes, base=base if base is not None else value.base)
    name = _ALIASES.get(value, value) if isinstance(value, str) else value
    cls = AutoFormat if name == "auto" else FORMATS.get(name) if isinstance(name, str) else None
    if cls is None:
        names = ", ".join(repr(name) for name in (*FORMATS, "auto"))
        msg = f"'format' must be one of {names} or a RowFormat (got {value!r})."
        raise ConfigurationError(msg)
    return cls(roles=roles or {}, base=base)


def detect(row: Any, index: int | None = None) -> str:
    """The name of the one format that fits ``row``.

    Raises:
        SampleError: No format fits, or several do; the message lists what
            each format is missing (or which formats fit).
    """
    return AutoFormat().detect(row, index).name


def convert(
    row: Any,
    format: str | RowFormat = "auto",
    *,
    index: int | None = None,
    roles: Mapping[str, str] | None = None,
    base: Any = None,
) -> Any:
    """Convert one dataset row to the library's own ``{"conversation": [...]}`` sample.

    Args:
        row: A row in any supported format.
        format: A format name (see [`get_format`][vlm_collate.formats.get_format]), ``"auto"`` (the
            default) or
            a [`RowFormat`][vlm_collate.formats.RowFormat].
        index: The row's position, named in errors.
        roles: Role renames over the format's own map.
        base: Folder relative media paths are resolved against.
    """
    return get_format(format, roles=roles, base=base).convert(row, index)


def format_converter(value: Any) -> RowFormat:
    """attrs converter for a collator's ``format`` option."""
    if isinstance(value, RowFormat):
        return value
    if not isinstance(value, str):
        msg = f"'format' must be a format name or a RowFormat (got {type(value).__name__})."
        raise ConfigurationError(msg)
    return get_format(value)
