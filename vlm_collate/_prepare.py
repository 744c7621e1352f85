"""Validating samples and copying their conversations.

[`prepare_sample`][vlm_collate._prepare.prepare_sample] checks a sample's shape, names the exact
place that is
wrong, and returns a [`Sample`][vlm_collate._samples.Sample] holding a normalised
*copy* of the conversation; the caller's data is never modified.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import torch

from ._samples import ITEM_TYPES, STEERING_KEYS, Sample, is_weight
from .errors import MediaError, SampleError, SampleTypeError, SpecialTokenError
from .media import (
    MediaAccess,
    MediaSource,
    is_media_reference,
    load_image,
    resolve_media,
    video_options,
)

__all__ = ["prepare_sample"]

# Keys under which transformers' chat templates accept a media source.
_SOURCE_KEYS = {"image": ("image", "url", "path"), "video": ("video", "url", "path")}
_AUDIO_KEYS = ("audio", "path", "url")
# Per-item sizes qwen-vl-utils resizes to: each is bounded by the pixel limit.
_PIXEL_OPTIONS = ("min_pixels", "max_pixels", "total_pixels")
_SIDE_OPTIONS = ("resized_height", "resized_width")
# A role is a plain name ("user", "gpt", "tool_result", "用户"): no markup, no line breaks.
_PLAIN_ROLE = re.compile(r"\w[\w.\- ]{0,63}")
# Characters that control-token strings are made of (<|im_end|>, [INST], <start_of_turn>).
_MARKUP = re.compile(r"[<>|\[\]{}]")
# Per-message keys that Arrow fills with None in the messages that do not set them.
_NULLABLE_LABEL_KEYS = ("train", "weight")
# What a video item's value may be once copied (checked references, frames, decoded arrays).
_VIDEO_TYPES = (MediaSource, str, os.PathLike, list, tuple, np.ndarray, torch.Tensor)


@attrs.frozen
class _ItemMedia:
    """The media policy of one sample, and what its readers noted for the report."""

    access: MediaAccess
    notes: list[tuple[str, str]] = attrs.Factory(list)


def prepare_sample(
    example: Any,
    index: int,
    *,
    max_image_pixels: int | None = None,
    media_access: MediaAccess | None = None,
    trusted_keys: Collection[str] = (),
) -> Sample:
    """Validate one example and return it with a normalised conversation copy.

    Every media reference is checked against ``media_access`` (the safe
    defaults when None) before anything reads it: images are read, checked
    and converted to upright RGB (PIL images on copies); video and audio
    references become checked [`MediaSource`][vlm_collate.media.MediaSource] objects
    that the media strategies decode. ``max_image_pixels``, when given,
    overrides the policy's image limit. Arrays and tensors must be finite.
    Only the steering keys in ``trusted_keys`` are read from the example.
    """
    access = (media_access or MediaAccess()).with_max_image_pixels(max_image_pixels)
    media = _ItemMedia(access)
    if not isinstance(example, Mapping):
        msg = f"expected a mapping with a 'conversation' key (got {type(example).__name__})"
        raise SampleTypeError(msg, sample_index=index)
    if "conversation" not in example:
        keys = ", ".join(repr(key) for key in list(example)[:8]) or "none"
        msg = f"missing key 'conversation' (keys present: {keys})"
        raise SampleError(msg, sample_index=index)
    conversation = example["conversation"]
    if not isinstance(conversation, Sequence) or isinstance(conversation, (str, bytes)):
        msg = f"'conversation' must be a list of messages (got {type(conversation).__name__})"
        raise SampleTypeError(msg, sample_index=index)
    if not conversation:
        msg = "'conversation' is empty"
        raise SampleError(msg, sample_index=index)
    copied = [
        _copy_message(message, index, position, media)
        for position, message in enumerate(conversation)
    ]
    for position, message in enumerate(copied):
        _check_arrays(message, index, position)
    flags = {key: example[key] for key in STEERING_KEYS if key in trusted_keys and key in example}
    return Sample(
        index=index,
        conversation=copied,
        example=example,
        media_notes=tuple(media.notes),
        flags=flags,
    )


def _copy_message(message: Any, sample: int, position: int, media: _ItemMedia) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        msg = (
            f"a message must be a mapping with 'role' and 'content' (got {type(message).__name__})"
        )
        raise SampleTypeError(msg, sample_index=sample, message_index=position)
    _check_role(message, sample, position)
    _check_label_keys(message, sample, position)
    copied = dict(message)
    for key in _NULLABLE_LABEL_KEYS:
        if key in copied and copied[key] is None:
            del copied[key]  # a null column value means "not set"
    content = message.get("content")
    if isinstance(content, str):
        return copied
    if content is None and message.get("tool_calls"):
        return copied  # an assistant tool-call message may carry no text
    if not isinstance(content, Sequence) or isinstance(content, bytes):
        msg = f"'content' must be a string or a list of items (got {type(content).__name__})"
        raise SampleTypeError(msg, sample_index=sample, message_index=position)
    copied["content"] = [
        _copy_item(item, sample, position, item_index, media)
        for item_index, item in enumerate(content)
    ]
    return copied


def _check_role(message: Mapping[str, Any], sample: int, position: int) -> None:
    """A role is a non-empty plain name; markup in it would be rendered into the template."""
    location = {"sample_index": sample, "message_index": position}
    role = message.get("role")
    if not isinstance(role, str) or not role:
        got = "no 'role' key" if "role" not in message else f"{role!r}"
        msg = f"a message needs a non-empty string 'role' (got {got})"
        raise SampleError(msg, **location)
    if _PLAIN_ROLE.fullmatch(role):
        return
    shown = role if len(role) <= 80 else role[:80] + "..."
    if _MARKUP.search(role):
        msg = (
            f"'role' {shown!r} holds control-token markup, which the chat template would "
            "render as turn structure; a role must be a plain name such as 'user'"
        )
        raise SpecialTokenError(msg, **location)
    msg = (
        f"'role' must be a plain name of at most 64 letters, digits, '_', '-', '.' or spaces, "
        f"starting with a letter, digit or '_' (got {shown!r})"
    )
    raise SampleError(msg, **location)


def _check_label_keys(message: Mapping[str, Any], sample: int, position: int) -> None:
    """The per-message label keys: ``"train"`` is a bool, ``"weight"`` a finite number >= 0.

    None (what Arrow stores for a message that does not set the key) means unset.
    """
    location = {"sample_index": sample, "message_index": position}
    train = message.get("train")
    if train is not None and not isinstance(train, bool):
        msg = f"'train' must be True or False (got {train!r})"
        raise SampleTypeError(msg, **location)
    if message.get("weight") is not None:
        weight = message["weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            msg = f"'weight' must be a number (got {weight!r})"
            raise SampleTypeError(msg, **location)
        if not is_weight(weight):
            msg = f"'weight' must be a finite number >= 0 (got {weight!r})"
            raise SampleError(msg, **location)


def _copy_item(
    item: Any, sample: int, message: int, index: int, media: _ItemMedia
) -> dict[str, Any]:
    location: dict[str, int | None] = {
        "sample_index": sample,
        "message_index": message,
        "item_index": index,
    }
    if not isinstance(item, Mapping):
        msg = f"a content item must be a mapping with a 'type' (got {type(item).__name__})"
        raise SampleTypeError(msg, **location)
    kind = item.get("type")
    if kind not in ITEM_TYPES:
        msg = f"item 'type' must be one of {', '.join(ITEM_TYPES)} (got {kind!r})"
        raise SampleError(msg, **location)
    # Arrow-backed datasets give every item every field; a None field is absent.
    copied = {key: value for key, value in item.items() if value is not None}
    if kind == "text":
        text = item.get("text")
        if not isinstance(text, str):
            msg = f"a text item needs a string 'text' (got {type(text).__name__})"
            raise SampleTypeError(msg, **location)
        return copied
    if kind in ("image", "video"):
        _check_size_options(copied, kind, media.access, location)
    if kind == "image":
        source = _source(item, "image", location)
        for key in _SOURCE_KEYS["image"]:
            copied.pop(key, None)
        copied["image"] = load_image(
            source, access=media.access, location=location, notes=media.notes
        )
    elif kind == "video":
        video_options(copied, location)
        source = _source(item, "video", location)
        for key in _SOURCE_KEYS["video"]:
            copied.pop(key, None)
        copied["video"] = _check_video(source, media, location)
    elif kind == "audio":
        _copy_audio(copied, media.access, location)
    return copied


def _source(item: Mapping[str, Any], kind: str, location: dict[str, int | None]) -> Any:
    for key in _SOURCE_KEYS[kind]:
        if item.get(key) is not None:
            return item[key]
    msg = f"a {kind} item needs one of the keys {', '.join(_SOURCE_KEYS[kind])}"
    raise SampleError(msg, **location)


def _check_video(source: Any, media: _ItemMedia, location: dict[str, int | None]) -> Any:
    """A file, URL or blob becomes a checked MediaSource (decoded later); frames are checked."""
    if is_media_reference(source):
        return resolve_media(source, media.access, kind="video", location=location)
    if isinstance(source, Sequence):
        if not source:
            msg = "a video given as a list of frames has no frames"
            raise MediaError(msg, **location)
        if len(source) > media.access.max_video_frames:
            msg = (
                f"a video given as {len(source)} frames has more than "
                f"max_video_frames={media.access.max_video_frames}"
            )
            raise MediaError(msg, **location)
        return [load_image(frame, access=media.access, location=location) for frame in source]
    return source  # arrays and tensors of frames go to the processor as they are


def _copy_audio(copied: dict[str, Any], access: MediaAccess, location: dict[str, Any]) -> None:
    """An audio reference becomes a checked MediaSource; arrays are decoded later."""
    key = next((key for key in _AUDIO_KEYS if key in copied), None)
    if key is None:
        msg = "an audio item needs an 'audio' value (array, (array, rate), dict or path)"
        raise SampleError(msg, **location)
    if is_media_reference(copied[key]):
        copied[key] = resolve_media(copied[key], access, kind="audio", location=location)


def _check_size_options(
    item: Mapping[str, Any], kind: str, access: MediaAccess, location: dict[str, Any]
) -> None:
    """Per-item resize options are positive ints within the pixel limit of the medium."""
    limit = access.max_image_pixels if kind == "image" else access.max_video_pixels
    for key in (*_PIXEL_OPTIONS, *_SIDE_OPTIONS):
        value = item.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            msg = f"'{key}' must be a positive int (got {value!r})"
            raise SampleTypeError(msg, **location)
        bound = limit if key in _PIXEL_OPTIONS else math.isqrt(limit) * 4
        if not 0 < int(value) <= bound:
            msg = f"'{key}' must be an int in 1..{bound} for this {kind} (got {value!r})"
            raise MediaError(msg, **location)
    height, width = item.get("resized_height"), item.get("resized_width")
    if height is not None and width is not None and height * width > limit:
        msg = f"'resized_height' x 'resized_width' = {height * width} pixels, more than {limit}"
        raise MediaError(msg, **location)


def _check_arrays(message: Mapping[str, Any], sample: int, position: int) -> None:
    """Media given as arrays or tensors hold only finite values; a video is no scalar junk."""
    content = message.get("content")
    if not isinstance(content, list):
        return
    for item_index, item in enumerate(content):
        location = {"sample_index": sample, "message_index": position, "item_index": item_index}
        kind = item.get("type")
        value = item.get(kind)
        if kind == "video" and not isinstance(value, _VIDEO_TYPES):
            msg = (
                "a video must be a path, a list of frames, an array or a tensor "
                f"(got {type(value).__name__})"
            )
            raise SampleTypeError(msg, **location)
        for frame in value if isinstance(value, list) else [value]:
            if not _finite(frame):
                msg = f"the {kind} array holds NaN or infinite values"
                raise MediaError(msg, **location)


def _finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.inexact):
        return bool(np.isfinite(value).all())
    return True
