"""Loading and normalising images on copies.

Every function here returns a new image; the caller's objects are never
modified. Errors name the sample, message and item they came from.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import MediaError, SampleTypeError
from ._access import (
    MediaAccess,
    MediaSource,
    current_access,
    resolve_media,
)

__all__ = ["decode_image", "is_remote", "load_image", "to_rgb"]

_EXIF_ORIENTATION = 0x0112
_REMOTE_PREFIXES = ("http://", "https://", "ftp://", "data:")
# Formats whose extra frames are not pictures of their own (a phone's MPO holds a preview).
_SINGLE_PICTURE_FORMATS = frozenset({"MPO"})
_DECODE_ERRORS = (
    Image.DecompressionBombError,
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    struct.error,
    IndexError,
    EOFError,
    AttributeError,
    AssertionError,
    MemoryError,
    RuntimeError,
)
_TRUNCATION_LOCK = threading.Lock()


def is_remote(value: str) -> bool:
    """Return True for URLs and data URIs (references that name no local file)."""
    return value[:8].lower().startswith(_REMOTE_PREFIXES)


def load_image(
    value: Any,
    *,
    location: Mapping[str, int | None],
    max_pixels: int | None = None,
    access: MediaAccess | None = None,
    notes: list[tuple[str, str]] | None = None,
) -> Any:
    """Return an upright RGB copy of an image, read and checked under ``access``.

    Paths, ``file://`` and (with ``allow_urls``) ``http(s)``/``ftp`` URLs,
    ``data:`` URIs, bytes and ``{"bytes", "path"}`` mappings are all resolved
    by [`resolve_media`][vlm_collate.media.resolve_media] and decoded here, with the
    pixel count checked on the header before any pixel is decoded. Numpy
    arrays and tensors are passed through as the processor accepts them.

    Args:
        value: A ``PIL.Image.Image``, a reference as above, an array or a tensor.
        location: ``sample_index``/``message_index``/``item_index`` for errors.
        max_pixels: Largest accepted ``width * height``; overrides ``access``.
        access: The media access policy (the safe defaults when None).
        notes: Collects ``(reason, detail)`` for what the caller should report,
            such as a multi-frame image read as its first frame.
    """
    access = (access or current_access()).with_max_image_pixels(max_pixels)
    where = dict(location)
    if isinstance(value, Image.Image):
        _check_size(value, access.max_image_pixels, "<PIL image>", where)
        try:
            with _strict_truncation():
                value.load()  # a lazily opened image may be truncated or already closed
            return to_rgb(value)
        except _DECODE_ERRORS as exc:
            msg = f"cannot decode the PIL image ({type(exc).__name__}: {exc})"
            raise MediaError(msg, **where) from exc
    if isinstance(value, np.ndarray) or type(value).__name__ == "Tensor":
        return value
    if isinstance(value, (str, os.PathLike, bytes, bytearray, memoryview, MediaSource)) or (
        isinstance(value, Mapping) and (value.get("bytes") or value.get("path"))
    ):
        source = resolve_media(value, access, kind="image", location=where)
        return decode_image(source, location=where, notes=notes)
    msg = (
        "expected an image as a PIL image, a path, a URL, a data: URI, bytes, a numpy array "
        f"or a tensor (got {type(value).__name__})"
    )
    raise SampleTypeError(msg, **where)


def decode_image(
    source: MediaSource,
    *,
    location: Mapping[str, int | None],
    notes: list[tuple[str, str]] | None = None,
) -> Image.Image:
    """Decode a resolved image: header checked first, truncation always an error."""
    where = dict(location)
    name = source.name if source.path is None else repr(source.name)
    data = source.read(where)
    limit = source.access.max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            handle = _open_header(io.BytesIO(data), limit)
            _check_size(handle, limit, name, where)
            frames = _frame_count(handle)
            with _strict_truncation():
                handle.load()  # decodes now, so a truncated file fails here, not in a worker
            image = to_rgb(handle)
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        msg = f"image {name} is over max_image_pixels={limit} (possible decompression bomb: {exc})"
        raise MediaError(msg, **where) from exc
    except _DECODE_ERRORS as exc:
        msg = f"cannot read image {name}: {type(exc).__name__}: {exc}"
        raise MediaError(msg, **where) from exc
    if frames > 1 and notes is not None:
        detail = f"image {name} ({handle.format}) has {frames} frames; only the first is used"
        notes.append(("multi_frame_image", detail))
    return image


def _open_header(stream: io.BytesIO, max_pixels: int) -> Image.Image:
    """``Image.open`` (the header only); past Pillow's own bomb guard when the policy allows."""
    try:
        return Image.open(stream)
    except Image.DecompressionBombError:
        # Pillow refuses above twice its global limit, which is left as it is;
        # a larger limit asked for by the policy is honoured without changing it.
        pillow_limit = Image.MAX_IMAGE_PIXELS
        if pillow_limit is None or max_pixels <= 2 * pillow_limit:
            raise
        return _open_unguarded(stream)


def _open_unguarded(stream: io.BytesIO) -> Image.Image:
    """What ``Image.open`` does, without its decompression-bomb check (sizes are checked after)."""
    Image.init()
    prefix = stream.read(16)
    for format_id in Image.ID:
        factory, accept = Image.OPEN[format_id]
        accepted = True if accept is None else accept(prefix)
        if not accepted or isinstance(accepted, str):
            continue
        stream.seek(0)
        try:
            return factory(stream, "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
    msg = "cannot identify image file"
    raise UnidentifiedImageError(msg)


def _frame_count(image: Image.Image) -> int:
    if image.format in _SINGLE_PICTURE_FORMATS:
        return 1
    count = getattr(image, "n_frames", 1)
    return count if isinstance(count, int) else 1


@contextmanager
def _strict_truncation() -> Iterator[None]:
    """Decode with Pillow's truncation check on, even if someone turned it off globally.

    ``ImageFile.LOAD_TRUNCATED_IMAGES = True`` makes Pillow grey-fill a cut
    file without a word. Only then is the flag cleared for this decode and set
    back afterwards (under a lock, so concurrent decodes restore it in order).
    """
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield
        return
    with _TRUNCATION_LOCK:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _check_size(
    image: Image.Image, max_pixels: int, name: str, location: Mapping[str, int | None]
) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        msg = f"image {name} has no pixels (size {width}x{height})"
        raise MediaError(msg, **location)
    if width * height > max_pixels:
        msg = (
            f"image {name} has {width}x{height} = {width * height} pixels, more than "
            f"max_image_pixels={max_pixels} (possible decompression bomb)"
        )
        raise MediaError(msg, **location)


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as upright 8-bit RGB: a new image, or ``image`` itself if it already is one.

    EXIF orientation is applied; transparent pixels are composited over white;
    16-bit and 32-bit greyscale are scaled down to 8 bits instead of clipped.
    """
    image = _upright(image)
    mode = image.mode
    if mode == "RGB":
        return image  # already fine; it is shared, never modified
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image if mode == "RGBA" else image.convert("RGBA")  # no copy of a large image
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode.startswith("I;16") or mode == "I":
        data = np.asarray(image, dtype=np.int64)
        scaled = np.clip(data >> 8, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if mode == "F":
        data = np.clip(np.asarray(image, dtype=np.float32), 0, 255).astype(np.uint8)
        return Image.fromarray(data, mode="L").convert("RGB")
    return image.convert("RGB")


def _upright(image: Image.Image) -> Image.Image:
    # Parsing EXIF costs time per image; only JPEG/PNG/WebP blocks (in info) and
    # TIFF tags can carry an orientation, and images made in memory carry none.
    if (
        "exif" not in image.info
        and image.format != "TIFF"
        and getattr(image, "_exif", None) is None
    ):
        return image
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not reject an otherwise fine image
        return image
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(image)
    return image
