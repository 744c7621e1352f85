"""Reading labelled runs back out of a batch."""

from __future__ import annotations

from typing import Any

import torch

from ..labels import IGNORE_INDEX

__all__ = ["decoded_label_runs", "label_runs"]


def label_runs(labels: torch.Tensor) -> list[list[list[int]]]:
    """Split each row of ``labels`` into maximal runs of trained token ids."""
    rows = []
    for row in labels.tolist():
        runs: list[list[int]] = []
        current: list[int] = []
        for token in row:
            if token == IGNORE_INDEX:
                if current:
                    runs.append(current)
                    current = []
            else:
                current.append(token)
        if current:
            runs.append(current)
        rows.append(runs)
    return rows


def decoded_label_runs(labels: torch.Tensor, tokenizer: Any) -> list[list[str]]:
    """Decode every labelled run of every row (special tokens kept)."""
    return [
        [tokenizer.decode(run, skip_special_tokens=False) for run in runs]
        for runs in label_runs(labels)
    ]
