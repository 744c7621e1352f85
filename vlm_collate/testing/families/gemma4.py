"""Gemma 4: a real ``Gemma4Processor`` on the Mistral SentencePiece vocabulary.

The Gemma 4 vocabulary is not shipped in any wheel, so the Mistral v3
SentencePiece tokenizer stands in for it, with Gemma 4's control tokens added
as named special tokens exactly as the checkpoints' ``tokenizer_config.json``
names them (``image_token``, ``boi_token``, ``sot_token``, ...). As in the
checkpoints the tokenizer adds no BOS of its own (the template writes it) and
pads on the left.

The image and video processors keep Gemma 4's arithmetic (3 x 3 pooling, the
smallest supported budget of 70 soft tokens) on 4 px patches instead of 16 px,
so an image costs at most 70 tokens but only a few thousand pixels; videos
keep at most 4 frames. Audio uses the real Gemma 4 feature extractor.
"""

from __future__ import annotations

import transformers

from .._processors import FamilySpec, Options, register_family

__all__ = ["GEMMA4_SPECIAL_TOKENS"]

#: Gemma 4's named special tokens, as in the checkpoints' tokenizer_config.json.
GEMMA4_SPECIAL_TOKENS = {
    "image_token": "<|image|>",
    "boi_token": "<|image>",
    "eoi_token": "<image|>",
    "audio_token": "<|audio|>",
    "boa_token": "<|audio>",
    "eoa_token": "<audio|>",
    "sot_token": "<|turn>",
    "eot_token": "<turn|>",
    "soc_token": "<|channel>",
    "eoc_token": "<channel|>",
    "think_token": "<|think|>",
    "escape_token": '<|"|>',
    "str_token": "<|tool_response>",
    "etr_token": "<tool_response|>",
    "stc_token": "<|tool_call>",
    "etc_token": "<tool_call|>",
    "std_token": "<|tool>",
    "etd_token": "<tool|>",
}

_PATCH_SIZE = 4
_POOLING = 3
_SOFT_TOKENS = 70  # the smallest budget Gemma 4's processors accept
_VIDEO_FRAMES = 4

SPEC = FamilySpec(
    name="gemma4",
    processor_class="Gemma4Processor",
    tokenizer_base="mistral-sentencepiece",
    description="Gemma 4 31B / 26B-A4B: <|turn> turns, empty thinking channel, 4 px patches.",
    template="gemma4.jinja",
)


def _build_gemma4(
    spec: FamilySpec,
    tokenizer: transformers.PreTrainedTokenizerBase,
    template: str,
    options: Options,
) -> transformers.ProcessorMixin:
    tokenizer._set_model_specific_special_tokens(GEMMA4_SPECIAL_TOKENS)
    tokenizer.add_special_tokens(GEMMA4_SPECIAL_TOKENS)
    tokenizer.add_bos_token = False
    sizes = {
        "patch_size": _PATCH_SIZE,
        "pooling_kernel_size": _POOLING,
        "max_soft_tokens": _SOFT_TOKENS,
    }
    return transformers.Gemma4Processor(
        feature_extractor=transformers.Gemma4AudioFeatureExtractor(),
        image_processor=transformers.Gemma4ImageProcessor(**sizes),
        tokenizer=tokenizer,
        video_processor=transformers.Gemma4VideoProcessor(num_frames=_VIDEO_FRAMES, **sizes),
        chat_template=template,
        image_seq_length=_SOFT_TOKENS,
    )


register_family(SPEC, _build_gemma4)
