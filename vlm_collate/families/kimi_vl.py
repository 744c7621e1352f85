"""``KimiVLCollator``: Kimi-VL, and the turn markers every Kimi model shares.

Kimi chat turns read ``<|im_assistant|>assistant<|im_middle|>answer<|im_end|>``;
images are ``<|media_start|>image<|media_content|><|media_pad|><|media_end|>``
and the processor repeats ``<|media_pad|>`` once per merged patch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import attrs

from .._options import one_of
from .._pipeline import BaseCollator
from ..errors import LabelStrategyError
from ..labels import (
    LabelStrategy,
    MarkerStrategy,
    TurnMarkers,
    single_token_id,
    tokenizer_of,
    with_fallbacks,
)
from ..media import MediaStrategy, PlainMedia
from ..registry import register_collator

__all__ = ["KimiTurnMarker", "KimiVLCollator"]


@attrs.frozen(kw_only=True)
class KimiTurnMarker(MarkerStrategy):
    """Kimi turns: ``<|im_assistant|>assistant<|im_middle|>`` ... ``<|im_end|>``.

    The ids are read from the vocabulary; no template is rendered.
    """

    start_token: str = "<|im_assistant|>"
    role: str = "assistant"
    middle_token: str = "<|im_middle|>"
    end_token: str = "<|im_end|>"

    def resolve(self, processor: Any) -> TurnMarkers:
        tokenizer = tokenizer_of(processor)
        ids = {
            token: single_token_id(tokenizer, token)
            for token in (self.start_token, self.middle_token, self.end_token)
        }
        missing = [token for token, token_id in ids.items() if token_id is None]
        if missing:
            name = type(tokenizer).__name__
            msg = f"KimiTurnMarker needs {missing} as single tokens; {name} lacks them."
            raise LabelStrategyError(msg)
        found = {token: token_id for token, token_id in ids.items() if token_id is not None}
        role_ids = list(tokenizer.encode(self.role, add_special_tokens=False))
        marker = [found[self.start_token], *role_ids, found[self.middle_token]]
        return TurnMarkers(assistant_marker=marker, end_of_turn_id=found[self.end_token])


def _max_length_padding(collator: BaseCollator) -> str:
    return "max_length" if collator.max_length is not None else "longest"


@register_collator("KimiVLProcessor")
@attrs.define(kw_only=True)
class KimiVLCollator(BaseCollator):
    """NeMo Automodel's ``kimi_vl_collate_fn``, for Kimi-VL's remote-code ``KimiVLProcessor``.

    The batch is rendered and processed in one call, without the tokenizer's
    own special tokens (``add_special_tokens=False``). With a ``max_length``,
    rows are padded to exactly ``max_length`` (before shifting), as in NeMo
    Automodel, once longer samples are dropped; ``padding="longest"`` turns that
    off. Labels are read from Kimi's turn markers; pixels keep the processor's
    dtype and ``image_grid_hws`` gives each image's patch grid.
    """

    processor_defaults: ClassVar[Mapping[str, Any]] = {"add_special_tokens": False}
    media_keys: ClassVar[frozenset[str]] = BaseCollator.media_keys | {"image_grid_hws"}

    padding: Literal["longest", "max_length"] = attrs.field(
        default=attrs.Factory(_max_length_padding, takes_self=True),
        validator=one_of("longest", "max_length"),
    )

    def default_label_strategy(self) -> LabelStrategy:
        return with_fallbacks(KimiTurnMarker())

    def default_media_strategy(self) -> MediaStrategy:
        return PlainMedia()
