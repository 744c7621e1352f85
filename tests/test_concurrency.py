"""One collator shared by threads and DataLoader workers gives correct batches and reports."""

from __future__ import annotations

import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import vlm_collate as vc

_THREADS = 8


def _exchange(number: int, *, answered: bool = True) -> dict:
    image = Image.new("RGB", (28 * (number % 3 + 1), 28), (40 * (number % 6), 0, 0))
    conversation = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": "Say" * number},
            ],
        }
    ]
    if answered:
        conversation.append({"role": "assistant", "content": f"Answer {number}. " * number})
    return {"conversation": conversation}


def _batch(number: int) -> list[dict]:
    """Batch ``number``: its size and which samples are dropped differ from its neighbours'."""
    size = number % 3 + 2
    return [_exchange(number + row, answered=row != number % size) for row in range(size)]


def _expected_report(number: int) -> tuple[int, list[int], list[int]]:
    size = number % 3 + 2
    dropped = [number % size]
    return size, [row for row in range(size) if row not in dropped], dropped


def _same(expected: dict, actual: dict) -> bool:
    return expected.keys() == actual.keys() and all(
        torch.equal(expected[key], actual[key])
        for key in expected
        if isinstance(expected[key], torch.Tensor)
    )


def _concurrently(call, count: int) -> list:
    """Run ``call(number)`` for every number, with all threads released at once."""
    barrier = threading.Barrier(_THREADS)

    def run(number: int):
        if number < _THREADS:
            barrier.wait()
        return call(number)

    with ThreadPoolExecutor(_THREADS) as pool:
        return list(pool.map(run, range(count)))


class TestThreads:
    def test_batches_and_reports_stay_with_their_call(self, qwen_processor):
        """Concurrent calls on one collator give the sequential batches and each its own report."""
        collator = vc.Qwen25VLCollator(processor=qwen_processor, empty_labels="drop")
        count = 24
        expected = [collator(_batch(number)) for number in range(count)]

        def call(number: int):
            batch = collator(_batch(number))
            report = collator.last_report
            return batch, (report.batch_size, report.kept, [d.index for d in report.dropped])

        results = _concurrently(call, count)
        assert [True] * count == [_same(expected[n], results[n][0]) for n in range(count)]
        assert [_expected_report(n) for n in range(count)] == [result[1] for result in results]
        assert {"empty_labels": 2 * count} == dict(collator.dropped_counts)

    def test_pretokenized_reports_per_thread(self):
        """PreTokenizedCollator keeps one report per thread as well."""
        collator = vc.PreTokenizedCollator(empty_labels="drop")

        def call(number: int):
            size = number % 4 + 2
            rows = [
                {
                    "input_ids": [1, 2, 3],
                    "attention_mask": [1, 1, 1],
                    "labels": [-100, -100, -100] if row == 0 else [1, 2, 3],
                }
                for row in range(size)
            ]
            collator(rows)
            report = collator.last_report
            return report.batch_size, [d.index for d in report.dropped]

        assert [(n % 4 + 2, [0]) for n in range(32)] == _concurrently(call, 32)

    def test_report_is_per_thread(self, qwen_processor):
        """A thread that has not called the collator sees no report, whatever others did."""
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        collator([_exchange(1), _exchange(2)])
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(lambda: collator.last_report).result() is None
        assert collator.last_report is not None

    def test_pickled_collator_starts_without_report(self, qwen_processor):
        """A pickled collator (what a spawned worker gets) starts with no report and works."""
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        expected = collator([_exchange(1), _exchange(2)])
        restored = pickle.loads(pickle.dumps(collator))
        assert restored.last_report is None
        assert _same(expected, restored([_exchange(1), _exchange(2)]))


class TestRobustThreads:
    def test_counters_and_last_indices_per_call(self):
        """A shared RobustCollator counts every call and gives each thread its own last_indices."""
        good = {"input_ids": [1, 2], "attention_mask": [1, 1], "labels": [1, 2]}
        bad = {**good, "attention_mask": [1, 5]}
        robust = vc.RobustCollator(collator=vc.PreTokenizedCollator(), dataset=[good] * 4, seed=1)

        def call(number: int):
            robust([good, bad] if number % 2 else [good, good])
            return robust.last_indices is None

        count = 32
        assert [n % 2 == 0 for n in range(count)] == _concurrently(call, count)
        assert (count, count // 2, count // 2) == (
            robust.batches,
            robust.failures,
            robust.resamples,
        )


class TestDataLoaderWorkers:
    def test_fork_workers_give_the_in_process_batches(self, qwen_processor):
        """Batches from forked workers equal the batches collated in the main process."""
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        samples = [_exchange(number) for number in range(1, 7)]
        expected = [collator(samples[start : start + 2]) for start in range(0, 6, 2)]
        loader = DataLoader(
            samples,
            batch_size=2,
            num_workers=2,
            multiprocessing_context="fork",
            collate_fn=collator,
        )
        assert [True] * 3 == [_same(e, a) for e, a in zip(expected, loader, strict=True)]

    @pytest.mark.parametrize("context", ["fork", "spawn"])
    def test_pretokenized_workers(self, context):
        """PreTokenizedCollator in fork and spawn workers gives the in-process batches."""
        rows = [
            {"input_ids": list(range(1, n + 2)), "attention_mask": [1] * (n + 1)}
            for n in range(1, 7)
        ]
        rows = [{**row, "labels": row["input_ids"]} for row in rows]
        collator = vc.PreTokenizedCollator()
        expected = [collator(rows[start : start + 3]) for start in (0, 3)]
        loader = DataLoader(
            rows, batch_size=3, num_workers=1, multiprocessing_context=context, collate_fn=collator
        )
        assert [True, True] == [_same(e, a) for e, a in zip(expected, loader, strict=True)]
