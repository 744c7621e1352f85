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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

import attrs
import torch

from .._calls import CallState
from .._checks import (
    EmptyLabelsPolicy,
    OverlongPolicy,
    check_empty_labels,
    check_length,
    drop_samples,
)
from .._options import (
    boolean,
    non_negative_int_or_none,
    one_of,
    optional,
    positive_int_or_none,
    to_pixel_dtype,
    token_count_or_none,
)
from .._padding import (
    Side,
    padded_length,
    padded_side,
    repad,
    shift_for_next_token,
    token_axis_keys,
)
from .._padding_free import check_padding_free, flatten_padded, rope_index_for
from .._report import CollateReport, DroppedSample
from .._samples import require_batch
from ..errors import ConfigurationError
from ..labels import IGNORE_INDEX, tokenizer_of
from ..media import media_token_ids, stack_media
from ._validate import (
    OPTIONAL_TOKEN_KEYS,
    REQUIRED_TOKEN_KEYS,
    WEIGHTS_KEY,
    Row,
    read_row,
)

__all__ = ["PreTokenizedCollator", "pretokenize_sample"]

logger = logging.getLogger("vlm_collate.pretokenized")

# Batch entries a chat collator adds for the whole batch; a sample does not carry them.
_BATCH_ONLY_KEYS = frozenset({"n_images_per_sample", "n_videos_per_sample", "num_patches"})


def vocabulary_size(processor: Any) -> int | None:
    """The number of token ids ``processor``'s tokenizer knows (added tokens included), or None."""
    tokenizer = tokenizer_of(processor) if processor is not None else None
    try:
        size = len(tokenizer) if tokenizer is not None else None
    except TypeError:
        return None
    return size if isinstance(size, int) and size > 0 else None


def trained_weights(tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A row's loss weights: its own, else 1.0 where its labels are trained and 0.0 elsewhere."""
    if WEIGHTS_KEY in tokens:
        return tokens[WEIGHTS_KEY]
    return (tokens["labels"] != IGNORE_INDEX).to(torch.float32)


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
        vocab_size: Token ids must lie in ``[0, vocab_size)``; None takes the
            tokenizer's length (added tokens included), else checks only ``>= 0``.
        shift_labels: True gives pre-shifted labels (``labels[:, t]`` is the
            target of ``input_ids[:, t]``); False keeps them unshifted.
        pixel_dtype: Cast pixel tensors to this dtype; None keeps the samples' dtype.
        empty_labels: Policy for a sample with no trained token.
        overlong: Policy for a sample longer than ``max_length``; ``"truncate"``
            drops (and reports) a sample whose cut would remove media tokens.
        padding_free: One row ``[1, total]`` of the samples end to end, as a
            chat collator's ``padding_free=True`` gives (varlen keyword
            arguments, per-sample positions, no padding).
        rope_index: One sample's ``[3, n]`` mRoPE positions for padding-free
            rows; None derives a [`MRopeIndex`][vlm_collate.MRopeIndex] from a
            Qwen-VL ``processor`` (1-D positions without one).
    """

    processor: Any = None
    max_length: int | None = attrs.field(default=None, validator=token_count_or_none)
    padding: Literal["longest", "max_length"] = attrs.field(
        default="longest", validator=one_of("longest", "max_length")
    )
    pad_to_multiple_of: int | None = attrs.field(default=None, validator=token_count_or_none)
    padding_side: Literal["left", "right"] | None = attrs.field(
        default=None, validator=optional(one_of("left", "right"))
    )
    pad_token_id: int | None = attrs.field(default=None, validator=non_negative_int_or_none)
    vocab_size: int | None = attrs.field(default=None, validator=positive_int_or_none)
    shift_labels: bool = attrs.field(default=True, validator=boolean)
    pixel_dtype: torch.dtype | None = attrs.field(default=None, converter=to_pixel_dtype)
    empty_labels: EmptyLabelsPolicy = attrs.field(
        default="raise", validator=one_of("raise", "warn", "drop")
    )
    overlong: OverlongPolicy = attrs.field(
        default="drop", validator=one_of("drop", "raise", "truncate")
    )
    padding_free: bool = False
    rope_index: Callable[[Mapping[str, Any]], Any] | None = None

    _calls: CallState = attrs.field(init=False, factory=CallState, eq=False, repr=False)
    dropped_counts: collections.Counter[str] = attrs.field(
        init=False, factory=collections.Counter, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        if self.padding == "max_length" and self.max_length is None:
            msg = "'padding' is 'max_length' but 'max_length' is None; give a max_length."
            raise ConfigurationError(msg)
        check_padding_free(self)

    @property
    def last_report(self) -> CollateReport | None:
        """The report of the last call made from the current thread (None before any).

        Each thread sees its own calls' reports, so a collator shared by
        several threads never hands one caller another call's report.
        """
        return cast("CollateReport | None", self._calls.get("report"))

    @last_report.setter
    def last_report(self, report: CollateReport | None) -> None:
        self._calls.set("report", report)

    @property
    def resolved_pad_token_id(self) -> int:
        """The pad id in effect: the option, else the tokenizer's, else 0."""
        if self.pad_token_id is not None:
            return self.pad_token_id
        pad_id = getattr(tokenizer_of(self.processor), "pad_token_id", None)
        return pad_id if isinstance(pad_id, int) else 0

    @property
    def resolved_vocab_size(self) -> int | None:
        """The vocabulary size ids are checked against: the option, else the tokenizer's."""
        return self.vocab_size if self.vocab_size is not None else vocabulary_size(self.processor)

    @property
    def resolved_padding_side(self) -> Side:
        """The padding side in effect: the option, else the tokenizer's, else right."""
        if self.padding_side is not None:
            return self.padding_side
        side = getattr(tokenizer_of(self.processor), "padding_side", None)
        return cast("Side", side) if side in ("left", "right") else "right"

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate pre-tokenized ``examples`` into a batch of tensors."""
        require_batch(examples, "samples")
        report = self.last_report = CollateReport(batch_size=len(examples))
        vocab_size = self.resolved_vocab_size
        rows = [
            read_row(example, position, vocab_size=vocab_size)
            for position, example in enumerate(examples)
        ]
        fitted = [self._fit(row, report) for row in rows]
        rejected = {fit.index: fit for fit in fitted if isinstance(fit, DroppedSample)}
        kept = [fit for fit in fitted if isinstance(fit, Row)]
        rows = drop_samples(kept, rejected, report, self.dropped_counts)
        report.kept = [row.index for row in rows]
        batch = self._pad(rows)
        batch.update(self._media(rows))
        if self.padding_free:
            rope_index = rope_index_for(self.processor, self.rope_index)
            lengths = [row.length for row in rows]
            side, shift = self.resolved_padding_side, self.shift_labels
            return flatten_padded(batch, lengths, side=side, shift=shift, rope_index=rope_index)
        return batch

    # -- steps ---------------------------------------------------------------

    def _fit(self, row: Row, report: CollateReport) -> Row | DroppedSample:
        """Apply the overlong and empty-labels policies to one row; truncate when asked."""
        if self.max_length is not None and row.length > self.max_length:
            dropped = check_length(
                row.index, row.length, self.max_length, self.overlong, lambda: self._cuts_media(row)
            )
            if dropped is not None:
                return dropped
            tokens = {key: value[: self.max_length] for key, value in row.tokens.items()}
            row = Row(row.index, tokens, row.media)
            report.truncated.append(row.index)
        trained = row.tokens["labels"][1:] if self.shift_labels else row.tokens["labels"]
        if bool((trained != IGNORE_INDEX).any()):
            return row
        detail = "no token would be trained: every label is IGNORE_INDEX after the shift"
        return check_empty_labels(row.index, detail, self.empty_labels, report) or row

    def _cuts_media(self, row: Row) -> bool:
        lost_ids = row.tokens["input_ids"][self.max_length :]
        media_ids = torch.tensor(sorted(media_token_ids(self.processor)), dtype=lost_ids.dtype)
        cut = bool(torch.isin(lost_ids, media_ids).any()) if self.processor is not None else False
        token_types = row.tokens.get("mm_token_type_ids")
        if token_types is not None:
            cut = cut or bool((token_types[self.max_length :] != 0).any())
        return cut

    def _pad(self, rows: Sequence[Row]) -> dict[str, Any]:
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

    def _media(self, rows: Sequence[Row]) -> dict[str, Any]:
        return stack_media(
            [row.media for row in rows],
            pixel_dtype=self.pixel_dtype,
            owners=[row.index for row in rows],
        )


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
    options: dict[str, Any] = {"shift_labels": False, "padding": "longest"}
    if getattr(collator, "padding_free", False):  # stored rows keep their attention_mask
        options["padding_free"] = False
    single = attrs.evolve(collator, pad_to_multiple_of=None, **options)
    batch = single([example])
    keys = token_axis_keys(batch, exclude=collator.media_keys)
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
