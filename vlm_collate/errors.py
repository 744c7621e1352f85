"""Errors raised by vlm_collate.

Every error derives from [`VLMCollateError`][vlm_collate.VLMCollateError] and from the built-in that
fits it, so ``except ValueError`` keeps working in code that predates us:

    VLMCollateError (Exception)
    ├── SampleError (ValueError)          a sample is malformed; names sample and message
    │   ├── SampleTypeError (TypeError)   a field has the wrong type
    │   ├── MediaError                    an image/video/audio cannot be used
    │   ├── SpecialTokenError             message text holds a control-token string
    │   ├── EmptyLabelsError              no token of the sample would be trained
    │   ├── OverlongError                 the sample is longer than max_length
    │   ├── TemplateError                 the chat template refused the sample
    │   └── ProcessorError                the processor call failed on the batch
    ├── BatchError (ValueError)           the batch is empty, or every sample was dropped
    │   └── RetriesExhaustedError         every attempt of a RobustCollator failed
    ├── LabelStrategyError (ValueError)   a label strategy does not apply to this tokenizer
    ├── ConfigurationError (ValueError)   an option has an invalid value
    └── MissingDependencyError (ImportError)  an optional package is not installed

Every error pickles with its fields, so one raised in a ``DataLoader`` worker
keeps its ``sample_index``, ``message_index`` and ``item_index`` in the main
process. (PyTorch re-creates a worker's exception from its type and the
formatted traceback; a [`SampleError`][vlm_collate.SampleError] built that way reads its
location back from the traceback's last line.)
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

__all__ = [
    "BatchError",
    "ConfigurationError",
    "EmptyLabelsError",
    "LabelStrategyError",
    "MediaError",
    "MissingDependencyError",
    "OverlongError",
    "ProcessorError",
    "RetriesExhaustedError",
    "SampleError",
    "SampleTypeError",
    "SpecialTokenError",
    "TemplateError",
    "VLMCollateError",
    "relocated",
    "where",
]

# The last line of a formatted traceback whose exception is a SampleError: "sample 3, message 2: ".
_LOCATION = re.compile(r"(?:sample (\d+))?(?:(?:, )?message (\d+))?(?:(?:, )?item (\d+))?: ")


class VLMCollateError(Exception):
    """Base class of every error this package raises."""


def where(
    sample_index: int | None, message_index: int | None = None, item_index: int | None = None
) -> str:
    """Format a location prefix such as ``"sample 3, message 2, item 0"``."""
    parts = []
    if sample_index is not None:
        parts.append(f"sample {sample_index}")
    if message_index is not None:
        parts.append(f"message {message_index}")
    if item_index is not None:
        parts.append(f"item {item_index}")
    return ", ".join(parts)


class SampleError(VLMCollateError, ValueError):
    """A sample is malformed or unusable.

    The message starts with its location (``"sample 3, message 2: ..."``); the
    indices are also kept as attributes for programs that handle the error.
    """

    def __init__(
        self,
        detail: str,
        *,
        sample_index: int | None = None,
        message_index: int | None = None,
        item_index: int | None = None,
    ) -> None:
        text = detail
        if sample_index is None and message_index is None and item_index is None:
            found = _worker_location(type(self), detail)
            if found is not None:
                (sample_index, message_index, item_index), detail = found
        else:
            prefix = where(sample_index, message_index, item_index)
            text = f"{prefix}: {detail}" if prefix else detail
        self.sample_index = sample_index
        self.message_index = message_index
        self.item_index = item_index
        self.detail = detail
        super().__init__(text)

    def __reduce__(
        self,
    ) -> tuple[Any, tuple[Any, ...]]:  # keep the indices across pickling (DataLoader workers)
        return (
            _rebuild_sample_error,
            (type(self), self.detail, self.sample_index, self.message_index, self.item_index),
        )


def _rebuild_sample_error(
    cls: type[SampleError],
    detail: str,
    sample_index: int | None,
    message_index: int | None,
    item_index: int | None,
) -> SampleError:
    return cls(
        detail, sample_index=sample_index, message_index=message_index, item_index=item_index
    )


def _worker_location(
    cls: type, text: str
) -> tuple[tuple[int | None, int | None, int | None], str] | None:
    """``((sample, message, item), detail)`` read from a re-raised worker traceback's last line."""
    if not text.startswith("Caught ") or "Traceback" not in text:
        return None
    marker = f"\n{cls.__module__}.{cls.__qualname__}: "
    start = text.rfind(marker)
    if start < 0:
        return None
    last = text[start + len(marker) :]
    found = _LOCATION.match(last)
    if found is None or not any(found.groups()):
        return None
    indices = tuple(None if value is None else int(value) for value in found.groups())
    return indices, last[found.end() :].rstrip("\n")  # type: ignore[return-value]


_SampleErrorT = TypeVar("_SampleErrorT", bound="SampleError")


def relocated(
    error: _SampleErrorT, sample_index: int | None, detail: str | None = None
) -> _SampleErrorT:
    """The same error (class, message and item index) placed on the caller's ``sample_index``.

    A collator or helper that ran a sub-batch (one sample, a chunk of a file)
    uses this to name the sample as its caller counts it; raise the result
    ``from error`` to keep the original.

    Args:
        error: The error raised for the sub-batch.
        sample_index: The sample's index as the caller counts it.
        detail: A replacement for the error's detail (by default its own).
    """
    return type(error)(
        error.detail if detail is None else detail,
        sample_index=sample_index,
        message_index=error.message_index,
        item_index=error.item_index,
    )


class SampleTypeError(SampleError, TypeError):
    """A field of a sample has the wrong type."""


class MediaError(SampleError):
    """An image, video or audio item is missing, unreadable or too large."""


class SpecialTokenError(SampleError):
    """Message text contains a control-token string such as ``<|im_end|>``."""


class EmptyLabelsError(SampleError):
    """No token of the sample would be trained (the loss would be nan)."""


class OverlongError(SampleError):
    """The sample does not fit in ``max_length``."""


class TemplateError(SampleError):
    """The chat template could not render the sample."""


class ProcessorError(SampleError):
    """The processor failed on the batch (for example an image-token mismatch)."""


class BatchError(VLMCollateError, ValueError):
    """The batch is empty, or every one of its samples was dropped."""


class RetriesExhaustedError(BatchError):
    """Every attempt of a ``RobustCollator`` failed; the cause is the last error."""


class LabelStrategyError(VLMCollateError, ValueError):
    """A label strategy cannot be used with this processor's tokenizer."""


class ConfigurationError(VLMCollateError, ValueError):
    """A collator or strategy option has an invalid value."""


class MissingDependencyError(VLMCollateError, ImportError):
    """An optional package is needed; the message names the extra to install."""
