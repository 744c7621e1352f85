"""Chat-style multimodal samples to training batches for VLM fine-tuning.

>>> import vlm_collate as vc
>>> collator = vc.collator_for(processor, max_length=4096)   # doctest: +SKIP
>>> batch = collator(examples)                                # doctest: +SKIP
"""

from __future__ import annotations

from .base import BaseCollator, CollateReport, DroppedSample, SampleWarning
from .default import DefaultCollator
from .errors import (
    BatchError,
    ConfigurationError,
    EmptyLabelsError,
    LabelStrategyError,
    MediaError,
    MissingDependencyError,
    OverlongError,
    ProcessorError,
    SampleError,
    SampleTypeError,
    SpecialTokenError,
    TemplateError,
    VLMCollateError,
)
from .labels import (
    IGNORE_INDEX,
    DerivedTemplateMarker,
    FirstOf,
    ImStartMarker,
    LabelStrategy,
    LegacyBPEMatch,
    TurnMarkers,
)
from .media import MediaStrategy, PlainMedia, QwenVLUtilsMedia
from .qwen import Qwen25VLCollator
from .registry import collator_for, register_collator

__version__ = "0.1.0.dev0"

__all__ = [
    "BaseCollator",
    "BatchError",
    "CollateReport",
    "ConfigurationError",
    "DefaultCollator",
    "DerivedTemplateMarker",
    "DroppedSample",
    "EmptyLabelsError",
    "FirstOf",
    "IGNORE_INDEX",
    "ImStartMarker",
    "LabelStrategy",
    "LabelStrategyError",
    "LegacyBPEMatch",
    "MediaError",
    "MediaStrategy",
    "MissingDependencyError",
    "OverlongError",
    "PlainMedia",
    "ProcessorError",
    "Qwen25VLCollator",
    "QwenVLUtilsMedia",
    "SampleError",
    "SampleTypeError",
    "SampleWarning",
    "SpecialTokenError",
    "TemplateError",
    "TurnMarkers",
    "VLMCollateError",
    "collator_for",
    "register_collator",
]
