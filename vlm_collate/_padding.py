"""Pure tensor helpers for padding, truncating and shifting token-axis tensors."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

import torch

__all__ = [
    "TARGET_KEYS",
    "padded_length",
    "padded_side",
    "repad",
    "shift_for_next_token",
    "token_axis_keys",
]

Side = Literal["left", "right"]


def token_axis_keys(batch: Mapping[str, Any], *, exclude: Collection[str] = ()) -> list[str]:
    """Keys of 2-D tensors shaped like ``batch["input_ids"]`` (attention mask, labels, ...)."""
    shape = batch["input_ids"].shape
    return [
        key
        for key, value in batch.items()
        if key not in exclude and isinstance(value, torch.Tensor) and value.shape == shape
    ]


def padded_side(attention_mask: torch.Tensor) -> Side:
    """The side rows were padded on, read from their attention mask.

    Right-padded rows always start with a real token, so a padded first column
    means left padding; an unpadded batch reads as right.
    """
    if attention_mask.shape[1] and bool((attention_mask[:, 0] == 0).any()):
        return "left"
    return "right"


def padded_length(
    longest: int,
    *,
    max_length: int | None,
    pad_to_max_length: bool,
    pad_to_multiple_of: int | None,
    shift: bool,
) -> int:
    """Return the row length before shifting.

    ``pad_to_multiple_of`` applies to the final length the model sees, which
    is one shorter than this when labels are shifted.
    """
    if max_length is None:
        length = longest
    else:
        length = max_length if pad_to_max_length else min(longest, max_length)
    if pad_to_multiple_of:
        final = length - 1 if shift else length
        final = -(-max(final, 1) // pad_to_multiple_of) * pad_to_multiple_of
        length = final + 1 if shift else final
    return length


def repad(
    tensor: torch.Tensor,
    lengths: Sequence[int],
    length: int,
    *,
    side_in: Side,
    side_out: Side,
    pad_value: int | float,
) -> torch.Tensor:
    """Return rows of ``tensor`` re-padded (or truncated) to ``length``.

    Row ``i`` holds ``lengths[i]`` real values on side ``side_in``'s opposite
    end; the first ``min(lengths[i], length)`` of them are kept, padded on
    ``side_out``. The input is returned as is when nothing would change.
    """
    rows, width = tensor.shape[0], tensor.shape[1]
    if width == length and side_in == side_out and max(lengths, default=0) <= length:
        return tensor
    out = tensor.new_full((rows, length, *tensor.shape[2:]), pad_value)
    for row, real in enumerate(lengths):
        kept = min(real, length)
        first = 0 if side_in == "right" else width - real
        values = tensor[row, first : first + kept]
        if side_out == "right":
            out[row, :kept] = values
        else:
            out[row, length - kept :] = values
    return out


TARGET_KEYS = frozenset({"labels", "loss_weights"})


def shift_for_next_token(batch: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Pre-shift a batch: targets (``labels``, ``loss_weights``) ``[:, 1:]``, the rest ``[:, :-1]``.

    Afterwards ``labels[:, t]`` is the target for ``input_ids[:, t]``.
    """
    for key in keys:
        batch[key] = batch[key][:, 1:] if key in TARGET_KEYS else batch[key][:, :-1]
    return batch
