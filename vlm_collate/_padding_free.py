"""Padding-free batches: every sample of a batch laid end to end in one row.

A padding-free batch is one row ``[1, total]`` holding the samples' real
tokens only. Attention kernels keep samples apart by their boundaries,
given as ``transformers``' flash-attention keyword arguments
(``cu_seq_lens_q`` / ``cu_seq_lens_k``: int32 cumulative lengths starting at
0; ``max_length_q`` / ``max_length_k``: the longest sample, an int).
``position_ids`` restart at 0 in every sample; for mRoPE models they are
``[3, 1, total]``, each sample's positions computed alone by
[`MRopeIndex`][vlm_collate.MRopeIndex].

Labels never cross a boundary: pre-shifted labels were shifted within each
sample, and unshifted labels get ``IGNORE_INDEX`` on every sample's first
token, so a model that shifts internally never learns to predict one
sample's first token from the previous sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ._cache import ObjectCache
from ._mrope import _AUDIO_MROPE_PROCESSORS, MROPE_PROCESSORS, MRopeIndex
from ._padding import token_axis_keys
from .errors import BatchError, ConfigurationError
from .labels import IGNORE_INDEX
from .media import MEDIA_KEYS

__all__ = [
    "check_padding_free",
    "cu_seq_lens",
    "flatten_padded",
    "padding_free_batch",
    "rope_index_for",
    "sample_positions",
    "segment_lengths",
    "varlen_kwargs",
]

RopeIndex = Callable[[Mapping[str, Any]], torch.Tensor]

_IMAGE_KEYS = ("image_grid_thw",)
_VIDEO_KEYS = ("video_grid_thw", "second_per_grid_ts")

_DERIVED = ObjectCache()


def cu_seq_lens(lengths: Sequence[int]) -> torch.Tensor:
    """Cumulative lengths ``[0, l0, l0 + l1, ...]`` as int32, as flash-attention varlen expects."""
    return torch.cumsum(torch.tensor([0, *lengths], dtype=torch.int32), dim=0, dtype=torch.int32)


def varlen_kwargs(lengths: Sequence[int]) -> dict[str, Any]:
    """``cu_seq_lens_q/k`` and ``max_length_q/k`` for segments of these lengths."""
    cumulative = cu_seq_lens(lengths)
    longest = max(lengths, default=0)
    return {
        "cu_seq_lens_q": cumulative,
        "cu_seq_lens_k": cumulative,
        "max_length_q": int(longest),
        "max_length_k": int(longest),
    }


def segment_lengths(document_ids: torch.Tensor) -> list[int]:
    """Lengths of the runs of equal values in each row of ``[B, S]``, rows end to end.

    A run never continues into the next row, so a document filling one row
    stays apart from the first document of the next once rows are flattened.
    """
    lengths: list[int] = []
    for row in document_ids:
        if row.numel():
            _, counts = torch.unique_consecutive(row, return_counts=True)
            lengths.extend(counts.tolist())
    return lengths


def check_padding_free(collator: Any) -> None:
    """Refuse options that ask for padding in a padding-free collator."""
    if not getattr(collator, "padding_free", False):
        return
    if collator.padding == "max_length" or collator.pad_to_multiple_of is not None:
        msg = (
            "'padding_free' is True, so rows are never padded: leave 'padding' at 'longest' and "
            f"'pad_to_multiple_of' at None (got padding={collator.padding!r}, "
            f"pad_to_multiple_of={collator.pad_to_multiple_of!r})."
        )
        raise ConfigurationError(msg)


def rope_index_for(processor: Any, given: RopeIndex | None = None) -> RopeIndex | None:
    """The mRoPE positions callable for ``processor``: ``given``, derived, or None (1-D RoPE)."""
    if given is not None:
        return given
    name = type(processor).__name__
    if name not in MROPE_PROCESSORS and name not in _AUDIO_MROPE_PROCESSORS:
        return None
    return _DERIVED.get_or_compute(
        processor, "rope index", lambda: MRopeIndex.from_processor(processor)
    )


def sample_positions(
    samples: Sequence[Mapping[str, Any]], rope_index: RopeIndex | None
) -> torch.Tensor:
    """``position_ids`` of samples end to end: ``[1, total]``, or ``[3, 1, total]`` for mRoPE."""
    if rope_index is None:
        pieces = [torch.arange(len(sample["input_ids"]), dtype=torch.long) for sample in samples]
        return torch.cat(pieces).unsqueeze(0)
    pieces = [torch.as_tensor(rope_index(sample)).long() for sample in samples]
    return torch.cat(pieces, dim=1).unsqueeze(1)


def _media_slices(batch: Mapping[str, Any], rows: int) -> list[dict[str, torch.Tensor]]:
    """Each row's image and video grids (and video timings), split by the per-sample counts."""
    slices: list[dict[str, torch.Tensor]] = [{} for _ in range(rows)]
    for kind, keys in (("image", _IMAGE_KEYS), ("video", _VIDEO_KEYS)):
        if batch.get(keys[0]) is None:
            continue
        counts = batch.get(f"n_{kind}s_per_sample")
        if counts is None and rows > 1:
            msg = f"'{keys[0]}' has no 'n_{kind}s_per_sample' to split it by sample"
            raise BatchError(msg)
        counts = [len(batch[keys[0]])] if counts is None else counts.tolist()
        for key in keys:
            if batch.get(key) is not None:
                for row, piece in enumerate(torch.as_tensor(batch[key]).split(counts)):
                    if len(piece):
                        slices[row][key] = piece
    return slices


def padding_free_batch(
    collator: Any, batch: dict[str, Any], samples: Sequence[Any], lengths: Sequence[int]
) -> dict[str, Any]:
    """Turn a chat collator's padded batch ``[B, L]`` into one padding-free row ``[1, total]``.

    ``lengths`` are the rows' real lengths before padding and shifting.
    """
    fake = [sample.index for sample in samples if sample.example.get("_injected_fake")]
    if fake:
        msg = (
            f"samples {fake} carry an injected fake image, which a padding-free batch cannot hide "
            "from attention (it has no attention_mask); use padded batches with fake images."
        )
        raise BatchError(msg)
    side = collator.padding_side or getattr(collator.tokenizer, "padding_side", "right")
    rope_index = rope_index_for(collator.processor, getattr(collator, "rope_index", None))
    return flatten_padded(
        batch, lengths, side=side, shift=collator.shift_labels, rope_index=rope_index
    )


def flatten_padded(
    batch: dict[str, Any],
    lengths: Sequence[int],
    *,
    side: str,
    shift: bool,
    rope_index: RopeIndex | None,
) -> dict[str, Any]:
    """Lay the real tokens of a padded (and maybe shifted) batch end to end in one row.

    Row ``i`` held ``lengths[i]`` real tokens before padding and shifting,
    on the side opposite ``side``; a shifted row keeps one token fewer, as it
    would alone.
    """
    batch.pop("attention_mask", None)
    keys = token_axis_keys(batch, exclude=MEDIA_KEYS)
    rows = _real_tokens(batch, keys, lengths, side=side, shift=shift)
    for row, media in zip(rows, _media_slices(batch, len(rows)), strict=True):
        row.update(media)
    if not shift:
        _untrain_first_tokens(rows)
    batch["position_ids"] = sample_positions(rows, rope_index)
    for key in keys:
        batch[key] = torch.cat([row[key] for row in rows]).unsqueeze(0)
    batch.update(varlen_kwargs([len(row["input_ids"]) for row in rows]))
    return batch


def _real_tokens(
    batch: Mapping[str, Any], keys: Sequence[str], lengths: Sequence[int], *, side: str, shift: bool
) -> list[dict[str, torch.Tensor]]:
    """Each row's real tokens of ``keys``, read on the side the rows were padded."""
    width = batch["input_ids"].shape[1]
    rows = []
    for row, length in enumerate(lengths):
        kept = max(min(int(length), width + int(shift)) - int(shift), 0)
        span = slice(0, kept) if side == "right" else slice(width - kept, width)
        rows.append({key: batch[key][row, span] for key in keys})
    return rows


def _untrain_first_tokens(rows: Sequence[dict[str, torch.Tensor]]) -> None:
    """Unshifted labels: a model shifting the whole row would target each first token from the
    previous sample, so first tokens are never targets."""
    for row in rows:
        if len(row["labels"]):
            row["labels"] = row["labels"].clone()
            row["labels"][0] = IGNORE_INDEX
            if "loss_weights" in row:
                row["loss_weights"] = row["loss_weights"].clone()
                row["loss_weights"][0] = 0.0
