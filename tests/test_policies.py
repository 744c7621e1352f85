"""The bad-input policies (empty_labels, special_tokens_in_text, overlong) and option validation."""

from __future__ import annotations

import collections
import logging
from typing import Any

import attrs
import pytest
import torch
from PIL import Image

import vlm_collate as vc
from tests.helpers.media_files import quadrants, snapshot
from vlm_collate.testing import build_processor, decoded_label_runs

IMAGE_PAD = "<|image_pad|>"
# Qwen2.5-VL: 14 px patches merged 2 x 2, so one image token per 28 x 28 pixels.
PIXELS_PER_IMAGE_TOKEN = 28 * 28


@pytest.fixture(scope="module")
def processor():
    return build_processor("qwen2_5_vl")


@attrs.define(kw_only=True)
class RecordingCollator(vc.Qwen25VLCollator):
    """A Qwen collator that records the texts given to each processor call."""

    calls: list[list[str]] = attrs.field(factory=list, init=False, eq=False)

    def call_processor(self, samples, **inputs):
        self.calls.append(list(inputs["text"]))
        return super().call_processor(samples, **inputs)


def chat(user: Any, answer: str | None = "Sure thing.") -> dict[str, Any]:
    conversation = [{"role": "user", "content": user}]
    if answer is not None:
        conversation.append({"role": "assistant", "content": answer})
    return {"conversation": conversation}


def expected_ids(processor, example: dict[str, Any], image_tokens: int = 0) -> list[int]:
    """Token ids of a sample from its rendered text, image placeholders expanded by hand."""
    tokenizer = processor.tokenizer
    text = tokenizer.apply_chat_template(example["conversation"], tokenize=False)
    text = text.replace(IMAGE_PAD, IMAGE_PAD * image_tokens)
    return tokenizer(text)["input_ids"]


def collate(collator: vc.BaseCollator, examples: list[Any]) -> dict[str, Any]:
    """Collate and check the caller's examples were left as they were."""
    before = snapshot(examples)
    batch = collator(examples)
    assert before == snapshot(examples)
    return batch


def collate_error(
    collator: vc.BaseCollator, examples: list[Any], error: type[Exception]
) -> Exception:
    """Collate, expect ``error``, and check the caller's examples were left as they were."""
    before = snapshot(examples)
    with pytest.raises(error) as caught:
        collator(examples)
    assert before == snapshot(examples)
    return caught.value


def reasons(report: vc.CollateReport) -> list[tuple[int, str]]:
    return [(dropped.index, dropped.reason) for dropped in report.dropped]


class TestConfiguration:
    """Invalid options are refused when the collator is built."""

    @pytest.mark.parametrize(
        ("options", "expected_parts"),
        [
            ({"max_length": -3}, ("'max_length'", "-3")),
            ({"max_length": 0}, ("'max_length'", "0")),
            ({"max_length": "512"}, ("'max_length'", "'512'")),
            ({"pad_to_multiple_of": -8}, ("'pad_to_multiple_of'", "-8")),
            ({"max_image_pixels": 0}, ("'max_image_pixels'", "0")),
            ({"padding": "max_length"}, ("'padding'", "'max_length'")),
            ({"padding": "shortest"}, ("'padding'", "'shortest'")),
            ({"padding_side": "middle"}, ("'padding_side'", "'middle'")),
            ({"empty_labels": "ignore"}, ("'empty_labels'", "'ignore'")),
            ({"special_tokens_in_text": "strip"}, ("'special_tokens_in_text'", "'strip'")),
            ({"overlong": "clip"}, ("'overlong'", "'clip'")),
            ({"pixel_dtype": "nonsense"}, ("'pixel_dtype'", "'nonsense'")),
            ({"pixel_dtype": 16}, ("'pixel_dtype'", "16")),
            ({"drop_overlong": True}, ("'drop_overlong'", "'max_length'")),
        ],
        ids=lambda value: repr(value) if isinstance(value, dict) else "",
    )
    @pytest.mark.parametrize(
        "collator_class", [vc.Qwen25VLCollator, vc.DefaultCollator], ids=lambda c: c.__name__
    )
    def test_bad_option_names_option_and_value(
        self, processor, collator_class, options, expected_parts
    ):
        """A bad option raises ConfigurationError (a ValueError) naming the option and its value."""
        with pytest.raises(vc.ConfigurationError) as caught:
            collator_class(processor=processor, **options)
        message = str(caught.value)
        assert (True, [True] * len(expected_parts)) == (
            isinstance(caught.value, ValueError),
            [part in message for part in expected_parts],
        )

    @pytest.mark.parametrize("dtype", ["bfloat16", "torch.float16", torch.float32, None])
    def test_good_pixel_dtype_is_accepted(self, processor, dtype):
        """Dtype names, 'torch.'-prefixed names, dtypes and None are valid pixel dtypes."""
        expected = {"bfloat16": torch.bfloat16, "torch.float16": torch.float16}.get(dtype, dtype)
        assert expected == vc.Qwen25VLCollator(processor=processor, pixel_dtype=dtype).pixel_dtype


class TestEmptyLabels:
    """The empty_labels policy: a sample with no assistant turn trains no token."""

    def test_default_raises_naming_sample(self, processor):
        """By default a sample without an assistant turn raises EmptyLabelsError naming it."""
        collator = vc.Qwen25VLCollator(processor=processor)
        error = collate_error(
            collator, [chat("Hi"), chat("Anyone?", answer=None)], vc.EmptyLabelsError
        )
        assert (1, True) == (error.sample_index, str(error).startswith("sample 1:"))

    def test_warn_keeps_sample_and_logs(self, processor, caplog):
        """'warn' keeps the sample as an all-ignored row and logs a warning naming it."""
        collator = vc.Qwen25VLCollator(processor=processor, empty_labels="warn")
        with caplog.at_level(logging.WARNING, logger="vlm_collate"):
            batch = collate(collator, [chat("Hi", "Hello."), chat("Anyone?", answer=None)])
        logged = [
            record.getMessage() for record in caplog.records if record.levelno == logging.WARNING
        ]
        assert (
            [0, 1],
            [["Hello.<|im_end|>"], []],
            True,
            1,
            [],
        ) == (
            collator.last_report.kept,
            decoded_label_runs(batch["labels"], processor.tokenizer),
            any("sample 1" in message for message in logged),
            len(collator.last_report.warnings),
            collator.last_report.dropped,
        )

    def test_drop_drops_and_reports(self, processor):
        """'drop' leaves the sample out, and reports and counts it."""
        collator = vc.Qwen25VLCollator(processor=processor, empty_labels="drop")
        batch = collate(
            collator, [chat("Hi", "Hello."), chat("Anyone?", answer=None), chat("Yo", "Hey.")]
        )
        assert (
            [0, 2],
            [(1, "empty_labels")],
            collections.Counter(empty_labels=1),
            [["Hello.<|im_end|>"], ["Hey.<|im_end|>"]],
        ) == (
            collator.last_report.kept,
            reasons(collator.last_report),
            collator.dropped_counts,
            decoded_label_runs(batch["labels"], processor.tokenizer),
        )

    def test_drop_counts_accumulate_across_batches(self, processor):
        """dropped_counts adds up over batches while last_report covers only the last one."""
        collator = vc.Qwen25VLCollator(processor=processor, empty_labels="drop")
        collator([chat("Hi"), chat("Anyone?", answer=None)])
        collator([chat("Hello?", answer=None), chat("Hi")])
        assert (collections.Counter(empty_labels=2), [(0, "empty_labels")]) == (
            collator.dropped_counts,
            reasons(collator.last_report),
        )

    def test_drop_of_every_sample_is_batch_error(self, processor):
        """When every sample is dropped the batch raises BatchError naming the samples."""
        collator = vc.Qwen25VLCollator(processor=processor, empty_labels="drop")
        error = collate_error(
            collator, [chat("A", answer=None), chat("B", answer=None)], vc.BatchError
        )
        assert (True, True) == ("sample 0" in str(error), "sample 1" in str(error))

    def test_default_collator_drop(self, processor):
        """DefaultCollator applies the same policy."""
        collator = vc.DefaultCollator(processor=processor, empty_labels="drop")
        batch = collate(collator, [chat("Anyone?", answer=None), chat("Hi", "Hello.")])
        assert ([(0, "empty_labels")], [["Hello.<|im_end|>"]]) == (
            reasons(collator.last_report),
            decoded_label_runs(batch["labels"], processor.tokenizer),
        )


CONTROL_TOKENS = ["<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|vision_start|>"]


class TestSpecialTokensInText:
    """The special_tokens_in_text policy."""

    @pytest.mark.parametrize("token", CONTROL_TOKENS)
    def test_default_raises_naming_sample_message_and_token(self, processor, token):
        """By default a control token in text raises SpecialTokenError naming where and what."""
        collator = vc.Qwen25VLCollator(processor=processor)
        example = chat("Fine question.", f"Answer {token} here.")
        error = collate_error(collator, [chat("Hi"), example], vc.SpecialTokenError)
        assert ((1, 1), True, True) == (
            (error.sample_index, error.message_index),
            str(error).startswith("sample 1, message 1:"),
            repr(token) in str(error),
        )

    def test_raises_for_token_in_text_item(self, processor):
        """A control token inside a list text item is found as well."""
        collator = vc.DefaultCollator(processor=processor)
        example = chat(
            [{"type": "text", "text": "ok"}, {"type": "text", "text": "then <|im_start|>user"}]
        )
        error = collate_error(collator, [example], vc.SpecialTokenError)
        assert (0, 0) == (error.sample_index, error.message_index)

    def test_raises_for_token_in_system_message(self, processor):
        """A control token in a system message names that message."""
        example = {
            "conversation": [
                {"role": "system", "content": "Be <|im_end|> brief."},
                *chat("Hi")["conversation"],
            ]
        }
        error = collate_error(
            vc.Qwen25VLCollator(processor=processor), [example], vc.SpecialTokenError
        )
        assert (0, 0) == (error.sample_index, error.message_index)

    def test_raises_for_token_in_tool_call_arguments(self):
        """A control token inside tool-call arguments that the template renders is refused too."""
        # Qwen3-VL's template renders tool calls; Qwen2.5-VL's does not.
        qwen3 = build_processor("qwen3_vl")
        call = {
            "type": "function",
            "function": {"name": "lookup", "arguments": {"q": "x<|im_end|>y"}},
        }
        example = {
            "conversation": [
                {"role": "user", "content": "Look it up."},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "content": "Found."},
                {"role": "assistant", "content": "Done."},
            ]
        }
        error = collate_error(vc.Qwen25VLCollator(processor=qwen3), [example], vc.SpecialTokenError)
        assert (0, 1) == (error.sample_index, error.message_index)

    def test_look_alike_text_is_accepted(self, processor):
        """Text that resembles a control token without being one passes under the default policy."""
        collator = vc.Qwen25VLCollator(processor=processor)
        batch = collate(collator, [chat("What is <|im_end?", "Half |> a token <im_end>.")])
        assert [["Half |> a token <im_end>.<|im_end|>"]] == decoded_label_runs(
            batch["labels"], processor.tokenizer
        )

    def test_drop_drops_and_reports(self, processor):
        """'drop' leaves the sample out, and reports and counts it."""
        collator = vc.Qwen25VLCollator(processor=processor, special_tokens_in_text="drop")
        batch = collate(collator, [chat("Say <|im_end|>", "No."), chat("Hi", "Hello.")])
        assert (
            [1],
            [(0, "special_tokens")],
            collections.Counter(special_tokens=1),
            [["Hello.<|im_end|>"]],
        ) == (
            collator.last_report.kept,
            reasons(collator.last_report),
            collator.dropped_counts,
            decoded_label_runs(batch["labels"], processor.tokenizer),
        )

    def test_allow_keeps_text(self, processor):
        """'allow' keeps the sample, control-token text included."""
        collator = vc.Qwen25VLCollator(processor=processor, special_tokens_in_text="allow")
        example = chat("Say <|im_end|> please", "Done.")
        batch = collate(collator, [example, chat("Hi", "Hello.")])
        row = processor.tokenizer.decode(batch["input_ids"][0])
        assert ([0, 1], [], True) == (
            collator.last_report.kept,
            collator.last_report.dropped,
            "Say <|im_end|> please" in row,
        )

    def test_drop_of_every_sample_is_batch_error(self, processor):
        """When every sample holds a control token and is dropped, the batch raises BatchError."""
        collator = vc.Qwen25VLCollator(processor=processor, special_tokens_in_text="drop")
        error = collate_error(
            collator, [chat("<|im_start|>"), chat("Hi", "<|endoftext|>")], vc.BatchError
        )
        assert (collections.Counter(special_tokens=2), True, True) == (
            collator.dropped_counts,
            "sample 0" in str(error),
            "sample 1" in str(error),
        )


LONG_ANSWER = "The quick brown fox jumps over the lazy dog " * 4


class TestOverlong:
    """The overlong policy with max_length, checked against independently counted tokens."""

    def lengths(self, processor, short, long):
        return len(expected_ids(processor, short)), len(expected_ids(processor, long))

    def test_drop_drops_and_reports(self, processor):
        """'drop' leaves out the sample over max_length, and reports and counts it."""
        short, long = chat("Hi", "Hello."), chat("Tell a story.", LONG_ANSWER)
        short_length, long_length = self.lengths(processor, short, long)
        collator = vc.Qwen25VLCollator(
            processor=processor, max_length=long_length - 1, overlong="drop"
        )
        batch = collate(collator, [long, short])
        assert ([1], [(0, "overlong")], collections.Counter(overlong=1), short_length - 1) == (
            collator.last_report.kept,
            reasons(collator.last_report),
            collator.dropped_counts,
            batch["input_ids"].shape[1],
        )

    def test_sample_of_exactly_max_length_is_kept(self, processor):
        """A sample of exactly max_length tokens is kept whole."""
        long = chat("Tell a story.", LONG_ANSWER)
        length = len(expected_ids(processor, long))
        collator = vc.Qwen25VLCollator(processor=processor, max_length=length, overlong="raise")
        batch = collate(collator, [long])
        assert (expected_ids(processor, long)[:-1], []) == (
            batch["input_ids"][0].tolist(),
            collator.last_report.truncated,
        )

    def test_raise_names_sample(self, processor):
        """'raise' raises OverlongError naming the sample and max_length."""
        short, long = chat("Hi", "Hello."), chat("Tell a story.", LONG_ANSWER)
        _, long_length = self.lengths(processor, short, long)
        collator = vc.Qwen25VLCollator(
            processor=processor, max_length=long_length - 1, overlong="raise"
        )
        error = collate_error(collator, [short, long], vc.OverlongError)
        assert (1, True, True) == (
            error.sample_index,
            str(error).startswith("sample 1:"),
            f"max_length={long_length - 1}" in str(error),
        )

    @pytest.mark.parametrize("shift_labels", [False, True])
    def test_truncate_text_only(self, processor, shift_labels):
        """'truncate' cuts a text-only sample to max_length tokens before the shift, labels too."""
        short, long = chat("Hi", "Hello."), chat("Tell a story.", LONG_ANSWER)
        ids = expected_ids(processor, long)
        max_length = len(ids) - 5
        # The answer starts right after the assistant header; the header's tokens are counted alone.
        text = processor.tokenizer.apply_chat_template(long["conversation"], tokenize=False)
        header = text[: text.rindex("<|im_start|>assistant\n") + len("<|im_start|>assistant\n")]
        answer_start = len(processor.tokenizer(header)["input_ids"])
        collator = vc.Qwen25VLCollator(
            processor=processor,
            max_length=max_length,
            overlong="truncate",
            shift_labels=shift_labels,
        )
        batch = collate(collator, [long, short])
        width = max_length - 1 if shift_labels else max_length
        # The shift drops the first label column, never a trained one.
        trained = max_length - answer_start
        row_labels = batch["labels"][0]
        assert (width, ids[:width], [0], [], trained) == (
            batch["input_ids"].shape[1],
            batch["input_ids"][0].tolist(),
            collator.last_report.truncated,
            collator.last_report.dropped,
            int((row_labels != vc.IGNORE_INDEX).sum()),
        )

    def image_sample(self, side: int, answer: str = "A box.") -> dict[str, Any]:
        lead = "Please look closely at the following picture and then tell me about it."
        return chat(
            [
                {"type": "text", "text": lead},
                {"type": "image", "image": quadrants(side, side)},
                {"type": "text", "text": "?"},
            ],
            answer,
        )

    def test_truncate_through_image_tokens_drops(self, processor):
        """'truncate' drops (and reports) a sample whose cut would fall inside its image tokens."""
        example = self.image_sample(56)
        image_tokens = 56 * 56 // PIXELS_PER_IMAGE_TOKEN
        ids = expected_ids(processor, example, image_tokens)
        first_image_token = ids.index(processor.image_token_id)
        max_length = first_image_token + 2  # two of the four image tokens would stay
        short = chat("Hi", "Hello.")
        assert len(expected_ids(processor, short)) <= max_length  # the other sample fits whole
        collator = vc.Qwen25VLCollator(
            processor=processor, max_length=max_length, overlong="truncate"
        )
        batch = collate(collator, [short, example])
        assert ([0], [(1, "overlong")], [], False) == (
            collator.last_report.kept,
            reasons(collator.last_report),
            collator.last_report.truncated,
            "pixel_values" in batch,
        )

    def test_truncate_after_image_tokens_keeps(self, processor):
        """'truncate' keeps an image sample cut after its image tokens, all of them intact."""
        example = self.image_sample(56, LONG_ANSWER)
        image_tokens = 56 * 56 // PIXELS_PER_IMAGE_TOKEN
        ids = expected_ids(processor, example, image_tokens)
        max_length = len(ids) - 5
        collator = vc.Qwen25VLCollator(
            processor=processor, max_length=max_length, overlong="truncate", shift_labels=False
        )
        batch = collate(collator, [example])
        row = batch["input_ids"][0].tolist()
        assert (ids[:max_length], image_tokens, [0], [1]) == (
            row,
            row.count(processor.image_token_id),
            collator.last_report.truncated,
            batch["n_images_per_sample"].tolist(),
        )

    def test_truncate_every_sample_through_images_is_batch_error(self, processor):
        """When truncation would cut through every sample's images, the batch raises BatchError."""
        example = self.image_sample(56)
        ids = expected_ids(processor, example, 56 * 56 // PIXELS_PER_IMAGE_TOKEN)
        max_length = ids.index(processor.image_token_id) + 1
        collator = vc.Qwen25VLCollator(
            processor=processor, max_length=max_length, overlong="truncate"
        )
        collate_error(collator, [example, self.image_sample(56)], vc.BatchError)


class TestDropOverlongEstimate:
    """drop_overlong=True: lengths, image tokens included, are estimated before processing."""

    def samples(self):
        # 224 x 224 pixels expand to 64 image tokens; the text around them is short.
        image = Image.new("RGB", (224, 224), (30, 90, 150))
        with_image = chat(
            [{"type": "image", "image": image}, {"type": "text", "text": "What?"}], "A square."
        )
        return chat("Hi", "Hello."), with_image

    def test_image_tokens_count_towards_estimate(self, processor):
        """An image whose expanded tokens alone exceed max_length is dropped before processing."""
        short, with_image = self.samples()
        image_tokens = 224 * 224 // PIXELS_PER_IMAGE_TOKEN
        max_length = 50
        # The text alone holds one placeholder token for the image.
        text_length = len(expected_ids(processor, with_image))
        assert (True, True) == (text_length < max_length, image_tokens > max_length)
        collator = RecordingCollator(processor=processor, max_length=max_length, drop_overlong=True)
        batch = collate(collator, [with_image, short])
        assert ([1], [(0, "overlong")], 1, [1], False) == (
            collator.last_report.kept,
            reasons(collator.last_report),
            len(collator.calls),
            [len(texts) for texts in collator.calls],
            "pixel_values" in batch,
        )

    def test_without_estimate_processor_sees_every_sample(self, processor):
        """Without drop_overlong the same sample reaches the processor and is dropped afterwards."""
        short, with_image = self.samples()
        collator = RecordingCollator(processor=processor, max_length=50)
        collate(collator, [with_image, short])
        assert ([1], [(0, "overlong")], [2, 1]) == (
            collator.last_report.kept,
            reasons(collator.last_report),
            [len(texts) for texts in collator.calls],
        )

    def test_estimate_with_raise_stops_before_processor(self, processor):
        """drop_overlong with overlong='raise' raises OverlongError before any processor call."""
        short, with_image = self.samples()
        collator = RecordingCollator(
            processor=processor, max_length=50, drop_overlong=True, overlong="raise"
        )
        error = collate_error(collator, [short, with_image], vc.OverlongError)
        assert (1, []) == (error.sample_index, collator.calls)

    def test_sample_under_estimate_is_kept(self, processor):
        """A sample whose text plus image tokens fit in max_length is kept."""
        short, with_image = self.samples()
        length = len(expected_ids(processor, with_image, 224 * 224 // PIXELS_PER_IMAGE_TOKEN))
        collator = RecordingCollator(processor=processor, max_length=length, drop_overlong=True)
        batch = collate(collator, [with_image, short])
        assert (
            [0, 1],
            [],
            expected_ids(processor, with_image, 224 * 224 // PIXELS_PER_IMAGE_TOKEN)[:-1],
        ) == (
            collator.last_report.kept,
            collator.last_report.dropped,
            batch["input_ids"][0].tolist(),
        )
