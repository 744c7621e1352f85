"""Padding-free chat batches: one row of samples end to end, varlen kwargs, per-sample positions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from PIL import Image

import vlm_collate as vc
from tests.helpers.chat import image_sample, text_sample
from vlm_collate.testing import build_processor, decoded_label_runs
from vlm_collate.testing.strategies import examples

IGNORE = -100
QWEN = build_processor("qwen2_5_vl")  # one processor for every generated example


@pytest.fixture(scope="module")
def qwen():
    return build_processor("qwen2_5_vl")


def mixed_samples() -> list[dict]:
    return [
        image_sample("A red box.", Image.new("RGB", (56, 84), "red")),
        text_sample("Hello there, friend."),
        image_sample("Two.", Image.new("RGB", (84, 56), "blue"), prompt="How many?"),
    ]


def alone_rows(collator_class, processor, samples, **options) -> list[dict]:
    """Each sample collated on its own, as a padded batch of one."""
    return [collator_class(processor=processor, **options)([sample]) for sample in samples]


class TestPaddingFreeBatch:
    @pytest.mark.parametrize("side", ["left", "right"])
    def test_rows_equal_each_sample_alone(self, qwen, side):
        """Each slice of input_ids and labels is the sample's own batch of one, on either padding side."""
        samples = mixed_samples()
        batch = vc.Qwen25VLCollator(processor=qwen, padding_free=True, padding_side=side)(samples)
        cuts = batch["cu_seq_lens_q"].tolist()
        for row, alone in enumerate(alone_rows(vc.Qwen25VLCollator, qwen, samples)):
            piece = slice(cuts[row], cuts[row + 1])
            assert alone["input_ids"][0].tolist() == batch["input_ids"][0, piece].tolist()
            assert alone["labels"][0].tolist() == batch["labels"][0, piece].tolist()

    def test_truncated_rows_equal_each_sample_alone(self, qwen):
        """With overlong='truncate' each slice is the sample cut to max_length, as alone."""
        samples = [text_sample("word " * 40), text_sample("Short."), text_sample("more " * 30)]
        options = {"max_length": 24, "overlong": "truncate", "empty_labels": "drop"}
        batch = vc.Qwen25VLCollator(processor=qwen, padding_free=True, **options)(samples)
        cuts = batch["cu_seq_lens_q"].tolist()
        for row, alone in enumerate(alone_rows(vc.Qwen25VLCollator, qwen, samples, **options)):
            piece = slice(cuts[row], cuts[row + 1])
            assert alone["input_ids"][0].tolist() == batch["input_ids"][0, piece].tolist()
            assert alone["labels"][0].tolist() == batch["labels"][0, piece].tolist()

    def test_one_row_without_padding_or_attention_mask(self, qwen):
        """The batch is one row as long as the samples alone, with no attention_mask."""
        samples = mixed_samples()
        batch = vc.Qwen25VLCollator(processor=qwen, padding_free=True)(samples)
        alone = alone_rows(vc.Qwen25VLCollator, qwen, samples)
        total = sum(row["input_ids"].shape[1] for row in alone)
        assert (1, total) == tuple(batch["input_ids"].shape)
        assert (1, total) == tuple(batch["labels"].shape)
        assert "attention_mask" not in batch

    def test_varlen_kwargs_as_transformers_expects(self, qwen):
        """cu_seq_lens_q/k are int32 cumulative lengths from 0; max_length_q/k the longest, an int."""
        samples = mixed_samples()
        batch = vc.Qwen25VLCollator(processor=qwen, padding_free=True)(samples)
        lengths = [
            row["input_ids"].shape[1] for row in alone_rows(vc.Qwen25VLCollator, qwen, samples)
        ]
        expected = [0, lengths[0], lengths[0] + lengths[1], sum(lengths)]
        assert expected == batch["cu_seq_lens_q"].tolist()
        assert torch.int32 == batch["cu_seq_lens_q"].dtype
        assert batch["cu_seq_lens_q"] is batch["cu_seq_lens_k"]
        assert (max(lengths), max(lengths)) == (batch["max_length_q"], batch["max_length_k"])
        assert isinstance(batch["max_length_q"], int)

    def test_labels_train_each_answer_once(self, qwen):
        """The decoded labelled runs are the assistant answers, in order."""
        batch = vc.Qwen25VLCollator(processor=qwen, padding_free=True)(mixed_samples())
        runs = decoded_label_runs(batch["labels"], qwen.tokenizer)
        assert [
            ["A red box.<|im_end|>", "Hello there, friend.<|im_end|>", "Two.<|im_end|>"]
        ] == runs

    def test_unshifted_labels_never_cross_a_boundary(self, qwen):
        """With shift_labels=False every sample's first label is ignored, so a model-side shift
        never targets one sample's first token from the previous sample."""
        collator = vc.Qwen25VLCollator(processor=qwen, padding_free=True, shift_labels=False)
        batch = collator(mixed_samples())
        starts = batch["cu_seq_lens_q"][:-1].tolist()
        assert [IGNORE] * 3 == batch["labels"][0, starts].tolist()
        runs = decoded_label_runs(batch["labels"], qwen.tokenizer)
        assert [
            ["A red box.<|im_end|>", "Hello there, friend.<|im_end|>", "Two.<|im_end|>"]
        ] == runs

    def test_media_concatenated_with_counts(self, qwen):
        """Pixels and grids of every sample are concatenated; counts are per sample."""
        samples = mixed_samples()
        batch = vc.Qwen25VLCollator(processor=qwen, padding_free=True)(samples)
        alone = alone_rows(vc.Qwen25VLCollator, qwen, samples)
        grids = torch.cat([row["image_grid_thw"] for row in alone if "image_grid_thw" in row])
        assert grids.tolist() == batch["image_grid_thw"].tolist()
        assert [1, 0, 1] == batch["n_images_per_sample"].tolist()

    def test_one_d_positions_restart_per_sample(self):
        """A 1-D RoPE family gets position_ids [1, total] restarting at 0 in each sample."""
        processor = build_processor("llava_onevision")
        samples = [text_sample("Yes."), text_sample("A longer answer here.")]
        batch = vc.LlavaOneVisionCollator(processor=processor, padding_free=True)(samples)
        lengths = batch["cu_seq_lens_q"].diff().tolist()
        expected = [position for length in lengths for position in range(length)]
        assert [expected] == batch["position_ids"].tolist()

    def test_loss_weights_follow_the_tokens(self, qwen):
        """Per-token loss weights are laid end to end like labels, 0 where labels are ignored."""
        policy = vc.LabelPolicy(loss_weights=True)
        samples = [text_sample("Yes."), text_sample("No, thanks.")]
        for sample in samples:
            sample["conversation"][1]["weight"] = 2.0
        batch = vc.Qwen25VLCollator(processor=qwen, padding_free=True, label_policy=policy)(samples)
        trained = batch["labels"] != IGNORE
        assert batch["loss_weights"].shape == batch["labels"].shape
        assert {2.0} == set(batch["loss_weights"][trained].tolist())
        assert {0.0} == set(batch["loss_weights"][~trained].tolist())


class TestPaddingFreeProperties:
    @settings(max_examples=8)
    @given(batch=examples(max_size=3, with_images=True))
    def test_any_batch_is_its_samples_alone_end_to_end(self, batch):
        """For any generated batch, the row is every sample's own batch of one, end to end,
        with boundaries and positions restarting where each sample starts."""
        processor = QWEN
        options = {"empty_labels": "warn", "special_tokens_in_text": "allow"}
        free = vc.Qwen25VLCollator(processor=processor, padding_free=True, **options)(batch)
        alone = alone_rows(vc.Qwen25VLCollator, processor, batch, **options)
        lengths = [row["input_ids"].shape[1] for row in alone]
        assert (
            torch.cumsum(torch.tensor([0, *lengths]), 0).tolist() == free["cu_seq_lens_q"].tolist()
        )
        for key in ("input_ids", "labels"):
            expected = torch.cat([row[key][0] for row in alone]).tolist()
            assert [expected] == free[key].tolist()


class TestPaddingFreeRefusals:
    def test_padding_options_are_refused(self, qwen):
        """padding='max_length' contradicts padding_free and raises ConfigurationError."""
        with pytest.raises(vc.ConfigurationError, match="padding_free"):
            vc.Qwen25VLCollator(
                processor=qwen, padding_free=True, padding="max_length", max_length=64
            )

    def test_injected_fake_image_is_refused(self, qwen):
        """A fake image cannot be hidden without an attention_mask: BatchError names the sample."""
        fake = {**image_sample("A.", Image.new("RGB", (56, 56))), "_injected_fake": True}
        collator = vc.Qwen25VLCollator(processor=qwen, padding_free=True)
        with pytest.raises(vc.BatchError, match=r"samples \[1\]"):
            collator([text_sample(), fake])
