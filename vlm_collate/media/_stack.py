"""The one place where per-sample media become batch entries.

Pixels of several samples are joined with [`merge_media`][vlm_collate.media.merge_media]; per-media
tensors (grids, timings) are concatenated along their first axis; and the
batch counts each sample's images and videos from their grids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import BatchError
from ._strategies import PIXEL_KEYS

__all__ = ["CONCATENATED_KEYS", "merge_media", "stack_media"]

# Per-media tensors joined along their first axis.
CONCATENATED_KEYS = ("image_grid_thw", "video_grid_thw", "image_position_ids", "second_per_grid_ts")
# Where the number of images and videos of a sample is read from.
_COUNTED_BY = {"image": "image_grid_thw", "video": "video_grid_thw"}


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


def stack_media(
    entries: Sequence[Mapping[str, Any]],
    *,
    pixel_dtype: torch.dtype | None = None,
    pixel_keys: Sequence[str] = PIXEL_KEYS,
    concatenated_keys: Sequence[str] = CONCATENATED_KEYS,
    counted_by: Mapping[str, str] = _COUNTED_BY,
    owners: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Batch entries from each sample's media, with ``n_<kind>s_per_sample`` counts.

    Args:
        entries: One mapping of media entries per sample (empty for a text sample).
        pixel_dtype: Cast pixels to this dtype; None keeps theirs.
        pixel_keys: Entries joined with [`merge_media`][vlm_collate.media.merge_media].
        concatenated_keys: Per-media entries concatenated along dim 0; their
            trailing shapes must agree (a [`BatchError`][vlm_collate.BatchError] otherwise).
        counted_by: For each kind counted, the entry whose rows are its media.
        owners: The caller's sample index of each entry, for error messages.
    """
    owners = list(range(len(entries))) if owners is None else list(owners)
    media: dict[str, Any] = {}
    for key in pixel_keys:
        values = [entry[key] for entry in entries if key in entry]
        if values:
            media[key] = merge_media(values, dtype=pixel_dtype)
    for key in concatenated_keys:
        held = [
            (owner, entry[key])
            for owner, entry in zip(owners, entries, strict=True)
            if key in entry
        ]
        if held:
            media[key] = _concatenate(key, held)
    for kind, key in counted_by.items():
        if key in media:
            counts = [int(entry[key].shape[0]) if key in entry else 0 for entry in entries]
            media[f"n_{kind}s_per_sample"] = torch.tensor(counts, dtype=torch.long)
    return media


def _concatenate(key: str, held: Sequence[tuple[int, torch.Tensor]]) -> torch.Tensor:
    values = [value for _, value in held]
    if len({tuple(value.shape[1:]) for value in values}) > 1:
        shapes = ", ".join(f"sample {owner}: {tuple(value.shape)}" for owner, value in held)
        msg = f"'{key}' cannot be concatenated: its trailing shapes differ ({shapes})"
        raise BatchError(msg)
    return torch.cat(values, dim=0)
