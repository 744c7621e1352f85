"""A tiny random Qwen2.5-VL gives every sample the same logits in a shared row as alone.

The decisive check of padding-free batches and packs: positions, masks, media
order and label alignment are all right only if each sample's logits inside
the row equal the logits of its own padded batch of one. Flash-attention is
not available on CPU, so the shared row gets sdpa with a 4-D block-diagonal
causal mask built from ``cu_seq_lens_q`` (or the pack's own mask).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import vlm_collate as vc
from tests.helpers.chat import image_sample, text_sample
from vlm_collate.pretokenized import NeatPackedCollator, block_causal_mask
from vlm_collate.testing import build_processor

transformers = pytest.importorskip("transformers")

ATOL = 1e-5


@pytest.fixture(scope="module")
def processor():
    return build_processor("qwen2_5_vl")


@pytest.fixture(scope="module")
def model(processor):
    """Qwen2.5-VL with two text layers of width 32, a one-block vision tower, seed 0."""
    tokenizer = processor.tokenizer
    config = transformers.Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2]},
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "fullatt_block_indexes": [0],
        },
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return transformers.Qwen2_5_VLForConditionalGeneration(config).eval()


def samples() -> list[dict]:
    return [
        image_sample("A red box.", Image.new("RGB", (56, 84), "red")),
        text_sample("Hello there, friend."),
        image_sample("Two.", Image.new("RGB", (84, 56), "blue"), prompt="How many?"),
    ]


def logits(model, batch: dict, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits of the whole batch passed as the model's keyword arguments (varlen ones
    included, which sdpa ignores), with ``attention_mask`` added."""
    bookkeeping = ("labels", "n_images_per_sample", "_packed_seq_ids")
    inputs = {key: value for key, value in batch.items() if key not in bookkeeping}
    inputs["attention_mask"] = attention_mask
    with torch.no_grad():
        return model(**inputs).logits[0]


def alone_logits(model, processor, sample: dict) -> torch.Tensor:
    """The sample's logits in its own batch of one; the model computes its positions."""
    batch = vc.Qwen25VLCollator(processor=processor)([sample])
    inputs = {
        key: value for key, value in batch.items() if key not in ("labels", "n_images_per_sample")
    }
    with torch.no_grad():
        return model(**inputs).logits[0]


def document_mask(lengths: list[int]) -> torch.Tensor:
    numbers = torch.arange(1, len(lengths) + 1).repeat_interleave(torch.tensor(lengths))
    return block_causal_mask(numbers.unsqueeze(0))


class TestSameLogitsAsAlone:
    def test_padding_free_chat_batch(self, model, processor):
        """Each sample's logits in a padding-free Qwen25VLCollator row equal its logits alone."""
        batch = vc.Qwen25VLCollator(processor=processor, padding_free=True)(samples())
        lengths = batch["cu_seq_lens_q"].diff().tolist()
        shared = logits(model, batch, document_mask(lengths))
        cuts = batch["cu_seq_lens_q"].tolist()
        for row, sample in enumerate(samples()):
            alone = alone_logits(model, processor, sample)
            torch.testing.assert_close(alone, shared[cuts[row] : cuts[row + 1]], atol=ATOL, rtol=0)

    def test_pack_with_its_own_sdpa_mask(self, model, processor):
        """A pack from pack(rope_index=...) under NeatPackedCollator's 4-D mask: same logits."""
        collator = vc.Qwen25VLCollator(processor=processor)
        pretokenized = [vc.pretokenize_sample(collator, sample) for sample in samples()]
        rope_index = vc.MRopeIndex.from_processor(processor)
        result = vc.pack(pretokenized, 512, rope_index=rope_index)
        assert [[0, 1, 2]] == result.documents
        batch = NeatPackedCollator(attn_implementation="sdpa")(result.packs)
        shared = logits(model, batch, batch["attention_mask"])
        ids = batch["_packed_seq_ids"][0]
        for number, sample in enumerate(samples(), start=1):
            alone = alone_logits(model, processor, sample)
            torch.testing.assert_close(alone, shared[ids == number], atol=ATOL, rtol=0)

    def test_padding_free_packs(self, model, processor):
        """Two packs laid end to end by NeatPackedCollator(padding_free=True): same logits."""
        collator = vc.Qwen25VLCollator(processor=processor)
        pretokenized = [vc.pretokenize_sample(collator, sample) for sample in samples()]
        rope_index = vc.MRopeIndex.from_processor(processor)
        result = vc.pack(pretokenized, 60, rope_index=rope_index)
        assert 2 <= len(result.packs)
        batch = NeatPackedCollator(padding_free=True)(result.packs)
        shared = logits(model, batch, document_mask(batch["cu_seq_lens_q"].diff().tolist()))
        ids = batch["_packed_seq_ids"][0]
        order = [index for documents in result.documents for index in documents]
        for number, index in enumerate(order, start=1):
            alone = alone_logits(model, processor, samples()[index])
            torch.testing.assert_close(alone, shared[ids == number], atol=ATOL, rtol=0)
