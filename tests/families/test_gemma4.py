"""Gemma4Collator: the empty thinking channel, inserted after every model turn, untrained.

Expected token ids are spelled out as token strings and looked up in the
vocabulary; expected texts come from the samples that went in.
"""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st
from PIL import Image

import vlm_collate as vc
from tests.helpers.media_files import write_video
from vlm_collate.errors import LabelStrategyError, OverlongError
from vlm_collate.families.gemma4 import (
    Gemma4Collator,
    ThinkingChannelMarker,
    insert_after_marker,
    thinking_ids,
)
from vlm_collate.labels import IGNORE_INDEX
from vlm_collate.registry import collator_class_for, registered
from vlm_collate.testing import build_processor, decoded_label_runs
from vlm_collate.testing.strategies import examples

MARKER_TOKENS = ["<|turn>", "model", "<0x0A>"]
PREFIX_TOKENS = ["<|channel>", "th", "ought", "<0x0A>", "<channel|>"]
# A 40 x 30 image under Gemma 4's rule with 4 px patches, 3 x 3 pooling and 70
# soft tokens: budget 630 patches = 10080 px, scale sqrt(10080 / 1200) = 2.898,
# 86.9 x 115.9 px rounded down to multiples of 12 = 84 x 108 px, 21 x 27 patches,
# 567 / 9 = 63 soft tokens.
TOKENS_PER_40X30_IMAGE = 63


@functools.cache
def processor(padding_side: str | None = None):
    """A real Gemma4Processor (shared: treat as read-only)."""
    return build_processor("gemma4", padding_side=padding_side)


def ids(*tokens: str) -> list[int]:
    return processor().tokenizer.convert_tokens_to_ids(list(tokens))


def chat(*turns, system=None):
    """A sample from alternating user / assistant contents."""
    messages = [] if system is None else [{"role": "system", "content": system}]
    for index, content in enumerate(turns):
        messages.append({"role": "user" if index % 2 == 0 else "assistant", "content": content})
    return {"conversation": messages}


def red(size=(40, 30)):
    return Image.new("RGB", size, (200, 30, 30))


def sine(seconds=0.5, rate=16_000):
    return np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate).astype(np.float32)


def prefix_positions(row: torch.Tensor) -> list[int]:
    """Start of every marker + prefix run in one row of input ids."""
    pattern = ids(*MARKER_TOKENS, *PREFIX_TOKENS)
    values = row.tolist()
    return [
        start + len(MARKER_TOKENS)
        for start in range(len(values) - len(pattern) + 1)
        if values[start : start + len(pattern)] == pattern
    ]


def real_tokens(batch, row: int) -> list[int]:
    """The ids of one row where attention_mask is 1."""
    return batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()


def image_sample(answer="Red."):
    return chat([{"type": "image", "image": red()}, {"type": "text", "text": "What?"}], answer)


def assistant_answers(sample) -> list[str]:
    answers = []
    for message in sample["conversation"]:
        if message["role"] == "assistant":
            content = message["content"]
            if not isinstance(content, str):
                content = "".join(item["text"] for item in content if item["type"] == "text")
            answers.append(content)
    return answers


class TestGemma4Processor:
    def test_chat_format(self):
        """System, image, trimmed texts and a model turn render in Gemma 4's format."""
        sample = chat(
            [{"type": "image", "image": red()}, {"type": "text", "text": " What is it? "}],
            " A red box. ",
            "And?",
            [{"type": "text", "text": "<|channel>thought\nhmm<channel|>Nothing."}],
            system="Be brief. ",
        )
        expected = (
            "<s><|turn>system\nBe brief.<turn|>\n"
            "<|turn>user\n<|image|>What is it?<turn|>\n"
            "<|turn>model\nA red box.<turn|>\n"
            "<|turn>user\nAnd?<turn|>\n"
            "<|turn>model\nNothing.<turn|>\n"
        )
        assert expected == processor().apply_chat_template(sample["conversation"], tokenize=False)

    def test_generation_prompt_opens_empty_thinking_channel(self):
        """Thinking off: the prompt ends in the empty channel; on: <|think|> opens a system turn."""
        messages = chat("Hi")["conversation"]
        render = functools.partial(
            processor().apply_chat_template, messages, tokenize=False, add_generation_prompt=True
        )
        assert (
            "<s><|turn>user\nHi<turn|>\n<|turn>model\n<|channel>thought\n<channel|>",
            "<s><|turn>system\n<|think|>\n<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n",
        ) == (render(), render(enable_thinking=True))

    def test_tool_call_and_response_share_the_model_turn(self):
        """A tool call and its reply stay in one model turn, which the answer continues."""
        messages = [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "a", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "rain"},
            {"role": "assistant", "content": "Rain."},
        ]
        expected = (
            "<s><|turn>user\nWeather?<turn|>\n<|turn>model\n"
            '<|tool_call>call:weather{city:<|"|>Oslo<|"|>}<tool_call|>'
            '<|tool_response>response:weather{value:<|"|>rain<|"|>}<tool_response|>'
            "Rain.<turn|>\n"
        )
        assert expected == processor().apply_chat_template(messages, tokenize=False)

    def test_control_tokens_are_single_special_tokens(self):
        """Each Gemma 4 control token encodes to one special id; no BOS is added."""
        tokenizer = processor().tokenizer
        tokens = ["<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|image>", "<|image|>"]
        encoded = [tokenizer.encode(token, add_special_tokens=False) for token in tokens]
        assert [[token_id] for token_id in ids(*tokens)] == encoded
        assert set(ids(*tokens)) <= set(tokenizer.all_special_ids)
        assert tokenizer.encode("hi") == tokenizer.encode("hi", add_special_tokens=False)

    def test_image_expands_to_soft_tokens(self):
        """A 40 x 30 image becomes <|image>, 63 soft tokens and <image|>."""
        text = "<|turn>user\n<|image|>Hi<turn|>\n"
        batch = processor()(text=[text], images=[[red()]], return_tensors="pt")
        expected = ids("<|turn>", "user", "<0x0A>", "<|image>")
        expected += ids("<|image|>") * TOKENS_PER_40X30_IMAGE
        expected += ids("<image|>", "Hi", "<turn|>", "<0x0A>")
        assert expected == batch["input_ids"][0].tolist()


class TestInsertAfterMarker:
    MARKER = (7, 8)
    INSERTED = (5, 6)

    def grow(self, batch, side="right", keys=("input_ids", "attention_mask")):
        return insert_after_marker(
            batch, self.MARKER, self.INSERTED, keys=list(keys), padding_side=side, pad_id=0
        )

    def test_right_padding(self):
        """Rows grow after each marker; shorter rows are padded on the right."""
        batch = {
            "input_ids": torch.tensor([[1, 7, 8, 3, 7, 8, 4], [1, 7, 8, 3, 0, 0, 0]]),
            "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]]),
        }
        expected_ids = [[1, 7, 8, 5, 6, 3, 7, 8, 5, 6, 4], [1, 7, 8, 5, 6, 3, 0, 0, 0, 0, 0]]
        expected_mask = [[1] * 11, [1] * 6 + [0] * 5]
        grown = self.grow(batch)
        assert expected_ids == grown["input_ids"].tolist()
        assert expected_mask == grown["attention_mask"].tolist()

    def test_left_padding(self):
        """Left-padded rows keep their real tokens flush right."""
        batch = {
            "input_ids": torch.tensor([[0, 0, 1, 7, 8, 3], [1, 7, 8, 3, 7, 8]]),
            "attention_mask": torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]),
        }
        expected_ids = [[0, 0, 0, 0, 1, 7, 8, 5, 6, 3], [1, 7, 8, 5, 6, 3, 7, 8, 5, 6]]
        expected_mask = [[0, 0, 0, 0, 1, 1, 1, 1, 1, 1], [1] * 10]
        grown = self.grow(batch, side="left")
        assert expected_ids == grown["input_ids"].tolist()
        assert expected_mask == grown["attention_mask"].tolist()

    def test_other_keys_get_zeros(self):
        """Token-type ids are zero at inserted positions and keep their values elsewhere."""
        batch = {
            "input_ids": torch.tensor([[7, 8, 9, 9]]),
            "attention_mask": torch.tensor([[1, 1, 1, 1]]),
            "mm_token_type_ids": torch.tensor([[0, 0, 1, 1]]),
        }
        grown = self.grow(batch, keys=("input_ids", "attention_mask", "mm_token_type_ids"))
        assert [[0, 0, 0, 0, 1, 1]] == grown["mm_token_type_ids"].tolist()

    def test_marker_already_followed_by_prefix(self):
        """An occurrence that already carries the inserted ids is left alone."""
        batch = {
            "input_ids": torch.tensor([[7, 8, 5, 6, 3, 7, 8, 3]]),
            "attention_mask": torch.ones(1, 8, dtype=torch.long),
        }
        assert [[7, 8, 5, 6, 3, 7, 8, 5, 6, 3]] == self.grow(batch)["input_ids"].tolist()

    def test_marker_at_row_end(self):
        """A marker ending the row is followed by the inserted ids."""
        batch = {"input_ids": torch.tensor([[1, 7, 8]]), "attention_mask": torch.ones(1, 3)}
        assert [[1, 7, 8, 5, 6]] == self.grow(batch)["input_ids"].tolist()

    def test_without_marker_nothing_changes(self):
        """Rows without the marker come back unchanged."""
        batch = {"input_ids": torch.tensor([[1, 7, 3, 8]]), "attention_mask": torch.ones(1, 4)}
        assert [[1, 7, 3, 8]] == self.grow(batch)["input_ids"].tolist()


class TestThinkingChannelMarker:
    def test_marker_includes_the_channel(self):
        """The trained span opens after <channel|> and closes at <turn|>."""
        markers = ThinkingChannelMarker().resolve(processor())
        expected = (tuple(ids(*MARKER_TOKENS, *PREFIX_TOKENS)), ids("<turn|>")[0])
        assert expected == (markers.assistant_marker, markers.end_of_turn_id)

    def test_other_tokenizers_do_not_apply(self, qwen_processor):
        """A tokenizer without Gemma 4's control tokens raises LabelStrategyError."""
        with pytest.raises(LabelStrategyError, match="control tokens"):
            ThinkingChannelMarker().resolve(qwen_processor)

    def test_derived_marker_cannot_find_the_model_turn(self):
        """The derived marker fails: the generation header holds the channel, history does not."""
        with pytest.raises(LabelStrategyError, match="cannot derive turn markers"):
            vc.DerivedTemplateMarker().resolve(processor())


class TestGemma4Collator:
    def test_registered(self):
        """collator_for picks Gemma4Collator for Gemma4Processor and Gemma4UnifiedProcessor."""
        assert (Gemma4Collator, Gemma4Collator, Gemma4Collator) == (
            collator_class_for(processor()),
            type(vc.collator_for(processor())),
            registered()["Gemma4UnifiedProcessor"],
        )

    def test_exact_tokens(self):
        """Two left-padded rows: prefix inserted, answers and <turn|> labelled, pixels absent."""
        batch = Gemma4Collator(processor=processor())(
            [chat("How are you?", "Fine.", "Hi", "Hello!"), chat("Hi", "Hello!")]
        )
        first_turn = ["<|turn>", "user", "<0x0A>", "How", "▁are", "▁you", "?", "<turn|>", "<0x0A>"]
        reply_one = [*MARKER_TOKENS, *PREFIX_TOKENS, "F", "ine", ".", "<turn|>", "<0x0A>"]
        exchange = ["<|turn>", "user", "<0x0A>", "Hi", "<turn|>", "<0x0A>"]
        reply_two = [*MARKER_TOKENS, *PREFIX_TOKENS, "Hello", "!", "<turn|>", "<0x0A>"]
        long_row = ids("<s>", *first_turn, *reply_one, *exchange, *reply_two)
        short_row = ids("<s>", *exchange, *reply_two)
        pads = len(long_row) - len(short_row)
        short_row = ids("<pad>") * pads + short_row
        trained = {ids(token)[0] for token in ["F", "ine", ".", "Hello", "!", "<turn|>"]}
        expected_labels = []
        for row in (long_row, short_row):
            labels = [IGNORE_INDEX] * len(row)
            for start in prefix_positions(torch.tensor(row)):
                answer = start + len(PREFIX_TOKENS)
                stop = row.index(ids("<turn|>")[0], start) + 1
                labels[answer:stop] = row[answer:stop]
            assert set(labels) - {IGNORE_INDEX} <= trained
            expected_labels.append(labels[1:])
        assert [long_row[:-1], short_row[:-1]] == batch["input_ids"].tolist()
        assert expected_labels == batch["labels"].tolist()
        assert [[1] * (len(long_row) - 1), [0] * pads + [1] * (len(long_row) - 1 - pads)] == batch[
            "attention_mask"
        ].tolist()
        assert [[0] * (len(long_row) - 1)] * 2 == batch["mm_token_type_ids"].tolist()

    @pytest.mark.parametrize(
        "content",
        [
            pytest.param([{"type": "image", "image": red()}], id="image"),
            pytest.param([{"type": "image", "image": red()}] * 2, id="two-images"),
            pytest.param([{"type": "audio", "audio": sine()}], id="audio"),
            pytest.param([], id="text"),
        ],
    )
    def test_modalities(self, content):
        """Every modality: the run is the answer plus <turn|>; the channel is not trained."""
        sample = chat(
            [*content, {"type": "text", "text": "What?"}], "  It is red.\n", "More?", "No."
        )
        batch = Gemma4Collator(processor=processor())([sample])
        assert [["It is red.<turn|>", "No.<turn|>"]] == decoded_label_runs(
            batch["labels"], processor().tokenizer
        )

    def test_video(self, tmp_path):
        """A real mp4: four frames sampled, the answer labelled, the channel inserted once."""
        frames = [Image.new("RGB", (32, 24), (30 * i, 30 * i, 30 * i)) for i in range(8)]
        video = write_video(tmp_path / "grey.mp4", frames, fps=4)
        sample = chat(
            [{"type": "video", "video": str(video)}, {"type": "text", "text": "What?"}], "Grey."
        )
        batch = Gemma4Collator(processor=processor())([sample])
        assert [["Grey.<turn|>"]] == decoded_label_runs(batch["labels"], processor().tokenizer)
        assert ([4], 1) == (
            batch["num_frames_per_video"].tolist(),
            len(prefix_positions(batch["input_ids"][0])),
        )

    def test_video_beside_images_of_other_samples(self, tmp_path):
        """With a video in the batch, each sample's images reach the processor as its own."""
        frames = [Image.new("RGB", (32, 24), (30 * i, 30 * i, 30 * i)) for i in range(4)]
        video = write_video(tmp_path / "grey.mp4", frames, fps=4)
        two_images = [{"type": "image", "image": red()}] * 2
        samples = [
            chat([*two_images, {"type": "text", "text": "Two?"}], "Two."),
            chat(
                [{"type": "video", "video": str(video)}, {"type": "text", "text": "What?"}], "Grey."
            ),
            image_sample(),
        ]
        batch = Gemma4Collator(processor=processor())(samples)
        soft_tokens = (batch["input_ids"] == ids("<|image|>")[0]).sum(dim=1).tolist()
        assert [2 * TOKENS_PER_40X30_IMAGE, 0, TOKENS_PER_40X30_IMAGE] == soft_tokens
        assert [["Two.<turn|>"], ["Grey.<turn|>"], ["Red.<turn|>"]] == decoded_label_runs(
            batch["labels"], processor().tokenizer
        )

    def test_mixed_batch(self):
        """Image, audio and text-only samples in one batch each keep their own answers."""
        samples = [
            image_sample(),
            chat(
                [{"type": "audio", "audio": sine()}, {"type": "text", "text": "Sound?"}], "A tone."
            ),
            chat("Hi", "Hello!", system="Be brief."),
        ]
        batch = Gemma4Collator(processor=processor())(samples)
        assert [["Red.<turn|>"], ["A tone.<turn|>"], ["Hello!<turn|>"]] == decoded_label_runs(
            batch["labels"], processor().tokenizer
        )
        assert ([1, 0, 0], torch.bfloat16) == (
            batch["n_images_per_sample"].tolist(),
            batch["pixel_values"].dtype,
        )

    def test_channel_is_attended_and_not_media(self):
        """At the inserted channel attention is 1 and mm_token_type_ids is 0."""
        sample = image_sample()
        batch = Gemma4Collator(processor=processor(), shift_labels=False)([sample])
        (start,) = prefix_positions(batch["input_ids"][0])
        span = slice(start, start + len(PREFIX_TOKENS))
        assert (
            [1] * len(PREFIX_TOKENS),
            [0] * len(PREFIX_TOKENS),
            [IGNORE_INDEX] * len(PREFIX_TOKENS),
        ) == (
            batch["attention_mask"][0, span].tolist(),
            batch["mm_token_type_ids"][0, span].tolist(),
            batch["labels"][0, span].tolist(),
        )

    def test_right_padding(self):
        """With a right-padding tokenizer real tokens stay flush left after the insertion."""
        samples = [chat("How are you?", "Fine.", "Hi", "Hello!"), chat("Hi", "Hello!")]
        batch = Gemma4Collator(processor=processor("right"), shift_labels=False)(samples)
        short = len(ids("<s>", "<|turn>", "user", "<0x0A>", "Hi", "<turn|>", "<0x0A>"))
        short += len(MARKER_TOKENS) + len(PREFIX_TOKENS) + len(["Hello", "!", "<turn|>", "<0x0A>"])
        width = batch["input_ids"].shape[1]
        assert [1] * short + [0] * (width - short) == batch["attention_mask"][1].tolist()
        assert [["Fine.<turn|>", "Hello!<turn|>"], ["Hello!<turn|>"]] == decoded_label_runs(
            batch["labels"], processor().tokenizer
        )


class TestOverlong:
    # <s> <|turn> user \n Hi <turn|> \n = 7, marker 3, prefix 5, Hello ! <turn|> \n = 4
    HELLO_LENGTH = 19

    def test_injection_makes_the_row_overlong(self):
        """A row within max_length before the insertion but not after is truncated."""
        collator = Gemma4Collator(processor=processor(), max_length=self.HELLO_LENGTH - 2)
        batch = collator([chat("Hi", "Hello!")])
        assert ([0], [["Hello!"]], self.HELLO_LENGTH - 3) == (
            collator.last_report.truncated,
            decoded_label_runs(batch["labels"], processor().tokenizer),
            batch["input_ids"].shape[1],
        )

    def test_truncation_keeps_media_whole(self):
        """Cutting after the image keeps all 63 soft tokens; cutting inside drops the sample."""
        image = image_sample()
        # <s> <|turn> user \n <|image> = 5, then 63 soft tokens and <image|>
        after_image = 5 + TOKENS_PER_40X30_IMAGE + 1 + 2
        inside_image = 5 + 10
        kept = Gemma4Collator(processor=processor(), max_length=after_image, empty_labels="warn")
        batch = kept([image])
        soft_tokens = int((batch["input_ids"] == ids("<|image|>")[0]).sum())
        dropped = Gemma4Collator(
            processor=processor(), max_length=inside_image, empty_labels="warn"
        )
        dropped([chat("Hi", "Hi"), image])
        assert (TOKENS_PER_40X30_IMAGE, [0], [(1, "overlong")]) == (
            soft_tokens,
            kept.last_report.truncated,
            [(item.index, item.reason) for item in dropped.last_report.dropped],
        )

    def test_raise_policy(self):
        """overlong='raise' raises OverlongError naming the sample."""
        collator = Gemma4Collator(processor=processor(), max_length=10, overlong="raise")
        with pytest.raises(OverlongError, match="sample 0"):
            collator([chat("Hi", "Hello!")])


class TestNoOp:
    SAMPLES = (chat("Say <|turn>model\nthis", "<|turn>model\nDone."), chat("Hi", "Hello!"))

    @pytest.mark.parametrize("family", ["qwen_processor", "mistral_processor"])
    def test_other_tokenizers_are_left_alone(self, family, request):
        """Without Gemma 4's control tokens the batch equals DefaultCollator's."""
        other = request.getfixturevalue(family)
        ours = Gemma4Collator(processor=other)(list(self.SAMPLES))
        theirs = vc.DefaultCollator(processor=other)(list(self.SAMPLES))
        keys = ("input_ids", "attention_mask", "labels")
        assert [theirs[key].tolist() for key in keys] == [ours[key].tolist() for key in keys]

    def test_hook_returns_tensors_unchanged(self, qwen_processor):
        """The hook itself leaves every tensor of a Qwen batch as it was."""
        collator = Gemma4Collator(processor=qwen_processor)
        batch = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.ones(1, 3)}
        before = {key: value.clone() for key, value in batch.items()}
        after = collator.hook(dict(batch), [])
        assert {k: v.tolist() for k, v in before.items()} == {
            k: v.tolist() for k, v in after.items()
        }
        assert thinking_ids(qwen_processor.tokenizer) is None


class TestPickling:
    def test_round_trip(self):
        """A pickled collator (as spawn workers receive it) builds the same batch."""
        collator = Gemma4Collator(processor=processor(), max_length=128)
        copy = pickle.loads(pickle.dumps(collator))
        sample = image_sample()
        expected, actual = collator([sample]), copy([sample])
        assert {k: v.tolist() for k, v in expected.items() if k != "pixel_values"} == {
            k: v.tolist() for k, v in actual.items() if k != "pixel_values"
        }


def _batch_samples():
    return examples(min_size=1, max_size=3, max_turns=2)


class TestProperties:
    @given(samples=_batch_samples())
    def test_insertion_adds_only_the_channel(self, samples):
        """Each row is DefaultCollator's row plus one channel per model turn, never trained."""
        ours = Gemma4Collator(processor=processor(), shift_labels=False)(samples)
        plain = vc.DefaultCollator(processor=processor(), shift_labels=False, empty_labels="warn")(
            samples
        )
        prefix = len(PREFIX_TOKENS)
        for row, sample in enumerate(samples):
            turns = len(assistant_answers(sample))
            tokens = real_tokens(ours, row)
            starts = prefix_positions(torch.tensor(tokens))
            inserted = {start + offset for start in starts for offset in range(prefix)}
            without = [token for i, token in enumerate(tokens) if i not in inserted]
            assert (turns, real_tokens(plain, row)) == (len(starts), without)
            padding = ours["input_ids"].shape[1] - len(tokens)
            mask = ours["attention_mask"][row].tolist()
            assert [0] * padding + [1] * len(tokens) == mask
            labels = ours["labels"][row][padding:].tolist()
            assert [IGNORE_INDEX] * len(inserted) == [labels[i] for i in sorted(inserted)]
            expected_runs = [answer.strip() + "<turn|>" for answer in assistant_answers(sample)]
            runs = decoded_label_runs(ours["labels"][row : row + 1], processor().tokenizer)
            assert [expected_runs] == runs

    @given(samples=_batch_samples(), max_length=st.integers(20, 300))
    def test_truncation_never_cuts_media(self, samples, max_length):
        """Rows over max_length after the insertion are cut to it, or dropped if media would be cut."""
        media = set(ids("<|image>", "<|image|>", "<image|>"))
        options = {"processor": processor(), "shift_labels": False, "empty_labels": "warn"}
        full = Gemma4Collator(**options)(samples)
        rows = [real_tokens(full, row) for row in range(len(samples))]
        cut = [len(row) > max_length and bool(media & set(row[max_length:])) for row in rows]
        collator = Gemma4Collator(**options, max_length=max_length)
        if all(cut):
            event("every sample would be cut through media")
            with pytest.raises(vc.BatchError):
                collator(samples)
            return
        batch = collator(samples)
        kept = [index for index, dropped in enumerate(cut) if not dropped]
        assert kept == collator.last_report.kept
        actual = [real_tokens(batch, row) for row in range(len(kept))]
        assert [rows[index][:max_length] for index in kept] == actual
