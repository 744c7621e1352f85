"""Shared test setup: Hypothesis profiles, offline mode, cached processors."""

from __future__ import annotations

import os

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
from hypothesis import HealthCheck, settings

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
# CI: bounded and reproducible, no deadline (processor calls vary with machine load).
settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=_SLOW_OK,
    print_blob=True,
)
settings.register_profile("dev", max_examples=40, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile(
    "thorough", max_examples=300, deadline=None, suppress_health_check=_SLOW_OK
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def qwen_processor():
    """A real Qwen2.5-VL processor on the Qwen2 vocabulary (treat as read-only)."""
    from vlm_collate.testing import build_processor

    return build_processor("qwen2_5_vl")


@pytest.fixture(scope="session")
def mistral_processor():
    """A real LLaVA-NeXT processor on the Mistral SentencePiece tokenizer (read-only)."""
    from vlm_collate.testing import build_processor

    return build_processor("llava_next_mistral")
