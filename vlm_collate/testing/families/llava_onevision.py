"""LLaVA-OneVision: a real ``LlavaOnevisionProcessor`` on the Qwen2 vocabulary.

The llava-hf checkpoints run Qwen2 with two added special tokens, ``<image>``
and ``<video>``. Their SigLIP tiles are 384 px with 14 px patches (729 tokens a
tile) and images are tiled "anyres" up to 2304 px; here a tile is 56 px (16
tokens) and the grid stops at 168 px, the same arithmetic at a fraction of the
cost. Video frames are 56 px too, pooled to 4 tokens each, plus one newline
token per video.
"""

from __future__ import annotations

import transformers

from .._processors import FamilySpec, Options, register_family

__all__ = ["LLAVA_ONEVISION"]

_TILE = 56
_PATCH_SIZE = 14
_GRID_PINPOINTS = [[56, 56], [56, 112], [112, 56], [112, 112], [56, 168], [168, 56]]

LLAVA_ONEVISION = FamilySpec(
    name="llava_onevision",
    processor_class="LlavaOnevisionProcessor",
    tokenizer_base="qwen2",
    description="LLaVA-OneVision (llava-hf): ChatML, <image>/<video> first in a turn, 56 px tiles.",
    template="llava_onevision.jinja",
)


def _build_llava_onevision(
    spec: FamilySpec,
    tokenizer: transformers.PreTrainedTokenizerBase,
    template: str,
    options: Options,
) -> transformers.ProcessorMixin:
    tokenizer.add_special_tokens(
        {"extra_special_tokens": ["<image>", "<video>"]}, replace_extra_special_tokens=False
    )
    tile = {"height": _TILE, "width": _TILE}
    return transformers.LlavaOnevisionProcessor(
        image_processor=transformers.LlavaOnevisionImageProcessor(
            size=tile, image_grid_pinpoints=_GRID_PINPOINTS
        ),
        tokenizer=tokenizer,
        video_processor=transformers.LlavaOnevisionVideoProcessor(size=dict(tile)),
        num_image_tokens=(_TILE // _PATCH_SIZE) ** 2,
        vision_feature_select_strategy="full",
        chat_template=template,
    )


register_family(LLAVA_ONEVISION, _build_llava_onevision)
