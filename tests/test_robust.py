"""RobustCollator: seeded whole-batch re-sampling around a collator."""

from __future__ import annotations

import logging
import pickle
import random

import pytest
import torch
from PIL import Image

import vlm_collate as vc
from vlm_collate.errors import (
    BatchError,
    ConfigurationError,
    EmptyLabelsError,
    MediaError,
    VLMCollateError,
)
from vlm_collate.robust import (
    RetriesExhaustedError,
    RobustCollator,
    make_robust_collate,
    worker_rng_seed,
)
from vlm_collate.testing import decoded_label_runs

SEED = 1234


def good(index: int, image: bool = False) -> dict:
    """A sample whose only trained text is ``"Answer <index>."``."""
    question: object = f"Question {index}?"
    if image:
        picture = Image.new("RGB", (56, 28), (index * 20 % 256, 90, 160))
        question = [{"type": "image", "image": picture}, {"type": "text", "text": question}]
    return {
        "conversation": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": f"Answer {index}."},
        ]
    }


def no_assistant_turn() -> dict:
    return {"conversation": [{"role": "user", "content": "Nobody answers this."}]}


def missing_image() -> dict:
    content = [
        {"type": "image", "image": "/nonexistent/robust-test/missing.png"},
        {"type": "text", "text": "Describe it."},
    ]
    return {
        "conversation": [
            {"role": "user", "content": content},
            {"role": "assistant", "content": "Never seen."},
        ]
    }


BAD = {0, 1}


def dataset(size: int = 10) -> list[dict]:
    """Items 0 and 1 are bad; item k >= 2 is good with answer ``"Answer k."``."""
    return [no_assistant_turn(), missing_image()] + [
        good(index, image=index % 3 == 0) for index in range(2, size)
    ]


def expected_draws(rng_seed: int | str, size: int, batch_size: int) -> list[list[int]]:
    """The documented draws: whole batches of randrange(size) until one has no bad item."""
    rng = random.Random(rng_seed)
    draws = []
    while not draws or BAD & set(draws[-1]):
        draws.append([rng.randrange(size) for _ in range(batch_size)])
    return draws


def answers(indices: list[int]) -> list[list[str]]:
    return [[f"Answer {index}.<|im_end|>"] for index in indices]


def always_type_error(examples):
    raise TypeError("bug in user code")


class FlakyReader:
    """A third-party collate function that lets OSError escape for odd items."""

    def __call__(self, examples):
        if any(item % 2 for item in examples):
            raise OSError("disk hiccup")
        return list(examples)


@pytest.fixture(scope="module")
def collator(qwen_processor):
    return vc.Qwen25VLCollator(processor=qwen_processor)


class TestRobustCollator:
    def test_success_returns_the_collators_batch(self, collator, qwen_processor):
        """A batch the collator accepts is returned as the collator builds it."""
        data = dataset()
        robust = RobustCollator(collator=collator, dataset=data, seed=SEED)
        actual = robust([data[2], data[3]])
        expected = collator([data[2], data[3]])
        assert {k: v.tolist() for k, v in expected.items()} == {
            k: v.tolist() for k, v in actual.items()
        }
        assert (1, 0, 0, None) == (
            robust.batches,
            robust.failures,
            robust.resamples,
            robust.last_indices,
        )

    def test_failing_batch_is_replaced_by_seeded_draw(self, collator, qwen_processor):
        """A rejected batch becomes the dataset items drawn by random.Random(seed)."""
        data = dataset()
        robust = RobustCollator(collator=collator, dataset=data, seed=SEED)
        batch = robust([data[0], data[4]])
        draws = expected_draws(SEED, len(data), 2)
        assert answers(draws[-1]) == decoded_label_runs(batch["labels"], qwen_processor.tokenizer)
        assert draws[-1] == robust.last_indices
        assert (len(draws), len(draws)) == (robust.failures, robust.resamples)

    def test_rows_come_from_good_samples(self, collator, qwen_processor):
        """Every row of a re-sampled batch is a good sample's answer."""
        data = dataset(20)
        robust = RobustCollator(collator=collator, dataset=data, seed=7)
        runs = decoded_label_runs(robust([data[1]] * 3)["labels"], qwen_processor.tokenizer)
        good_answers = {f"Answer {index}.<|im_end|>" for index in range(2, 20)}
        assert 3 == len(runs)
        assert all(len(row) == 1 and row[0] in good_answers for row in runs)

    def test_same_seed_same_batches(self, collator):
        """Two wrappers with one seed re-sample the same batches, call after call."""
        data = dataset(20)
        first = RobustCollator(collator=collator, dataset=data, seed=5)
        second = RobustCollator(collator=collator, dataset=data, seed=5)
        for _ in range(3):
            expected, actual = first([data[0]] * 2), second([data[0]] * 2)
            assert expected["input_ids"].tolist() == actual["input_ids"].tolist()
            assert first.last_indices == second.last_indices

    def test_other_seed_other_batches(self, collator):
        """A different seed draws different indices."""
        data = dataset(20)
        ours = RobustCollator(collator=collator, dataset=data, seed=5)
        theirs = RobustCollator(collator=collator, dataset=data, seed=6)
        ours([data[0]] * 2)
        theirs([data[0]] * 2)
        assert expected_draws(5, 20, 2)[-1] == ours.last_indices
        assert expected_draws(6, 20, 2)[-1] == theirs.last_indices
        assert ours.last_indices != theirs.last_indices

    def test_global_random_state_untouched(self, collator):
        """Re-sampling neither reads nor advances the global random module."""
        data = dataset()
        random.seed(99)
        before = random.getstate()
        RobustCollator(collator=collator, dataset=data, seed=SEED)([data[0], data[1]])
        assert before == random.getstate()

    def test_exhaustion_raises_and_chains_last_error(self, collator):
        """After max_retries re-samples the last error is chained, with the attempt count."""
        only_bad = [no_assistant_turn(), no_assistant_turn()]
        robust = RobustCollator(collator=collator, dataset=only_bad, max_retries=3, seed=SEED)
        with pytest.raises(RetriesExhaustedError) as caught:
            robust([only_bad[0]])
        assert isinstance(caught.value, BatchError)
        assert isinstance(caught.value, VLMCollateError)
        assert isinstance(caught.value.__cause__, EmptyLabelsError)
        assert "all 4 attempts" in str(caught.value)
        assert "3 re-sampled batches" in str(caught.value)
        assert (4, 3, 1) == (robust.failures, robust.resamples, robust.exhausted)

    def test_zero_retries_makes_one_attempt(self, collator):
        """max_retries=0 raises on the first failure, chaining it."""
        data = dataset()
        robust = RobustCollator(collator=collator, dataset=data, max_retries=0)
        with pytest.raises(RetriesExhaustedError) as caught:
            robust([data[1]])
        assert isinstance(caught.value.__cause__, MediaError)
        assert (1, 0) == (robust.failures, robust.resamples)

    def test_empty_batch_is_not_resampled(self):
        """A failure on an empty batch is not retried: there is nothing to re-sample."""
        robust = RobustCollator(collator=FlakyReader(), dataset=[1], retry_on=(OSError,))
        assert [] == robust([])  # FlakyReader accepts an empty list
        failing = RobustCollator(collator=_reject_everything, dataset=[1, 2])
        with pytest.raises(RetriesExhaustedError):
            failing([])
        assert (1, 0) == (failing.failures, failing.resamples)

    def test_programming_errors_propagate_unchanged(self):
        """A TypeError from a bug is raised as is, not retried, not counted."""
        robust = RobustCollator(collator=always_type_error, dataset=[1, 2, 3])
        with pytest.raises(TypeError, match="^bug in user code$") as caught:
            robust([1])
        assert not isinstance(caught.value, VLMCollateError)
        assert (0, 0) == (robust.failures, robust.resamples)

    def test_oserror_propagates_by_default(self):
        """An OSError from a third-party collate function is not retried unless asked."""
        robust = RobustCollator(collator=FlakyReader(), dataset=[0, 1, 2, 3])
        with pytest.raises(OSError, match="disk hiccup"):
            robust([1])

    def test_retry_on_widens_what_is_retried(self):
        """With retry_on including OSError, the odd items are re-sampled away."""
        data = list(range(10))
        robust = RobustCollator(
            collator=FlakyReader(), dataset=data, seed=3, retry_on=(VLMCollateError, OSError)
        )
        rng = random.Random(3)
        draws = [rng.randrange(10) for _ in range(2)]
        while any(item % 2 for item in draws):
            draws = [rng.randrange(10) for _ in range(2)]
        assert draws == robust([1, 3])

    def test_empty_dataset_cannot_be_resampled(self):
        """Re-sampling from an empty dataset raises a BatchError."""
        robust = RobustCollator(collator=_reject_everything, dataset=[])
        with pytest.raises(BatchError, match="dataset is empty"):
            robust([1])

    def test_failures_are_logged_with_error_and_indices(self, collator, caplog):
        """Each failure logs its error and the caller's batch or the drawn dataset indices."""
        data = dataset()
        robust = RobustCollator(collator=collator, dataset=data, seed=SEED)
        with caplog.at_level(logging.WARNING, logger="vlm_collate.robust"):
            robust([data[4], data[1]])
        draws = expected_draws(SEED, len(data), 2)
        records = [r for r in caplog.records if r.name == "vlm_collate.robust"]
        assert [logging.WARNING] * len(draws) == [r.levelno for r in records]
        first = records[0].getMessage()
        assert "the caller's batch" in first
        assert "MediaError" in first and "missing.png" in first
        resampled = [record.getMessage() for record in records[1:]]
        assert len(draws) - 1 == len(resampled)
        for indices, message in zip(draws[:-1], resampled, strict=True):
            assert f"dataset indices {indices}" in message


def _reject_everything(examples):
    raise BatchError("rejected")


class TestValidation:
    def test_negative_max_retries(self):
        """max_retries must be a non-negative int."""
        with pytest.raises(ConfigurationError, match="'max_retries' must be a non-negative int"):
            RobustCollator(collator=_reject_everything, dataset=[1], max_retries=-1)

    def test_collator_must_be_callable(self):
        """A non-callable collator is refused."""
        with pytest.raises(ConfigurationError, match="'collator' must be callable"):
            RobustCollator(collator="qwen", dataset=[1])

    def test_dataset_needs_len_and_getitem(self):
        """A dataset without len() is refused, naming what it lacks."""
        with pytest.raises(ConfigurationError, match="lacks __len__"):
            RobustCollator(collator=_reject_everything, dataset=iter([1]))

    def test_bad_options_are_configuration_errors(self):
        """Wrong types for seed, max_retries and retry_on are ConfigurationErrors, not TypeErrors."""
        for options in (
            {"seed": "0"},
            {"seed": True},
            {"max_retries": 2.0},
            {"max_retries": True},
            {"retry_on": "ValueError"},
            {"retry_on": (ValueError, 3)},
            {"retry_on": ()},
            {"retry_on": 5},
        ):
            with pytest.raises(ConfigurationError, match=f"'{next(iter(options))}' must be"):
                RobustCollator(collator=_reject_everything, dataset=[1], **options)

    def test_keyword_only(self):
        """Arguments are keyword-only."""
        with pytest.raises(TypeError):
            RobustCollator(_reject_everything, [1])  # type: ignore[misc]


class TestMakeRobustCollate:
    def test_seed_signature(self):
        """The seed's factory returns a RobustCollator with its arguments and seed 0."""
        data = [1, 2]
        robust = make_robust_collate(data, _reject_everything, max_retries=4)
        assert (RobustCollator, _reject_everything, data, 4, 0) == (
            type(robust),
            robust.collator,
            robust.dataset,
            robust.max_retries,
            robust.seed,
        )


class TestWorkerRngSeed:
    def test_main_process_uses_the_seed(self):
        """Outside workers the RNG seed is the seed itself."""
        assert 42 == worker_rng_seed(42, None)

    def test_workers_get_distinct_documented_seeds(self):
        """Worker k's RNG seed is the string '<seed>:worker<k>'."""
        assert ["42:worker0", "42:worker1"] == [worker_rng_seed(42, k) for k in (0, 1)]


class TestPickling:
    def test_round_trip_continues_the_same_stream(self, collator):
        """A pickled copy re-samples exactly what the original would."""
        data = dataset(20)
        robust = RobustCollator(collator=collator, dataset=data, seed=SEED)
        robust([data[0]])
        copy = pickle.loads(pickle.dumps(robust))
        robust([data[0]] * 2)
        copy([data[0]] * 2)
        assert robust.last_indices == copy.last_indices

    def test_spawn_workers_resample_with_their_own_streams(self, collator, qwen_processor):
        """Two spawn workers replace bad batches from the streams '<seed>:worker<k>'."""
        data = dataset()
        robust = RobustCollator(collator=collator, dataset=data, seed=SEED)
        loader = torch.utils.data.DataLoader(
            data,
            batch_sampler=[[0, 1], [1, 0], [2, 3]],
            collate_fn=robust,
            num_workers=2,
            multiprocessing_context="spawn",
        )
        actual = [decoded_label_runs(b["labels"], qwen_processor.tokenizer) for b in loader]
        worker0 = expected_draws(f"{SEED}:worker0", len(data), 2)[-1]
        worker1 = expected_draws(f"{SEED}:worker1", len(data), 2)[-1]
        assert worker0 != worker1
        assert [answers(worker0), answers(worker1), answers([2, 3])] == actual
