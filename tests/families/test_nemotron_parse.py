"""NemotronParseCollator: task prompt + target, prompt masked, decoder inputs, bf16 pages.

The processor is the stand-in in ``vlm_collate.testing.families.nemotron_parse``
(transformers does not ship Nemotron-Parse's). Expected ids are spelled out
as SentencePiece pieces and looked up in the vocabulary.
"""

from __future__ import annotations

import functools

import pytest
import torch
from PIL import Image

from vlm_collate.errors import (
    ConfigurationError,
    LabelStrategyError,
    MediaError,
    SampleError,
    SpecialTokenError,
)
from vlm_collate.families.nemotron_parse import (
    DEFAULT_TASK_PROMPT,
    NemotronParseCollator,
    PromptPrefixMask,
)
from vlm_collate.labels import IGNORE_INDEX
from vlm_collate.testing import build_processor, decoded_label_runs

PROMPT_PIECES = ["</s>", "<s>", "<predict_bbox>", "<predict_classes>", "<output_markdown>"]


@functools.cache
def processor():
    """The stand-in NemotronParseProcessor (shared: treat as read-only)."""
    return build_processor("nemotron_parse")


def ids(*pieces: str) -> list[int]:
    return processor().tokenizer.convert_tokens_to_ids(list(pieces))


def page(size=(64, 80), colour="white"):
    return Image.new("RGB", size, colour)


def parse(target, *, image=True, prompt="Parse this page."):
    user = [{"type": "text", "text": prompt}]
    if image:
        user.insert(0, {"type": "image", "image": page()})
    return {
        "conversation": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": target},
        ]
    }


def runs(batch):
    return decoded_label_runs(batch["labels"], processor().tokenizer)


class TestLabels:
    def test_targets_and_end_of_sequence_are_trained(self):
        """Each row trains its target and </s>; the task prompt and BOS are not trained."""
        targets = ["# Title\n\nSome text.", "Résumé: 2 · 3 €", "| a | b |\n|---|---|"]
        batch = NemotronParseCollator(processor=processor())([parse(text) for text in targets])
        assert [[text + "</s>"] for text in targets] == runs(batch)

    def test_target_from_text_items(self):
        """A target given as a list of text items is their concatenation."""
        sample = parse([{"type": "text", "text": "Part one. "}, {"type": "text", "text": "Two."}])
        assert [["Part one. Two.</s>"]] == runs(
            NemotronParseCollator(processor=processor())([sample])
        )

    def test_other_task_prompt(self):
        """A different task prompt is masked the same way."""
        prompt = "</s><s><predict_no_bbox><predict_no_classes><output_plain>"
        batch = NemotronParseCollator(processor=processor(), task_prompt=prompt)([parse("Plain.")])
        assert [["Plain.</s>"]] == runs(batch)
        pieces = [
            "<s>",
            "</s>",
            "<s>",
            "<predict_no_bbox>",
            "<predict_no_classes>",
            "<output_plain>",
        ]
        assert ids(*pieces) == batch["input_ids"][0, :6].tolist()


# '<s>' + task prompt + 'Hello world' + '</s>'; after a special token SentencePiece
# writes no word boundary before 'Hello'.
ROW = ("<s>", *PROMPT_PIECES, "Hello", "▁world", "</s>")
TRAINED_FROM = 1 + len(PROMPT_PIECES)


class TestExactTokens:
    def test_shifted_layout(self):
        """Default (the seed's layout): inputs, decoder inputs and masks drop the last column."""
        row = ids(*ROW)
        unshifted = [IGNORE_INDEX] * TRAINED_FROM + row[TRAINED_FROM:]
        batch = NemotronParseCollator(processor=processor())([parse("Hello world")])
        assert [row[:-1]] == batch["input_ids"].tolist()
        assert [unshifted[1:]] == batch["labels"].tolist()
        assert [row[:-1]] == batch["decoder_input_ids"].tolist()
        assert [[1] * (len(row) - 1)] == batch["decoder_attention_mask"].tolist()

    def test_unshifted_layout(self):
        """shift_labels=False: labels align with input_ids; decoder inputs are shifted right."""
        row = ids(*ROW)
        start = processor().tokenizer.bos_token_id  # the seed's fallback start token
        batch = NemotronParseCollator(processor=processor(), shift_labels=False)(
            [parse("Hello world")]
        )
        assert [row] == batch["input_ids"].tolist()
        assert [[IGNORE_INDEX] * TRAINED_FROM + row[TRAINED_FROM:]] == batch["labels"].tolist()
        assert [[start, *row[:-1]]] == batch["decoder_input_ids"].tolist()

    def test_explicit_start_token(self):
        """decoder_start_token_id (the model config's </s>) opens the decoder inputs."""
        end = processor().tokenizer.eos_token_id
        collator = NemotronParseCollator(
            processor=processor(), shift_labels=False, decoder_start_token_id=end
        )
        assert [end] == collator([parse("Hello world")])["decoder_input_ids"][:, 0].tolist()

    def test_padding_is_masked_in_decoder_inputs(self):
        """A shorter row is right-padded; its decoder mask is 0 where the padding is."""
        collator = NemotronParseCollator(processor=processor(), shift_labels=False)
        batch = collator([parse("Hello world"), parse("Hi")])
        short = 1 + len(PROMPT_PIECES) + len(ids("Hi")) + 1  # BOS, prompt, 'Hi', </s>
        width = batch["input_ids"].shape[1]
        assert [1] * (short + 1) + [0] * (width - short - 1) == batch["decoder_attention_mask"][
            1
        ].tolist()
        pad = processor().tokenizer.pad_token_id
        assert [pad] * (width - short) == batch["input_ids"][1, short:].tolist()


class TestPages:
    def test_pixels_are_bfloat16_and_counted(self):
        """Pages become bfloat16 pixels of the processor's size, one per sample."""
        batch = NemotronParseCollator(processor=processor())([parse("A"), parse("B")])
        assert (torch.bfloat16, (2, 3, 40, 32)) == (
            batch["pixel_values"].dtype,
            tuple(batch["pixel_values"].shape),
        )
        assert [1, 1] == batch["n_images_per_sample"].tolist()

    def test_stand_in_fits_and_pads_white(self):
        """The stand-in shrinks a 100 x 50 black page to 32 x 16 and centres it on white."""
        pixels = processor()(images=[page((100, 50), "black")], return_tensors="pt")["pixel_values"]
        column = pixels[0, 0, :, 16].tolist()
        assert [1.0] * 12 + [0.0] * 16 + [1.0] * 12 == column

    def test_missing_page_is_refused(self):
        """A sample without an image raises MediaError naming it."""
        with pytest.raises(MediaError, match="exactly one page image") as caught:
            NemotronParseCollator(processor=processor())([parse("A"), parse("B", image=False)])
        assert 1 == caught.value.sample_index

    def test_second_page_is_refused(self):
        """A sample with two images raises MediaError at the message of the second."""
        sample = parse("A")
        sample["conversation"][0]["content"].append({"type": "image", "image": page()})
        with pytest.raises(MediaError, match=r"found 2") as caught:
            NemotronParseCollator(processor=processor())([sample])
        assert (0, 0) == (caught.value.sample_index, caught.value.message_index)


class TestTargets:
    def test_missing_answer_is_refused(self):
        """A sample without an assistant message raises SampleError."""
        sample = parse("A")
        sample["conversation"].pop()
        with pytest.raises(SampleError, match="one assistant message"):
            NemotronParseCollator(processor=processor())([sample])

    def test_second_answer_is_refused(self):
        """Nemotron-Parse has one target; a second assistant message raises."""
        sample = parse("A")
        sample["conversation"] += [
            {"role": "user", "content": "More?"},
            {"role": "assistant", "content": "B"},
        ]
        with pytest.raises(SampleError, match=r"found 2") as caught:
            NemotronParseCollator(processor=processor())([sample])
        assert 3 == caught.value.message_index

    def test_control_token_in_target(self):
        """A target holding '</s>' is refused (special_tokens_in_text)."""
        with pytest.raises(SpecialTokenError):
            NemotronParseCollator(processor=processor())([parse("Cut</s>here")])


class TestConfiguration:
    def test_missing_pad_token(self):
        """A tokenizer without a pad token is a clear configuration error."""
        bare = build_processor("nemotron_parse")
        bare.tokenizer.pad_token = None
        with pytest.raises(ConfigurationError, match="pad_token_id"):
            NemotronParseCollator(processor=bare)

    def test_missing_start_token(self):
        """Without decoder start, BOS and EOS the error says to pass decoder_start_token_id."""
        bare = build_processor("nemotron_parse")
        bare.tokenizer.bos_token = None
        bare.tokenizer.eos_token = None
        with pytest.raises(ConfigurationError, match="decoder_start_token_id"):
            NemotronParseCollator(processor=bare)
        assert 2 == NemotronParseCollator(processor=bare, decoder_start_token_id=2).start_token_id()

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"padding_side": "left"}, "padding_side"),
            ({"drop_overlong": True, "max_length": 9}, "drop_overlong"),
        ],
    )
    def test_unsupported_options(self, options, field):
        """Left padding and length estimates are refused with the option's name."""
        with pytest.raises(ConfigurationError, match=f"'{field}'"):
            NemotronParseCollator(processor=processor(), **options)

    def test_truncation_keeps_decoder_inputs_aligned(self):
        """overlong='truncate' cuts rows; decoder inputs and labels keep the same width."""
        collator = NemotronParseCollator(processor=processor(), max_length=9, overlong="truncate")
        batch = collator([parse("A much longer target than nine tokens allows.")])
        widths = {batch[key].shape[1] for key in ("input_ids", "labels", "decoder_input_ids")}
        assert {8} == widths


class TestPromptPrefixMask:
    def test_first_occurrence_of_the_prompt(self):
        """Everything after the first occurrence of the prompt ids is trained."""
        prompt_ids = ids(*PROMPT_PIECES)
        row = [7, *prompt_ids, 30, *prompt_ids, 31]
        labels = PromptPrefixMask(prompt=DEFAULT_TASK_PROMPT).build(
            torch.tensor([row]), [[]], processor()
        )
        trained_from = 1 + len(prompt_ids)
        assert [[IGNORE_INDEX] * trained_from + row[trained_from:]] == labels.tolist()

    def test_row_without_the_prompt(self):
        """A row lacking the prompt raises LabelStrategyError naming the row."""
        rows = torch.tensor([[1, *ids(*PROMPT_PIECES), 9], [1, 2, 3, 4, 5, 6, 7]])
        with pytest.raises(LabelStrategyError, match=r"rows \[1\]"):
            PromptPrefixMask(prompt=DEFAULT_TASK_PROMPT).build(rows, [[], []], processor())


class TestSeedParity:
    def test_everything_but_labels_matches_the_seed(self):
        """Pixels, tokens and decoder inputs equal the seed's; its labels miss, ours do not.

        The seed re-tokenizes the target alone ('▁Hi') and searches for it, but after
        the task prompt's special tokens SentencePiece writes 'Hi': nothing is found and
        the seed trains nothing (a nan loss).
        """
        seed = pytest.importorskip(
            "nemo_automodel.components.datasets.vlm.collate_fns",
            reason="the seed comparison needs nemo-automodel: pip install --no-deps nemo-automodel==0.7.0 datasets",
        )
        samples = [parse("# Title\n\nSome text."), parse("Hi")]
        expected = seed.nemotron_parse_collate_fn(samples, processor())
        actual = NemotronParseCollator(processor=processor())(samples)
        assert sorted(expected) == sorted(actual)
        for key in sorted(set(expected) - {"labels"}):
            assert expected[key].float().tolist() == actual[key].float().tolist(), key
        assert [[], []] == decoded_label_runs(expected["labels"], processor().tokenizer)
        assert [["# Title\n\nSome text.</s>"], ["Hi</s>"]] == runs(actual)
