"""NemotronOmniCollator: images, one video per sample, audio at the processor's rate.

Expected texts are written out literally; placeholder counts follow the
processor's arithmetic from the input sizes (worked out in comments), and
video frame choices from the frame count of the file that was written.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from PIL import Image

import vlm_collate as vc
from tests.helpers.chat import token_counts
from tests.helpers.media_files import write_video
from vlm_collate.errors import ConfigurationError, MediaError, SpecialTokenError
from vlm_collate.families.nemotron_omni import NemotronOmniCollator, merge_rows
from vlm_collate.labels import IGNORE_INDEX, ImStartMarker, SkipEmptyThink
from vlm_collate.registry import registered
from vlm_collate.testing import build_processor, decoded_label_runs

END = "<|im_end|>"
FPS = 4


@functools.cache
def processor():
    """A real NemotronH_Omni_Reasoning_V3Processor (shared: treat as read-only)."""
    return build_processor("nemotron_omni")


def collate(samples, **options):
    return NemotronOmniCollator(processor=processor(), **options)(samples)


def sine(rate: int = 16000, seconds: float = 0.5) -> np.ndarray:
    return np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate).astype(np.float32)


def audio_tokens(samples_at_16k: int) -> int:
    """Parakeet: 1 + n // 160 mel frames, then three stride-2 convolutions (kernel 3, pad 1)."""
    length = 1 + samples_at_16k // 160
    for _ in range(3):
        length = (length - 1) // 2 + 1
    return length


def chat(user, answer="Grey."):
    return {
        "conversation": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    }


def item(kind, value, **extra):
    return {"type": kind, kind: value, **extra}


def text(value):
    return {"type": "text", "text": value}


def grey_frames(count, size=(48, 32)):
    return [Image.new("RGB", size, (20 * index,) * 3) for index in range(count)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """An 11-frame mpeg4 file at 4 frames per second."""
    return str(write_video(tmp_path_factory.mktemp("video") / "grey.mp4", grey_frames(11), FPS))


def runs(batch):
    return decoded_label_runs(batch["labels"], processor().tokenizer)


def row_text(batch, row):
    ids = batch["input_ids"][row][batch["attention_mask"][row].bool()]
    return processor().tokenizer.decode(ids)


def count(batch, token):
    return token_counts(batch, processor().tokenizer, token)


class TestRegistry:
    def test_both_processor_names_are_registered(self):
        """The remote-code Nano processor and the transformers processor share the class."""
        names = {
            "NemotronH_Nano_Omni_Reasoning_V3Processor",
            "NemotronH_Omni_Reasoning_V3Processor",
        }
        assert {name: NemotronOmniCollator for name in names} == {
            name: registered()[name] for name in names
        }


class TestLabels:
    def test_every_modality_and_text_in_one_batch(self, clip):
        """Image, two images, video, audio and text-only rows each train their answer only."""
        red, blue = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (64, 64), "blue")
        samples = [
            chat([item("image", red), text("Colour?")], "Red."),
            chat([item("image", red), item("image", blue), text("Colours?")], "Red, blue."),
            chat([item("video", clip), text("What?")], "Grey."),
            chat([item("audio", (sine(8000), 8000)), text("Hear?")], "A tone."),
            chat("Hi", "Hello."),
        ]
        batch = collate(samples)
        expected = ["Red.", "Red, blue.", "Grey.", "A tone.", "Hello."]
        assert [[answer + END] for answer in expected] == runs(batch)

    def test_empty_think_block_is_not_trained(self):
        """The template's <think></think> opens the turn but is not in the labels."""
        batch = collate([chat("Hi", "Hello.")])
        assert "<|im_start|>assistant\n<think></think>Hello.<|im_end|>" in row_text(batch, 0)
        assert [["Hello." + END]] == runs(batch)

    def test_reasoning_is_trained(self):
        """An answer with its own reasoning block is trained whole."""
        batch = collate([chat("Two and two?", "<think>Add them.</think>Four.")])
        assert [["<think>Add them.</think>Four." + END]] == runs(batch)

    def test_multi_turn(self):
        """Each assistant turn trains its content and <|im_end|>."""
        sample = {
            "conversation": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [item("image", Image.new("RGB", (32, 32))), text("?")]},
                {"role": "assistant", "content": "Black."},
                {"role": "user", "content": "Sure?"},
                {"role": "assistant", "content": "Yes."},
            ]
        }
        assert [["Black." + END, "Yes." + END]] == runs(collate([sample]))

    def test_top_level_audio(self):
        """The seed's example['audio'] becomes an audio placeholder in the first user turn."""
        sample = {**chat("What is it?", "A tone."), "audio": (sine(), 16000)}
        batch = collate([sample])
        placeholder = "<so_start>" + "<so_embedding>" * audio_tokens(8000) + "<so_end>"
        assert "<|im_start|>user\n" + placeholder + "What is it?" + END in row_text(batch, 0)
        assert [["A tone." + END]] == runs(batch)


class TestPaddingSide:
    def test_left_padded_tokenizer(self):
        """With a left-padding tokenizer, rows are padded on the left and labels stay right."""
        left = build_processor("nemotron_omni", padding_side="left")
        samples = [chat("Hi", "Hello."), chat([item("audio", sine()), text("Hear?")], "A tone.")]
        batch = NemotronOmniCollator(processor=left)(samples)
        assert [["Hello." + END], ["A tone." + END]] == decoded_label_runs(
            batch["labels"], left.tokenizer
        )
        assert [0, 1] == batch["attention_mask"][:, 0].tolist()


class TestExactTokens:
    def test_one_text_sample(self):
        """Ids and unshifted labels of a text-only sample, from the literal rendered text."""
        tokenizer = processor().tokenizer
        prompt = "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        prompt += "<|im_start|>assistant\n<think></think>"
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        answer_ids = tokenizer.encode("Yo.", add_special_tokens=False)
        end_ids = tokenizer.encode(END + "\n", add_special_tokens=False)
        batch = collate([chat("Hi", "Yo.")], shift_labels=False)
        assert [prompt_ids + answer_ids + end_ids] == batch["input_ids"].tolist()
        expected = [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [end_ids[0], IGNORE_INDEX]
        assert [expected] == batch["labels"].tolist()


class TestImages:
    def test_patches_are_concatenated_with_their_grids(self):
        """Patch rows of every image are concatenated; image_grid_hw has one row per image.

        40 x 30 px in 16 px patches: 3 x 2 rounded up to even sides is 2 x 4 (8 patches,
        2 tokens after the 2 x 2 shuffle); 64 x 64 px is 4 x 4 (16 patches, 4 tokens).
        """
        samples = [
            chat([item("image", Image.new("RGB", (40, 30)))], "A."),
            chat([item("image", Image.new("RGB", (64, 64)))], "B."),
        ]
        batch = collate(samples)
        assert [[2, 4], [4, 4]] == batch["image_grid_hw"].tolist()
        assert (8 + 16, 3 * 16 * 16) == tuple(batch["pixel_values"].shape)
        assert [2, 4] == count(batch, "<image>")
        assert [1, 1] == batch["n_images_per_sample"].tolist()

    def test_pixels_are_bfloat16_by_default(self):
        """Pixels are cast to bfloat16 unless another pixel_dtype is asked for."""
        sample = chat([item("image", Image.new("RGB", (32, 32)))], "A.")
        assert [torch.bfloat16, torch.float32] == [
            collate([sample])["pixel_values"].dtype,
            collate([sample], pixel_dtype="float32")["pixel_values"].dtype,
        ]


def timestamps(batch) -> list[str]:
    """The 'sampled at' times the processor wrote into the first row, in order."""
    parts = row_text(batch, 0).split(" sampled at ")[1:]
    return [part.split(" seconds")[0] for part in parts]


class TestVideo:
    def test_file_keeps_an_even_number_of_frames_at_most_the_limit(self, clip):
        """11 frames, limit 8: frames round(linspace(0, 10, 8)) = 0 1 3 4 6 7 9 10, at 4 fps."""
        batch = collate([chat([item("video", clip), text("What?")])])
        expected = [f"{index / FPS:.2f}" for index in (0, 1, 3, 4, 6, 7, 9, 10)]
        assert expected == timestamps(batch)
        assert 8 // 2 == batch["pixel_values_videos"].shape[1]  # frames go in pairs
        assert [1] == batch["n_videos_per_sample"].tolist()

    @pytest.mark.parametrize(("limit", "frames"), [(4, (0, 3, 7, 10)), (5, (0, 3, 7, 10))])
    def test_limit_is_rounded_down_to_even(self, clip, limit, frames):
        """max_video_frames=4 keeps 4 frames; 5 keeps 4 too (an odd count is never used)."""
        batch = collate([chat([item("video", clip)])], max_video_frames=limit)
        assert [f"{index / FPS:.2f}" for index in frames] == timestamps(batch)

    def test_frame_list_with_metadata(self):
        """Frames given as a list are used as they are, timed by their metadata."""
        metadata = {"total_num_frames": 8, "fps": 4.0, "frames_indices": [0, 2, 4, 7]}
        batch = collate([chat([item("video", grey_frames(4), metadata=metadata), text("?")])])
        assert ["0.00", "0.50", "1.00", "1.75"] == timestamps(batch)
        assert [["Grey." + END]] == runs(batch)

    def test_frame_list_without_metadata_is_untimed(self):
        """Without metadata or fps the processor labels frames by number only (as the seed)."""
        batch = collate([chat([item("video", grey_frames(2))])])
        assert "Frame 1 and frame 2: <img>" in row_text(batch, 0)

    def test_second_video_is_refused(self, clip):
        """A sample with two videos raises MediaError at the second one."""
        samples = [chat("Hi"), chat([item("video", clip), text("and"), item("video", clip)])]
        with pytest.raises(MediaError, match="one video per sample") as caught:
            collate(samples)
        assert (1, 0, 2) == (
            caught.value.sample_index,
            caught.value.message_index,
            caught.value.item_index,
        )

    def test_limit_is_validated(self):
        """max_video_frames below 2 is a configuration error."""
        with pytest.raises(ConfigurationError, match="'max_video_frames'"):
            NemotronOmniCollator(processor=processor(), max_video_frames=1)


class TestAudio:
    def test_resampled_to_the_processor_rate(self):
        """An 8 kHz clip and a 16 kHz clip of the same length expand to the same count."""
        samples = [
            chat([item("audio", (sine(8000), 8000))], "A."),
            chat([item("audio", {"array": sine(16000, 0.3), "sampling_rate": 16000})], "B."),
        ]
        batch = collate(samples)
        assert [audio_tokens(8000), audio_tokens(4800)] == count(batch, "<so_embedding>")
        # Parakeet: centred frames, 1 + n // 160 of them; the mask covers n // 160.
        assert [8000 // 160, 4800 // 160] == batch["input_features_mask"].sum(1).tolist()
        assert (2, 1 + 8000 // 160, 128) == tuple(batch["input_features"].shape)

    def test_bad_audio_names_the_sample(self):
        """An unusable audio item raises MediaError naming sample, message and item."""
        samples = [chat("Hi"), chat([text("Listen:"), item("audio", np.zeros((50, 50)))])]
        with pytest.raises(MediaError, match="mono") as caught:
            collate(samples)
        assert (1, 0, 1) == (
            caught.value.sample_index,
            caught.value.message_index,
            caught.value.item_index,
        )

    def test_placeholder_text_in_a_message_is_refused(self):
        """Message text holding '<so_embedding>' is a control token (special_tokens_in_text)."""
        with pytest.raises(SpecialTokenError):
            collate([chat("Hear <so_embedding> this", "No.")])


class TestMergeRows:
    def test_token_rows_are_padded_on_the_tokenizer_side(self):
        """Rows of different lengths are padded with the pad id, mask 0."""
        tokenizer = processor().tokenizer
        rows = [
            {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.ones(1, 3)},
            {"input_ids": torch.tensor([[8]]), "attention_mask": torch.ones(1, 1)},
        ]
        batch = merge_rows(rows, tokenizer)
        pad = tokenizer.pad_token_id
        assert [[5, 6, 7], [8, pad, pad]] == batch["input_ids"].tolist()
        assert [[1, 1, 1], [1, 0, 0]] == batch["attention_mask"].tolist()

    def test_tiles_of_one_shape_are_stacked_with_flags(self):
        """[n, C, H, W] tiles (remote code) are split per tile and stacked; image_flags counts them."""
        rows = [
            {"input_ids": torch.tensor([[1]]), "pixel_values": torch.zeros(2, 3, 8, 8)},
            {"input_ids": torch.tensor([[1]]), "pixel_values": torch.ones(1, 3, 8, 8)},
        ]
        batch = merge_rows(rows, processor().tokenizer)
        assert (3, 3, 8, 8) == tuple(batch["pixel_values"].shape)
        assert [[1], [1], [1]] == batch["image_flags"].tolist()

    def test_tiles_of_different_shapes_stay_a_list(self):
        """Tiles whose sizes differ are kept as a list, in order."""
        rows = [
            {"input_ids": torch.tensor([[1]]), "pixel_values": torch.zeros(1, 3, 8, 8)},
            {"input_ids": torch.tensor([[1]]), "pixel_values": torch.zeros(1, 3, 8, 16)},
        ]
        pixels = merge_rows(rows, processor().tokenizer)["pixel_values"]
        assert [(3, 8, 8), (3, 8, 16)] == [tuple(tile.shape) for tile in pixels]

    def test_audio_features_are_padded_along_time(self):
        """Feature tensors and masks are padded to the longest clip and concatenated."""
        rows = [
            {
                "input_ids": torch.tensor([[1]]),
                "input_features": torch.ones(1, 3, 2),
                "input_features_mask": torch.ones(1, 3, dtype=torch.bool),
            },
            {
                "input_ids": torch.tensor([[1]]),
                "input_features": torch.ones(1, 1, 2),
                "input_features_mask": torch.ones(1, 1, dtype=torch.bool),
            },
        ]
        batch = merge_rows(rows, processor().tokenizer)
        assert (2, 3, 2) == tuple(batch["input_features"].shape)
        assert [3, 1] == batch["input_features_mask"].sum(dim=1).tolist()
        assert [6.0, 2.0] == batch["input_features"].sum(dim=(1, 2)).tolist()  # zeros padded

    def test_raw_sound_clips_become_features(self):
        """Remote-code sound_clips are turned into sound_features with a mask per clip."""
        rows = [
            {"input_ids": torch.tensor([[1]]), "sound_clips": [sine(16000, 0.5)]},
            {"input_ids": torch.tensor([[1]])},
            {"input_ids": torch.tensor([[1]]), "sound_clips": [sine(16000, 0.25)]},
        ]
        batch = merge_rows(rows, processor().tokenizer, processor=processor())
        assert (2, 1 + 8000 // 160, 128) == tuple(batch["sound_features"].shape)
        assert [8000 // 160, 4000 // 160] == batch["sound_attention_mask"].sum(1).tolist()


class TestPad:
    def test_media_masks_shaped_like_tokens_are_not_shifted(self):
        """input_features_mask keeps its width even when it has the shape of input_ids."""
        batch = {
            "input_ids": torch.ones(1, 5, dtype=torch.long),
            "attention_mask": torch.ones(1, 5, dtype=torch.long),
            "labels": torch.ones(1, 5, dtype=torch.long),
            "input_features_mask": torch.ones(1, 5, dtype=torch.bool),
        }
        padded = NemotronOmniCollator(processor=processor()).pad(batch, [])
        assert [4, 4, 5] == [
            padded["input_ids"].shape[1],
            padded["labels"].shape[1],
            padded["input_features_mask"].shape[1],
        ]


class TestSkipEmptyThink:
    def test_vocabulary_without_think_tokens_changes_nothing(self, mistral_processor):
        """Without <think> / </think> in the vocabulary the inner labels are returned as they are."""
        ids = torch.tensor([[1, 2, 3, 4]])
        inner = ImStartMarker(start_token="<s>", role="x", end_token="</s>")
        strategy = SkipEmptyThink(inner=vc.FirstOf(inner, vc.LegacyBPEMatch()))
        expected = vc.FirstOf(inner, vc.LegacyBPEMatch()).build(ids, [[]], mistral_processor)
        assert expected.tolist() == strategy.build(ids, [[]], mistral_processor).tolist()


@pytest.fixture(scope="module")
def seed():
    return pytest.importorskip(
        "nemo_automodel.components.datasets.vlm.collate_fns",
        reason="the seed comparison needs nemo-automodel: pip install --no-deps nemo-automodel==0.7.0 datasets",
    )


class TestSeedParity:
    def test_tokens_and_labels_match_the_seed(self, seed):
        """Text and image rows: input_ids, attention_mask and labels equal the seed's."""
        samples = [
            chat([item("image", Image.new("RGB", (40, 30), "red")), text("Colour?")], "Red."),
            chat("Hi", "Hello there."),
        ]
        expected = seed.nemotron_omni_collate_fn(samples, processor())
        actual = collate(samples)
        for key in ("input_ids", "attention_mask", "labels"):
            assert expected[key].tolist() == actual[key].tolist(), key

    def test_patch_rows_keep_their_grid(self, seed):
        """Unlike the seed, transformers' patch rows are concatenated and image_grid_hw is kept.

        The seed stacks each sample's 2-D patch tensor into a 3-D one and drops
        image_grid_hw, which transformers' NemotronH model needs.
        """
        samples = [chat([item("image", Image.new("RGB", (40, 30), "red"))], "Red.")]
        expected = seed.nemotron_omni_collate_fn(samples, processor())
        actual = collate(samples)
        assert [(1, 8, 768), None] == [
            tuple(expected["pixel_values"].shape),
            expected.get("image_grid_hw"),
        ]
        assert [(8, 768), [[2, 4]]] == [
            tuple(actual["pixel_values"].shape),
            actual["image_grid_hw"].tolist(),
        ]
