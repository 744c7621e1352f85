"""Nemotron-Parse: a stand-in ``NemotronParseProcessor`` on the Mistral SentencePiece vocabulary.

``transformers`` does not ship Nemotron-Parse's processor: the checkpoint
(``nvidia/NVIDIA-Nemotron-Parse-v1.1``) loads it as remote code. The classes
below are a stand-in written for these tests. They mirror the remote code's
call interface and behaviour: ``processor(images=..., text=...,
add_special_tokens=True, padding=..., return_tensors=...)`` runs the image
processor and the tokenizer and returns their outputs together (a
``BatchEncoding`` with ``pixel_values``, ``input_ids`` and
``attention_mask``). The image processor, like the remote one, shrinks a page
to fit ``final_size`` (height, width) keeping its aspect ratio, pads it with
white to exactly that size (centred, as albumentations' ``PadIfNeeded``
does) and scales pixels to [0, 1] without normalising them (the RADIO
encoder normalises). It resizes with Pillow's bilinear filter where the remote
code uses OpenCV's.

The Mistral v3 SentencePiece vocabulary stands in for the checkpoint's
mBART-style one: ``<s>`` / ``</s>`` / ``<unk>`` / ``<pad>`` as there, the
task tokens added as special tokens, and ``<s> ... </s>`` added around every
text (the BART convention; NeMo Automodel's collate function relies on the tokenizer
to close the target). Pages are 40 x 32 pixels instead of 2048 x 1648.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import transformers
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor

from .._processors import FamilySpec, Options, register_family

__all__ = ["NEMOTRON_PARSE_TASK_TOKENS", "NemotronParseImageProcessor", "NemotronParseProcessor"]

#: Task-prompt tokens of Nemotron-Parse (what to predict and how to write it).
NEMOTRON_PARSE_TASK_TOKENS = (
    "<predict_bbox>",
    "<predict_no_bbox>",
    "<predict_classes>",
    "<predict_no_classes>",
    "<output_markdown>",
    "<output_plain>",
    "<output_no_text>",
)

_PAGE_SIZE = (40, 32)  # (height, width)


class NemotronParseImageProcessor(BaseImageProcessor):
    """Stand-in for the remote ``NemotronParseImageProcessor``: fit, pad white, scale to [0, 1].

    Args:
        final_size: ``(height, width)`` of every output page.
    """

    model_input_names: ClassVar[list[str]] = ["pixel_values"]

    def __init__(self, final_size: tuple[int, int] = (2048, 1648), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.final_size = (int(final_size[0]), int(final_size[1]))

    def preprocess(self, images: Any, return_tensors: Any = None, **kwargs: Any) -> dict[str, Any]:
        pages = images if isinstance(images, list) else [images]
        pixels = torch.stack([self._page(page) for page in pages])
        return {"pixel_values": pixels.numpy() if return_tensors == "np" else pixels}

    def __call__(self, images: Any, **kwargs: Any) -> dict[str, Any]:
        return self.preprocess(images, **kwargs)

    def _page(self, image: Image.Image) -> torch.Tensor:
        height, width = self.final_size
        page = image.convert("RGB")
        new_width, new_height = page.size
        # Shrink to the height limit, then to the width limit, keeping the aspect ratio.
        if new_height > height:
            new_width, new_height = int(height * page.width / page.height), height
        if new_width > width:
            new_width, new_height = width, int(width * page.height / page.width)
        page = page.resize((max(new_width, 1), max(new_height, 1)), Image.Resampling.BILINEAR)
        canvas = Image.new("RGB", (width, height), (255, 255, 255))
        canvas.paste(page, ((width - page.width) // 2, (height - page.height) // 2))
        return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).permute(2, 0, 1)


class NemotronParseProcessor(transformers.ProcessorMixin):
    """Stand-in for the remote ``NemotronParseProcessor``: image processor and tokenizer."""

    attributes: ClassVar[list[str]] = ["image_processor", "tokenizer"]

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, **kwargs: Any) -> None:
        if image_processor is None:
            image_processor = NemotronParseImageProcessor(**kwargs)
        super().__init__(image_processor, tokenizer)

    def __call__(
        self,
        images: Any = None,
        text: Any = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> transformers.BatchEncoding:
        image_inputs = {} if images is None else self.image_processor(images, **kwargs)
        text_inputs = {}
        if text is not None:
            text_inputs = self.tokenizer(
                text,
                add_special_tokens=add_special_tokens,
                padding=padding,
                truncation=truncation,
                max_length=max_length,
                return_tensors=return_tensors,
                **kwargs,
            )
        return transformers.BatchEncoding({**image_inputs, **text_inputs})


SPEC = FamilySpec(
    name="nemotron_parse",
    processor_class="NemotronParseProcessor",
    tokenizer_base="mistral-sentencepiece",
    description="Nemotron-Parse (stand-in processor): task prompt + target, <s>...</s>, 40x32 px.",
    template="nemotron_parse.jinja",
)


def _build_nemotron_parse(
    spec: FamilySpec,
    tokenizer: transformers.PreTrainedTokenizerBase,
    template: str,
    options: Options,
) -> transformers.ProcessorMixin:
    tokenizer.add_special_tokens(
        {"extra_special_tokens": list(NEMOTRON_PARSE_TASK_TOKENS)},
        replace_extra_special_tokens=False,
    )
    tokenizer.add_bos_token = True
    tokenizer.add_eos_token = True
    tokenizer.padding_side = options.padding_side or "right"
    tokenizer.chat_template = None  # Nemotron-Parse has none
    return NemotronParseProcessor(NemotronParseImageProcessor(final_size=_PAGE_SIZE), tokenizer)


register_family(SPEC, _build_nemotron_parse)
