"""``LlavaOneVisionCollator``: LLaVA-OneVision and LLaVA-OneVision-1.5."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from .._pipeline import BaseCollator
from .._samples import Sample, count_media
from ..labels import (
    ImStartMarker,
    LabelStrategy,
    with_fallbacks,
)
from ..media import MediaStrategy, QwenVLUtilsMedia
from ..registry import register_collator

__all__ = ["LlavaOneVisionCollator", "PerSampleImagesMedia"]


@attrs.frozen(kw_only=True)
class PerSampleImagesMedia(QwenVLUtilsMedia):
    """``qwen-vl-utils`` media with the images grouped by sample.

    LLaVA-OneVision tiles a sample's only image ("anyres") but gives each image
    of a multi-image sample one untiled view; its image processor tells the two
    apart only when ``images`` holds one list per sample.
    """

    def gather(self, conversations: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
        gathered = super().gather(conversations)
        images = gathered.get("images")
        if images:
            grouped, start = [], 0
            for conversation in conversations:
                count = count_media(conversation, "image")
                grouped.append(list(images[start : start + count]))
                start += count
            gathered["images"] = grouped
        return gathered


@register_collator("LlavaOnevisionProcessor", "LlavaOneVisionProcessor")
@attrs.define(kw_only=True)
class LlavaOneVisionCollator(BaseCollator):
    """NeMo Automodel's ``llava_onevision_collate_fn``.

    Conversations are rendered to text; ``qwen-vl-utils`` reads images and
    videos (see [`PerSampleImagesMedia`][vlm_collate.PerSampleImagesMedia]), and the processor runs
    on both
    without re-sampling video frames. ChatML markers are read from the
    vocabulary. String content is rendered as one text item, because the
    llava-hf template reads only list content and would leave such a turn empty.
    """

    processor_defaults: ClassVar[Mapping[str, Any]] = {"do_sample_frames": False}

    def default_label_strategy(self) -> LabelStrategy:
        return with_fallbacks(ImStartMarker())

    def default_media_strategy(self) -> MediaStrategy:
        return PerSampleImagesMedia()

    def render(self, sample: Sample, **template_kwargs: Any) -> str:
        conversation = [
            {**message, "content": [{"type": "text", "text": message["content"]}]}
            if isinstance(message.get("content"), str)
            else message
            for message in sample.conversation
        ]
        return super().render(attrs.evolve(sample, conversation=conversation), **template_kwargs)
