"""Side by side with the seed (NeMo Automodel's collate functions), where it labels correctly.

``nemo-automodel`` is not a dependency: install it with
``pip install --no-deps nemo-automodel==0.7.0 datasets`` to run these tests.
"""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import assume, given

import vlm_collate as vc
from vlm_collate import compat
from vlm_collate.testing.strategies import examples

seed = pytest.importorskip(
    "nemo_automodel.components.datasets.vlm.collate_fns",
    reason="the seed comparison needs nemo-automodel: pip install --no-deps nemo-automodel==0.7.0 datasets",
)

TENSOR_KEYS = (
    "input_ids",
    "attention_mask",
    "labels",
    "pixel_values",
    "image_grid_thw",
    "n_images_per_sample",
)


def assert_same_batch(expected: dict, actual: dict) -> None:
    assert sorted(expected) == sorted(actual)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == actual[key].dtype, key
            assert value.tolist() == actual[key].tolist(), key


def seed_labels_correctly(samples) -> bool:
    """The seed misses answers whose leading whitespace holds a newline (BPE merge)."""
    for sample in samples:
        for message in sample["conversation"]:
            if message["role"] != "assistant":
                continue
            content = message["content"]
            text = content if isinstance(content, str) else "".join(i["text"] for i in content)
            if "\n" in re.match(r"\s*", text).group(0):
                return False
    return True


def fixed_samples(image_factory):
    return [
        {
            "conversation": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": image_factory((64, 48))},
                        {"type": "text", "text": "What is it?"},
                    ],
                },
                {"role": "assistant", "content": [{"type": "text", "text": "A red box."}]},
            ]
        },
        {
            "conversation": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello there"},
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": image_factory((30, 90))},
                        {"type": "image", "image": image_factory((90, 30))},
                        {"type": "text", "text": "Compare."},
                    ],
                },
                {"role": "assistant", "content": " Tall and wide."},
            ]
        },
    ]


@pytest.fixture
def samples():
    from PIL import Image

    return fixed_samples(lambda size: Image.new("RGB", size, (200, 30, 30)))


rgb_batches = examples(max_size=3, with_images=True).filter(lambda batch: True)


class TestQwenParity:
    def test_class_matches_seed(self, qwen_processor, samples):
        """Qwen25VLCollator equals the seed's qwen2_5_collate_fn on images, multi-turn and system prompts."""
        expected = seed.qwen2_5_collate_fn(samples, qwen_processor)
        assert_same_batch(expected, vc.Qwen25VLCollator(processor=qwen_processor)(samples))

    def test_compat_function_matches_seed(self, qwen_processor, samples):
        """vlm_collate.compat.qwen2_5_collate_fn is a drop-in replacement."""
        expected = seed.qwen2_5_collate_fn(samples, qwen_processor)
        assert_same_batch(expected, compat.qwen2_5_collate_fn(samples, qwen_processor))

    @given(batch=examples(max_size=3))
    def test_generated_batches_match_seed(self, qwen_processor, batch):
        """On generated RGB batches the seed labels correctly, both give identical tensors."""
        from PIL import Image

        assume(seed_labels_correctly(batch))
        for sample in batch:  # the seed converts modes differently (no alpha compositing)
            for message in sample["conversation"]:
                if isinstance(message["content"], list):
                    for item in message["content"]:
                        if item["type"] == "image":
                            item["image"] = (
                                item["image"].convert("RGB")
                                if isinstance(item["image"], Image.Image)
                                else item["image"]
                            )
        expected = seed.qwen2_5_collate_fn(batch, qwen_processor)
        assert_same_batch(expected, vc.Qwen25VLCollator(processor=qwen_processor)(batch))


class TestDefaultParity:
    def test_class_matches_seed(self, qwen_processor, samples):
        """DefaultCollator equals the seed's default_collate_fn (bfloat16 pixels included)."""
        expected = seed.default_collate_fn(samples, qwen_processor)
        assert_same_batch(expected, vc.DefaultCollator(processor=qwen_processor)(samples))

    def test_compat_with_max_length_matches_seed(self, qwen_processor, samples):
        """With max_length both pad every row to max_length before the shift."""
        expected = seed.default_collate_fn(samples, qwen_processor, max_length=256)
        assert_same_batch(
            expected, compat.default_collate_fn(samples, qwen_processor, max_length=256)
        )

    def test_compat_hook_runs_before_labels(self, qwen_processor, samples):
        """The seed's _post_tokenize_hook receives the tokenized batch and the processor."""
        seen = []

        def hook(batch, processor):
            seen.append((sorted(batch), processor))
            return batch

        expected = seed.default_collate_fn(samples, qwen_processor, _post_tokenize_hook=hook)
        actual = compat.default_collate_fn(samples, qwen_processor, _post_tokenize_hook=hook)
        assert_same_batch(expected, actual)
        assert seen[0] == seen[1]

    def test_build_labels_from_template_matches_seed(self, qwen_processor, samples):
        """The label chain equals the seed's on the same ids."""
        batch = seed.qwen2_5_collate_fn(samples, qwen_processor)
        conversations = [sample["conversation"] for sample in samples]
        expected = seed.build_labels_from_template(
            batch["input_ids"], conversations, qwen_processor
        )
        assert (
            expected.tolist()
            == compat.build_labels_from_template(
                batch["input_ids"], conversations, qwen_processor
            ).tolist()
        )

    def test_build_labels_matches_seed(self, qwen_processor, samples):
        """The legacy BPE matcher equals the seed's on answers it can find."""
        batch = seed.qwen2_5_collate_fn(samples, qwen_processor)
        conversations = [sample["conversation"] for sample in samples]
        expected = seed.build_labels(batch["input_ids"], conversations, qwen_processor)
        assert (
            expected.tolist()
            == compat.build_labels(batch["input_ids"], conversations, qwen_processor).tolist()
        )
