"""Compatible functions: NeMo Automodel's collate function names and signatures.

An existing training config switches to this package by changing its import
path, e.g. ``nemo_automodel.components.datasets.vlm.collate_fns.qwen2_5_collate_fn``
becomes ``vlm_collate.compat.qwen2_5_collate_fn``. Each function is a thin
wrapper over a collator class. Two things differ from NeMo Automodel on purpose:
bad input raises `VLMCollateError` (with the
collators' default policies) instead of training on a nan loss, and padding is
never labelled, even in rows cut by truncation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import attrs
import torch

from ._cache import ObjectCache
from ._padding import padded_side, token_axis_keys
from ._padding_free import cu_seq_lens, segment_lengths, varlen_kwargs
from ._pipeline import BaseCollator
from ._samples import Sample
from .errors import BatchError, ConfigurationError, SampleError
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
from .media import MEDIA_KEYS, PIXEL_KEYS
from .pretokenized import NeatPackedCollator, PreTokenizedCollator, block_causal_mask
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
    "packed_sequence_thd_vlm_collater",
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

WEIGHTS = "loss_weights"

PostTokenizeHook = Callable[[dict[str, Any], Any], dict[str, Any]]


@attrs.define(kw_only=True)
class _HookedDefaultCollator(DefaultCollator):
    """DefaultCollator whose hook step calls a NeMo-style ``(batch, processor)`` callable."""

    post_tokenize: PostTokenizeHook | None = None

    def hook(self, batch: dict[str, Any], samples: Sequence[Sample]) -> dict[str, Any]:
        if self.post_tokenize is None:
            return batch
        return self.post_tokenize(batch, self.processor)


_CACHE = ObjectCache()


# NeMo's dataset wrapper marks the placeholder images it adds with this key, and
# NeMo Automodel's functions obey it.
SEED_TRUSTED_KEYS = ("_injected_fake",)


def _cached(cls: type, processor: Any, **options: Any) -> Any:
    """Reuse one collator per processor and options (its caches then persist).

    The NeMo Automodel functions trust ``"_injected_fake"``, as NeMo Automodel did.
    """
    if issubclass(cls, BaseCollator):
        options.setdefault("trusted_keys", SEED_TRUSTED_KEYS)
    key = (cls, tuple(sorted((name, _hashable(value)) for name, value in options.items())))
    return _CACHE.get_or_compute(processor, key, lambda: cls(processor=processor, **options))


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
    return cast(
        "dict[str, torch.Tensor]",
        _cached(_HookedDefaultCollator, processor, post_tokenize=_post_tokenize_hook, **options)(
            examples
        ),
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
    return cast("dict[str, torch.Tensor]", _cached(Qwen25VLCollator, processor)(examples))


def qwen3_omni_collate_fn(
    examples: Sequence[Mapping[str, Any]], processor: Any, use_audio_in_video: bool = False
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``qwen3_omni_collate_fn`` on
    [`Qwen3OmniCollator`][vlm_collate.Qwen3OmniCollator]."""
    return cast(
        "dict[str, torch.Tensor]",
        _cached(Qwen3OmniCollator, processor, use_audio_in_video=use_audio_in_video)(examples),
    )


def kimi_vl_collate_fn(
    examples: Sequence[Mapping[str, Any]], processor: Any, max_length: int | None = None
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``kimi_vl_collate_fn``: overlong samples dropped, rows padded to
    max_length."""
    options = {} if max_length is None else {"max_length": max_length, "drop_overlong": True}
    return cast("dict[str, torch.Tensor]", _cached(KimiVLCollator, processor, **options)(examples))


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
    return cast(
        "dict[str, torch.Tensor]", _cached(KimiK25VLCollator, processor, **options)(examples)
    )


def llava_onevision_collate_fn(
    examples: Sequence[Mapping[str, Any]], processor: Any
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``llava_onevision_collate_fn`` on
    [`LlavaOneVisionCollator`][vlm_collate.LlavaOneVisionCollator]."""
    return cast("dict[str, torch.Tensor]", _cached(LlavaOneVisionCollator, processor)(examples))


def nemotron_parse_collate_fn(
    examples: Sequence[Mapping[str, Any]], processor: Any, task_prompt: str = DEFAULT_TASK_PROMPT
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``nemotron_parse_collate_fn`` on
    [`NemotronParseCollator`][vlm_collate.NemotronParseCollator]."""
    return cast(
        "dict[str, torch.Tensor]",
        _cached(NemotronParseCollator, processor, task_prompt=task_prompt)(examples),
    )


def nemotron_omni_collate_fn(
    examples: Sequence[Mapping[str, Any]],
    processor: Any,
    max_length: int | None = None,
    max_video_frames: int = 8,
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``nemotron_omni_collate_fn`` on
    [`NemotronOmniCollator`][vlm_collate.NemotronOmniCollator]."""
    return cast(
        "dict[str, torch.Tensor]",
        _cached(
            NemotronOmniCollator,
            processor,
            max_length=max_length,
            max_video_frames=max_video_frames,
        )(examples),
    )


def phi4_mm_collate_fn(
    examples: Sequence[Mapping[str, Any]], processor: Any
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``phi4_mm_collate_fn`` on [`Phi4MMCollator`][vlm_collate.Phi4MMCollator]."""
    return cast("dict[str, torch.Tensor]", _cached(Phi4MMCollator, processor)(examples))


def gemma4_prefix_collate_fn(
    examples: Sequence[Mapping[str, Any]], processor: Any, max_length: int | None = None
) -> dict[str, torch.Tensor]:
    """NeMo Automodel's ``gemma4_prefix_collate_fn`` on
    [`Gemma4Collator`][vlm_collate.Gemma4Collator]."""
    return cast(
        "dict[str, torch.Tensor]",
        _cached(Gemma4Collator, processor, max_length=max_length)(examples),
    )


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
    return cast(
        "dict[str, torch.Tensor]",
        _cached_plain(PreTokenizedCollator, processor, **options)(examples),
    )


# NeMo Automodel 0.7 takes these attn_implementation names for its flash-attention varlen layout.
FLASH_ATTENTION_NAMES = frozenset({"flash_attention_2", "flash_attention_3", "flash_attention_4"})
PACKED_MASK_TYPES = ("block_causal", "document_ids", "flash_varlen")


def neat_packed_vlm_collater(
    batch: list[dict[str, Any]],
    padding_idx: int = 0,
    max_length: int | None = None,
    attn_implementation: str | None = None,
    materialize_4d_mask: bool = True,
    *,
    packing: Any = None,
) -> dict[str, Any]:
    """NeMo Automodel 0.7's ``neat_packed_vlm_collater`` on ``NeatPackedCollator``.

    The mask layout comes from ``packing`` (an object with NeMo's
    ``packed_mask_type`` and ``requires_packed_sequence_metadata``), else
    from ``attn_implementation``: None, ``"sdpa"`` and ``"eager"`` give the
    ``"block_causal"`` layout, a 4-D boolean mask (the indexed ``[B, S]`` map
    with ``materialize_4d_mask=False``); ``"flash_attention_2"`` (or ``_3``,
    ``_4``) gives ``"flash_varlen"``: no ``attention_mask`` but
    ``cu_seq_lens_q/k`` and ``max_length_q/k`` over the flattened
    ``[B * S]`` rows, padding runs being segments of their own and no
    segment continuing into the next row. ``"document_ids"`` keeps the
    indexed map. ``_packed_seq_ids`` (the indexed map) is added when a row
    holds two or more documents, without a 4-D mask, or with metadata.
    Pixels are bfloat16 and ``mm_token_type_ids`` is always present, as in
    NeMo.
    """
    mask_type, metadata = _packing_layout(attn_implementation, packing)
    out = NeatPackedCollator(
        padding_idx=padding_idx,
        max_length=max_length,
        attn_implementation="flash_attention_2",  # the indexed map; the layout is built here
        pixel_dtype=torch.bfloat16,
    )(batch)
    document_ids = out.pop("attention_mask")
    out.pop("_packed_seq_ids", None)
    out.setdefault("mm_token_type_ids", torch.zeros_like(out["input_ids"]))
    if mask_type == "flash_varlen":
        out.update(varlen_kwargs(segment_lengths(document_ids)))
    elif mask_type == "block_causal" and materialize_4d_mask:
        out["attention_mask"] = block_causal_mask(document_ids)
    else:
        out["attention_mask"] = document_ids
    if metadata:
        out.update(packed_sequence_metadata(document_ids))
    if bool((document_ids > 1).any()) or not materialize_4d_mask or metadata:
        out["_packed_seq_ids"] = document_ids
    return out


def _packing_layout(attn_implementation: str | None, packing: Any) -> tuple[str, bool]:
    """The packed mask type and whether metadata is asked for, from ``packing`` first."""
    if packing is not None:
        mask_type = getattr(packing, "packed_mask_type", None)
        if mask_type not in PACKED_MASK_TYPES:
            msg = (
                f"'packing.packed_mask_type' must be one of {PACKED_MASK_TYPES} (got {mask_type!r})"
            )
            msg += "."
            raise ConfigurationError(msg)
        return mask_type, bool(getattr(packing, "requires_packed_sequence_metadata", False))
    if attn_implementation in FLASH_ATTENTION_NAMES:
        return "flash_varlen", False
    if attn_implementation in (None, "sdpa", "eager"):
        return "block_causal", False
    names = ", ".join(sorted(FLASH_ATTENTION_NAMES))
    msg = (
        f"'attn_implementation' must be None, 'sdpa', 'eager' or one of {names} "
        f"(got {attn_implementation!r})."
    )
    raise ConfigurationError(msg)


def packed_sequence_metadata(document_ids: torch.Tensor) -> dict[str, Any]:
    """Row-local packed-sequence metadata of an indexed ``[B, S]`` map, as NeMo 0.7 gives it.

    ``packed_token_indices`` ``[B, S]`` (int64): each token's position in its
    row, -1 on padding; ``cu_seqlens`` ``[B, most documents + 1]`` (int32):
    each row's cumulative document lengths from 0, then -1; ``max_seqlen``:
    the longest document, an int.
    """
    real = document_ids > 0
    if not bool(real.any()):
        msg = "a packed batch needs at least one real token (every attention_mask entry is 0)"
        raise BatchError(msg)
    rows, length = document_ids.shape
    indices = torch.arange(length).expand(rows, -1).masked_fill(~real, -1)
    most = max(1, int(document_ids.max()))
    cumulative = torch.full((rows, most + 1), -1, dtype=torch.int32)
    longest = 0
    for row in range(rows):
        counts = torch.bincount(document_ids[row][real[row]], minlength=most + 1)[1:]
        counts = counts[counts > 0]
        cumulative[row, : counts.numel() + 1] = cu_seq_lens(counts.tolist())
        longest = max(longest, int(counts.max()) if counts.numel() else 0)
    return {"packed_token_indices": indices, "cu_seqlens": cumulative, "max_seqlen": longest}


def packed_sequence_thd_vlm_collater(
    batch: list[dict[str, Any]],
    padding_idx: int = 0,
    max_length: int | None = None,
    seq_lens_padding_value: int = -1000,
) -> dict[str, Any]:
    """NeMo Automodel's THD collater (Transformer Engine, context parallelism) on our classes.

    Packs are padded to one length by [`NeatPackedCollator`][vlm_collate.NeatPackedCollator]
    (``input_ids``, ``labels``, ``position_ids`` ``[B, S]`` or mRoPE
    ``[3, B, S]``, media concatenated). Each row's document lengths come from
    the pack's ``seq_lens`` and ``seq_lens_padded`` when it has both, else
    from its indexed ``attention_mask``; the row's padding is added to its
    last document's padded length, so ``seq_lens_padded`` always sums to
    ``S``. Rows are right-padded with ``seq_lens_padding_value`` to the
    most documents in the batch. ``qkv_format`` is ``"thd"``.
    """
    out = NeatPackedCollator(
        padding_idx=padding_idx,
        max_length=max_length,
        attn_implementation="flash_attention_2",
        pixel_dtype=torch.bfloat16,
    )(batch)
    length = out["input_ids"].shape[1]
    rows = [_thd_lengths(pack, index, length) for index, pack in enumerate(batch)]
    most = max(len(real) for real, _ in rows)
    result = {key: out[key] for key in ("input_ids", "labels", "position_ids")}
    for position, key in enumerate(("seq_lens", "seq_lens_padded")):
        padded = [row[position] + [seq_lens_padding_value] * (most - len(row[0])) for row in rows]
        result[key] = torch.tensor(padded, dtype=torch.long)
    result["qkv_format"] = "thd"
    media = (*PIXEL_KEYS, "image_grid_thw", "image_position_ids", "video_grid_thw")
    counts = ("second_per_grid_ts", "n_images_per_sample", "n_videos_per_sample")
    result.update({key: out[key] for key in (*media, *counts, WEIGHTS) if key in out})
    return result


def _thd_lengths(pack: Mapping[str, Any], index: int, length: int) -> tuple[list[int], list[int]]:
    """A pack's real and padded document lengths; the padded ones fill ``length``."""
    size = int(torch.as_tensor(pack["input_ids"]).shape[-1])
    if ("seq_lens" in pack) != ("seq_lens_padded" in pack):
        msg = "a pack needs both 'seq_lens' and 'seq_lens_padded', or neither"
        raise SampleError(msg, sample_index=index)
    if "seq_lens" not in pack:
        counts = torch.bincount(torch.as_tensor(pack["attention_mask"]).long().reshape(-1))[1:]
        real = counts[counts > 0].tolist() or [size]
        return real, [*real[:-1], real[-1] + length - sum(real)]
    real = torch.as_tensor(pack["seq_lens"]).long().reshape(-1).tolist()
    slots = torch.as_tensor(pack["seq_lens_padded"]).long().reshape(-1).tolist()
    valid = len(real) == len(slots) and bool(slots) and sum(slots) == size
    if not valid or any(not 0 <= kept <= slot for kept, slot in zip(real, slots, strict=True)):
        msg = (
            f"'seq_lens_padded' must have one entry per 'seq_lens' entry, each at least as long, "
            f"summing to the pack's {size} tokens (got seq_lens={real}, seq_lens_padded={slots})"
        )
        raise SampleError(msg, sample_index=index)
    return real, [*slots[:-1], slots[-1] + length - size]


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
