"""``NemotronParseCollator``: Nemotron-Parse, encoder-decoder OCR, no chat template."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import attrs
import torch

from .._options import non_negative_int_or_none, one_of, string
from .._pipeline import BaseCollator
from .._samples import Sample
from ..errors import ConfigurationError, LabelStrategyError, MediaError, SampleError
from ..labels import IGNORE_INDEX, LabelStrategy, tokenizer_of
from ..media import MediaStrategy, PlainMedia
from ..registry import register_collator

__all__ = ["DEFAULT_TASK_PROMPT", "NemotronParseCollator", "PromptPrefixMask"]

#: Nemotron-Parse's full task: boxes, classes and markdown text.
DEFAULT_TASK_PROMPT = "</s><s><predict_bbox><predict_classes><output_markdown>"
_NO_START_TOKEN = (
    "Nemotron-Parse needs a decoder start token, and the tokenizer has no "
    "decoder_start_token_id, BOS or EOS; pass decoder_start_token_id."
)


@attrs.frozen(kw_only=True)
class PromptPrefixMask(LabelStrategy):
    """Trains everything after a fixed prompt: the target and the closing end-of-sequence token.

    The prompt's token ids are looked up in each row (the first occurrence);
    what precedes and includes them is masked. The prompt must tokenize the
    same alone as in the row, which holds when it ends with a special token,
    as Nemotron-Parse's task prompts do.

    Args:
        prompt: The text every row starts with (after the tokenizer's own BOS).
    """

    prompt: str

    def build(self, input_ids: torch.Tensor, conversations: Any, processor: Any) -> torch.Tensor:
        encoded = tokenizer_of(processor)(self.prompt, add_special_tokens=False)["input_ids"]
        pattern = torch.tensor(encoded, dtype=input_ids.dtype, device=input_ids.device)
        width = pattern.numel()
        if width == 0 or width > input_ids.shape[1]:
            msg = (
                f"the prompt {self.prompt!r} ({width} tokens) cannot occur in rows of "
                f"{input_ids.shape[1]} tokens."
            )
            raise LabelStrategyError(msg)
        hits = (input_ids.unfold(1, width, 1) == pattern).all(dim=-1)
        missing = (~hits.any(dim=1)).nonzero().flatten().tolist()
        if missing:
            msg = f"rows {missing} do not contain the prompt {self.prompt!r} as tokens {encoded}."
            raise LabelStrategyError(msg)
        target_start = hits.to(torch.int8).argmax(dim=1) + width
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        trained = positions[None, :] >= target_start[:, None]
        return torch.where(trained, input_ids, torch.full_like(input_ids, IGNORE_INDEX))


@register_collator("NemotronParseProcessor")
@attrs.define(kw_only=True)
class NemotronParseCollator(BaseCollator):
    """NeMo Automodel's ``nemotron_parse_collate_fn``.

    Nemotron-Parse has no chat template: each row is ``task_prompt`` followed
    by the first assistant message's text, tokenized with the tokenizer's
    own ``<s>`` / ``</s>``, and the sample's single page image. Only the
    target and its ``</s>`` are trained ([`PromptPrefixMask`][vlm_collate.PromptPrefixMask]). The
    batch
    adds ``decoder_input_ids`` and ``decoder_attention_mask``: with
    ``shift_labels`` (NeMo Automodel's layout) they are the shifted rows; without,
    the rows shifted right behind the decoder start token. Pixels default to
    bfloat16.

    Args:
        task_prompt: The task tokens every row starts with.
        decoder_start_token_id: First decoder input; by default the tokenizer's
            ``decoder_start_token_id``, else its BOS, else its EOS (as NeMo Automodel).
            Nemotron-Parse's model config uses ``</s>``.
    """

    default_pixel_dtype: ClassVar[torch.dtype | None] = torch.bfloat16

    task_prompt: str = attrs.field(default=DEFAULT_TASK_PROMPT, validator=string)
    decoder_start_token_id: int | None = attrs.field(
        default=None, validator=non_negative_int_or_none
    )
    padding_side: Literal["right"] = attrs.field(
        default="right", validator=one_of("right", why="Nemotron-Parse's decoder inputs")
    )

    def default_label_strategy(self) -> LabelStrategy:
        return PromptPrefixMask(prompt=self.task_prompt)

    def default_media_strategy(self) -> MediaStrategy:
        return PlainMedia()

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.drop_overlong:
            msg = (
                "'drop_overlong' estimates lengths from a chat template, which Nemotron-Parse "
                "lacks; use max_length with the 'overlong' policy."
            )
            raise ConfigurationError(msg)
        if not isinstance(getattr(self.tokenizer, "pad_token_id", None), int):
            msg = (
                f"Nemotron-Parse needs the tokenizer's pad_token_id "
                f"({type(self.tokenizer).__name__} has none); set tokenizer.pad_token."
            )
            raise ConfigurationError(msg)
        if self.start_token_id() is None:
            raise ConfigurationError(_NO_START_TOKEN)

    def start_token_id(self) -> int | None:
        """The decoder start token in effect."""
        for candidate in (
            self.decoder_start_token_id,
            getattr(self.tokenizer, "decoder_start_token_id", None),
            getattr(self.tokenizer, "bos_token_id", None),
            getattr(self.tokenizer, "eos_token_id", None),
        ):
            if isinstance(candidate, int) and not isinstance(candidate, bool):
                return candidate
        return None

    def template(self, samples: Sequence[Sample]) -> dict[str, Any]:
        images = [_page_image(sample) for sample in samples]
        texts = [self.task_prompt + _target(sample) for sample in samples]
        return self.call_processor(samples, images=images, text=texts)

    def pad(self, batch: dict[str, Any], samples: Sequence[Sample]) -> dict[str, Any]:
        batch = super().pad(batch, samples)
        tokens, mask = batch["input_ids"], self._attention_mask(batch)
        if self.shift_labels:  # row t already predicts labels[t]: the rows are the decoder inputs
            batch["decoder_input_ids"], batch["decoder_attention_mask"] = (
                tokens.clone(),
                mask.clone(),
            )
        else:
            start_id = self.start_token_id()
            if start_id is None:  # checked when the collator is set up
                raise ConfigurationError(_NO_START_TOKEN)
            start = torch.full_like(tokens[:, :1], start_id)
            batch["decoder_input_ids"] = torch.cat([start, tokens[:, :-1]], dim=1)
            batch["decoder_attention_mask"] = torch.cat(
                [torch.ones_like(mask[:, :1]), mask[:, :-1]], dim=1
            )
        return batch


def _page_image(sample: Sample) -> Any:
    images = [
        (position, item["image"])
        for position, message in enumerate(sample.conversation)
        if isinstance(message.get("content"), list)
        for item in message["content"]
        if item.get("type") == "image"
    ]
    if len(images) != 1:
        msg = f"Nemotron-Parse reads exactly one page image per sample (found {len(images)})"
        position = images[1][0] if images else None
        raise MediaError(msg, sample_index=sample.index, message_index=position)
    return images[0][1]


def _target(sample: Sample) -> str:
    answers = [
        (position, message)
        for position, message in enumerate(sample.conversation)
        if message.get("role") == "assistant"
    ]
    if len(answers) != 1:
        msg = (
            "Nemotron-Parse trains on one assistant message holding the target text "
            f"(found {len(answers)})"
        )
        position = answers[1][0] if answers else None
        raise SampleError(msg, sample_index=sample.index, message_index=position)
    content = answers[0][1].get("content")
    if isinstance(content, str):
        return content
    return "".join(item["text"] for item in content or [] if item.get("type") == "text")
