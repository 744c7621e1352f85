"""Media values as datasets hold them, turned into the library's content items.

Rows name their media in columns (``image``, ``images``, ``videos``, ...) as a
path, a list of paths, a PIL image or a ``datasets.Image`` value
(``{"bytes", "path"}``); chat items name them as URLs (``file://``, ``data:``,
``http(s)://``). Relative paths are resolved against a base folder when one
is given; remote URLs are passed on untouched, so the collator's media access
rules decide what becomes of them.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import pathlib
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import MediaError, SampleError, SampleTypeError

__all__ = [
    "MEDIA_COLUMNS",
    "PLACEHOLDERS",
    "count_placeholders",
    "decode_audio",
    "media_columns",
    "media_item",
    "split_placeholders",
    "url_source",
]

MEDIA_KINDS = ("image", "video", "audio")
# The columns each modality is read from, singular first.
MEDIA_COLUMNS = {kind: (kind, f"{kind}s") for kind in MEDIA_KINDS}
PLACEHOLDERS = {kind: f"<{kind}>" for kind in MEDIA_KINDS}
_PLACEHOLDER = re.compile(r"<(image|video|audio)>")
_REMOTE = ("http://", "https://", "ftp://")


def media_columns(row: Mapping[str, Any], index: int | None) -> dict[str, list[Any]]:
    """The media of each modality named by the row's columns, in order.

    Raises:
        SampleError: Both the singular and the plural column hold media.
    """
    found: dict[str, list[Any]] = {}
    for kind, columns in MEDIA_COLUMNS.items():
        present = [column for column in columns if _listed(row.get(column))]
        if len(present) > 1:
            msg = f"the row sets both {present[0]!r} and {present[1]!r}; give the {kind}s in one"
            raise SampleError(msg, sample_index=index)
        found[kind] = _listed(row.get(present[0])) if present else []
    return found


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    return [value]


def media_item(kind: str, value: Any, base: pathlib.Path | None) -> dict[str, Any]:
    """A content item ``{"type": kind, kind: value}`` with its path resolved against ``base``."""
    return {"type": kind, kind: _resolved(kind, value, base)}


def _resolved(kind: str, value: Any, base: pathlib.Path | None) -> Any:
    if isinstance(value, Mapping) and ("bytes" in value or "path" in value):
        if value.get("bytes"):
            return dict(value) if kind == "image" else value
        return _resolved_path(value.get("path"), base)
    if isinstance(value, (str, os.PathLike)):
        return _resolved_path(value, base)
    return value


def _resolved_path(value: Any, base: pathlib.Path | None) -> Any:
    if not isinstance(value, (str, os.PathLike)):
        return value
    text = os.fspath(value)
    if text.startswith("file://"):
        text = urllib.parse.unquote(urllib.parse.urlparse(text).path)
    if text.startswith((*_REMOTE, "data:")) or base is None or not text:
        return text
    path = pathlib.Path(text)
    return text if path.is_absolute() else str(base / path)


def url_source(url: str, base: pathlib.Path | None, where: dict[str, int | None]) -> Any:
    """The image source an OpenAI ``image_url`` names: bytes for ``data:``, a path or a URL."""
    if not url.startswith("data:"):
        return _resolved_path(url, base)
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        msg = f"a data: URI must be base64-encoded (got header {header[:40]!r})"
        raise MediaError(msg, **where)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        msg = f"the data: URI holds invalid base64 ({exc})"
        raise MediaError(msg, **where) from exc
    return {"bytes": data, "path": None}


def decode_audio(data: Any, where: dict[str, int | None]) -> dict[str, Any]:
    """An OpenAI ``input_audio`` value (base64 ``data``) as ``{"array", "sampling_rate"}``."""
    if not isinstance(data, str) or not data:
        msg = f"an 'input_audio' item needs base64 'data' (got {type(data).__name__})"
        raise SampleTypeError(msg, **where)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        msg = f"'input_audio' data is not valid base64 ({exc})"
        raise MediaError(msg, **where) from exc
    import av
    import numpy as np

    try:
        with av.open(io.BytesIO(raw), mode="r") as container:
            stream = container.streams.audio[0]
            frames = [frame.to_ndarray() for frame in container.decode(stream)]
            rate = stream.rate or stream.codec_context.sample_rate
    except (av.FFmpegError, IndexError, ValueError) as exc:
        msg = f"cannot decode the 'input_audio' data ({type(exc).__name__}: {exc})"
        raise MediaError(msg, **where) from exc
    if not frames:
        msg = "the 'input_audio' data holds no audio samples"
        raise MediaError(msg, **where)
    samples = np.concatenate([frame.reshape(-1) for frame in frames])
    return {"array": samples, "sampling_rate": int(rate)}


def count_placeholders(text: str) -> dict[str, int]:
    """How many ``<image>``, ``<video>`` and ``<audio>`` placeholders ``text`` holds."""
    counts = dict.fromkeys(MEDIA_KINDS, 0)
    for match in _PLACEHOLDER.finditer(text):
        counts[match.group(1)] += 1
    return counts


def split_placeholders(
    text: str, queues: dict[str, list[Any]], base: pathlib.Path | None
) -> list[dict[str, Any]]:
    """Content items for ``text``: each placeholder becomes the next media item of its kind.

    One newline next to a placeholder is dropped with it (``"<image>\\nWhat?"``
    becomes the image, then ``"What?"``); the caller has checked the counts.
    """
    items: list[dict[str, Any]] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        _add_text(items, text[position : match.start()].removesuffix("\n"))
        kind = match.group(1)
        items.append(media_item(kind, queues[kind].pop(0), base))
        position = match.end()
        if text.startswith("\n", position):
            position += 1
    _add_text(items, text[position:])
    return items


def _add_text(items: list[dict[str, Any]], text: str) -> None:
    if text:
        items.append({"type": "text", "text": text})
