"""Chat-style multimodal samples to training batches for VLM fine-tuning.

The first use of a public name imports every model family (and torch), and
each family registers the processor class names it handles with
[`register_collator`][vlm_collate.register_collator]; ``import vlm_collate``
alone stays light, so the command line answers ``--help`` and ``--version``
without loading torch.

>>> import vlm_collate as vc
>>> collator = vc.collator_for(processor, max_length=4096)   # doctest: +SKIP
>>> batch = collator(examples)                                # doctest: +SKIP
"""

# ruff: noqa: F405 - the public names come from ._api, loaded on first use
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._api import *  # noqa: F403

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
    "MRopeIndex",
    "MediaAccess",
    "MediaError",
    "MediaStrategy",
    "MissingDependencyError",
    "NeatPackedCollator",
    "NemotronOmniCollator",
    "NemotronOmniMedia",
    "NemotronParseCollator",
    "OverlongError",
    "PackResult",
    "ParquetShards",
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
    "ShardWriter",
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
    "pretokenize_ray",
    "pretokenize_sample",
    "register_collator",
    "write_shards",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        msg = f"module 'vlm_collate' has no attribute {name!r}"
        raise AttributeError(msg)
    api = importlib.import_module("._api", __name__)
    globals().update({public: getattr(api, public) for public in __all__})
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
