"""The media access policy: which references a dataset may name, and how large media may be.

A dataset downloaded from the internet is untrusted: every path, URL and blob
in it may point anywhere or hold anything. [`MediaAccess`][vlm_collate.MediaAccess] says what is
allowed; [`resolve_media`][vlm_collate.media.resolve_media] turns one reference into a
[`MediaSource`][vlm_collate.media.MediaSource]
(a checked regular file, or bytes held in memory) before any decoder or
third-party reader sees it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import errno
import io
import math
import numbers
import os
import re
import stat
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal

import attrs

from ..errors import ConfigurationError, MediaError, SampleTypeError

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "MAX_SAMPLING_RATE",
    "MediaAccess",
    "MediaSource",
    "current_access",
    "local_path",
    "resolve_media",
    "using_access",
]

# Pillow's own decompression-bomb threshold.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
# Highest audio sampling rate accepted anywhere (professional audio tops out at 768 kHz).
MAX_SAMPLING_RATE = 768_000

_URL_SCHEMES = ("http", "https", "ftp")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_BASE64 = re.compile(r"[A-Za-z0-9+/=_\-\s]+")
# A string this long made only of base64 characters is data, not a file name.
_BASE64_MIN_LENGTH = 64

Location = Mapping[str, "int | None"]


def _bool(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        msg = f"'{attribute.name}' must be True or False (got {value!r})."
        raise ConfigurationError(msg)


def _positive_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        msg = f"'{attribute.name}' must be a positive int (got {value!r})."
        raise ConfigurationError(msg)


def _non_negative_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"'{attribute.name}' must be an int >= 0 (got {value!r})."
        raise ConfigurationError(msg)


def _positive_seconds(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        msg = f"'{attribute.name}' must be a finite number of seconds > 0 (got {value!r})."
        raise ConfigurationError(msg)


def _choice(*allowed: str) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in allowed:
            names = ", ".join(repr(name) for name in allowed)
            msg = f"'{attribute.name}' must be one of {names} (got {value!r})."
            raise ConfigurationError(msg)

    return check


def _to_hosts(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(host, str) and host for host in value):
        msg = f"'allowed_hosts' must be None or a list of host names (got {value!r})."
        raise ConfigurationError(msg)
    return frozenset(host.lower().rstrip(".") for host in value)


def _to_roots(value: Any) -> tuple[Path, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    try:
        roots = tuple(Path(os.path.realpath(os.fspath(root))) for root in value)
    except TypeError as exc:
        msg = f"'roots' must be None or a list of directories (got {value!r})."
        raise ConfigurationError(msg) from exc
    if not roots:
        msg = "'roots' must be None or a non-empty list of directories (got [])."
        raise ConfigurationError(msg)
    return roots


@attrs.frozen(kw_only=True)
class MediaAccess:
    """What media references a dataset may name, and how large each medium may be.

    The defaults are safe for an untrusted dataset: no network access, and
    every medium bounded in bytes, pixels, frames and seconds (see the
    "Security and limits" page of the docs for the memory this allows).

    Args:
        allow_urls: Fetch ``http``, ``https`` and ``ftp`` references. False
            refuses them with a [`MediaError`][vlm_collate.MediaError] and makes no request.
        allowed_hosts: With ``allow_urls``, the only hosts URLs (and their
            redirects) may name; None allows any host.
        url_timeout: Seconds a URL fetch may take: connecting, each read, and
            the whole body.
        max_redirects: Redirects followed per URL.
        max_bytes: Largest medium held in memory: a URL body, a ``data:`` URI,
            a bytes blob, an image or audio file. Video files on disk are
            streamed and bounded by frames and pixels instead.
        roots: None, or the directories media files must lie in (symlinks
            resolved); relative paths resolve against the first.
        max_image_pixels: Largest ``width * height`` of an image, read from its
            header before decoding.
        max_video_frames: Most frames kept from one video.
        max_video_pixels: Largest ``width * height`` of one video frame, read
            from the stream header before decoding.
        video_over_limit: A video whose chosen frames exceed ``max_video_frames``
            is sampled evenly down to the limit (``"sample"``) or refused (``"refuse"``).
        max_audio_seconds: Longest audio clip, in seconds.
        audio_channels: Multi-channel audio (up to 8 channels) is averaged to
            mono (``"mix"``) or refused (``"refuse"``).
    """

    allow_urls: bool = attrs.field(default=False, validator=_bool)
    allowed_hosts: frozenset[str] | None = attrs.field(default=None, converter=_to_hosts)
    url_timeout: float = attrs.field(default=10.0, validator=_positive_seconds)
    max_redirects: int = attrs.field(default=3, validator=_non_negative_int)
    max_bytes: int = attrs.field(default=64 * 2**20, validator=_positive_int)
    roots: tuple[Path, ...] | None = attrs.field(default=None, converter=_to_roots)
    max_image_pixels: int = attrs.field(default=DEFAULT_MAX_IMAGE_PIXELS, validator=_positive_int)
    max_video_frames: int = attrs.field(default=256, validator=_positive_int)
    max_video_pixels: int = attrs.field(default=1920 * 1088, validator=_positive_int)
    video_over_limit: Literal["sample", "refuse"] = attrs.field(
        default="sample", validator=_choice("sample", "refuse")
    )
    max_audio_seconds: float = attrs.field(default=600.0, validator=_positive_seconds)
    audio_channels: Literal["mix", "refuse"] = attrs.field(
        default="mix", validator=_choice("mix", "refuse")
    )

    @classmethod
    def coerce(cls, value: Any) -> MediaAccess:
        """A [`MediaAccess`][vlm_collate.MediaAccess] from itself, None (the defaults) or a mapping
        of its options."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {field.name for field in attrs.fields(cls)})
            if unknown:
                msg = f"'media_access' has unknown options {unknown} (see MediaAccess)."
                raise ConfigurationError(msg)
            return cls(**value)
        msg = f"'media_access' must be a MediaAccess or a mapping of its options (got {value!r})."
        raise ConfigurationError(msg)

    def with_max_image_pixels(self, max_image_pixels: int | None) -> MediaAccess:
        """This policy with ``max_image_pixels`` replaced, unless it is None or the default."""
        if max_image_pixels is None or max_image_pixels in (
            DEFAULT_MAX_IMAGE_PIXELS,
            self.max_image_pixels,
        ):
            return self
        return attrs.evolve(self, max_image_pixels=max_image_pixels)


@attrs.frozen
class MediaSource:
    """A media reference that passed the policy: a regular file, or bytes in memory.

    Args:
        name: How errors name it (the path, ``"<bytes>"``, the URL, ``"<data: URI>"``).
        path: The resolved file (symlinks followed), or None for bytes.
        data: The bytes, or None for a file.
        access: The policy it passed, which later decoding steps keep applying.
    """

    name: str
    path: Path | None = None
    data: bytes | None = attrs.field(default=None, repr=False)
    access: MediaAccess = attrs.field(factory=MediaAccess, repr=False)

    def open(self, location: Location | None = None) -> IO[bytes]:
        """A binary stream of the medium; a file is opened without blocking and re-checked."""
        if self.data is not None or self.path is None:
            return io.BytesIO(self.data or b"")
        where = dict(location or {})
        try:
            handle = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            msg = f"cannot open media file {self.name!r}: {exc.strerror or exc}"
            raise MediaError(msg, **where) from exc
        if not stat.S_ISREG(os.fstat(handle).st_mode):  # replaced since it was checked
            os.close(handle)
            msg = f"media file {self.name!r} is not a regular file"
            raise MediaError(msg, **where)
        return os.fdopen(handle, "rb")

    def read(self, location: Location | None = None) -> bytes:
        """All bytes of the medium, refusing more than ``access.max_bytes``."""
        if self.data is not None:
            return self.data
        limit = self.access.max_bytes
        with self.open(location) as stream:
            data = stream.read(limit + 1)
        if len(data) > limit:
            msg = f"media file {self.name!r} is larger than max_bytes={limit}"
            raise MediaError(msg, **dict(location or {}))
        return data


_CURRENT: contextvars.ContextVar[MediaAccess | None] = contextvars.ContextVar(
    "vlm_collate_media_access", default=None
)


def current_access() -> MediaAccess:
    """The policy of the collator in effect here (see
    [`using_access`][vlm_collate.media.using_access]), or the defaults."""
    return _CURRENT.get() or MediaAccess()


@contextlib.contextmanager
def using_access(access: MediaAccess) -> Iterator[MediaAccess]:
    """Make ``access`` the policy media readers apply when none is passed to them.

    Collators wrap their media step in this, so a media strategy (and every
    reader it calls) applies the collator's ``media_access`` without taking it
    as an argument. The setting is per thread and per asyncio task.
    """
    token = _CURRENT.set(access)
    try:
        yield access
    finally:
        _CURRENT.reset(token)


def local_path(value: str | os.PathLike[str]) -> Path:
    """Turn ``file://`` URLs (percent-escapes, ``localhost``) and plain paths into a Path."""
    text = os.fspath(value)
    if text[:7].lower() == "file://":
        parsed = urllib.parse.urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            return Path(f"//{parsed.netloc}{urllib.request.url2pathname(parsed.path)}")
        return Path(urllib.request.url2pathname(parsed.path))
    return Path(text)


def resolve_media(
    value: Any, access: MediaAccess | None = None, *, kind: str, location: Location | None = None
) -> MediaSource:
    """Check one media reference against ``access`` and return it as a
    [`MediaSource`][vlm_collate.media.MediaSource].

    ``value`` may be a path (``str`` or ``PathLike``), a ``file://``,
    ``http(s)://`` or ``ftp://`` URL, a ``data:`` URI, bytes, a
    ``{"bytes", "path"}`` mapping (the ``datasets`` image format) or a
    [`MediaSource`][vlm_collate.media.MediaSource] already resolved. URLs are fetched here, bounded
    by
    the policy; nothing is decoded.

    Raises:
        MediaError: The reference is refused, missing, unreadable or too large.
        SampleTypeError: ``value`` is of none of the types above.
    """
    access = access or current_access()
    where = dict(location or {})
    if isinstance(value, MediaSource):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _in_memory(bytes(value), "<bytes>", kind, access, where)
    if isinstance(value, Mapping) and (value.get("bytes") or value.get("path")):
        if value.get("bytes"):
            return resolve_media(value["bytes"], access, kind=kind, location=location)
        return resolve_media(value["path"], access, kind=kind, location=location)
    if isinstance(value, os.PathLike):
        return _checked_file(Path(value), os.fspath(value), kind, access, where)
    if not isinstance(value, str):
        msg = (
            f"a {kind} reference must be a path, a URL, a data: URI or bytes "
            f"(got {type(value).__name__})"
        )
        raise SampleTypeError(msg, **where)
    return _resolve_text(value, kind, access, where)


def _resolve_text(text: str, kind: str, access: MediaAccess, where: dict[str, Any]) -> MediaSource:
    if not text:
        msg = f"the {kind} reference is an empty string"
        raise MediaError(msg, **where)
    if "\x00" in text:
        msg = f"the {kind} reference holds a NUL character"
        raise MediaError(msg, **where)
    match = _SCHEME.match(text)
    scheme = match.group(1).lower() if match else ""
    if scheme == "data":
        return _in_memory(_data_uri(text, access, where), "<data: URI>", kind, access, where)
    if scheme in _URL_SCHEMES:
        from ._fetch import fetch

        return _in_memory(fetch(text, access, where), text, kind, access, where)
    if scheme == "file":
        return _checked_file(local_path(text), text, kind, access, where)
    if scheme and len(scheme) > 1:  # one letter is a Windows drive
        msg = (
            f"the {kind} reference {_short(text)!r} uses the scheme {scheme!r}; only local "
            f"files, data: URIs, bytes and (with allow_urls) {', '.join(_URL_SCHEMES)} URLs "
            "are read"
        )
        raise MediaError(msg, **where)
    return _checked_file(Path(text), text, kind, access, where)


def _in_memory(
    data: bytes, name: str, kind: str, access: MediaAccess, where: dict[str, Any]
) -> MediaSource:
    if not data:
        msg = f"the {kind} {name} is empty (0 bytes)"
        raise MediaError(msg, **where)
    if len(data) > access.max_bytes:
        msg = f"the {kind} {name} holds {len(data)} bytes, more than max_bytes={access.max_bytes}"
        raise MediaError(msg, **where)
    return MediaSource(name=name, data=data, access=access)


def _data_uri(text: str, access: MediaAccess, where: dict[str, Any]) -> bytes:
    header, comma, payload = text.partition(",")
    if not comma:
        msg = "a data: URI needs a ',' before its payload"
        raise MediaError(msg, **where)
    if len(payload) * 3 // 4 > access.max_bytes + 3:  # refused before decoding
        msg = f"the data: URI holds more than max_bytes={access.max_bytes} bytes"
        raise MediaError(msg, **where)
    if not header.lower().endswith(";base64"):
        return urllib.parse.unquote_to_bytes(payload)
    try:
        return base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        msg = f"the data: URI's base64 payload is invalid ({exc})"
        raise MediaError(msg, **where) from exc


def _checked_file(
    path: Path, name: str, kind: str, access: MediaAccess, where: dict[str, Any]
) -> MediaSource:
    if access.roots is not None and not path.is_absolute():
        path = access.roots[0] / path
    real = Path(os.path.realpath(path))
    if access.roots is not None and not any(_inside(real, root) for root in access.roots):
        roots = ", ".join(str(root) for root in access.roots)
        msg = f"{kind} file {_short(name)!r} resolves to {str(real)!r}, outside the roots ({roots})"
        raise MediaError(msg, **where)
    try:
        info = os.stat(real)
    except OSError as exc:
        raise MediaError(_stat_problem(name, kind, exc), **where) from exc
    if stat.S_ISDIR(info.st_mode):
        msg = f"{kind} path {_short(name)!r} is a directory, not a file"
        raise MediaError(msg, **where)
    if not stat.S_ISREG(info.st_mode):
        msg = f"{kind} path {_short(name)!r} is not a regular file (a FIFO, device or socket)"
        raise MediaError(msg, **where)
    if info.st_size == 0:
        msg = f"{kind} file {_short(name)!r} is empty (0 bytes)"
        raise MediaError(msg, **where)
    return MediaSource(name=name, path=real, access=access)


def _stat_problem(name: str, kind: str, exc: OSError) -> str:
    if _looks_like_base64(name):
        return (
            f"the {kind} reference looks like raw base64 data, not a path; use a data: URI or bytes"
        )
    if exc.errno == errno.ENAMETOOLONG:
        return f"the {kind} path is too long for the file system ({len(name)} characters)"
    if exc.errno == errno.ENOENT:
        return f"{kind} file {_short(name)!r} does not exist"
    return f"cannot access {kind} file {_short(name)!r}: {exc.strerror or exc}"


def _looks_like_base64(text: str) -> bool:
    """Long, only base64 characters, and mixed case with digits, as encoded binary always is."""
    return (
        len(text) >= _BASE64_MIN_LENGTH
        and _BASE64.fullmatch(text) is not None
        and any(char.isupper() for char in text)
        and any(char.islower() for char in text)
        and any(char.isdigit() for char in text)
    )


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."
