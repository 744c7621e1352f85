"""Validating pre-tokenized samples and packs on entry.

A pre-tokenized row comes from a cache or a dataset someone else built, so
every tensor is checked before it is padded: token keys are 1-D integer
tensors of one length (returned as int64, the dtype ``cross_entropy``
wants), ids lie in ``[0, vocab_size)``, a label is ``IGNORE_INDEX`` or the
token id it trains (the id at its own position in an unshifted sample; any
valid id in a pack, whose labels the packer shifted), attention masks hold 0
and 1 (document numbers in a pack) and train nothing where they are 0, pixels are finite, and the
image/video grids agree with the media counts and pixel rows. Every error is
a [`SampleError`][vlm_collate.SampleError] naming the sample and the first bad
position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch

from ..errors import SampleError, SampleTypeError
from ..labels import IGNORE_INDEX
from ..media import CONCATENATED_KEYS, PIXEL_KEYS

__all__ = [
    "OPTIONAL_TOKEN_KEYS",
    "REQUIRED_TOKEN_KEYS",
    "WEIGHTS_KEY",
    "Row",
    "check_documents",
    "check_ids",
    "check_media_counts",
    "check_pack_labels",
    "media_count",
    "media_value",
    "position_ids",
    "read_row",
    "token_tensors",
]

REQUIRED_TOKEN_KEYS = ("input_ids", "attention_mask", "labels")
OPTIONAL_TOKEN_KEYS = ("mm_token_type_ids",)
# The one token-axis key that holds floats: per-token loss weights, shifted like labels.
WEIGHTS_KEY = "loss_weights"
# Each grid, and the pixel entry whose rows its (t, h, w) products count.
_GRIDS = {
    "image": ("image_grid_thw", "pixel_values"),
    "video": ("video_grid_thw", "pixel_values_videos"),
}


@attrs.frozen
class Row:
    """One validated sample: its 1-D token tensors and its media entries."""

    index: int
    tokens: dict[str, torch.Tensor]
    media: dict[str, Any]

    @property
    def length(self) -> int:
        return self.tokens["input_ids"].shape[0]


def _one_dimensional(value: Any, key: str, index: int, items: str) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        msg = f"'{key}' must be a 1-D tensor or list of {items} (got {type(value).__name__})"
        raise SampleTypeError(msg, sample_index=index) from exc
    if tensor.dim() != 1:
        msg = f"'{key}' must be 1-D (got shape {tuple(tensor.shape)})"
        raise SampleError(msg, sample_index=index)
    return tensor


def _token_tensor(value: Any, key: str, index: int) -> torch.Tensor:
    tensor = _one_dimensional(value, key, index, "ints")
    if tensor.is_floating_point() or tensor.is_complex():
        msg = f"'{key}' must hold integers (got {tensor.dtype})"
        raise SampleTypeError(msg, sample_index=index)
    return tensor.long()  # one integer dtype out: int32 labels would fail in cross_entropy


def _weights_tensor(value: Any, index: int) -> torch.Tensor:
    """Per-token loss weights as float32: 1-D, finite and >= 0."""
    tensor = _one_dimensional(value, WEIGHTS_KEY, index, "floats")
    if tensor.is_complex():
        msg = f"'{WEIGHTS_KEY}' must hold real numbers (got {tensor.dtype})"
        raise SampleTypeError(msg, sample_index=index)
    tensor = tensor.to(torch.float32)
    bad = ~torch.isfinite(tensor) | (tensor < 0)
    if bool(bad.any()):
        position = int(bad.nonzero()[0])
        msg = (
            f"'{WEIGHTS_KEY}' must be finite and >= 0 "
            f"(got {tensor[position].item()} at position {position})"
        )
        raise SampleError(msg, sample_index=index)
    return tensor


def token_tensors(
    example: Mapping[str, Any], keys: Sequence[str], index: int
) -> dict[str, torch.Tensor]:
    """The 1-D int64 token tensors of ``keys`` present in ``example``, and its loss weights.

    Every tensor must be as long as ``input_ids``; errors name sample ``index``.
    """
    tensors = {
        key: _token_tensor(example[key], key, index) for key in keys if example.get(key) is not None
    }
    if example.get(WEIGHTS_KEY) is not None:
        tensors[WEIGHTS_KEY] = _weights_tensor(example[WEIGHTS_KEY], index)
    length = tensors["input_ids"].shape[0]
    for key, tensor in tensors.items():
        if tensor.shape[0] != length:
            msg = f"'{key}' has {tensor.shape[0]} tokens but 'input_ids' has {length}"
            raise SampleError(msg, sample_index=index)
    return tensors


def check_ids(input_ids: torch.Tensor, index: int, vocab_size: int | None) -> None:
    """Token ids are >= 0 and, when the vocabulary is known, below its size."""
    bad = input_ids < 0
    if vocab_size is not None:
        bad |= input_ids >= vocab_size
    if bool(bad.any()):
        position = int(bad.nonzero()[0])
        bound = f"[0, {vocab_size})" if vocab_size is not None else ">= 0"
        got = int(input_ids[position])
        msg = f"'input_ids' must lie in {bound} (got {got} at position {position})"
        raise SampleError(msg, sample_index=index)


def _check_mask(tokens: Mapping[str, torch.Tensor], index: int) -> None:
    mask = tokens["attention_mask"]
    bad = (mask != 0) & (mask != 1)
    if bool(bad.any()):
        position = int(bad.nonzero()[0])
        got = int(mask[position])
        msg = f"'attention_mask' must hold 0 and 1 (got {got} at position {position})"
        raise SampleError(msg, sample_index=index)
    trained_padding = (mask == 0) & (tokens["labels"] != IGNORE_INDEX)
    if bool(trained_padding.any()):
        position = int(trained_padding.nonzero()[0])
        msg = (
            f"'labels' trains position {position}, where 'attention_mask' is 0; "
            f"masked positions must have label {IGNORE_INDEX}"
        )
        raise SampleError(msg, sample_index=index)


def _check_sample_labels(tokens: Mapping[str, torch.Tensor], index: int) -> None:
    """Unshifted labels: each is IGNORE_INDEX or the token id at its own position."""
    labels, input_ids = tokens["labels"], tokens["input_ids"]
    bad = (labels != IGNORE_INDEX) & (labels != input_ids)
    if bool(bad.any()):
        position = int(bad.nonzero()[0])
        msg = (
            f"'labels' must be {IGNORE_INDEX} or the token id at the same position (unshifted); "
            f"got {int(labels[position])} at position {position}, where 'input_ids' is "
            f"{int(input_ids[position])}"
        )
        raise SampleError(msg, sample_index=index)


def check_pack_labels(
    tokens: Mapping[str, torch.Tensor], index: int, vocab_size: int | None
) -> None:
    """Pack labels: IGNORE_INDEX or a token id (>= 0, below ``vocab_size`` when known).

    Packs are shifted per document by the packer, so a label is the target of
    its position and need not equal the id there; padding is masked later.
    """
    labels, documents = tokens["labels"], tokens["attention_mask"]
    trained = (labels != IGNORE_INDEX) & (documents != 0)
    bad = trained & (labels < 0)
    if vocab_size is not None:
        bad |= trained & (labels >= vocab_size)
    if bool(bad.any()):
        position = int(bad.nonzero()[0])
        bound = f"[0, {vocab_size})" if vocab_size is not None else ">= 0"
        msg = (
            f"'labels' of a pack must be {IGNORE_INDEX} or a token id in {bound}; "
            f"got {int(labels[position])} at position {position}"
        )
        raise SampleError(msg, sample_index=index)


def check_documents(document_ids: torch.Tensor, index: int) -> None:
    """A pack's indexed map: 0 for padding, else document numbers, each in one run."""
    if bool((document_ids < 0).any()):
        msg = "'attention_mask' must hold document numbers 1, 2, ... and 0 for padding"
        raise SampleError(msg, sample_index=index)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[1:] = document_ids[1:] != document_ids[:-1]
    runs = document_ids[starts & (document_ids > 0)]
    if runs.numel() != runs.unique().numel():
        msg = "'attention_mask' holds a document number in two runs; a document is one run"
        raise SampleError(msg, sample_index=index)


def position_ids(value: Any, length: int, index: int) -> torch.Tensor:
    """A pack's ``position_ids``: integers >= 0 shaped ``[length]`` or ``[3, length]`` (mRoPE)."""
    try:
        positions = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        msg = f"'position_ids' must be an integer tensor (got {type(value).__name__})"
        raise SampleTypeError(msg, sample_index=index) from exc
    if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool:
        msg = f"'position_ids' must hold integers (got {positions.dtype})"
        raise SampleTypeError(msg, sample_index=index)
    shaped = positions.dim() == 1 or (positions.dim() == 2 and positions.shape[0] == 3)
    if not shaped or positions.shape[-1] != length:
        shape = tuple(positions.shape)
        msg = f"'position_ids' must have shape [{length}] or [3, {length}] (got {shape})"
        raise SampleError(msg, sample_index=index)
    if bool((positions < 0).any()):
        msg = "'position_ids' must be >= 0"
        raise SampleError(msg, sample_index=index)
    return positions.long()


def media_value(value: Any, key: str, index: int) -> Any:
    """A media entry: pixels as finite tensors (or a list of them), other keys as tensors."""
    if key in PIXEL_KEYS:
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(item, torch.Tensor) for item in items):
            msg = f"'{key}' must be a tensor or a list of tensors (got {type(value).__name__})"
            raise SampleTypeError(msg, sample_index=index)
        for item in items:
            if item.is_floating_point() and not bool(torch.isfinite(item).all()):
                msg = f"'{key}' holds NaN or infinite values"
                raise SampleError(msg, sample_index=index)
        return list(value) if isinstance(value, (list, tuple)) else value
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        msg = f"'{key}' must be a tensor (got {type(value).__name__})"
        raise SampleTypeError(msg, sample_index=index) from exc
    if tensor.dim() == 0:
        msg = f"'{key}' must have a leading per-media axis (got a scalar)"
        raise SampleError(msg, sample_index=index)
    return tensor


def _check_grid(grid: torch.Tensor, key: str, index: int) -> None:
    if grid.dim() != 2 or grid.shape[1] != 3 or grid.is_floating_point() or grid.is_complex():
        msg = f"'{key}' must be an integer tensor [N, 3] (got {grid.dtype} {tuple(grid.shape)})"
        raise SampleError(msg, sample_index=index)
    if bool((grid <= 0).any()):
        msg = f"'{key}' must hold positive (t, h, w) sizes"
        raise SampleError(msg, sample_index=index)


def check_media_counts(
    media: Mapping[str, Any], index: int, counts: Mapping[str, int] | None = None
) -> None:
    """Grids are ``[N, 3]`` positive ints, agree with ``counts`` and count the pixel rows."""
    for kind, (grid_key, pixel_key) in _GRIDS.items():
        grid = media.get(grid_key)
        if grid is None:
            continue
        _check_grid(grid, grid_key, index)
        expected = (counts or {}).get(kind)
        if expected is not None and expected != grid.shape[0]:
            msg = f"'n_{kind}s' is {expected} but '{grid_key}' has {grid.shape[0]} rows"
            raise SampleError(msg, sample_index=index)
        pixels = media.get(pixel_key)
        if isinstance(pixels, torch.Tensor) and pixels.dim() == 2:
            patches = int(grid.prod(dim=1).sum())
            if pixels.shape[0] != patches:
                msg = (
                    f"'{pixel_key}' has {pixels.shape[0]} rows but '{grid_key}' "
                    f"counts {patches} patches"
                )
                raise SampleError(msg, sample_index=index)


def media_count(example: Mapping[str, Any], kind: str, index: int) -> int | None:
    """A pack's ``n_images`` / ``n_videos``: None when absent, else an int >= 0."""
    value = example.get(f"n_{kind}s")
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"'n_{kind}s' must be an int >= 0 (got {value!r})"
        raise SampleTypeError(msg, sample_index=index)
    return value


def read_row(example: Any, index: int, *, vocab_size: int | None = None) -> Row:
    """Validate one pre-tokenized sample; the caller's tensors are only read.

    Token keys become int64 tensors; optional ``loss_weights`` become
    float32 and must be finite and >= 0. Every one has the length of
    ``input_ids``.
    """
    if not isinstance(example, Mapping):
        msg = f"a pre-tokenized sample must be a mapping (got {type(example).__name__})"
        raise SampleTypeError(msg, sample_index=index)
    missing = [key for key in REQUIRED_TOKEN_KEYS if example.get(key) is None]
    if missing:
        names = ", ".join(repr(key) for key in missing)
        msg = f"missing {names}; a pre-tokenized sample needs {', '.join(REQUIRED_TOKEN_KEYS)}"
        raise SampleError(msg, sample_index=index)
    tokens = token_tensors(example, (*REQUIRED_TOKEN_KEYS, *OPTIONAL_TOKEN_KEYS), index)
    if tokens["input_ids"].shape[0] == 0:
        msg = "'input_ids' is empty"
        raise SampleError(msg, sample_index=index)
    check_ids(tokens["input_ids"], index, vocab_size)
    _check_mask(tokens, index)
    _check_sample_labels(tokens, index)
    media = {
        key: media_value(example[key], key, index)
        for key in (*PIXEL_KEYS, *CONCATENATED_KEYS)
        if example.get(key) is not None
    }
    check_media_counts(media, index)
    return Row(index, tokens, media)
