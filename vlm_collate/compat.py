"""NeMo Automodel compatibility: NeMo Automodel's collate function names and signatures.

An existing training config switches to this package by changing its import
path, e.g. ``nemo_automodel.components.datasets.vlm.collate_fns.qwen2_5_collate_fn``
becomes ``vlm_collate.compat.qwen2_5_collate_fn``. Each function is a thin
wrapper over a collator class. Two things differ from NeMo Automodel on purpose:
bad input raises [`VLMCollateError`][vlm_collate.VLMCollateError] (with the
collators' default policies) instead of training on a nan loss, and padding is
never labelled, even in rows cut by truncation.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch

from ._padding import padded_side, token_axis_keys
from ._pipeline import BaseCollator
from ._samples import Sample
from .families.default import DefaultCollator
from .families.gemma4 import Gemma4Collator, insert_after_marker, thinking_ids
from .families.kimi_k25 import KimiK25VLCollator
from .families.kimi_vl import KimiVLCollator
from .families.llava_onevision import LlavaOneVisionCollator
from .families.nemotron_omni import NemotronOmniCollator
from .families.nemotron_parse import DEFAULT_TASK_PROMPT, NemotronParseCollator
from .families.phi4_mm import Phi4MMCollator
from .families.qwen_omni import Qwen3OmniCollator
from .families.qwen_vl import Qwen25VLCollator
from .labels import (
    DerivedTemplateMarker,
    FirstOf,
    ImStartMarker,
    LabelStrategy,
    LegacyBPEMatch,
    tokenizer_of,
)
from .media import MEDIA_KEYS
from .pretokenized import NeatPackedCollator, PreTokenizedCollator
from .robust import make_robust_collate

__all__ = [
    "COLLATE_FNS",
    "build_labels",
    "build_labels_from_template",
    "default_collate_fn",
    "gemma4_inject_thinking_prefix",
    "gemma4_prefix_collate_fn",
    "kimi_k25_vl_collate_fn",
    "kimi_vl_collate_fn",
    "llava_onevision_collate_fn",
    "make_robust_collate",
    "neat_packed_vlm_collater",
    "nemotron_omni_collate_fn",
    "nemotron_parse_collate_fn",
    "pad_collate_fn",
    "phi4_mm_collate_fn",
    "qwen2_5_collate_fn",
    "qwen3_omni_collate_fn",
]

# Processors whose templates NeMo Automodel trusted to be ChatML.
IMSTART_TEMPLATE_PROCESSORS = frozenset(
    {
        "Qwen2VLProcessor",
        "Qwen2_5_VLProcessor",
        "Qwen2_5OmniProcessor",
        "Qwen3VLProcessor",
        "Qwen3VLMoeProcessor",
        "Qwen3OmniMoeProcessor",
    }
)

PostTokenizeHook = Callable[[dict[str, Any], Any], dict[str, Any]]


@attrs.define(kw_only=True)
class _HookedDefaultCollator(DefaultCollator):
    """DefaultCollator whose hook step calls a NeMo-style ``(batch, processor)`` callable."""

    post_tokenize: PostTokenizeHook | None = None

    def hook(self, batch: dict[str, Any], samples: Sequence[Sample]) -> dict[str, Any]:
        if self.post_tokenize is None:
            return batch
        return self.post_tokenize(batch, self.processor)


_CACHE: weakref.WeakKeyDictionary[Any, dict[Any, BaseCollator]] = weakref.WeakKeyDictionary()


def _cached(cls: type, processor: Any, **options: Any) -> Any:
    """Reuse one collator per processor and options (its caches then persist)."""
    key = (cls, tuple(sorted((name, _hashable(value)) for name, value in options.items())))
    try:
        per_processor = _CACHE.setdefault(processor, {})
    except TypeError:
        return cls(processor=processor, **options)
    if key not in per_processor:
        per_processor[key] = cls(processor=processor, **options)
    return per_processor[key]


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return id(value)
    return value


def default_collate_fn(
    examples: Sequence[Mapping[str, Any]],
    processor: Any,
    max_length: int | None = None,
    drop_overlong: bool = False,
    _post_tokenize_hook: PostTokenizeHook | None = None,
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``default_collate_fn`` on [`DefaultCollator`][vlm_collate.DefaultCollator].

    As in NeMo Automodel, ``max_length`` pads every batch to ``max_length``; longer
    samples are truncated (never through media tokens), or dropped by estimate
    first when ``drop_overlong`` is set.
    """
    options = _seed_length_options(max_length, drop_overlong)
    if max_length is not None:
        options["padding"] = "max_length"
    return _cached(_HookedDefaultCollator, processor, post_tokenize=_post_tokenize_hook, **options)(
        examples
    )


def _seed_length_options(max_length: int | None, drop_overlong: bool) -> dict[str, Any]:
    """NeMo Automodel's length rule: cut long samples at ``max_length``, or drop them by
    estimate."""
    if max_length is None:
        return {}
    return {
        "max_length": max_length,
        "drop_overlong": drop_overlong,
        "overlong": "drop" if drop_overlong else "truncate",
    }


def qwen2_5_collate_fn(
    examples: Sequence[Mapping[str, Any]], processor: Any
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``qwen2_5_collate_fn`` on
    [`Qwen25VLCollator`][vlm_collate.Qwen25VLCollator]."""
    return _cached(Qwen25VLCollator, processor)(examples)


def qwen3_omni_collate_fn(
    examples: Sequence[Mapping[str, Any]], processor: Any, use_audio_in_video: bool = False
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``qwen3_omni_collate_fn`` on
    [`Qwen3OmniCollator`][vlm_collate.Qwen3OmniCollator]."""
    return _cached(Qwen3OmniCollator, processor, use_audio_in_video=use_audio_in_video)(examples)


def kimi_vl_collate_fn(
    examples: Sequence[Mapping[str, Any]], processor: Any, max_length: int | None = None
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``kimi_vl_collate_fn``: overlong samples dropped, rows padded to
    max_length."""
    options = {} if max_length is None else {"max_length": max_length, "drop_overlong": True}
    return _cached(KimiVLCollator, processor, **options)(examples)


def kimi_k25_vl_collate_fn(
    examples: Sequence[Mapping[str, Any]],
    processor: Any,
    max_length: int | None = None,
    drop_overlong: bool = False,
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``kimi_k25_vl_collate_fn``: image tokens pre-expanded, fixed-length rows.

    As in NeMo Automodel, long samples are truncated (an image cut off becomes
    padding) unless ``drop_overlong`` drops them.
    """
    options = _seed_length_options(max_length, drop_overlong)
    return _cached(KimiK25VLCollator, processor, **options)(examples)


def llava_onevision_collate_fn(
    examples: Sequence[Mapping[str, Any]], processor: Any
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``llava_onevision_collate_fn`` on
    [`LlavaOneVisionCollator`][vlm_collate.LlavaOneVisionCollator]."""
    return _cached(LlavaOneVisionCollator, processor)(examples)


def nemotron_parse_collate_fn(
    examples: Sequence[Mapping[str, Any]], processor: Any, task_prompt: str = DEFAULT_TASK_PROMPT
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``nemotron_parse_collate_fn`` on
    [`NemotronParseCollator`][vlm_collate.NemotronParseCollator]."""
    return _cached(NemotronParseCollator, processor, task_prompt=task_prompt)(examples)


def nemotron_omni_collate_fn(
    examples: Sequence[Mapping[str, Any]],
    processor: Any,
    max_length: int | None = None,
    max_video_frames: int = 8,
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``nemotron_omni_collate_fn`` on
    [`NemotronOmniCollator`][vlm_collate.NemotronOmniCollator]."""
    return _cached(
        NemotronOmniCollator, processor, max_length=max_length, max_video_frames=max_video_frames
    )(examples)


def phi4_mm_collate_fn(
    examples: Sequence[Mapping[str, Any]], processor: Any
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``phi4_mm_collate_fn`` on [`Phi4MMCollator`][vlm_collate.Phi4MMCollator]."""
    return _cached(Phi4MMCollator, processor)(examples)


def gemma4_prefix_collate_fn(
    examples: Sequence[Mapping[str, Any]], processor: Any, max_length: int | None = None
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``gemma4_prefix_collate_fn`` on
    [`Gemma4Collator`][vlm_collate.Gemma4Collator]."""
    return _cached(Gemma4Collator, processor, max_length=max_length)(examples)


def gemma4_inject_thinking_prefix(
    batch: dict[str, torch.Tensor], processor: Any
) -> dict[str, torch.Tensor]:
    """Insert Gemma 4's empty thinking channel after every ``<|turn>model\\n`` in a tokenized batch.

    Every tensor shaped like ``input_ids`` grows with it (``attention_mask``
    with ones, the others with zeros); a no-op for tokenizers without Gemma 4's
    tokens.
    """
    tokenizer = tokenizer_of(processor)
    ids = thinking_ids(tokenizer)
    if ids is None or "input_ids" not in batch:
        return batch
    mask = batch.get("attention_mask")
    side = padded_side(mask) if isinstance(mask, torch.Tensor) else tokenizer.padding_side
    pad_id = tokenizer.pad_token_id if isinstance(tokenizer.pad_token_id, int) else 0
    grown = insert_after_marker(
        batch,
        *ids,
        keys=token_axis_keys(batch, exclude=MEDIA_KEYS),
        padding_side=side,
        pad_id=pad_id,
    )
    batch.update(grown)
    return batch


def pad_collate_fn(
    examples: Sequence[Mapping[str, Any]], processor: Any, max_length: int | None = None
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``pad_collate_fn`` on
    [`PreTokenizedCollator`][vlm_collate.PreTokenizedCollator].

    As in NeMo Automodel: rows padded to ``max_length`` when given, bfloat16 pixels,
    labels shifted; a row longer than ``max_length`` is truncated, except
    through media tokens (then the sample is dropped and reported).
    """
    options: dict[str, Any] = {"pixel_dtype": torch.bfloat16}
    if max_length is not None:
        options.update(max_length=max_length, padding="max_length", overlong="truncate")
    return _cached_plain(PreTokenizedCollator, processor, **options)(examples)


def neat_packed_vlm_collater(
    batch: list[dict],
    padding_idx: int = 0,
    max_length: int | None = None,
    attn_implementation: str = "sdpa",
) -> dict:
    """NeMo Automodel's ``neat_packed_vlm_collater`` on
    [`NeatPackedCollator`][vlm_collate.NeatPackedCollator]."""
    return NeatPackedCollator(
        padding_idx=padding_idx, max_length=max_length, attn_implementation=attn_implementation
    )(batch)


def _cached_plain(cls: type, processor: Any, **options: Any) -> Any:
    """Like `_cached`, for collators that take ``processor`` as an option."""
    if processor is None:
        return cls(**options)
    return _cached(cls, processor, **options)


def build_labels(
    input_ids_batch: torch.Tensor,
    conversations: Sequence[Sequence[dict[str, Any]]],
    processor: Any,
) -> torch.Tensor:
    """NeMo Automodel's BPE pattern-matching labels
    ([`LegacyBPEMatch`][vlm_collate.LegacyBPEMatch])."""
    return LegacyBPEMatch().build(input_ids_batch, conversations, processor)


def build_labels_from_template(
    input_ids_batch: torch.Tensor,
    conversations: Sequence[Sequence[dict[str, Any]]],
    processor: Any,
) -> torch.Tensor:
    """NeMo Automodel's chain: ChatML ids for Qwen processors, derived markers, then BPE
    matching."""
    return _template_chain(type(processor).__name__).build(
        input_ids_batch, conversations, processor
    )


def _template_chain(processor_name: str) -> LabelStrategy:
    if processor_name in IMSTART_TEMPLATE_PROCESSORS:
        return FirstOf(ImStartMarker(), DerivedTemplateMarker(), LegacyBPEMatch())
    return FirstOf(DerivedTemplateMarker(), LegacyBPEMatch())


COLLATE_FNS: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
    "Qwen2_5_VLProcessor": qwen2_5_collate_fn,
    "Qwen3OmniMoeProcessor": qwen3_omni_collate_fn,
    "KimiVLProcessor": kimi_vl_collate_fn,
    "KimiK25Processor": kimi_k25_vl_collate_fn,
    "Kimi_K25Processor": kimi_k25_vl_collate_fn,
    "LlavaOneVisionProcessor": llava_onevision_collate_fn,
    "LlavaOnevisionProcessor": llava_onevision_collate_fn,
    "NemotronParseProcessor": nemotron_parse_collate_fn,
    "NemotronH_Nano_Omni_Reasoning_V3Processor": nemotron_omni_collate_fn,
    "NemotronH_Omni_Reasoning_V3Processor": nemotron_omni_collate_fn,
    "Phi4MMProcessor": phi4_mm_collate_fn,
    "Phi4MultimodalProcessor": phi4_mm_collate_fn,
    "Gemma4Processor": gemma4_prefix_collate_fn,
    "default": default_collate_fn,
}
