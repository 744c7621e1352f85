"""``KimiK25VLCollator``: Kimi K2.5, with image tokens expanded before the model runs.

Kimi K2.5's remote-code processor (``KimiK25Processor``) leaves one
``<|media_pad|>`` per image and the model widens it to one token per merged
patch. Under pipeline parallelism every stage needs the final sequence length
up front, so the collator does the widening itself, from ``grid_thws``, and
pads every row to ``max_length``. ``transformers``' own port
(``Kimi_K25Processor``) widens the placeholders already; the same collator
takes it and leaves its rows as they are.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import attrs
import torch

from .._options import one_of, optional
from .._pipeline import BaseCollator
from .._samples import Sample
from .._tokens import single_token_id
from ..errors import ConfigurationError, MediaError, VLMCollateError
from ..labels import (
    LabelStrategy,
    SkipEmptyThink,
    with_fallbacks,
)
from ..media import Conversations, MediaStrategy, PlainMedia, stack_media
from ..registry import register_collator
from .kimi_vl import KimiTurnMarker, _max_length_padding

__all__ = [
    "KimiK25VLCollator",
    "PreExpandedImages",
    "expand_placeholders",
    "tokens_per_image",
]

# Indices of the samples the template step truncated; the check step reports them.


def tokens_per_image(
    grid_thws: torch.Tensor, merge_kernel_size: tuple[int, int] = (2, 2)
) -> torch.Tensor:
    """Tokens each image becomes: ``(h // merge_h) * (w // merge_w)`` for each ``[t, h, w]`` row."""
    merge_h, merge_w = merge_kernel_size
    return (grid_thws[:, 1] // merge_h) * (grid_thws[:, 2] // merge_w)


def expand_placeholders(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, counts: torch.Tensor, placeholder_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat the i-th ``placeholder_id`` of a 1-D row ``counts[i]`` times (and its mask entry).

    Raises:
        ValueError: The row holds a different number of placeholders than ``counts`` has entries.
    """
    is_placeholder = input_ids == placeholder_id
    found = int(is_placeholder.sum())
    if found != counts.numel():
        msg = f"the row holds {found} image placeholders but there are {counts.numel()} images"
        raise ValueError(msg)
    repeats = torch.ones_like(input_ids)
    repeats[is_placeholder] = counts.to(repeats.dtype)
    return input_ids.repeat_interleave(repeats), attention_mask.repeat_interleave(repeats)


@attrs.frozen(kw_only=True)
class PreExpandedImages(PlainMedia):
    """Images for Kimi K2.5, finished as NeMo Automodel did: ``image_grid_hws`` beside
    ``grid_thws``.

    The template step already gathered pixels, ``grid_thws`` and
    ``n_images_per_sample`` of the images that survived truncation; this adds
    each image's ``(h, w)`` patch grid and casts the pixels.
    """

    def finalize(
        self,
        batch: dict[str, Any],
        conversations: Conversations,
        *,
        processor: Any,
        pixel_dtype: torch.dtype | None,
    ) -> dict[str, Any]:
        pixels = batch.get("pixel_values")
        if (
            pixel_dtype is not None
            and isinstance(pixels, torch.Tensor)
            and pixels.is_floating_point()
        ):
            batch["pixel_values"] = pixels.to(pixel_dtype)
        grids = batch.get("grid_thws")
        if isinstance(grids, torch.Tensor):
            batch["image_grid_hws"] = grids[:, 1:]
        return batch


@attrs.frozen
class _Row:
    """One processed sample: its token row and the images that kept their tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    media: dict[str, torch.Tensor]
    truncated: bool


@register_collator("KimiK25Processor", "Kimi_K25Processor")
@attrs.define(kw_only=True)
class KimiK25VLCollator(BaseCollator):
    """NeMo Automodel's ``kimi_k25_vl_collate_fn``: fixed-length rows with image tokens
    pre-expanded.

    Each sample is processed alone. Its single ``<|media_pad|>`` per image is
    widened to ``(h // 2) * (w // 2)`` tokens from ``grid_thws`` (rows that
    ``Kimi_K25Processor`` already widened stay as they are), and with a
    ``max_length`` every row is padded to exactly ``max_length`` on the right,
    so the model never changes the sequence length. With
    ``overlong="truncate"`` a long row is cut at ``max_length``; if that cuts
    into its images, all of its image tokens become padding and its pixels are
    left out (``n_images_per_sample`` counts 0 for it). The batch carries
    ``pixel_values``, ``grid_thws``, ``image_grid_hws`` and
    ``n_images_per_sample`` when any image is left. An empty
    ``<think></think>`` heading an answer is not trained.
    """

    merge_kernel_size: ClassVar[tuple[int, int]] = (2, 2)
    media_keys: ClassVar[frozenset[str]] = BaseCollator.media_keys | {"grid_thws", "image_grid_hws"}

    padding: Literal["longest", "max_length"] = attrs.field(
        default=attrs.Factory(_max_length_padding, takes_self=True),
        validator=one_of("longest", "max_length"),
    )
    padding_side: Literal["left", "right"] | None = attrs.field(
        default="right", validator=optional(one_of("left", "right"))
    )

    def default_label_strategy(self) -> LabelStrategy:
        return SkipEmptyThink(with_fallbacks(KimiTurnMarker()))

    def default_media_strategy(self) -> MediaStrategy:
        return PreExpandedImages()

    def template(self, samples: Sequence[Sample]) -> dict[str, Any]:
        """Process every sample alone, widen its image placeholders, then stack the rows."""
        placeholder_id = self.media_token_id()
        rows = [self.process_sample(sample, placeholder_id) for sample in samples]
        return self._stack(rows, samples)

    def supported_media(self) -> frozenset[str]:
        """Images only: NeMo Automodel passes nothing else, and video chunks need Moonshot's
        reader."""
        return frozenset({"image"})

    def media_token_id(self) -> int:
        """The image placeholder id: the processor's own, else ``<|media_pad|>``'s."""
        for name in ("media_placeholder_token_id", "image_token_id"):
            token_id = getattr(self.processor, name, None)
            if isinstance(token_id, int) and not isinstance(token_id, bool):
                return token_id
        token_id = single_token_id(self.tokenizer, "<|media_pad|>")
        if token_id is None:
            msg = (
                f"{type(self.processor).__name__} names no image placeholder and its "
                "vocabulary lacks '<|media_pad|>'."
            )
            raise ConfigurationError(msg)
        return token_id

    def process_sample(self, sample: Sample, placeholder_id: int) -> _Row:
        """Render, process and widen one sample; cut it at ``max_length`` when truncating."""
        encoded = self._encode(sample)
        input_ids = encoded["input_ids"][0]
        mask = encoded.get("attention_mask")
        mask = torch.ones_like(input_ids) if mask is None else mask[0]
        media: dict[str, torch.Tensor] = {
            key: encoded[key]
            for key in ("pixel_values", "grid_thws", "image_grid_thw")
            if key in encoded
        }
        grids = media.get("grid_thws", media.get("image_grid_thw"))
        expected = 0
        if grids is not None:
            media["grid_thws"] = grids
            counts = tokens_per_image(grids, self.merge_kernel_size)
            expected = int(counts.sum())
            if int((input_ids == placeholder_id).sum()) != expected:
                try:
                    input_ids, mask = expand_placeholders(input_ids, mask, counts, placeholder_id)
                except ValueError as exc:
                    raise MediaError(str(exc), sample_index=sample.index) from exc
        cut = (
            self.overlong == "truncate"
            and self.max_length is not None
            and input_ids.numel() > self.max_length
        )
        if cut:
            input_ids, mask = input_ids[: self.max_length], mask[: self.max_length]
            if grids is not None and int((input_ids == placeholder_id).sum()) != expected:
                input_ids = input_ids.masked_fill(
                    input_ids == placeholder_id, self._pad_value("input_ids")
                )
                media = {}
        return _Row(input_ids=input_ids, attention_mask=mask, media=media, truncated=cut)

    def _encode(self, sample: Sample) -> dict[str, Any]:
        text = self.render(sample)
        images = self.gather_media([sample]).get("images", [])
        if not _takes_medias(self.processor):
            return self.call_processor(
                [sample], text=[text], **({"images": images} if images else {})
            )
        if images:
            medias = [{"type": "image", "image": image} for image in images]
            return self.call_processor([sample], text=text, medias=medias)
        try:  # Kimi's remote processor refuses text without medias; it only tokenizes then
            return dict(self.tokenizer(text, return_tensors="pt"))
        except Exception as exc:
            if isinstance(exc, VLMCollateError):
                raise
            raise self._processor_error([sample], exc) from exc

    def _stack(self, rows: Sequence[_Row], samples: Sequence[Sample]) -> dict[str, Any]:
        side = getattr(self.tokenizer, "padding_side", "right")
        pad = torch.nn.utils.rnn.pad_sequence
        batch: dict[str, Any] = {
            "input_ids": pad(
                [row.input_ids for row in rows],
                batch_first=True,
                padding_value=self._pad_value("input_ids"),
                padding_side=side,
            ),
            "attention_mask": pad(
                [row.attention_mask for row in rows],
                batch_first=True,
                padding_value=0,
                padding_side=side,
            ),
        }
        batch.update(
            stack_media(
                [row.media for row in rows],
                pixel_keys=("pixel_values",),
                concatenated_keys=("grid_thws", "image_grid_thw"),
                counted_by={"image": "grid_thws"},
                owners=[sample.index for sample in samples],
            )
        )
        self.current_report().truncated.extend(
            sample.index for row, sample in zip(rows, samples, strict=True) if row.truncated
        )
        return batch


def _takes_medias(processor: Any) -> bool:
    """True for processors called as ``processor(text=..., medias=[...])`` (Kimi's remote code)."""
    try:
        return "medias" in inspect.signature(processor).parameters
    except (TypeError, ValueError):
        return False
