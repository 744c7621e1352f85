"""Hostile-input harness: run a call in a forked child under a memory cap and a deadline.

:func:`bounded` forks, caps the child's address space at its current size
plus ``extra_mb`` with ``resource.setrlimit(RLIMIT_AS)``, runs the call and
reports how it ended. A regression that allocates without bound then fails
in the child (a ``MemoryError``) instead of taking the machine down, and one
that hangs is killed at ``timeout`` seconds. :class:`RecordingServer` is a
real ``http.server`` on 127.0.0.1 that records every request it gets.
"""

from __future__ import annotations

import http.server
import os
import pickle
import resource
import select
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["Outcome", "RecordingServer", "bounded"]


@attrs.frozen
class Outcome:
    """How a bounded call ended.

    Args:
        error: The exception's type name, or None if the call returned.
        message: ``str`` of the exception (empty on success).
        typed: Whether the exception was a ``VLMCollateError``.
        value: What the call returned (on success; must pickle).
        seconds: Wall time of the call in the child.
        hung: The child was killed at the deadline.
    """

    error: str | None
    message: str = ""
    typed: bool = False
    value: Any = None
    seconds: float = 0.0
    hung: bool = False


def _vm_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _child(call: Callable[[], Any], extra_mb: int, write_end: int) -> None:
    import torch

    from vlm_collate.errors import VLMCollateError

    # A forked child must not enter the parent's OpenMP pool: it can deadlock.
    torch.set_num_threads(1)

    limit = _vm_bytes() + extra_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    start = time.monotonic()
    try:
        outcome = Outcome(error=None, value=call())
    except BaseException as exc:  # the parent wants to know about every ending
        outcome = Outcome(
            error=type(exc).__name__,
            message=f"{exc}"[:2000] or traceback.format_exc()[-2000:],
            typed=isinstance(exc, VLMCollateError),
        )
    outcome = attrs.evolve(outcome, seconds=time.monotonic() - start)
    try:
        data = pickle.dumps(outcome)
    except Exception:
        data = pickle.dumps(attrs.evolve(outcome, value=repr(outcome.value)))
    with os.fdopen(write_end, "wb") as pipe:
        pipe.write(data)


def bounded(call: Callable[[], Any], *, extra_mb: int = 512, timeout: float = 20.0) -> Outcome:
    """Run ``call()`` in a forked child allowed ``extra_mb`` more memory and ``timeout`` seconds."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        os.close(read_end)
        try:
            _child(call, extra_mb, write_end)
        finally:
            os._exit(0)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + timeout
    with os.fdopen(read_end, "rb") as pipe:
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([pipe], [], [], remaining)
            if not ready:
                break
            chunk = os.read(pipe.fileno(), 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    if time.monotonic() >= deadline:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return Outcome(error="Timeout", hung=True, seconds=timeout)
    os.waitpid(pid, 0)
    if not chunks:
        return Outcome(error="ChildDied", message="the child exited without a result")
    return pickle.loads(b"".join(chunks))


class _Handler(http.server.BaseHTTPRequestHandler):
    server: RecordingServer

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        route = self.server.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_error(404)
            return
        route(self)

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass


class RecordingServer(http.server.ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 (a free port) that records request paths.

    ``routes`` maps a path to a function of the request handler. :meth:`stop`
    releases handlers blocked on :attr:`release` (the stalling routes).
    """

    daemon_threads = True

    def __init__(self, routes: dict[str, Callable[[Any], None]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = routes
        self.requests: list[str] = []
        self.release = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        """The full URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def stop(self) -> None:
        """Release stalled handlers and shut the server down."""
        self.release.set()
        self.shutdown()
        self.server_close()
