"""``PreTokenizedCollator``: batches of samples that were tokenized one by one.

A pre-tokenized sample is a mapping of 1-D token tensors (``input_ids``,
``attention_mask``, unshifted ``labels`` and optionally ``mm_token_type_ids``),
optionally 1-D float ``loss_weights`` (as a collator with
``LabelPolicy(loss_weights=True)`` makes them), plus the media tensors its
processor produced (``pixel_values``, ``image_grid_thw``, ...). Tokenizing
samples ahead of time (in dataset workers, or once and cached) leaves the
collator nothing to do but pad, stack, shift and concatenate media.
[`pretokenize_sample`][vlm_collate.pretokenize_sample] makes such a sample with any chat collator.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import torch

from .._padding import padded_length, padded_side, repad, shift_for_next_token, token_axis_keys
from .._pipeline import (
    CollateReport,
    DroppedSample,
    EmptyLabelsPolicy,
    OverlongPolicy,
    SampleWarning,
    _one_of,
    _positive_or_none,
    _to_dtype,
)
from .._samples import require_batch
from ..errors import (
    BatchError,
    ConfigurationError,
    EmptyLabelsError,
    OverlongError,
    SampleError,
    SampleTypeError,
)
from ..labels import IGNORE_INDEX, tokenizer_of
from ..media import MEDIA_KEYS, PIXEL_KEYS, media_token_ids

__all__ = ["PreTokenizedCollator", "merge_media", "pretokenize_sample"]

logger = logging.getLogger("vlm_collate.pretokenized")

REQUIRED_TOKEN_KEYS = ("input_ids", "attention_mask", "labels")
OPTIONAL_TOKEN_KEYS = ("mm_token_type_ids",)
# The one token-axis key that holds floats: per-token loss weights, shifted like labels.
WEIGHTS_KEY = "loss_weights"
# Per-media tensors joined along their first axis.
CONCATENATED_KEYS = ("image_grid_thw", "video_grid_thw", "image_position_ids", "second_per_grid_ts")
# Batch entries a chat collator adds for the whole batch; a sample does not carry them.
_BATCH_ONLY_KEYS = frozenset({"n_images_per_sample", "n_videos_per_sample", "num_patches"})


def merge_media(values: Sequence[Any], *, dtype: torch.dtype | None = None) -> Any:
    """Join the media of several samples into one batch entry.

    Tensors whose trailing shapes agree are concatenated along dim 0.
    Otherwise (variable-resolution media, or a sample that already holds a
    list) the result is a flat list with one tensor per image.

    Args:
        values: Tensors ``[N_i, ...]`` or lists of per-image tensors.
        dtype: Cast floating-point tensors to this dtype; None keeps theirs.
    """
    tensors = all(isinstance(value, torch.Tensor) and value.dim() >= 1 for value in values)
    if tensors and len({tuple(value.shape[1:]) for value in values}) == 1:
        merged = torch.cat(list(values), dim=0)
        return merged.to(dtype) if dtype is not None and merged.is_floating_point() else merged
    flat: list[Any] = []
    for value in values:
        flat.extend(value.unbind(0) if isinstance(value, torch.Tensor) else value)
    if dtype is None:
        return flat
    return [
        item.to(dtype) if isinstance(item, torch.Tensor) and item.is_floating_point() else item
        for item in flat
    ]


@attrs.frozen
class _Row:
    """One validated sample: its 1-D token tensors and its media entries."""

    index: int
    tokens: dict[str, torch.Tensor]
    media: dict[str, Any]

    @property
    def length(self) -> int:
        return self.tokens["input_ids"].shape[0]


def _one_dimensional(value: Any, key: str, index: int, items: str) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        msg = f"'{key}' must be a 1-D tensor or list of {items} (got {type(value).__name__})"
        raise SampleTypeError(msg, sample_index=index) from exc
    if tensor.dim() != 1:
        msg = f"'{key}' must be 1-D (got shape {tuple(tensor.shape)})"
        raise SampleError(msg, sample_index=index)
    return tensor


def _token_tensor(value: Any, key: str, index: int) -> torch.Tensor:
    tensor = _one_dimensional(value, key, index, "ints")
    if tensor.is_floating_point() or tensor.is_complex():
        msg = f"'{key}' must hold integers (got {tensor.dtype})"
        raise SampleTypeError(msg, sample_index=index)
    return tensor.long() if tensor.dtype == torch.bool else tensor


def _weights_tensor(value: Any, index: int) -> torch.Tensor:
    """Per-token loss weights as float32: 1-D, finite and >= 0."""
    tensor = _one_dimensional(value, WEIGHTS_KEY, index, "floats")
    if tensor.is_complex():
        msg = f"'{WEIGHTS_KEY}' must hold real numbers (got {tensor.dtype})"
        raise SampleTypeError(msg, sample_index=index)
    tensor = tensor.to(torch.float32)
    bad = ~torch.isfinite(tensor) | (tensor < 0)
    if bool(bad.any()):
        position = int(bad.nonzero()[0])
        msg = (
            f"'{WEIGHTS_KEY}' must be finite and >= 0 "
            f"(got {tensor[position].item()} at position {position})"
        )
        raise SampleError(msg, sample_index=index)
    return tensor


def trained_weights(tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A row's loss weights: its own, else 1.0 where its labels are trained and 0.0 elsewhere."""
    if WEIGHTS_KEY in tokens:
        return tokens[WEIGHTS_KEY]
    return (tokens["labels"] != IGNORE_INDEX).to(torch.float32)


def token_tensors(
    example: Mapping[str, Any], keys: Sequence[str], index: int
) -> dict[str, torch.Tensor]:
    """The 1-D token tensors of ``keys`` present in ``example``, and its loss weights.

    Every tensor must be as long as ``input_ids``; errors name sample ``index``.
    """
    tensors = {
        key: _token_tensor(example[key], key, index) for key in keys if example.get(key) is not None
    }
    if example.get(WEIGHTS_KEY) is not None:
        tensors[WEIGHTS_KEY] = _weights_tensor(example[WEIGHTS_KEY], index)
    length = tensors["input_ids"].shape[0]
    for key, tensor in tensors.items():
        if tensor.shape[0] != length:
            msg = f"'{key}' has {tensor.shape[0]} tokens but 'input_ids' has {length}"
            raise SampleError(msg, sample_index=index)
    return tensors


def _media_value(value: Any, key: str, index: int) -> Any:
    if key in PIXEL_KEYS:
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(item, torch.Tensor) for item in items):
            msg = f"'{key}' must be a tensor or a list of tensors (got {type(value).__name__})"
            raise SampleTypeError(msg, sample_index=index)
        return list(value) if isinstance(value, (list, tuple)) else value
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        msg = f"'{key}' must be a tensor (got {type(value).__name__})"
        raise SampleTypeError(msg, sample_index=index) from exc
    if tensor.dim() == 0:
        msg = f"'{key}' must have a leading per-media axis (got a scalar)"
        raise SampleError(msg, sample_index=index)
    return tensor


def read_row(example: Any, index: int) -> _Row:
    """Validate one pre-tokenized sample; the caller's tensors are only read.

    Token keys become integer tensors; optional ``loss_weights`` become
    float32 and must be finite and >= 0. Every one has the length of
    ``input_ids``.
    """
    if not isinstance(example, Mapping):
        msg = f"a pre-tokenized sample must be a mapping (got {type(example).__name__})"
        raise SampleTypeError(msg, sample_index=index)
    missing = [key for key in REQUIRED_TOKEN_KEYS if example.get(key) is None]
    if missing:
        names = ", ".join(repr(key) for key in missing)
        msg = f"missing {names}; a pre-tokenized sample needs {', '.join(REQUIRED_TOKEN_KEYS)}"
        raise SampleError(msg, sample_index=index)
    tokens = token_tensors(example, (*REQUIRED_TOKEN_KEYS, *OPTIONAL_TOKEN_KEYS), index)
    length = tokens["input_ids"].shape[0]
    if length == 0:
        msg = "'input_ids' is empty"
        raise SampleError(msg, sample_index=index)
    media = {
        key: _media_value(example[key], key, index)
        for key in (*PIXEL_KEYS, *CONCATENATED_KEYS)
        if example.get(key) is not None
    }
    return _Row(index, tokens, media)


@attrs.define(kw_only=True)
class PreTokenizedCollator:
    """Pads, stacks and shifts pre-tokenized samples; concatenates their media.

    NeMo Automodel's ``pad_collate_fn``. It runs no chat template and no processor,
    so it is not a [`BaseCollator`][vlm_collate.BaseCollator]; the processor, when
    given, only supplies the pad id and the media token ids that truncation
    must not cut.

    Samples may carry 1-D float ``loss_weights`` (finite, >= 0). When at
    least one does, the batch gets a float32 ``loss_weights`` shaped like
    ``labels``: truncated, padded (with 0.0) and shifted exactly like them, 1.0
    on the trained tokens of samples without weights, and 0.0 wherever the
    final labels are ``IGNORE_INDEX``.

    Args:
        processor: Optional processor (or tokenizer) the samples came from.
        max_length: Longest allowed row, in tokens before shifting.
        padding: ``"longest"`` pads to the longest row; ``"max_length"`` to ``max_length``.
        pad_to_multiple_of: Round the final row length up to a multiple of this.
        padding_side: ``"left"`` or ``"right"``; None takes the tokenizer's side, else right.
        pad_token_id: Pad id of ``input_ids``; None takes the tokenizer's, else 0.
        shift_labels: True gives pre-shifted labels (``labels[:, t]`` is the
            target of ``input_ids[:, t]``); False keeps them unshifted.
        pixel_dtype: Cast pixel tensors to this dtype; None keeps the samples' dtype.
        empty_labels: Policy for a sample with no trained token.
        overlong: Policy for a sample longer than ``max_length``; ``"truncate"``
            drops (and reports) a sample whose cut would remove media tokens.
    """

    processor: Any = None
    max_length: int | None = attrs.field(default=None, validator=_positive_or_none)
    padding: Literal["longest", "max_length"] = attrs.field(
        default="longest", validator=_one_of("longest", "max_length")
    )
    pad_to_multiple_of: int | None = attrs.field(default=None, validator=_positive_or_none)
    padding_side: Literal["left", "right"] | None = attrs.field(
        default=None, validator=attrs.validators.optional(_one_of("left", "right"))
    )
    pad_token_id: int | None = None
    shift_labels: bool = True
    pixel_dtype: torch.dtype | None = attrs.field(default=None, converter=_to_dtype)
    empty_labels: EmptyLabelsPolicy = attrs.field(
        default="raise", validator=_one_of("raise", "warn", "drop")
    )
    overlong: OverlongPolicy = attrs.field(
        default="drop", validator=_one_of("drop", "raise", "truncate")
    )

    last_report: CollateReport | None = attrs.field(init=False, default=None, eq=False, repr=False)
    dropped_counts: collections.Counter[str] = attrs.field(
        init=False, factory=collections.Counter, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        if self.padding == "max_length" and self.max_length is None:
            msg = "'padding' is 'max_length' but 'max_length' is None; give a max_length."
            raise ConfigurationError(msg)
        if self.pixel_dtype == "auto":
            msg = "'pixel_dtype' must be a torch dtype, its name or None (got 'auto')."
            raise ConfigurationError(msg)
        if self.pad_token_id is not None and (
            isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int)
        ):
            msg = f"'pad_token_id' must be an int or None (got {self.pad_token_id!r})."
            raise ConfigurationError(msg)

    @property
    def resolved_pad_token_id(self) -> int:
        """The pad id in effect: the option, else the tokenizer's, else 0."""
        if self.pad_token_id is not None:
            return self.pad_token_id
        pad_id = getattr(tokenizer_of(self.processor), "pad_token_id", None)
        return pad_id if isinstance(pad_id, int) else 0

    @property
    def resolved_padding_side(self) -> str:
        """The padding side in effect: the option, else the tokenizer's, else right."""
        if self.padding_side is not None:
            return self.padding_side
        side = getattr(tokenizer_of(self.processor), "padding_side", None)
        return side if side in ("left", "right") else "right"

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate pre-tokenized ``examples`` into a batch of tensors."""
        require_batch(examples, "samples")
        report = self.last_report = CollateReport(batch_size=len(examples))
        rows = [read_row(example, index) for index, example in enumerate(examples)]
        rows = [row for row in (self._fit(row, report) for row in rows) if row is not None]
        if not rows:
            reasons = "; ".join(f"sample {d.index}: {d.detail}" for d in report.dropped)
            msg = f"every sample of the batch was dropped ({reasons})."
            raise BatchError(msg)
        report.kept = [row.index for row in rows]
        batch = self._pad(rows)
        batch.update(self._media(rows))
        return batch

    # -- steps ---------------------------------------------------------------

    def _fit(self, row: _Row, report: CollateReport) -> _Row | None:
        """Apply the overlong and empty-labels policies to one row."""
        if self.max_length is not None and row.length > self.max_length:
            detail = f"{row.length} tokens > max_length={self.max_length}"
            if self.overlong == "raise":
                raise OverlongError(detail, sample_index=row.index)
            if self.overlong == "drop" or self._cuts_media(row):
                if self.overlong == "truncate":
                    detail += "; truncating would cut through media tokens, so it is dropped"
                return self._drop(row, "overlong", detail, report)
            tokens = {key: value[: self.max_length] for key, value in row.tokens.items()}
            row = _Row(row.index, tokens, row.media)
            report.truncated.append(row.index)
        trained = row.tokens["labels"][1:] if self.shift_labels else row.tokens["labels"]
        if bool((trained != IGNORE_INDEX).any()):
            return row
        detail = "no token would be trained: every label is IGNORE_INDEX after the shift"
        if self.empty_labels == "raise":
            raise EmptyLabelsError(
                detail + " (empty_labels='drop' or 'warn' keeps training going)",
                sample_index=row.index,
            )
        if self.empty_labels == "drop":
            return self._drop(row, "empty_labels", detail, report)
        warning = SampleWarning(row.index, "empty_labels", detail)
        report.warnings.append(warning)
        logger.warning("%s", warning)
        return row

    def _cuts_media(self, row: _Row) -> bool:
        lost_ids = row.tokens["input_ids"][self.max_length :]
        media_ids = torch.tensor(sorted(media_token_ids(self.processor)), dtype=lost_ids.dtype)
        cut = bool(torch.isin(lost_ids, media_ids).any()) if self.processor is not None else False
        token_types = row.tokens.get("mm_token_type_ids")
        if token_types is not None:
            cut = cut or bool((token_types[self.max_length :] != 0).any())
        return cut

    def _drop(self, row: _Row, reason: str, detail: str, report: CollateReport) -> None:
        report.dropped.append(DroppedSample(row.index, reason, detail))
        self.dropped_counts[reason] += 1
        logger.warning("dropped sample %d (%s): %s", row.index, reason, detail)
        return None

    def _pad(self, rows: Sequence[_Row]) -> dict[str, Any]:
        lengths = [row.length for row in rows]
        length = padded_length(
            max(lengths),
            max_length=self.max_length,
            pad_to_max_length=self.padding == "max_length",
            pad_to_multiple_of=self.pad_to_multiple_of,
            shift=self.shift_labels,
        )
        pad_values = {"input_ids": self.resolved_pad_token_id, "labels": IGNORE_INDEX}
        optional = [
            key
            for key in (*OPTIONAL_TOKEN_KEYS, WEIGHTS_KEY)
            if any(key in row.tokens for row in rows)
        ]
        keys = [*REQUIRED_TOKEN_KEYS, *optional]
        batch: dict[str, Any] = {}
        for key in keys:
            if key == WEIGHTS_KEY:
                values = [trained_weights(row.tokens) for row in rows]
            else:
                values = [
                    row.tokens.get(key, torch.zeros(row.length, dtype=torch.long)) for row in rows
                ]
            pad_value = pad_values.get(key, 0)
            stacked = torch.nn.utils.rnn.pad_sequence(
                values, batch_first=True, padding_value=pad_value
            )
            batch[key] = repad(
                stacked,
                lengths,
                length,
                side_in="right",
                side_out=self.resolved_padding_side,
                pad_value=pad_value,
            )
        if self.shift_labels:
            shift_for_next_token(batch, keys)
        if WEIGHTS_KEY in batch:
            batch[WEIGHTS_KEY] = batch[WEIGHTS_KEY].masked_fill(
                batch["labels"] == IGNORE_INDEX, 0.0
            )
        return batch

    def _media(self, rows: Sequence[_Row]) -> dict[str, Any]:
        media: dict[str, Any] = {}
        for key in PIXEL_KEYS:
            values = [row.media[key] for row in rows if key in row.media]
            if values:
                media[key] = merge_media(values, dtype=self.pixel_dtype)
        for key in CONCATENATED_KEYS:
            values = [row.media[key] for row in rows if key in row.media]
            if values:
                media[key] = self._concatenate(key, values, rows)
        for kind in ("image", "video"):
            grid = f"{kind}_grid_thw"
            if grid in media:
                counts = [row.media[grid].shape[0] if grid in row.media else 0 for row in rows]
                media[f"n_{kind}s_per_sample"] = torch.tensor(counts, dtype=torch.long)
        return media

    @staticmethod
    def _concatenate(
        key: str, values: Sequence[torch.Tensor], rows: Sequence[_Row]
    ) -> torch.Tensor:
        trailing = {tuple(value.shape[1:]) for value in values}
        if len(trailing) > 1:
            holders = [row.index for row in rows if key in row.media]
            shapes = ", ".join(
                f"sample {index}: {tuple(value.shape)}"
                for index, value in zip(holders, values, strict=True)
            )
            msg = f"'{key}' cannot be concatenated: its trailing shapes differ ({shapes})"
            raise BatchError(msg)
        return torch.cat(list(values), dim=0)


def pretokenize_sample(collator: Any, example: Mapping[str, Any]) -> dict[str, Any]:
    """Tokenize one chat sample ahead of time with ``collator``, for
    [`PreTokenizedCollator`][vlm_collate.PreTokenizedCollator].

    The collator runs on ``[example]`` alone with unshifted labels and no
    padding; the result holds 1-D token tensors (``input_ids``,
    ``attention_mask``, ``labels``, ...) and the sample's media entries. A
    collator whose label policy asks for loss weights adds 1-D float32
    ``loss_weights``, unshifted like ``labels``.

    Args:
        collator: A chat collator (any [`BaseCollator`][vlm_collate.BaseCollator]).
        example: One ``{"conversation": [...]}`` sample.
    """
    single = attrs.evolve(collator, shift_labels=False, padding="longest", pad_to_multiple_of=None)
    batch = single([example])
    keys = token_axis_keys(batch, exclude=MEDIA_KEYS)
    mask = batch["attention_mask"][0] if "attention_mask" in batch else None
    first, last = 0, batch["input_ids"].shape[1]
    if mask is not None:  # a lone row is unpadded, unless the processor was asked to pad
        pad_id = getattr(tokenizer_of(collator.processor), "pad_token_id", None)
        padding = (mask == 0) & (batch["input_ids"][0] == pad_id)
        if padded_side(batch["attention_mask"]) == "left":
            while first < last and padding[first]:
                first += 1
        else:
            while last > first and padding[last - 1]:
                last -= 1
    sample = {key: batch[key][0, first:last] for key in keys}
    for key, value in batch.items():
        if key not in sample and key not in _BATCH_ONLY_KEYS:
            sample[key] = value
    return sample
