"""Greedy first-fit packing of pre-tokenized samples for
[`NeatPackedCollator`][vlm_collate.NeatPackedCollator].

Each sample (a document) is shifted on its own before it joins a pack: a
document of ``n`` tokens gives ``n - 1`` positions, ``input_ids[:-1]`` paired
with ``labels[1:]``, so no label ever comes from the next document. A pack
holds whole documents only; its ``attention_mask`` numbers them 1, 2, 3, ...,
``position_ids`` restart at 0 in each, and its media are the documents' media
concatenated in order, with ``n_images`` / ``n_videos`` counting them.

Per-token ``loss_weights`` are shifted like labels (``loss_weights[1:]``) and
concatenated in the same order; when any sample has them every pack gets
them (a document without them weighs 1.0 on its trained tokens).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs
import torch

from .._options import MAX_TOKENS
from .._report import DroppedSample
from ..errors import ConfigurationError, OverlongError
from ..labels import IGNORE_INDEX
from ..media import PIXEL_KEYS, media_token_ids, stack_media
from ._collator import trained_weights, vocabulary_size
from ._validate import WEIGHTS_KEY, Row, read_row

__all__ = ["PackResult", "pack"]

logger = logging.getLogger("vlm_collate.pretokenized")

OverlongPackPolicy = Literal["raise", "drop", "truncate"]


@attrs.frozen
class PackResult:
    """Packs, and what happened to the samples that did not go in whole.

    Args:
        packs: Mappings for [`NeatPackedCollator`][vlm_collate.NeatPackedCollator].
        documents: For each pack, the indices of the samples it holds, in order.
        dropped: Samples left out, with the reason.
        truncated: Indices of samples cut to fit.
    """

    packs: list[dict[str, Any]]
    documents: list[list[int]]
    dropped: list[DroppedSample] = attrs.Factory(list)
    truncated: list[int] = attrs.Factory(list)


def _shifted_length(row: Row) -> int:
    return row.length - 1


def _cuts_media(row: Row, keep: int, media_ids: torch.Tensor | None) -> bool | None:
    """Whether keeping ``keep`` tokens cuts media tokens; None when it cannot be told."""
    has_media = any(key in row.media for key in PIXEL_KEYS)
    token_types = row.tokens.get("mm_token_type_ids")
    if token_types is not None:
        return bool((token_types[keep:] != 0).any())
    if media_ids is not None:
        return bool(torch.isin(row.tokens["input_ids"][keep:], media_ids).any())
    return None if has_media else False


def _fit(
    row: Row, pack_size: int, overlong: str, media_ids: torch.Tensor | None, result: PackResult
) -> Row | None:
    """Apply the overlong policy to a row whose shifted length exceeds ``pack_size``."""
    detail = f"{_shifted_length(row)} shifted tokens > pack_size={pack_size}"
    if overlong == "raise":
        raise OverlongError(detail, sample_index=row.index)
    if overlong == "truncate":
        cut = _cuts_media(row, pack_size + 1, media_ids)
        if cut is False:
            tokens = {key: value[: pack_size + 1] for key, value in row.tokens.items()}
            result.truncated.append(row.index)
            return Row(row.index, tokens, row.media)
        detail += (
            "; truncating would cut through media tokens, so it is dropped"
            if cut
            else "; it holds media but no processor or mm_token_type_ids locates its tokens,"
            " so it is dropped"
        )
    result.dropped.append(DroppedSample(row.index, "overlong", detail))
    logger.warning("dropped sample %d (overlong): %s", row.index, detail)
    return None


RopeIndex = Callable[[Mapping[str, Any]], torch.Tensor]


def _read(sample: Any, index: int, vocab_size: int | None) -> Row:
    """Validate a sample; one without an attention mask is all real tokens."""
    if isinstance(sample, Mapping) and sample.get("attention_mask") is None:
        ids = sample.get("input_ids")
        length = len(ids) if isinstance(ids, (Sequence, torch.Tensor)) else 0
        sample = {**sample, "attention_mask": torch.ones(length, dtype=torch.long)}
    return read_row(sample, index, vocab_size=vocab_size)


def _real_tokens(row: Row) -> Row:
    """The row without its padding: pad tokens are never document text."""
    real = row.tokens["attention_mask"] == 1
    if bool(real.all()):
        return row
    return Row(row.index, {key: value[real] for key, value in row.tokens.items()}, row.media)


def _report_empty(row: Row, result: PackResult) -> None:
    detail = "no token would be trained: every label is IGNORE_INDEX after the shift"
    result.dropped.append(DroppedSample(row.index, "empty_labels", detail))
    logger.warning("dropped sample %d (empty_labels): %s", row.index, detail)


def _document(row: Row, number: int, rope_index: RopeIndex | None) -> dict[str, torch.Tensor]:
    length = _shifted_length(row)
    if rope_index is None:
        positions = torch.arange(length, dtype=torch.long)
    else:  # the whole sample's positions, as the model computes them for it alone
        positions = torch.as_tensor(rope_index({**row.tokens, **row.media})).long()[:, :-1]
    document = {
        "input_ids": row.tokens["input_ids"][:-1],
        "labels": row.tokens["labels"][1:],
        "attention_mask": torch.full((length,), number, dtype=torch.long),
        "position_ids": positions,
    }
    if "mm_token_type_ids" in row.tokens:
        document["mm_token_type_ids"] = row.tokens["mm_token_type_ids"][:-1]
    if WEIGHTS_KEY in row.tokens:
        document[WEIGHTS_KEY] = row.tokens[WEIGHTS_KEY][1:]
    return document


def _assemble(
    rows: Sequence[Row], *, weighted: bool, rope_index: RopeIndex | None
) -> dict[str, Any]:
    documents = [_document(row, number, rope_index) for number, row in enumerate(rows, start=1)]
    packed: dict[str, Any] = {
        key: torch.cat([document[key] for document in documents], dim=-1)
        for key in ("input_ids", "labels", "attention_mask", "position_ids")
    }
    if any("mm_token_type_ids" in document for document in documents):
        packed["mm_token_type_ids"] = torch.cat(
            [
                document.get("mm_token_type_ids", torch.zeros_like(document["input_ids"]))
                for document in documents
            ]
        )
    if weighted:
        weights = torch.cat([trained_weights(document) for document in documents])
        packed[WEIGHTS_KEY] = weights.masked_fill(packed["labels"] == IGNORE_INDEX, 0.0)
    packed.update(stack_media([row.media for row in rows], counted_by={}))
    for kind in ("image", "video"):
        grid = f"{kind}_grid_thw"
        if grid in packed:
            packed[f"n_{kind}s"] = int(packed[grid].shape[0])
    return packed


def _check_options(pack_size: Any, overlong: Any) -> None:
    is_int = isinstance(pack_size, int) and not isinstance(pack_size, bool)
    if not is_int or not 0 < pack_size <= MAX_TOKENS:
        msg = f"'pack_size' must be a positive int of at most {MAX_TOKENS} (got {pack_size!r})."
        raise ConfigurationError(msg)
    if not isinstance(overlong, str) or overlong not in ("raise", "drop", "truncate"):
        msg = f"'overlong' must be one of 'raise', 'drop', 'truncate' (got {overlong!r})."
        raise ConfigurationError(msg)


def _place(row: Row, bins: list[list[Row]], room: list[int], pack_size: int) -> None:
    """First fit: the first pack with room for the row, else a new pack."""
    size = _shifted_length(row)
    target = next((position for position, free in enumerate(room) if free >= size), None)
    if target is None:
        bins.append([])
        room.append(pack_size)
        target = len(bins) - 1
    bins[target].append(row)
    room[target] -= size


def pack(
    samples: Sequence[Mapping[str, Any]],
    pack_size: int,
    *,
    overlong: OverlongPackPolicy = "raise",
    processor: Any = None,
    rope_index: RopeIndex | None = None,
) -> PackResult:
    """Pack pre-tokenized samples, greedy first-fit, into rows of at most ``pack_size`` positions.

    Samples are taken in order; each goes into the first pack with room for
    it, else opens a new pack. A sample is never split. A sample longer than
    ``pack_size`` (after its shift) follows ``overlong``: ``"raise"`` an
    [`OverlongError`][vlm_collate.OverlongError] naming it, ``"drop"`` it and report it,
    or ``"truncate"`` it, unless the cut would remove media tokens, in which
    case it is dropped and reported.

    Every sample is validated first (see `vlm_collate.pretokenized`;
    with ``processor``, ids are checked against its vocabulary). Positions
    whose ``attention_mask`` is 0 are padding and are left out of the
    documents. A sample that would train nothing once shifted (every
    ``labels[1:]`` is ``IGNORE_INDEX``) is not packed: it is reported in
    ``dropped`` with reason ``"empty_labels"`` and logged.

    Args:
        samples: Mappings with 1-D ``input_ids``, unshifted ``labels``,
            optionally ``mm_token_type_ids``, float ``loss_weights`` (finite,
            >= 0) and media (as from
            [`pretokenize_sample`][vlm_collate.pretokenize_sample]). When any
            sample has ``loss_weights``, every pack gets float32
            ``loss_weights``: each document's ``loss_weights[1:]``, or 1.0 on
            its trained tokens when it has none, and 0.0 wherever the
            pack's labels are ``IGNORE_INDEX``.
        pack_size: Most positions in one pack.
        overlong: Policy for a sample that cannot fit in any pack.
        processor: Locates media tokens for ``"truncate"`` when samples have
            no ``mm_token_type_ids``.
        rope_index: For mRoPE models (Qwen2/2.5/3-VL): a callable giving one
            sample's ``[3, n]`` positions, such as
            ``MRopeIndex.from_processor(processor)``; each document then gets
            the 3-D positions the model computes for it alone, and packs get
            ``position_ids`` ``[3, S]``. None gives 1-D positions.
    """
    _check_options(pack_size, overlong)
    media_ids = None
    if processor is not None:
        media_ids = torch.tensor(sorted(media_token_ids(processor)), dtype=torch.long)
    result = PackResult(packs=[], documents=[])
    bins: list[list[Row]] = []
    room: list[int] = []
    vocab_size = vocabulary_size(processor)
    for index, sample in enumerate(samples):
        real = _real_tokens(_read(sample, index, vocab_size))
        if not bool((real.tokens["labels"][1:] != IGNORE_INDEX).any()):
            _report_empty(real, result)
            continue
        row: Row | None = real
        if _shifted_length(real) > pack_size:
            row = _fit(real, pack_size, overlong, media_ids, result)
        if row is not None:
            _place(row, bins, room, pack_size)
    weighted = any(WEIGHTS_KEY in row.tokens for rows in bins for row in rows)
    result.packs.extend(_assemble(rows, weighted=weighted, rope_index=rope_index) for rows in bins)
    result.documents.extend([row.index for row in rows] for rows in bins)
    return result
