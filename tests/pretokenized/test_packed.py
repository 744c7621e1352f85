"""NeatPackedCollator and block_causal_mask."""

from __future__ import annotations

import collections
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vlm_collate as vc
from vlm_collate.pretokenized import NeatPackedCollator, block_causal_mask
from vlm_collate.testing import build_processor

IGNORE = -100


def pack(documents, trained=None, pad=0):
    """Pack token documents the way a neat packer does: shift each document, then lay them end to end.

    ``trained[d]`` lists which original positions of document ``d`` are labels
    (all but the first by default). ``pad`` trailing padding tokens are added.
    """
    input_ids, labels, document_ids = [], [], []
    for number, tokens in enumerate(documents, start=1):
        chosen = trained[number - 1] if trained else range(1, len(tokens))
        original_labels = [token if k in chosen else IGNORE for k, token in enumerate(tokens)]
        input_ids += tokens[:-1]
        labels += original_labels[1:]
        document_ids += [number] * (len(tokens) - 1)
    input_ids += [0] * pad
    labels += [IGNORE] * pad
    document_ids += [0] * pad
    return {
        "input_ids": torch.tensor(input_ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(document_ids),
    }


documents_strategy = st.lists(
    st.lists(st.integers(1, 50), min_size=2, max_size=6), min_size=1, max_size=3
)
packs_strategy = st.lists(st.tuples(documents_strategy, st.integers(0, 3)), min_size=1, max_size=3)


class TestNeatPackedCollator:
    def test_flash_attention_keeps_indexed_mask(self):
        """flash_attention_2 pads the indexed map with 0 and keeps it as attention_mask."""
        collator = NeatPackedCollator(attn_implementation="flash_attention_2")
        batch = collator([pack([[1, 2, 3], [4, 5]]), pack([[6, 7]])])
        assert [[1, 1, 2], [1, 0, 0]] == batch["attention_mask"].tolist()
        assert [[1, 2, 4], [6, 0, 0]] == batch["input_ids"].tolist()
        assert [[2, 3, 5], [7, IGNORE, IGNORE]] == batch["labels"].tolist()
        assert [[1, 1, 2], [1, 0, 0]] == batch["_packed_seq_ids"].tolist()

    def test_sdpa_block_causal(self):
        """sdpa gets a bool [B, 1, S, S] mask: causal within each document, nothing across."""
        batch = NeatPackedCollator()([pack([[1, 2, 3], [4, 5, 6]])])
        expected = [
            [True, False, False, False],
            [True, True, False, False],
            [False, False, True, False],
            [False, False, True, True],
        ]
        assert torch.bool == batch["attention_mask"].dtype
        assert [[expected]] == batch["attention_mask"].tolist()

    def test_compact_mask_on_request(self):
        """materialize_4d_mask=False keeps the [B, S] map and gives it as _packed_seq_ids."""
        batch = NeatPackedCollator(materialize_4d_mask=False)([pack([[1, 2, 3]])])
        assert [[1, 1]] == batch["attention_mask"].tolist()
        assert [[1, 1]] == batch["_packed_seq_ids"].tolist()

    def test_single_document_has_no_seq_ids(self):
        """A batch of one-document rows has no _packed_seq_ids."""
        batch = NeatPackedCollator(attn_implementation="eager")([pack([[1, 2, 3]])])
        assert "_packed_seq_ids" not in batch

    def test_max_length_pads_and_rejects(self):
        """max_length fixes the row length; a longer pack raises OverlongError naming it."""
        batch = NeatPackedCollator(max_length=5)([pack([[1, 2, 3]])])
        assert (1, 5) == tuple(batch["input_ids"].shape)
        with pytest.raises(vc.OverlongError, match="sample 1"):
            NeatPackedCollator(max_length=2)([pack([[1, 2]]), pack([[1, 2, 3, 4]])])

    def test_position_ids_1d_and_mrope(self):
        """1-D positions stack to [B, S]; mRoPE [3, S] stack to [3, B, S], padded with 0."""
        first, second = pack([[1, 2, 3]]), pack([[4, 5]])
        first["position_ids"], second["position_ids"] = torch.tensor([5, 6]), torch.tensor([7])
        assert [[5, 6], [7, 0]] == NeatPackedCollator()([first, second])["position_ids"].tolist()
        first["position_ids"] = torch.tensor([[1, 2], [3, 4], [5, 6]])
        second["position_ids"] = torch.tensor([[7], [8], [9]])
        expected = [[[1, 2], [7, 0]], [[3, 4], [8, 0]], [[5, 6], [9, 0]]]
        assert expected == NeatPackedCollator()([first, second])["position_ids"].tolist()

    def test_position_ids_derived_per_document(self):
        """Without position_ids, positions restart at 0 in every document."""
        batch = NeatPackedCollator()([pack([[1, 2, 3], [4, 5, 6, 7]], pad=1)])
        assert [[0, 1, 0, 1, 2, 0]] == batch["position_ids"].tolist()

    def test_mm_token_type_ids(self):
        """mm_token_type_ids is padded with 0, and zeros for packs without it."""
        first = pack([[1, 2, 3]])
        first["mm_token_type_ids"] = torch.tensor([1, 0])
        batch = NeatPackedCollator()([first, pack([[4, 5]])])
        assert [[1, 0], [0, 0]] == batch["mm_token_type_ids"].tolist()

    def test_media_concatenated_and_counted(self):
        """Pixels and grids concatenate; counts come from n_images or the pack's grid."""
        first = {
            **pack([[1, 2, 3]]),
            "pixel_values": torch.ones(4, 3),
            "image_grid_thw": torch.tensor([[1, 2, 2]]),
        }
        second = {**pack([[4, 5]]), "n_images": 0}
        third = {
            **pack([[6, 7]]),
            "pixel_values": torch.zeros(8, 3),
            "image_grid_thw": torch.tensor([[1, 2, 2], [1, 2, 2]]),
            "n_images": 2,
        }
        batch = NeatPackedCollator()([first, second, third])
        assert torch.equal(torch.cat([torch.ones(4, 3), torch.zeros(8, 3)]), batch["pixel_values"])
        assert [1, 0, 2] == batch["n_images_per_sample"].tolist()
        assert (3, 3) == tuple(batch["image_grid_thw"].shape)

    def test_packs_not_mutated(self):
        """The caller's packs are unchanged."""
        packs = [pack([[1, 2, 3], [4, 5]], pad=2)]
        packs[0]["labels"][-1] = 9  # a packer's mistake: a label on padding
        before = copy.deepcopy(packs)
        batch = NeatPackedCollator()(packs)
        assert IGNORE == batch["labels"][0, -1].item()
        assert all(torch.equal(before[0][key], packs[0][key]) for key in before[0])

    @pytest.mark.parametrize(
        ("bad", "error"),
        [
            ({"input_ids": [1, 2], "labels": [1, 2]}, vc.SampleError),
            ({"input_ids": [1, 2], "labels": [1], "attention_mask": [1, 1]}, vc.SampleError),
            ({"input_ids": [1, 2], "labels": [1, 2], "attention_mask": [1, -1]}, vc.SampleError),
            (
                {
                    "input_ids": [1, 2],
                    "labels": [1, 2],
                    "attention_mask": [1, 1],
                    "position_ids": [0],
                },
                vc.SampleError,
            ),
            ([1, 2], vc.SampleTypeError),
        ],
    )
    def test_bad_input_names_pack(self, bad, error):
        """Malformed packs raise a VLMCollateError subclass naming the pack."""
        with pytest.raises(error, match="sample 1"):
            NeatPackedCollator()([pack([[1, 2]]), bad])

    def test_bad_options_and_batch(self):
        """Unknown attention backends and empty batches are refused."""
        with pytest.raises(vc.ConfigurationError):
            NeatPackedCollator(attn_implementation="flex")
        with pytest.raises(vc.BatchError):
            NeatPackedCollator()([])

    @settings(max_examples=60, deadline=None)
    @given(layout=packs_strategy, max_extra=st.integers(0, 2))
    def test_invariants(self, layout, max_extra):
        """Block-causal mask = union of per-document causal masks; labels stay in their document; tokens kept; padding inert."""
        packs = [pack(documents, pad=pad) for documents, pad in layout]
        longest = max(len(p["input_ids"]) for p in packs)
        collator = NeatPackedCollator(max_length=longest + max_extra)
        batch = collator(packs)
        rows, length = len(packs), longest + max_extra
        document_of = [[0] * length for _ in range(rows)]
        offset_of = [[0] * length for _ in range(rows)]
        for row, (documents, _) in enumerate(layout):
            start = 0
            for number, tokens in enumerate(documents, start=1):
                for k in range(len(tokens) - 1):
                    document_of[row][start + k], offset_of[row][start + k] = number, k
                start += len(tokens) - 1
        expected_mask = [
            [
                [
                    document_of[row][i] > 0
                    and document_of[row][i] == document_of[row][j]
                    and j <= i
                    for j in range(length)
                ]
                for i in range(length)
            ]
            for row in range(rows)
        ]
        assert expected_mask == batch["attention_mask"][:, 0].tolist()
        for row, (documents, _) in enumerate(layout):
            for t in range(length):
                label = batch["labels"][row, t].item()
                if label != IGNORE:  # the target is the next token of t's own document
                    tokens = documents[document_of[row][t] - 1]
                    assert tokens[offset_of[row][t] + 1] == label
        expected_tokens = collections.Counter(
            token for documents, _ in layout for tokens in documents for token in tokens[:-1]
        )
        real = torch.tensor(document_of) > 0
        assert expected_tokens == collections.Counter(batch["input_ids"][real].tolist())
        assert [] == batch["labels"][~real].ne(IGNORE).nonzero().tolist()

    def test_real_tokenizer_documents(self):
        """Documents tokenized by a real tokenizer keep their text and their label targets."""
        tokenizer = build_processor("qwen2_5_vl").tokenizer
        texts = ["A red box.", "Two cats sleep on a mat."]
        documents = [tokenizer.encode(text) for text in texts]
        batch = NeatPackedCollator(attn_implementation="flash_attention_2")([pack(documents)])
        for number, text in enumerate(texts, start=1):
            in_document = batch["attention_mask"][0] == number
            inputs = batch["input_ids"][0][in_document].tolist()
            targets = batch["labels"][0][in_document].tolist()
            assert text == tokenizer.decode(inputs + targets[-1:])
            assert text == tokenizer.decode(inputs[:1] + targets)


class TestBlockCausalMask:
    def test_padding_never_attends_or_is_attended(self):
        """Rows and columns of padding (document 0) are all False."""
        mask = block_causal_mask(torch.tensor([[1, 1, 0]]))[0, 0]
        assert [[True, False, False], [True, True, False], [False, False, False]] == mask.tolist()
