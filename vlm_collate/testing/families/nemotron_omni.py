"""Nemotron 3 Nano Omni: a real ``NemotronH_Omni_Reasoning_V3Processor`` on the Qwen2 vocabulary.

Nemotron 3's vocabulary ships in no wheel. The Qwen2 byte-level BPE vocabulary
stands in for it: it has the same ChatML markers (``<|im_start|>``,
``<|im_end|>``) and ``<think>`` / ``</think>``; the omni placeholders
(``<image>``, ``<video>``, ``<img>``, ``</img>``, ``<so_embedding>``,
``<so_start>``, ``<so_end>``) are added as special tokens.

Images keep the processor's dynamic-resolution arithmetic (16 px patches,
2 x 2 pixel shuffle) with a budget of 4 to 16 patches, so an image costs 1 to
4 ``<image>`` tokens; a video frame pair costs 4. Audio uses the real Parakeet
feature extractor (128 mel bins, 16 kHz): half a second becomes 7
``<so_embedding>`` tokens.
"""

from __future__ import annotations

import transformers

from .._processors import FamilySpec, Options, register_family

__all__ = ["NEMOTRON_OMNI_TOKENS"]

#: Placeholder tokens the processor expands (and the model looks for).
NEMOTRON_OMNI_TOKENS = (
    "<image>",
    "<video>",
    "<img>",
    "</img>",
    "<so_embedding>",
    "<so_start>",
    "<so_end>",
)

_PATCH_SIZE = 16
_MIN_PATCHES = 4
_MAX_PATCHES = 16
_MAX_MODEL_LEN = 1024
_MEL_BINS = 128

SPEC = FamilySpec(
    name="nemotron_omni",
    processor_class="NemotronH_Omni_Reasoning_V3Processor",
    tokenizer_base="qwen2",
    description="Nemotron 3 Nano Omni: ChatML, <think></think>, image/video/audio, 16 px patches.",
    template="nemotron_omni.jinja",
)


def _build_nemotron_omni(
    spec: FamilySpec,
    tokenizer: transformers.PreTrainedTokenizerBase,
    template: str,
    options: Options,
) -> transformers.ProcessorMixin:
    tokenizer.add_special_tokens(
        {"extra_special_tokens": list(NEMOTRON_OMNI_TOKENS)}, replace_extra_special_tokens=False
    )
    image_processor = transformers.NemotronH_Omni_Reasoning_V3ImageProcessor(
        patch_size=_PATCH_SIZE,
        downsample_ratio=0.5,
        min_num_patches=_MIN_PATCHES,
        max_num_patches=_MAX_PATCHES,
        max_model_len=_MAX_MODEL_LEN,
    )
    video_processor = transformers.NemotronH_Omni_Reasoning_V3VideoProcessor(
        norm_mean=list(image_processor.image_mean),
        norm_std=list(image_processor.image_std),
        patch_size=_PATCH_SIZE,
        downsample_ratio=0.5,
        video_target_num_patches=_MAX_PATCHES,
    )
    return transformers.NemotronH_Omni_Reasoning_V3Processor(
        image_processor=image_processor,
        video_processor=video_processor,
        tokenizer=tokenizer,
        feature_extractor=transformers.ParakeetFeatureExtractor(
            sampling_rate=16000, feature_size=_MEL_BINS
        ),
        chat_template=template,
    )


register_family(SPEC, _build_nemotron_omni)
