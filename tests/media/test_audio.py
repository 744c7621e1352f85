"""Audio: waveforms from every accepted form, resampled to the processor's rate.

Expected waveforms are computed from the formula that generated the input (a
sine at the target rate), never from the code under test.
"""

from __future__ import annotations

import math
import wave

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.media_files import write_video
from vlm_collate._prepare import prepare_sample
from vlm_collate.errors import ConfigurationError, MediaError
from vlm_collate.media import (
    AudioMedia,
    load_waveform,
    move_example_audio,
    processor_sampling_rate,
    resample,
)
from vlm_collate.testing import build_processor

EDGE = 200  # samples at each end where the filter sees the zero padding


def sine(rate: float, seconds: float = 0.25, frequency: float = 440.0) -> np.ndarray:
    return np.sin(2 * np.pi * frequency * np.arange(int(rate * seconds)) / rate)


def write_wav(path, samples: np.ndarray, rate: int, channels: int = 1):
    """A real 16-bit PCM WAV file holding ``samples`` (in [-1, 1)) on every channel."""
    pcm = np.round(samples * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.repeat(pcm[:, None], channels, axis=1).tobytes())
    return path


def interior_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual[EDGE:-EDGE] - expected[EDGE:-EDGE]).max())


class TestResample:
    @pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
    def test_tone_matches_the_tone_at_the_target_rate(self, rate):
        """A 440 Hz tone resampled to 16 kHz equals the same tone generated at 16 kHz."""
        actual = resample(sine(rate), rate, 16000)
        assert interior_error(actual, sine(16000)[: actual.size]) < 1e-3

    @pytest.mark.parametrize(("rate", "length"), [(8000, 2000), (44100, 11025), (22050, 5513)])
    def test_length_is_duration_times_rate(self, rate, length):
        """The output holds ceil(n * 16000 / rate) samples."""
        samples = np.zeros(length)
        assert math.ceil(length * 16000 / rate) == resample(samples, rate, 16000).size

    def test_same_rate_returns_the_samples(self):
        """Equal rates change nothing but the dtype."""
        samples = sine(16000)
        assert np.array_equal(samples.astype(np.float32), resample(samples, 16000, 16000))

    def test_constant_signal_keeps_its_level(self):
        """The filter has unit gain at DC, up and down."""
        for rate in (8000, 48000):
            actual = resample(np.ones(4000), rate, 16000)
            assert interior_error(actual, np.ones_like(actual)) < 1e-3

    def test_tone_above_the_new_nyquist_is_removed(self):
        """A 7 kHz tone does not alias into an 8 kHz recording."""
        actual = resample(sine(44100, frequency=7000), 44100, 8000)
        assert float(np.abs(actual[EDGE:-EDGE]).max()) < 0.01

    def test_output_is_float32(self):
        """Waveforms come back as float32, what feature extractors take."""
        assert np.float32 == resample(sine(8000), 8000, 16000).dtype


class TestLoadWaveform:
    def test_bare_array_is_at_the_target_rate(self):
        """An array without a rate is taken as is."""
        samples = sine(16000)
        assert np.allclose(samples, load_waveform(samples, sampling_rate=16000))

    @pytest.mark.parametrize(
        "form",
        [
            lambda samples: (samples, 8000),
            lambda samples: [samples, 8000],
            lambda samples: {"array": samples, "sampling_rate": 8000},
            lambda samples: (torch.from_numpy(samples), 8000),
        ],
        ids=["tuple", "list", "dict", "tensor"],
    )
    def test_forms_with_a_rate_are_resampled(self, form):
        """(array, rate) pairs, lists, datasets dicts and tensors are resampled to the target."""
        actual = load_waveform(form(sine(8000)), sampling_rate=16000)
        assert interior_error(actual, sine(16000)[: actual.size]) < 1e-3

    def test_pcm_integers_are_scaled(self):
        """int16 PCM maps full scale to [-1, 1)."""
        pcm = np.array([-32768, 0, 16384], dtype=np.int16)
        assert [-1.0, 0.0, 0.5] == load_waveform(pcm, sampling_rate=16000).tolist()

    def test_channels_are_averaged(self):
        """(samples, channels) becomes the mean of the channels."""
        stereo = np.stack([np.full(100, 0.2), np.full(100, 0.6)], axis=1)
        assert np.allclose(np.full(100, 0.4), load_waveform(stereo, sampling_rate=16000))

    @pytest.mark.parametrize("channels", [1, 2])
    def test_wav_file_is_decoded_and_resampled(self, tmp_path, channels):
        """A WAV file (mono or stereo, 44.1 kHz) is read with PyAV and resampled."""
        path = write_wav(tmp_path / "tone.wav", 0.5 * sine(44100), 44100, channels)
        actual = load_waveform(str(path), sampling_rate=16000)
        assert interior_error(actual, 0.5 * sine(16000)[: actual.size]) < 1e-3

    def test_datasets_dict_with_only_a_path(self, tmp_path):
        """A datasets dict without 'array' is read from its 'path'."""
        path = write_wav(tmp_path / "tone.wav", 0.5 * sine(16000), 16000)
        actual = load_waveform({"path": str(path)}, sampling_rate=16000)
        assert interior_error(actual, 0.5 * sine(16000)[: actual.size]) < 1e-3

    @pytest.mark.parametrize(
        ("value", "detail"),
        [
            (None, "got NoneType"),
            (3.5, "got float"),
            ({"samples": [0.0]}, "no 'array' or 'path' (keys: 'samples')"),
            (np.zeros(0), "has no samples"),
            (np.array([0.1, np.nan]), "NaN or infinite"),
            (np.zeros((40, 40)), "got shape (40, 40)"),
            ((np.zeros(10), 0), "sampling rate must be a positive number (got 0)"),
            (np.array(["a", "b"]), "floats or signed PCM integers"),
            ("/no/such/clip.wav", "audio file '/no/such/clip.wav' does not exist"),
        ],
    )
    def test_bad_values_name_their_place(self, value, detail):
        """Unusable audio raises MediaError saying where and what is wrong."""
        location = {"sample_index": 3, "message_index": 1, "item_index": 0}
        with pytest.raises(MediaError) as caught:
            load_waveform(value, sampling_rate=16000, location=location)
        assert (3, 1, 0) == (
            caught.value.sample_index,
            caught.value.message_index,
            caught.value.item_index,
        )
        assert str(caught.value).startswith("sample 3, message 1, item 0: ")
        assert detail in str(caught.value)

    def test_file_without_audio_stream(self, tmp_path):
        """A file PyAV opens but that holds no audio is refused."""
        path = write_video(tmp_path / "silent.mp4", [Image.new("RGB", (16, 16))] * 2)
        with pytest.raises(MediaError, match="has no audio stream"):
            load_waveform(str(path), sampling_rate=16000)


class TestAudioMedia:
    def test_audio_items_become_waveforms_in_order(self):
        """gather() returns one waveform per audio item, across samples, in order."""
        conversations = [
            [{"role": "user", "content": [{"type": "audio", "audio": (np.ones(80), 8000)}]}],
            [{"role": "user", "content": [{"type": "audio", "path": None, "audio": np.ones(5)}]}],
        ]
        audio = AudioMedia(sampling_rate=16000).gather(conversations)["audio"]
        assert [160, 5] == [waveform.size for waveform in audio]

    def test_no_audio_no_keyword(self):
        """Conversations without audio give the processor no audio argument."""
        conversations = [[{"role": "user", "content": "Hi"}]]
        assert {} == AudioMedia().gather(conversations)

    @pytest.mark.parametrize("rate", [0, -16000, 16000.0, True])
    def test_rate_is_validated(self, rate):
        """sampling_rate must be a positive int."""
        with pytest.raises(ConfigurationError, match="'sampling_rate' must be a positive int"):
            AudioMedia(sampling_rate=rate)


def prepared(example: dict, index: int = 0):
    return prepare_sample(example, index, max_image_pixels=10**8)


class TestMoveExampleAudio:
    def test_clip_becomes_the_first_item_of_the_first_user_message(self):
        """The top-level clip is inserted before the user's text, as a waveform."""
        example = {
            "conversation": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is it?"},
                {"role": "assistant", "content": "A tone."},
            ],
            "audio": (np.ones(100), 8000),
        }
        sample = prepared(example)
        move_example_audio([sample], sampling_rate=16000)
        content = sample.conversation[1]["content"]
        assert ["audio", "text"] == [item["type"] for item in content]
        assert 200 == content[0]["audio"].size
        assert {"type": "text", "text": "What is it?"} == content[1]
        assert "What is it?" == example["conversation"][1]["content"]  # the caller's copy

    def test_conversation_with_audio_items_is_left_alone(self):
        """A sample that already has audio items keeps them and ignores the top-level clip."""
        item = {"type": "audio", "audio": np.ones(10)}
        example = {"conversation": [{"role": "user", "content": [item]}], "audio": np.ones(99)}
        sample = prepared(example)
        move_example_audio([sample], sampling_rate=16000)
        assert [item] == sample.conversation[0]["content"]

    def test_bad_clip_names_the_sample(self):
        """An unusable top-level clip raises MediaError naming the sample and the key."""
        example = {"conversation": [{"role": "user", "content": "Hi"}], "audio": "nothing.wav"}
        with pytest.raises(
            MediaError,
            match=r"^sample 4: example\['audio'\]: audio file 'nothing.wav' does not exist",
        ) as caught:
            move_example_audio([prepared(example, index=4)], sampling_rate=16000)
        assert 4 == caught.value.sample_index


class TestProcessorSamplingRate:
    def test_rate_of_the_audio_processors(self):
        """Phi-4's audio processor and Nemotron's feature extractor both expect 16 kHz."""
        assert [16000, 16000] == [
            processor_sampling_rate(build_processor("phi4_mm")),
            processor_sampling_rate(build_processor("nemotron_omni")),
        ]

    def test_processor_attribute_wins(self):
        """Nemotron's own audio_sampling_rate is read before its feature extractor's."""
        processor = build_processor("nemotron_omni")
        processor.audio_sampling_rate = 24000
        assert 24000 == processor_sampling_rate(processor)

    def test_default_without_audio(self, qwen_processor):
        """A processor without audio falls back to 16 kHz."""
        assert 16000 == processor_sampling_rate(qwen_processor)
