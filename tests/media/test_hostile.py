"""Hostile media under a memory cap and a deadline: bombs, truncation, frames, audio, options.

Each risky call runs in a forked child (:func:`tests.helpers.hostile.bounded`)
whose address space may grow by a few hundred MB only, so a regression fails
with an untyped error or a timeout here instead of exhausting the machine.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageFile

import vlm_collate as vc
from tests.helpers.hostile import bounded
from tests.helpers.media_files import (
    quadrants,
    write_png_claiming_size,
    write_truncated,
    write_video,
)
from vlm_collate.errors import MediaError, SampleTypeError
from vlm_collate.media import MediaAccess, load_image, load_waveform, read_video

LOCATION = {"sample_index": 1, "message_index": 0, "item_index": 0}


def item_sample(item: dict) -> dict:
    return {
        "conversation": [
            {"role": "user", "content": [item, {"type": "text", "text": "What?"}]},
            {"role": "assistant", "content": "A box."},
        ]
    }


def _png() -> bytes:
    buffer = io.BytesIO()
    quadrants(12, 10).save(buffer, format="PNG")
    return buffer.getvalue()


def grey(level: int, size: int = 16) -> Image.Image:
    return Image.new("RGB", (size, size), (level, level, level))


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """2,000 tiny frames whose grey level encodes the frame index modulo 16."""
    path = tmp_path_factory.mktemp("video") / "long.mp4"
    return write_video(path, [grey((index % 16) * 16) for index in range(2000)], fps=25)


class TestImageBombs:
    """Images whose headers claim huge sizes are refused before any pixel is decoded."""

    @pytest.fixture
    def bomb(self, tmp_path):
        return write_png_claiming_size(tmp_path / "bomb.png", 20000, 20000).read_bytes()

    @pytest.mark.parametrize("form", ["data_uri", "bytes", "mapping", "path"])
    def test_every_form_is_refused_from_the_header(self, bomb, tmp_path, form):
        """A 20000x20000 PNG header is a MediaError, quickly, with little memory, in every form."""
        (tmp_path / "bomb.png").write_bytes(bomb)
        value = {
            "data_uri": "data:image/png;base64," + base64.b64encode(bomb).decode(),
            "bytes": bomb,
            "mapping": {"bytes": bomb, "path": None},
            "path": str(tmp_path / "bomb.png"),
        }[form]
        outcome = bounded(lambda: load_image(value, location=LOCATION), extra_mb=256, timeout=20)
        assert ("MediaError", True) == (
            outcome.error,
            "max_image_pixels=89478485" in outcome.message,
        )

    def test_through_a_collator(self, bomb, qwen_processor):
        """A data-URI bomb in a sample is a MediaError naming the sample, message and item."""
        uri = "data:image/png;base64," + base64.b64encode(bomb).decode()
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        outcome = bounded(
            lambda: collator([item_sample({"type": "image", "image": uri})]), extra_mb=256
        )
        assert ("MediaError", True) == (
            outcome.error,
            outcome.message.startswith("sample 0, message 0, item 0"),
        )

    def test_raised_limit_decodes_past_pillow_guard_and_fails_typed(self, bomb):
        """With max_image_pixels=10**12 our reader opens it (Pillow's guard untouched); the
        allocation failure under the memory cap is a MediaError, not a bare MemoryError."""
        access = MediaAccess(max_image_pixels=10**12)
        outcome = bounded(
            lambda: (load_image(bomb, access=access, location=LOCATION), Image.MAX_IMAGE_PIXELS),
            extra_mb=256,
        )
        assert ("MediaError", True) == (outcome.error, outcome.typed)
        assert 89_478_485 == Image.MAX_IMAGE_PIXELS


class TestTruncatedImages:
    """A truncated file is a MediaError, never a grey-filled image."""

    @pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
    @pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
    def test_truncated(self, tmp_path, image_format, keep):
        """A cut JPEG or PNG is a MediaError."""
        path = write_truncated(tmp_path / f"cut.{image_format.lower()}", image_format, keep)
        with pytest.raises(MediaError):
            load_image(str(path), location=LOCATION)

    @pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
    def test_truncated_even_when_pillow_is_told_to_accept_it(
        self, tmp_path, monkeypatch, image_format
    ):
        """With LOAD_TRUNCATED_IMAGES=True set globally, a cut file is still refused, and the
        global is back to True afterwards."""
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
        path = write_truncated(tmp_path / f"cut.{image_format.lower()}", image_format, 0.5)
        with pytest.raises(MediaError):
            load_image(path.read_bytes(), location=LOCATION)
        assert True == ImageFile.LOAD_TRUNCATED_IMAGES  # noqa: E712

    def test_truncated_lazy_pil_image(self, tmp_path, monkeypatch):
        """A lazily opened truncated PIL image is refused too, whatever the global says."""
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
        path = write_truncated(tmp_path / "cut.png", "PNG", 0.5)
        lazy = Image.open(path)
        with pytest.raises(MediaError):
            load_image(lazy, location=LOCATION)

    def test_complete_image_is_read_with_the_global_set(self, tmp_path, monkeypatch):
        """A whole file still decodes when LOAD_TRUNCATED_IMAGES is True."""
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
        buffer = io.BytesIO()
        quadrants(12, 10).save(buffer, format="JPEG")
        assert (12, 10) == load_image(buffer.getvalue(), location=LOCATION).size

    def test_no_import_leaves_truncated_loading_on(self):
        """After importing vlm_collate, transformers, qwen_vl_utils and qwen_omni_utils (and
        collating), Pillow's truncated loading is still off and its bomb guard unchanged."""
        import qwen_omni_utils  # noqa: F401
        import qwen_vl_utils  # noqa: F401
        import transformers  # noqa: F401

        import vlm_collate.tools.cli  # noqa: F401

        load_image(_png(), location=LOCATION)
        assert (False, 89_478_485) == (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)


class TestMultiFrameImages:
    """Animated and multi-page images: the first frame, and a warning in the report."""

    @pytest.mark.parametrize("image_format", ["GIF", "PNG", "TIFF"])
    def test_first_frame_and_report(self, qwen_processor, image_format):
        """The collate report names the multi-frame image; the image used is its first frame."""
        frames = [Image.new("RGB", (28, 28), colour) for colour in ("red", "blue", "green")]
        buffer = io.BytesIO()
        frames[0].save(buffer, format=image_format, save_all=True, append_images=frames[1:])
        data = buffer.getvalue()
        first = load_image(data, location=LOCATION)
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        collator([item_sample({"type": "image", "image": data})])
        reasons = [(w.index, w.reason) for w in collator.last_report.warnings]
        assert ((255, 0, 0), [(0, "multi_frame_image")]) == (first.getpixel((3, 3)), reasons)


class TestVideoBounds:
    """Videos: frames and frame size bounded from the header; decoding stops at the bound."""

    def test_every_frame_is_sampled_down_to_the_limit(self, long_video):
        """2,000 frames with no choice keep max_video_frames evenly spaced frames."""
        access = MediaAccess(max_video_frames=16)
        outcome = bounded(lambda: read_video(long_video, access=access).indices, extra_mb=256)
        expected = [round(position) for position in np.linspace(0, 1999, 16)]
        assert (None, expected) == (outcome.error, list(outcome.value))

    def test_kept_frames_are_the_chosen_ones(self, long_video):
        """The frames kept are the frames at the chosen indices (grey level = index % 16)."""
        decoded = read_video(long_video, access=MediaAccess(max_video_frames=8))
        levels = [round(float(frame[8, 8, 0]) / 16) for frame in decoded.frames]
        assert [index % 16 for index in decoded.indices] == levels

    def test_refuse_policy(self, long_video):
        """video_over_limit='refuse' refuses a video over max_video_frames."""
        access = MediaAccess(max_video_frames=16, video_over_limit="refuse")
        with pytest.raises(MediaError, match="max_video_frames=16"):
            read_video(long_video, access=access, location=LOCATION)

    def test_frame_size_from_the_header(self, long_video):
        """Frames over max_video_pixels are refused from the stream header."""
        access = MediaAccess(max_video_pixels=100)
        with pytest.raises(MediaError, match="max_video_pixels=100"):
            read_video(long_video, access=access, location=LOCATION)

    def test_few_frames_of_a_long_video(self, long_video):
        """nframes=4 of 2,000 frames keeps 4 frames; the length comes from the header."""
        decoded = read_video(long_video, nframes=4, access=MediaAccess())
        assert (4, 2000) == (len(decoded.frames), decoded.total_frames)

    def test_default_collator_keeps_the_default_limit(self, long_video, qwen_processor):
        """Through a collator, a 2,000-frame video keeps at most 256 frames, in bounded memory."""
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        sample = item_sample({"type": "video", "video": str(long_video)})
        outcome = bounded(
            lambda: int(collator([sample])["video_grid_thw"][0][0]), extra_mb=1024, timeout=60
        )
        assert (None, 128) == (outcome.error, outcome.value)  # 256 frames, 2 per temporal patch

    @pytest.mark.parametrize(
        ("options", "error"),
        [
            ({"fps": "2"}, SampleTypeError),
            ({"fps": float("nan")}, MediaError),
            ({"fps": float("inf")}, MediaError),
            ({"fps": 1e9}, MediaError),
            ({"nframes": 1e9}, SampleTypeError),
            ({"nframes": "8"}, SampleTypeError),
            ({"nframes": -2}, MediaError),
            ({"max_frames": float("inf")}, SampleTypeError),
            ({"min_pixels": "x"}, SampleTypeError),
            ({"max_pixels": 1e9}, SampleTypeError),
            ({"max_pixels": 10**12}, MediaError),
            ({"resized_height": 10**6, "resized_width": 10**6}, MediaError),
        ],
    )
    def test_bad_item_options_are_typed(self, qwen_processor, long_video, options, error):
        """Per-item frame and size options of the wrong type or range are typed errors."""
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        sample = item_sample({"type": "video", "video": str(long_video), **options})
        with pytest.raises(error) as caught:
            collator([sample])
        assert (0, 0, 0) == (
            caught.value.sample_index,
            caught.value.message_index,
            caught.value.item_index,
        )

    def test_frame_list_over_the_limit(self, qwen_processor):
        """A video given as more frames than max_video_frames is refused."""
        collator = vc.Qwen25VLCollator(
            processor=qwen_processor, media_access={"max_video_frames": 4}
        )
        sample = item_sample({"type": "video", "video": [grey(0, 28)] * 6})
        with pytest.raises(MediaError, match="max_video_frames=4"):
            collator([sample])


class TestAudioBounds:
    """Audio: rates, samples, dtype, rank, channels and duration are checked."""

    @pytest.mark.parametrize(
        ("value", "error", "detail"),
        [
            ((np.zeros(100), 1e12), MediaError, "at most 768000"),
            ((np.zeros(100), float("inf")), MediaError, "finite"),
            ((np.zeros(100), float("nan")), MediaError, "finite"),
            ((np.zeros(100), -16000), MediaError, "positive"),
            ({"array": np.zeros(100), "sampling_rate": "16000"}, SampleTypeError, "a number"),
            (np.array([0.0, np.inf]), MediaError, "NaN or infinite"),
            (np.zeros(100, dtype=np.complex64), MediaError, "floats or signed PCM"),
            (np.zeros(100, dtype=bool), MediaError, "floats or signed PCM"),
            (np.zeros((2, 2, 100)), MediaError, "got shape (2, 2, 100)"),
            ((np.zeros(1000), 1), MediaError, "max_audio_seconds=600"),
        ],
    )
    def test_bad_values(self, value, error, detail):
        """Each bad clip is a typed error naming its place and the problem."""
        outcome = bounded(
            lambda: load_waveform(value, sampling_rate=16000, location=LOCATION), extra_mb=256
        )
        assert (error.__name__, True) == (outcome.error, detail in outcome.message)

    def test_stereo_policy(self):
        """Stereo is averaged to mono by default and refused with audio_channels='refuse'."""
        stereo = np.stack([np.full(1600, 0.5), np.full(1600, -0.1)], axis=1).astype(np.float32)
        mono = load_waveform(stereo, sampling_rate=16000, location=LOCATION)
        refuse = MediaAccess(audio_channels="refuse")
        with pytest.raises(MediaError, match="audio_channels='refuse'"):
            load_waveform(stereo, sampling_rate=16000, location=LOCATION, access=refuse)
        assert pytest.approx(0.2, abs=1e-6) == float(mono[800])

    def test_duration_limit(self):
        """A clip longer than max_audio_seconds is refused."""
        access = MediaAccess(max_audio_seconds=1)
        with pytest.raises(MediaError, match="max_audio_seconds=1"):
            load_waveform((np.zeros(32000), 16000), sampling_rate=16000, access=access)

    def test_long_audio_file_stops_decoding(self, tmp_path):
        """A file longer than max_audio_seconds is refused (from its header or while decoding)."""
        import av

        path = tmp_path / "long.wav"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 8000), dtype=np.int16), format="s16", layout="mono"
            )
            frame.sample_rate = 8000
            for second in range(5):
                frame.pts = second * 8000
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        access = MediaAccess(max_audio_seconds=2)
        with pytest.raises(MediaError, match="max_audio_seconds=2"):
            load_waveform(str(path), sampling_rate=16000, access=access, location=LOCATION)
