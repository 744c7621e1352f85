"""``Phi4MMCollator``: Phi-4-multimodal (speech, and optionally vision, on Phi-4-mini)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch

from .._options import to_names
from .._pipeline import BaseCollator
from .._report import CollateReport
from .._samples import Sample
from ..errors import LabelStrategyError
from ..labels import (
    LabelStrategy,
    MarkerStrategy,
    TurnMarkers,
    tokenizer_of,
    with_fallbacks,
)
from ..media import AudioMedia, MediaStrategy, move_example_audio, processor_sampling_rate
from ..registry import register_collator

__all__ = ["Phi4MMCollator", "RoleTokenMarker"]

# NeMo Automodel drops the remote processor's image inputs; transformers names the
# pixels ``image_pixel_values`` and they go with the rest.
_IMAGE_INPUTS = ("input_image_embeds", "image_pixel_values", "image_sizes", "image_attention_mask")
_IMAGE_PIXELS = frozenset({"input_image_embeds", "image_pixel_values"})
_AUDIO_FEATURES = ("input_audio_embeds", "audio_input_features")


@attrs.frozen(kw_only=True)
class RoleTokenMarker(MarkerStrategy):
    """Assistant turns opened by one special token and closed by another, read from the vocabulary.

    Phi-4's template writes ``<|assistant|>answer<|end|>``. (Deriving the
    markers from the template does not work for it: the template ends every
    conversation with ``eos_token``, so a prompt is not a prefix of the same
    prompt with the assistant header.)

    Args:
        start_token: Token that opens a trained turn.
        end_token: Token that closes it; it is trained.
    """

    start_token: str = "<|assistant|>"
    end_token: str = "<|end|>"

    def resolve(self, processor: Any) -> TurnMarkers:
        tokenizer = tokenizer_of(processor)
        vocabulary = tokenizer.get_vocab()
        start_id, end_id = vocabulary.get(self.start_token), vocabulary.get(self.end_token)
        if start_id is None or end_id is None:
            msg = (
                f"RoleTokenMarker needs {self.start_token!r} and {self.end_token!r} in the "
                f"vocabulary of {type(tokenizer).__name__}."
            )
            raise LabelStrategyError(msg)
        return TurnMarkers(assistant_marker=[start_id], end_of_turn_id=end_id)


def _phi4_media(collator: Phi4MMCollator) -> MediaStrategy:
    return AudioMedia(sampling_rate=processor_sampling_rate(collator.processor))


@register_collator("Phi4MultimodalProcessor", "Phi4MMProcessor")
@attrs.define(kw_only=True)
class Phi4MMCollator(BaseCollator):
    """NeMo Automodel's ``phi4_mm_collate_fn``, for speech (and, on request, image) fine-tuning.

    Audio items (or NeMo Automodel's top-level ``example["audio"]``) may be arrays,
    ``(array, rate)`` pairs or ``{"array", "sampling_rate"}`` dicts; they are
    resampled to the feature extractor's rate. Turn markers are derived from
    the chat template (``<|assistant|>`` ... ``<|end|>``). ``input_mode`` (0
    text, 1 image, 2 audio, 3 both) is added when the processor does not set
    it, and the ``dropped_keys`` are removed from the batch.

    Args:
        dropped_keys: Batch keys removed at the end. By default the image
            inputs, as in NeMo Automodel; image items are then refused rather than
            silently lost. ``dropped_keys=()`` trains on images too.

    # Phi-4's processor names its media entries its own way.
    media_keys: ClassVar[frozenset[str]] = BaseCollator.media_keys | {
        "image_attention_mask",
        "audio_input_features",
        "audio_embed_sizes",
        "audio_attention_mask",
        "input_image_embeds",
        "input_audio_embeds",
        "image_pixel_values",
    }
    """

    # mypy's attrs plugin does not read attrs.Converter objects (takes_field=True).
    dropped_keys: tuple[str, ...] = attrs.field(default=_IMAGE_INPUTS, converter=to_names)  # type: ignore[misc]

    def default_label_strategy(self) -> LabelStrategy:
        return with_fallbacks(RoleTokenMarker())

    def default_media_strategy(self) -> MediaStrategy:
        return _phi4_media(self)

    def filter(self, examples: Sequence[Mapping[str, Any]], report: CollateReport) -> list[Sample]:
        samples = super().filter(examples, report)
        move_example_audio(samples, sampling_rate=self._sampling_rate(), access=self.media_access)
        return samples

    def supported_media(self) -> frozenset[str]:
        """Images only when their inputs are kept (see ``dropped_keys``)."""
        supported = super().supported_media()
        if _IMAGE_PIXELS & set(self.dropped_keys):
            supported -= {"image"}
        return supported

    def media_refusal(self, kind: str) -> str:
        if kind != "image":
            return super().media_refusal(kind)
        return (
            "Phi4MMCollator drops image inputs (dropped_keys), so this image would be lost; "
            "pass dropped_keys=() to train on images"
        )

    def call_processor(self, samples: Sequence[Sample], **inputs: Any) -> dict[str, Any]:
        audio = inputs.pop("audio", None)
        if audio is not None:
            rate = self._sampling_rate()
            if _takes_audios(self.processor):  # remote code: (array, rate) pairs
                inputs["audios"] = [(waveform, rate) for waveform in audio]
            else:
                inputs.update(audio=audio, sampling_rate=rate)
        return super().call_processor(samples, **inputs)

    def hook(self, batch: dict[str, Any], samples: Sequence[Sample]) -> dict[str, Any]:
        if "input_mode" not in batch:
            image = _holds_values(batch, _IMAGE_PIXELS)
            audio = _holds_values(batch, _AUDIO_FEATURES)
            batch["input_mode"] = int(image) + 2 * int(audio)
        return batch

    def media(self, batch: dict[str, Any], samples: Sequence[Sample]) -> dict[str, Any]:
        batch = super().media(batch, samples)
        dtype = self.resolved_pixel_dtype
        for key in _IMAGE_PIXELS:  # Phi-4's pixel keys are not the common ones
            if dtype is not None and isinstance(batch.get(key), torch.Tensor):
                batch[key] = batch[key].to(dtype)
        for key in self.dropped_keys:
            batch.pop(key, None)
        return batch

    def _sampling_rate(self) -> int:
        rate = getattr(self.media_strategy, "sampling_rate", None)
        return rate if isinstance(rate, int) else processor_sampling_rate(self.processor)


def _holds_values(batch: Mapping[str, Any], keys: Any) -> bool:
    return any(isinstance(batch.get(key), torch.Tensor) and batch[key].numel() > 0 for key in keys)


def _takes_audios(processor: Any) -> bool:
    """True for the remote-code processor (``audios=`` pairs); transformers' takes ``audio=``."""
    try:
        parameters = inspect.signature(processor.__call__).parameters
    except (TypeError, ValueError):
        return False
    return "audios" in parameters and "audio" not in parameters
