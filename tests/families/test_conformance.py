"""What every family's collator promises, checked once for all of vlm_collate.testing.FAMILIES.

Each family's own test file pins its token-level behaviour; this file holds
the promises they share: the registry picks the family's class, a pickled
collator (what a spawned DataLoader worker receives) builds the same batch,
a fresh interpreter builds it too, and no family reorders the pipeline.
"""

from __future__ import annotations

import multiprocessing
import pickle

import pytest
import torch
from PIL import Image

import vlm_collate as vc
from vlm_collate.testing import FAMILIES, build_processor, decoded_label_runs

# Written out, not read from the registry: this is what the registry must say.
EXPECTED_CLASS = {
    "gemma4": vc.Gemma4Collator,
    "kimi_k25": vc.KimiK25VLCollator,
    "kimi_k25_remote": vc.KimiK25VLCollator,
    "kimi_vl": vc.KimiVLCollator,
    "llava_next_mistral": vc.DefaultCollator,
    "llava_onevision": vc.LlavaOneVisionCollator,
    "nemotron_omni": vc.NemotronOmniCollator,
    "nemotron_parse": vc.NemotronParseCollator,
    "phi4_mm": vc.Phi4MMCollator,
    "qwen2_5_vl": vc.Qwen25VLCollator,
    "qwen2_vl": vc.Qwen25VLCollator,
    "qwen3_omni": vc.Qwen3OmniCollator,
    "qwen3_vl": vc.Qwen25VLCollator,
    "qwen3_vl_thinking": vc.Qwen25VLCollator,
}
ANSWERS = ("A red square.", "A blue square.")
# Phi-4-MM drops image inputs by default, as NeMo Automodel's function does.
OPTIONS = {"phi4_mm": {"dropped_keys": ()}}


def collator_of(family: str) -> vc.BaseCollator:
    return vc.collator_for(build_processor(family), **OPTIONS.get(family, {}))


def image_sample(answer: str, colour: str) -> dict:
    return {
        "conversation": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": Image.new("RGB", (56, 56), colour)},
                    {"type": "text", "text": "What is this?"},
                ],
            },
            {"role": "assistant", "content": answer},
        ]
    }


def samples() -> list[dict]:
    return [image_sample(ANSWERS[0], "red"), image_sample(ANSWERS[1], "blue")]


def assert_same_batch(expected: dict, actual: dict) -> None:
    assert sorted(expected) == sorted(actual)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, actual[key]), key
        else:
            assert value == actual[key], key


def collate_pickled(payload: bytes) -> dict:
    """Run in a spawned interpreter: unpickle a collator and its samples, collate."""
    collator, examples = pickle.loads(payload)
    return collator(examples)


def test_the_table_covers_every_family():
    """Every test processor family has an expected collator class here."""
    assert sorted(FAMILIES) == sorted(EXPECTED_CLASS)


@pytest.mark.parametrize("family", sorted(EXPECTED_CLASS))
class TestEveryFamily:
    def test_collator_for_picks_the_class(self, family):
        """collator_for on the family's processor builds the family's collator."""
        assert EXPECTED_CLASS[family] is type(vc.collator_for(build_processor(family)))

    def test_answers_are_trained(self, family):
        """Each row's first trained run holds the answer that was put in (after any empty think block)."""
        collator = collator_of(family)
        batch = collator(samples())
        runs = decoded_label_runs(batch["labels"], collator.tokenizer)
        assert list(ANSWERS) == [
            answer if answer in row[0] else row[0]
            for row, answer in zip(runs, ANSWERS, strict=True)
        ]

    def test_pickled_collator_gives_the_same_batch(self, family):
        """A pickled and restored collator (what a spawned worker gets) builds the same batch."""
        collator = collator_of(family)
        restored = pickle.loads(pickle.dumps(collator))
        assert_same_batch(collator(samples()), restored(samples()))

    def test_the_pipeline_order_is_the_base_one(self, family):
        """No family overrides __call__; the base's is final."""
        cls = EXPECTED_CLASS[family]
        assert vc.BaseCollator.__call__ is cls.__call__
        assert getattr(vc.BaseCollator.__call__, "__final__", False)


def test_a_spawned_interpreter_builds_the_same_batches():
    """Every family's collator, pickled into one fresh (spawned) interpreter, builds the same batch."""
    payloads, expected = [], []
    for family in sorted(EXPECTED_CLASS):
        collator = collator_of(family)
        payloads.append(pickle.dumps((collator, samples())))
        expected.append(collator(samples()))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        actual = pool.map(collate_pickled, payloads)
    for family, mine, theirs in zip(sorted(EXPECTED_CLASS), expected, actual, strict=True):
        try:
            assert_same_batch(mine, theirs)
        except AssertionError as exc:
            raise AssertionError(f"{family}: {exc}") from exc
