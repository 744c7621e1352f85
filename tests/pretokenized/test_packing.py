"""pack: greedy first-fit packing of pre-tokenized samples for NeatPackedCollator."""

from __future__ import annotations

import collections

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from PIL import Image

import vlm_collate as vc
from vlm_collate.pretokenized import NeatPackedCollator, pack, pretokenize_sample

IGNORE = -100


def sample(ids, labels=None):
    """A pre-tokenized text sample; every token trained unless ``labels`` says otherwise."""
    labels = list(ids) if labels is None else labels
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}


def exchange(question, answer, image=None):
    user = [{"type": "text", "text": question}]
    if image is not None:
        user.insert(0, {"type": "image", "image": image})
    return {
        "conversation": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    }


@st.composite
def samples_and_size(draw):
    """Token samples of 2..12 tokens with random trained positions, and a pack size."""
    count = draw(st.integers(1, 8))
    samples = []
    for _ in range(count):
        ids = draw(st.lists(st.integers(1, 30), min_size=2, max_size=12))
        trained = draw(st.lists(st.booleans(), min_size=len(ids), max_size=len(ids)))
        labels = [token if keep else IGNORE for token, keep in zip(ids, trained, strict=True)]
        samples.append((ids, labels))
    return samples, draw(st.integers(1, 14))


def expected_block_mask(lengths, width):
    """Union of per-document causal masks, built cell by cell from the document lengths."""
    owner = [number for number, length in enumerate(lengths, start=1) for _ in range(length)]
    owner += [0] * (width - len(owner))
    return [
        [owner[i] != 0 and owner[i] == owner[j] and j <= i for j in range(width)]
        for i in range(width)
    ]


class TestPack:
    def test_first_fit_order(self):
        """Each sample goes into the first pack with room, in the order given."""
        samples = [sample([1, 2, 3]), sample([4, 5, 6, 7]), sample([8, 9]), sample([10, 11, 12])]
        result = pack(samples, 4)
        assert [[0, 2], [1], [3]] == result.documents
        assert [1, 2, 8] == result.packs[0]["input_ids"].tolist()
        assert [2, 3, 9] == result.packs[0]["labels"].tolist()
        assert [1, 1, 2] == result.packs[0]["attention_mask"].tolist()
        assert [0, 1, 0] == result.packs[0]["position_ids"].tolist()

    def test_overlong_raise_names_sample(self):
        """overlong='raise' names the sample that cannot fit."""
        with pytest.raises(vc.OverlongError, match="sample 1"):
            pack([sample([1, 2]), sample([1, 2, 3, 4, 5])], 3)

    def test_overlong_drop_reported(self):
        """overlong='drop' leaves the sample out and reports it."""
        result = pack([sample([1, 2]), sample([1, 2, 3, 4, 5])], 3, overlong="drop")
        assert [[0]] == result.documents
        assert [(1, "overlong")] == [(d.index, d.reason) for d in result.dropped]

    def test_overlong_truncate_text(self):
        """overlong='truncate' keeps the first pack_size + 1 tokens of a text sample."""
        result = pack([sample([1, 2, 3, 4, 5, 6])], 3, overlong="truncate")
        assert [] == [d.index for d in result.dropped]
        assert [0] == result.truncated
        assert [1, 2, 3] == result.packs[0]["input_ids"].tolist()
        assert [2, 3, 4] == result.packs[0]["labels"].tolist()

    def test_truncate_never_cuts_media(self, qwen_processor):
        """A truncation that would cut image tokens drops the sample instead, and says so."""
        image_pad = qwen_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        samples = [sample([1, 2, 3, image_pad, 5]), sample([1, 2, 3, 4, 5])]
        result = pack(samples, 2, overlong="truncate", processor=qwen_processor)
        assert [0] == [d.index for d in result.dropped]
        assert "media" in result.dropped[0].detail
        assert [[1]] == result.documents

    def test_real_images_concatenated(self, qwen_processor):
        """Packs of real image samples carry their media in order, counted per pack."""
        chat = vc.Qwen25VLCollator(processor=qwen_processor)
        examples = [
            exchange("Colour?", "Red.", Image.new("RGB", (56, 56), "red")),
            exchange("Hi", "Hello!"),
            exchange("Shape?", "A wide blue box.", Image.new("RGB", (112, 56), "blue")),
        ]
        samples = [pretokenize_sample(chat, example) for example in examples]
        size = sum(s["input_ids"].shape[0] - 1 for s in samples)
        result = pack(samples, size)
        batch = NeatPackedCollator()(result.packs)
        pixels = torch.cat([samples[0]["pixel_values"], samples[2]["pixel_values"]])
        assert torch.equal(pixels, batch["pixel_values"])
        grids = torch.cat([samples[0]["image_grid_thw"], samples[2]["image_grid_thw"]])
        assert grids.tolist() == batch["image_grid_thw"].tolist()
        assert [2] == batch["n_images_per_sample"].tolist()
        image_pad = qwen_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        merged_patches = int(grids.prod(dim=1).sum()) // 4  # merge_size 2 joins 2x2 patches
        assert merged_patches == int((batch["input_ids"] == image_pad).sum())

    @settings(max_examples=60)
    @given(samples_and_size())
    def test_packing_invariants(self, drawn):
        """Every sample is packed once or dropped, packs fit, tokens and labels stay in their document."""
        raw, pack_size = drawn
        result = pack([sample(ids, labels) for ids, labels in raw], pack_size, overlong="drop")
        fits = [
            index
            for index, (ids, labels) in enumerate(raw)
            if len(ids) - 1 <= pack_size and any(label != IGNORE for label in labels[1:])
        ]
        assert fits == sorted(index for documents in result.documents for index in documents)
        assert sorted(set(range(len(raw))) - set(fits)) == [d.index for d in result.dropped]
        assert all(len(p["input_ids"]) <= pack_size for p in result.packs)
        expected_tokens = collections.Counter(token for i in fits for token in raw[i][0][:-1])
        actual_tokens = collections.Counter(
            t for p in result.packs for t in p["input_ids"].tolist()
        )
        assert expected_tokens == actual_tokens
        for packed, documents in zip(result.packs, result.documents, strict=True):
            ids, labels = [], []
            for index in documents:
                ids += raw[index][0][:-1]
                labels += raw[index][1][1:]
            assert (ids, labels) == (packed["input_ids"].tolist(), packed["labels"].tolist())

    @settings(max_examples=40)
    @given(samples_and_size())
    def test_block_causal_mask(self, drawn):
        """NeatPackedCollator on the packs gives the union of per-document causal masks."""
        raw, pack_size = drawn
        result = pack([sample(ids, labels) for ids, labels in raw], pack_size, overlong="drop")
        if not result.packs:
            event("nothing to pack")
            return
        batch = NeatPackedCollator()(result.packs)
        width = batch["input_ids"].shape[1]
        expected = [
            [expected_block_mask([len(raw[i][0]) - 1 for i in documents], width)]
            for documents in result.documents
        ]
        assert expected == batch["attention_mask"].tolist()

    def test_bad_pack_size(self):
        """A pack_size that is not a positive int is refused, naming the option."""
        with pytest.raises(vc.ConfigurationError, match="pack_size"):
            pack([sample([1, 2])], 0)
