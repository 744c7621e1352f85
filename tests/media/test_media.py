"""Media strategies, video decoding and media placeholders, on real files."""

from __future__ import annotations

import itertools

import av
import numpy as np
import pytest
import torch
from PIL import Image

import vlm_collate as vc
from vlm_collate.media import frame_indices, media_token_ids, read_video
from vlm_collate.testing import decoded_label_runs


def write_video(path, frames: int = 8, fps: int = 4, size=(64, 48)):
    """Write a real mpeg4 file whose frame i is uniformly grey at level 20 * i."""
    container = av.open(str(path), mode="w")
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    for index in range(frames):
        image = np.full((size[1], size[0], 3), 20 * index, dtype=np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def video_sample(video, answer="Grey."):
    return {
        "conversation": [
            {
                "role": "user",
                "content": [{"type": "video", "video": video}, {"type": "text", "text": "What?"}],
            },
            {"role": "assistant", "content": answer},
        ]
    }


class TestFrameIndices:
    def test_all_frames_by_default(self):
        """Without fps or nframes every frame is kept (the seed's behaviour)."""
        assert list(range(10)) == frame_indices(10, 30.0)

    def test_fps_sampling(self):
        """Sampling 2 fps from 4 fps keeps half the frames, evenly spread."""
        assert [0, 2, 5, 7] == frame_indices(8, 4.0, fps=2.0)

    def test_factor_rounds_down_and_short_videos_repeat(self):
        """Counts are multiples of the factor; a one-frame video repeats its frame."""
        assert 4 == len(frame_indices(5, 1.0, factor=2))
        assert [0, 0] == frame_indices(1, 1.0, factor=2)

    def test_max_frames_caps(self):
        """max_frames bounds the count."""
        assert 3 == len(frame_indices(100, 25.0, max_frames=3))


class TestReadVideo:
    def test_decodes_real_file_with_rate(self, tmp_path):
        """PyAV gives every frame, the file's rate, and frames in order."""
        decoded = read_video(write_video(tmp_path / "clip.mp4"))
        assert (8, 48, 64, 3) == decoded.frames.shape
        assert 4.0 == decoded.source_fps
        means = decoded.frames.reshape(8, -1).mean(axis=1)
        assert all(later > earlier for earlier, later in itertools.pairwise(means))

    def test_not_a_video_is_a_media_error(self, tmp_path):
        """A file that is not a video raises MediaError naming it."""
        bogus = tmp_path / "bogus.mp4"
        bogus.write_bytes(b"definitely not a video")
        with pytest.raises(vc.MediaError, match="bogus.mp4"):
            read_video(bogus)


class TestVideoThroughCollators:
    @pytest.mark.parametrize("collator_class", [vc.Qwen25VLCollator, vc.DefaultCollator])
    def test_video_file(self, qwen_processor, tmp_path, collator_class):
        """A video file gives T/2 temporal patches and seconds-per-patch from the real rate."""
        clip = write_video(tmp_path / "clip.mp4", frames=8, fps=4)
        batch = collator_class(processor=qwen_processor)([video_sample(str(clip))])
        temporal_patch = qwen_processor.video_processor.temporal_patch_size
        assert 8 // temporal_patch == int(batch["video_grid_thw"][0, 0])
        assert pytest.approx(temporal_patch / 4.0) == float(batch["second_per_grid_ts"][0])
        assert [1] == batch["n_videos_per_sample"].tolist()
        assert [["Grey.<|im_end|>"]] == decoded_label_runs(
            batch["labels"], qwen_processor.tokenizer
        )

    def test_frame_list_with_fps(self, qwen_processor):
        """Frames given as PIL images use the item's fps for temporal positions."""
        frames = [Image.new("RGB", (56, 56), (10 * i, 0, 0)) for i in range(4)]
        sample = video_sample(frames)
        sample["conversation"][0]["content"][0]["fps"] = 1.0
        batch = vc.Qwen25VLCollator(processor=qwen_processor)([sample])
        assert 2 == int(batch["video_grid_thw"][0, 0])
        assert pytest.approx(2.0) == float(batch["second_per_grid_ts"][0])

    def test_qwen_vl_utils_samples_two_fps(self, qwen_processor, tmp_path):
        """QwenVLUtilsMedia samples files at 2 fps: 8 frames at 4 fps become 4 frames."""
        clip = write_video(tmp_path / "clip.mp4", frames=8, fps=4)
        collator = vc.Qwen25VLCollator(
            processor=qwen_processor, media_strategy=vc.QwenVLUtilsMedia()
        )
        batch = collator([video_sample(f"file://{clip}")])
        assert 4 // qwen_processor.video_processor.temporal_patch_size == int(
            batch["video_grid_thw"][0, 0]
        )

    def test_missing_video_names_the_sample(self, qwen_processor, tmp_path):
        """A missing video file is a MediaError for the caller's sample index."""
        samples = [
            video_sample(str(write_video(tmp_path / "ok.mp4"))),
            video_sample(str(tmp_path / "gone.mp4")),
        ]
        with pytest.raises(vc.MediaError, match=r"sample 1, message 0, item 0: .*gone\.mp4"):
            vc.Qwen25VLCollator(processor=qwen_processor)(samples)

    def test_corrupt_video_names_the_sample(self, qwen_processor, tmp_path):
        """A file that cannot be decoded is reported with the caller's sample index."""
        good = write_video(tmp_path / "ok.mp4")
        broken = tmp_path / "broken.mp4"
        broken.write_bytes(b"\x00" * 64)
        with pytest.raises(vc.MediaError, match="sample 1"):
            vc.Qwen25VLCollator(processor=qwen_processor)(
                [video_sample(str(good)), video_sample(str(broken))]
            )


class TestQwenVLUtilsImages:
    def test_paths_and_file_urls(self, qwen_processor, tmp_path):
        """Image paths and file:// URLs are read; counts and labels are right."""
        Image.new("RGB", (80, 60), (0, 128, 0)).save(tmp_path / "green.png")
        sample = {
            "conversation": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": str(tmp_path / "green.png")},
                        {"type": "image", "image": f"file://{tmp_path / 'green.png'}"},
                        {"type": "text", "text": "Colours?"},
                    ],
                },
                {"role": "assistant", "content": "Green twice."},
            ]
        }
        collator = vc.Qwen25VLCollator(
            processor=qwen_processor, media_strategy=vc.QwenVLUtilsMedia()
        )
        batch = collator([sample])
        assert [2] == batch["n_images_per_sample"].tolist()
        assert 2 == batch["image_grid_thw"].shape[0]
        assert [["Green twice.<|im_end|>"]] == decoded_label_runs(
            batch["labels"], qwen_processor.tokenizer
        )


class TestFinalize:
    def test_pixel_dtype_and_counts(self, qwen_processor):
        """pixel_dtype casts pixels; media counts have one entry per row, zeros for text-only."""
        image = Image.new("RGB", (56, 56), (1, 2, 3))
        samples = [
            {
                "conversation": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Yo"},
                ]
            },
            {
                "conversation": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "image": image},
                            {"type": "text", "text": "?"},
                        ],
                    },
                    {"role": "assistant", "content": "Dot"},
                ]
            },
        ]
        batch = vc.Qwen25VLCollator(processor=qwen_processor, pixel_dtype="float16")(samples)
        assert torch.float16 == batch["pixel_values"].dtype
        assert [0, 1] == batch["n_images_per_sample"].tolist()

    def test_num_patches_for_five_dim_pixels(self, mistral_processor):
        """LLaVA-NeXT's 5-D pixels come with num_patches = image tokens per row."""
        image = Image.new("RGB", (64, 48), (9, 9, 9))
        sample = {
            "conversation": [
                {
                    "role": "user",
                    "content": [{"type": "image", "image": image}, {"type": "text", "text": "?"}],
                },
                {"role": "assistant", "content": "Dark"},
            ]
        }
        batch = vc.DefaultCollator(processor=mistral_processor)([sample])
        assert 5 == batch["pixel_values"].dim()
        image_id = mistral_processor.tokenizer.convert_tokens_to_ids("<image>")
        assert (batch["input_ids"] == image_id).sum(dim=1).tolist() == batch["num_patches"].tolist()


class TestMediaTokenIds:
    def test_qwen_placeholders(self, qwen_processor):
        """Qwen's image, video and vision boundary tokens are media tokens."""
        tokenizer = qwen_processor.tokenizer
        expected = set(
            tokenizer.convert_tokens_to_ids(
                ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
            )
        )
        assert expected <= media_token_ids(qwen_processor)
        assert tokenizer.convert_tokens_to_ids("<|im_end|>") not in media_token_ids(qwen_processor)

    def test_llava_placeholder(self, mistral_processor):
        """LLaVA's <image> is a media token."""
        assert mistral_processor.tokenizer.convert_tokens_to_ids("<image>") in media_token_ids(
            mistral_processor
        )


class TestFakeImages:
    def test_injected_fake_hides_vision_tokens_only_in_its_row(self, qwen_processor):
        """A sample marked _injected_fake has attention 0 on its vision tokens; others keep theirs."""

        def sample(fake):
            image = Image.new("RGB", (56, 56), (5, 5, 5))
            example = {
                "conversation": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "image": image},
                            {"type": "text", "text": "Hi"},
                        ],
                    },
                    {"role": "assistant", "content": "Yo"},
                ]
            }
            return {**example, "_injected_fake": True} if fake else example

        collator = vc.Qwen25VLCollator(processor=qwen_processor, trusted_keys=["_injected_fake"])
        batch = collator([sample(True), sample(False)])
        tokenizer = qwen_processor.tokenizer
        vision = torch.tensor(
            tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"])
        )
        placeholders = torch.isin(batch["input_ids"], vision)
        assert (batch["attention_mask"][0][placeholders[0]] == 0).all()
        assert (batch["attention_mask"][1][placeholders[1]] == 1).all()
        assert (batch["attention_mask"][0][~placeholders[0]] == 1).all()


class TestUnsupportedModalities:
    def test_video_for_a_processor_without_video_support(self, mistral_processor, tmp_path):
        """A video sent to a processor that cannot take videos is refused, not silently dropped."""
        clip = write_video(tmp_path / "clip.mp4")
        with pytest.raises(
            vc.MediaError,
            match=r"sample 0, message 0, item 0: LlavaNextProcessor cannot take video",
        ):
            vc.DefaultCollator(processor=mistral_processor)([video_sample(str(clip))])

    def test_audio_for_a_vision_processor(self, qwen_processor):
        """Audio for Qwen2.5-VL (no feature extractor) is refused with its place."""
        sample = {
            "conversation": [
                {
                    "role": "user",
                    "content": [
                        {"type": "audio", "audio": np.zeros(1600)},
                        {"type": "text", "text": "?"},
                    ],
                },
                {"role": "assistant", "content": "Silence."},
            ]
        }
        with pytest.raises(vc.MediaError, match="cannot take audio"):
            vc.Qwen25VLCollator(processor=qwen_processor)([sample])

    def test_drop_policy_reports_the_sample(self, mistral_processor, tmp_path):
        """unsupported_media='drop' leaves the sample out and reports why."""
        clip = write_video(tmp_path / "clip.mp4")
        text_only = {
            "conversation": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
            ]
        }
        collator = vc.DefaultCollator(processor=mistral_processor, unsupported_media="drop")
        batch = collator([video_sample(str(clip)), text_only])
        assert [1] == collator.last_report.kept
        assert [(0, "unsupported_media")] == [
            (d.index, d.reason) for d in collator.last_report.dropped
        ]
        assert [["Hello.</s>"]] == decoded_label_runs(batch["labels"], mistral_processor.tokenizer)
