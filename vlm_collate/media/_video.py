"""Reading video files with PyAV and choosing which frames to keep.

``transformers`` 5 reads video paths only through ``torchcodec``, and
``qwen-vl-utils`` through ``torchcodec``, ``decord`` or a ``torchvision``
reader that newer releases removed. Decoding here, with PyAV (a dependency),
works everywhere and keeps the real frame rate, which Qwen's temporal
position ids need.
"""

from __future__ import annotations

import math
import os
from typing import Any

import attrs
import numpy as np

from ..errors import MediaError

__all__ = ["DecodedVideo", "frame_indices", "read_video"]


@attrs.frozen
class DecodedVideo:
    """Frames of one video and where they came from.

    Args:
        frames: ``[T, H, W, 3]`` uint8 RGB frames.
        source_fps: Frame rate of the file.
        total_frames: Frames in the file.
        indices: Which of the file's frames ``frames`` holds.
    """

    frames: np.ndarray = attrs.field(eq=False, repr=lambda frames: f"<{frames.shape}>")
    source_fps: float
    total_frames: int
    indices: tuple[int, ...]

    @property
    def sample_fps(self) -> float:
        """Rate of the kept frames, in frames per second of video."""
        if len(self.indices) < 2 or self.total_frames <= 1:
            return self.source_fps
        duration = self.total_frames / self.source_fps
        return len(self.indices) / duration

    def metadata(self) -> Any:
        """The frames' metadata as ``transformers.video_utils.VideoMetadata``."""
        from transformers.video_utils import VideoMetadata

        height, width = self.frames.shape[1:3]
        return VideoMetadata(
            total_num_frames=self.total_frames,
            fps=self.source_fps,
            width=int(width),
            height=int(height),
            duration=self.total_frames / self.source_fps if self.source_fps else None,
            video_backend="pyav",
            frames_indices=np.asarray(self.indices),
        )


def frame_indices(
    total: int,
    source_fps: float,
    *,
    fps: float | None = None,
    nframes: int | None = None,
    max_frames: int | None = None,
    factor: int = 1,
) -> list[int]:
    """Evenly spaced frame indices.

    ``nframes`` wins over ``fps``; with neither, every frame is kept (as NeMo
    Automodel did). The count is a multiple of ``factor`` (Qwen needs 2) and at
    most ``max_frames``; short videos repeat their last frame to reach ``factor``.
    """
    if total <= 0:
        return []
    if nframes is not None:
        count = nframes
    elif fps is not None and source_fps > 0:
        count = math.floor(total / source_fps * fps)
    else:
        count = total
    if max_frames is not None:
        count = min(count, max_frames)
    count = max(factor, (max(count, 1) // factor) * factor)
    return [min(total - 1, round(position)) for position in np.linspace(0, total - 1, count)]


def read_video(
    path: str | os.PathLike[str],
    *,
    fps: float | None = None,
    nframes: int | None = None,
    max_frames: int | None = None,
    factor: int = 1,
) -> DecodedVideo:
    """Decode the frames of a video file that [`frame_indices`][vlm_collate.media.frame_indices]
    selects.

    Raises:
        MediaError: The file cannot be opened or holds no video frames.
    """
    choose = {"fps": fps, "nframes": nframes, "max_frames": max_frames, "factor": factor}
    expected, source_fps = _probe(path)
    # With a known frame count only the chosen frames are converted to arrays;
    # if the container's count was wrong, decode again keeping every frame.
    wanted = set(frame_indices(expected, source_fps, **choose)) if expected > 0 else None
    kept, total = _decode(path, wanted)
    indices = frame_indices(total, source_fps, **choose)
    if wanted is not None and not all(index in kept for index in indices):
        kept, total = _decode(path, None)
    if not kept:
        msg = f"video file {os.fspath(path)!r} has no decodable frames"
        raise MediaError(msg)
    frames = np.stack([kept[index] for index in indices])
    return DecodedVideo(
        frames=frames, source_fps=source_fps, total_frames=total, indices=tuple(indices)
    )


def _probe(path: str | os.PathLike[str]) -> tuple[int, float]:
    """Return the container's frame count (0 when unknown) and frame rate."""
    with _opened(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate or 0
        return int(stream.frames or 0), float(rate) if rate else 1.0


def _decode(
    path: str | os.PathLike[str], wanted: set[int] | None
) -> tuple[dict[int, np.ndarray], int]:
    kept: dict[int, np.ndarray] = {}
    total = 0
    with _opened(path) as container:
        try:
            for index, frame in enumerate(container.decode(container.streams.video[0])):
                total = index + 1
                if wanted is None or index in wanted:
                    kept[index] = frame.to_ndarray(format="rgb24")
        except Exception as exc:
            msg = f"cannot decode video file {os.fspath(path)!r}: {exc}"
            raise MediaError(msg) from exc
    return kept, total


class _opened:
    """``av.open`` whose failures become [`MediaError`][vlm_collate.MediaError]."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def __enter__(self) -> Any:
        import av

        try:
            self.container = av.open(self.path)
        except Exception as exc:
            msg = f"cannot read video file {self.path!r}: {exc}"
            raise MediaError(msg) from exc
        if not self.container.streams.video:
            self.container.close()
            msg = f"video file {self.path!r} has no video stream"
            raise MediaError(msg)
        return self.container

    def __exit__(self, *exc_info: Any) -> None:
        self.container.close()
