"""loss_weights through the pre-tokenized and packed paths.

pretokenize_sample, PreTokenizedCollator, pretokenize / sample_from_row, pack
and NeatPackedCollator all carry the per-token weights a collator built with
``LabelPolicy(loss_weights=True)`` makes.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import vlm_collate as vc
from vlm_collate.labels import LabelPolicy
from vlm_collate.pretokenized import (
    NeatPackedCollator,
    PreTokenizedCollator,
    pack,
    pretokenize_sample,
)
from vlm_collate.testing import decoded_label_runs
from vlm_collate.testing.strategies import examples

IGNORE = -100
WEIGHTED = LabelPolicy(loss_weights=True)


def conversation(*turns, image=None, list_content=False):
    """Exchanges ``(question, answer, weight)``; a weight of None writes no "weight" key.

    ``image`` goes in front of the first question.
    """
    messages = []
    for position, (question, answer, weight) in enumerate(turns):
        user = [{"type": "text", "text": question}]
        if image is not None and position == 0:
            user.insert(0, {"type": "image", "image": image})
        messages.append({"role": "user", "content": user})
        reply = {
            "role": "assistant",
            "content": [{"type": "text", "text": answer}] if list_content else answer,
        }
        if weight is not None:
            reply["weight"] = weight
        messages.append(reply)
    return {"conversation": messages}


def written_weights(example):
    """The weight each assistant message asks for, in order (1.0 without a "weight" key)."""
    return [
        float(message.get("weight", 1.0))
        for message in example["conversation"]
        if message["role"] == "assistant"
    ]


def weights_by_run(labels, weights):
    """Expected weights of one row: the k-th labelled run gets ``weights[k]``, the rest 0.0."""
    expected, run, previous = [], -1, IGNORE
    for label in labels.tolist():
        if label != IGNORE and previous == IGNORE:
            run += 1
        expected.append(weights[run] if label != IGNORE else 0.0)
        previous = label
    return expected


def tokens(ids, labels, weights=None, **extra):
    """A hand-built pre-tokenized sample with a full attention mask."""
    sample = {
        "input_ids": torch.tensor(ids),
        "attention_mask": torch.ones(len(ids), dtype=torch.long),
        "labels": torch.tensor(labels),
        **extra,
    }
    if weights is not None:
        sample["loss_weights"] = torch.tensor(weights, dtype=torch.float32)
    return sample


def png(size, colour):
    """A real PNG image, decoded."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return Image.open(io.BytesIO(buffer.getvalue()))


@pytest.fixture(scope="module")
def weighted_collator(qwen_processor):
    return vc.Qwen25VLCollator(processor=qwen_processor, label_policy=WEIGHTED)


@pytest.fixture(scope="module")
def chat_examples():
    """Three samples of different lengths: images, several turns, weights and defaults."""
    return [
        conversation(("What colour?", "Red.", 0.5), image=Image.new("RGB", (56, 56), "red")),
        conversation(("Hi", "Hello there.", None), ("Count to three", "One, two, three.", 2.0)),
        conversation(
            ("Shape?", "A square.", 0.25),
            ("Sure?", "Yes.", None),
            image=Image.new("RGB", (84, 56), "blue"),
        ),
    ]


def assert_same_batch(expected, actual):
    """Same keys, and every tensor equal (dtype included)."""
    assert sorted(expected) == sorted(actual)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == actual[key].dtype, key
            assert torch.equal(value, actual[key]), key


class TestPretokenizeSample:
    def test_keeps_unshifted_float_weights(self, weighted_collator, qwen_processor):
        """The sample holds 1-D float32 weights: each answer's written weight on its tokens."""
        example = conversation(("Hi", "Hello.", 0.5), ("Again", "Bye now.", None))
        sample = pretokenize_sample(weighted_collator, example)
        weights = sample["loss_weights"]
        assert (torch.float32, 1) == (weights.dtype, weights.dim())
        assert sample["input_ids"].shape == weights.shape
        assert [["Hello.<|im_end|>", "Bye now.<|im_end|>"]] == decoded_label_runs(
            sample["labels"][None], qwen_processor.tokenizer
        )
        assert weights_by_run(sample["labels"], [0.5, 1.0]) == weights.tolist()

    def test_no_weights_without_the_policy(self, qwen_processor):
        """A collator without loss_weights=True gives a sample without loss_weights."""
        plain = vc.Qwen25VLCollator(processor=qwen_processor)
        sample = pretokenize_sample(plain, conversation(("Hi", "Hello.", 0.5)))
        assert "loss_weights" not in sample


def assert_paths_agree(processor, examples, shift_labels, padding_side):
    """Pre-tokenized collation equals the weighted chat collator, weights in place."""
    options = {"shift_labels": shift_labels, "padding_side": padding_side}
    chat = vc.Qwen25VLCollator(processor=processor, label_policy=WEIGHTED, **options)
    expected = chat(examples)
    samples = [pretokenize_sample(chat, example) for example in examples]
    actual = PreTokenizedCollator(processor=processor, **options)(samples)
    assert_same_batch(expected, actual)
    for row, example in enumerate(examples):
        wanted = weights_by_run(actual["labels"][row], written_weights(example))
        assert wanted == actual["loss_weights"][row].tolist()


class TestPreTokenizedCollatorMatchesChat:
    @pytest.mark.parametrize("shift_labels", [True, False])
    @pytest.mark.parametrize("padding_side", ["left", "right"])
    def test_equals_on_the_fly_batch(
        self, qwen_processor, chat_examples, shift_labels, padding_side
    ):
        """Per-sample pre-tokenization then collation equals the chat collator, key for key."""
        assert_paths_agree(qwen_processor, chat_examples, shift_labels, padding_side)

    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        batch=examples(min_size=1, max_size=3, max_turns=2),
        weights=st.lists(st.sampled_from([None, 0.25, 0.5, 2.0]), min_size=6, max_size=6),
        shift_labels=st.booleans(),
        padding_side=st.sampled_from(["left", "right"]),
    )
    def test_property_matches_chat_collator(
        self, qwen_processor, batch, weights, shift_labels, padding_side
    ):
        """For random weighted batches, both shifts and sides, the two paths agree key for key."""
        assistants = [
            message
            for example in batch
            for message in example["conversation"]
            if message["role"] == "assistant"
        ]
        for message, weight in zip(assistants, weights, strict=False):
            if weight is not None:
                message["weight"] = weight
        assert_paths_agree(qwen_processor, batch, shift_labels, padding_side)


class TestPreTokenizedCollatorWeights:
    def test_shifted_right_padded(self):
        """Weights shift like labels, pad with 0.0 and are zeroed where labels are ignored."""
        batch = PreTokenizedCollator(pad_token_id=0)(
            [
                tokens([1, 2, 3, 4], [IGNORE, IGNORE, 3, 4], [9.0, 9.0, 0.5, 2.0]),
                tokens([5, 6], [IGNORE, 6], [0.0, 3.0]),
            ]
        )
        assert [[IGNORE, 3, 4], [6, IGNORE, IGNORE]] == batch["labels"].tolist()
        assert [[0.0, 0.5, 2.0], [3.0, 0.0, 0.0]] == batch["loss_weights"].tolist()
        assert torch.float32 == batch["loss_weights"].dtype

    def test_unshifted_left_padded(self):
        """Without the shift, weights stay aligned with labels and pad on the left."""
        collator = PreTokenizedCollator(shift_labels=False, padding_side="left")
        batch = collator(
            [tokens([1, 2, 3], [IGNORE, 2, 3], [1.0, 0.5, 0.25]), tokens([4], [4], [2.0])]
        )
        assert [[0.0, 0.5, 0.25], [0.0, 0.0, 2.0]] == batch["loss_weights"].tolist()

    def test_rows_without_weights_weigh_one_where_trained(self):
        """A row without weights next to weighted rows gets 1.0 on its trained labels, else 0.0."""
        batch = PreTokenizedCollator()(
            [tokens([1, 2, 3], [IGNORE, 2, 3], [0.0, 0.5, 0.5]), tokens([4, 5, 6], [4, IGNORE, 6])]
        )
        assert [[0.5, 0.5], [0.0, 1.0]] == batch["loss_weights"].tolist()

    def test_absent_when_no_row_has_weights(self):
        """Without weights in any sample the batch has no loss_weights."""
        batch = PreTokenizedCollator()([tokens([1, 2], [1, 2]), tokens([3, 4], [3, 4])])
        assert "loss_weights" not in batch

    def test_truncation_cuts_weights_like_labels(self):
        """overlong='truncate' keeps the first max_length weights, as it does labels."""
        collator = PreTokenizedCollator(max_length=3, overlong="truncate", shift_labels=False)
        batch = collator([tokens([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [0.5, 1.5, 2.5, 3.5, 4.5])])
        assert [[1, 2, 3]] == batch["labels"].tolist()
        assert [[0.5, 1.5, 2.5]] == batch["loss_weights"].tolist()
        assert [0] == collator.last_report.truncated

    def test_integer_weights_become_float(self):
        """Integer weights (a plain list) are accepted and come out as float32."""
        sample = tokens([1, 2, 3], [1, 2, 3])
        sample["loss_weights"] = [1, 2, 3]
        batch = PreTokenizedCollator(shift_labels=False)([sample])
        assert (torch.float32, [[1.0, 2.0, 3.0]]) == (
            batch["loss_weights"].dtype,
            batch["loss_weights"].tolist(),
        )

    def test_samples_not_mutated(self):
        """The caller's weights are unchanged, even where the batch zeroes them."""
        originals = [tokens([1, 2, 3], [IGNORE, 2, 3], [7.0, 0.5, 0.5]), tokens([4, 5], [4, 5])]
        before = copy.deepcopy(originals)
        PreTokenizedCollator()(originals)["loss_weights"].fill_(-1.0)
        assert torch.equal(before[0]["loss_weights"], originals[0]["loss_weights"])
        assert "loss_weights" not in originals[1]

    @pytest.mark.parametrize(
        "weights",
        [
            [1.0, 1.0],
            [1.0, 1.0, 1.0, 1.0],
            [1.0, float("nan"), 1.0],
            [1.0, float("inf"), 1.0],
            [1.0, -0.5, 1.0],
            [[1.0, 1.0, 1.0]],
            "heavy",
        ],
    )
    def test_invalid_weights_name_the_sample(self, weights):
        """Weights of the wrong length or shape, not finite, negative or not numbers name the sample."""
        bad = tokens([1, 2, 3], [1, 2, 3])
        bad["loss_weights"] = weights
        with pytest.raises(vc.SampleError, match="sample 1: 'loss_weights'"):
            PreTokenizedCollator()([tokens([1, 2], [1, 2]), bad])


class TestPretokenizeRoundTrip:
    @pytest.fixture(scope="class")
    @classmethod
    def datasets(cls):
        return pytest.importorskip(
            "datasets", reason="needs the 'datasets' package: pip install datasets"
        )

    @pytest.fixture(scope="class")
    @classmethod
    def rows(cls):
        return [
            conversation(
                ("Hi there", "Hello!", 0.5), ("More?", "No more.", None), list_content=True
            ),
            conversation(("Colour?", "Red.", 2.0), image=png((56, 56), "red"), list_content=True),
            conversation(("Plain", "Unweighted.", None), list_content=True),
        ]

    @pytest.fixture(scope="class")
    @classmethod
    def dataset(cls, datasets, rows):
        item = {
            "type": datasets.Value("string"),
            "text": datasets.Value("string"),
            "image": datasets.Image(),
        }
        message = {
            "role": datasets.Value("string"),
            "weight": datasets.Value("float64"),
            "content": datasets.List(item),
        }
        features = datasets.Features({"conversation": datasets.List(message)})
        return datasets.Dataset.from_list(rows, features=features)

    def test_restored_weights_are_float_and_in_place(self, dataset, rows, weighted_collator):
        """Stored then restored samples keep float32 weights equal to the written ones."""
        from vlm_collate.pretokenized import pretokenize

        stored = pretokenize(dataset, weighted_collator, batch_size=2)
        assert 3 == len(stored)
        for position, example in enumerate(rows):
            sample = stored[position]
            weights = sample["loss_weights"]
            assert torch.float32 == weights.dtype
            wanted = weights_by_run(sample["labels"], written_weights(example))
            assert wanted == weights.tolist()

    def test_restored_samples_collate_like_the_chat_collator(
        self, dataset, rows, weighted_collator, qwen_processor
    ):
        """PreTokenizedCollator on restored rows equals the chat collator on the source rows."""
        from vlm_collate.pretokenized import pretokenize

        stored = pretokenize(dataset, weighted_collator, batch_size=3)
        expected = weighted_collator(rows)
        actual = PreTokenizedCollator(processor=qwen_processor)(stored[0:3])
        assert_same_batch(expected, actual)

    def test_no_weights_stored_empty(self, dataset, qwen_processor):
        """Without the policy the weights column is stored empty and restored as absent."""
        from vlm_collate.pretokenized import pretokenize

        plain = vc.Qwen25VLCollator(processor=qwen_processor)
        stored = pretokenize(dataset, plain, batch_size=3)
        assert [[], [], []] == [list(row) for row in stored.dataset["loss_weights"]]
        assert [False] * 3 == ["loss_weights" in stored[position] for position in range(3)]


class TestPackWeights:
    def test_documents_shifted_and_concatenated(self):
        """Each document contributes loss_weights[1:], zeroed where its shifted labels are ignored."""
        result = pack(
            [
                tokens([1, 2, 3, 4], [IGNORE, 2, 3, IGNORE], [5.0, 0.5, 0.25, 7.0]),
                tokens([5, 6, 7], [IGNORE, IGNORE, 7], [1.0, 1.0, 3.0]),
            ],
            pack_size=10,
        )
        (packed,) = result.packs
        assert [2, 3, IGNORE, IGNORE, 7] == packed["labels"].tolist()
        assert [0.5, 0.25, 0.0, 0.0, 3.0] == packed["loss_weights"].tolist()

    def test_documents_without_weights_weigh_one_where_trained(self):
        """In a pack with weighted documents, the others get 1.0 on their trained labels."""
        result = pack(
            [
                tokens([1, 2, 3], [IGNORE, 2, 3], [0.0, 0.5, 0.5]),
                tokens([4, 5, 6], [4, IGNORE, 6]),
                tokens([7, 8, 9], [7, 8, IGNORE]),
            ],
            pack_size=4,
        )
        assert [[0, 1], [2]] == result.documents
        assert [[0.5, 0.5, 0.0, 1.0], [1.0, 0.0]] == [
            packed["loss_weights"].tolist() for packed in result.packs
        ]

    def test_absent_without_weights(self):
        """Packs of samples without weights hold no loss_weights."""
        result = pack([tokens([1, 2, 3], [1, 2, 3])], pack_size=4)
        assert "loss_weights" not in result.packs[0]

    def test_truncation_cuts_weights(self):
        """A truncated document keeps the weights of the positions it keeps."""
        result = pack(
            [tokens([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [0.1, 0.2, 0.3, 0.4, 0.5])],
            pack_size=2,
            overlong="truncate",
        )
        assert [0] == result.truncated
        assert torch.equal(
            torch.tensor([0.2, 0.3], dtype=torch.float32), result.packs[0]["loss_weights"]
        )

    @pytest.mark.parametrize("weights", [[1.0, 1.0], [1.0, -1.0, 1.0], [float("nan")] * 3])
    def test_invalid_weights_name_the_sample(self, weights):
        """pack() refuses bad weights with a SampleError naming the sample."""
        bad = tokens([1, 2, 3], [1, 2, 3])
        bad["loss_weights"] = weights
        with pytest.raises(vc.SampleError, match="sample 1: 'loss_weights'"):
            pack([tokens([1, 2], [1, 2]), bad], pack_size=8)

    def test_chat_samples_keep_each_documents_weights(self, weighted_collator, qwen_processor):
        """Packed chat samples: weights sit in place per document and are 0 where labels are ignored."""
        samples = [
            conversation(("Hi", "Hello.", 0.5), ("Again", "Bye.", 2.0)),
            conversation(("Colour?", "Red.", None), image=Image.new("RGB", (56, 56), "red")),
            conversation(("Why?", "Because.", 0.25)),
        ]
        pretokenized = [pretokenize_sample(weighted_collator, example) for example in samples]
        lengths = [sample["input_ids"].shape[0] - 1 for sample in pretokenized]
        result = pack(pretokenized, pack_size=lengths[0] + lengths[2] + 3)
        assert [[0, 2], [1]] == result.documents
        collator = NeatPackedCollator(
            padding_idx=qwen_processor.tokenizer.pad_token_id,
            attn_implementation="flash_attention_2",
        )
        batch = collator(result.packs)
        labels, weights = batch["labels"], batch["loss_weights"]
        assert torch.equal(labels == IGNORE, weights == 0)
        for row, documents in enumerate(result.documents):
            for number, index in enumerate(documents, start=1):
                span = batch["attention_mask"][row] == number
                wanted = weights_by_run(labels[row][span], written_weights(samples[index]))
                assert wanted == weights[row][span].tolist()
                assert torch.equal(pretokenized[index]["loss_weights"][1:], weights[row][span])


class TestNeatPackedCollatorWeights:
    def test_padding_and_ignored_labels_weigh_zero(self):
        """Weights pad with 0.0, and are 0 where labels are ignored, the pack's own padding too."""
        first = {
            "input_ids": [1, 2, 3, 4],
            "labels": [1, IGNORE, 3, 4],
            "attention_mask": [1, 1, 2, 0],
            "loss_weights": [0.5, 9.0, 2.0, 9.0],
        }
        second = {"input_ids": [5, 6], "labels": [5, 6], "attention_mask": [1, 1]}
        batch = NeatPackedCollator(max_length=5)([first, second])
        assert [[0.5, 0.0, 2.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0, 0.0]] == batch[
            "loss_weights"
        ].tolist()
        assert torch.float32 == batch["loss_weights"].dtype

    def test_absent_without_weights(self):
        """Packs without weights give a batch without loss_weights."""
        batch = NeatPackedCollator()([{"input_ids": [1], "labels": [1], "attention_mask": [1]}])
        assert "loss_weights" not in batch

    @pytest.mark.parametrize("weights", [[1.0], [1.0, float("inf")], [-0.1, 1.0], "x"])
    def test_invalid_weights_name_the_pack(self, weights):
        """Bad weights in a pack raise a SampleError naming the pack."""
        good = {"input_ids": [1, 2], "labels": [1, 2], "attention_mask": [1, 1]}
        bad = {**good, "loss_weights": weights}
        with pytest.raises(vc.SampleError, match="sample 1: 'loss_weights'"):
            NeatPackedCollator()([good, bad])
