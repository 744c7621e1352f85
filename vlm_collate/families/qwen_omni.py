"""``Qwen3OmniCollator``: Qwen3-Omni and Qwen2.5-Omni (text, images, videos and audio)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs
import numpy as np

from .._deps import require
from .._options import boolean, one_of, optional
from .._pipeline import BaseCollator
from .._samples import Sample
from ..errors import ConfigurationError, MediaError
from ..labels import (
    ImStartMarker,
    LabelStrategy,
    with_fallbacks,
)
from ..media import MediaStrategy, QwenVLUtilsMedia, is_media_reference, load_waveform
from ..registry import register_collator

__all__ = ["Qwen3OmniCollator", "QwenOmniUtilsMedia"]

SAMPLE_RATE = 16000


@attrs.frozen(kw_only=True)
class QwenOmniUtilsMedia(QwenVLUtilsMedia):
    """Media read by ``qwen_omni_utils.process_mm_info``: audio, images and videos.

    Audio items are turned into mono 16 kHz waveforms first
    ([`load_waveform`][vlm_collate.media.load_waveform]: arrays, ``(array, rate)``
    pairs, ``{"array", "sampling_rate"}`` dicts, files read with PyAV). Video
    files are decoded with PyAV too (see [`QwenVLUtilsMedia`][vlm_collate.QwenVLUtilsMedia]), since
    qwen-omni-utils' readers need torchcodec, decord or an ffmpeg binary. With
    ``use_audio_in_video`` each video's audio track is decoded beside its
    frames and the processor is told which audio belongs to which video. Only
    modalities present in the batch reach the processor.

    Args:
        use_audio_in_video: Feed each video's soundtrack to the model with its frames.
        image_patch_size: Vision patch size (16 for Qwen3-Omni, 14 for Qwen2.5-Omni).
    """

    use_audio_in_video: bool = False
    image_patch_size: int = 16

    def gather(self, conversations: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
        process_mm_info = require(
            "qwen_omni_utils",
            "QwenOmniUtilsMedia needs 'qwen-omni-utils': pip install qwen-omni-utils",
        ).process_mm_info
        prepared, sources = self._prepare(conversations)
        audio, images, videos, video_kwargs = process_mm_info(
            prepared,
            use_audio_in_video=False,  # soundtracks were decoded above, in place
            return_video_kwargs=True,
            return_video_metadata=True,
            image_patch_size=self.image_patch_size,
        )
        gathered: dict[str, Any] = {}
        if audio:
            gathered["audio"] = audio
        if images:
            gathered["images"] = images
        if videos:
            gathered["videos"] = [frames for frames, _ in videos]
            gathered["video_metadata"] = [metadata for _, metadata in videos]
            gathered.update({key: val for key, val in video_kwargs.items() if val is not None})
        if any(source is not None for source in sources):
            gathered["load_audio_from_video"] = True
            gathered["audio_from_video_indices"] = sources
        return gathered

    def _prepare(
        self, conversations: Sequence[Sequence[Mapping[str, Any]]]
    ) -> tuple[list[list[dict[str, Any]]], list[int | None]]:
        """Copy media items into qwen-omni-utils' form; also return each audio's video index.

        A soundtrack goes just before its video, so that qwen-omni-utils lists
        it where it would have read it (``None`` marks audio of no video).
        """
        prepared: list[list[dict[str, Any]]] = []
        sources: list[int | None] = []
        videos = 0
        for sample_index, conversation in enumerate(conversations):
            messages: list[dict[str, Any]] = []
            for message_index, message in enumerate(conversation):
                items: list[dict[str, Any]] = []
                content = message.get("content")
                for item_index, item in enumerate(content if isinstance(content, list) else []):
                    location = {
                        "sample_index": sample_index,
                        "message_index": message_index,
                        "item_index": item_index,
                    }
                    if item.get("type") == "audio":
                        items.append({"type": "audio", "audio": _audio(item, location)})
                        sources.append(None)
                    elif item.get("type") == "video":
                        if self.use_audio_in_video:
                            track = _soundtrack(item.get("video"), location)
                            items.append({"type": "audio", "audio": track})
                            sources.append(videos)
                        items.append(self._frames_item(item, location))
                        videos += 1
                    else:
                        items.append(item)
                messages.append({"role": message.get("role"), "content": items})
            prepared.append(messages)
        return prepared, sources


def _audio(item: Mapping[str, Any], location: dict[str, int]) -> Any:
    """An audio item as qwen-omni-utils takes it: a mono 16 kHz waveform read by our reader."""
    source = next(
        (item[key] for key in ("audio", "path", "url") if item.get(key) is not None), None
    )
    return load_waveform(source, sampling_rate=SAMPLE_RATE, location=location)


def _soundtrack(source: Any, location: dict[str, int]) -> np.ndarray:
    """A video's audio track as a mono 16 kHz waveform."""
    if not is_media_reference(source):
        msg = (
            "use_audio_in_video needs every video as a local file, URL or blob "
            f"(got {type(source).__name__})"
        )
        raise MediaError(msg, **location)
    try:
        return load_waveform(source, sampling_rate=SAMPLE_RATE, location=location)
    except MediaError as exc:
        msg = f"use_audio_in_video needs the video's audio track: {exc.detail}"
        raise MediaError(msg, **location) from exc


def _omni_media(collator: Qwen3OmniCollator) -> MediaStrategy:
    patch = getattr(getattr(collator.processor, "image_processor", None), "patch_size", None)
    return QwenOmniUtilsMedia(
        use_audio_in_video=collator.use_audio_in_video,
        image_patch_size=patch if isinstance(patch, int) else 16,
    )


@register_collator("Qwen3OmniMoeProcessor", "Qwen2_5OmniProcessor")
@attrs.define(kw_only=True)
class Qwen3OmniCollator(BaseCollator):
    """NeMo Automodel's ``qwen3_omni_collate_fn``.

    ``qwen-omni-utils`` reads audio, images and videos (see
    [`QwenOmniUtilsMedia`][vlm_collate.QwenOmniUtilsMedia]); the processor gets only the modalities
    the
    batch holds. Rows are right-padded whatever the tokenizer's default, and
    ChatML markers are read from the vocabulary. Pixels keep the processor's dtype.

    Args:
        use_audio_in_video: Feed each video's soundtrack with its frames (the model's
            forward must then be told ``use_audio_in_video=True`` as well).
        rope_index: With ``padding_free=True``, a callable giving one sample's
            ``[3, n]`` positions (its tensors and media grids in a mapping); the
            Omni models' positions also depend on audio lengths, so none is derived.
    """

    padding_side: Literal["left", "right"] | None = attrs.field(
        default="right", validator=optional(one_of("left", "right"))
    )
    use_audio_in_video: bool = attrs.field(default=False, validator=boolean)
    rope_index: Callable[[Mapping[str, Any]], Any] | None = None

    def default_label_strategy(self) -> LabelStrategy:
        return with_fallbacks(ImStartMarker())

    def default_media_strategy(self) -> MediaStrategy:
        return _omni_media(self)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        strategy = self.media_strategy
        if (
            isinstance(strategy, QwenOmniUtilsMedia)
            and strategy.use_audio_in_video != self.use_audio_in_video
        ):
            msg = (
                f"'use_audio_in_video' is {self.use_audio_in_video} but the media strategy's is "
                f"{strategy.use_audio_in_video}; give the same value to both."
            )
            raise ConfigurationError(msg)

    def call_processor(self, samples: Sequence[Sample], **inputs: Any) -> dict[str, Any]:
        # Omni processors pad on the left unless told otherwise; the pipeline
        # reads rows on the tokenizer's side, so ask for that side.
        inputs.setdefault("padding_side", getattr(self.tokenizer, "padding_side", "right"))
        return super().call_processor(samples, **inputs)
