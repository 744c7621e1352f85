"""Pre-tokenized and packed input: tokenize once, collate many times."""

from __future__ import annotations

from ._collator import (
    PreTokenizedCollator,
    merge_media,
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
from ._ray import pretokenize_ray
from ._shards import (
    ParquetShards,
    ShardWriter,
    write_shards,
)

__all__ = [
    "NeatPackedCollator",
    "PackResult",
    "ParquetShards",
    "PreTokenizedCollator",
    "PreTokenizedDataset",
    "ShardWriter",
    "block_causal_mask",
    "merge_media",
    "pack",
    "pretokenize",
    "pretokenize_ray",
    "pretokenize_sample",
    "sample_from_row",
    "write_shards",
]
