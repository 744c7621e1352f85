"""Kimi K2.5: the real ``Kimi_K25Processor`` and a stand-in for the remote ``KimiK25Processor``.

Both run on the Qwen2 vocabulary with Kimi K2.5's chat, media and tool-call
tokens added (``<|im_end|>``, ``<think>`` and ``</think>`` keep the ids the
vocabulary already gives them) and share one chat template.

* ``kimi_k25`` is ``transformers.Kimi_K25Processor``: called with
  ``images=``, it widens each ``<|media_pad|>`` to one token per merged patch
  and returns ``pixel_values`` and ``image_grid_thw``.
* ``kimi_k25_remote`` is
[`KimiK25Processor`][vlm_collate.testing.families.kimi_k25.KimiK25Processor], a stand-in for the
  checkpoint's own ``kimi_k25_processor.py`` (what NeMo Automodel's `collate_fns` was
  written against): called with ``text=`` and ``medias=[{"type": "image",
  "image": ...}]``, it leaves one ``<|media_pad|>`` per image and returns
  ``pixel_values`` and ``grid_thws``. Its pixels come from
  ``Kimi_K25ImageProcessor``, the port of the same resize-and-patchify rule.

Images are capped at 8 x 8 patches of 14 px and 64 patches in all, so an image
costs at most 16 tokens.
"""

from __future__ import annotations

from typing import Any, cast

import transformers
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .._processors import FamilySpec, Options, register_family
from .kimi_vl import add_special_tokens

__all__ = ["KIMI_K25_SPECIAL_TOKENS", "KimiK25Processor"]

#: Kimi K2.5's chat, media and tool-call control tokens.
KIMI_K25_SPECIAL_TOKENS = (
    "<|im_user|>",
    "<|im_assistant|>",
    "<|im_system|>",
    "<|im_middle|>",
    "<|im_end|>",
    "<|media_begin|>",
    "<|media_content|>",
    "<|media_end|>",
    "<|media_pad|>",
    "<|kimi_k25_video_placeholder|>",
    "<|tool_calls_section_begin|>",
    "<|tool_calls_section_end|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
)

_PATCH_SIZE = 14
_MERGE_SIZE = 2
_PATCHES_PER_SIDE = 8
_PATCHES = 64


class KimiK25Processor(ProcessorMixin):
    """Stand-in for Kimi K2.5's remote-code ``KimiK25Processor`` (images only).

    ``processor(text=..., medias=[...])`` tokenizes the text as it is (one
    ``<|media_pad|>`` per image stays one token) and returns the media
    processor's ``pixel_values`` and ``grid_thws``; ``processor(messages=...)``
    renders the messages first. Like the original, it refuses text without
    medias. Video chunks, which need Moonshot's own video reader, are not
    supported.

    Args:
        image_processor: A ``Kimi_K25ImageProcessor``; also exposed as ``media_processor``.
        tokenizer: The tokenizer, holding Kimi K2.5's control tokens.
        chat_template: The Kimi K2.5 chat template.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.media_processor = image_processor
        self.video_placeholder = "<|kimi_k25_video_placeholder|>"

    def __call__(
        self,
        messages: list[dict[str, Any]] | None = None,
        medias: list[dict[str, Any]] | None = None,
        text: str | None = None,
        return_tensors: str = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        if messages is None and (medias is None or text is None):
            msg = "Provide either 'messages' or both 'medias' and 'text'"
            raise ValueError(msg)
        if medias is None:
            medias = self.medias_of(messages)
        if text is None:
            text = self.tokenizer.apply_chat_template(messages, **kwargs)
        media_inputs = self.preprocess_medias(medias, return_tensors)
        text_inputs = self.tokenizer(text, return_tensors=return_tensors)
        return BatchFeature(data={**text_inputs, **media_inputs})

    def preprocess_medias(
        self, medias: list[dict[str, Any]], return_tensors: str | None
    ) -> dict[str, Any]:
        """``pixel_values`` and one ``grid_thws`` row ``[t, h, w]`` per image."""
        for media in medias:
            if media.get("type") != "image":
                msg = f"unsupported media type: {media.get('type')}"
                raise ValueError(msg)
        processed = self.media_processor(
            [media["image"] for media in medias], return_tensors=return_tensors
        )
        return {"pixel_values": processed["pixel_values"], "grid_thws": processed["image_grid_thw"]}

    @staticmethod
    def medias_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The image items of the user messages, in order."""
        return [
            {"type": "image", "image": item.get("image", item.get("image_url"))}
            for message in messages
            if message.get("role") == "user" and isinstance(message.get("content"), list)
            for item in message["content"]
            if isinstance(item, dict) and item.get("type") in ("image", "image_url")
        ]

    def apply_chat_template(self, messages: Any, **kwargs: Any) -> Any:
        """The tokenizer's ``apply_chat_template``."""
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        """The tokenizer's ``batch_decode``."""
        return cast("list[str]", self.tokenizer.batch_decode(*args, **kwargs))

    def decode(self, *args: Any, **kwargs: Any) -> str:
        """The tokenizer's ``decode``."""
        return cast("str", self.tokenizer.decode(*args, **kwargs))

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "grid_thws"]


def _image_processor() -> transformers.Kimi_K25ImageProcessor:
    side = {"max_height": _PATCHES_PER_SIDE, "max_width": _PATCHES_PER_SIDE}
    return transformers.Kimi_K25ImageProcessor(
        size=side, patch_size=_PATCH_SIZE, merge_size=_MERGE_SIZE, max_patches=_PATCHES
    )


def _build_kimi_k25(
    spec: FamilySpec,
    tokenizer: transformers.PreTrainedTokenizerBase,
    template: str,
    options: Options,
) -> transformers.ProcessorMixin:
    add_special_tokens(tokenizer, KIMI_K25_SPECIAL_TOKENS)
    video_processor = transformers.Kimi_K25VideoProcessor(
        size={"max_height": _PATCHES_PER_SIDE, "max_width": _PATCHES_PER_SIDE},
        patch_size=_PATCH_SIZE,
        merge_size=_MERGE_SIZE,
        max_patches=_PATCHES,
    )
    return transformers.Kimi_K25Processor(
        image_processor=_image_processor(),
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=template,
    )


def _build_kimi_k25_remote(
    spec: FamilySpec,
    tokenizer: transformers.PreTrainedTokenizerBase,
    template: str,
    options: Options,
) -> transformers.ProcessorMixin:
    add_special_tokens(tokenizer, KIMI_K25_SPECIAL_TOKENS)
    return KimiK25Processor(
        image_processor=_image_processor(), tokenizer=tokenizer, chat_template=template
    )


register_family(
    FamilySpec(
        name="kimi_k25",
        processor_class="Kimi_K25Processor",
        tokenizer_base="qwen2",
        description="Kimi K2.5 (transformers port): <think> blocks, <|media_pad|> widened.",
        template="kimi_k25.jinja",
    ),
    _build_kimi_k25,
)
register_family(
    FamilySpec(
        name="kimi_k25_remote",
        processor_class="KimiK25Processor",
        tokenizer_base="qwen2",
        description="Kimi K2.5 (remote-code stand-in): medias=, one <|media_pad|> per image.",
        template="kimi_k25.jinja",
    ),
    _build_kimi_k25_remote,
)
