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
from ._ray import (
    pretokenize_ray,
)
from ._shards import (
    ParquetShards,
    ShardWriter,
    write_shards,
)
from ._validate import (
    OPTIONAL_TOKEN_KEYS,
    REQUIRED_TOKEN_KEYS,
    WEIGHTS_KEY,
    Row,
    check_documents,
    check_ids,
    check_media_counts,
    check_pack_labels,
    media_count,
    media_value,
    position_ids,
    read_row,
    token_tensors,
)

__all__ = [
    "NeatPackedCollator",
    "OPTIONAL_TOKEN_KEYS",
    "PackResult",
    "ParquetShards",
    "PreTokenizedCollator",
    "PreTokenizedDataset",
    "REQUIRED_TOKEN_KEYS",
    "Row",
    "ShardWriter",
    "WEIGHTS_KEY",
    "block_causal_mask",
    "check_documents",
    "check_ids",
    "check_media_counts",
    "check_pack_labels",
    "media_count",
    "media_value",
    "pack",
    "position_ids",
    "pretokenize",
    "pretokenize_ray",
    "pretokenize_sample",
    "read_row",
    "sample_from_row",
    "token_tensors",
    "write_shards",
]

_publish(globals(), __all__, "vlm_collate.pretokenized")
