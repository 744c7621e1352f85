"""``Gemma4Collator``: Gemma 4 with its empty thinking channel.

Gemma 4's larger instruction-tuned checkpoints (31B, 26B-A4B) open every
answer with the thinking channel, empty when thinking is off:
``<|turn>model\\n<|channel>thought\\n<channel|>answer<turn|>``. Chat templates
drop that channel from past turns, so a training sequence built from them
teaches the model to answer where it would open the channel, and the first
steps start at a loss far above the model's real one. The collator puts the
channel back after every model-turn marker, untrained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import attrs
import torch

from .._cache import ObjectCache
from .._checks import OverlongPolicy
from .._options import one_of
from .._padding import token_axis_keys
from .._samples import Sample, count_media
from .._tokens import single_token_id, tokenizer_of
from ..errors import LabelStrategyError
from ..labels import (
    IGNORE_INDEX,
    LabelStrategy,
    MarkerStrategy,
    ReasoningMarkers,
    TurnMarkers,
    mask_enclosed,
    with_fallbacks,
)
from ..registry import register_collator
from .default import DefaultCollator

__all__ = [
    "MODEL_TURN",
    "THINKING_PREFIX",
    "Gemma4Collator",
    "ThinkingChannelMarker",
    "insert_after_marker",
    "thinking_ids",
]

MODEL_TURN = "<|turn>model\n"
THINKING_PREFIX = "<|channel>thought\n<channel|>"
END_OF_TURN = "<turn|>"
# Control tokens that must be single special tokens for the prefix to be inserted.
_REQUIRED_TOKENS = ("<|turn>", "<|channel>", "<channel|>", END_OF_TURN)
# The template writes tool responses inside the model turn, between these tokens.
TOOL_RESPONSE = ("<|tool_response>", "<tool_response|>")
_PREFIX_IDS = ObjectCache()


def thinking_ids(
    tokenizer: Any, model_turn: str = MODEL_TURN, prefix: str = THINKING_PREFIX
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Ids of the model-turn marker and of the thinking prefix, or None without Gemma 4 tokens."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special = {str(token) for token in added.values() if getattr(token, "special", False)}
    special |= {str(token) for token in getattr(tokenizer, "all_special_tokens", []) or []}
    if not special.issuperset(_REQUIRED_TOKENS):
        return None
    marker = tuple(tokenizer.encode(model_turn, add_special_tokens=False))
    inserted = tuple(tokenizer.encode(prefix, add_special_tokens=False))
    return (marker, inserted) if marker and inserted else None


def _occurrences(input_ids: torch.Tensor, pattern: Sequence[int]) -> torch.Tensor:
    """``hit[:, i]`` is True where ``pattern`` starts at ``i`` (shape ``[B, L - len + 1]``)."""
    rows, length = input_ids.shape
    if length < len(pattern):
        return torch.zeros((rows, 0), dtype=torch.bool, device=input_ids.device)
    windows = input_ids.unfold(1, len(pattern), 1)
    target = torch.tensor(pattern, dtype=input_ids.dtype, device=input_ids.device)
    return (windows == target).all(dim=-1)


def insert_after_marker(
    batch: Mapping[str, torch.Tensor],
    marker: Sequence[int],
    inserted: Sequence[int],
    *,
    keys: Sequence[str],
    padding_side: Literal["left", "right"],
    pad_id: int,
) -> dict[str, torch.Tensor]:
    """Return ``batch[key]`` for ``keys`` with ``inserted`` placed after every ``marker``.

    The marker is searched in ``batch["input_ids"]``; an occurrence already
    followed by ``inserted`` is left as it is. ``input_ids`` receives the
    inserted ids, ``attention_mask`` ones and every other key zeros. Rows grow
    by ``len(inserted)`` per insertion and are re-padded on ``padding_side``
    (``input_ids`` with ``pad_id``, the rest with 0) to the longest row.
    """
    input_ids = batch["input_ids"]
    rows, length = input_ids.shape
    width, extra = len(marker), len(inserted)
    points = torch.zeros((rows, length + 1), dtype=torch.bool, device=input_ids.device)
    found = _occurrences(input_ids, marker)
    points[:, width : width + found.shape[1]] = found
    present = _occurrences(input_ids, [*marker, *inserted])
    points[:, width : width + present.shape[1]] &= ~present
    counts = points.sum(dim=1)
    most = int(counts.max()) if rows else 0
    if most == 0:
        return {key: batch[key] for key in keys}
    offset = (most - counts) * extra if padding_side == "left" else torch.zeros_like(counts)
    ranks = points.long().cumsum(dim=1)
    positions = torch.arange(length, device=input_ids.device)
    destination = positions + ranks[:, :length] * extra + offset[:, None]
    hit_rows, hit_points = points.nonzero(as_tuple=True)
    starts = hit_points + (ranks[hit_rows, hit_points] - 1) * extra + offset[hit_rows]
    columns = starts[:, None] + torch.arange(extra, device=input_ids.device)
    new_rows = hit_rows[:, None].expand_as(columns)
    inserted_ids = torch.tensor(inserted, dtype=input_ids.dtype, device=input_ids.device)
    values = {"input_ids": inserted_ids, "attention_mask": 1}
    out = {}
    for key in keys:
        tensor = batch[key]
        fill = pad_id if key == "input_ids" else 0
        grown = tensor.new_full((rows, length + most * extra), fill)
        grown.scatter_(1, destination, tensor)
        grown[new_rows, columns] = torch.as_tensor(values.get(key, 0), dtype=tensor.dtype)
        out[key] = grown
    return out


@attrs.frozen(kw_only=True)
class ThinkingChannelMarker(MarkerStrategy):
    """Model turns that open with the thinking channel: trained after ``<channel|>``.

    The marker is ``<|turn>model\\n<|channel>thought\\n<channel|>`` and the turn
    ends at ``<turn|>``, so the channel itself is never trained. Applies only
    to tokenizers holding Gemma 4's control tokens.
    """

    model_turn: str = MODEL_TURN
    prefix: str = THINKING_PREFIX
    end_token: str = END_OF_TURN

    def resolve(self, processor: Any) -> TurnMarkers:
        tokenizer = tokenizer_of(processor)
        ids = thinking_ids(tokenizer, self.model_turn, self.prefix)
        if ids is None:
            msg = (
                f"ThinkingChannelMarker needs Gemma 4's control tokens {list(_REQUIRED_TOKENS)} "
                f"as special tokens, but {type(tokenizer).__name__} lacks them."
            )
            raise LabelStrategyError(msg)
        marker, inserted = ids
        end_id = tokenizer.convert_tokens_to_ids(self.end_token)
        return TurnMarkers(assistant_marker=[*marker, *inserted], end_of_turn_id=end_id)


@register_collator("Gemma4Processor", "Gemma4UnifiedProcessor")
@attrs.define(kw_only=True)
class Gemma4Collator(DefaultCollator):
    """NeMo Automodel's ``gemma4_prefix_collate_fn``: the default pipeline plus the thinking
    channel.

    After the processor runs, ``<|channel>thought\\n<channel|>`` is inserted
    after every ``<|turn>model\\n`` marker; ``attention_mask`` gets ones there,
    ``mm_token_type_ids`` and every other token-axis tensor zeros. Labels start
    after the channel, so only answers and ``<turn|>`` are trained. Rows longer
    than ``max_length`` afterwards are truncated by default
    (``overlong="truncate"``), unless that would cut through media tokens, in
    which case the sample is dropped. A tokenizer without Gemma 4's control
    tokens leaves the batch unchanged.

    Reasoning blocks are the ``<|channel>thought ... <channel|>`` channel (for
    ``LabelPolicy(reasoning=...)``). The template writes tool responses inside
    the model turn, between ``<|tool_response>`` and ``<tool_response|>``;
    they are left untrained unless the label policy's roles include ``"tool"``.
    """

    reasoning_markers: ClassVar[ReasoningMarkers] = ReasoningMarkers(
        "<|channel>", "<channel|>", channel_name="thought"
    )
    embedded_roles: ClassVar[frozenset[str]] = frozenset({"tool"})
    # Per-audio tensors that may happen to have the shape of input_ids.
    media_keys: ClassVar[frozenset[str]] = DefaultCollator.media_keys | {"input_features_mask"}
    overlong: OverlongPolicy = attrs.field(
        default="truncate", validator=one_of("drop", "raise", "truncate")
    )

    def default_label_strategy(self) -> LabelStrategy:
        return with_fallbacks(ThinkingChannelMarker())

    def hook(self, batch: dict[str, Any], samples: Sequence[Sample]) -> dict[str, Any]:
        """Insert the empty thinking channel after every model-turn marker."""
        tokenizer = self.tokenizer
        prefix_ids = _PREFIX_IDS.get_or_compute(
            tokenizer, "thinking prefix", lambda: thinking_ids(tokenizer)
        )
        if prefix_ids is None:
            return batch
        marker, inserted = prefix_ids
        grown = insert_after_marker(
            batch,
            marker,
            inserted,
            keys=token_axis_keys(batch, exclude=self.media_keys),
            padding_side=self._padded_side(batch),
            pad_id=self._pad_value("input_ids"),
        )
        batch.update(grown)
        return batch

    def labels(
        self, batch: Mapping[str, Any], samples: Sequence[Sample]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The base labels, with tool responses untrained unless ``"tool"`` is a trained role."""
        labels, weights = super().labels(batch, samples)
        if "tool" in self.label_policy.roles:
            return labels, weights
        open_id, close_id = (single_token_id(self.tokenizer, token) for token in TOOL_RESPONSE)
        if open_id is None or close_id is None:
            return labels, weights
        labels = mask_enclosed(labels, batch["input_ids"], open_id, close_id)
        return labels, None if weights is None else weights.masked_fill(labels == IGNORE_INDEX, 0)

    def gather_media(self, samples: Sequence[Sample]) -> dict[str, Any]:
        """Media for the processor, with images grouped per sample as Gemma 4 expects."""
        media = super().gather_media(samples)
        images = media.get("images")
        if images is not None:
            grouped, start = [], 0
            for sample in samples:
                stop = start + count_media(sample.conversation, "image")
                grouped.append(list(images[start:stop]))
                start = stop
            media["images"] = grouped
        return media
