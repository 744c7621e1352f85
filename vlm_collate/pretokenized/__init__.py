"""Pre-tokenized and packed input: tokenize once, collate many times."""

from __future__ import annotations

from .._public import publish as _publish
from ._collator import (
    PreTokenizedCollator,
    pretokenize_sample,
)
from ._pack import (
    PackResult,
    pack,
)
from ._packed import (
    NeatPackedCollator,
    block_causal_mask,
)
from ._pretokenize import (
    PreTokenizedDataset,
    pretokenize,
    sample_from_row,
)

__all__ = [
    "NeatPackedCollator",
    "PackResult",
    "PreTokenizedCollator",
    "PreTokenizedDataset",
    "block_causal_mask",
    "pack",
    "pretokenize",
    "pretokenize_sample",
    "sample_from_row",
]

_publish(globals(), __all__, "vlm_collate.pretokenized")
