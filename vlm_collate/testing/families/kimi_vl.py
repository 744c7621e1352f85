"""Kimi-VL: stand-ins for the remote-code ``KimiVLProcessor`` and its image processor.

``transformers`` does not ship Kimi-VL's processor: the checkpoints
(``moonshotai/Kimi-VL-A3B-Instruct``) load ``processing_kimi_vl.py`` and
``image_processing_kimi_vl.py`` as remote code.
[`KimiVLProcessor`][vlm_collate.testing.families.kimi_vl.KimiVLProcessor] and
[`KimiVLImageProcessor`][vlm_collate.testing.families.kimi_vl.KimiVLImageProcessor] here are written
from those files' behaviour:
same class names, constructor arguments, call interface, attributes and
outputs (``input_ids``, ``attention_mask``, ``pixel_values`` of shape
``[patches, 3, 14, 14]`` and ``image_grid_hws``). They run on the Qwen2
vocabulary with Kimi's control tokens added; ``<|im_end|>`` keeps the one id
the vocabulary already gives it, so the end of turn is unambiguous.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import numpy as np
import torch
import transformers
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin

from .._processors import FamilySpec, Options, register_family

__all__ = ["KIMI_VL_SPECIAL_TOKENS", "KimiVLImageProcessor", "KimiVLProcessor"]

#: Kimi-VL's chat and media control tokens (``<|im_end|>`` is already in the Qwen2 vocabulary).
KIMI_VL_SPECIAL_TOKENS = (
    "<|im_user|>",
    "<|im_assistant|>",
    "<|im_system|>",
    "<|im_middle|>",
    "<|im_end|>",
    "<|media_start|>",
    "<|media_content|>",
    "<|media_end|>",
    "<|media_pad|>",
)

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The checkpoints allow 4096 patches per image; 64 keeps a test image at 16 tokens or fewer.
_TEST_PATCH_LIMIT = 64


class KimiVLImageProcessor(BaseImageProcessor):
    """Stand-in for Kimi-VL's remote-code image processor (MoonViT input).

    An image with more than ``in_token_limit`` patches is shrunk (bicubic) to
    fit, then padded on the right and bottom to whole merge windows
    (``pad_input=True``, as the checkpoints set) or centre-cropped to whole
    patches, normalised, and cut into ``patch_size`` squares, row by row.

    Args:
        patch_size: Side of a square patch, in pixels.
        pad_input: Pad to multiples of ``merge_kernel_size`` patches instead of cropping.
        image_mean: Per-channel mean for normalisation.
        image_std: Per-channel standard deviation for normalisation.
        in_token_limit: Most patches an image may have before it is shrunk.
        merge_kernel_size: Patches merged into one token, ``(rows, columns)``.
    """

    model_input_names: ClassVar[list[str]] = ["pixel_values", "image_grid_hws"]

    def __init__(
        self,
        patch_size: int = 14,
        pad_input: bool = False,
        image_mean: Sequence[float] = _CLIP_MEAN,
        image_std: Sequence[float] = _CLIP_STD,
        in_token_limit: int = 4096,
        merge_kernel_size: Sequence[int] = (2, 2),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.pad_input = pad_input
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.in_token_limit = in_token_limit
        self.merge_kernel_size = list(merge_kernel_size)

    def fit(self, image: Image.Image) -> Image.Image:
        """Shrink ``image`` to the patch budget, then pad or crop it to whole patches."""
        patch = self.patch_size
        width, height = image.size
        patches = (width // patch) * (height // patch)
        if patches > self.in_token_limit:
            scale = math.sqrt(self.in_token_limit / patches)
            image = image.resize(
                (int(width * scale), int(height * scale)), Image.Resampling.BICUBIC
            )
            width, height = image.size
        if self.pad_input:
            rows, columns = self.merge_kernel_size
            padded = Image.new(
                image.mode, (_round_up(width, columns * patch), _round_up(height, rows * patch))
            )
            padded.paste(image, (0, 0))
            image = padded
        else:
            kept_width, kept_height = width - width % patch, height - height % patch
            left, top = (width - kept_width) // 2, (height - kept_height) // 2
            image = image.crop((left, top, left + kept_width, top + kept_height))
        if image.width // patch >= 512 or image.height // patch >= 512:
            msg = f"an image of {image.width}x{image.height} pixels exceeds the position embedding"
            raise ValueError(msg)
        return image

    def patches(self, image: Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
        """Normalised ``[rows * columns, 3, patch, patch]`` patches and ``(rows, columns)``."""
        pixels = torch.from_numpy(
            np.asarray(self.fit(image).convert("RGB"), dtype=np.float32) / 255.0
        )
        mean, std = torch.tensor(self.image_mean), torch.tensor(self.image_std)
        pixels = ((pixels - mean) / std).permute(2, 0, 1)
        channels, height, width = pixels.shape
        patch = self.patch_size
        rows, columns = height // patch, width // patch
        grid = pixels.reshape(channels, rows, patch, columns, patch).permute(1, 3, 0, 2, 4)
        return grid.reshape(rows * columns, channels, patch, patch), (rows, columns)

    def preprocess(
        self, images: Any, return_tensors: str | None = None, **kwargs: Any
    ) -> BatchFeature:
        """Patches of every image, concatenated, and each image's ``(rows, columns)`` grid."""
        images = transformers.image_utils.make_flat_list_of_images(images)
        pixel_values, grids = [], []
        for image in images:
            if not isinstance(image, Image.Image):
                image = transformers.image_utils.to_pil_image(image)
            patches, grid = self.patches(image)
            pixel_values.append(patches)
            grids.append(grid)
        data = {"pixel_values": torch.cat(pixel_values), "image_grid_hws": np.array(grids)}
        return BatchFeature(data=data, tensor_type=return_tensors)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class KimiVLProcessorKwargs(ProcessingKwargs, total=False):
    """Call defaults of [`KimiVLProcessor`][vlm_collate.testing.families.kimi_vl.KimiVLProcessor]:
    no padding unless asked."""

    # A TypedDict body: a plain assignment, as transformers' own processors write it.
    _defaults = {"text_kwargs": {"padding": False}, "images_kwargs": {}}  # noqa: RUF012


class KimiVLProcessor(ProcessorMixin):
    """Stand-in for Kimi-VL's remote-code ``KimiVLProcessor`` (``processing_kimi_vl.py``).

    ``processor(images=..., text=..., **kwargs)`` runs the image processor,
    replaces the i-th ``<|media_pad|>`` of the texts by as many copies as image
    i has merged patches (``image_grid_hws[i].prod() // 4``), and tokenizes the
    texts with the remaining keyword arguments.

    Args:
        image_processor: A
        [`KimiVLImageProcessor`][vlm_collate.testing.families.kimi_vl.KimiVLImageProcessor].
        tokenizer: The tokenizer, holding Kimi's control tokens.
        chat_template: The Kimi-VL chat template.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.image_token = "<|media_pad|>"
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any) -> BatchFeature:
        if images is None and text is None:
            msg = "You have to specify at least one of `images` or `text`."
            raise ValueError(msg)
        options = self._merge_kwargs(
            KimiVLProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        image_inputs: dict[str, Any] = {}
        if images is not None:
            image_inputs = dict(self.image_processor(images, **options["images_kwargs"]))
        texts = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(item, str) for item in texts):
            msg = "Invalid input text. Please provide a string, or a list of strings"
            raise ValueError(msg)
        if images is not None:
            texts = self.expand_placeholders(texts, image_inputs["image_grid_hws"])
        text_inputs = self.tokenizer(texts, **options["text_kwargs"])
        return BatchFeature(data={**text_inputs, **image_inputs})

    def expand_placeholders(self, texts: list[str], grids: Any) -> list[str]:
        """Repeat the i-th ``<|media_pad|>`` once per merged patch of image i."""
        rows, columns = self.image_processor.merge_kernel_size
        counts = iter([int(np.prod(np.asarray(grid))) // (rows * columns) for grid in grids])
        expanded = []
        for text in texts:
            pieces = text.split(self.image_token)
            out = [pieces[0]]
            for piece in pieces[1:]:
                out.append(self.image_token * next(counts))
                out.append(piece)
            expanded.append("".join(out))
        return expanded

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        """The tokenizer's ``batch_decode``."""
        return cast("list[str]", self.tokenizer.batch_decode(*args, **kwargs))

    def decode(self, *args: Any, **kwargs: Any) -> str:
        """The tokenizer's ``decode``."""
        return cast("str", self.tokenizer.decode(*args, **kwargs))

    @property
    def model_input_names(self) -> list[str]:
        names = self.tokenizer.model_input_names + self.image_processor.model_input_names
        return list(dict.fromkeys(names))


SPEC = FamilySpec(
    name="kimi_vl",
    processor_class="KimiVLProcessor",
    tokenizer_base="qwen2",
    description="Kimi-VL (remote-code stand-in): <|im_user|> turns, <|media_pad|>, 14 px patches.",
    template="kimi_vl.jinja",
)


def add_special_tokens(
    tokenizer: transformers.PreTrainedTokenizerBase, tokens: Sequence[str]
) -> None:
    """Add ``tokens`` as special tokens that the vocabulary does not hold yet."""
    vocabulary = tokenizer.get_vocab()
    new = [token for token in tokens if token not in vocabulary]
    tokenizer.add_special_tokens({"extra_special_tokens": new}, replace_extra_special_tokens=False)


def _build_kimi_vl(
    spec: FamilySpec,
    tokenizer: transformers.PreTrainedTokenizerBase,
    template: str,
    options: Options,
) -> transformers.ProcessorMixin:
    add_special_tokens(tokenizer, KIMI_VL_SPECIAL_TOKENS)
    image_processor = KimiVLImageProcessor(
        pad_input=True,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        in_token_limit=_TEST_PATCH_LIMIT,
    )
    return KimiVLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=template
    )


register_family(SPEC, _build_kimi_vl)
