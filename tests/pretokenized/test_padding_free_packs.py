"""Padding-free pre-tokenized input: PreTokenizedCollator, NeatPackedCollator, pack(rope_index=...)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import vlm_collate as vc
from tests.helpers.chat import image_sample, text_sample
from vlm_collate.pretokenized import NeatPackedCollator
from vlm_collate.testing import build_processor

IGNORE = -100


def document_pack(documents, pad=0):
    """Documents already shifted, laid end to end, with ``pad`` trailing padding tokens."""
    input_ids, labels, numbers = [], [], []
    for number, tokens in enumerate(documents, start=1):
        input_ids += tokens[:-1]
        labels += tokens[1:]
        numbers += [number] * (len(tokens) - 1)
    return {
        "input_ids": torch.tensor(input_ids + [0] * pad),
        "labels": torch.tensor(labels + [IGNORE] * pad),
        "attention_mask": torch.tensor(numbers + [0] * pad),
    }


class TestPaddingFreePacks:
    def test_documents_end_to_end_without_pack_padding(self):
        """Every document of every pack is laid end to end; the packs' padding is left out."""
        packs = [document_pack([[1, 2, 3], [4, 5, 6, 7]], pad=3), document_pack([[8, 9]])]
        batch = NeatPackedCollator(padding_free=True)(packs)
        assert [[1, 2, 4, 5, 6, 8]] == batch["input_ids"].tolist()
        assert [[2, 3, 5, 6, 7, 9]] == batch["labels"].tolist()
        assert [[0, 1, 0, 1, 2, 0]] == batch["position_ids"].tolist()
        assert [[1, 1, 2, 2, 2, 3]] == batch["_packed_seq_ids"].tolist()
        assert "attention_mask" not in batch

    def test_varlen_kwargs(self):
        """cu_seq_lens_q/k count documents across packs (int32); max_length_q/k the longest."""
        packs = [document_pack([[1, 2, 3], [4, 5, 6, 7]], pad=3), document_pack([[8, 9]])]
        batch = NeatPackedCollator(padding_free=True)(packs)
        assert [0, 2, 5, 6] == batch["cu_seq_lens_q"].tolist()
        assert torch.int32 == batch["cu_seq_lens_k"].dtype
        assert (3, 3) == (batch["max_length_q"], batch["max_length_k"])

    def test_max_length_still_refuses_longer_packs(self):
        """max_length pads nothing in padding-free mode but still refuses a longer pack."""
        with pytest.raises(vc.OverlongError, match="max_length=3"):
            NeatPackedCollator(padding_free=True, max_length=3)([document_pack([[1, 2, 3, 4, 5]])])

    def test_mixed_position_ranks_are_refused(self):
        """A 1-D pack and an mRoPE pack cannot share a padding-free row."""
        flat = document_pack([[1, 2, 3]])
        mrope = {**document_pack([[4, 5, 6]]), "position_ids": torch.zeros(3, 2, dtype=torch.long)}
        with pytest.raises(vc.BatchError, match="mixes"):
            NeatPackedCollator(padding_free=True)([flat, mrope])


class TestPackRopeIndex:
    def test_documents_get_their_own_mrope_positions(self):
        """pack(rope_index=...) gives a pack the positions of the padding-free chat batch."""
        processor = build_processor("qwen2_5_vl")
        collator = vc.Qwen25VLCollator(processor=processor)
        samples = [image_sample("A.", Image.new("RGB", (56, 56))), text_sample("Yes.")]
        pretokenized = [vc.pretokenize_sample(collator, sample) for sample in samples]
        rope_index = vc.MRopeIndex.from_processor(processor)
        packed = vc.pack(pretokenized, 512, rope_index=rope_index).packs[0]
        batch = vc.Qwen25VLCollator(processor=processor, padding_free=True)(samples)
        assert batch["position_ids"][:, 0].tolist() == packed["position_ids"].tolist()


class TestPreTokenizedPaddingFree:
    @pytest.mark.parametrize("side", ["left", "right"])
    @pytest.mark.parametrize("shift", [True, False])
    def test_same_batch_as_the_chat_collator(self, side, shift):
        """Pre-tokenized samples give exactly the chat collator's padding-free batch."""
        processor = build_processor("qwen2_5_vl")
        samples = [
            image_sample("A red box.", Image.new("RGB", (56, 84))),
            text_sample("Hello there."),
            image_sample("Two.", Image.new("RGB", (84, 56))),
        ]
        options = {"padding_free": True, "padding_side": side, "shift_labels": shift}
        chat = vc.Qwen25VLCollator(processor=processor, **options)
        pretokenized = [vc.pretokenize_sample(chat, sample) for sample in samples]
        expected = chat(samples)
        actual = vc.PreTokenizedCollator(processor=processor, **options)(pretokenized)
        assert sorted(expected) == sorted(actual)
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert value.tolist() == actual[key].tolist(), key
            else:
                assert value == actual[key], key

    def test_padding_options_are_refused(self):
        """padding='max_length' contradicts padding_free and raises ConfigurationError."""
        with pytest.raises(vc.ConfigurationError, match="padding_free"):
            vc.PreTokenizedCollator(padding_free=True, padding="max_length", max_length=8)
