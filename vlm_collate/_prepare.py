"""Validating samples and copying their conversations.

[`prepare_sample`][vlm_collate._prepare.prepare_sample] checks a sample's shape, names the exact
place that is
wrong, and returns a [`Sample`][vlm_collate._samples.Sample] holding a normalised
*copy* of the conversation; the caller's data is never modified.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ._samples import ITEM_TYPES, Sample, is_weight
from .errors import MediaError, SampleError, SampleTypeError
from .media import is_remote, load_image, local_path

__all__ = ["prepare_sample"]

# Keys under which transformers' chat templates accept a media source.
_SOURCE_KEYS = {"image": ("image", "url", "path"), "video": ("video", "url", "path")}


def prepare_sample(example: Any, index: int, *, max_image_pixels: int) -> Sample:
    """Validate one example and return it with a normalised conversation copy.

    Images given as paths are opened, checked and converted to upright RGB;
    PIL images are converted on copies.
    """
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
        _copy_message(message, index, position, max_image_pixels)
        for position, message in enumerate(conversation)
    ]
    return Sample(index=index, conversation=copied, example=example)


def _copy_message(message: Any, sample: int, position: int, max_pixels: int) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        msg = (
            f"a message must be a mapping with 'role' and 'content' (got {type(message).__name__})"
        )
        raise SampleTypeError(msg, sample_index=sample, message_index=position)
    role = message.get("role")
    if not isinstance(role, str) or not role:
        got = "no 'role' key" if "role" not in message else f"{role!r}"
        msg = f"a message needs a non-empty string 'role' (got {got})"
        raise SampleError(msg, sample_index=sample, message_index=position)
    _check_label_keys(message, sample, position)
    copied = dict(message)
    content = message.get("content")
    if isinstance(content, str):
        return copied
    if content is None and message.get("tool_calls"):
        return copied  # an assistant tool-call message may carry no text
    if not isinstance(content, Sequence) or isinstance(content, bytes):
        msg = f"'content' must be a string or a list of items (got {type(content).__name__})"
        raise SampleTypeError(msg, sample_index=sample, message_index=position)
    copied["content"] = [
        _copy_item(item, sample, position, item_index, max_pixels)
        for item_index, item in enumerate(content)
    ]
    return copied


def _check_label_keys(message: Mapping[str, Any], sample: int, position: int) -> None:
    """The per-message label keys: ``"train"`` is a bool, ``"weight"`` a finite number >= 0."""
    location = {"sample_index": sample, "message_index": position}
    train = message.get("train")
    if "train" in message and not isinstance(train, bool):
        msg = f"'train' must be True or False (got {train!r})"
        raise SampleTypeError(msg, **location)
    if "weight" in message:
        weight = message["weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            msg = f"'weight' must be a number (got {weight!r})"
            raise SampleTypeError(msg, **location)
        if not is_weight(weight):
            msg = f"'weight' must be a finite number >= 0 (got {weight!r})"
            raise SampleError(msg, **location)


def _copy_item(item: Any, sample: int, message: int, index: int, max_pixels: int) -> dict[str, Any]:
    location = {"sample_index": sample, "message_index": message, "item_index": index}
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
    elif kind == "image":
        source = _source(item, "image", location)
        for key in _SOURCE_KEYS["image"]:
            copied.pop(key, None)
        copied["image"] = load_image(source, max_pixels=max_pixels, location=location)
    elif kind == "video":
        copied["video"] = _check_video(_source(item, "video", location), max_pixels, location)
    elif kind == "audio" and "audio" not in item and "path" not in item and "url" not in item:
        msg = "an audio item needs an 'audio' value (array, (array, rate), dict or path)"
        raise SampleError(msg, **location)
    return copied


def _source(item: Mapping[str, Any], kind: str, location: dict[str, int | None]) -> Any:
    for key in _SOURCE_KEYS[kind]:
        if item.get(key) is not None:
            return item[key]
    msg = f"a {kind} item needs one of the keys {', '.join(_SOURCE_KEYS[kind])}"
    raise SampleError(msg, **location)


def _check_video(source: Any, max_pixels: int, location: dict[str, int | None]) -> Any:
    if isinstance(source, (str, os.PathLike)):
        if isinstance(source, str) and is_remote(source):
            return source
        path = local_path(source)
        if not path.is_file():
            msg = f"video file {str(path)!r} does not exist"
            raise MediaError(msg, **location)
        if path.stat().st_size == 0:
            msg = f"video file {str(path)!r} is empty (0 bytes)"
            raise MediaError(msg, **location)
        return source
    if isinstance(source, Sequence):
        if not source:
            msg = "a video given as a list of frames has no frames"
            raise MediaError(msg, **location)
        return [load_image(frame, max_pixels=max_pixels, location=location) for frame in source]
    return source  # arrays and tensors of frames go to the processor as they are
