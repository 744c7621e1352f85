"""``DefaultCollator``: any processor with a chat template."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import torch

from .._pipeline import BaseCollator
from .._samples import Sample, count_media
from ..errors import VLMCollateError
from ..labels import LabelStrategy, with_fallbacks
from ..media import MediaStrategy, PlainMedia

__all__ = ["DefaultCollator"]


@attrs.define(kw_only=True)
class DefaultCollator(BaseCollator):
    """NeMo Automodel's ``default_collate_fn``: one ``apply_chat_template`` call does it all.

    The processor renders, tokenizes and reads the media of the whole batch
    (``tokenize=True, return_dict=True``). Turn markers are derived from the
    template, so any chat format works; pixels default to bfloat16. Batches
    with videos are rendered first and passed to the processor with frames
    decoded by PyAV, as ``transformers`` cannot read video files without
    ``torchcodec``.
    """

    default_pixel_dtype: ClassVar[torch.dtype | None] = torch.bfloat16

    def default_label_strategy(self) -> LabelStrategy:
        return with_fallbacks()

    def default_media_strategy(self) -> MediaStrategy:
        return PlainMedia()

    def template(self, samples: Sequence[Sample]) -> dict[str, Any]:
        if any(count_media(sample.conversation, "video") for sample in samples):
            # transformers reads video files only through torchcodec and loses
            # the frame rate of decoded frames; render and call the processor
            # with PyAV-decoded frames and their metadata instead.
            return super().template(samples)
        options = {"padding": True, **self.processor_kwargs}
        try:
            encoded = self.processor.apply_chat_template(
                [sample.conversation for sample in samples],
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs=options,
            )
        except VLMCollateError:
            raise
        except Exception as exc:
            raise self._processor_error(samples, exc) from exc
        return dict(encoded)
