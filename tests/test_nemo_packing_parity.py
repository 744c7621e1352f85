"""compat's packing functions side by side with NeMo Automodel 0.7's own.

``nemo-automodel`` is not a dependency: install it with
``pip install --no-deps nemo-automodel==0.7.0 datasets`` to run these tests.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from tests.helpers.packs import document_pack
from vlm_collate import compat

nemo = pytest.importorskip(
    "nemo_automodel.components.datasets.vlm.collate_fns",
    reason="the NeMo comparison needs nemo-automodel: pip install --no-deps nemo-automodel==0.7.0 datasets",
)


@dataclasses.dataclass(frozen=True)
class Packing:
    """A packing contract as NeMo's models give it."""

    packed_mask_type: str
    requires_packed_sequence_metadata: bool = False


def packs() -> list[dict]:
    torch.manual_seed(0)
    return [
        document_pack([[1, 2, 3], [4, 5, 6, 7]], image=True),
        document_pack([[8, 9, 10]], pad=2, image=True),
        document_pack([[11, 12, 13, 14, 15]]),
    ]


def assert_same_batch(expected: dict, actual: dict) -> None:
    assert sorted(expected) == sorted(actual)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == actual[key].dtype, key
            assert value.tolist() == actual[key].tolist(), key
        else:
            assert value == actual[key], key


def nemo_call(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # attn_implementation is deprecated there
        return function(*args, **kwargs)


class TestNeatPackedParity:
    @pytest.mark.parametrize(
        "options",
        [
            {},
            {"attn_implementation": "sdpa"},
            {"attn_implementation": "flash_attention_2"},
            {"attn_implementation": "flash_attention_3"},
            {"materialize_4d_mask": False},
            {"attn_implementation": "flash_attention_2", "materialize_4d_mask": False},
            {"max_length": 12, "padding_idx": 7},
        ],
        ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()) or "defaults",
    )
    def test_same_batch_as_nemo(self, options):
        """neat_packed_vlm_collater gives NeMo 0.7's keys, dtypes and values."""
        expected = nemo_call(nemo.neat_packed_vlm_collater, packs(), **options)
        assert_same_batch(expected, compat.neat_packed_vlm_collater(packs(), **options))

    @pytest.mark.parametrize(
        "packing",
        [Packing("block_causal"), Packing("document_ids"), Packing("flash_varlen", True)],
        ids=lambda packing: (
            f"{packing.packed_mask_type},{packing.requires_packed_sequence_metadata}"
        ),
    )
    def test_same_batch_for_a_packing_contract(self, packing):
        """A model's packing contract gives NeMo 0.7's layout, metadata included."""
        expected = nemo.neat_packed_vlm_collater(packs(), packing=packing)
        assert_same_batch(expected, compat.neat_packed_vlm_collater(packs(), packing=packing))

    def test_mrope_positions(self):
        """mRoPE packs give NeMo's [3, B, S] positions."""
        batch = [document_pack([[1, 2, 3]], mrope=True), document_pack([[4, 5, 6, 7]], mrope=True)]
        expected = nemo.neat_packed_vlm_collater(batch)
        assert_same_batch(expected, compat.neat_packed_vlm_collater(batch))


class TestTHDParity:
    @pytest.mark.parametrize("options", [{}, {"max_length": 10}, {"seq_lens_padding_value": -1}])
    def test_same_batch_as_nemo(self, options):
        """packed_sequence_thd_vlm_collater gives NeMo 0.7's THD batch (packs without own padding)."""
        batch = [
            document_pack([[1, 2, 3], [4, 5, 6, 7]], image=True),
            document_pack([[8, 9, 10]], mrope=False, image=True),
        ]
        expected = nemo.packed_sequence_thd_vlm_collater(batch, **options)
        assert_same_batch(expected, compat.packed_sequence_thd_vlm_collater(batch, **options))

    def test_explicit_seq_lens(self):
        """Context-parallel packs with seq_lens / seq_lens_padded give NeMo's figures."""
        pack = {
            **document_pack([[1, 2, 3], [4, 5, 6]], mrope=True),
            "seq_lens": torch.tensor([2, 1]),
            "seq_lens_padded": torch.tensor([2, 2]),
        }
        other = document_pack([[7, 8, 9, 10, 11]], mrope=True)
        expected = nemo.packed_sequence_thd_vlm_collater([pack, other])
        assert_same_batch(expected, compat.packed_sequence_thd_vlm_collater([pack, other]))
