"""Seed-compatible functions: NeMo Automodel's collate function names and signatures.

An existing training config switches to this package by changing its import
path, e.g. ``nemo_automodel.components.datasets.vlm.collate_fns.qwen2_5_collate_fn``
becomes ``vlm_collate.compat.qwen2_5_collate_fn``. Each function is a thin
wrapper over a collator class. Two things differ from the seed on purpose:
bad input raises :class:`~vlm_collate.errors.VLMCollateError` (with the
collators' default policies) instead of training on a nan loss, and padding is
never labelled, even in rows cut by truncation.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch

from .base import BaseCollator
from .default import DefaultCollator
from .labels import DerivedTemplateMarker, FirstOf, ImStartMarker, LabelStrategy, LegacyBPEMatch
from .qwen import Qwen25VLCollator
from .samples import Sample

__all__ = [
    "COLLATE_FNS",
    "build_labels",
    "build_labels_from_template",
    "default_collate_fn",
    "qwen2_5_collate_fn",
]

# Processors whose templates the seed trusted to be ChatML.
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
    """DefaultCollator whose hook step calls a seed-style ``(batch, processor)`` callable."""

    post_tokenize: PostTokenizeHook | None = None

    def hook(self, batch: dict[str, Any], samples: Sequence[Sample]) -> dict[str, Any]:
        if self.post_tokenize is None:
            return batch
        return self.post_tokenize(batch, self.processor)


_CACHE: weakref.WeakKeyDictionary[Any, dict[Any, BaseCollator]] = weakref.WeakKeyDictionary()


def _cached(cls: type[BaseCollator], processor: Any, **options: Any) -> BaseCollator:
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
    """The seed's ``default_collate_fn`` on :class:`~vlm_collate.DefaultCollator`.

    As in the seed, ``max_length`` pads every batch to ``max_length``; longer
    samples are truncated (never through media tokens), or dropped by estimate
    first when ``drop_overlong`` is set.
    """
    options: dict[str, Any] = {"post_tokenize": _post_tokenize_hook}
    if max_length is not None:
        options.update(
            max_length=max_length,
            padding="max_length",
            drop_overlong=drop_overlong,
            overlong="drop" if drop_overlong else "truncate",
        )
    return _cached(_HookedDefaultCollator, processor, **options)(examples)


def qwen2_5_collate_fn(
    examples: Sequence[Mapping[str, Any]], processor: Any
) -> dict[str, torch.Tensor]:
    """The seed's ``qwen2_5_collate_fn`` on :class:`~vlm_collate.Qwen25VLCollator`."""
    return _cached(Qwen25VLCollator, processor)(examples)


def build_labels(
    input_ids_batch: torch.Tensor,
    conversations: Sequence[Sequence[dict[str, Any]]],
    processor: Any,
) -> torch.Tensor:
    """The seed's BPE pattern-matching labels (:class:`~vlm_collate.LegacyBPEMatch`)."""
    return LegacyBPEMatch().build(input_ids_batch, conversations, processor)


def build_labels_from_template(
    input_ids_batch: torch.Tensor,
    conversations: Sequence[Sequence[dict[str, Any]]],
    processor: Any,
) -> torch.Tensor:
    """The seed's chain: ChatML ids for Qwen processors, derived markers, then BPE matching."""
    return _template_chain(type(processor).__name__).build(
        input_ids_batch, conversations, processor
    )


def _template_chain(processor_name: str) -> LabelStrategy:
    if processor_name in IMSTART_TEMPLATE_PROCESSORS:
        return FirstOf(ImStartMarker(), DerivedTemplateMarker(), LegacyBPEMatch())
    return FirstOf(DerivedTemplateMarker(), LegacyBPEMatch())


COLLATE_FNS: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
    "Qwen2_5_VLProcessor": qwen2_5_collate_fn,
    "default": default_collate_fn,
}
