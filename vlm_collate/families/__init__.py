"""One module per model family. Importing this package registers every family
with [`vlm_collate.register_collator`][vlm_collate.register_collator].
"""

from __future__ import annotations

from .._public import publish as _publish
from .default import (
    DefaultCollator,
)
from .gemma4 import (
    Gemma4Collator,
    ThinkingChannelMarker,
)
from .kimi_k25 import (
    KimiK25VLCollator,
    PreExpandedImages,
)
from .kimi_vl import (
    KimiTurnMarker,
    KimiVLCollator,
)
from .llava_onevision import (
    LlavaOneVisionCollator,
    PerSampleImagesMedia,
)
from .nemotron_omni import (
    NemotronOmniCollator,
    NemotronOmniMedia,
)
from .nemotron_parse import (
    NemotronParseCollator,
    PromptPrefixMask,
)
from .phi4_mm import (
    Phi4MMCollator,
    RoleTokenMarker,
)
from .qwen_omni import (
    Qwen3OmniCollator,
    QwenOmniUtilsMedia,
)
from .qwen_vl import (
    Qwen25VLCollator,
)

__all__ = [
    "DefaultCollator",
    "Gemma4Collator",
    "KimiK25VLCollator",
    "KimiTurnMarker",
    "KimiVLCollator",
    "LlavaOneVisionCollator",
    "NemotronOmniCollator",
    "NemotronOmniMedia",
    "NemotronParseCollator",
    "PerSampleImagesMedia",
    "Phi4MMCollator",
    "PreExpandedImages",
    "PromptPrefixMask",
    "Qwen25VLCollator",
    "Qwen3OmniCollator",
    "QwenOmniUtilsMedia",
    "RoleTokenMarker",
    "ThinkingChannelMarker",
]

_publish(globals(), __all__, "vlm_collate.families")
