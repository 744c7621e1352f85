"""GenerationTagMask: labels from a template's {% generation %} blocks, on real processors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from PIL import Image

import vlm_collate as vc
import vlm_collate.testing as vt
from tests.helpers.chat import chatml_run_matches, image_sample, text_sample
from tests.helpers.media_files import write_video
from vlm_collate.errors import LabelStrategyError
from vlm_collate.labels import (
    IGNORE_INDEX,
    FirstOf,
    GenerationTagMask,
    ImStartMarker,
    align_token_ids,
    has_generation_block,
)
from vlm_collate.testing import build_processor, decoded_label_runs
from vlm_collate.testing.strategies import examples

CHATML_GENERATION = (Path(vt.__file__).parent / "templates" / "chatml_generation.jinja").read_text(
    encoding="utf-8"
)

MISTRAL_ASSISTANT = "{{- ' ' + text_of(message['content']) | trim + eos_token -}}"
MISTRAL_ASSISTANT_TAGGED = (
    "{{- ' ' -}}{%- generation -%}{{- text_of(message['content']) | trim + eos_token -}}"
    "{%- endgeneration -%}"
)


def mistral_generation_template() -> str:
    """The LLaVA-NeXT/Mistral test template with its answers wrapped in generation tags."""
    path = Path(vt.__file__).parent / "templates" / "llava_next_mistral.jinja"
    template = path.read_text(encoding="utf-8")
    assert MISTRAL_ASSISTANT in template
    return template.replace(MISTRAL_ASSISTANT, MISTRAL_ASSISTANT_TAGGED)


@pytest.fixture(scope="module")
def qwen_right():
    """A fresh Qwen2.5-VL processor on the generation template, padding on the right."""
    return build_processor("qwen2_5_vl", padding_side="right", chat_template=CHATML_GENERATION)


@pytest.fixture(scope="module")
def qwen_left():
    """A fresh Qwen2.5-VL processor on the generation template, padding on the left."""
    return build_processor("qwen2_5_vl", padding_side="left", chat_template=CHATML_GENERATION)


@pytest.fixture(scope="module")
def mistral_tagged():
    """A fresh LLaVA-NeXT processor (SentencePiece Mistral) on a generation-tag template."""
    return build_processor("llava_next_mistral", chat_template=mistral_generation_template())


def picture(width: int, height: int, shade: int = 40) -> Image.Image:
    """A real RGB image with some structure in it."""
    gradient = Image.linear_gradient("L").resize((width, height))
    return Image.merge("RGB", (gradient, Image.new("L", (width, height), shade), gradient))


def multi_turn(first: str, second: str, *images: Image.Image) -> dict:
    """Two exchanges; the images open the first user turn."""
    items = [{"type": "image", "image": image} for image in images]
    return {
        "conversation": [
            {"role": "user", "content": [*items, {"type": "text", "text": "What is shown?"}]},
            {"role": "assistant", "content": first},
            {"role": "user", "content": [{"type": "text", "text": "And then?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": second}]},
        ]
    }


def answers_of(conversation: list[dict]) -> list[str]:
    """The assistant texts of a conversation, in order."""
    texts = []
    for message in conversation:
        if message["role"] != "assistant":
            continue
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.append("".join(item["text"] for item in content if "text" in item))
    return texts


class TestGenerationTemplate:
    """The chatml_generation.jinja template shipped with vlm_collate.testing."""

    def test_renders_chatml_with_vision_placeholders(self, qwen_right):
        """A user image becomes the vision placeholder triple; turns are plain ChatML."""
        conversation = image_sample("A red box.", picture(32, 32))["conversation"]
        expected = (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What?<|im_end|>\n"
            "<|im_start|>assistant\nA red box.<|im_end|>\n"
        )
        assert expected == qwen_right.apply_chat_template(conversation, tokenize=False)

    def test_has_generation_block(self):
        """The template holds a generation tag and the family templates do not."""
        qwen = (Path(vt.__file__).parent / "templates" / "qwen2_vl.jinja").read_text()
        assert (True, False, False) == (
            has_generation_block(CHATML_GENERATION),
            has_generation_block(qwen),
            has_generation_block(None),
        )


class TestGenerationTagMaskQwen:
    """GenerationTagMask inside Qwen25VLCollator, on real images."""

    def test_runs_are_answers_with_end_token(self, qwen_right):
        """Each assistant text plus <|im_end|> is trained, in order, whatever the image sizes."""
        collator = vc.Qwen25VLCollator(processor=qwen_right, label_strategy=GenerationTagMask())
        samples = [
            multi_turn("A gradient.", "Nothing else.", picture(280, 140)),
            multi_turn("Two pictures.", "Still two.", picture(56, 56), picture(120, 90)),
            text_sample("Hello there.", "Hi"),
        ]
        expected = [
            ["A gradient.<|im_end|>", "Nothing else.<|im_end|>"],
            ["Two pictures.<|im_end|>", "Still two.<|im_end|>"],
            ["Hello there.<|im_end|>"],
        ]
        batch = collator(samples)
        assert expected == decoded_label_runs(batch["labels"], qwen_right.tokenizer)

    @pytest.mark.parametrize("side", ["left", "right"])
    def test_processor_padding_side(self, qwen_left, qwen_right, side):
        """Rows the processor pads on either side get the same trained runs."""
        processor = qwen_left if side == "left" else qwen_right
        samples = [
            text_sample("Short.", "Hi"),
            multi_turn("A longer answer here.", "And more.", picture(200, 100)),
        ]
        batch = processor(
            text=[processor.apply_chat_template(s["conversation"]) for s in samples],
            images=[samples[1]["conversation"][0]["content"][0]["image"]],
            padding=True,
            return_tensors="pt",
        )
        padded_first_column = bool((batch["attention_mask"][:, 0] == 0).any())
        labels = GenerationTagMask().build(
            batch["input_ids"], [s["conversation"] for s in samples], processor
        )
        expected = (
            side == "left",
            [["Short.<|im_end|>"], ["A longer answer here.<|im_end|>", "And more.<|im_end|>"]],
        )
        actual = (padded_first_column, decoded_label_runs(labels, processor.tokenizer))
        assert expected == actual

    @pytest.mark.parametrize("side", ["left", "right"])
    def test_collator_output_padding(self, qwen_right, side):
        """The collator's padding_side re-pads labels along with the ids."""
        collator = vc.Qwen25VLCollator(
            processor=qwen_right, label_strategy=GenerationTagMask(), padding_side=side
        )
        batch = collator([text_sample("Yes.", "Hi"), image_sample("A picture.", picture(90, 60))])
        expected = [["Yes.<|im_end|>"], ["A picture.<|im_end|>"]]
        assert expected == decoded_label_runs(batch["labels"], qwen_right.tokenizer)

    @settings(max_examples=20)
    @given(batch=examples(max_size=3, max_turns=3))
    def test_property_runs_equal_answers(self, qwen_right, batch):
        """For generated conversations, the trained runs are the assistant texts put in."""
        collator = vc.Qwen25VLCollator(processor=qwen_right, label_strategy=GenerationTagMask())
        result = collator(batch)
        runs = decoded_label_runs(result["labels"], qwen_right.tokenizer)
        for sample, row in zip(batch, runs, strict=True):
            expected = [answer + "<|im_end|>" for answer in answers_of(sample["conversation"])]
            assert len(expected) == len(row)
            for run, wanted in zip(row, expected, strict=True):
                assert chatml_run_matches(run, wanted), (run, wanted)


class TestPlaceholderExpansion:
    """The key case: an image expands into many tokens between the text and the row."""

    PREFIX = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )

    def expected_positions(self, processor, batch, answer: str) -> list[int]:
        """Where the answer and <|im_end|> sit in the processor's row, worked out by hand."""
        tokenizer = processor.tokenizer
        prefix = len(tokenizer(self.PREFIX, add_special_tokens=False)["input_ids"])
        merge = processor.image_processor.merge_size
        image_tokens = int(batch["image_grid_thw"][0].prod()) // merge**2
        answer_tokens = len(tokenizer(answer, add_special_tokens=False)["input_ids"]) + 1
        first = prefix - 1 + image_tokens  # one <|image_pad|> became image_tokens of them
        return list(range(first, first + answer_tokens))

    def test_labels_land_after_expanded_image(self, qwen_right):
        """Trained positions are shifted by the expansion, and hold the answer's ids."""
        answer = "A striped gradient."
        sample = image_sample(answer, picture(280, 140))
        collator = vc.Qwen25VLCollator(
            processor=qwen_right, label_strategy=GenerationTagMask(), shift_labels=False
        )
        batch = collator([sample])
        expected = self.expected_positions(qwen_right, batch, answer)
        trained = (batch["labels"][0] != IGNORE_INDEX).nonzero().flatten().tolist()
        assert len(expected) > 1 and expected[0] > 60  # the image expanded into many tokens
        assert expected == trained
        wanted_ids = qwen_right.tokenizer(answer + "<|im_end|>", add_special_tokens=False)
        assert wanted_ids["input_ids"] == batch["labels"][0, trained].tolist()

    def test_transformers_own_mask_agrees_in_5_24(self, qwen_right):
        """transformers 5.24's return_assistant_tokens_mask is also right after expansion.

        Observed with transformers 5.24.0: the processor shifts generation
        spans past expanded placeholders (text_replacement_offsets), so its
        mask marks the same positions; this test records that.
        """
        answer = "A striped gradient."
        conversation = image_sample(answer, picture(280, 140))["conversation"]
        out = qwen_right.apply_chat_template(
            conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        mask = torch.as_tensor(out["assistant_masks"]).reshape(-1)
        ours = GenerationTagMask().build(
            torch.as_tensor(out["input_ids"]).reshape(1, -1), [conversation], qwen_right
        )
        expected = self.expected_positions(qwen_right, out, answer)
        actual = (
            mask.nonzero().flatten().tolist(),
            (ours[0] != IGNORE_INDEX).nonzero().flatten().tolist(),
        )
        assert (expected, expected) == actual


class TestInsertedText:
    """Qwen3-VL writes frame timestamps around each video frame's placeholders."""

    def test_video_timestamps_are_skipped(self, tmp_path):
        """Timestamp text the processor inserts is untrained; answers are trained."""
        processor = build_processor("qwen3_vl", chat_template=CHATML_GENERATION)
        frames = [picture(64, 48, shade) for shade in range(0, 240, 30)]
        video = write_video(tmp_path / "clip.mp4", frames)
        conversation = [
            {
                "role": "user",
                "content": [
                    {"type": "video", "video": str(video)},
                    {"type": "text", "text": "What?"},
                ],
            },
            {"role": "assistant", "content": "Moving stripes."},
            {"role": "user", "content": [{"type": "image", "image": picture(100, 60)}]},
            {"role": "assistant", "content": "A still."},
        ]
        collator = vc.collator_for(processor, label_strategy=GenerationTagMask())
        batch = collator([{"conversation": conversation}])
        row_text = processor.tokenizer.decode(batch["input_ids"][0])
        expected = (True, [["Moving stripes.<|im_end|>", "A still.<|im_end|>"]])
        actual = (
            " seconds>" in row_text,
            decoded_label_runs(batch["labels"], processor.tokenizer),
        )
        assert expected == actual


class TestGenerationTagMaskMistral:
    """The SentencePiece path: LLaVA-NeXT on the Mistral tokenizer."""

    def test_runs_with_image_and_padding(self, mistral_tagged):
        """Answers plus </s> are trained; the image tiles and left padding are not."""
        collator = vc.collator_for(mistral_tagged, label_strategy=GenerationTagMask())
        samples = [
            multi_turn("A gradient.", "Nothing else.", picture(200, 100)),
            text_sample("Hello there.", "Hi"),
        ]
        batch = collator(samples)
        expected = [["A gradient.</s>", "Nothing else.</s>"], ["Hello there.</s>"]]
        assert expected == decoded_label_runs(batch["labels"], mistral_tagged.tokenizer)

    @settings(max_examples=10)
    @given(batch=examples(max_size=3, max_turns=2))
    def test_property_runs_equal_trimmed_answers(self, mistral_tagged, batch):
        """For generated conversations, the runs are the answers as the template trims them."""
        collator = vc.collator_for(mistral_tagged, label_strategy=GenerationTagMask())
        runs = decoded_label_runs(collator(batch)["labels"], mistral_tagged.tokenizer)
        expected = [
            [answer.strip() + "</s>" for answer in answers_of(sample["conversation"])]
            for sample in batch
        ]
        assert expected == runs

    def test_space_before_answer_stays_with_answer(self, mistral_tagged):
        """The template's space outside the block merges into '▁A', which is trained."""
        conversation = text_sample("Answer.", "Hi")["conversation"]
        text = mistral_tagged.apply_chat_template(conversation)
        encoded = mistral_tagged(text=[text], return_tensors="pt")
        labels = GenerationTagMask().build(encoded["input_ids"], [conversation], mistral_tagged)
        tokenizer = mistral_tagged.tokenizer
        answer_ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(" Answer."))
        expected = [*answer_ids, tokenizer.eos_token_id]
        assert expected == labels[labels != IGNORE_INDEX].tolist()


class TestFallbackAndErrors:
    """What GenerationTagMask does when it cannot or need not label."""

    def test_template_without_generation_tags_raises(self, qwen_processor):
        """A template with no generation block raises LabelStrategyError."""
        ids = qwen_processor(text=["Hi"], return_tensors="pt")["input_ids"]
        conversation = text_sample()["conversation"]
        with pytest.raises(LabelStrategyError, match="generation"):
            GenerationTagMask().build(ids, [conversation], qwen_processor)

    def test_first_of_falls_through_to_markers(self, qwen_processor):
        """FirstOf(GenerationTagMask(), ImStartMarker()) labels a tag-less template by markers."""
        strategy = FirstOf(GenerationTagMask(), ImStartMarker())
        collator = vc.Qwen25VLCollator(processor=qwen_processor, label_strategy=strategy)
        batch = collator([image_sample("A red box.", picture(64, 64)), text_sample("Hello.")])
        expected = [["A red box.<|im_end|>"], ["Hello.<|im_end|>"]]
        assert expected == decoded_label_runs(batch["labels"], qwen_processor.tokenizer)

    def test_first_of_uses_generation_tags_when_present(self, qwen_right):
        """With tags, FirstOf reports GenerationTagMask as the strategy that applied."""
        strategy = FirstOf(GenerationTagMask(), ImStartMarker())
        conversation = text_sample("Yes.")["conversation"]
        ids = qwen_right(text=[qwen_right.apply_chat_template(conversation)], return_tensors="pt")
        used, _ = strategy.first_applicable(qwen_right, ids["input_ids"], [conversation])
        assert GenerationTagMask() == used

    def test_changed_answer_token_names_the_row(self, qwen_right):
        """A generation token missing from the row raises an error naming that row."""
        conversations = [
            text_sample("Fine.")["conversation"],
            text_sample("Okay then.")["conversation"],
        ]
        texts = [qwen_right.apply_chat_template(c) for c in conversations]
        ids = qwen_right(text=texts, padding=True, return_tensors="pt")["input_ids"]
        then_id = qwen_right.tokenizer(" then", add_special_tokens=False)["input_ids"][0]
        ids[1][ids[1] == then_id] = qwen_right.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        with pytest.raises(LabelStrategyError, match="row 1"):
            GenerationTagMask().build(ids, conversations, qwen_right)

    def test_blocks_without_tokens_leave_row_unlabelled(self):
        """A conversation whose generation blocks are all empty gives an unlabelled row."""
        template = CHATML_GENERATION.replace(
            "{{- '<|im_end|>' -}}\n        {%- endgeneration -%}",
            "{%- endgeneration -%}\n        {{- '<|im_end|>' -}}",
        )
        assert template != CHATML_GENERATION
        processor = build_processor("qwen2_5_vl", chat_template=template)
        conversations = [text_sample("")["conversation"], text_sample("Yes.")["conversation"]]
        texts = [processor.apply_chat_template(c) for c in conversations]
        ids = processor(text=texts, padding=True, return_tensors="pt")["input_ids"]
        labels = GenerationTagMask().build(ids, conversations, processor)
        assert [[], ["Yes."]] == decoded_label_runs(labels, processor.tokenizer)


class TestAlignTokenIds:
    """align_token_ids on hand-made sequences."""

    def test_identical(self):
        """Equal sequences pair position by position."""
        assert [0, 1, 2] == align_token_ids([5, 6, 7], [5, 6, 7])

    def test_expanded_placeholder(self):
        """One placeholder becoming a run pairs with the run's first token."""
        assert [0, 1, 2, 6, 7] == align_token_ids([1, 2, 50, 3, 4], [1, 2, 50, 50, 50, 50, 3, 4])

    def test_padding_both_sides(self):
        """Left and right padding are skipped."""
        expected = ([2, 3, 4], [0, 1, 2])
        actual = (
            align_token_ids([1, 2, 3], [0, 0, 1, 2, 3]),
            align_token_ids([1, 2, 3], [1, 2, 3, 0, 0]),
        )
        assert expected == actual

    def test_inserted_text_around_media(self):
        """Tokens a processor inserts around media are skipped."""
        source = [1, 9, 2, 3]
        target = [0, 1, 70, 71, 9, 9, 9, 72, 2, 3, 0]
        assert [1, 4, 8, 9] == align_token_ids(source, target)

    def test_unmatched_token_is_minus_one(self):
        """A source token absent from the target maps to -1; the rest still pair."""
        assert [0, -1, 1, 2] == align_token_ids([1, 5, 2, 3], [1, 2, 3])

    def test_changed_token_with_padding(self):
        """A token changed in the target is unmatched, neighbours pair past the padding."""
        assert [2, 3, -1, 5, 6] == align_token_ids([1, 2, 3, 4, 5], [0, 0, 1, 2, 9, 4, 5, 0])

    def test_fallback_corrects_a_greedy_jump(self):
        """When the walk jumps to a later equal token and fails, block matching pairs the rest."""
        source = [1, 5, 2, 3, 5, 4]
        target = [1, 2, 3, 5, 4]
        assert [0, -1, 1, 2, 3, 4] == align_token_ids(source, target)

    def test_fallback_pairs_within_runs(self):
        """A source run longer than the target's pairs as far as the target run goes."""
        assert [0, 1, -1, 2] == align_token_ids([1, 7, 7, 2], [1, 7, 2, 3])

    def test_empty_source(self):
        """Nothing to align gives nothing."""
        assert [] == align_token_ids([], [1, 2])
