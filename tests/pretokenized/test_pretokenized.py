"""PreTokenizedCollator, merge_media and pretokenize_sample."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from PIL import Image

import vlm_collate as vc
from vlm_collate.media import merge_media
from vlm_collate.pretokenized import PreTokenizedCollator, pretokenize_sample
from vlm_collate.testing import build_processor
from vlm_collate.testing.strategies import examples

IGNORE = -100


@pytest.fixture(scope="module")
def processor():
    return build_processor("qwen2_5_vl")


def sample(ids, labels, **extra):
    """A pre-tokenized sample with a full attention mask."""
    return {
        "input_ids": torch.tensor(ids),
        "attention_mask": torch.ones(len(ids), dtype=torch.long),
        "labels": torch.tensor(labels),
        **extra,
    }


def exchange(question, answer, image=None):
    content = [{"type": "text", "text": question}]
    if image is not None:
        content.insert(0, {"type": "image", "image": image})
    return {
        "conversation": [
            {"role": "user", "content": content},
            {"role": "assistant", "content": answer},
        ]
    }


class TestPreTokenizedCollator:
    def test_pads_right_and_shifts(self):
        """Rows are padded with the pad id / IGNORE / 0, then labels shift left by one."""
        collator = PreTokenizedCollator(pad_token_id=9)
        batch = collator(
            [sample([1, 2, 3, 4], [IGNORE, IGNORE, 3, 4]), sample([5, 6], [IGNORE, 6])]
        )
        assert [[1, 2, 3], [5, 6, 9]] == batch["input_ids"].tolist()
        assert [[1, 1, 1], [1, 1, 0]] == batch["attention_mask"].tolist()
        assert [[IGNORE, 3, 4], [6, IGNORE, IGNORE]] == batch["labels"].tolist()

    def test_unshifted_left_padding(self):
        """shift_labels=False keeps labels aligned with inputs; left padding puts pads first."""
        collator = PreTokenizedCollator(shift_labels=False, padding_side="left")
        batch = collator([sample([1, 2, 3], [IGNORE, 2, 3]), sample([5], [5])])
        assert [[1, 2, 3], [0, 0, 5]] == batch["input_ids"].tolist()
        assert [[IGNORE, 2, 3], [IGNORE, IGNORE, 5]] == batch["labels"].tolist()
        assert [[1, 1, 1], [0, 0, 1]] == batch["attention_mask"].tolist()

    def test_pad_id_from_processor(self, processor):
        """Without pad_token_id the processor's tokenizer supplies the pad id."""
        batch = PreTokenizedCollator(processor=processor, shift_labels=False)(
            [sample([1, 2, 3], [1, 2, 3]), sample([4, 5], [4, 5])]
        )
        assert processor.tokenizer.pad_token_id == batch["input_ids"][1, 2].item()

    def test_max_length_padding_and_multiple(self):
        """padding='max_length' pads to max_length; pad_to_multiple_of rounds the shifted length."""
        fixed = PreTokenizedCollator(max_length=6, padding="max_length")
        assert (1, 5) == tuple(fixed([sample([1, 2], [1, 2])])["input_ids"].shape)
        rounded = PreTokenizedCollator(pad_to_multiple_of=4)
        assert (1, 8) == tuple(
            rounded([sample(list(range(1, 7)), list(range(1, 7)))])["input_ids"].shape
        )

    def test_mm_token_type_ids_padded_with_zero(self):
        """mm_token_type_ids is padded with 0, and filled with 0 for samples without it."""
        collator = PreTokenizedCollator(shift_labels=False)
        first = sample([1, 2, 3], [1, 2, 3], mm_token_type_ids=torch.tensor([0, 1, 1]))
        batch = collator([first, sample([4], [4])])
        assert [[0, 1, 1], [0, 0, 0]] == batch["mm_token_type_ids"].tolist()

    def test_lists_accepted(self):
        """Plain lists of ints work like tensors."""
        batch = PreTokenizedCollator(shift_labels=False)(
            [{"input_ids": [3, 4], "attention_mask": [1, 1], "labels": [IGNORE, 4]}]
        )
        assert [[3, 4]] == batch["input_ids"].tolist()

    def test_media_concatenated_and_counted(self):
        """Pixels and grids concatenate along dim 0; counts come from each sample's grid."""
        first = sample(
            [1, 2], [1, 2], pixel_values=torch.ones(4, 6), image_grid_thw=torch.tensor([[1, 2, 2]])
        )
        third = sample(
            [1, 2],
            [1, 2],
            pixel_values=torch.zeros(8, 6),
            image_grid_thw=torch.tensor([[1, 2, 2], [1, 2, 2]]),
        )
        batch = PreTokenizedCollator()([first, sample([1, 2], [1, 2]), third])
        assert torch.equal(torch.cat([torch.ones(4, 6), torch.zeros(8, 6)]), batch["pixel_values"])
        assert [[1, 2, 2]] * 3 == batch["image_grid_thw"].tolist()
        assert [1, 0, 2] == batch["n_images_per_sample"].tolist()
        assert "n_videos_per_sample" not in batch

    def test_variable_resolution_media_kept_as_list(self):
        """Pixel tensors whose trailing shapes differ become a flat list of per-image tensors."""
        first = sample([1, 2], [1, 2], pixel_values=torch.ones(2, 3, 4, 4))
        second = sample([1, 2], [1, 2], pixel_values=torch.zeros(1, 3, 8, 8))
        merged = PreTokenizedCollator()([first, second])["pixel_values"]
        assert [(3, 4, 4), (3, 4, 4), (3, 8, 8)] == [tuple(item.shape) for item in merged]

    def test_pixel_dtype(self):
        """pixel_dtype casts pixels; grids keep their integer dtype."""
        first = sample(
            [1, 2], [1, 2], pixel_values=torch.ones(2, 3), image_grid_thw=torch.tensor([[1, 1, 2]])
        )
        batch = PreTokenizedCollator(pixel_dtype="bfloat16")([first])
        assert (torch.bfloat16, torch.int64) == (
            batch["pixel_values"].dtype,
            batch["image_grid_thw"].dtype,
        )

    def test_samples_not_mutated(self):
        """The caller's tensors and dicts are unchanged after collation."""
        originals = [
            sample([1, 2, 3], [IGNORE, 2, 3], pixel_values=torch.ones(2, 3)),
            sample([4, 5], [4, 5], pixel_values=torch.ones(2, 3)),
        ]
        before = copy.deepcopy(originals)
        batch = PreTokenizedCollator(pixel_dtype=torch.float16)(originals)
        batch["input_ids"].fill_(0)
        batch["labels"].fill_(0)
        for expected, actual in zip(before, originals, strict=True):
            assert expected.keys() == actual.keys()
            assert all(torch.equal(expected[key], actual[key]) for key in expected)

    def test_empty_labels_raise_names_sample(self):
        """A sample with no label after the shift raises EmptyLabelsError naming it."""
        collator = PreTokenizedCollator()
        with pytest.raises(vc.EmptyLabelsError) as caught:
            collator([sample([1, 2], [1, 2]), sample([3, 4], [3, IGNORE])])
        assert 1 == caught.value.sample_index

    def test_empty_labels_drop_and_warn(self):
        """'drop' reports the sample and leaves it out; 'warn' keeps it and records a warning."""
        dropping = PreTokenizedCollator(empty_labels="drop")
        batch = dropping([sample([1, 2], [IGNORE, IGNORE]), sample([3, 4], [3, 4])])
        assert [[3]] == batch["input_ids"].tolist()
        assert [1] == dropping.last_report.kept
        assert [(0, "empty_labels")] == [(d.index, d.reason) for d in dropping.last_report.dropped]
        warning = PreTokenizedCollator(empty_labels="warn")
        assert (
            2
            == warning([sample([1, 2], [IGNORE, IGNORE]), sample([3, 4], [3, 4])])["labels"].shape[
                0
            ]
        )
        assert [0] == [w.index for w in warning.last_report.warnings]

    def test_all_dropped_is_batch_error(self):
        """Dropping every sample raises BatchError."""
        with pytest.raises(vc.BatchError):
            PreTokenizedCollator(empty_labels="drop")([sample([1, 2], [IGNORE, IGNORE])])

    @pytest.mark.parametrize(
        ("bad", "error"),
        [
            ({"input_ids": [1, 2], "labels": [1, 2]}, vc.SampleError),
            ({"input_ids": [1, 2], "attention_mask": [1], "labels": [1, 2]}, vc.SampleError),
            (
                {"input_ids": [[1, 2]], "attention_mask": [[1, 1]], "labels": [[1, 2]]},
                vc.SampleError,
            ),
            (
                {"input_ids": [1.5, 2.0], "attention_mask": [1, 1], "labels": [1, 2]},
                vc.SampleTypeError,
            ),
            ("not a mapping", vc.SampleTypeError),
            (
                {
                    "input_ids": [1, 2],
                    "attention_mask": [1, 1],
                    "labels": [1, 2],
                    "pixel_values": "x",
                },
                vc.SampleTypeError,
            ),
        ],
    )
    def test_bad_input_names_sample(self, bad, error):
        """Malformed samples raise a VLMCollateError subclass naming the sample."""
        with pytest.raises(error, match="sample 1"):
            PreTokenizedCollator()([sample([1, 2], [1, 2]), bad])

    def test_bad_batch(self):
        """An empty batch or a non-list raises BatchError."""
        with pytest.raises(vc.BatchError):
            PreTokenizedCollator()([])
        with pytest.raises(vc.BatchError):
            PreTokenizedCollator()(sample([1], [1]))

    def test_bad_options(self):
        """Invalid options raise ConfigurationError."""
        with pytest.raises(vc.ConfigurationError):
            PreTokenizedCollator(padding="max_length")
        with pytest.raises(vc.ConfigurationError):
            PreTokenizedCollator(overlong="cut")
        with pytest.raises(vc.ConfigurationError):
            PreTokenizedCollator(pad_token_id="0")

    def test_overlong_policies(self):
        """raise names the sample, drop reports it, truncate keeps the first max_length tokens."""
        long_sample, short = sample([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]), sample([6, 7], [6, 7])
        with pytest.raises(vc.OverlongError, match="sample 0"):
            PreTokenizedCollator(max_length=3, overlong="raise")([long_sample, short])
        dropping = PreTokenizedCollator(max_length=3, overlong="drop")
        assert [[6]] == dropping([long_sample, short])["input_ids"].tolist()
        assert [0] == [d.index for d in dropping.last_report.dropped]
        truncating = PreTokenizedCollator(max_length=3, overlong="truncate", shift_labels=False)
        assert [[1, 2, 3], [6, 7, 0]] == truncating([long_sample, short])["input_ids"].tolist()
        assert [0] == truncating.last_report.truncated

    def test_truncation_never_cuts_media(self, processor):
        """truncate drops a sample whose cut would remove image tokens (ids from the processor)."""
        image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        with_image = sample([1, 2, 3, image_id, 5], [1, 2, 3, IGNORE, 5])
        collator = PreTokenizedCollator(processor=processor, max_length=3, overlong="truncate")
        batch = collator([with_image, sample([6, 7], [6, 7])])
        assert [0] == [d.index for d in collator.last_report.dropped]
        assert 1 == batch["input_ids"].shape[0]

    def test_truncation_respects_mm_token_type_ids(self):
        """Without a processor, mm_token_type_ids marks the media tokens truncation must keep."""
        with_image = sample(
            [1, 2, 3, 4], [1, 2, 3, 4], mm_token_type_ids=torch.tensor([0, 0, 0, 1])
        )
        collator = PreTokenizedCollator(max_length=3, overlong="truncate", empty_labels="drop")
        collator([with_image, sample([6, 7], [6, 7])])
        assert [0] == [d.index for d in collator.last_report.dropped]

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(batch=examples(min_size=1, max_size=3, max_turns=2))
    def test_matches_chat_collator(self, processor, batch):
        """Per-sample pre-tokenization then this collator equals Qwen25VLCollator on the batch."""
        chat = vc.Qwen25VLCollator(processor=processor)
        expected = chat(batch)
        single = vc.Qwen25VLCollator(processor=processor, shift_labels=False)
        pretokenized = [pretokenize_sample(single, example) for example in batch]
        actual = PreTokenizedCollator(processor=processor)(pretokenized)
        assert sorted(expected) == sorted(actual)
        for key in (
            "input_ids",
            "attention_mask",
            "labels",
            "pixel_values",
            "image_grid_thw",
            "n_images_per_sample",
        ):
            if key in expected:
                assert torch.equal(expected[key], actual[key]), key


class TestPretokenizeSample:
    def test_one_sample_unpadded_unshifted(self, processor):
        """The sample's tokens come back 1-D, unshifted, with its media and without padding."""
        image = Image.new("RGB", (56, 56), "blue")
        collator = vc.Qwen25VLCollator(processor=processor, pad_to_multiple_of=64)
        result = pretokenize_sample(collator, exchange("What colour?", "Blue.", image))
        text = processor.apply_chat_template(
            exchange("What colour?", "Blue.", image)["conversation"], tokenize=False
        )
        reference = processor(text=[text], images=[image], return_tensors="pt")
        assert reference["input_ids"][0].tolist() == result["input_ids"].tolist()
        assert torch.equal(reference["pixel_values"], result["pixel_values"])
        answer = processor.tokenizer.encode("Blue.<|im_end|>")
        trained = [value for value in result["labels"].tolist() if value != IGNORE]
        assert answer == trained
        assert "n_images_per_sample" not in result


class TestMergeMedia:
    def test_same_shapes_concatenate(self):
        """Equal trailing shapes give one concatenated tensor."""
        merged = merge_media([torch.ones(1, 2), torch.zeros(2, 2)])
        assert [[1, 1], [0, 0], [0, 0]] == merged.tolist()

    def test_lists_flatten(self):
        """A list among the values gives a flat list, one tensor per image."""
        merged = merge_media([[torch.ones(2, 2)], torch.zeros(1, 3, 3)])
        assert [(2, 2), (3, 3)] == [tuple(item.shape) for item in merged]
