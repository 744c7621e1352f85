"""``Qwen25VLCollator``: Qwen2-VL, Qwen2.5-VL and Qwen3-VL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from .._pipeline import BaseCollator
from ..labels import (
    ImStartMarker,
    LabelStrategy,
    with_fallbacks,
)
from ..media import MediaStrategy, PlainMedia
from ..registry import register_collator

__all__ = ["Qwen25VLCollator"]


@register_collator(
    "Qwen2_5_VLProcessor", "Qwen2VLProcessor", "Qwen3VLProcessor", "Qwen3VLMoeProcessor"
)
@attrs.define(kw_only=True)
class Qwen25VLCollator(BaseCollator):
    """The seed's ``qwen2_5_collate_fn``.

    Each conversation is rendered to text, then the processor runs on the texts
    with the images and videos as the conversation gives them (pass
    ``media_strategy=QwenVLUtilsMedia()`` to have ``qwen-vl-utils`` read and
    resize them as Qwen's reference code does). ChatML markers are read from
    the vocabulary. Pixels keep the processor's dtype, as in the seed; frames
    of videos are not re-sampled (``do_sample_frames=False``).
    """

    processor_defaults: ClassVar[Mapping[str, Any]] = {"do_sample_frames": False}

    def default_label_strategy(self) -> LabelStrategy:
        return with_fallbacks(ImStartMarker())

    def default_media_strategy(self) -> MediaStrategy:
        return PlainMedia()
