"""Real image and video files for tests, and snapshots of samples.

Every writer takes the destination path (usually under pytest's ``tmp_path``),
writes a file that real decoders read (or, on purpose, fail to read), and
returns the path. :func:`snapshot` turns a sample into a plain value that
compares equal only if nothing in it was changed or replaced.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "EXIF_ORIENTATION",
    "quadrants",
    "snapshot",
    "write_corrupt",
    "write_empty",
    "write_grey16_png",
    "write_image",
    "write_jpeg_with_orientation",
    "write_png_claiming_size",
    "write_truncated",
    "write_video",
]

EXIF_ORIENTATION = 0x0112

# Four colours far apart from each other, so that a lossy JPEG still tells them apart.
QUADRANT_COLOURS = ((230, 20, 20), (20, 200, 20), (20, 20, 230), (240, 240, 30))


def quadrants(width: int, height: int) -> Image.Image:
    """An RGB image whose four quadrants have distinct colours.

    The order is top-left, top-right, bottom-left, bottom-right, as in
    :data:`QUADRANT_COLOURS`, so every rotation and mirror is visible.
    """
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    half_h, half_w = height // 2, width // 2
    top_left, top_right, bottom_left, bottom_right = QUADRANT_COLOURS
    pixels[:half_h, :half_w] = top_left
    pixels[:half_h, half_w:] = top_right
    pixels[half_h:, :half_w] = bottom_left
    pixels[half_h:, half_w:] = bottom_right
    return Image.fromarray(pixels, mode="RGB")


def write_image(path: Path, image: Image.Image, **save_options: Any) -> Path:
    """Save ``image`` to ``path`` (format from the suffix) and return the path."""
    image.save(path, **save_options)
    return path


def write_jpeg_with_orientation(path: Path, image: Image.Image, orientation: int) -> Path:
    """Save ``image`` as a JPEG whose EXIF block carries ``orientation``."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    image.convert("RGB").save(path, format="JPEG", quality=95, exif=exif)
    return path


def write_grey16_png(path: Path, values: Sequence[Sequence[int]]) -> Path:
    """Save a 16-bit greyscale PNG holding ``values`` (rows of ints in 0..65535)."""
    array = np.asarray(values, dtype=np.uint16)
    Image.fromarray(array).save(path, format="PNG")
    return path


def write_truncated(path: Path, image_format: str, keep: float = 0.4, size: int = 96) -> Path:
    """Save a noisy image in ``image_format``, then cut the file to ``keep`` of its bytes.

    Noise does not compress, so the cut lands inside the pixel data and the
    header still parses: the file opens, and fails only when decoded.
    """
    noise = np.random.default_rng(0).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(noise, mode="RGB").save(path, format=image_format)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_corrupt(path: Path) -> Path:
    """Write bytes that are no image at all under an image file name."""
    path.write_bytes(b"this is not an image\n" * 20)
    return path


def write_empty(path: Path) -> Path:
    """Write a zero-byte file."""
    path.write_bytes(b"")
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    checksum = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def write_png_claiming_size(path: Path, width: int, height: int) -> Path:
    """Write a small, well-formed PNG whose header declares ``width`` x ``height`` pixels.

    This is the shape of a decompression bomb: a few bytes on disk that a
    decoder would expand to an enormous buffer.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    data = zlib.compress(b"\x00" * 64)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )
    path.write_bytes(png)
    return path


def write_video(
    path: Path, frames: Sequence[Image.Image], fps: int = 4, codec: str = "mpeg4"
) -> Path:
    """Encode ``frames`` (PIL images of one even size) into a video file with PyAV."""
    import av  # imported here: only video tests need PyAV

    width, height = frames[0].size
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_image(frame.convert("RGB"))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def snapshot(value: Any) -> Any:
    """Return a plain, comparable description of ``value`` and everything inside it.

    Containers and images are recorded with their ``id``, so replacing one by
    an equal copy also shows up; images are recorded with mode, size, pixel
    bytes, EXIF orientation and ``info`` keys.
    """
    if isinstance(value, Image.Image):
        orientation = value.getexif().get(EXIF_ORIENTATION)
        return (
            "image",
            id(value),
            value.mode,
            value.size,
            value.tobytes(),
            orientation,
            sorted(value.info),
        )
    if isinstance(value, Mapping):
        items = [(snapshot(key), snapshot(item)) for key, item in value.items()]
        return ("mapping", type(value).__name__, id(value), items)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, id(value), [snapshot(item) for item in value])
    if isinstance(value, np.ndarray):
        return ("ndarray", id(value), value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (str, bytes, int, float, bool, type(None), Path)):
        return (type(value).__name__, value)
    return (type(value).__name__, id(value), repr(value))
