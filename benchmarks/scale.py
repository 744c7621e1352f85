"""Scaling out: pre-tokenizing with ``datasets`` and Ray Data, and reading Parquet shards back.

Run it from the repository root::

    python benchmarks/scale.py            # the full run
    python benchmarks/scale.py --quick    # a smoke run with tiny sizes
    python benchmarks/scale.py --no-ray   # without the Ray figures

It prints, from one run on this machine:

* rows/s of :func:`~vlm_collate.pretokenize` (``Dataset.map`` in one process,
  then in ``--num-proc`` processes) and of
  :func:`~vlm_collate.pretokenize_ray` (``--num-proc`` actors on a local Ray
  runtime), as ratios against the one-process ``datasets`` path. Each
  includes its engine's start-up (worker processes, Ray actors and the
  processor they build); for Ray, the rate after its first batch arrived is
  printed too, closer to what a large dataset sees;
* samples/s of a ``DataLoader`` reading the Parquet shards into padded batches
  (:class:`~vlm_collate.ParquetShards` with a ``PreTokenizedCollator``), of
  one reading the in-memory pre-tokenized rows, and of one collating on the
  fly with the chat collator, as ratios against on-the-fly collation.

Before timing the reads, the script checks that the shards give the on-the-fly batches; the exit
status is 1 if they do not.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import vlm_collate as vc
from vlm_collate.testing import build_processor
from vlm_collate.tools.bench import ConversationWriter, collate_samples
from vlm_collate.tools.pretokenize import arrow_ready


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=96, help="rows to pre-tokenize")
    parser.add_argument("--num-proc", type=int, default=2, help="processes / Ray actors")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size of the reads")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per reader")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Data figures")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.samples, arguments.batch_size, arguments.epochs = 8, 4, 1
    return arguments


def dataset_rows(count: int, seed: int, directory: Path) -> list[dict[str, Any]]:
    """Conversations about pictures, images saved as PNG files, contents as Arrow lists."""
    rows = collate_samples(ConversationWriter(random.Random(seed)), count)
    for number, sample in enumerate(rows):
        for message in sample["conversation"]:
            for item in message["content"] if isinstance(message["content"], list) else []:
                if item.get("type") == "image":
                    path = directory / f"image{number}.png"
                    item["image"].save(path)
                    item["image"] = str(path)
    return [arrow_ready(sample) for sample in rows]


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def datasets_rates(rows: list[dict[str, Any]], collator: Any, num_proc: int) -> tuple:
    import datasets

    datasets.disable_progress_bars()

    def run(processes: int | None) -> Any:
        return vc.pretokenize(datasets.Dataset.from_list(rows), collator, num_proc=processes)

    one, stored = timed(lambda: run(None))
    many, _ = timed(lambda: run(num_proc))
    name = f"datasets, {num_proc} process{'es' if num_proc > 1 else ''} (num_proc)"
    return {"datasets, 1 process": len(rows) / one, name: len(rows) / many}, stored


def ray_rates(rows: list[dict[str, Any]], collator: Any, num_proc: int) -> dict[str, float]:
    """Rows/s of the Ray path with its start-up, and after its first batch arrived."""
    try:
        import ray
    except ImportError:
        print("ray: skipped (pip install 'vlm-collate[ray]')")
        return {}
    ray.init(num_cpus=num_proc, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    numbered = [{**row, "row_id": index} for index, row in enumerate(rows)]
    try:
        start = time.perf_counter()
        result = vc.pretokenize_ray(
            ray.data.from_items(numbered), collator, num_actors=num_proc, index_column="row_id"
        )
        arrivals = [
            (time.perf_counter(), batch.num_rows)
            for batch in result.iter_batches(batch_format="pyarrow", batch_size=None)
        ]
    finally:
        ray.shutdown()
    (first, first_rows), (last, _) = arrivals[0], arrivals[-1]
    name = f"ray, {num_proc} actor{'s' if num_proc > 1 else ''}"
    rates = {name: len(rows) / (last - start)}
    if last > first:
        rates[f"{name}, after its first batch"] = (len(rows) - first_rows) / (last - first)
    return rates


def samples_per_second(dataset: Any, collate: Callable, arguments: argparse.Namespace) -> float:
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=arguments.batch_size, collate_fn=collate
    )
    for _ in loader:  # an untimed epoch: file cache and lazy state are warm for every reader
        pass
    seconds, _ = timed(lambda: [None for _ in range(arguments.epochs) for _ in loader])
    return len(dataset) * arguments.epochs / seconds


def same_batches(
    shards: Any, rows: list[dict[str, Any]], chat: Any, padded: Any, size: int
) -> bool:
    samples = list(shards)
    for start in range(0, len(rows), size):
        expected = chat(rows[start : start + size])
        actual = padded(samples[start : start + size])
        if any(not torch.equal(expected[key], actual[key]) for key in expected):
            return False
    return True


def ratios(rates: dict[str, float], baseline: str, unit: str) -> list[str]:
    lines = [f"{name:<34} {rate:10.1f} {unit}" for name, rate in rates.items()]
    lines += [
        f"{name} / {baseline} = {rate / rates[baseline]:.2f}x"
        for name, rate in rates.items()
        if name != baseline
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    import transformers

    print(
        f"{platform.platform()} | Python {platform.python_version()} | torch {torch.__version__} | "
        f"transformers {transformers.__version__} | vlm_collate {vc.__version__} | "
        f"CPUs {os.cpu_count()} | load {os.getloadavg()[0]:.2f}\n"
        f"{arguments.samples} rows, {arguments.num_proc} processes/actors, read batch size "
        f"{arguments.batch_size}, {arguments.epochs} timed epoch(s), seed {arguments.seed}"
    )
    processor = build_processor("qwen2_5_vl")
    chat = vc.Qwen25VLCollator(processor=processor, pixel_dtype=torch.float32)
    with tempfile.TemporaryDirectory() as scratch:
        rows = dataset_rows(arguments.samples, arguments.seed, Path(scratch))
        rates, stored = datasets_rates(rows, chat, arguments.num_proc)
        if not arguments.no_ray:
            rates.update(ray_rates(rows, chat, arguments.num_proc))
        print("\npre-tokenizing (rows/s, engine start-up included unless said)")
        print("\n".join(ratios(rates, "datasets, 1 process", "rows/s")))
        vc.write_shards(stored, Path(scratch) / "shards", collator=chat, rows_per_shard=32)
        padded = vc.PreTokenizedCollator(processor=processor)
        shards = vc.ParquetShards.open(Path(scratch) / "shards", collator=padded)
        identical = same_batches(shards, rows, chat, padded, arguments.batch_size)
        print(f"\nshard batches identical to on-the-fly batches: {'yes' if identical else 'NO'}")
        reads = {
            "on-the-fly (chat collator)": samples_per_second(rows, chat, arguments),
            "Parquet shards, padded": samples_per_second(shards, padded, arguments),
            "in-memory pre-tokenized, padded": samples_per_second(list(stored), padded, arguments),
        }
        print("\nreading into padded batches (samples/s, one process)")
        print("\n".join(ratios(reads, "on-the-fly (chat collator)", "samples/s")))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
