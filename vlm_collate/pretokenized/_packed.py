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

from .._pipeline import _one_of, _positive_or_none, _to_dtype
from .._samples import require_batch
from ..errors import BatchError, OverlongError, SampleError, SampleTypeError
from ..labels import IGNORE_INDEX
from ..media import PIXEL_KEYS
from ._collator import (
    CONCATENATED_KEYS,
    WEIGHTS_KEY,
    _media_value,
    merge_media,
    token_tensors,
    trained_weights,
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


def _positions(value: Any, length: int, index: int) -> torch.Tensor:
    positions = torch.as_tensor(value)
    if positions.dim() == 1 or (positions.dim() == 2 and positions.shape[0] == 3):
        if positions.shape[-1] == length:
            return positions.long()
    msg = (
        f"'position_ids' must have shape [{length}] or [3, {length}] (got {tuple(positions.shape)})"
    )
    raise SampleError(msg, sample_index=index)


def _document_positions(document_ids: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... restarting at every document; 0 on padding."""
    positions = torch.zeros_like(document_ids)
    for document in document_ids.unique().tolist():
        if document > 0:
            where = document_ids == document
            positions[where] = torch.arange(int(where.sum()), dtype=document_ids.dtype)
    return positions


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
    """

    padding_idx: int = 0
    max_length: int | None = attrs.field(default=None, validator=_positive_or_none)
    attn_implementation: AttnImplementation = attrs.field(
        default="sdpa", validator=_one_of("flash_attention_2", "sdpa", "eager")
    )
    materialize_4d_mask: bool = True
    pixel_dtype: torch.dtype | None = attrs.field(default=None, converter=_to_dtype)

    def __call__(self, packs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate ``packs`` into a batch of tensors."""
        require_batch(packs, "packs")
        rows = [self._read(pack, index) for index, pack in enumerate(packs)]
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
        if bool((row["attention_mask"] < 0).any()):
            msg = "'attention_mask' must hold document numbers 1, 2, ... and 0 for padding"
            raise SampleError(msg, sample_index=index)
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
            row["position_ids"] = _positions(pack["position_ids"], length, index)
        return row

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
        ranks = {row["position_ids"].dim() for row in rows}
        if len(ranks) > 1:
            msg = "'position_ids' mixes 1-D and mRoPE [3, S] packs in one batch"
            raise BatchError(msg)
        if ranks == {1}:
            return NeatPackedCollator._stack(rows, "position_ids", length, 0)
        out = torch.zeros((3, len(rows), length), dtype=torch.long)
        for position, row in enumerate(rows):
            out[:, position, : row["position_ids"].shape[1]] = row["position_ids"]
        return out

    def _attention_mask(self, document_ids: torch.Tensor) -> torch.Tensor:
        if self.attn_implementation == "flash_attention_2" or not self.materialize_4d_mask:
            return document_ids
        return block_causal_mask(document_ids)

    def _media(self, packs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        media: dict[str, Any] = {}
        found = [
            {
                key: _media_value(pack[key], key, index)
                for key in (*PIXEL_KEYS, *CONCATENATED_KEYS)
                if pack.get(key) is not None
            }
            for index, pack in enumerate(packs)
        ]
        for key in (*PIXEL_KEYS, *CONCATENATED_KEYS):
            values = [entry[key] for entry in found if key in entry]
            if not values:
                continue
            if key in PIXEL_KEYS:
                media[key] = merge_media(values, dtype=self.pixel_dtype)
            elif len({tuple(value.shape[1:]) for value in values}) == 1:
                media[key] = torch.cat(values, dim=0)
            else:
                shapes = ", ".join(str(tuple(value.shape)) for value in values)
                msg = f"'{key}' cannot be concatenated: its trailing shapes differ ({shapes})"
                raise BatchError(msg)
        for kind in ("image", "video"):
            counts = [
                int(pack.get(f"n_{kind}s", 0) or 0)
                or (entry[f"{kind}_grid_thw"].shape[0] if f"{kind}_grid_thw" in entry else 0)
                for pack, entry in zip(packs, found, strict=True)
            ]
            if any(counts):
                media[f"n_{kind}s_per_sample"] = torch.tensor(counts, dtype=torch.long)
        return media
