"""Chat-style multimodal samples to training batches for VLM fine-tuning.

Importing the package imports every model family, and each family registers
the processor class names it handles with :func:`register_collator`.

>>> import vlm_collate as vc
>>> collator = vc.collator_for(processor, max_length=4096)   # doctest: +SKIP
>>> batch = collator(examples)                                # doctest: +SKIP
"""

from __future__ import annotations

from .audio import AudioMedia
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
    RetriesExhaustedError,
    SampleError,
    SampleTypeError,
    SpecialTokenError,
    TemplateError,
    VLMCollateError,
)
from .gemma4 import Gemma4Collator, ThinkingChannelMarker
from .generation import GenerationTagMask
from .kimi_k25 import KimiK25VLCollator, PreExpandedImages
from .kimi_vl import KimiTurnMarker, KimiVLCollator
from .labels import (
    IGNORE_INDEX,
    DerivedTemplateMarker,
    FirstOf,
    ImStartMarker,
    LabelStrategy,
    LegacyBPEMatch,
    SkipEmptyThink,
    TurnMarkers,
)
from .llava_onevision import LlavaOneVisionCollator, PerSampleImagesMedia
from .media import MediaStrategy, PlainMedia, QwenVLUtilsMedia
from .nemotron_omni import NemotronOmniCollator, NemotronOmniMedia
from .nemotron_parse import NemotronParseCollator, PromptPrefixMask
from .packed import NeatPackedCollator
from .packing import PackResult, pack
from .phi4mm import Phi4MMCollator, RoleTokenMarker
from .policy import LabelPolicy, ReasoningMarkers
from .pretokenize import PreTokenizedDataset, pretokenize
from .pretokenized import PreTokenizedCollator, pretokenize_sample
from .qwen import Qwen25VLCollator
from .qwen_omni import Qwen3OmniCollator, QwenOmniUtilsMedia
from .registry import collator_for, register_collator
from .robust import RobustCollator

__version__ = "0.1.0.dev0"

__all__ = [
    "AudioMedia",
    "BaseCollator",
    "BatchError",
    "CollateReport",
    "ConfigurationError",
    "DefaultCollator",
    "DerivedTemplateMarker",
    "DroppedSample",
    "EmptyLabelsError",
    "FirstOf",
    "Gemma4Collator",
    "GenerationTagMask",
    "IGNORE_INDEX",
    "ImStartMarker",
    "KimiK25VLCollator",
    "KimiTurnMarker",
    "KimiVLCollator",
    "LabelPolicy",
    "LabelStrategy",
    "LabelStrategyError",
    "LegacyBPEMatch",
    "LlavaOneVisionCollator",
    "MediaError",
    "MediaStrategy",
    "MissingDependencyError",
    "NeatPackedCollator",
    "NemotronOmniCollator",
    "NemotronOmniMedia",
    "NemotronParseCollator",
    "OverlongError",
    "PackResult",
    "PerSampleImagesMedia",
    "Phi4MMCollator",
    "PlainMedia",
    "PreExpandedImages",
    "PreTokenizedCollator",
    "PreTokenizedDataset",
    "ProcessorError",
    "PromptPrefixMask",
    "Qwen25VLCollator",
    "Qwen3OmniCollator",
    "QwenOmniUtilsMedia",
    "QwenVLUtilsMedia",
    "ReasoningMarkers",
    "RetriesExhaustedError",
    "RobustCollator",
    "RoleTokenMarker",
    "SampleError",
    "SampleTypeError",
    "SampleWarning",
    "SkipEmptyThink",
    "SpecialTokenError",
    "TemplateError",
    "ThinkingChannelMarker",
    "TurnMarkers",
    "VLMCollateError",
    "collator_for",
    "pack",
    "pretokenize",
    "pretokenize_sample",
    "register_collator",
]
