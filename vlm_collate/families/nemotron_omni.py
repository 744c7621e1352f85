"""``NemotronOmniCollator``: Nemotron 3 Nano Omni (image, video and audio)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs
import numpy as np
import torch

from .._options import int_at_least
from .._pipeline import BaseCollator
from .._report import CollateReport
from .._samples import Sample
from ..errors import MediaError
from ..labels import (
    ImStartMarker,
    LabelStrategy,
    SkipEmptyThink,
    with_fallbacks,
)
from ..media import (
    AudioMedia,
    MediaStrategy,
    is_media_reference,
    iter_media_items,
    move_example_audio,
    processor_sampling_rate,
    read_video_item,
)
from ..registry import register_collator

__all__ = ["NemotronOmniCollator", "NemotronOmniMedia", "merge_rows"]


@attrs.frozen(kw_only=True)
class NemotronOmniMedia(AudioMedia):
    """Audio at the processor's rate; one video per sample, with an even number of frames.

    A video file keeps at most ``max_video_frames`` evenly spaced frames, an
    even count (the model packs frames in pairs). Frames given as a list are
    used as they are, with the item's ``metadata`` (or ``fps``) if any.

    Args:
        max_video_frames: Most frames read from a video file.
    """

    max_video_frames: int = 8

    def gather(self, conversations: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
        seen: set[int] = set()
        for location, item in iter_media_items(conversations):
            if item["type"] == "video":
                if location["sample_index"] in seen:
                    msg = "Nemotron-Omni takes one video per sample; this is a second one"
                    raise MediaError(msg, **location)
                seen.add(location["sample_index"])
        return super().gather(conversations)

    def video(
        self, source: Any, item: Mapping[str, Any], location: dict[str, int]
    ) -> tuple[Any, Any]:
        if not is_media_reference(source):
            metadata = item.get("metadata")
            if isinstance(metadata, Mapping):
                from transformers.video_utils import VideoMetadata

                metadata = VideoMetadata(**metadata)
            return source, metadata or _rate_metadata(source, item)
        decoded = read_video_item(
            source, item, location, max_frames=self.max_video_frames, factor=2
        )
        return list(decoded.frames), decoded.metadata()


def _rate_metadata(frames: Any, item: Mapping[str, Any]) -> Any:
    """Metadata for a frame list whose item gives its ``fps``; None without one (as in NeMo
    Automodel)."""
    fps = item.get("fps") or item.get("sample_fps")
    if not fps or isinstance(frames, str):
        return None
    from transformers.video_utils import VideoMetadata

    count = len(frames)
    return VideoMetadata(
        total_num_frames=count,
        fps=float(fps),
        duration=count / fps,
        frames_indices=list(range(count)),
    )


def _omni_media(collator: NemotronOmniCollator) -> MediaStrategy:
    return NemotronOmniMedia(
        sampling_rate=processor_sampling_rate(collator.processor),
        max_video_frames=collator.max_video_frames,
    )


@register_collator(
    "NemotronH_Nano_Omni_Reasoning_V3Processor", "NemotronH_Omni_Reasoning_V3Processor"
)
@attrs.define(kw_only=True)
class NemotronOmniCollator(BaseCollator):
    """NeMo Automodel's ``nemotron_omni_collate_fn``.

    Each conversation is flattened to text with the processor's ``<image>`` /
    ``<video>`` / audio placeholders and rendered by the chat template; the
    processor expands the placeholders. Samples go through the processor one
    at a time (it takes one video per call) and are merged: token rows padded,
    image patches concatenated (tiles of different shapes stay a list),
    audio features padded. Pixels default to bfloat16.

    Args:
        max_video_frames: Most frames read from a video file (an even number is kept).
    """

    default_pixel_dtype: ClassVar[torch.dtype | None] = torch.bfloat16
    # Per-image, per-clip entries of the remote-code processor.
    media_keys: ClassVar[frozenset[str]] = BaseCollator.media_keys | {
        "image_grid_hw",
        "image_flags",
        "input_features_mask",
        "sound_features",
        "sound_attention_mask",
    }

    max_video_frames: int = attrs.field(default=8, validator=int_at_least(2))

    def default_label_strategy(self) -> LabelStrategy:
        return SkipEmptyThink(inner=with_fallbacks(ImStartMarker()))

    def default_media_strategy(self) -> MediaStrategy:
        return _omni_media(self)

    def supported_media(self) -> frozenset[str]:
        # The remote-code processor reads video and audio without sub-processors of their own.
        return frozenset({"image", "video", "audio"})

    def filter(self, examples: Sequence[Mapping[str, Any]], report: CollateReport) -> list[Sample]:
        samples = super().filter(examples, report)
        move_example_audio(samples, sampling_rate=self._sampling_rate(), access=self.media_access)
        return samples

    def render(self, sample: Sample, **template_kwargs: Any) -> str:
        placeholders = {
            "image": getattr(self.processor, "image_token", None) or "<image>",
            "video": getattr(self.processor, "video_token", None) or "<video>",
            "audio": getattr(self.processor, "audio_token", None) or "<so_embedding>",
        }
        flat = [_flatten(message, placeholders) for message in sample.conversation]
        return super().render(attrs.evolve(sample, conversation=flat), **template_kwargs)

    def template(self, samples: Sequence[Sample]) -> dict[str, Any]:
        rows = []
        for sample in samples:
            media = self.gather_media([sample])
            if "videos" in media:  # one video: frames and metadata go in unbatched
                media["videos"] = media["videos"][0]
                media["video_metadata"] = media.get("video_metadata", [None])[0]
                if media["video_metadata"] is None:
                    del media["video_metadata"]
                media["do_sample_frames"] = False
            if "audio" in media:
                media["sampling_rate"] = self._sampling_rate()
            rows.append(self.call_processor([sample], text=[self.render(sample)], **media))
        return merge_rows(rows, self.tokenizer, processor=self.processor)

    def _sampling_rate(self) -> int:
        rate = getattr(self.media_strategy, "sampling_rate", None)
        return rate if isinstance(rate, int) else processor_sampling_rate(self.processor)


def _flatten(message: Mapping[str, Any], placeholders: Mapping[str, str]) -> dict[str, Any]:
    content = message.get("content")
    if not isinstance(content, list):
        return dict(message)
    parts = [
        item["text"] if item["type"] == "text" else placeholders.get(item["type"], "")
        for item in content
    ]
    return {**message, "content": "".join(parts)}


_TOKEN_AXIS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")
_PIXELS = ("pixel_values", "pixel_values_videos")
_FEATURES = ("input_features", "input_features_mask")


def merge_rows(
    rows: Sequence[Mapping[str, Any]], tokenizer: Any, *, processor: Any = None
) -> dict[str, Any]:
    """Merge one-sample processor outputs into one batch.

    Token rows are padded on the tokenizer's padding side. Pixels given as
    patch rows (2-D, with ``image_grid_hw``) are concatenated; any other pixel
    tensor is split along its first axis (tiles, frames or videos) and the
    pieces are stacked when they share a shape, kept as a list when not;
    tiles get ``image_flags``. Audio features are padded along time. Raw
    ``sound_clips`` (Nemotron's remote-code processor) become ``sound_features``
    and ``sound_attention_mask``. Other entries are concatenated.
    """
    pad_id = getattr(tokenizer, "pad_token_id", None)
    side = getattr(tokenizer, "padding_side", "right") or "right"
    batch: dict[str, Any] = {}
    for key in dict.fromkeys(key for row in rows for key in row):
        values = [row[key] for row in rows if row.get(key) is not None]
        if key in _TOKEN_AXIS:
            fill = pad_id if key == "input_ids" and isinstance(pad_id, int) else 0
            batch[key] = _pad_rows([torch.as_tensor(value) for value in values], fill, side)
        elif key in _PIXELS:
            batch[key] = _merge_pixels(values)
            if key == "pixel_values" and not _is_patch_rows(values):
                batch["image_flags"] = torch.ones(len(batch[key]), 1, dtype=torch.long)
        elif key in _FEATURES:
            batch[key] = torch.cat(_pad_time(values), dim=0)
        elif key == "sound_clips":
            batch.update(_sound_features(values, processor))
        else:
            batch[key] = _concat(values)
    return batch


def _pad_rows(rows: Sequence[torch.Tensor], fill: int, side: str) -> torch.Tensor:
    rows = [row.reshape(-1) for row in rows]
    width = max(row.numel() for row in rows)
    out = rows[0].new_full((len(rows), width), fill)
    for index, row in enumerate(rows):
        if side == "left":
            out[index, width - row.numel() :] = row
        else:
            out[index, : row.numel()] = row
    return out


def _is_patch_rows(values: Sequence[Any]) -> bool:
    return all(isinstance(value, torch.Tensor) and value.dim() == 2 for value in values)


def _merge_pixels(values: Sequence[Any]) -> torch.Tensor | list[torch.Tensor]:
    if _is_patch_rows(values):
        return torch.cat(list(values), dim=0)
    pieces = [
        torch.as_tensor(piece)
        for value in values
        for piece in (value if isinstance(value, (list, tuple)) else value.unbind(0))
    ]
    if len({tuple(piece.shape) for piece in pieces}) == 1:
        return torch.stack(pieces)
    return pieces


def _pad_time(values: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Pad ``[n, T, ...]`` tensors with zeros (or False) along T to the longest."""
    longest = max(value.shape[1] for value in values)
    padded = []
    for value in values:
        extra = value.new_zeros((value.shape[0], longest - value.shape[1], *value.shape[2:]))
        padded.append(torch.cat([value, extra], dim=1))
    return padded


def _concat(values: Sequence[Any]) -> Any:
    if values and all(isinstance(value, torch.Tensor) for value in values):
        if all(value.dim() > 0 for value in values):
            if len({tuple(value.shape[1:]) for value in values}) == 1:
                return torch.cat(list(values), dim=0)
            return [piece for value in values for piece in value.unbind(0)]
        return torch.stack(list(values))
    return [piece for value in values for piece in (value if isinstance(value, list) else [value])]


def _sound_features(clips: Sequence[Any], processor: Any) -> dict[str, torch.Tensor]:
    """Mel features of raw clips, as NeMo Automodel computes them for the remote-code processor."""
    waves = [
        np.asarray(
            wave.cpu().numpy() if isinstance(wave, torch.Tensor) else wave, np.float32
        ).reshape(-1)
        for value in clips
        for wave in (value if isinstance(value, (list, tuple)) else [value])
    ]
    rate = processor_sampling_rate(processor)
    extractor = getattr(processor, "_sound_feature_extractor", None)
    extractor = extractor or getattr(processor, "feature_extractor", None)
    if extractor is None:
        from transformers import ParakeetFeatureExtractor

        extractor = ParakeetFeatureExtractor(sampling_rate=rate, feature_size=128)
    features = extractor(waves, sampling_rate=rate, return_tensors="pt")
    merged = {"sound_features": features["input_features"].to(torch.float32)}
    if "attention_mask" in features:
        merged["sound_attention_mask"] = features["attention_mask"].to(torch.long)
    return merged
