"""``NeatPackedCollator``: batches of packs, each holding several whole documents.

A pack is one row of several tokenized documents laid end to end. Its
``attention_mask`` is an *indexed* document map: 1 for every token of the first
document, 2 for the second, ..., and 0 for padding. Labels were shifted per
document before packing, so ``labels[t]`` is the target of ``input_ids[t]``
and always comes from ``t``'s own document; this collator never shifts.
Per-token ``loss_weights``, when packs carry them, were shifted the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import torch

from .._options import (
    boolean,
    non_negative_int,
    one_of,
    positive_int_or_none,
    to_pixel_dtype,
    token_count_or_none,
)
from .._padding_free import segment_lengths, varlen_kwargs
from .._samples import require_batch
from ..errors import BatchError, OverlongError, SampleError, SampleTypeError
from ..labels import IGNORE_INDEX
from ..media import CONCATENATED_KEYS, PIXEL_KEYS, stack_media
from ._collator import trained_weights
from ._validate import (
    WEIGHTS_KEY,
    check_documents,
    check_ids,
    check_media_counts,
    check_pack_labels,
    media_count,
    media_value,
    position_ids,
    token_tensors,
)

__all__ = ["NeatPackedCollator", "block_causal_mask"]

AttnImplementation = Literal["flash_attention_2", "sdpa", "eager"]


def block_causal_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """Expand an indexed document map ``[B, S]`` to a boolean mask ``[B, 1, S, S]``.

    ``mask[b, 0, i, j]`` is True (attend) when tokens ``i`` and ``j`` of row
    ``b`` belong to the same document and ``j <= i``. Padding (document 0)
    attends nothing and is attended by nothing.
    """
    length = document_ids.shape[1]
    same_document = document_ids.unsqueeze(2) == document_ids.unsqueeze(1)
    real = document_ids > 0
    causal = torch.ones(length, length, dtype=torch.bool, device=document_ids.device).tril()
    mask = same_document & causal & real.unsqueeze(2) & real.unsqueeze(1)
    return mask.unsqueeze(1)


def _document_positions(document_ids: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... restarting at every document; 0 on padding."""
    positions = torch.zeros_like(document_ids)
    for document in document_ids.unique().tolist():
        if document > 0:
            where = document_ids == document
            positions[where] = torch.arange(int(where.sum()), dtype=document_ids.dtype)
    return positions


def _position_rank(rows: Sequence[Mapping[str, Any]]) -> int:
    """1 for 1-D positions, 2 for mRoPE ``[3, S]``; a batch may not mix them."""
    ranks: set[int] = {row["position_ids"].dim() for row in rows}
    if len(ranks) > 1:
        msg = "'position_ids' mixes 1-D and mRoPE [3, S] packs in one batch"
        raise BatchError(msg)
    return ranks.pop()


@attrs.define(kw_only=True)
class NeatPackedCollator:
    """Pads packs of documents to one length and builds their attention masks.

    NeMo Automodel's ``neat_packed_vlm_collater``. Labels are already shifted by the
    packer; this collator pads them with ``IGNORE_INDEX`` and never shifts.

    Packs may carry 1-D float ``loss_weights`` (finite, >= 0, as
    [`pack`][vlm_collate.pack] makes them). When at least one does, the
    batch gets a float32 ``loss_weights`` shaped like ``labels``: padded with
    0.0, 1.0 on the trained tokens of packs without weights, and 0.0 wherever
    ``labels`` are ``IGNORE_INDEX`` (the pack's own padding included).

    Args:
        padding_idx: Pad id of ``input_ids``.
        max_length: Pad every batch to this length (one shape for
            ``torch.compile``); None pads to the longest pack. A longer pack
            raises [`OverlongError`][vlm_collate.OverlongError].
        attn_implementation: ``"flash_attention_2"`` keeps the indexed ``[B, S]``
            map as ``attention_mask``; ``"sdpa"`` and ``"eager"`` get a boolean
            block-causal ``[B, 1, S, S]`` mask (True = attend).
        materialize_4d_mask: False keeps the compact indexed map for sdpa/eager
            too (the 4-D mask is quadratic in ``S``); it is then also given as
            ``_packed_seq_ids``.
        pixel_dtype: Cast pixel tensors to this dtype; None keeps the packs' dtype.
        vocab_size: Token ids and labels must lie in ``[0, vocab_size)``; None
            checks only that they are >= 0.

    Every pack is validated first: int64 token tensors of one length, an
    indexed ``attention_mask`` whose documents are single runs, labels that are
    ``IGNORE_INDEX`` or a valid token id, integer
    ``position_ids``, finite pixels and grids that agree with ``n_images`` /
    ``n_videos`` (see `vlm_collate.pretokenized`).
        padding_free: Lay every document of every pack end to end in one row
            ``[1, total]`` without padding: ``position_ids`` as the packs give
            them (``[3, 1, total]`` for mRoPE packs), ``cu_seq_lens_q/k`` and
            ``max_length_q/k`` for flash-attention varlen kernels, no
            ``attention_mask``, and ``_packed_seq_ids`` numbering the
            documents 1, 2, ... across the row. ``max_length`` then only
            refuses longer packs.
    """

    padding_idx: int = attrs.field(default=0, validator=non_negative_int)
    max_length: int | None = attrs.field(default=None, validator=token_count_or_none)
    attn_implementation: AttnImplementation = attrs.field(
        default="sdpa", validator=one_of("flash_attention_2", "sdpa", "eager")
    )
    materialize_4d_mask: bool = attrs.field(default=True, validator=boolean)
    pixel_dtype: torch.dtype | None = attrs.field(default=None, converter=to_pixel_dtype)
    vocab_size: int | None = attrs.field(default=None, validator=positive_int_or_none)
    padding_free: bool = attrs.field(default=False, validator=boolean)

    def __call__(self, packs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate ``packs`` into a batch of tensors."""
        require_batch(packs, "packs")
        rows = [self._read(pack, index) for index, pack in enumerate(packs)]
        if self.padding_free:
            return {**self._padding_free(rows), **self._media(packs)}
        longest = max(row["input_ids"].shape[0] for row in rows)
        length = longest if self.max_length is None else self.max_length
        document_ids = self._stack(rows, "attention_mask", length, 0)
        batch: dict[str, Any] = {
            "input_ids": self._stack(rows, "input_ids", length, self.padding_idx),
            "labels": self._stack(rows, "labels", length, IGNORE_INDEX),
            "position_ids": self._stack_positions(rows, length),
            "attention_mask": self._attention_mask(document_ids),
        }
        if any("mm_token_type_ids" in row for row in rows):
            batch["mm_token_type_ids"] = self._stack(rows, "mm_token_type_ids", length, 0)
        if any(WEIGHTS_KEY in row for row in rows):
            weighted = [{WEIGHTS_KEY: trained_weights(row)} for row in rows]
            batch[WEIGHTS_KEY] = self._stack(weighted, WEIGHTS_KEY, length, 0, torch.float32)
        compact_for_sdpa = self.attn_implementation != "flash_attention_2" and not (
            self.materialize_4d_mask
        )
        if bool((document_ids > 1).any()) or compact_for_sdpa:
            batch["_packed_seq_ids"] = document_ids
        batch.update(self._media(packs))
        return batch

    def _read(self, pack: Any, index: int) -> dict[str, Any]:
        if not isinstance(pack, Mapping):
            msg = f"a pack must be a mapping (got {type(pack).__name__})"
            raise SampleTypeError(msg, sample_index=index)
        missing = [
            key for key in ("input_ids", "labels", "attention_mask") if pack.get(key) is None
        ]
        if missing:
            names = ", ".join(repr(key) for key in missing)
            msg = f"missing {names}; a pack needs input_ids, labels and an indexed attention_mask"
            raise SampleError(msg, sample_index=index)
        row = token_tensors(
            pack, ("input_ids", "labels", "attention_mask", "mm_token_type_ids"), index
        )
        length = row["input_ids"].shape[0]
        check_ids(row["input_ids"], index, self.vocab_size)
        check_documents(row["attention_mask"], index)
        check_pack_labels(row, index, self.vocab_size)
        if self.max_length is not None and length > self.max_length:
            msg = f"the pack has {length} tokens > max_length={self.max_length}"
            raise OverlongError(msg, sample_index=index)
        # The pack's own padding is never trained, whatever the packer wrote there.
        row["labels"] = row["labels"].masked_fill(row["attention_mask"] == 0, IGNORE_INDEX)
        if WEIGHTS_KEY in row:
            row[WEIGHTS_KEY] = row[WEIGHTS_KEY].masked_fill(row["labels"] == IGNORE_INDEX, 0.0)
        if pack.get("position_ids") is None:
            row["position_ids"] = _document_positions(row["attention_mask"])
        else:
            row["position_ids"] = position_ids(pack["position_ids"], length, index)
        return row

    def _padding_free(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """One row of every document's real tokens; a pack's own padding is left out."""
        _position_rank(rows)
        reals = [row["attention_mask"] > 0 for row in rows]
        weighted = any(WEIGHTS_KEY in row for row in rows)
        keys = ["input_ids", "labels"]
        if any("mm_token_type_ids" in row for row in rows):
            keys.append("mm_token_type_ids")
        batch: dict[str, Any] = {}
        for key in keys:
            pieces = [
                row.get(key, torch.zeros_like(row["input_ids"]))[real]
                for row, real in zip(rows, reals, strict=True)
            ]
            batch[key] = torch.cat(pieces).unsqueeze(0)
        if weighted:
            pieces = [trained_weights(row)[real] for row, real in zip(rows, reals, strict=True)]
            batch[WEIGHTS_KEY] = torch.cat(pieces).to(torch.float32).unsqueeze(0)
        positions = [row["position_ids"][..., real] for row, real in zip(rows, reals, strict=True)]
        batch["position_ids"] = torch.cat(positions, dim=-1).unsqueeze(-2)
        documents = [row["attention_mask"][real] for row, real in zip(rows, reals, strict=True)]
        lengths = [length for document in documents for length in segment_lengths(document[None])]
        batch.update(varlen_kwargs(lengths))
        numbers = torch.arange(1, len(lengths) + 1).repeat_interleave(torch.tensor(lengths))
        batch["_packed_seq_ids"] = numbers.unsqueeze(0)
        return batch

    @staticmethod
    def _stack(
        rows: Sequence[dict[str, Any]],
        key: str,
        length: int,
        pad: int,
        dtype: torch.dtype = torch.long,
    ) -> torch.Tensor:
        out = torch.full((len(rows), length), pad, dtype=dtype)
        for position, row in enumerate(rows):
            values = row.get(key)
            if values is not None:  # a pack without the key keeps the pad value
                out[position, : values.shape[0]] = values
        return out

    @staticmethod
    def _stack_positions(rows: Sequence[dict[str, Any]], length: int) -> torch.Tensor:
        if _position_rank(rows) == 1:
            return NeatPackedCollator._stack(rows, "position_ids", length, 0)
        out = torch.zeros((3, len(rows), length), dtype=torch.long)
        for position, row in enumerate(rows):
            out[:, position, : row["position_ids"].shape[1]] = row["position_ids"]
        return out

    @staticmethod
    def _read_media(pack: Mapping[str, Any], index: int) -> dict[str, Any]:
        entry = {
            key: media_value(pack[key], key, index)
            for key in (*PIXEL_KEYS, *CONCATENATED_KEYS)
            if pack.get(key) is not None
        }
        counts = {kind: media_count(pack, kind, index) for kind in ("image", "video")}
        check_media_counts(entry, index, {kind: n for kind, n in counts.items() if n is not None})
        return entry

    def _attention_mask(self, document_ids: torch.Tensor) -> torch.Tensor:
        if self.attn_implementation == "flash_attention_2" or not self.materialize_4d_mask:
            return document_ids
        return block_causal_mask(document_ids)

    def _media(self, packs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        found = [self._read_media(pack, index) for index, pack in enumerate(packs)]
        media = stack_media(found, pixel_dtype=self.pixel_dtype, counted_by={})
        for kind in ("image", "video"):
            counts = [
                media_count(pack, kind, index)
                or (entry[f"{kind}_grid_thw"].shape[0] if f"{kind}_grid_thw" in entry else 0)
                for index, (pack, entry) in enumerate(zip(packs, found, strict=True))
            ]
            if any(counts):
                media[f"n_{kind}s_per_sample"] = torch.tensor(counts, dtype=torch.long)
        return media
