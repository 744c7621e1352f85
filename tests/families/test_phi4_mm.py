"""Phi4MMCollator: audio in every accepted form, input_mode, dropped image inputs.

Expected token ids are spelled out as token strings or texts and looked up in
the vocabulary; expected placeholder counts follow Phi-4's audio arithmetic
(25 ms windows every 10 ms, 8 frames per token) from the clip lengths.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import vlm_collate as vc
from tests.helpers.chat import token_counts
from vlm_collate.errors import MediaError
from vlm_collate.families.phi4_mm import Phi4MMCollator, RoleTokenMarker
from vlm_collate.labels import IGNORE_INDEX
from vlm_collate.registry import registered
from vlm_collate.testing import build_processor, decoded_label_runs

END = "<|end|>"


@functools.cache
def processor():
    """A real Phi4MultimodalProcessor (shared: treat as read-only)."""
    return build_processor("phi4_mm")


def sine(rate: int = 16000, seconds: float = 0.5) -> np.ndarray:
    return np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate).astype(np.float32)


def audio_tokens(samples_at_16k: int) -> int:
    """Phi-4: 400-sample windows every 160 samples; 8 frames per placeholder, rounded up."""
    frames = (samples_at_16k - 400) // 160 + 1
    return math.ceil(frames / 8)


def chat(user, answer, **extra):
    return {
        "conversation": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ],
        **extra,
    }


def with_audio(audio, text="Transcribe.", answer="A tone."):
    return chat([{"type": "audio", "audio": audio}, {"type": "text", "text": text}], answer)


def red():
    return Image.new("RGB", (40, 30), (200, 30, 30))


def runs(batch):
    return decoded_label_runs(batch["labels"], processor().tokenizer)


def count(batch, token):
    return token_counts(batch, processor().tokenizer, token)


class TestRegistry:
    def test_remote_code_name_is_registered(self):
        """The remote-code processor's class name maps to the same collator."""
        names = {"Phi4MultimodalProcessor", "Phi4MMProcessor"}
        assert {name: Phi4MMCollator for name in names} == {
            name: registered()[name] for name in names
        }


class TestLabels:
    @pytest.mark.parametrize(
        "audio",
        [
            sine(),
            (sine(8000), 8000),
            {"array": sine(44100), "sampling_rate": 44100},
            (torch.from_numpy(sine(22050)), 22050),
        ],
        ids=["array", "tuple", "dict", "tensor-tuple"],
    )
    def test_audio_forms(self, audio):
        """Every audio form trains the answer and <|end|>, nothing else."""
        batch = Phi4MMCollator(processor=processor())([with_audio(audio)])
        assert [["A tone." + END]] == runs(batch)

    def test_top_level_audio(self):
        """The seed's example['audio'] is used, its placeholder put before the user's text."""
        sample = chat("What is it?", "A beep.", audio={"array": sine(), "sampling_rate": 16000})
        batch = Phi4MMCollator(processor=processor())([sample])
        assert [["A beep." + END]] == runs(batch)
        text = processor().tokenizer.decode(batch["input_ids"][0])
        assert text.startswith("<|user|>" + "<|audio|>" * audio_tokens(8000) + "What is it?")

    def test_text_only_and_mixed_batch(self):
        """Text-only rows and audio rows share a batch; each trains its own answer."""
        samples = [chat("Hi", "Hello."), with_audio((sine(8000), 8000)), chat("Bye", "Bye.")]
        batch = Phi4MMCollator(processor=processor())(samples)
        assert [["Hello." + END], ["A tone." + END], ["Bye." + END]] == runs(batch)

    def test_multi_turn(self):
        """Each assistant turn is trained; system and user turns are not."""
        sample = {
            "conversation": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "audio", "audio": sine()}]},
                {"role": "assistant", "content": "A tone."},
                {"role": "user", "content": "Louder?"},
                {"role": "assistant", "content": "No."},
            ]
        }
        batch = Phi4MMCollator(processor=processor())([sample])
        assert [["A tone." + END, "No." + END]] == runs(batch)

    def test_audio_placeholders_are_expanded_and_untrained(self):
        """Each clip expands to its token count (from its length at 16 kHz); none is trained."""
        samples = [with_audio(sine(seconds=0.5)), with_audio((sine(8000, seconds=1.0), 8000))]
        batch = Phi4MMCollator(processor=processor())(samples)
        audio_id = processor().audio_token_id
        assert [audio_tokens(8000), audio_tokens(16000)] == count(batch, "<|audio|>")
        assert not (batch["labels"][batch["input_ids"] == audio_id] != IGNORE_INDEX).any()

    @given(
        rate=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]),
        milliseconds=st.integers(min_value=60, max_value=900),
    )
    def test_any_rate_and_length(self, rate, milliseconds):
        """For any rate and duration: the placeholder count follows the length at 16 kHz."""
        samples = sine(rate, seconds=milliseconds / 1000)
        batch = Phi4MMCollator(processor=processor())([with_audio((samples, rate))])
        resampled = math.ceil(samples.size * 16000 / rate)
        assert [audio_tokens(resampled)] == count(batch, "<|audio|>")
        assert [["A tone." + END]] == runs(batch)


class TestPaddingSide:
    def test_left_padded_tokenizer(self):
        """With a left-padding tokenizer the labels are the same answers."""
        left = build_processor("phi4_mm", padding_side="left")
        batch = Phi4MMCollator(processor=left)([chat("Hi", "Hello."), with_audio(sine())])
        assert [["Hello." + END], ["A tone." + END]] == decoded_label_runs(
            batch["labels"], left.tokenizer
        )
        assert [0, 1] == batch["attention_mask"][:, 0].tolist()


class TestExactTokens:
    def test_one_text_sample(self):
        """Ids and unshifted labels of '<|user|>Hi<|end|><|assistant|>Yo.<|end|><|endoftext|>'."""
        tokenizer = processor().tokenizer

        def piece(token):
            return [tokenizer.convert_tokens_to_ids(token)]

        def text(value):
            return tokenizer.encode(value, add_special_tokens=False)

        prompt = piece("<|user|>") + text("Hi") + piece(END) + piece("<|assistant|>")
        answer = text("Yo.") + piece(END)
        expected_ids = prompt + answer + piece("<|endoftext|>")
        expected_labels = [IGNORE_INDEX] * len(prompt) + answer + [IGNORE_INDEX]
        batch = Phi4MMCollator(processor=processor(), shift_labels=False)([chat("Hi", "Yo.")])
        assert [expected_ids] == batch["input_ids"].tolist()
        assert [expected_labels] == batch["labels"].tolist()

    def test_shifted_by_default(self):
        """By default labels[:, t] is the target of input_ids[:, t]."""
        sample = chat("Hi", "Yo.")
        plain = Phi4MMCollator(processor=processor(), shift_labels=False)([sample])
        shifted = Phi4MMCollator(processor=processor())([sample])
        assert plain["input_ids"][:, :-1].tolist() == shifted["input_ids"].tolist()
        assert plain["labels"][:, 1:].tolist() == shifted["labels"].tolist()


class TestInputMode:
    def test_text_only_is_mode_0(self):
        """A batch without media has input_mode 0."""
        assert 0 == Phi4MMCollator(processor=processor())([chat("Hi", "Yo.")])["input_mode"]

    def test_audio_is_mode_2(self):
        """A batch with audio has input_mode 2."""
        batch = Phi4MMCollator(processor=processor())([chat("Hi", "Yo."), with_audio(sine())])
        assert 2 == batch["input_mode"]

    def test_image_is_mode_1_and_both_is_3(self):
        """With image inputs kept, images give mode 1 and images plus audio mode 3."""
        collator = Phi4MMCollator(processor=processor(), dropped_keys=())
        picture = chat(
            [{"type": "image", "image": red()}, {"type": "text", "text": "Colour?"}], "Red."
        )
        assert [1, 3] == [
            collator([picture])["input_mode"],
            collator([picture, with_audio(sine())])["input_mode"],
        ]

    def test_processor_value_is_kept(self):
        """An input_mode the processor set is left as it is."""
        batch = {"input_ids": torch.ones(1, 3, dtype=torch.long), "input_mode": torch.tensor([3])}
        assert [3] == Phi4MMCollator(processor=processor()).hook(batch, [])["input_mode"].tolist()


class TestDroppedKeys:
    def test_image_items_are_refused_by_default(self):
        """As the seed drops image inputs, an image item raises rather than being lost."""
        picture = chat(
            [{"type": "text", "text": "Colour?"}, {"type": "image", "image": red()}], "Red."
        )
        with pytest.raises(MediaError, match="drops image inputs") as caught:
            Phi4MMCollator(processor=processor())([chat("Hi", "Yo."), picture])
        assert (1, 0, 1) == (
            caught.value.sample_index,
            caught.value.message_index,
            caught.value.item_index,
        )

    def test_kept_image_inputs(self):
        """dropped_keys=() keeps the image inputs (one and two images) and trains the answers."""
        one = chat([{"type": "image", "image": red()}, {"type": "text", "text": "Colour?"}], "Red.")
        two = chat(
            [
                {"type": "image", "image": red()},
                {"type": "image", "image": Image.new("RGB", (30, 40), "blue")},
                {"type": "text", "text": "Colours?"},
            ],
            "Red, blue.",
        )
        batch = Phi4MMCollator(processor=processor(), dropped_keys=())([one, two])
        expected = {"image_pixel_values", "image_sizes", "image_attention_mask"}
        assert expected <= set(batch)
        assert [["Red." + END], ["Red, blue." + END]] == runs(batch)
        assert [1, 2] == batch["n_images_per_sample"].tolist()
        assert 3 == batch["image_pixel_values"].shape[0]

    def test_pixel_dtype_applies_to_phi4_pixels(self):
        """pixel_dtype casts image_pixel_values; by default they keep the processor's float32."""
        one = chat([{"type": "image", "image": red()}, {"type": "text", "text": "Colour?"}], "Red.")
        assert [torch.float32, torch.bfloat16] == [
            Phi4MMCollator(processor=processor(), dropped_keys=(), **options)([one])[
                "image_pixel_values"
            ].dtype
            for options in ({}, {"pixel_dtype": "bfloat16"})
        ]

    def test_video_is_refused(self):
        """Phi-4-multimodal has no video processor: a video item raises MediaError."""
        frames = [Image.new("RGB", (16, 16))] * 2
        video = chat([{"type": "video", "video": frames}, {"type": "text", "text": "?"}], "No.")
        with pytest.raises(MediaError, match="cannot take video"):
            Phi4MMCollator(processor=processor())([video])

    def test_named_keys_are_removed(self):
        """Any listed key is removed from the batch."""
        batch = Phi4MMCollator(processor=processor(), dropped_keys=("audio_embed_sizes",))(
            [with_audio(sine())]
        )
        assert "audio_embed_sizes" not in batch
        assert "audio_input_features" in batch


class TestBadAudio:
    @pytest.mark.parametrize(
        "audio",
        [{"samples": sine()}, np.zeros(0), np.full(100, np.nan), "missing.wav", (sine(), -5)],
        ids=["dict-without-array", "empty", "nan", "missing-file", "negative-rate"],
    )
    def test_bad_audio_item_names_the_sample(self, audio):
        """An unusable audio item raises MediaError naming sample, message and item."""
        with pytest.raises(MediaError) as caught:
            Phi4MMCollator(processor=processor())([chat("Hi", "Yo."), with_audio(audio)])
        assert (1, 0, 0) == (
            caught.value.sample_index,
            caught.value.message_index,
            caught.value.item_index,
        )
        assert isinstance(caught.value, vc.VLMCollateError)

    def test_bad_top_level_audio_names_the_sample(self):
        """An unusable example['audio'] raises MediaError naming the sample."""
        with pytest.raises(MediaError, match=r"^sample 2: example\['audio'\]"):
            Phi4MMCollator(processor=processor())(
                [chat("a", "b"), chat("c", "d"), chat("e", "f", audio={"path": None})]
            )


class TestRoleTokenMarker:
    def test_markers_from_the_vocabulary(self):
        """<|assistant|> opens the turn and <|end|> closes it."""
        tokenizer = processor().tokenizer
        markers = RoleTokenMarker().resolve(processor())
        assert [tokenizer.convert_tokens_to_ids("<|assistant|>")] == list(markers.assistant_marker)
        assert tokenizer.convert_tokens_to_ids(END) == markers.end_of_turn_id

    def test_missing_tokens_let_the_chain_move_on(self, qwen_processor):
        """On a vocabulary without the tokens it raises LabelStrategyError."""
        with pytest.raises(vc.LabelStrategyError, match="<|assistant|>"):
            RoleTokenMarker().resolve(qwen_processor)
