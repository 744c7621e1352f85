"""The validated sample and the helpers that read a conversation.

A sample is a mapping with a ``"conversation"``: a list of ``{"role", "content"}``
messages whose content is a string or a list of typed items
(``text``/``image``/``video``/``audio``). ``_prepare.prepare_sample`` checks that
shape and builds the [`Sample`][vlm_collate._samples.Sample] defined here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from .errors import BatchError

__all__ = [
    "MEDIA_TYPES",
    "STEERING_KEYS",
    "Sample",
    "count_media",
    "find_special_token",
    "iter_texts",
    "is_weight",
    "require_batch",
]

MEDIA_TYPES = ("image", "video", "audio")
# Underscore keys of a sample that steer the library; honoured only when trusted.
STEERING_KEYS = ("_injected_fake",)
ITEM_TYPES = ("text", *MEDIA_TYPES)


@attrs.frozen
class Sample:
    """One sample after validation.

    Args:
        index: Position of the sample in the batch the caller passed in.
        conversation: A normalised copy of the sample's conversation.
        example: The caller's original mapping (read, never modified).
        media_notes: ``(reason, detail)`` pairs the media readers noted for the
            collate report (a multi-frame image read as its first frame).
        flags: The sample's library-steering keys (such as ``"_injected_fake"``)
            that the collator was told to trust; a key it does not trust is
            never here, whatever the row holds.
    """

    index: int
    conversation: list[dict[str, Any]]
    example: Mapping[str, Any] = attrs.field(repr=False)
    media_notes: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False, eq=False)
    flags: Mapping[str, Any] = attrs.field(factory=dict, repr=False)


def require_batch(examples: Any, noun: str = "samples") -> None:
    """Raise [`BatchError`][vlm_collate.BatchError] unless ``examples`` is a non-empty list-like
    batch."""
    if isinstance(examples, (str, bytes, Mapping)) or not isinstance(examples, Sequence):
        msg = f"expected a list of {noun} (got {type(examples).__name__})."
        raise BatchError(msg)
    if not examples:
        msg = f"the batch is empty (got 0 {noun})."
        raise BatchError(msg)


def is_weight(value: Any) -> bool:
    """Whether ``value`` is a loss weight: a finite real number >= 0 (not a bool)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def iter_texts(conversation: Iterable[Mapping[str, Any]]) -> Iterator[tuple[int, str]]:
    """Yield ``(message_index, text)`` for every text the template will render."""
    for position, message in enumerate(conversation):
        content = message.get("content")
        if isinstance(content, str):
            yield position, content
        elif isinstance(content, list):
            for item in content:
                if item.get("type") == "text":
                    yield position, item["text"]
        reasoning = message.get("reasoning_content")
        if isinstance(reasoning, str):
            yield position, reasoning
        if message.get("tool_calls"):
            # Templates render tool calls (names, JSON arguments) into the text too.
            yield position, json.dumps(message["tool_calls"], ensure_ascii=False, default=str)


def find_special_token(
    conversation: Iterable[Mapping[str, Any]], pattern: re.Pattern[str] | None
) -> tuple[int, str] | None:
    """Return ``(message_index, token)`` of the first control token found in text."""
    if pattern is None:
        return None
    for position, text in iter_texts(conversation):
        found = pattern.search(text)
        if found:
            return position, found.group(0)
    return None


def count_media(conversation: Iterable[Mapping[str, Any]], kind: str) -> int:
    """Count the items of one modality in a conversation."""
    return sum(
        1
        for message in conversation
        if isinstance(message.get("content"), list)
        for item in message["content"]
        if item.get("type") == kind
    )
