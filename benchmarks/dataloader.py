"""DataLoader throughput: worker counts, and pre-tokenized against on-the-fly collation.

Run it from the repository root::

    python benchmarks/dataloader.py            # the full run
    python benchmarks/dataloader.py --quick    # a smoke run with tiny sizes

For each of ``num_workers`` 0, 1 and 2 it times whole epochs of a
``torch.utils.data.DataLoader`` over the same samples in two ways:

* ``on-the-fly``: the loader's ``collate_fn`` is a
  :class:`~vlm_collate.Qwen25VLCollator`, so the chat template and the
  processor run inside the loader, batch by batch;
* ``pre-tokenized``: every sample went through
  :func:`~vlm_collate.pretokenize_sample` once, up front, and the loader's
  ``collate_fn`` is a :class:`~vlm_collate.PreTokenizedCollator` that only
  pads, shifts and concatenates.

Workers stay alive between epochs (``persistent_workers``) and one untimed
epoch comes first, so worker start-up is not counted; it is reported on its
own. The ratios printed at the end come from this one run. Before timing, the
script checks that both ways give identical batches; the exit status is 1 if
they do not.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
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

WORKER_COUNTS = (0, 1, 2)
MODES = ("on-the-fly", "pre-tokenized")


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=192, help="samples in the dataset")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per loader")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated samples")
    parser.add_argument(
        "--context",
        choices=("fork", "spawn", "forkserver"),
        default=None,
        help="multiprocessing start method of the workers (default: the platform's)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the main process (workers always use 1); 0 keeps torch's own",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="image budget of the processor (default: build_processor's, 50176 = 224*224)",
    )
    parser.add_argument(
        "--jpeg",
        action="store_true",
        help="give the images as JPEG files, so the on-the-fly collator also decodes them",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.samples, arguments.batch_size, arguments.epochs = 8, 4, 1
    return arguments


def header(arguments: argparse.Namespace) -> str:
    import transformers

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{now} | {platform.platform()} | Python {platform.python_version()} | "
        f"torch {torch.__version__} | transformers {transformers.__version__} | "
        f"vlm_collate {vc.__version__} | CPUs {os.cpu_count()} | "
        f"main-process torch threads {torch.get_num_threads()} | load {os.getloadavg()[0]:.2f}\n"
        f"{arguments.samples} samples, batch size {arguments.batch_size}, "
        f"{arguments.epochs} timed epoch(s) per loader, seed {arguments.seed}, "
        f"max_pixels {arguments.max_pixels or 'default'}, "
        f"images {'as JPEG files' if arguments.jpeg else 'in memory (PIL)'}"
    )


def images_to_files(data: list[dict[str, Any]], directory: Path) -> None:
    """Write every image of ``data`` as a JPEG file and put its path in its place."""
    count = 0
    for sample in data:
        for message in sample["conversation"]:
            if isinstance(message["content"], str):
                continue
            for item in message["content"]:
                if item.get("type") == "image":
                    path = directory / f"image{count}.jpg"
                    item["image"].save(path, quality=90)
                    item["image"] = str(path)
                    count += 1


def make_loader(
    dataset: Sequence[Any], collate_fn: Callable, workers: int, arguments: argparse.Namespace
) -> torch.utils.data.DataLoader:
    options: dict[str, Any] = {}
    if workers:
        options = {"persistent_workers": True, "multiprocessing_context": arguments.context}
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=arguments.batch_size,
        shuffle=False,
        collate_fn=collate_fn,
        num_workers=workers,
        **options,
    )


def time_epochs(loader: torch.utils.data.DataLoader, epochs: int) -> tuple[float, list[float]]:
    """Seconds of the untimed first epoch (with worker start-up) and of each timed epoch."""
    start = time.perf_counter()
    for _ in loader:
        pass
    first = time.perf_counter() - start
    timed = []
    for _ in range(epochs):
        start = time.perf_counter()
        for _ in loader:
            pass
        timed.append(time.perf_counter() - start)
    return first, timed


def batches_identical(collator: Any, pretokenized: Any, data: list, tokens: list) -> bool:
    """The first batch of each way, with no workers, holds the same tensors."""
    expected = collator(data[:4])
    actual = pretokenized(tokens[:4])
    if sorted(expected) != sorted(actual):
        return False
    return all(
        torch.equal(expected[key], actual[key])
        if isinstance(expected[key], torch.Tensor)
        else all(torch.equal(a, b) for a, b in zip(expected[key], actual[key], strict=True))
        for key in expected
    )


def run(arguments: argparse.Namespace, directory: Path) -> int:
    processor = build_processor("qwen2_5_vl", max_pixels=arguments.max_pixels)
    collator = vc.Qwen25VLCollator(processor=processor)
    pretokenized_collator = vc.PreTokenizedCollator(processor=processor)
    data = collate_samples(ConversationWriter(random.Random(arguments.seed)), arguments.samples)
    if arguments.jpeg:
        images_to_files(data, directory)
    print(header(arguments))

    start = time.perf_counter()
    tokens = [vc.pretokenize_sample(collator, example) for example in data]
    pretokenize_seconds = time.perf_counter() - start
    identical = batches_identical(collator, pretokenized_collator, data, tokens)
    print(f"batches identical: {'yes' if identical else 'NO'}")
    print(
        f"pre-tokenizing once: {pretokenize_seconds:.2f} s for {len(data)} samples "
        f"({len(data) / pretokenize_seconds:.1f} samples/s, one process)"
    )
    print()
    print(f"{'mode':<14} {'workers':<9} {'median samples/s':>18} {'best':>9} {'1st epoch s':>12}")
    rates: dict[tuple[str, int], float] = {}
    for mode in MODES:
        dataset, collate_fn = (
            (data, collator) if mode == "on-the-fly" else (tokens, pretokenized_collator)
        )
        for workers in WORKER_COUNTS:
            first, timed = time_epochs(
                make_loader(dataset, collate_fn, workers, arguments), arguments.epochs
            )
            per_epoch = [len(dataset) / seconds for seconds in timed]
            rates[mode, workers] = statistics.median(per_epoch)
            print(
                f"{mode:<14} workers={workers:<2} {rates[mode, workers]:>10.1f} samples/s "
                f"{max(per_epoch):>9.1f} {first:>12.2f}"
            )
    print()
    for mode in MODES:
        print(
            f"{mode}: workers 1/0 = {rates[mode, 1] / rates[mode, 0]:.2f}x, "
            f"workers 2/0 = {rates[mode, 2] / rates[mode, 0]:.2f}x"
        )
    for workers in WORKER_COUNTS:
        ratio = rates["pre-tokenized", workers] / rates["on-the-fly", workers]
        print(f"workers={workers}: pre-tokenized / on-the-fly = {ratio:.1f}x")
    epoch_seconds = len(data) / rates["on-the-fly", 0]
    print(
        f"pre-tokenizing costs {pretokenize_seconds / epoch_seconds:.2f} on-the-fly epoch(s) "
        f"with no workers; it is paid once"
    )
    print(f"load at the end: {os.getloadavg()[0]:.2f}")
    return 0 if identical else 1


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    with tempfile.TemporaryDirectory(prefix="vlm-collate-loader-") as directory:
        return run(arguments, Path(directory))


if __name__ == "__main__":
    sys.exit(main())
