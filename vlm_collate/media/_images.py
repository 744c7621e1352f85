"""Loading and normalising images on copies.

Every function here returns a new image; the caller's objects are never
modified. Errors name the sample, message and item they came from.
"""

from __future__ import annotations

import io
import os
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import MediaError, SampleTypeError

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "is_remote", "load_image", "local_path", "to_rgb"]

# Pillow's own decompression-bomb threshold.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485

_EXIF_ORIENTATION = 0x0112
_REMOTE_PREFIXES = ("http://", "https://", "data:")


def is_remote(value: str) -> bool:
    """Return True for URLs and data URIs, which are left to the processor."""
    return value[:8].lower().startswith(_REMOTE_PREFIXES)


def local_path(value: str | os.PathLike[str]) -> Path:
    """Turn ``file://`` URLs (percent-escapes, ``localhost``) and plain paths into a Path."""
    text = os.fspath(value)
    if text[:7].lower() == "file://":
        parsed = urllib.parse.urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            return Path(f"//{parsed.netloc}{urllib.request.url2pathname(parsed.path)}")
        return Path(urllib.request.url2pathname(parsed.path))
    return Path(text)


def load_image(value: Any, *, max_pixels: int, location: dict[str, int | None]) -> Any:
    """Return an RGB copy of an image given as a PIL image or a local path.

    URLs and data URIs are returned unchanged (the processor fetches them);
    numpy arrays and tensors are passed through as the processor accepts them.

    Args:
        value: A ``PIL.Image.Image``, a path (``str``/``PathLike``, ``file://``
            allowed), a URL, a ``{"bytes", "path"}`` mapping as the datasets
            library stores images, a numpy array or a torch tensor.
        max_pixels: Largest accepted ``width * height``.
        location: ``sample_index``/``message_index``/``item_index`` for errors.
    """
    if isinstance(value, Image.Image):
        _check_size(value, max_pixels, "<PIL image>", location)
        try:
            value.load()  # a lazily opened image may be truncated or already closed
            return to_rgb(value)
        except (OSError, ValueError, SyntaxError, AssertionError, AttributeError) as exc:
            msg = f"cannot decode the PIL image ({type(exc).__name__}: {exc})"
            raise MediaError(msg, **location) from exc
    if isinstance(value, (str, os.PathLike)):
        if isinstance(value, str) and is_remote(value):
            return value
        return _open_path(local_path(value), max_pixels, location)
    if isinstance(value, Mapping) and (value.get("bytes") or value.get("path")):
        # The datasets library stores images as {"bytes": ..., "path": ...}.
        if value.get("bytes"):
            return _open_bytes(value["bytes"], max_pixels, location)
        return _open_path(local_path(value["path"]), max_pixels, location)
    if isinstance(value, np.ndarray) or type(value).__name__ == "Tensor":
        return value
    msg = (
        "expected an image as a PIL image, a path, a URL, a numpy array or a tensor "
        f"(got {type(value).__name__})"
    )
    raise SampleTypeError(msg, **location)


def _open_bytes(data: bytes, max_pixels: int, location: dict[str, int | None]) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            handle = Image.open(io.BytesIO(data))
            _check_size(handle, max_pixels, "<image bytes>", location)
            handle.load()
        return to_rgb(handle)
    except MediaError:
        raise
    except (
        Image.DecompressionBombError,
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
    ) as exc:
        msg = f"cannot read image bytes: {exc}"
        raise MediaError(msg, **location) from exc


def _open_path(path: Path, max_pixels: int, location: dict[str, int | None]) -> Image.Image:
    if not path.is_file():
        msg = f"image file {str(path)!r} does not exist"
        raise MediaError(msg, **location)
    if path.stat().st_size == 0:
        msg = f"image file {str(path)!r} is empty (0 bytes)"
        raise MediaError(msg, **location)
    # Pillow's own bomb guard stays on, raised to max_pixels when that is higher;
    # the exact limit is checked below on the header's size.
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            handle = Image.open(path)
            try:
                _check_size(handle, max_pixels, str(path), location)
                handle.load()  # decodes now, so a truncated file fails here, not in a worker
            except BaseException:
                handle.close()
                raise
            return to_rgb(handle)
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        msg = f"image file {str(path)!r} is too large to decode safely ({exc})"
        raise MediaError(msg, **location) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        msg = f"cannot read image file {str(path)!r}: {exc}"
        raise MediaError(msg, **location) from exc


def _check_size(
    image: Image.Image, max_pixels: int, name: str, location: dict[str, int | None]
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
        rgba = image.convert("RGBA")
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
