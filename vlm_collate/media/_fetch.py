"""Fetching a URL under a [`MediaAccess`][vlm_collate.media.MediaAccess] policy.

Only reached with ``allow_urls=True``. Every hop of a redirect chain is
checked against the policy (scheme and ``allowed_hosts``) before it is
requested; the body is read in chunks and abandoned at ``max_bytes`` or when
``url_timeout`` has passed, so a server that stalls or trickles cannot hang
a DataLoader worker.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import MediaError

if TYPE_CHECKING:
    from ._access import MediaAccess

__all__ = ["fetch"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand every redirect back to [`fetch`][vlm_collate.media.fetch], which checks it before
    following."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def fetch(url: str, access: MediaAccess, where: Mapping[str, Any]) -> bytes:
    """Return the body at ``url``, following at most ``access.max_redirects`` redirects."""
    if not access.allow_urls:
        msg = (
            f"the URL {_short(url)!r} was not fetched: URLs are refused by default "
            "(MediaAccess(allow_urls=True) fetches them, with a timeout and a size cap)"
        )
        raise MediaError(msg, **where)
    deadline = time.monotonic() + access.url_timeout
    current = url
    for _ in range(access.max_redirects + 1):
        _check_url(current, access, where)
        body, location = _request(current, access, deadline, where)
        if location is None:
            return body
        current = urllib.parse.urljoin(current, location)
    msg = f"the URL {_short(url)!r} redirected more than max_redirects={access.max_redirects} times"
    raise MediaError(msg, **where)


def _check_url(url: str, access: MediaAccess, where: Mapping[str, Any]) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme.lower() not in ("http", "https", "ftp"):
        msg = f"the URL {_short(url)!r} is not http, https or ftp"
        raise MediaError(msg, **where)
    host = (parsed.hostname or "").rstrip(".")
    if access.allowed_hosts is not None and host not in access.allowed_hosts:
        msg = f"the URL {_short(url)!r} names the host {host!r}, which is not in allowed_hosts"
        raise MediaError(msg, **where)


def _request(
    url: str, access: MediaAccess, deadline: float, where: Mapping[str, Any]
) -> tuple[bytes, str | None]:
    """``(body, None)``, or ``(b"", location)`` for a redirect."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise MediaError(_timed_out(url, access), **where)
    try:
        response = _OPENER.open(url, timeout=min(remaining, access.url_timeout))
    except urllib.error.HTTPError as exc:
        location = exc.headers.get("Location") if exc.code in _REDIRECTS else None
        exc.close()
        if location:
            return b"", location
        msg = f"the URL {_short(url)!r} answered HTTP {exc.code} ({exc.reason})"
        raise MediaError(msg, **where) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        raise MediaError(_failed(url, access, exc), **where) from exc
    with response:
        return _body(url, response, access, deadline, where), None


def _body(
    url: str, response: Any, access: MediaAccess, deadline: float, where: Mapping[str, Any]
) -> bytes:
    declared = response.headers.get("Content-Length") if response.headers else None
    if declared and declared.isdigit() and int(declared) > access.max_bytes:
        msg = f"the URL {_short(url)!r} sends {declared} bytes, over max_bytes={access.max_bytes}"
        raise MediaError(msg, **where)
    chunks, size = [], 0
    read = getattr(response, "read1", response.read)
    try:
        while chunk := read(_CHUNK):
            size += len(chunk)
            if size > access.max_bytes:
                msg = f"the URL {_short(url)!r} sent more than max_bytes={access.max_bytes} bytes"
                raise MediaError(msg, **where)
            if time.monotonic() > deadline:
                raise MediaError(_timed_out(url, access), **where)
            chunks.append(chunk)
    except (OSError, http.client.HTTPException) as exc:
        raise MediaError(_failed(url, access, exc), **where) from exc
    return b"".join(chunks)


def _failed(url: str, access: MediaAccess, exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return _timed_out(url, access)
    return f"cannot fetch the URL {_short(url)!r}: {reason}"


def _timed_out(url: str, access: MediaAccess) -> str:
    return f"the URL {_short(url)!r} did not answer within url_timeout={access.url_timeout} s"


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."
