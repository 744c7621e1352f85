"""Phi-4-multimodal: a real ``Phi4MultimodalProcessor`` on the Qwen2 vocabulary.

Phi-4-mini's o200k vocabulary ships in no wheel, so the Qwen2 byte-level BPE
vocabulary stands in for it. Phi-4's control tokens are added as special
tokens, with ``<|image|>`` and ``<|audio|>`` as the tokenizer's named
``image_token`` / ``audio_token`` (what the processor reads), and
``<|endoftext|>`` is the end-of-sequence token the template writes after the
last turn, as in the checkpoint.

The image processor keeps Phi-4's dynamic-HD arithmetic (a global view plus up
to 4 crops) on 28 px crops instead of 448 px, so an image costs about 280
placeholder tokens (256 of them fixed by the processor) but only a few
thousand pixels. Audio uses the real Phi-4 feature extractor at 16 kHz: half a
second of audio becomes 6 placeholder tokens.
"""

from __future__ import annotations

import transformers

from .._processors import FamilySpec, Options, register_family

__all__ = ["PHI4_MM_CONTROL_TOKENS", "PHI4_MM_NAMED_TOKENS"]

#: Placeholders the processor reads from the tokenizer by name.
PHI4_MM_NAMED_TOKENS = {"image_token": "<|image|>", "audio_token": "<|audio|>"}
#: Turn and tool markers of Phi-4-mini's chat format.
PHI4_MM_CONTROL_TOKENS = (
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<|tool|>",
    "<|/tool|>",
)

_CROP = 28
_PATCH_SIZE = 14
_MAX_CROPS = 4

SPEC = FamilySpec(
    name="phi4_mm",
    processor_class="Phi4MultimodalProcessor",
    tokenizer_base="qwen2",
    description="Phi-4-multimodal: <|user|>...<|end|> turns, <|image|> / <|audio|>, 28 px crops.",
    template="phi4_mm.jinja",
)


def _build_phi4_mm(
    spec: FamilySpec,
    tokenizer: transformers.PreTrainedTokenizerBase,
    template: str,
    options: Options,
) -> transformers.ProcessorMixin:
    tokenizer._set_model_specific_special_tokens(PHI4_MM_NAMED_TOKENS)
    tokenizer.add_special_tokens(
        {
            "eos_token": "<|endoftext|>",
            **PHI4_MM_NAMED_TOKENS,
            "extra_special_tokens": list(PHI4_MM_CONTROL_TOKENS),
        },
        replace_extra_special_tokens=False,
    )
    image_processor = transformers.Phi4MultimodalImageProcessor(
        size={"height": _CROP, "width": _CROP}, patch_size=_PATCH_SIZE, dynamic_hd=_MAX_CROPS
    )
    return transformers.Phi4MultimodalProcessor(
        image_processor=image_processor,
        audio_processor=transformers.Phi4MultimodalFeatureExtractor(),
        tokenizer=tokenizer,
        chat_template=template,
    )


register_family(SPEC, _build_phi4_mm)
