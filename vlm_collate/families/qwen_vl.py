"""``Qwen25VLCollator``: Qwen2-VL, Qwen2.5-VL and Qwen3-VL."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    """NeMo Automodel's ``qwen2_5_collate_fn``.

    Each conversation is rendered to text, then the processor runs on the texts
    with the images and videos as the conversation gives them (pass
    ``media_strategy=QwenVLUtilsMedia()`` to have ``qwen-vl-utils`` read and
    resize them as Qwen's reference code does). ChatML markers are read from
    the vocabulary. Pixels keep the processor's dtype, as in NeMo Automodel; frames
    of videos are not re-sampled (``do_sample_frames=False``).

    With ``padding_free=True`` the 3-D mRoPE ``position_ids`` of each sample
    are computed alone by ``rope_index`` (a callable taking one sample's
    tensors and giving ``[3, n]``); None derives a
    [`MRopeIndex`][vlm_collate.MRopeIndex] from the processor, exact for text and
    images. For videos pass ``MRopeIndex.from_config(config)`` with the
    checkpoint's config.
    """

    rope_index: Callable[[Mapping[str, Any]], Any] | None = None
    processor_defaults: ClassVar[Mapping[str, Any]] = {"do_sample_frames": False}

    def default_label_strategy(self) -> LabelStrategy:
        return with_fallbacks(ImStartMarker())

    def default_media_strategy(self) -> MediaStrategy:
        return PlainMedia()
