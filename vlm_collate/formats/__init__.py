"""Datasets as people bring them: row formats, their detection, and role checks.

Each format is a [`RowFormat`][vlm_collate.formats.RowFormat] that converts one dataset row to the
library's own ``{"conversation": [...]}`` sample. [`convert`][vlm_collate.formats.convert] and
[`detect`][vlm_collate.formats.detect] work on single rows; every collator, ``pretokenize`` and
``vlm-collate inspect`` take the same ``format=`` names.

>>> from vlm_collate.formats import convert
>>> convert({"conversations": [{"from": "human", "value": "Hi"},
...                            {"from": "gpt", "value": "Hello."}]})["conversation"][1]
{'role': 'assistant', 'content': 'Hello.'}
"""

from __future__ import annotations

from ._detect import (
    FORMATS,
    AutoFormat,
    convert,
    detect,
    format_converter,
    get_format,
)
from ._formats import (
    Cauldron,
    Conversation,
    LlamaFactory,
    Messages,
    OpenAIChat,
    RowFormat,
    ShareGPT,
)
from ._roles import (
    STANDARD_ROLES,
    UnknownRolesPolicy,
    empty_labels_hint,
    role_problem,
    unknown_role_detail,
)

__all__ = [
    "FORMATS",
    "STANDARD_ROLES",
    "AutoFormat",
    "Cauldron",
    "Conversation",
    "LlamaFactory",
    "Messages",
    "OpenAIChat",
    "RowFormat",
    "ShareGPT",
    "UnknownRolesPolicy",
    "convert",
    "detect",
    "empty_labels_hint",
    "format_converter",
    "get_format",
    "role_problem",
    "unknown_role_detail",
]
