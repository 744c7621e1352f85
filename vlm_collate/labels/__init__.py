"""Which tokens are trained: label strategies, the label policy, roles and generation tags.

A label strategy answers a question about the chat template (where are the
assistant turns?); [`LabelPolicy`][vlm_collate.LabelPolicy] answers one about training (which of
those turns to learn from, and how).
"""

from __future__ import annotations

from .._public import publish as _publish
from ._generation import (
    GenerationTagMask,
    align_token_ids,
    has_generation_block,
)
from ._policy import (
    LabelPolicy,
    ReasoningMarkers,
    Turn,
    find_turns,
    mask_enclosed,
)
from ._roles import (
    role_markers,
)
from ._strategies import (
    IGNORE_INDEX,
    DerivedTemplateMarker,
    FirstOf,
    ImStartMarker,
    LabelStrategy,
    LegacyBPEMatch,
    MarkerStrategy,
    SkipEmptyThink,
    TurnMarkers,
    assistant_spans,
    is_blank,
    labels_from_spans,
    message_text,
    naive_assistant_spans,
    reasoning_block_end,
    single_token_id,
    tokenize_with_offsets,
    tokenizer_of,
    with_fallbacks,
)

__all__ = [
    "DerivedTemplateMarker",
    "FirstOf",
    "GenerationTagMask",
    "IGNORE_INDEX",
    "ImStartMarker",
    "LabelPolicy",
    "LabelStrategy",
    "LegacyBPEMatch",
    "MarkerStrategy",
    "ReasoningMarkers",
    "SkipEmptyThink",
    "Turn",
    "TurnMarkers",
    "align_token_ids",
    "assistant_spans",
    "find_turns",
    "has_generation_block",
    "is_blank",
    "labels_from_spans",
    "mask_enclosed",
    "message_text",
    "naive_assistant_spans",
    "reasoning_block_end",
    "role_markers",
    "single_token_id",
    "tokenize_with_offsets",
    "tokenizer_of",
    "with_fallbacks",
]

_publish(globals(), __all__, "vlm_collate.labels")
