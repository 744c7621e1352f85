"""What happened to a batch: kept, dropped, truncated and warned-about samples.

Also the one place that logs a warning only once per process
(`warn_once`), so repeated batches do not flood the log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable

import attrs

__all__ = ["CollateReport", "DroppedSample", "SampleWarning", "reset_warnings", "warn_once"]


@attrs.frozen
class DroppedSample:
    """A sample left out of a batch, and why.

    Args:
        index: Position of the sample in the batch the caller passed in.
        reason: ``"overlong"``, ``"special_tokens"``, ``"empty_labels"`` or
            ``"unsupported_media"``.
        detail: A sentence a person can act on.
    """

    index: int
    reason: str
    detail: str


@attrs.frozen
class SampleWarning:
    """A kept sample that will not train as its author may expect.

    Args:
        index: Position of the sample in the batch the caller passed in.
        reason: What is wrong: ``"empty_labels"``, or ``"multi_frame_image"`` for
            an animated or multi-page image of which only the first frame is used.
        detail: A sentence a person can act on.
    """

    index: int
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"sample {self.index}: {self.detail}"


@attrs.define
class CollateReport:
    """What happened to one batch: which samples became rows, which were dropped.

    Args:
        batch_size: How many samples the caller passed in.
        kept: Indices of the samples that became rows, in row order.
        dropped: The samples a policy left out, with their reasons.
        truncated: Indices of the kept samples cut to ``max_length``.
        warnings: Kept samples that will not train as their author may expect.
    """

    batch_size: int
    kept: list[int] = attrs.Factory(list)
    dropped: list[DroppedSample] = attrs.Factory(list)
    truncated: list[int] = attrs.Factory(list)
    warnings: list[SampleWarning] = attrs.Factory(list)

    def warn(self, warning: SampleWarning, logger: logging.Logger) -> None:
        """Attach ``warning`` to the report (once) and log it."""
        if warning not in self.warnings:
            self.warnings.append(warning)
            logger.warning("%s", warning)


_WARNED: set[Hashable] = set()
_WARNED_LOCK = threading.Lock()


def warn_once(logger: logging.Logger, key: Hashable, message: str, *args: object) -> None:
    """Log ``message % args`` the first time ``key`` is seen in this process."""
    with _WARNED_LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    logger.warning(message, *args)


def reset_warnings() -> None:
    """Forget which one-time warnings were given (for tests)."""
    with _WARNED_LOCK:
        _WARNED.clear()
