"""Kimi-VL: the stand-in processor, Kimi's turn markers and ``KimiVLCollator``."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from PIL import Image

import vlm_collate as vc
from tests.helpers.chat import image_sample, text_sample
from vlm_collate.families.kimi_vl import KimiTurnMarker, KimiVLCollator
from vlm_collate.testing import build_processor, decoded_label_runs
from vlm_collate.testing import strategies as vst
from vlm_collate.testing.families.kimi_vl import KimiVLImageProcessor

IGNORE = vc.IGNORE_INDEX
SYSTEM = "<|im_system|>system<|im_middle|>You are a helpful assistant<|im_end|>"
IMAGE = "<|media_start|>image<|media_content|><|media_pad|><|media_end|>"


@pytest.fixture(scope="module")
def processor():
    """A Kimi-VL stand-in processor (treat as read-only)."""
    return build_processor("kimi_vl")


def picture(width: int, height: int, color: str = "red") -> Image.Image:
    return Image.new("RGB", (width, height), color)


def merged_patches(width: int, height: int) -> int:
    """Tokens of an image that needs no shrinking: 28 px merge windows after padding."""
    return math.ceil(width / 28) * math.ceil(height / 28)


def patch_grid(width: int, height: int) -> list[int]:
    """(rows, columns) of 14 px patches once the image is padded to 28 px windows."""
    return [2 * math.ceil(height / 28), 2 * math.ceil(width / 28)]


class TestKimiVLTemplate:
    def test_renders_the_kimi_vl_format(self, processor):
        """Turns are <|im_ROLE|>ROLE<|im_middle|>...<|im_end|> with the default system prompt."""
        sample = image_sample("A red box.", picture(60, 40))
        expected = (
            SYSTEM
            + "<|im_user|>user<|im_middle|>"
            + IMAGE
            + "What?<|im_end|>"
            + "<|im_assistant|>assistant<|im_middle|>A red box.<|im_end|>"
        )
        actual = processor.apply_chat_template(sample["conversation"], tokenize=False)
        assert expected == actual

    def test_given_system_prompt_replaces_the_default(self, processor):
        """A leading system turn is written instead of the default one."""
        conversation = [{"role": "system", "content": "Be brief."}, *text_sample()["conversation"]]
        expected = (
            "<|im_system|>system<|im_middle|>Be brief.<|im_end|>"
            "<|im_user|>user<|im_middle|>Hi<|im_end|>"
            "<|im_assistant|>assistant<|im_middle|>Hello.<|im_end|>"
        )
        assert expected == processor.apply_chat_template(conversation, tokenize=False)

    def test_generation_prompt(self, processor):
        """The generation prompt is the assistant header."""
        conversation = [{"role": "user", "content": "Hi"}]
        expected = (
            SYSTEM
            + "<|im_user|>user<|im_middle|>Hi<|im_end|><|im_assistant|>assistant<|im_middle|>"
        )
        actual = processor.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )
        assert expected == actual


class TestKimiVLStandIn:
    def test_control_tokens_are_single_special_tokens(self, processor):
        """Kimi's control tokens are single special tokens; <|im_end|> keeps Qwen's id."""
        tokenizer = processor.tokenizer
        qwen_end = build_processor("qwen2_5_vl").tokenizer.convert_tokens_to_ids("<|im_end|>")
        for token in ("<|im_user|>", "<|im_assistant|>", "<|im_middle|>", "<|media_pad|>"):
            token_id = tokenizer.convert_tokens_to_ids(token)
            assert [token_id] == tokenizer.encode(token, add_special_tokens=False)
            assert token_id in tokenizer.all_special_ids
        assert qwen_end == tokenizer.convert_tokens_to_ids("<|im_end|>")

    def test_placeholder_widened_per_merged_patch(self, processor):
        """One <|media_pad|> becomes one token per 2 x 2 patches of the padded image."""
        out = processor(
            text=["a" + "<|media_pad|>" + "b"], images=[picture(60, 40)], return_tensors="pt"
        )
        pad = processor.tokenizer.convert_tokens_to_ids("<|media_pad|>")
        assert merged_patches(60, 40) == int((out["input_ids"] == pad).sum())
        assert [[4, 6]] == out["image_grid_hws"].tolist()  # 40 -> 56 px high, 60 -> 84 px wide
        assert (4 * 6, 3, 14, 14) == tuple(out["pixel_values"].shape)

    def test_large_image_shrinks_to_the_patch_budget(self):
        """An image over in_token_limit patches is shrunk by the square root of the excess."""
        image_processor = KimiVLImageProcessor(pad_input=True, in_token_limit=64)
        out = image_processor(picture(600, 400), return_tensors="pt")
        scale = math.sqrt(64 / ((600 // 14) * (400 // 14)))
        width, height = int(600 * scale), int(400 * scale)
        expected = [[2 * math.ceil(height / 28), 2 * math.ceil(width / 28)]]
        assert expected == out["image_grid_hws"].tolist()

    def test_crops_to_whole_patches_without_padding(self):
        """Without pad_input the image is centre-cropped to whole 14 px patches."""
        out = KimiVLImageProcessor(pad_input=False)(picture(60, 40), return_tensors="pt")
        assert [[40 // 14, 60 // 14]] == out["image_grid_hws"].tolist()

    def test_text_only_call(self, processor):
        """Without images the processor only tokenizes."""
        out = processor(text="Hi there", return_tensors="pt")
        assert processor.tokenizer("Hi there")["input_ids"] == out["input_ids"][0].tolist()
        assert "pixel_values" not in out


class TestKimiTurnMarker:
    def test_markers_read_from_the_vocabulary(self, processor):
        """The marker is <|im_assistant|> 'assistant' <|im_middle|>; the end is <|im_end|>."""
        tokenizer = processor.tokenizer
        expected = vc.TurnMarkers(
            assistant_marker=[
                tokenizer.convert_tokens_to_ids("<|im_assistant|>"),
                *tokenizer.encode("assistant", add_special_tokens=False),
                tokenizer.convert_tokens_to_ids("<|im_middle|>"),
            ],
            end_of_turn_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        )
        assert expected == KimiTurnMarker().markers(processor)

    def test_template_derivation_agrees(self, processor):
        """DerivedTemplateMarker finds the same markers in the Kimi-VL template."""
        assert KimiTurnMarker().markers(processor) == vc.DerivedTemplateMarker().markers(processor)

    def test_without_kimi_tokens_it_does_not_apply(self, qwen_processor):
        """A tokenizer without Kimi's tokens raises LabelStrategyError (so FirstOf moves on)."""
        with pytest.raises(vc.LabelStrategyError, match="<\\|im_assistant\\|>"):
            KimiTurnMarker().markers(qwen_processor)


class TestKimiVLCollator:
    def test_collator_for(self, processor):
        """collator_for picks KimiVLCollator for KimiVLProcessor."""
        assert KimiVLCollator is type(vc.collator_for(processor))

    def test_exact_tokens_for_one_image_sample(self, processor):
        """input_ids, attention_mask and pre-shifted labels of one sample, token by token."""
        tokenizer = processor.tokenizer
        text = (
            SYSTEM
            + "<|im_user|>user<|im_middle|>"
            + IMAGE.replace("<|media_pad|>", "<|media_pad|>" * merged_patches(60, 40))
            + "What?<|im_end|><|im_assistant|>assistant<|im_middle|>A red box.<|im_end|>"
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        answer = [*tokenizer.encode("A red box.", add_special_tokens=False)]
        answer.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))
        labels = [IGNORE] * (len(ids) - len(answer)) + answer
        batch = KimiVLCollator(processor=processor)([image_sample("A red box.", picture(60, 40))])
        assert [ids[:-1]] == batch["input_ids"].tolist()
        assert [[1] * (len(ids) - 1)] == batch["attention_mask"].tolist()
        assert [labels[1:]] == batch["labels"].tolist()

    def test_image_multi_image_text_only_and_mixed(self, processor):
        """Every assistant text (and <|im_end|>) is trained, whatever the media."""
        samples = [
            image_sample("One.", picture(60, 40)),
            image_sample("Two pictures.", picture(30, 30, "blue"), picture(90, 20, "green")),
            text_sample("Just text."),
        ]
        batch = KimiVLCollator(processor=processor)(samples)
        expected = [["One.<|im_end|>"], ["Two pictures.<|im_end|>"], ["Just text.<|im_end|>"]]
        assert expected == decoded_label_runs(batch["labels"], processor.tokenizer)
        assert [1, 2, 0] == batch["n_images_per_sample"].tolist()
        expected_grids = [patch_grid(60, 40), patch_grid(30, 30), patch_grid(90, 20)]
        assert expected_grids == batch["image_grid_hws"].tolist()
        pad = processor.tokenizer.convert_tokens_to_ids("<|media_pad|>")
        expected_pads = [merged_patches(60, 40), merged_patches(30, 30) + merged_patches(90, 20), 0]
        assert expected_pads == (batch["input_ids"] == pad).sum(dim=1).tolist()
        assert torch.float32 == batch["pixel_values"].dtype

    def test_multi_turn(self, processor):
        """Each assistant turn of a multi-turn conversation is its own trained run."""
        conversation = [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": picture(28, 28)},
                    {"type": "text", "text": "Colour?"},
                ],
            },
            {"role": "assistant", "content": "Red."},
            {"role": "user", "content": "Sure?"},
            {"role": "assistant", "content": [{"type": "text", "text": " Yes, red."}]},
        ]
        batch = KimiVLCollator(processor=processor)([{"conversation": conversation}])
        assert [["Red.<|im_end|>", " Yes, red.<|im_end|>"]] == decoded_label_runs(
            batch["labels"], processor.tokenizer
        )

    def test_max_length_pads_to_max_length(self, processor):
        """With max_length every row is max_length - 1 long after the shift."""
        collator = KimiVLCollator(processor=processor, max_length=96)
        batch = collator([image_sample("One.", picture(60, 40)), text_sample()])
        assert "max_length" == collator.padding
        assert (2, 95) == tuple(batch["input_ids"].shape)
        assert (2, 95) == tuple(batch["labels"].shape)
        assert [["One.<|im_end|>"], ["Hello.<|im_end|>"]] == decoded_label_runs(
            batch["labels"], processor.tokenizer
        )

    def test_overlong_dropped_then_padded(self, processor):
        """A sample over max_length is dropped and reported; the rest is padded to max_length."""
        tokenizer = processor.tokenizer
        short_length = len(
            tokenizer(processor.apply_chat_template(text_sample()["conversation"], tokenize=False))[
                "input_ids"
            ]
        )
        collator = KimiVLCollator(processor=processor, max_length=short_length + 4)
        batch = collator([image_sample("Long." * 30, picture(60, 40)), text_sample()])
        assert [1] == collator.last_report.kept
        assert ["overlong"] == [dropped.reason for dropped in collator.last_report.dropped]
        assert (1, short_length + 3) == tuple(batch["input_ids"].shape)

    def test_longest_padding_on_request(self, processor):
        """padding='longest' keeps rows as long as the longest one."""
        collator = KimiVLCollator(processor=processor, max_length=512, padding="longest")
        batch = collator([text_sample()])
        expected = len(
            processor.tokenizer(
                processor.apply_chat_template(text_sample()["conversation"], tokenize=False)
            )["input_ids"]
        )
        assert (1, expected - 1) == tuple(batch["input_ids"].shape)

    def test_no_special_tokens_added(self):
        """The tokenizer's own BOS is not added (add_special_tokens=False), as in the seed."""
        processor = build_processor("kimi_vl")
        processor.tokenizer.bos_token = "<|im_start|>"
        processor.tokenizer.add_bos_token = True
        bos = processor.tokenizer.convert_tokens_to_ids("<|im_start|>")
        batch = KimiVLCollator(processor=processor)([text_sample()])
        assert bos == processor(text=["x"], return_tensors="pt")["input_ids"][0, 0].item()
        assert bos not in batch["input_ids"].tolist()[0]

    def test_video_is_refused(self, processor):
        """A video item raises MediaError naming where it is (Kimi-VL takes images only)."""
        sample = {
            "conversation": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Hi"},
                        {"type": "video", "video": [picture(28, 28)] * 2},
                    ],
                },
                {"role": "assistant", "content": "Hello."},
            ]
        }
        with pytest.raises(vc.MediaError, match="sample 1, message 0, item 1"):
            KimiVLCollator(processor=processor)([text_sample(), sample])


class TestKimiVLProperties:
    @given(samples=vst.examples(max_size=3, max_turns=2, roles=("user", "tool")))
    def test_trained_runs_are_the_assistant_texts(self, processor, samples):
        """For any conversations, the trained runs are the assistant texts, each with <|im_end|>."""
        batch = KimiVLCollator(processor=processor)(samples)
        expected = [
            [
                _text(message["content"]) + "<|im_end|>"
                for message in sample["conversation"]
                if message["role"] == "assistant"
            ]
            for sample in samples
        ]
        assert expected == decoded_label_runs(batch["labels"], processor.tokenizer)


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(item["text"] for item in content if item["type"] == "text")


class TestSeedParity:
    @pytest.mark.parametrize("max_length", [None, 100])
    def test_same_batch_as_kimi_vl_collate_fn(self, processor, max_length):
        """The seed's kimi_vl_collate_fn and KimiVLCollator give the same tensors."""
        seed = pytest.importorskip(
            "nemo_automodel.components.datasets.vlm.collate_fns",
            reason="the seed comparison needs nemo-automodel: pip install --no-deps nemo-automodel==0.7.0 datasets",
        )

        def samples():
            return [
                image_sample("A red box.", picture(60, 40)),
                image_sample("Two.", picture(30, 70, "blue"), picture(28, 28)),
                text_sample("Hello there."),
            ]

        expected = seed.kimi_vl_collate_fn(samples(), processor, max_length=max_length)
        actual = KimiVLCollator(processor=processor, max_length=max_length)(samples())
        assert sorted(expected) == sorted(actual)
        for key, value in expected.items():
            assert value.tolist() == actual[key].tolist(), key
