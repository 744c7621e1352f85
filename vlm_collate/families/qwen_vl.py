"""``Qwen25VLCollator``: Qwen2-VL, Qwen2.5-VL and Qwen3-VL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from .._pipeline import BaseCollator
from ..labels import DerivedTemplateMarker, FirstOf, ImStartMarker, LabelStrategy, LegacyBPEMatch
from ..media import MediaStrategy, PlainMedia
from ..registry import register_collator

__all__ = ["Qwen25VLCollator"]


def _qwen_labels() -> LabelStrategy:
    return FirstOf(ImStartMarker(), DerivedTemplateMarker(), LegacyBPEMatch())


@register_collator(
    "Qwen2_5_VLProcessor", "Qwen2VLProcessor", "Qwen3VLProcessor", "Qwen3VLMoeProcessor"
)
@attrs.define(kw_only=True)
class Qwen25VLCollator(BaseCollator):
    """NeMo Automodel's ``qwen2_5_collate_fn``.

    Each conversation is rendered to text, then the processor runs on the texts
    with the images and videos as the conversation gives them (pass
    ``media_strategy=QwenVLUtilsMedia()`` to have ``qwen-vl-utils`` read and
    resize them as Qwen's reference code does). ChatML markers are read from
    the vocabulary. Pixels keep the processor's dtype, as in NeMo Automodel; frames
    of videos are not re-sampled (``do_sample_frames=False``).
    """

    label_strategy: LabelStrategy = attrs.field(factory=_qwen_labels)
    media_strategy: MediaStrategy = attrs.field(factory=PlainMedia)
    processor_defaults: ClassVar[Mapping[str, Any]] = {"do_sample_frames": False}
