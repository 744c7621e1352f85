"""Audio for processors: waveforms at the processor's sampling rate.

An audio item's ``"audio"`` may be a 1-D array (already at the processor's
rate), an ``(array, rate)`` pair, a ``{"array", "sampling_rate"}`` dict (the
Hugging Face ``datasets`` format) or a file path.
[`load_waveform`][vlm_collate.media.load_waveform] turns
any of them into a mono float32 array at the processor's rate, resampling
with [`resample`][vlm_collate.media.resample] (a band-limited polyphase filter in torch) and reading
files with PyAV. [`AudioMedia`][vlm_collate.AudioMedia] is the media strategy that does this for
every audio item of a batch.
"""

from __future__ import annotations

import fractions
import itertools
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import attrs
import numpy as np
import torch

from .._samples import Sample
from ..errors import ConfigurationError, MediaError, SampleTypeError
from ._access import MAX_SAMPLING_RATE, MediaAccess, MediaSource, current_access, resolve_media
from ._strategies import PlainMedia, iter_media_items

if TYPE_CHECKING:
    from av.container import InputContainer

__all__ = [
    "DEFAULT_SAMPLING_RATE",
    "AudioMedia",
    "load_waveform",
    "move_example_audio",
    "processor_sampling_rate",
    "resample",
]

DEFAULT_SAMPLING_RATE = 16000

# Filter design: the sinc spans this many zero crossings on each side, its
# cutoff sits a little below the lower Nyquist frequency, and a Kaiser window
# with this beta keeps the stop band below about -80 dB.
_ZERO_CROSSINGS = 16
_ROLLOFF = 0.945
_KAISER_BETA = 8.6
# A rate ratio needing more phases than this is replaced by the closest ratio
# that does not; ratios between the usual rates (8, 22.05, 44.1, 48 kHz and
# 16 kHz) are exact.
_MAX_PHASES = 1000
_MAX_CHANNELS = 8
# A decoded file holds at most max_audio_seconds of this many values per
# second (48 kHz stereo): 230 MB of float32 at the default 600 s.
_DECODED_VALUES_PER_SECOND = 96_000

_EXPECTED = (
    "an audio item's value must be a 1-D array, an (array, sampling_rate) pair, "
    "a {'array', 'sampling_rate'} dict or a file path"
)


def processor_sampling_rate(processor: Any) -> int:
    """The sampling rate the processor's audio feature extractor expects (16 kHz if unknown)."""
    rate = getattr(processor, "audio_sampling_rate", None)
    for name in ("feature_extractor", "audio_processor"):
        if isinstance(rate, numbers.Integral):
            break
        rate = getattr(getattr(processor, name, None), "sampling_rate", None)
    return (
        int(rate) if isinstance(rate, numbers.Integral) and int(rate) > 0 else DEFAULT_SAMPLING_RATE
    )


def resample(waveform: np.ndarray, orig_rate: float, target_rate: float) -> np.ndarray:
    """Resample a 1-D waveform from ``orig_rate`` to ``target_rate`` samples per second.

    Output sample ``j`` lies at input time ``j * orig_rate / target_rate``; it
    is the input convolved with a Kaiser-windowed sinc whose cutoff is just
    below the lower of the two Nyquist frequencies. The filter runs as one
    strided ``conv1d`` with a kernel per output phase, so the cost grows with
    the clip length, not with the size of the rate ratio. The output has
    ``ceil(len(waveform) * target_rate / orig_rate)`` samples.
    """
    signal = np.asarray(waveform, dtype=np.float32)
    if orig_rate == target_rate or signal.size == 0:
        return signal
    ratio = fractions.Fraction(target_rate) / fractions.Fraction(orig_rate)
    if max(ratio.numerator, ratio.denominator) > _MAX_PHASES:
        ratio = ratio.limit_denominator(_MAX_PHASES)
    up, down = ratio.numerator, ratio.denominator
    cutoff = min(1.0, up / down) * _ROLLOFF
    half_width = math.ceil(_ZERO_CROSSINGS / cutoff)
    kernels = _phase_kernels(up, down, cutoff, half_width)
    padded = torch.nn.functional.pad(
        torch.from_numpy(signal).view(1, 1, -1), (half_width, half_width + down)
    )
    phases = torch.nn.functional.conv1d(padded, kernels, stride=down)  # [1, up, steps]
    length = math.ceil(signal.size * up / down)
    return phases[0].t().reshape(-1)[:length].numpy()


def _phase_kernels(up: int, down: int, cutoff: float, half_width: int) -> torch.Tensor:
    """``[up, 1, taps]`` filters; phase ``p`` reads inputs around ``p * down / up``."""
    offsets = torch.arange(up, dtype=torch.float64) * down / up
    taps = torch.arange(-half_width, half_width + down, dtype=torch.float64)
    distance = offsets[:, None] - taps[None, :]
    inside = distance.abs() <= half_width
    radius = (1 - (distance / half_width).clamp(-1, 1) ** 2).sqrt()
    window = torch.special.i0(_KAISER_BETA * radius) / torch.special.i0(
        torch.tensor(_KAISER_BETA, dtype=torch.float64)
    )
    kernel = cutoff * torch.sinc(cutoff * distance) * window * inside
    return cast("torch.Tensor", kernel.to(torch.float32).unsqueeze(1))


def load_waveform(
    value: Any,
    *,
    sampling_rate: int,
    location: Mapping[str, int | None] | None = None,
    access: MediaAccess | None = None,
) -> np.ndarray:
    """Return ``value`` as a mono float32 waveform at ``sampling_rate``.

    Args:
        value: An array (taken to be at ``sampling_rate`` already), an
            ``(array, rate)`` pair, a ``{"array", "sampling_rate"}`` dict, or a
            reference [`resolve_media`][vlm_collate.media.resolve_media] takes (a path,
            bytes, a ``data:`` URI, a URL when ``access`` allows them) to a
            file PyAV can decode.
        sampling_rate: The rate the processor expects.
        location: ``sample_index`` / ``message_index`` / ``item_index`` for errors.
        access: The media access policy (the safe defaults when None): which
            references are read, the longest clip, and the channel policy.

    Raises:
        MediaError: The value is refused, empty, not finite, too long, has a
            sampling rate outside ``(0, 768000]``, or is unreadable.
    """
    where = dict(location or {})
    access = access or current_access()
    array, rate = _split(value, where)
    if isinstance(array, (str, os.PathLike, bytes, bytearray, MediaSource)):
        source = resolve_media(array, access, kind="audio", location=where)
        array, rate = _read_audio_file(source, where)
    if rate is None:  # a bare array is taken to be at the processor's rate already
        rate = sampling_rate
    _check_rate(rate, where)
    waveform = _mono(_as_float_array(array, where), access, where)
    seconds = waveform.size / rate
    if seconds > access.max_audio_seconds:
        msg = (
            f"audio lasts {seconds:.1f} s, longer than max_audio_seconds="
            f"{access.max_audio_seconds:g}"
        )
        raise MediaError(msg, **where)
    return resample(waveform, rate, sampling_rate)


def _check_rate(rate: Any, where: dict[str, Any]) -> None:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        msg = f"the sampling rate must be a number (got {rate!r})"
        raise SampleTypeError(msg, **where)
    if not (math.isfinite(float(rate)) and 0 < float(rate) <= MAX_SAMPLING_RATE):
        msg = (
            f"the sampling rate must be a positive number (got {rate!r}), finite and at most "
            f"{MAX_SAMPLING_RATE} Hz"
        )
        raise MediaError(msg, **where)


def _split(value: Any, where: dict[str, Any]) -> tuple[Any, Any]:
    """Separate the samples from their rate; a bare array has no rate of its own (None)."""
    if isinstance(value, Mapping):
        if "array" in value:
            return value["array"], value.get("sampling_rate")
        if value.get("path"):
            return value["path"], None
        keys = ", ".join(repr(key) for key in value) or "none"
        msg = f"{_EXPECTED}; this dict has no 'array' or 'path' (keys: {keys})"
        raise MediaError(msg, **where)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and isinstance(value[0], (np.ndarray, torch.Tensor, list, tuple))
        and isinstance(value[1], numbers.Real)
    ):
        return value[0], value[1]
    if isinstance(
        value, (np.ndarray, torch.Tensor, list, tuple, str, os.PathLike, bytes, MediaSource)
    ):
        return value, None
    msg = f"{_EXPECTED} (got {type(value).__name__})"
    raise MediaError(msg, **where)


def _as_float_array(array: Any, where: dict[str, Any]) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        array = array.float().numpy() if array.is_floating_point() else array.numpy()
    try:
        values = np.asarray(array)
    except (TypeError, ValueError) as exc:
        msg = f"{_EXPECTED}; its samples are not a numeric array ({exc})"
        raise MediaError(msg, **where) from exc
    if np.issubdtype(values.dtype, np.signedinteger):  # PCM: full scale maps to [-1, 1)
        values = values / float(np.iinfo(values.dtype).max + 1)
    elif not np.issubdtype(values.dtype, np.floating):
        msg = f"{_EXPECTED}; its samples must be floats or signed PCM integers (got {values.dtype})"
        raise MediaError(msg, **where)
    return values.astype(np.float32, copy=False)


def _mono(values: np.ndarray, access: MediaAccess, where: dict[str, Any]) -> np.ndarray:
    if values.ndim == 2 and 1 < min(values.shape) <= _MAX_CHANNELS:
        if access.audio_channels == "refuse":
            msg = (
                f"audio has {min(values.shape)} channels and audio_channels='refuse' "
                f"takes mono only (got shape {tuple(values.shape)})"
            )
            raise MediaError(msg, **where)
        values = values.mean(axis=int(np.argmin(values.shape)))
    elif values.ndim == 2 and min(values.shape) == 1:
        values = values.reshape(-1)
    if values.ndim != 1:
        msg = (
            f"audio must be mono samples (n,) or up to {_MAX_CHANNELS} channels "
            f"(n, channels) (got shape {tuple(values.shape)})"
        )
        raise MediaError(msg, **where)
    if values.size == 0:
        msg = "audio has no samples"
        raise MediaError(msg, **where)
    if not np.isfinite(values).all():
        msg = "audio holds NaN or infinite samples"
        raise MediaError(msg, **where)
    return values


def _read_audio_file(source: MediaSource, where: dict[str, Any]) -> tuple[Any, int]:
    """Decode a file to float32 ``(samples, channels)`` at its own rate, with PyAV.

    The rate and the duration the header declares are checked before
    decoding; decoding stops as soon as the clip is longer than allowed.
    """
    import av

    limit = source.access.max_audio_seconds
    try:
        # A file object and no mode: av opens it for reading.
        with (
            source.open(where) as handle,
            cast("InputContainer", av.open(handle)) as container,
        ):
            stream = _audio_stream(container, source, where)
            rate = stream.rate or stream.codec_context.sample_rate
            _check_rate(rate, where)
            # Planar float keeps the channels apart; they are averaged later
            # (ffmpeg's own mono downmix would scale the sum by 1/sqrt(2)).
            to_float = av.AudioResampler(format="fltp", rate=rate)
            decoded, samples, values = [], 0, 0
            for frame in itertools.chain(container.decode(stream), [None]):
                for converted in to_float.resample(frame):
                    decoded.append(converted.to_ndarray())
                    samples += decoded[-1].shape[-1]
                    values += decoded[-1].size
                if samples > limit * rate:
                    msg = f"audio {source.name!r} is longer than max_audio_seconds={limit:g}"
                    raise MediaError(msg, **where)
                if values > limit * _DECODED_VALUES_PER_SECOND:
                    msg = (
                        f"audio {source.name!r} decodes to more than max_audio_seconds={limit:g} "
                        "of 48 kHz stereo (a very high rate or many channels)"
                    )
                    raise MediaError(msg, **where)
    except MediaError:
        raise
    except Exception as exc:
        msg = f"cannot read audio {source.name!r}: {type(exc).__name__}: {exc}"
        raise MediaError(msg, **where) from exc
    if not decoded:
        return np.zeros(0, dtype=np.float32), int(rate)
    return np.concatenate(decoded, axis=1).T, int(rate)


def _audio_stream(container: Any, source: MediaSource, where: dict[str, Any]) -> Any:
    if not container.streams.audio:
        msg = f"audio file {source.name!r} has no audio stream"
        raise MediaError(msg, **where)
    stream = container.streams.audio[0]
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
        if seconds > source.access.max_audio_seconds:
            msg = (
                f"audio {source.name!r} lasts {seconds:.1f} s, longer than "
                f"max_audio_seconds={source.access.max_audio_seconds:g}"
            )
            raise MediaError(msg, **where)
    return stream


def _audio_source(item: Mapping[str, Any]) -> Any:
    for key in ("audio", "path", "url"):
        if item.get(key) is not None:
            return item[key]
    return None


@attrs.frozen(kw_only=True)
class AudioMedia(PlainMedia):
    """Images and videos as given; every audio item becomes a waveform at ``sampling_rate``.

    Args:
        sampling_rate: The rate the processor's feature extractor expects
            (collators fill it in from the processor).
    """

    sampling_rate: int = attrs.field(default=DEFAULT_SAMPLING_RATE)

    @sampling_rate.validator
    def _check_rate(self, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            msg = f"'sampling_rate' must be a positive int (got {value!r})."
            raise ConfigurationError(msg)

    def gather(self, conversations: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
        gathered = super().gather(conversations)
        waveforms = [
            load_waveform(_audio_source(item), sampling_rate=self.sampling_rate, location=location)
            for location, item in iter_media_items(conversations)
            if item["type"] == "audio"
        ]
        if waveforms:
            gathered["audio"] = waveforms
        return gathered


def move_example_audio(
    samples: Sequence[Sample], *, sampling_rate: int, access: MediaAccess | None = None
) -> None:
    """Turn NeMo Automodel's top-level ``example["audio"]`` into an audio item of the conversation.

    NeMo Automodel's Phi-4-MM and Nemotron-Omni collate functions read one clip per
    sample from ``example["audio"]``. Unless the conversation already holds
    audio items, the clip (as a waveform at ``sampling_rate``) becomes the
    first item of the first user message of the sample's own conversation
    copy, so that the chat template places its placeholder there.

    Raises:
        MediaError: The clip is unusable; the error names the sample.
    """
    for sample in samples:
        audio = sample.example.get("audio")
        conversation = sample.conversation
        if audio is None or _has_audio_item(conversation):
            continue
        try:
            waveform = load_waveform(audio, sampling_rate=sampling_rate, access=access)
        except MediaError as exc:
            raise MediaError(f"example['audio']: {exc.detail}", sample_index=sample.index) from exc
        position = next(
            (index for index, message in enumerate(conversation) if message["role"] == "user"), 0
        )
        message = conversation[position]
        content = message.get("content")
        if isinstance(content, str):
            items = [{"type": "text", "text": content}]
        else:
            items = list(content or [])
        audio_item = {"type": "audio", "audio": waveform}
        conversation[position] = {**message, "content": [audio_item, *items]}


def _has_audio_item(conversation: Sequence[Mapping[str, Any]]) -> bool:
    return any(
        isinstance(message.get("content"), list)
        and any(item.get("type") == "audio" for item in message["content"])
        for message in conversation
    )
