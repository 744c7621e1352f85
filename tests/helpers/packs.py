"""Packed documents for the packing tests: shifted, end to end, with an indexed mask."""

from __future__ import annotations

import torch


def document_pack(documents, pad=0, mrope=False, image=False):
    """Shifted documents end to end: indexed mask, restarting positions, optional image."""
    input_ids, labels, numbers, positions = [], [], [], []
    for number, tokens in enumerate(documents, start=1):
        input_ids += tokens[:-1]
        labels += tokens[1:]
        numbers += [number] * (len(tokens) - 1)
        positions += list(range(len(tokens) - 1))
    pack = {
        "input_ids": torch.tensor(input_ids + [0] * pad),
        "labels": torch.tensor(labels + [-100] * pad),
        "attention_mask": torch.tensor(numbers + [0] * pad),
        "position_ids": torch.tensor(positions + [0] * pad),
    }
    if mrope:
        pack["position_ids"] = pack["position_ids"].expand(3, -1).clone()
    if image:
        pack.update(
            pixel_values=torch.rand(16, 8),
            image_grid_thw=torch.tensor([[1, 4, 4]]),
            n_images=1,
        )
    return pack
