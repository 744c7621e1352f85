"""Qwen3-Omni: a real ``Qwen3OmniMoeProcessor`` on the Qwen2 vocabulary.

The Qwen3-Omni checkpoints extend the Qwen2 vocabulary with audio and speech
tokens; they are added here in the checkpoints' order, so ``<|audio_start|>``
and ``<|audio_end|>`` follow ``</think>`` and ``<|audio_pad|>`` comes after
the four text-to-speech tokens. The tokenizer names its media tokens
(``image_token``, ``audio_token``, ...), which the processor reads. Audio goes
through a real ``WhisperFeatureExtractor`` (128 mel bins, 16 kHz, as the
checkpoints use): one second of audio costs 13 tokens. Images and video frames
use 16 px patches with small pixel budgets.
"""

from __future__ import annotations

import transformers

from .._processors import FamilySpec, Options, register_family

__all__ = ["QWEN3_OMNI", "QWEN3_OMNI_AUDIO_TOKENS"]

#: Tokens Qwen3-Omni adds after the Qwen2 vocabulary, in id order.
QWEN3_OMNI_AUDIO_TOKENS = (
    "<|audio_start|>",
    "<|audio_end|>",
    "<tts_pad>",
    "<tts_text_bos>",
    "<tts_text_eod>",
    "<tts_text_bos_single>",
    "<|audio_pad|>",
)

# What the processor reads from its tokenizer (tokenizer.image_token, ...).
_NAMED_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "audio_token": "<|audio_pad|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
    "audio_bos_token": "<|audio_start|>",
    "audio_eos_token": "<|audio_end|>",
}

_PATCH_SIZE = 16
_MERGE_SIZE = 2
_MERGED_PATCH_AREA = (_PATCH_SIZE * _MERGE_SIZE) ** 2
# Real checkpoints allow up to 16384 merged patches per image and 768 per video
# frame; these bounds keep a test image at 4 to 64 tokens and a frame pair at 4 to 16.
_IMAGE_MERGED_PATCHES = (4, 64)
_FRAME_MERGED_PATCHES = (4, 16)
# Qwen3-Omni normalises pixels to [-1, 1].
_HALF = [0.5, 0.5, 0.5]

QWEN3_OMNI = FamilySpec(
    name="qwen3_omni",
    processor_class="Qwen3OmniMoeProcessor",
    tokenizer_base="qwen2",
    description="Qwen3-Omni: ChatML with Qwen3 reasoning blocks; images, videos and 16 kHz audio.",
    template="qwen3_omni.jinja",
)


def _build_qwen3_omni(
    spec: FamilySpec,
    tokenizer: transformers.PreTrainedTokenizerBase,
    template: str,
    options: Options,
) -> transformers.ProcessorMixin:
    tokenizer.add_special_tokens(
        {"extra_special_tokens": list(QWEN3_OMNI_AUDIO_TOKENS)}, replace_extra_special_tokens=False
    )
    # As loading a checkpoint's tokenizer_config does for its named media tokens.
    tokenizer._set_model_specific_special_tokens(dict(_NAMED_TOKENS))
    low, high = _IMAGE_MERGED_PATCHES
    image_processor = transformers.Qwen2VLImageProcessor(
        patch_size=_PATCH_SIZE,
        merge_size=_MERGE_SIZE,
        temporal_patch_size=2,
        image_mean=_HALF,
        image_std=_HALF,
        min_pixels=options.min_pixels or _MERGED_PATCH_AREA * low,
        max_pixels=options.max_pixels or _MERGED_PATCH_AREA * high,
    )
    low, high = _FRAME_MERGED_PATCHES
    frame_size = {
        "shortest_edge": _MERGED_PATCH_AREA * low,
        "longest_edge": _MERGED_PATCH_AREA * high,
    }
    video_processor = transformers.Qwen2VLVideoProcessor(
        patch_size=_PATCH_SIZE,
        merge_size=_MERGE_SIZE,
        temporal_patch_size=2,
        image_mean=_HALF,
        image_std=_HALF,
        size=frame_size,
        cap_pixels_per_frame=False,
    )
    feature_extractor = transformers.WhisperFeatureExtractor(
        feature_size=128, sampling_rate=16000, hop_length=160, n_fft=400, chunk_length=30
    )
    processor = transformers.Qwen3OmniMoeProcessor(
        image_processor=image_processor,
        video_processor=video_processor,
        feature_extractor=feature_extractor,
        tokenizer=tokenizer,
        chat_template=template,
    )
    # The class default video size (128 to 768 merged patches per frame) would
    # override the small video processor; the test processor keeps its own.
    processor.videos_kwargs = {"size": dict(frame_size)}
    return processor


register_family(QWEN3_OMNI, _build_qwen3_omni)
