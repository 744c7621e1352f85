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
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import torch

from .._pipeline import DroppedSample
from ..errors import ConfigurationError, OverlongError
from ..labels import IGNORE_INDEX
from ..media import PIXEL_KEYS, media_token_ids
from ._collator import (
    CONCATENATED_KEYS,
    WEIGHTS_KEY,
    _Row,
    merge_media,
    read_row,
    trained_weights,
)

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


def _shifted_length(row: _Row) -> int:
    return row.length - 1


def _cuts_media(row: _Row, keep: int, media_ids: torch.Tensor | None) -> bool | None:
    """Whether keeping ``keep`` tokens cuts media tokens; None when it cannot be told."""
    has_media = any(key in row.media for key in PIXEL_KEYS)
    token_types = row.tokens.get("mm_token_type_ids")
    if token_types is not None:
        return bool((token_types[keep:] != 0).any())
    if media_ids is not None:
        return bool(torch.isin(row.tokens["input_ids"][keep:], media_ids).any())
    return None if has_media else False


def _fit(
    row: _Row, pack_size: int, overlong: str, media_ids: torch.Tensor | None, result: PackResult
) -> _Row | None:
    """Apply the overlong policy to a row whose shifted length exceeds ``pack_size``."""
    detail = f"{_shifted_length(row)} shifted tokens > pack_size={pack_size}"
    if overlong == "raise":
        raise OverlongError(detail, sample_index=row.index)
    if overlong == "truncate":
        cut = _cuts_media(row, pack_size + 1, media_ids)
        if cut is False:
            tokens = {key: value[: pack_size + 1] for key, value in row.tokens.items()}
            result.truncated.append(row.index)
            return _Row(row.index, tokens, row.media)
        detail += (
            "; truncating would cut through media tokens, so it is dropped"
            if cut
            else "; it holds media but no processor or mm_token_type_ids locates its tokens,"
            " so it is dropped"
        )
    result.dropped.append(DroppedSample(row.index, "overlong", detail))
    logger.warning("dropped sample %d (overlong): %s", row.index, detail)
    return None


def _document(row: _Row, number: int) -> dict[str, torch.Tensor]:
    length = _shifted_length(row)
    document = {
        "input_ids": row.tokens["input_ids"][:-1],
        "labels": row.tokens["labels"][1:],
        "attention_mask": torch.full((length,), number, dtype=torch.long),
        "position_ids": torch.arange(length, dtype=torch.long),
    }
    if "mm_token_type_ids" in row.tokens:
        document["mm_token_type_ids"] = row.tokens["mm_token_type_ids"][:-1]
    if WEIGHTS_KEY in row.tokens:
        document[WEIGHTS_KEY] = row.tokens[WEIGHTS_KEY][1:]
    return document


def _assemble(rows: Sequence[_Row], *, weighted: bool) -> dict[str, Any]:
    documents = [_document(row, number) for number, row in enumerate(rows, start=1)]
    packed: dict[str, Any] = {
        key: torch.cat([document[key] for document in documents])
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
    for key in (*PIXEL_KEYS, *CONCATENATED_KEYS):
        values = [row.media[key] for row in rows if key in row.media]
        if values:
            packed[key] = merge_media(values) if key in PIXEL_KEYS else torch.cat(values)
    for kind in ("image", "video"):
        grid = f"{kind}_grid_thw"
        if grid in packed:
            packed[f"n_{kind}s"] = int(packed[grid].shape[0])
    return packed


def pack(
    samples: Sequence[Mapping[str, Any]],
    pack_size: int,
    *,
    overlong: OverlongPackPolicy = "raise",
    processor: Any = None,
) -> PackResult:
    """Pack pre-tokenized samples, greedy first-fit, into rows of at most ``pack_size`` positions.

    Samples are taken in order; each goes into the first pack with room for
    it, else opens a new pack. A sample is never split. A sample longer than
    ``pack_size`` (after its shift) follows ``overlong``: ``"raise"`` an
    [`OverlongError`][vlm_collate.OverlongError] naming it, ``"drop"`` it and report it,
    or ``"truncate"`` it, unless the cut would remove media tokens, in which
    case it is dropped and reported.

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
    """
    if isinstance(pack_size, bool) or not isinstance(pack_size, int) or pack_size < 1:
        msg = f"'pack_size' must be a positive int (got {pack_size!r})."
        raise ConfigurationError(msg)
    if overlong not in ("raise", "drop", "truncate"):
        msg = f"'overlong' must be one of 'raise', 'drop', 'truncate' (got {overlong!r})."
        raise ConfigurationError(msg)
    media_ids = None
    if processor is not None:
        media_ids = torch.tensor(sorted(media_token_ids(processor)), dtype=torch.long)
    result = PackResult(packs=[], documents=[])
    bins: list[list[_Row]] = []
    room: list[int] = []
    for index, sample in enumerate(samples):
        row = read_row({"attention_mask": sample.get("input_ids"), **sample}, index)
        if _shifted_length(row) > pack_size:
            row = _fit(row, pack_size, overlong, media_ids, result)
            if row is None:
                continue
        size = _shifted_length(row)
        target = next((position for position, free in enumerate(room) if free >= size), None)
        if target is None:
            bins.append([])
            room.append(pack_size)
            target = len(bins) - 1
        bins[target].append(row)
        room[target] -= size
    weighted = any(WEIGHTS_KEY in row.tokens for rows in bins for row in rows)
    result.packs.extend(_assemble(rows, weighted=weighted) for rows in bins)
    result.documents.extend([row.index for row in rows] for rows in bins)
    return result
