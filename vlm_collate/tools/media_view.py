"""What the inspect page shows of a sample's images and videos: names, sizes, thumbnails.

Thumbnails are small JPEGs inlined as ``data:`` URIs, so the page needs no
file beside it and fetches nothing. Only local files and in-memory images get
a thumbnail: a URL is named, never fetched.
"""

from __future__ import annotations

import base64
import functools
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
from PIL import Image

from ..media import is_remote, local_path, read_video

__all__ = ["MediaView", "media_views"]

THUMBNAIL_SIZE = 96
MAX_FRAME_THUMBNAILS = 8
_MEDIA_KEYS = {"image": ("image", "path", "url"), "video": ("video", "path", "url")}


@attrs.frozen
class MediaView:
    """One image or video of a sample, as the inspect page shows it.

    Args:
        kind: ``"image"`` or ``"video"``.
        name: The file name (or the URL, or ``<PIL image>``).
        original: ``(width, height)`` of the file, when it could be read.
        resized: ``(width, height)`` the processor resized it to, when the
            batch says (``image_grid_thw`` / ``video_grid_thw``).
        frames: How many frames the processor sampled from a video.
        thumbnails: ``data:`` URIs: one for an image, sampled frames for a video.
    """

    kind: str
    name: str
    original: tuple[int, int] | None = None
    resized: tuple[int, int] | None = None
    frames: int | None = None
    thumbnails: tuple[str, ...] = ()


def media_views(
    example: Mapping[str, Any], grids: Mapping[str, Sequence[Sequence[int]]], processor: Any
) -> tuple[MediaView, ...]:
    """Describe the images and videos of ``example`` in conversation order.

    Args:
        example: The sample.
        grids: ``{"image": [(t, h, w), ...], "video": [...]}``, this row's grids in
            patches, as the batch's ``*_grid_thw`` gives them (empty when it has none).
        processor: The processor, for the patch sizes.
    """
    views = []
    counters = {"image": 0, "video": 0}
    for kind, value in _media_items(example):
        position = counters[kind]
        counters[kind] += 1
        kind_grids = grids.get(kind, ())
        grid = kind_grids[position] if position < len(kind_grids) else None
        views.append(_view(kind, value, grid, processor))
    return tuple(views)


def _media_items(example: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    conversation = example.get("conversation")
    for message in conversation if isinstance(conversation, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        for item in content if isinstance(content, list) else ():
            kind = item.get("type") if isinstance(item, dict) else None
            if kind in _MEDIA_KEYS:
                value = next((item[key] for key in _MEDIA_KEYS[kind] if item.get(key)), None)
                yield kind, value


def _view(kind: str, value: Any, grid: Sequence[int] | None, processor: Any) -> MediaView:
    sub = getattr(processor, f"{kind}_processor", None)
    patch = getattr(sub, "patch_size", None)
    resized = (int(grid[2]) * patch, int(grid[1]) * patch) if grid is not None and patch else None
    name = _name(value)
    try:
        if kind == "image":
            original, thumbnails = _image_thumbnail(value)
            return MediaView(kind, name, original, resized, None, thumbnails)
        frames = int(grid[0]) * getattr(sub, "temporal_patch_size", 1) if grid is not None else None
        original, thumbnails = _video_thumbnails(value, frames)
        return MediaView(kind, name, original, resized, frames, thumbnails)
    except (OSError, ValueError, RuntimeError, TypeError, ArithmeticError):
        # The collator already accepted or reported this item; the page only shows less.
        return MediaView(kind, name, None, resized, None, ())


def _name(value: Any) -> str:
    if isinstance(value, Image.Image):
        return "<PIL image>"
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        return text if is_remote(text) else local_path(text).name
    return f"<{type(value).__name__}>"


def _image_thumbnail(value: Any) -> tuple[tuple[int, int] | None, tuple[str, ...]]:
    if isinstance(value, Image.Image):
        return value.size, (_thumbnail_uri(value),)
    if isinstance(value, (str, os.PathLike)) and not is_remote(os.fspath(value)):
        path = str(local_path(value))
        return _file_thumbnail(path, os.path.getmtime(path))
    return None, ()


@functools.lru_cache(maxsize=256)
def _file_thumbnail(path: str, mtime: float) -> tuple[tuple[int, int], tuple[str, ...]]:
    """Size and thumbnail of an image file; ``mtime`` keys the cache on the file's version."""
    with Image.open(path) as image:
        return image.size, (_thumbnail_uri(image),)


def _video_thumbnails(
    value: Any, frames: int | None
) -> tuple[tuple[int, int] | None, tuple[str, ...]]:
    if not isinstance(value, (str, os.PathLike)) or is_remote(os.fspath(value)):
        return None, ()
    path = str(local_path(value))
    return _file_frames(path, os.path.getmtime(path), frames)


@functools.lru_cache(maxsize=64)
def _file_frames(
    path: str, mtime: float, frames: int | None
) -> tuple[tuple[int, int], tuple[str, ...]]:
    """Frame size and up to MAX_FRAME_THUMBNAILS of the ``frames`` evenly spaced frames."""
    shown = min(frames or MAX_FRAME_THUMBNAILS, MAX_FRAME_THUMBNAILS)
    decoded = read_video(path, nframes=shown)
    height, width = decoded.frames.shape[1:3]
    thumbnails = tuple(_thumbnail_uri(Image.fromarray(frame)) for frame in decoded.frames)
    return (int(width), int(height)), thumbnails


def _thumbnail_uri(image: Image.Image) -> str:
    small = image.convert("RGB")
    small.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
