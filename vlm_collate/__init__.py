"""Chat-style multimodal samples to training batches for VLM fine-tuning.

Importing the package imports every model family, and each family registers
the processor class names it handles with [`register_collator`][vlm_collate.register_collator].

>>> import vlm_collate as vc
>>> collator = vc.collator_for(processor, max_length=4096)   # doctest: +SKIP
>>> batch = collator(examples)                                # doctest: +SKIP
"""

from __future__ import annotations

from ._hf_trainer import PreShiftedLabelsWarning, hf_trainer_collator
from ._pipeline import BaseCollator, CollateReport, DroppedSample, SampleWarning
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
from .families.default import DefaultCollator
from .families.gemma4 import Gemma4Collator, ThinkingChannelMarker
from .families.kimi_k25 import KimiK25VLCollator, PreExpandedImages
from .families.kimi_vl import KimiTurnMarker, KimiVLCollator
from .families.llava_onevision import LlavaOneVisionCollator, PerSampleImagesMedia
from .families.nemotron_omni import NemotronOmniCollator, NemotronOmniMedia
from .families.nemotron_parse import NemotronParseCollator, PromptPrefixMask
from .families.phi4_mm import Phi4MMCollator, RoleTokenMarker
from .families.qwen_omni import Qwen3OmniCollator, QwenOmniUtilsMedia
from .families.qwen_vl import Qwen25VLCollator
from .labels import (
    IGNORE_INDEX,
    DerivedTemplateMarker,
    FirstOf,
    GenerationTagMask,
    ImStartMarker,
    LabelPolicy,
    LabelStrategy,
    LegacyBPEMatch,
    ReasoningMarkers,
    SkipEmptyThink,
    TurnMarkers,
)
from .media import AudioMedia, MediaStrategy, PlainMedia, QwenVLUtilsMedia
from .pretokenized import (
    NeatPackedCollator,
    PackResult,
    PreTokenizedCollator,
    PreTokenizedDataset,
    pack,
    pretokenize,
    pretokenize_sample,
)
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
    "PreShiftedLabelsWarning",
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
    "hf_trainer_collator",
    "pack",
    "pretokenize",
    "pretokenize_sample",
    "register_collator",
]
