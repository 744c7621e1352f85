"""The bad-input policies, shared by the chat collators and the pre-tokenized path.

Each check answers one question about one sample and applies the policy the
caller chose: it raises the matching [`VLMCollateError`][vlm_collate.VLMCollateError],
returns a [`DroppedSample`][vlm_collate.DroppedSample] (the sample leaves the batch),
or returns None (the sample stays). `drop_samples` does the
bookkeeping of every drop: the report, the counter and the log.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, Protocol, TypeVar

from ._report import CollateReport, DroppedSample, SampleWarning
from ._samples import MEDIA_TYPES, Sample, find_special_token
from .errors import BatchError, EmptyLabelsError, MediaError, OverlongError, SpecialTokenError

__all__ = [
    "EmptyLabelsPolicy",
    "OverlongPolicy",
    "SpecialTokensPolicy",
    "UnsupportedMediaPolicy",
    "check_empty_labels",
    "check_estimated_length",
    "check_length",
    "check_special_tokens",
    "check_supported_media",
    "drop_samples",
]

logger = logging.getLogger("vlm_collate")
# Collators shared by threads add to their drop counters under this lock.
_COUNTS_LOCK = threading.Lock()

EmptyLabelsPolicy = Literal["raise", "warn", "drop"]
SpecialTokensPolicy = Literal["raise", "drop", "allow"]
OverlongPolicy = Literal["drop", "raise", "truncate"]
UnsupportedMediaPolicy = Literal["raise", "drop"]


class _Indexed(Protocol):
    @property
    def index(self) -> int: ...


Row = TypeVar("Row", bound=_Indexed)


def check_supported_media(
    sample: Sample,
    supported: frozenset[str],
    policy: UnsupportedMediaPolicy,
    refusal: Callable[[str], str],
) -> DroppedSample | None:
    """Refuse a sample holding a modality the processor cannot take."""
    for position, message in enumerate(sample.conversation):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for item_index, item in enumerate(content):
            kind = item.get("type")
            if kind in MEDIA_TYPES and kind not in supported:
                detail = refusal(kind)
                if policy == "raise":
                    raise MediaError(
                        detail,
                        sample_index=sample.index,
                        message_index=position,
                        item_index=item_index,
                    )
                return DroppedSample(
                    sample.index, "unsupported_media", f"message {position}: {detail}"
                )
    return None


def check_special_tokens(
    sample: Sample, pattern: re.Pattern[str] | None, policy: SpecialTokensPolicy
) -> DroppedSample | None:
    """Refuse message text that holds a control token of the tokenizer."""
    if policy == "allow":
        return None
    found = find_special_token(sample.conversation, pattern)
    if found is None:
        return None
    position, token = found
    detail = (
        f"message text contains the control token {token!r}, which would corrupt the "
        "turn structure and labels (special_tokens_in_text='allow' keeps it)"
    )
    if policy == "raise":
        raise SpecialTokenError(detail, sample_index=sample.index, message_index=position)
    return DroppedSample(sample.index, "special_tokens", f"message {position}: {detail}")


def check_estimated_length(
    index: int, estimate: int, max_length: int, policy: OverlongPolicy
) -> DroppedSample | None:
    """Apply ``overlong`` to a length estimated before the processor runs."""
    if estimate <= max_length or policy == "truncate":
        return None
    detail = f"estimated {estimate} tokens (text plus expanded media) > max_length={max_length}"
    if policy == "raise":
        raise OverlongError(detail, sample_index=index)
    return DroppedSample(index, "overlong", detail)


def check_length(
    index: int,
    length: int,
    max_length: int,
    policy: OverlongPolicy,
    cuts_media: Callable[[], bool],
) -> DroppedSample | None:
    """Apply ``overlong`` to a processed row; None means "keep it, truncated".

    ``cuts_media`` is asked only when truncating: a cut through media tokens
    drops the sample instead.
    """
    detail = f"{length} tokens > max_length={max_length}"
    if policy == "raise":
        raise OverlongError(detail, sample_index=index)
    if policy == "drop":
        return DroppedSample(index, "overlong", detail)
    if cuts_media():
        detail += "; truncating would cut through media tokens, so the sample is dropped"
        return DroppedSample(index, "overlong", detail)
    return None


def check_empty_labels(
    index: int, detail: str, policy: EmptyLabelsPolicy, report: CollateReport
) -> DroppedSample | None:
    """Apply ``empty_labels`` to a sample that trains no token."""
    if policy == "raise":
        raise EmptyLabelsError(
            detail + " (empty_labels='drop' or 'warn' keeps training going)", sample_index=index
        )
    if policy == "drop":
        return DroppedSample(index, "empty_labels", detail)
    report.warn(SampleWarning(index, "empty_labels", detail), logger)
    return None


def drop_samples(
    rows: Sequence[Row],
    rejected: Mapping[int, DroppedSample],
    report: CollateReport,
    counts: collections.Counter[str],
) -> list[Row]:
    """Record every drop (report, counter, log) and return the rows that stay.

    Raises [`BatchError`][vlm_collate.BatchError] when no row stays.
    """
    for dropped in rejected.values():
        report.dropped.append(dropped)
        with _COUNTS_LOCK:
            counts[dropped.reason] += 1
        logger.warning("dropped sample %d (%s): %s", dropped.index, dropped.reason, dropped.detail)
    report.truncated = [index for index in report.truncated if index not in rejected]
    kept = [row for row in rows if row.index not in rejected]
    if not kept:
        reasons = "; ".join(f"sample {d.index}: {d.detail}" for d in report.dropped)
        msg = f"every sample of the batch was dropped ({reasons})."
        raise BatchError(msg)
    return kept
