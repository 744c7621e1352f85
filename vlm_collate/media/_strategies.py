"""Media strategies: gathering media for the processor, finishing media in the batch.

A [`MediaStrategy`][vlm_collate.MediaStrategy] has two jobs. `gather` turns the
batch's conversations into keyword arguments for the processor call
(``images=``, ``videos=``, ...; only modalities that are present).
`finalize` finishes the media entries of the batch: pixel
dtype, per-sample media counts and ``num_patches``.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import torch
from PIL import Image

from .._deps import require
from .._samples import count_media
from ._access import MediaSource
from ._video import read_video_item

__all__ = [
    "MEDIA_KEYS",
    "PIXEL_KEYS",
    "Conversations",
    "MediaStrategy",
    "PlainMedia",
    "QwenVLUtilsMedia",
    "is_media_reference",
    "iter_media_items",
    "media_token_ids",
    "vision_token_ids",
]

Conversations = Sequence[Sequence[Mapping[str, Any]]]

PIXEL_KEYS = ("pixel_values", "pixel_values_videos", "pixel_values_images", "image_pixel_values")
# Per-media entries of the common processors: never padded or shifted along the
# token axis, even when a tensor happens to have the shape of input_ids. A
# collator family whose processor returns more declares them itself
# (``BaseCollator.media_keys``).
MEDIA_KEYS = frozenset(
    {
        *PIXEL_KEYS,
        "image_grid_thw",
        "video_grid_thw",
        "image_sizes",
        "second_per_grid_ts",
        "input_features",
        "feature_attention_mask",
        "num_patches",
        "n_images_per_sample",
        "n_videos_per_sample",
    }
)
# Processor (or processor.config) attributes naming vision placeholder tokens:
# "<name>" holds the token string, "<name>_id" or "<name>_index" its id.
_VISION_TOKEN_ATTRIBUTES = (
    "image_token",
    "video_token",
    "vision_start_token",
    "vision_end_token",
    "image_start_token",
    "image_end_token",
    "boi_token",
    "eoi_token",
    "media_token",
)
_AUDIO_TOKEN_ATTRIBUTES = (
    "audio_token",
    "audio_bos_token",
    "audio_eos_token",
    "audio_start_token",
    "audio_end_token",
)
_VISION_TOKEN_STRINGS = (
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|media_start|>",
    "<|media_content|>",
    "<|media_end|>",
    "<|media_pad|>",
    "<image>",
    "<video>",
    "<|image|>",
    "<|video|>",
    "[IMG]",
    "[IMG_END]",
    "[IMG_BREAK]",
)
_AUDIO_TOKEN_STRINGS = ("<|audio_pad|>", "<|audio_start|>", "<|audio_end|>", "<audio>", "<|audio|>")
# Added tokens whose text holds one of these words are placeholders too, so a
# new model's tokens are found without a code change.
_VISION_WORDS = ("image", "video", "vision", "media", "img_pad", "vid_pad")
_AUDIO_WORDS = ("audio",)
# Modality names in conversations and the processor keyword that takes them.
_PROCESSOR_KEYWORDS = {"image": "images", "video": "videos", "audio": "audio"}


def vision_token_ids(processor: Any) -> frozenset[int]:
    """Ids of image and video placeholder tokens (what a fake image masks)."""
    return _token_ids(processor, _VISION_TOKEN_ATTRIBUTES, _VISION_TOKEN_STRINGS, _VISION_WORDS)


def media_token_ids(processor: Any) -> frozenset[int]:
    """Ids of every image, video and audio placeholder token the processor knows of.

    These are never trained, and truncation never cuts through them.
    """
    audio = _token_ids(processor, _AUDIO_TOKEN_ATTRIBUTES, _AUDIO_TOKEN_STRINGS, _AUDIO_WORDS)
    return vision_token_ids(processor) | audio


def _token_ids(
    processor: Any, attributes: Sequence[str], strings: Sequence[str], words: Sequence[str]
) -> frozenset[int]:
    tokenizer = getattr(processor, "tokenizer", None) or processor
    found: set[int] = set()
    named: list[str] = list(strings)
    for owner in (processor, getattr(processor, "config", None)):
        for attribute in attributes:
            for suffix in ("_id", "_index"):
                token_id = getattr(owner, f"{attribute}{suffix}", None)
                if isinstance(token_id, int) and not isinstance(token_id, bool):
                    found.add(token_id)
            token = getattr(owner, attribute, None)
            if isinstance(token, str):
                named.append(token)
    found.update(_ids_of(tokenizer, named))
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    for token_id, token in added.items():
        text = str(getattr(token, "content", token)).lower()
        if any(word in text for word in words):
            found.add(int(token_id))
    return frozenset(found)


def _ids_of(tokenizer: Any, tokens: Sequence[str]) -> set[int]:
    vocab_size = len(tokenizer) if hasattr(tokenizer, "__len__") else None
    unknown = getattr(tokenizer, "unk_token_id", None)
    ids = set()
    for token in tokens:
        try:
            token_id = tokenizer.convert_tokens_to_ids(token)
        except Exception:
            continue
        if (
            isinstance(token_id, int)
            and token_id != unknown
            and (vocab_size is None or token_id < vocab_size)
        ):
            ids.add(token_id)
    return ids


def iter_media_items(
    conversations: Conversations,
) -> Iterator[tuple[dict[str, int], dict[str, Any]]]:
    """Yield ``(location, item)`` for every media item, in conversation order.

    ``location`` holds ``sample_index`` (the position in ``conversations``),
    ``message_index`` and ``item_index``, ready for a [`MediaError`][vlm_collate.MediaError].
    """
    for position, conversation in enumerate(conversations):
        for message_index, message in enumerate(conversation):
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for item_index, item in enumerate(content):
                if item.get("type") in _PROCESSOR_KEYWORDS:
                    yield (
                        {
                            "sample_index": position,
                            "message_index": message_index,
                            "item_index": item_index,
                        },
                        item,
                    )


def is_media_reference(source: Any) -> bool:
    """Whether a video or audio source names a medium to read (a path, URL, URI or bytes).

    Frames given as lists, arrays or tensors are not references: they are used as given.
    """
    return isinstance(source, (str, os.PathLike, bytes, bytearray, MediaSource)) or (
        isinstance(source, Mapping)
        and "array" not in source  # a decoded clip, as the datasets Audio feature gives it
        and bool(source.get("bytes") or source.get("path"))
    )


def _frames_metadata(frames: Any, item: Mapping[str, Any]) -> Any:
    """Metadata for frames given directly: ``fps`` (or ``sample_fps``) from the item, else 2."""
    from transformers.video_utils import VideoMetadata

    count = len(frames)
    fps = float(item.get("fps") or item.get("sample_fps") or 2.0)
    return VideoMetadata(
        total_num_frames=count, fps=fps, duration=count / fps, frames_indices=list(range(count))
    )


class MediaStrategy(abc.ABC):
    """Gathers media for the processor and finishes media entries of the batch.

    A strategy implements `gather`; the
    video reader and the finishing step are shared defaults it may override.
    """

    @abc.abstractmethod
    def gather(self, conversations: Conversations) -> dict[str, Any]:
        """Processor keyword arguments (``images``, ``videos``, ...) for ``conversations``."""

    def video(
        self, source: Any, item: Mapping[str, Any], location: dict[str, int]
    ) -> tuple[Any, Any]:
        """Return one video's frames and metadata; files are decoded here.

        The item may choose frames with ``fps``, ``nframes`` or ``max_frames``;
        without them every frame is kept, as in NeMo Automodel, up to the media
        access policy's ``max_video_frames``. Paths, URLs and bytes are read
        by our own reader under that policy; the processor gets frames.
        """
        if not is_media_reference(source):
            return source, _frames_metadata(source, item)
        decoded = read_video_item(source, item, location)
        return decoded.frames, decoded.metadata()

    def finalize(
        self,
        batch: dict[str, Any],
        conversations: Conversations,
        *,
        processor: Any,
        pixel_dtype: torch.dtype | None,
    ) -> dict[str, Any]:
        """Cast pixels, add per-sample media counts and ``num_patches``; returns ``batch``."""
        if pixel_dtype is not None:
            for key in PIXEL_KEYS:
                if key in batch:
                    batch[key] = _cast(batch[key], pixel_dtype)
        for kind in ("image", "video"):
            counts = [count_media(conversation, kind) for conversation in conversations]
            if any(counts):
                batch[f"n_{kind}s_per_sample"] = torch.tensor(counts, dtype=torch.long)
        pixels = batch.get("pixel_values")
        image_token_id = getattr(processor, "image_token_id", None)
        if (
            isinstance(pixels, torch.Tensor)
            and pixels.dim() == 5
            and isinstance(image_token_id, int)
        ):
            batch["num_patches"] = (batch["input_ids"] == image_token_id).sum(dim=-1)
        return batch


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, list):
        return [_cast(item, dtype) for item in value]
    return value


@attrs.frozen(kw_only=True)
class PlainMedia(MediaStrategy):
    """Media passed to the processor as the conversation gives them.

    Images are the validated RGB copies; video files are decoded here with
    PyAV (within the media access policy), and every video comes with its
    ``video_metadata`` so the processor knows the real frame rate.
    """

    def gather(self, conversations: Conversations) -> dict[str, Any]:
        gathered: dict[str, list[Any]] = {}
        for location, item in iter_media_items(conversations):
            kind = item["type"]
            value = item.get(kind)
            if kind == "video":
                value, metadata = self.video(value, item, location)
                gathered.setdefault("video_metadata", []).append(metadata)
            gathered.setdefault(_PROCESSOR_KEYWORDS[kind], []).append(value)
        return gathered


@attrs.frozen(kw_only=True)
class QwenVLUtilsMedia(MediaStrategy):
    """Media read and resized by ``qwen_vl_utils.process_vision_info``.

    Images (PIL, paths, ``file://`` URLs) and videos (files or frame lists) are
    resized the way Qwen's reference code does. Video files are decoded here
    at ``fps`` frames per second (the item's ``fps``, else 2, an even count as
    Qwen needs) and handed to qwen-vl-utils as frame lists with their real
    sampling rate; the processor is told not to sample again.

    Args:
        image_patch_size: Patch size passed to qwen-vl-utils (14 for Qwen2/2.5-VL,
            16 for Qwen3-VL).
        fps: Default frames per second sampled from video files.
        max_frames: Most frames kept per video.
    """

    image_patch_size: int = 14
    fps: float = 2.0
    max_frames: int = 768

    def gather(self, conversations: Conversations) -> dict[str, Any]:
        process_vision_info = require(
            "qwen_vl_utils",
            "QwenVLUtilsMedia needs the 'qwen-vl-utils' package: pip install qwen-vl-utils",
        ).process_vision_info
        prepared = [[dict(message) for message in conversation] for conversation in conversations]
        for location, item in iter_media_items(prepared):
            if item["type"] == "video":
                message = prepared[location["sample_index"]][location["message_index"]]
                content = message["content"] = list(message["content"])
                content[location["item_index"]] = self._frames_item(item, location)
        images, videos, video_kwargs = process_vision_info(
            prepared,
            return_video_kwargs=True,
            return_video_metadata=True,
            image_patch_size=self.image_patch_size,
        )
        gathered: dict[str, Any] = {}
        if images:
            gathered["images"] = images
        if videos:
            gathered["videos"] = [frames for frames, _ in videos]
            gathered["video_metadata"] = [metadata for _, metadata in videos]
            gathered.update(
                {key: value for key, value in video_kwargs.items() if value is not None}
            )
        return gathered

    def _frames_item(self, item: Mapping[str, Any], location: dict[str, int]) -> dict[str, Any]:
        source = item.get("video")
        if isinstance(source, list):
            return dict(item)  # frames as given
        frames: Any
        if is_media_reference(source):
            decoded = read_video_item(
                source, item, location, fps=self.fps, max_frames=self.max_frames, factor=2
            )
            frames, sample_fps = decoded.frames, decoded.sample_fps
        else:  # an array or tensor of frames
            frames, sample_fps = source, item.get("sample_fps", item.get("fps", self.fps))
        pictures = [Image.fromarray(np.asarray(frame)) for frame in frames]
        return {**item, "video": pictures, "sample_fps": sample_fps}
