"""Reading video files with PyAV and choosing which frames to keep.

``transformers`` 5 reads video paths only through ``torchcodec``, and
``qwen-vl-utils`` through ``torchcodec``, ``decord`` or a ``torchvision``
reader that newer releases removed. Decoding here, with PyAV (a dependency),
works everywhere and keeps the real frame rate, which Qwen's temporal
position ids need.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs
import numpy as np

from ..errors import MediaError, SampleTypeError
from ._access import MediaAccess, MediaSource, resolve_media

__all__ = [
    "DecodedVideo",
    "frame_indices",
    "kept_count",
    "read_video",
    "read_video_item",
    "video_options",
]

# Per-item frame-rate bound: far above any real video, and small enough that
# fps * duration cannot overflow the frame arithmetic.
_MAX_FPS = 1000.0
# Wanted frames further apart than this (on average) are reached by seeking.
_SEEK_SPACING = 24


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
            # Video processors index the frames with these as an array; the
            # dataclass annotation says list[int].
            frames_indices=np.asarray(self.indices),  # type: ignore[arg-type]
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

    ``nframes`` wins over ``fps``; with neither, every frame is kept (as
    NeMo Automodel did). The count is a multiple of ``factor`` (Qwen needs 2) and at
    most ``max_frames``; short videos repeat their last frame to reach ``factor``.
    """
    count = kept_count(
        total, source_fps, fps=fps, nframes=nframes, max_frames=max_frames, factor=factor
    )
    if count == 0:
        return []
    return [min(total - 1, round(position)) for position in np.linspace(0, total - 1, count)]


def kept_count(
    total: int,
    source_fps: float,
    *,
    fps: float | None = None,
    nframes: int | None = None,
    max_frames: int | None = None,
    factor: int = 1,
) -> int:
    """How many indices [`frame_indices`][vlm_collate.media.frame_indices] returns, computed
    without building them."""
    if total <= 0:
        return 0
    if nframes is not None:
        count = nframes
    elif fps is not None and source_fps > 0:
        count = math.floor(total / source_fps * fps)
    else:
        count = total
    if max_frames is not None:
        count = min(count, max_frames)
    return max(factor, (max(count, 1) // factor) * factor)


def video_options(
    item: Mapping[str, Any],
    location: Mapping[str, int | None],
    *,
    fps: float | None = None,
    max_frames: int | None = None,
) -> dict[str, Any]:
    """The item's ``fps``, ``nframes`` and ``max_frames``, checked, over the given defaults.

    Raises:
        SampleTypeError: One is not a number (``fps``) or not an int (the counts).
        MediaError: One is not finite, not positive, or ``fps`` is over 1000.
    """
    where = dict(location)
    chosen = {"fps": fps, "nframes": None, "max_frames": max_frames}
    for key in ("nframes", "max_frames"):
        value = item.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            msg = f"'{key}' must be a positive int (got {value!r})"
            raise SampleTypeError(msg, **where)
        if value <= 0:
            msg = f"'{key}' must be a positive int (got {value!r})"
            raise MediaError(msg, **where)
        chosen[key] = int(value)
    value = item.get("fps")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            msg = f"'fps' must be a number of frames per second (got {value!r})"
            raise SampleTypeError(msg, **where)
        if not (math.isfinite(float(value)) and 0 < float(value) <= _MAX_FPS):
            msg = f"'fps' must be a finite number in (0, {_MAX_FPS:g}] (got {value!r})"
            raise MediaError(msg, **where)
        chosen["fps"] = float(value)
    return chosen


def read_video_item(
    source: Any,
    item: Mapping[str, Any],
    location: Mapping[str, int | None],
    *,
    fps: float | None = None,
    max_frames: int | None = None,
    factor: int = 1,
    access: MediaAccess | None = None,
) -> DecodedVideo:
    """Decode one video item's file with the item's frame choices over the given defaults.

    Every error is a [`MediaError`][vlm_collate.MediaError] (or
    [`SampleTypeError`][vlm_collate.SampleTypeError]) naming
    ``location``, with the decoder's error chained.
    """
    options = video_options(item, location, fps=fps, max_frames=max_frames)
    return read_video(source, **options, factor=factor, access=access, location=location)


def read_video(
    source: Any,
    *,
    fps: float | None = None,
    nframes: int | None = None,
    max_frames: int | None = None,
    factor: int = 1,
    access: MediaAccess | None = None,
    location: Mapping[str, int | None] | None = None,
) -> DecodedVideo:
    """Decode the frames of a video that [`frame_indices`][vlm_collate.media.frame_indices]
    selects, within ``access``.

    ``source`` is anything [`resolve_media`][vlm_collate.media.resolve_media] takes (a
    path, a URL when allowed, bytes, a [`MediaSource`][vlm_collate.media.MediaSource]). The frame
    size is
    checked on the stream header before decoding, at most
    ``access.max_video_frames`` frames are kept (sampled down or refused, as
    ``access.video_over_limit`` says), and decoding stops after the last
    chosen frame.

    Raises:
        MediaError: The video is refused, cannot be opened or holds no video frames.
    """
    where = dict(location or {})
    checked = resolve_media(source, access, kind="video", location=where)
    choose = {"fps": fps, "nframes": nframes, "max_frames": max_frames, "factor": factor}
    with _opened(checked, where) as (container, stream):
        expected, source_fps = _probe(container, stream)
        wanted = _chosen(expected, source_fps, choose, checked, where) if expected > 0 else []
        kept = _decode(container, stream, wanted, checked, where) if wanted else {}
    total = expected
    if not wanted or not set(wanted) <= kept.keys():
        # The container's frame count is missing or wrong: count, then decode again.
        with _opened(checked, where) as (container, stream):
            total = _count(container, stream, checked, where)
        wanted = _chosen(total, source_fps, choose, checked, where)
        with _opened(checked, where) as (container, stream):
            kept = _decode(container, stream, wanted, checked, where)
    if not wanted or not set(wanted) <= kept.keys():
        msg = f"video {checked.name!r} has no decodable frames"
        raise MediaError(msg, **where)
    frames = _stacked(kept, wanted, checked, where)
    return DecodedVideo(
        frames=frames, source_fps=source_fps, total_frames=total, indices=tuple(wanted)
    )


def _stacked(
    kept: dict[int, np.ndarray], wanted: list[int], checked: MediaSource, where: dict[str, Any]
) -> np.ndarray:
    """``[T, H, W, 3]`` frames; each decoded frame is released once copied, so the peak
    stays near one copy of the kept frames."""
    frames = np.empty((len(wanted), *kept[wanted[0]].shape), dtype=np.uint8)
    for position, index in enumerate(wanted):
        if kept[index].shape != frames.shape[1:]:
            msg = f"video {checked.name!r} changes frame size mid-stream"
            raise MediaError(msg, **where)
        frames[position] = kept[index]
        if position + 1 == len(wanted) or wanted[position + 1] != index:
            del kept[index]
    return frames


def _probe(container: Any, stream: Any) -> tuple[int, float]:
    """Return the container's frame count (0 when unknown) and frame rate."""
    rate = stream.average_rate or stream.base_rate or 0
    return int(stream.frames or 0), float(rate) if rate else 1.0


def _chosen(
    total: int,
    source_fps: float,
    choose: dict[str, Any],
    checked: MediaSource,
    where: dict[str, Any],
) -> list[int]:
    """The frames to keep, within ``max_video_frames`` (sampled down or refused)."""
    count = kept_count(total, source_fps, **choose)
    limit = checked.access.max_video_frames
    if count <= limit:
        return frame_indices(total, source_fps, **choose)
    if checked.access.video_over_limit == "refuse":
        msg = (
            f"video {checked.name!r} would keep {count} frames, more than "
            f"max_video_frames={limit} (video_over_limit='refuse')"
        )
        raise MediaError(msg, **where)
    capped = min(limit, choose["max_frames"] or limit)
    return frame_indices(total, source_fps, **{**choose, "max_frames": capped})


def _check_frame(width: int, height: int, checked: MediaSource, where: dict[str, Any]) -> None:
    limit = checked.access.max_video_pixels
    if width <= 0 or height <= 0 or width * height > limit:
        msg = (
            f"video {checked.name!r} has {width}x{height} frames, outside 1..max_video_pixels="
            f"{limit} pixels per frame"
        )
        raise MediaError(msg, **where)


def _decode(
    container: Any,
    stream: Any,
    wanted: list[int],
    checked: MediaSource,
    where: dict[str, Any],
) -> dict[int, np.ndarray]:
    """The wanted frames as RGB arrays: by seeking when they lie far apart, else in one pass."""
    if _spacing(wanted) >= _SEEK_SPACING:
        kept = _decode_seeking(container, stream, wanted, checked, where)
        if kept is not None:
            return kept
        container.seek(0)
    return _decode_in_order(container, stream, wanted, checked, where)


def _spacing(wanted: list[int]) -> float:
    distinct = sorted(set(wanted))
    if len(distinct) < 2:
        return 0.0
    return (distinct[-1] - distinct[0]) / (len(distinct) - 1)


def _decode_seeking(
    container: Any,
    stream: Any,
    wanted: list[int],
    checked: MediaSource,
    where: dict[str, Any],
) -> dict[int, np.ndarray] | None:
    """Seek to the keyframe before each wanted frame and decode up to it; None if unusable.

    A frame's index is read from its timestamp (``pts``), so the frames kept
    are the ones a full decode would have kept at those indices.
    """
    rate, base = stream.average_rate, stream.time_base
    if not rate or not base:
        return None
    start = stream.start_time or 0
    kept: dict[int, np.ndarray] = {}
    try:
        for index in sorted(set(wanted)):
            target = start + round(index / (rate * base))
            container.seek(target, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is None:
                    return None
                position = round((frame.pts - start) * base * rate)
                if position >= index:
                    if position != index:
                        return None  # timestamps and indices disagree: decode in order
                    _check_frame(frame.width, frame.height, checked, where)
                    kept[index] = frame.to_ndarray(format="rgb24")
                    break
    except MediaError:
        raise
    except Exception:  # a container that cannot seek is decoded in order instead
        return None
    return kept if len(kept) == len(set(wanted)) else None


def _decode_in_order(
    container: Any,
    stream: Any,
    wanted: list[int],
    checked: MediaSource,
    where: dict[str, Any],
) -> dict[int, np.ndarray]:
    """The wanted frames as RGB arrays; decoding stops after the last of them."""
    kept: dict[int, np.ndarray] = {}
    chosen, last = set(wanted), max(wanted)
    try:
        for index, frame in enumerate(container.decode(stream)):
            if index in chosen:
                _check_frame(frame.width, frame.height, checked, where)
                kept[index] = frame.to_ndarray(format="rgb24")
            if index >= last:
                break
    except MediaError:
        raise
    except Exception as exc:
        msg = f"cannot decode video {checked.name!r}: {type(exc).__name__}: {exc}"
        raise MediaError(msg, **where) from exc
    return kept


def _count(container: Any, stream: Any, checked: MediaSource, where: dict[str, Any]) -> int:
    """Frames in the stream, counted by decoding (nothing is converted or kept)."""
    count = 0
    try:
        for _ in container.decode(stream):
            count += 1
    except Exception as exc:
        msg = f"cannot decode video {checked.name!r}: {type(exc).__name__}: {exc}"
        raise MediaError(msg, **where) from exc
    return count


@contextmanager
def _opened(checked: MediaSource, where: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """``(container, video stream)``; failures become [`MediaError`][vlm_collate.MediaError], the
    header is checked."""
    import av

    handle = checked.open(where)
    try:
        try:
            container = av.open(handle)
        except Exception as exc:
            msg = f"cannot read video {checked.name!r}: {type(exc).__name__}: {exc}"
            raise MediaError(msg, **where) from exc
        with container:
            if not container.streams.video:
                msg = f"video {checked.name!r} has no video stream"
                raise MediaError(msg, **where)
            stream = container.streams.video[0]
            context = stream.codec_context
            _check_frame(context.width, context.height, checked, where)
            yield container, stream
    finally:
        handle.close()
