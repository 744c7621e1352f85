"""Qwen3OmniCollator: audio, images and videos through qwen-omni-utils, right padding.

Expected token ids are spelled out as text and tokenized with the tokenizer;
expected label texts come from the samples that went in. Audio is real
waveforms (sine tones at 16 kHz) and real media files written with PyAV.
"""

from __future__ import annotations

import functools
import wave
from fractions import Fraction

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import vlm_collate as vc
from tests.helpers.chat import chatml_run_matches
from vlm_collate.families.qwen_omni import Qwen3OmniCollator, QwenOmniUtilsMedia
from vlm_collate.labels import IGNORE_INDEX
from vlm_collate.registry import collator_class_for, registered
from vlm_collate.testing import build_processor, decoded_label_runs
from vlm_collate.testing.strategies import answer_texts, prompt_texts

RATE = 16000
# Qwen3-Omni's audio encoder reads 100 mel frames (one second at a 160-sample
# hop) per window and turns each full window into 13 tokens.
TOKENS_PER_SECOND = 13


@functools.cache
def processor(padding_side: str | None = None):
    """A real Qwen3OmniMoeProcessor (shared: treat as read-only)."""
    return build_processor("qwen3_omni", padding_side=padding_side)


def tokenizer():
    return processor().tokenizer


def encode(text: str) -> list[int]:
    return tokenizer()(text, add_special_tokens=False)["input_ids"]


def sine(seconds: float, freq: float = 440.0, rate: int = RATE) -> np.ndarray:
    count = int(seconds * rate)
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(count) / rate)).astype(np.float32)


def audio_tokens(mel_frames: int) -> int:
    """Tokens for ``mel_frames`` frames: 13 per full window, three stride-2 convolutions on the rest."""
    windows, rest = divmod(mel_frames, 100)
    for _ in range(3):
        rest = (rest + 1) // 2
    return windows * TOKENS_PER_SECOND + rest


def write_clip(path, frames=8, fps=4, size=(64, 48), sound_seconds=None):
    """An mp4 whose frame i is grey level 20 * i, with a 16 kHz AAC tone if ``sound_seconds``."""
    container = av.open(str(path), mode="w")
    video = container.add_stream("mpeg4", rate=fps)
    video.width, video.height = size
    video.pix_fmt = "yuv420p"
    sound = None
    if sound_seconds:
        sound = container.add_stream("aac", rate=RATE)
        sound.layout = "mono"
    for index in range(frames):
        image = np.full((size[1], size[0], 3), 20 * index, dtype=np.uint8)
        container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    container.mux(video.encode())
    if sound is not None:
        tone = sine(sound_seconds)
        for start in range(0, tone.size, 1024):
            frame = av.AudioFrame.from_ndarray(
                tone[None, start : start + 1024], format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts, frame.time_base = RATE, start, Fraction(1, RATE)
            container.mux(sound.encode(frame))
        container.mux(sound.encode())
    container.close()
    return path


def write_wav(path, samples: np.ndarray, rate: int):
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


def ask(*items, answer="Done."):
    """A one-exchange sample: a user message of ``items`` (strings are text) and an answer."""
    content = [{"type": "text", "text": item} if isinstance(item, str) else item for item in items]
    return {
        "conversation": [
            {"role": "user", "content": content},
            {"role": "assistant", "content": answer},
        ]
    }


def audio(value):
    return {"type": "audio", "audio": value}


def image(colour="red", size=(64, 48)):
    return {"type": "image", "image": Image.new("RGB", size, colour)}


def video(path):
    return {"type": "video", "video": str(path)}


def runs(batch):
    return decoded_label_runs(batch["labels"], tokenizer())


def ids_absent(batch, token: str) -> bool:
    return not (batch["input_ids"] == tokenizer().convert_tokens_to_ids(token)).any()


class TestQwen3OmniRegistry:
    def test_qwen2_5_omni_shares_the_class(self):
        """Qwen2.5-Omni's processor (same call interface) is registered to the same class."""
        assert Qwen3OmniCollator is registered()["Qwen2_5OmniProcessor"]
        assert Qwen3OmniCollator is collator_class_for(processor())


class TestQwen3OmniLabels:
    def test_audio(self):
        """An audio question trains exactly the answer and its <|im_end|>."""
        batch = Qwen3OmniCollator(processor=processor())(
            [ask(audio(sine(1.0)), "What?", answer="A tone.")]
        )
        assert [["A tone.<|im_end|>"]] == runs(batch)

    def test_image_and_multi_image(self):
        """One image and two images per sample: only the answers are trained."""
        samples = [
            ask(image(), "What?", answer="A red box."),
            ask(image("blue"), image("green", (40, 40)), "And these?", answer="Two boxes."),
        ]
        batch = Qwen3OmniCollator(processor=processor())(samples)
        assert [["A red box.<|im_end|>"], ["Two boxes.<|im_end|>"]] == runs(batch)
        assert [1, 2] == batch["n_images_per_sample"].tolist()

    def test_video_file(self, tmp_path):
        """A video file is decoded at 2 fps: 8 frames at 4 fps give 4 frames, 2 temporal patches."""
        batch = Qwen3OmniCollator(processor=processor())(
            [ask(video(write_clip(tmp_path / "clip.mp4")), "What?", answer="Grey.")]
        )
        assert [["Grey.<|im_end|>"]] == runs(batch)
        assert 2 == batch["video_grid_thw"][0, 0].item()
        assert [1] == batch["n_videos_per_sample"].tolist()

    def test_list_content_text_only(self):
        """Text-only list content renders a plain assistant turn."""
        batch = Qwen3OmniCollator(processor=processor())([ask("Hi", answer="Hello.")])
        assert [["Hello.<|im_end|>"]] == runs(batch)
        assert {"input_ids", "attention_mask", "labels"} == set(batch)

    def test_string_user_content_gets_an_empty_think_block(self):
        """Qwen3-Omni's template gives the answer to a plain-string question an empty <think> block, which is trained."""
        sample = {
            "conversation": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
            ]
        }
        batch = Qwen3OmniCollator(processor=processor())([sample])
        assert [["<think>\n\n</think>\n\nHello.<|im_end|>"]] == runs(batch)

    def test_mixed_batch(self, tmp_path):
        """Audio, image, video and text-only samples in one batch each train their own answer."""
        samples = [
            ask(audio(sine(0.5)), "Pitch?", answer="High."),
            ask("Hi", answer="Hello."),
            ask(image(), "Colour?", answer="Red."),
            ask(video(write_clip(tmp_path / "clip.mp4")), "Brightness?", answer="Rising."),
        ]
        batch = Qwen3OmniCollator(processor=processor())(samples)
        expected = [
            ["High.<|im_end|>"],
            ["Hello.<|im_end|>"],
            ["Red.<|im_end|>"],
            ["Rising.<|im_end|>"],
        ]
        assert expected == runs(batch)
        assert [0, 0, 1, 0] == batch["n_images_per_sample"].tolist()
        assert [0, 0, 0, 1] == batch["n_videos_per_sample"].tolist()
        assert 1 == batch["input_features"].shape[0]

    def test_multi_turn(self):
        """Both answers of a two-exchange conversation are trained, nothing else."""
        sample = {
            "conversation": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [audio(sine(1.0)), {"type": "text", "text": "What?"}]},
                {"role": "assistant", "content": "A tone."},
                {"role": "user", "content": [{"type": "text", "text": "Louder?"}]},
                {"role": "assistant", "content": "No."},
            ]
        }
        batch = Qwen3OmniCollator(processor=processor())([sample])
        assert [["A tone.<|im_end|>", "No.<|im_end|>"]] == runs(batch)

    @given(
        st.lists(
            st.tuples(prompt_texts(), answer_texts(leading_newline=False)), min_size=1, max_size=3
        )
    )
    def test_answers_are_the_runs(self, exchanges):
        """For generated list-content exchanges, the labelled runs are the answers plus <|im_end|>."""
        conversation = []
        for prompt, answer in exchanges:
            conversation.append({"role": "user", "content": [{"type": "text", "text": prompt}]})
            conversation.append({"role": "assistant", "content": answer})
        batch = Qwen3OmniCollator(processor=processor())([{"conversation": conversation}])
        expected = [answer + "<|im_end|>" for _, answer in exchanges]
        decoded = runs(batch)[0]
        assert len(expected) == len(decoded)
        for run, text in zip(decoded, expected, strict=True):
            assert chatml_run_matches(run, text), (run, text)


class TestQwen3OmniExactIds:
    def expected(self):
        prompt = (
            "<|im_start|>user\n<|audio_start|>"
            + "<|audio_pad|>" * TOKENS_PER_SECOND
            + "<|audio_end|>What is it?<|im_end|>\n<|im_start|>assistant\n"
        )
        prompt_ids, answer_ids, tail_ids = encode(prompt), encode("A tone.<|im_end|>"), encode("\n")
        ids = prompt_ids + answer_ids + tail_ids
        labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [IGNORE_INDEX] * len(tail_ids)
        return ids, labels

    def sample(self):
        return ask(audio(sine(1.0)), "What is it?", answer="A tone.")

    def test_unshifted(self):
        """One second of audio: 13 audio tokens between the markers; labels cover the answer only."""
        ids, labels = self.expected()
        batch = Qwen3OmniCollator(processor=processor(), shift_labels=False)([self.sample()])
        assert ids == batch["input_ids"][0].tolist()
        assert labels == batch["labels"][0].tolist()
        assert [100] == batch["feature_attention_mask"].sum(dim=1).tolist()

    def test_shifted(self):
        """By default labels[t] is the target of input_ids[t]."""
        ids, labels = self.expected()
        batch = Qwen3OmniCollator(processor=processor())([self.sample()])
        assert ids[:-1] == batch["input_ids"][0].tolist()
        assert labels[1:] == batch["labels"][0].tolist()


def short_and_long():
    return [ask("Hi", answer="Hello."), ask("A longer question here?", answer="Yes.")]


class TestQwen3OmniPadding:
    @pytest.mark.parametrize("tokenizer_side", ["left", "right"])
    def test_right_padding_whatever_the_tokenizer_says(self, tokenizer_side):
        """Rows are right-padded with intact labels, whichever side the tokenizer (or the processor) prefers."""
        batch = Qwen3OmniCollator(processor=processor(tokenizer_side))(short_and_long())
        mask = batch["attention_mask"]
        assert [1, 1] == mask[:, 0].tolist()
        assert 0 == mask[0, -1].item()
        assert [["Hello.<|im_end|>"], ["Yes.<|im_end|>"]] == runs(batch)

    def test_left_padding_on_request(self):
        """padding_side='left' is honoured."""
        batch = Qwen3OmniCollator(processor=processor(), padding_side="left")(short_and_long())
        assert [1, 1] == batch["attention_mask"][:, -1].tolist()
        assert 0 == batch["attention_mask"][0, 0].item()
        assert [["Hello.<|im_end|>"], ["Yes.<|im_end|>"]] == runs(batch)


class TestQwenOmniUtilsMedia:
    def conversation(self, *items):
        return ask(*items)["conversation"]

    def test_only_present_modalities(self):
        """Text-only gives nothing; audio only gives audio; an image only gives images."""
        media = QwenOmniUtilsMedia()
        assert {} == media.gather([self.conversation("Hi")])
        assert {"audio"} == set(media.gather([self.conversation(audio(sine(0.1)))]))
        assert {"images"} == set(media.gather([self.conversation(image())]))

    def test_rates_are_converted_to_16_khz(self):
        """An (array, 8000) pair and a datasets-style dict at 8 kHz come out twice as long."""
        half_second = sine(0.5, rate=8000)
        pair = audio((half_second, 8000))
        mapping = audio({"array": half_second, "sampling_rate": 8000})
        gathered = QwenOmniUtilsMedia().gather([self.conversation(pair, mapping)])
        assert [8000, 8000] == [len(waveform) for waveform in gathered["audio"]]

    def test_wav_file(self, tmp_path):
        """A 22.05 kHz wav file of 0.25 s is read and resampled to 4000 samples."""
        path = write_wav(tmp_path / "tone.wav", sine(0.25, rate=22050), 22050)
        gathered = QwenOmniUtilsMedia().gather([self.conversation(audio(str(path)))])
        assert 4000 == len(gathered["audio"][0])

    def test_missing_file_names_the_item(self, tmp_path):
        """A missing audio file raises MediaError naming sample, message and item."""
        sample = ask("Listen:", audio(str(tmp_path / "absent.wav")))
        collator = Qwen3OmniCollator(processor=processor())
        with pytest.raises(vc.MediaError, match="sample 1, message 0, item 1"):
            collator([ask("Hi"), sample])


class TestQwen3OmniAudioInVideo:
    def test_soundtrack_is_interleaved(self, tmp_path):
        """The video's 2 s soundtrack fills the video span; the standalone clip keeps its own span."""
        clip = write_clip(tmp_path / "tone.mp4", sound_seconds=2.0)
        samples = [
            ask(video(clip), "What?", answer="A tone."),
            ask(audio(sine(1.0)), "And this?", answer="Another."),
        ]
        collator = Qwen3OmniCollator(
            processor=processor(), use_audio_in_video=True, shift_labels=False
        )
        batch = collator(samples)
        assert [["A tone.<|im_end|>"], ["Another.<|im_end|>"]] == runs(batch)
        frames = batch["feature_attention_mask"].sum(dim=1).tolist()
        assert 2 == len(frames)
        assert 200 <= frames[0] <= 210  # the soundtrack (AAC adds a little priming)
        assert 100 == frames[1]
        ids = tokenizer().convert_tokens_to_ids
        row = batch["input_ids"][0].tolist()
        start, end = row.index(ids("<|vision_start|>")), row.index(ids("<|vision_end|>"))
        span = row[start + 1 : end]
        assert [ids("<|audio_start|>"), ids("<|audio_end|>")] == [span[0], span[-1]]
        assert audio_tokens(frames[0]) == span.count(ids("<|audio_pad|>"))
        assert batch["video_grid_thw"][0].prod().item() // 4 == span.count(ids("<|video_pad|>"))
        assert len(span) - 2 == span.count(ids("<|audio_pad|>")) + span.count(ids("<|video_pad|>"))

    def test_without_the_flag_the_soundtrack_is_ignored(self, tmp_path):
        """use_audio_in_video=False passes frames only; no audio features for the video."""
        clip = write_clip(tmp_path / "tone.mp4", sound_seconds=2.0)
        batch = Qwen3OmniCollator(processor=processor())(
            [ask(video(clip), "What?", answer="Grey.")]
        )
        assert "input_features" not in batch
        assert ids_absent(batch, "<|audio_pad|>")

    def test_silent_video_is_refused(self, tmp_path):
        """With use_audio_in_video a video without an audio track raises MediaError naming it."""
        clip = write_clip(tmp_path / "silent.mp4")
        collator = Qwen3OmniCollator(processor=processor(), use_audio_in_video=True)
        with pytest.raises(vc.MediaError, match=r"sample 1, message 0, item 0.*audio"):
            collator([ask("Hi"), ask(video(clip), "What?")])

    def test_frames_are_refused(self):
        """With use_audio_in_video a video given as frames has no soundtrack: MediaError."""
        frames = {"type": "video", "video": [Image.new("RGB", (32, 32))] * 4}
        collator = Qwen3OmniCollator(processor=processor(), use_audio_in_video=True)
        with pytest.raises(vc.MediaError, match="local file"):
            collator([ask(frames, "What?")])

    def test_flag_and_strategy_must_agree(self):
        """A media strategy whose use_audio_in_video differs from the collator's is refused."""
        with pytest.raises(vc.ConfigurationError, match="use_audio_in_video"):
            Qwen3OmniCollator(
                processor=processor(), media_strategy=QwenOmniUtilsMedia(use_audio_in_video=True)
            )
