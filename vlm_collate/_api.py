"""The package's public names, imported together (see ``vlm_collate/__init__.py``).

Importing this module imports every model family, and each family registers
the processor class names it handles with [`register_collator`][vlm_collate.register_collator].
"""

# ruff: noqa: F401 - every import here is a public name, re-exported by __init__
from __future__ import annotations

from . import __all__ as _PUBLIC
from ._hf_trainer import PreShiftedLabelsWarning, hf_trainer_collator
from ._mrope import MRopeIndex
from ._pipeline import BaseCollator
from ._public import publish as _publish
from ._report import CollateReport, DroppedSample, SampleWarning
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
from .media import AudioMedia, MediaAccess, MediaStrategy, PlainMedia, QwenVLUtilsMedia
from .pretokenized import (
    NeatPackedCollator,
    PackResult,
    ParquetShards,
    PreTokenizedCollator,
    PreTokenizedDataset,
    ShardWriter,
    pack,
    pretokenize,
    pretokenize_ray,
    pretokenize_sample,
    write_shards,
)
from .registry import collator_for, register_collator
from .robust import RobustCollator

_publish(globals(), _PUBLIC, "vlm_collate")
