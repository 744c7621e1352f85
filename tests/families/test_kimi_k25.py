"""Kimi K2.5: placeholder expansion helpers, the template, both processors and ``KimiK25VLCollator``."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import vlm_collate as vc
from tests.helpers.chat import image_sample, text_sample
from vlm_collate.families.kimi_k25 import KimiK25VLCollator, expand_placeholders, tokens_per_image
from vlm_collate.labels import SkipEmptyThink
from vlm_collate.testing import build_processor, decoded_label_runs
from vlm_collate.testing import strategies as vst

IGNORE = vc.IGNORE_INDEX
SYSTEM = "<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>"
IMAGE = "<|media_begin|>image<|media_content|><|media_pad|><|media_end|>\n"
FAMILIES = ("kimi_k25_remote", "kimi_k25")


@pytest.fixture(scope="module")
def processors():
    """Both Kimi K2.5 processors by family name (treat as read-only)."""
    return {family: build_processor(family) for family in FAMILIES}


@pytest.fixture(scope="module")
def remote(processors):
    """The stand-in for the remote-code KimiK25Processor."""
    return processors["kimi_k25_remote"]


def picture(width: int, height: int, color: str = "red") -> Image.Image:
    return Image.new("RGB", (width, height), color)


def merged_patches(width: int, height: int) -> int:
    """Tokens of an image within the test budget: 28 px merge windows after padding."""
    return math.ceil(width / 28) * math.ceil(height / 28)


def token_id(processor, token: str) -> int:
    return processor.tokenizer.convert_tokens_to_ids(token)


class TestTokensPerImage:
    def test_merged_two_by_two(self):
        """Each [t, h, w] row gives (h // 2) * (w // 2) tokens."""
        grids = torch.tensor([[1, 4, 6], [1, 2, 2], [1, 6, 8]])
        assert [6, 1, 12] == tokens_per_image(grids).tolist()

    def test_odd_sides_round_down(self):
        """A side with an odd patch count loses its last half window."""
        assert [2 * 3] == tokens_per_image(torch.tensor([[1, 5, 7]])).tolist()

    def test_other_merge_kernel(self):
        """The merge kernel is a parameter; (1, 1) counts every patch."""
        assert [24] == tokens_per_image(torch.tensor([[1, 4, 6]]), (1, 1)).tolist()

    def test_no_images(self):
        """An empty grid gives no counts."""
        assert [] == tokens_per_image(torch.zeros((0, 3), dtype=torch.long)).tolist()


class TestExpandPlaceholders:
    def test_each_placeholder_gets_its_count(self):
        """The i-th placeholder is repeated counts[i] times; other tokens stay in order."""
        ids = torch.tensor([5, 9, 7, 9, 8])
        mask = torch.tensor([1, 1, 1, 1, 0])
        new_ids, new_mask = expand_placeholders(ids, mask, torch.tensor([2, 3]), 9)
        assert [5, 9, 9, 7, 9, 9, 9, 8] == new_ids.tolist()
        assert [1, 1, 1, 1, 1, 1, 1, 0] == new_mask.tolist()

    def test_no_placeholders_no_counts(self):
        """A row without placeholders and no images is returned unchanged."""
        ids, mask = torch.tensor([1, 2, 3]), torch.tensor([1, 1, 1])
        new_ids, new_mask = expand_placeholders(ids, mask, torch.zeros(0, dtype=torch.long), 9)
        assert [1, 2, 3] == new_ids.tolist()
        assert [1, 1, 1] == new_mask.tolist()

    def test_count_one_keeps_the_row(self):
        """An image of one token keeps its single placeholder."""
        ids = torch.tensor([4, 9, 4])
        assert [4, 9, 4] == expand_placeholders(ids, torch.ones(3), torch.tensor([1]), 9)[
            0
        ].tolist()

    def test_mismatch_raises(self):
        """More images than placeholders is a ValueError naming both counts."""
        with pytest.raises(ValueError, match="1 image placeholders but there are 2 images"):
            expand_placeholders(torch.tensor([9]), torch.ones(1), torch.tensor([2, 2]), 9)


class _Fixed(vc.LabelStrategy):
    """A label strategy that returns the labels it was given."""

    def __init__(self, labels):
        self.labels = torch.tensor(labels)

    def build(self, input_ids, conversations, processor):
        return self.labels.clone()


class TestSkipEmptyThink:
    def test_empty_block_heading_a_run_is_untrained(self, remote):
        """<think></think> at the head of a trained run is untrained; the answer stays trained."""
        think, close = token_id(remote, "<think>"), token_id(remote, "</think>")
        ids = [[1, think, close, 7, 8, 2]]
        inner = _Fixed([[IGNORE, think, close, 7, 8, IGNORE]])
        labels = SkipEmptyThink(inner).build(torch.tensor(ids), [[]], remote)
        assert [[IGNORE, IGNORE, IGNORE, 7, 8, IGNORE]] == labels.tolist()

    def test_reasoning_block_stays_trained(self, remote):
        """<think>reasoning</think> is trained with the answer."""
        think, close = token_id(remote, "<think>"), token_id(remote, "</think>")
        trained = [think, 5, close, 7]
        labels = SkipEmptyThink(_Fixed([trained])).build(torch.tensor([trained]), [[]], remote)
        assert [trained] == labels.tolist()

    def test_empty_block_inside_a_run_stays_trained(self, remote):
        """An empty block that does not open a run is left alone."""
        think, close = token_id(remote, "<think>"), token_id(remote, "</think>")
        trained = [7, think, close, 8]
        labels = SkipEmptyThink(_Fixed([trained])).build(torch.tensor([trained]), [[]], remote)
        assert [trained] == labels.tolist()

    def test_without_think_tokens_labels_pass_through(self, mistral_processor):
        """A vocabulary without <think> tokens leaves the inner labels as they are."""
        labels = [[IGNORE, 3, 4]]
        actual = SkipEmptyThink(_Fixed(labels)).build(
            torch.tensor([[1, 3, 4]]), [[]], mistral_processor
        )
        assert labels == actual.tolist()


class TestKimiK25Template:
    def test_renders_the_k25_format(self, remote):
        """Default system prompt, image line, and an empty <think> block before the answer."""
        sample = image_sample("A red box.", picture(60, 40))
        expected = (
            SYSTEM
            + "<|im_user|>user<|im_middle|>"
            + IMAGE
            + "What?<|im_end|><|im_assistant|>assistant<|im_middle|><think></think>A red box.<|im_end|>"
        )
        assert expected == remote.apply_chat_template(sample["conversation"], tokenize=False)

    def test_reasoning_kept_only_in_the_last_answer(self, remote):
        """reasoning_content is written for the last answer only; earlier ones get empty blocks."""
        conversation = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "2.", "reasoning_content": "one and one"},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4.", "reasoning_content": "two and two"},
        ]
        expected = (
            "<|im_system|>system<|im_middle|>Be brief.<|im_end|>"
            "<|im_user|>user<|im_middle|>1+1?<|im_end|>"
            "<|im_assistant|>assistant<|im_middle|><think></think>2.<|im_end|>"
            "<|im_user|>user<|im_middle|>2+2?<|im_end|>"
            "<|im_assistant|>assistant<|im_middle|><think></think>4.<|im_end|>"
        )
        assert expected == remote.apply_chat_template(conversation, tokenize=False)

    def test_reasoning_after_the_last_plain_answer(self, remote):
        """After the last answer without tool calls, reasoning_content fills the <think> block."""
        conversation = [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "look it up",
                "tool_calls": [
                    {
                        "id": "functions.weather:0",
                        "function": {"name": "weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "functions.weather:0", "content": "Sunny"},
        ]
        expected = (
            SYSTEM
            + "<|im_user|>user<|im_middle|>Weather?<|im_end|>"
            + "<|im_assistant|>assistant<|im_middle|><think>look it up</think>"
            + "<|tool_calls_section_begin|><|tool_call_begin|>functions.weather:0"
            + "<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|><|im_end|>"
            + "<|im_system|>tool<|im_middle|>## Return of functions.weather:0\nSunny<|im_end|>"
        )
        assert expected == remote.apply_chat_template(conversation, tokenize=False)

    def test_generation_prompt_opens_thinking(self, remote):
        """The generation prompt opens <think>, or an empty block when thinking is false."""
        conversation = [{"role": "user", "content": "Hi"}]
        prompt = (
            SYSTEM
            + "<|im_user|>user<|im_middle|>Hi<|im_end|><|im_assistant|>assistant<|im_middle|>"
        )
        assert prompt + "<think>" == remote.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )
        assert prompt + "<think></think>" == remote.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True, thinking=False
        )


class TestKimiK25Processors:
    def test_transformers_processor_widens_placeholders(self, processors):
        """Kimi_K25Processor writes one <|media_pad|> per merged patch and image_grid_thw."""
        processor = processors["kimi_k25"]
        out = processor(text=["a<|media_pad|>b"], images=[picture(60, 40)], return_tensors="pt")
        assert merged_patches(60, 40) == int(
            (out["input_ids"] == token_id(processor, "<|media_pad|>")).sum()
        )
        assert [[1, 4, 6]] == out["image_grid_thw"].tolist()

    def test_remote_stand_in_keeps_one_placeholder(self, remote):
        """The remote-code stand-in keeps one <|media_pad|> per image and returns grid_thws."""
        medias = [
            {"type": "image", "image": picture(60, 40)},
            {"type": "image", "image": picture(28, 28)},
        ]
        out = remote(text="a<|media_pad|>b<|media_pad|>", medias=medias)
        assert 2 == int((out["input_ids"] == token_id(remote, "<|media_pad|>")).sum())
        assert [[1, 4, 6], [1, 2, 2]] == out["grid_thws"].tolist()
        assert (4 * 6 + 2 * 2, 3, 14, 14) == tuple(out["pixel_values"].shape)

    def test_remote_stand_in_refuses_text_alone(self, remote):
        """Like the original, the stand-in wants messages, or medias and text."""
        with pytest.raises(
            ValueError, match="Provide either 'messages' or both 'medias' and 'text'"
        ):
            remote(text="Hi")


class TestKimiK25VLCollator:
    @pytest.mark.parametrize("family", FAMILIES)
    def test_collator_for(self, processors, family):
        """collator_for picks KimiK25VLCollator for KimiK25Processor and Kimi_K25Processor."""
        assert KimiK25VLCollator is type(vc.collator_for(processors[family]))

    def test_exact_tokens_for_one_image_sample(self, remote):
        """The one placeholder is widened in place; labels are the answer and <|im_end|>."""
        tokenizer = remote.tokenizer
        text = (
            SYSTEM
            + "<|im_user|>user<|im_middle|>"
            + IMAGE.replace("<|media_pad|>", "<|media_pad|>" * merged_patches(60, 40))
            + "What?<|im_end|><|im_assistant|>assistant<|im_middle|><think></think>A red box.<|im_end|>"
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        answer = [
            *tokenizer.encode("A red box.", add_special_tokens=False),
            token_id(remote, "<|im_end|>"),
        ]
        labels = [IGNORE] * (len(ids) - len(answer)) + answer
        batch = KimiK25VLCollator(processor=remote)([image_sample("A red box.", picture(60, 40))])
        assert [ids[:-1]] == batch["input_ids"].tolist()
        assert [[1] * (len(ids) - 1)] == batch["attention_mask"].tolist()
        assert [labels[1:]] == batch["labels"].tolist()
        assert [[1, 4, 6]] == batch["grid_thws"].tolist()
        assert [[4, 6]] == batch["image_grid_hws"].tolist()
        assert [1] == batch["n_images_per_sample"].tolist()

    def test_both_processors_give_the_same_batch(self, processors):
        """Widening in the collator (remote) equals widening in transformers' processor."""
        samples = [
            image_sample("Two.", picture(60, 40), picture(30, 70, "blue")),
            text_sample(),
            image_sample("One.", picture(28, 28, "green")),
        ]
        remote_batch = KimiK25VLCollator(processor=processors["kimi_k25_remote"])(samples)
        port_batch = KimiK25VLCollator(processor=processors["kimi_k25"])(samples)
        for key in (
            "input_ids",
            "attention_mask",
            "labels",
            "pixel_values",
            "grid_thws",
            "image_grid_hws",
            "n_images_per_sample",
        ):
            assert torch.equal(remote_batch[key], port_batch[key]), key
        assert torch.equal(port_batch["grid_thws"], port_batch["image_grid_thw"])

    @pytest.mark.parametrize("family", FAMILIES)
    def test_mixed_batch(self, processors, family):
        """Image, multi-image and text-only samples: runs, counts and pixel rows."""
        processor = processors[family]
        samples = [
            image_sample("One.", picture(60, 40)),
            image_sample("Two pictures.", picture(30, 30, "blue"), picture(90, 20, "green")),
            text_sample("Just text."),
        ]
        batch = KimiK25VLCollator(processor=processor)(samples)
        expected = [["One.<|im_end|>"], ["Two pictures.<|im_end|>"], ["Just text.<|im_end|>"]]
        assert expected == decoded_label_runs(batch["labels"], processor.tokenizer)
        assert [1, 2, 0] == batch["n_images_per_sample"].tolist()
        pads = [merged_patches(60, 40), merged_patches(30, 30) + merged_patches(90, 20), 0]
        assert (
            pads == (batch["input_ids"] == token_id(processor, "<|media_pad|>")).sum(dim=1).tolist()
        )
        assert 4 * sum(pads) == batch["pixel_values"].shape[0]

    def test_text_only_batch_has_no_media_keys(self, remote):
        """Without images there are no pixels, grids or image counts, as in the seed."""
        batch = KimiK25VLCollator(processor=remote)([text_sample(), text_sample("Bye.")])
        assert {"input_ids", "attention_mask", "labels"} == set(batch)

    def test_pads_to_max_length_on_the_right(self, remote):
        """With max_length every row is max_length - 1 long, padded on the right."""
        collator = KimiK25VLCollator(processor=remote, max_length=80)
        batch = collator([image_sample("One.", picture(60, 40)), text_sample()])
        assert "max_length" == collator.padding
        assert (2, 79) == tuple(batch["input_ids"].shape)
        assert 0 == batch["attention_mask"][1, -1].item()
        assert 1 == batch["attention_mask"][1, 0].item()
        assert [["One.<|im_end|>"], ["Hello.<|im_end|>"]] == decoded_label_runs(
            batch["labels"], remote.tokenizer
        )

    def test_overlong_after_expansion_is_dropped(self, remote):
        """A sample that only exceeds max_length once its image is widened is dropped."""
        sample = image_sample("One.", picture(90, 90))
        collapsed = remote(
            text=remote.apply_chat_template(sample["conversation"], tokenize=False),
            medias=[{"type": "image", "image": picture(90, 90)}],
        )["input_ids"].shape[1]
        collator = KimiK25VLCollator(processor=remote, max_length=collapsed + 2)
        batch = collator([sample, text_sample()])
        assert [1] == collator.last_report.kept
        assert ["overlong"] == [dropped.reason for dropped in collator.last_report.dropped]
        assert (1, collapsed + 1) == tuple(batch["input_ids"].shape)

    def test_overlong_raise(self, remote):
        """overlong='raise' raises OverlongError naming the sample."""
        collator = KimiK25VLCollator(processor=remote, max_length=30, overlong="raise")
        with pytest.raises(vc.OverlongError, match="sample 0"):
            collator([image_sample("One.", picture(60, 40))])

    @pytest.mark.parametrize("family", FAMILIES)
    def test_truncation_orphaning_an_image(self, processors, family):
        """Cut inside an image: its tokens become padding and its pixels and grid are dropped."""
        processor = processors[family]
        tokenizer = processor.tokenizer
        long = image_sample("One.", picture(60, 40))
        prefix = SYSTEM + "<|im_user|>user<|im_middle|><|media_begin|>image<|media_content|>"
        cut = len(tokenizer(prefix, add_special_tokens=False)["input_ids"]) + 2
        intact = image_sample("Two.", picture(28, 28, "blue"), prompt="")
        collator = KimiK25VLCollator(
            processor=processor, max_length=cut, overlong="truncate", empty_labels="warn"
        )
        batch = collator([long, intact])
        pad_id = token_id(processor, "<|media_pad|>")
        assert [0, 1] == (batch["input_ids"] == pad_id).sum(dim=1).tolist()
        assert [0, 1] == batch["n_images_per_sample"].tolist()
        assert [[1, 2, 2]] == batch["grid_thws"].tolist()
        assert 4 == batch["pixel_values"].shape[0]
        assert [0, 1] == collator.last_report.truncated
        # The image tokens that fitted are now the padding token, still attended, as in the seed.
        assert tokenizer.pad_token_id == batch["input_ids"][0, cut - 2].item()
        assert 1 == batch["attention_mask"][0, cut - 2].item()

    def test_truncation_after_the_images_keeps_them(self, remote):
        """A cut after the image tokens keeps the image; the row is max_length - 1 long."""
        sample = image_sample("A long answer " * 10, picture(60, 40))
        collator = KimiK25VLCollator(processor=remote, max_length=60, overlong="truncate")
        batch = collator([sample])
        assert [merged_patches(60, 40)] == (
            batch["input_ids"] == token_id(remote, "<|media_pad|>")
        ).sum(dim=1).tolist()
        assert [1] == batch["n_images_per_sample"].tolist()
        assert (1, 59) == tuple(batch["input_ids"].shape)
        assert [0] == collator.last_report.truncated

    def test_reasoning_of_a_trailing_tool_call_is_trained(self, remote):
        """Reasoning the template keeps (a tool-call turn after the last answer) is trained."""
        conversation = [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "look it up",
                "tool_calls": [
                    {
                        "id": "functions.weather:0",
                        "function": {"name": "weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "functions.weather:0", "content": "Sunny"},
        ]
        batch = KimiK25VLCollator(processor=remote)([{"conversation": conversation}])
        expected = (
            "<think>look it up</think><|tool_calls_section_begin|><|tool_call_begin|>functions.weather:0"
            "<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|><|im_end|>"
        )
        assert [[expected]] == decoded_label_runs(batch["labels"], remote.tokenizer)

    def test_video_is_refused(self, processors):
        """A video item raises MediaError naming where it is, even though the port has a video processor."""
        sample = {
            "conversation": [
                {"role": "user", "content": [{"type": "video", "video": [picture(28, 28)] * 2}]},
                {"role": "assistant", "content": "Hello."},
            ]
        }
        with pytest.raises(vc.MediaError, match="sample 0, message 0, item 0"):
            KimiK25VLCollator(processor=processors["kimi_k25"])([sample])

    def test_fake_image_hidden_from_attention(self, remote):
        """A sample marked _injected_fake gets attention 0 on its image tokens."""
        sample = {**image_sample("One.", picture(28, 28)), "_injected_fake": True}
        collator = KimiK25VLCollator(processor=remote, trusted_keys=("_injected_fake",))
        batch = collator([sample, text_sample()])
        pads = batch["input_ids"][0] == token_id(remote, "<|media_pad|>")
        assert 1 == int(pads.sum())
        assert [0] == batch["attention_mask"][0][pads].tolist()


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(item["text"] for item in content if item["type"] == "text")


def _images(sample) -> list[Image.Image]:
    return [
        item["image"]
        for message in sample["conversation"]
        if isinstance(message["content"], list)
        for item in message["content"]
        if item["type"] == "image"
    ]


class TestKimiK25Properties:
    @given(
        samples=vst.examples(max_size=3, max_turns=2, roles=("user", "tool")),
        family=st.sampled_from(FAMILIES),
    )
    def test_expansion_and_labels(self, processors, samples, family):
        """Widened tokens per row are the sum of (h // 2) * (w // 2); runs are the answers."""
        processor = processors[family]
        batch = KimiK25VLCollator(processor=processor)(samples)
        # Test images are at most 96 px a side: no shrinking, padding to 28 px windows.
        expected_tokens = [
            sum(merged_patches(*image.size) for image in _images(sample)) for sample in samples
        ]
        actual_tokens = (
            (batch["input_ids"] == token_id(processor, "<|media_pad|>")).sum(dim=1).tolist()
        )
        assert expected_tokens == actual_tokens
        expected_runs = [
            [
                _text(message["content"]) + "<|im_end|>"
                for message in sample["conversation"]
                if message["role"] == "assistant"
            ]
            for sample in samples
        ]
        assert expected_runs == decoded_label_runs(batch["labels"], processor.tokenizer)

    @given(samples=vst.examples(max_size=3, max_turns=1), max_length=st.integers(24, 120))
    def test_fixed_shapes(self, remote, samples, max_length):
        """Rows are exactly max_length - 1 long; a row keeps all its image tokens or none."""
        collator = KimiK25VLCollator(
            processor=remote, max_length=max_length, overlong="truncate", empty_labels="warn"
        )
        batch = collator(samples)
        assert (len(samples), max_length - 1) == tuple(batch["labels"].shape)
        assert (len(samples), max_length - 1) == tuple(batch["input_ids"].shape)
        counts = (batch["input_ids"] == token_id(remote, "<|media_pad|>")).sum(dim=1).tolist()
        kept = (
            batch["n_images_per_sample"].tolist()
            if "n_images_per_sample" in batch
            else [0] * len(samples)
        )
        for sample, count, images in zip(samples, counts, kept, strict=True):
            full = sum(merged_patches(*image.size) for image in _images(sample))
            # The last column is shifted away, so a row ending in image tokens may show one less.
            assert (images, count) in {
                (0, 0),
                (len(_images(sample)), full),
                (len(_images(sample)), full - 1),
            }


class TestSeedParity:
    @pytest.mark.parametrize(
        ("max_length", "drop_overlong", "overlong"),
        [
            (None, False, "truncate"),
            (80, False, "truncate"),
            (80, True, "drop"),
            (40, False, "truncate"),
        ],
    )
    def test_same_batch_as_kimi_k25_vl_collate_fn(
        self, remote, max_length, drop_overlong, overlong
    ):
        """With the remote-code processor, the seed's function and the collator agree.

        Text-only samples are left out: the seed hands them to the remote
        processor without medias, which refuses them.
        """
        seed = pytest.importorskip(
            "nemo_automodel.components.datasets.vlm.collate_fns",
            reason="the seed comparison needs nemo-automodel: pip install --no-deps nemo-automodel==0.7.0 datasets",
        )

        def samples():
            return [
                image_sample("A red box.", picture(60, 40)),
                image_sample("Two.", picture(30, 70, "blue"), picture(28, 28)),
            ]

        expected = seed.kimi_k25_vl_collate_fn(
            samples(), remote, max_length=max_length, drop_overlong=drop_overlong
        )
        collator = KimiK25VLCollator(
            processor=remote, max_length=max_length, overlong=overlong, empty_labels="warn"
        )
        actual = collator(samples())
        assert sorted(expected) == sorted(actual)
        for key, value in expected.items():
            assert value.tolist() == actual[key].tolist(), key
