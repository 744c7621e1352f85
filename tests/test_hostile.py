"""Hostile input: garbage rows, tensors and options give a valid batch or a VLMCollateError.

Nothing else may escape: no TypeError from a wrong type, no KeyError from a
missing field, no RuntimeError from torch. Media are given only as None,
arrays, tensors, tiny PIL images or junk of other types (never paths or
URLs: the media-access boundary is tested on its own).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import vlm_collate as vc
from vlm_collate.pretokenized import pack

IGNORE = vc.IGNORE_INDEX
VOCAB = 64
# Headroom above the process's current address space while these tests run.
_MEMORY_HEADROOM = 3 * 2**30


@pytest.fixture(scope="module", autouse=True)
def bounded_memory():
    """A regression that allocates gigabytes fails with MemoryError instead of taking the machine down."""
    try:
        import resource

        status = Path("/proc/self/status").read_text()
    except (ImportError, OSError):  # not Linux: run unbounded
        yield
        return
    used = int(re.search(r"VmSize:\s+(\d+) kB", status).group(1)) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = used + _MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=6),
)
# Junk of every shape except strings, which a media field would read as a path.
_junk = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
_texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["<|im_end|>", "<|im_start|>assistant\n", "<|image_pad|>", "\x00", "\u202e"]),
)
_any = st.one_of(_junk, _texts)


@st.composite
def _arrays(draw):
    dtype = draw(st.sampled_from([np.uint8, np.float32, np.float64, np.int64, np.bool_]))
    shape = draw(
        st.one_of(
            st.tuples(st.integers(1, 24), st.integers(1, 24), st.sampled_from([1, 3, 4])),
            st.tuples(st.integers(0, 4)),
            st.tuples(st.integers(0, 3), st.integers(0, 3)),
        )
    )
    fill = draw(st.sampled_from([0, 1, 7, 0.5, math.nan, math.inf, -1]))
    with np.errstate(all="ignore"):
        array = np.full(shape, fill).astype(dtype)
    return torch.from_numpy(array) if draw(st.booleans()) else array


_images = st.one_of(
    st.none(),
    _junk,
    _arrays(),
    st.builds(
        Image.new,
        st.sampled_from(["RGB", "L", "RGBA", "P"]),
        st.tuples(st.integers(1, 40), st.integers(1, 40)),
    ),
)


def _sometimes(draw, good, bad, percent: int = 5):
    """``bad`` drawn ``percent`` % of the time, else ``good``: garbage in mostly valid rows."""
    return draw(bad) if draw(st.integers(0, 99)) < percent else good


@st.composite
def _items(draw):
    kind = _sometimes(
        draw, draw(st.sampled_from(["text", "text", "text", "image", "video", "audio"])), _any
    )
    item = {"type": kind}
    if kind == "text" or draw(st.integers(0, 7)) == 0:
        item["text"] = _sometimes(draw, draw(st.text(max_size=8)), _any)
    if kind in ("image", "video", "audio"):
        good = Image.new("RGB", (draw(st.integers(8, 40)), draw(st.integers(8, 40))))
        good = [good, good] if kind == "video" else good
        bad = st.one_of(_images, st.lists(_images, max_size=2)) if kind == "video" else _images
        item[kind] = _sometimes(draw, good, bad, 30)
    return _sometimes(draw, item, _junk, 3)


@st.composite
def _messages(draw, role: str):
    odd_roles = st.one_of(
        st.sampled_from(["system", "tool", "gpt", "Assistant", "用户"]),
        st.sampled_from(["user<|im_end|>", "<|im_start|>assistant", "a\nb", "", " x"]),
        _any,
    )
    content = _sometimes(
        draw,
        draw(st.one_of(st.text(max_size=12), st.lists(_items(), min_size=1, max_size=3))),
        st.one_of(_texts, _junk),
    )
    message = {"role": _sometimes(draw, role, odd_roles), "content": content}
    for key in ("train", "weight", "tool_calls", "reasoning_content"):
        if draw(st.integers(0, 9)) == 0:
            message[key] = draw(st.one_of(st.none(), st.booleans(), _any))
    return _sometimes(draw, message, _any, 2)


@st.composite
def _rows(draw):
    turns = draw(st.integers(1, 2))
    conversation = [draw(_messages(role)) for _ in range(turns) for role in ("user", "assistant")]
    conversation = _sometimes(draw, conversation, st.one_of(st.lists(_messages("user")), _any), 6)
    row = {"conversation": conversation}
    if draw(st.integers(0, 5)) == 0:
        row["_injected_fake"] = draw(_any)
    return _sometimes(draw, row, _any, 3)


def _check_contract(batch: dict, *, shifted: bool) -> None:
    """Same [B, L] token tensors; labels are IGNORE or ids; padding is never labelled."""
    input_ids, labels = batch["input_ids"], batch["labels"]
    mask = batch.get("attention_mask", torch.ones_like(input_ids))
    assert input_ids.dim() == 2 and input_ids.shape == labels.shape == mask.shape
    assert torch.int64 == labels.dtype == input_ids.dtype
    trained = labels != IGNORE
    assert bool((labels[trained] >= 0).all())
    assert not bool((trained & (mask == 0)).any())
    if not shifted:
        assert torch.equal(labels[trained], input_ids[trained])


def _collates_or_refuses(collator, examples, *, shifted: bool) -> None:
    try:
        batch = collator(examples)
    except vc.VLMCollateError:
        return
    _check_contract(batch, shifted=shifted)


@pytest.fixture(scope="module")
def hostile_collators(qwen_processor):
    return (
        vc.Qwen25VLCollator(processor=qwen_processor, shift_labels=False),
        vc.Qwen25VLCollator(processor=qwen_processor, empty_labels="drop", max_length=48),
    )


class TestHostileRows:
    @given(examples=st.one_of(st.lists(_rows(), min_size=1, max_size=3), _any))
    def test_garbage_rows(self, hostile_collators, examples):
        """Any batch of garbage rows gives a contract-satisfying batch or a VLMCollateError."""
        unshifted, shifted = hostile_collators
        _collates_or_refuses(unshifted, examples, shifted=False)
        _collates_or_refuses(shifted, examples, shifted=True)


_TOKEN_DTYPES = [torch.int64, torch.int32, torch.int8, torch.uint8, torch.float32, torch.bool]


@st.composite
def _token_values(draw, length: int):
    dtype = draw(st.sampled_from(_TOKEN_DTYPES))
    values = draw(
        st.lists(
            st.one_of(st.integers(-3, VOCAB + 3), st.just(IGNORE), st.integers(0, 2)),
            min_size=length,
            max_size=length,
        )
    )
    if draw(st.integers(0, 9)) == 0:
        return draw(_any)
    shape = (
        draw(st.sampled_from([(length,), (1, length)]))
        if draw(st.integers(0, 9)) == 0
        else (length,)
    )
    with np.errstate(all="ignore"):
        return torch.tensor(np.array(values).reshape(shape)).to(dtype)


@st.composite
def _pretokenized(draw):
    length = draw(st.integers(1, 8))
    ids = draw(st.lists(st.integers(0, VOCAB - 1), min_size=length, max_size=length))
    row = {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor([t if draw(st.booleans()) else IGNORE for t in ids]),
        "attention_mask": torch.ones(
            length, dtype=draw(st.sampled_from([torch.long, torch.int32]))
        ),
    }
    for key in ("input_ids", "labels", "attention_mask", "mm_token_type_ids", "loss_weights"):
        if draw(st.integers(0, 9)) == 0:
            row[key] = draw(_token_values(draw(st.sampled_from([length, length + 1]))))
    if draw(st.integers(0, 3)) == 0:
        fill = _sometimes(draw, 0.5, st.sampled_from([math.nan, math.inf]), 30)
        row["pixel_values"] = torch.full((_sometimes(draw, 4, st.integers(0, 8), 30), 3), fill)
        row["image_grid_thw"] = _sometimes(draw, torch.tensor([[1, 2, 2]]), _any, 20)
        if draw(st.booleans()):
            row["n_images"] = _sometimes(draw, 1, _any, 30)
    if draw(st.integers(0, 9)) == 0:
        row["position_ids"] = draw(_any)
    return _sometimes(draw, row, _any, 4)


class TestHostilePreTokenized:
    @given(rows=st.lists(_pretokenized(), min_size=1, max_size=3))
    def test_pretokenized_collator(self, rows):
        """PreTokenizedCollator gives a contract-satisfying batch or a VLMCollateError."""
        _collates_or_refuses(
            vc.PreTokenizedCollator(vocab_size=VOCAB, shift_labels=False), rows, shifted=False
        )
        _collates_or_refuses(vc.PreTokenizedCollator(empty_labels="drop"), rows, shifted=True)

    @given(rows=st.lists(_pretokenized(), min_size=1, max_size=3))
    def test_packs(self, rows):
        """pack and NeatPackedCollator give packs satisfying the contract or a VLMCollateError."""
        packed = vc.NeatPackedCollator(vocab_size=VOCAB, attn_implementation="flash_attention_2")
        _collates_or_refuses(packed, rows, shifted=True)
        try:
            result = pack(rows, 6, overlong="drop")
        except vc.VLMCollateError:
            return
        if result.packs:
            _check_contract(packed(result.packs), shifted=True)


_OPTIONS = {
    "max_length": None,
    "drop_overlong": False,
    "padding": "longest",
    "pad_to_multiple_of": None,
    "padding_side": None,
    "shift_labels": True,
    "pixel_dtype": "auto",
    "empty_labels": "raise",
    "overlong": "drop",
    "max_image_pixels": 10**6,
    "processor_kwargs": {},
    "label_policy": None,
    "trusted_keys": (),
}


class TestHostileOptions:
    @given(name=st.sampled_from(sorted(_OPTIONS)), value=_any)
    def test_collator_options(self, qwen_processor, name, value):
        """Any value for any option builds a working collator or raises a ConfigurationError."""
        try:
            collator = vc.Qwen25VLCollator(processor=qwen_processor, **{name: value})
        except vc.ConfigurationError:
            return
        good = {
            "conversation": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Yo"},
            ]
        }
        _collates_or_refuses(collator, [good], shifted=collator.shift_labels)

    @given(
        target=st.sampled_from(["pretokenized", "packed", "robust", "policy"]),
        name=st.sampled_from(
            [
                "max_length",
                "shift_labels",
                "pad_token_id",
                "pixel_dtype",
                "vocab_size",
                "padding_idx",
                "materialize_4d_mask",
                "max_retries",
                "seed",
                "retry_on",
                "turns",
                "roles",
                "weight",
                "loss_weights",
                "reasoning",
                "train_on_end_of_turn",
            ]
        ),
        value=_any,
    )
    def test_other_options(self, target, name, value):
        """Wrappers, pre-tokenized collators and label policies refuse bad options typed."""
        factories = {
            "pretokenized": vc.PreTokenizedCollator,
            "packed": vc.NeatPackedCollator,
            "robust": lambda **kw: vc.RobustCollator(collator=len, dataset=[1], **kw),
            "policy": vc.LabelPolicy.coerce,
        }
        try:
            if target == "policy":
                factories[target]({name: value})
            else:
                factories[target](**{name: value})
        except vc.VLMCollateError:
            pass
        except TypeError as error:  # an option this class does not have at all
            assert "unexpected keyword argument" in str(error)
