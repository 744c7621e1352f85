"""Estimating a sample's token count before the processor runs.

The estimate is the rendered text's token count plus, for every image, the
tokens its placeholder expands to, computed from the image size and the image
processor's resize rule. No pixels are processed. It decides which samples
``drop_overlong`` removes before the (expensive) processor call; the actual
length after processing is checked again by the collator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from .._template import render
from ..labels import tokenizer_of

__all__ = ["estimate_tokens", "image_config", "image_tokens"]


def image_config(processor: Any) -> dict[str, int] | None:
    """Return the Qwen-style resize settings of the processor's image processor.

    Keys: ``patch_size``, ``merge_size``, ``factor``, ``min_pixels``,
    ``max_pixels``. None when the processor has no image processor.
    """
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None:
        return None
    patch = getattr(image_processor, "patch_size", None) or 14
    patch = patch if isinstance(patch, int) else int(patch.get("height", 14))
    merge = getattr(image_processor, "merge_size", None) or 2
    size = getattr(image_processor, "size", None) or {}
    size = size if isinstance(size, Mapping) else {}
    min_pixels = (
        getattr(image_processor, "min_pixels", None) or size.get("shortest_edge") or 56 * 56
    )
    max_pixels = (
        getattr(image_processor, "max_pixels", None)
        or size.get("longest_edge")
        or 14 * 14 * 4 * 1280
    )
    return {
        "patch_size": patch,
        "merge_size": merge,
        "factor": patch * merge,
        "min_pixels": int(min_pixels),
        "max_pixels": int(max_pixels),
    }


def _resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """Qwen's rule: round to multiples of ``factor`` and keep the area in bounds."""
    new_height = max(factor, round(height / factor) * factor)
    new_width = max(factor, round(width / factor) * factor)
    if new_height * new_width > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        new_height = max(factor, math.floor(height / beta / factor) * factor)
        new_width = max(factor, math.floor(width / beta / factor) * factor)
    elif new_height * new_width < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        new_height = math.ceil(height * beta / factor) * factor
        new_width = math.ceil(width * beta / factor) * factor
    return new_height, new_width


def image_tokens(processor: Any, height: int, width: int) -> int | None:
    """Number of tokens one image of this size expands to, or None if unknown.

    Processors that implement transformers' ``_get_num_multimodal_tokens`` are
    asked directly; otherwise Qwen's resize rule is applied.
    """
    counter = getattr(processor, "_get_num_multimodal_tokens", None)
    if counter is not None:
        try:
            counts = counter(image_sizes=[(height, width)])
            per_image = getattr(counts, "num_image_tokens", None) or counts["num_image_tokens"]
            return int(per_image[0])
        except Exception:  # not every processor implements it; fall back to the rule
            pass
    config = image_config(processor)
    if config is None:
        return None
    resized_h, resized_w = _resize(
        height, width, config["factor"], config["min_pixels"], config["max_pixels"]
    )
    return (
        (resized_h // config["patch_size"])
        * (resized_w // config["patch_size"])
        // config["merge_size"] ** 2
    )


def estimate_tokens(conversation: Sequence[Mapping[str, Any]], processor: Any) -> int:
    """Estimate the processed token count of one (normalised) conversation."""
    text = render(processor, conversation)
    total = len(tokenizer_of(processor)(text, add_special_tokens=False)["input_ids"])
    for message in conversation:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for item in content:
            image = item.get("image") if item.get("type") == "image" else None
            if isinstance(image, Image.Image):
                expanded = image_tokens(processor, image.height, image.width)
                if expanded is not None:
                    total += expanded - 1  # the placeholder itself is already counted
    return total
