"""Pre-tokenized and packed input: tokenize once, collate many times.

Rows read back from a cache are validated on entry by
:class:`PreTokenizedCollator`, :class:`NeatPackedCollator` and :func:`pack`:
token keys are 1-D integer tensors of one length (int64 out), ids lie in
``[0, vocab_size)``, each label is ``IGNORE_INDEX`` or the token id it trains
(the id at the same position in an unshifted sample; a valid id in a
pack),
``attention_mask`` holds 0/1 (document numbers in a pack) and trains nothing
where it is 0, pixels are finite, grids are ``[N, 3]`` positive ints that agree
with ``n_images`` / ``n_videos`` and with the pixel rows, and ``position_ids``
are integers. A violation is a :class:`~vlm_collate.SampleError` naming the
sample and position.
"""

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

__all__ = [
    "NeatPackedCollator",
    "PackResult",
    "PreTokenizedCollator",
    "PreTokenizedDataset",
    "block_causal_mask",
    "merge_media",
    "pack",
    "pretokenize",
    "pretokenize_sample",
    "sample_from_row",
]
