"""``vlm-collate pretokenize``: a JSONL dataset to Parquet shards, resumable, with a progress bar.

The rows are cut into shards of ``--rows-per-shard`` source rows; shard ``k``
holds rows ``k * R`` to ``(k + 1) * R - 1`` (those no policy dropped). A
re-run with the same collator settings skips every shard that has its
completion mark, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import collections
import logging
import math
import os
import pathlib
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

import attrs

from .._deps import require
from ..errors import ConfigurationError

__all__ = ["add_parser", "padding_estimate", "run"]

ENGINES = ("datasets", "ray")
# Open packs first-fit looks back over: a bound that keeps the estimate linear in rows.
_PACK_WINDOW = 64


def add_parser(commands: Any) -> None:
    """Register ``pretokenize`` on the ``vlm-collate`` subcommands."""
    parser = commands.add_parser(
        "pretokenize",
        help="tokenize a JSONL dataset once into Parquet shards",
        description=(
            "Run the template, hook and label steps of the collator on every sample of a JSONL "
            "file and write the rows as Parquet shards with a manifest. Re-running resumes: "
            "complete shards are skipped."
        ),
    )
    parser.add_argument("data", help="JSONL file of {'conversation': [...]} samples")
    parser.add_argument("out", type=pathlib.Path, help="shard directory (created or resumed)")
    parser.add_argument(
        "--processor",
        required=True,
        metavar="FAMILY|PATH",
        help="a vlm_collate.testing family or a local processor directory",
    )
    parser.add_argument("--engine", choices=ENGINES, default="datasets", help="default: datasets")
    parser.add_argument(
        "--num-proc",
        type=_positive,
        metavar="N",
        help="worker processes (datasets) or actors (ray)",
    )
    parser.add_argument("--format", metavar="F", help="row format, passed to the collator")
    _add_sizes(parser)
    _add_policies(parser)
    parser.set_defaults(run=run)


def _add_sizes(parser: argparse.ArgumentParser) -> None:
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument("--rows-per-shard", type=_positive, default=1024, metavar="N")
    sizes.add_argument("--row-group-size", type=_positive, default=128, metavar="N")
    sizes.add_argument(
        "--batch-size", type=_positive, default=16, metavar="N", help="rows per map call"
    )
    sizes.add_argument("--limit", type=_positive, metavar="N", help="only the first N samples")
    sizes.add_argument(
        "--train-batch-size",
        type=_positive,
        default=8,
        metavar="N",
        help="batch size of the padding estimate in the summary (default 8)",
    )
    sizes.add_argument(
        "--pack-size",
        type=_positive,
        metavar="N",
        help="pack size of the estimate (default: longest row)",
    )


def _add_policies(parser: argparse.ArgumentParser) -> None:
    policies = parser.add_argument_group("policies (dropped rows are listed in the manifest)")
    policies.add_argument("--max-length", type=_positive, metavar="N")
    policies.add_argument("--empty-labels", choices=("raise", "warn", "drop"), default="drop")
    policies.add_argument("--overlong", choices=("drop", "raise", "truncate"), default="drop")
    policies.add_argument("--special-tokens", choices=("raise", "drop", "allow"), default="drop")
    policies.add_argument("--unsupported-media", choices=("raise", "drop"), default="drop")


def _positive(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value <= 0:
        msg = f"expected a positive integer (got {text!r})"
        raise argparse.ArgumentTypeError(msg)
    return value


# -- rows ---------------------------------------------------------------------------------


def arrow_ready(example: Mapping[str, Any]) -> dict[str, Any]:
    """A copy whose message contents are all lists of items, as one Arrow schema needs."""
    messages = []
    for message in example.get("conversation") or []:
        if isinstance(message, Mapping) and isinstance(message.get("content"), str):
            message = {**message, "content": [{"type": "text", "text": message["content"]}]}
        messages.append(message)
    return {**example, "conversation": messages}


def _collator(options: argparse.Namespace) -> Any:
    from ..registry import collator_for
    from .cli import _load_processor

    processor, _ = _load_processor(options.processor)
    settings: dict[str, Any] = {
        "max_length": options.max_length,
        "empty_labels": options.empty_labels,
        "overlong": options.overlong,
        "special_tokens_in_text": options.special_tokens,
        "unsupported_media": options.unsupported_media,
    }
    if options.format is not None:
        settings["format"] = options.format
    try:
        return collator_for(processor, **settings)
    except TypeError as exc:
        msg = f"the collator does not take these options ({exc})"
        raise ConfigurationError(msg) from exc


# -- progress and summary ---------------------------------------------------------------


@attrs.define
class Progress:
    """A one-line progress bar on a stream: rows, rows/s, tokens/s and rows dropped so far."""

    total: int
    stream: TextIO = attrs.field(factory=lambda: sys.stderr)
    rows: int = 0
    tokens: int = 0
    dropped: int = 0
    started: float = attrs.field(factory=time.perf_counter)

    def add(self, rows: int, tokens: int, dropped: int) -> None:
        self.rows, self.tokens, self.dropped = (
            self.rows + rows,
            self.tokens + tokens,
            self.dropped + dropped,
        )
        seconds = max(time.perf_counter() - self.started, 1e-9)
        filled = int(20 * self.rows / self.total) if self.total else 20
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (20 - filled)}] {self.rows}/{self.total} rows"
            f"  {self.rows / seconds:.1f} rows/s  {self.tokens / seconds:,.0f} tokens/s"
            f"  dropped {self.dropped}"
        )
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")


def padding_estimate(lengths: Sequence[int], batch_size: int, pack_size: int) -> tuple[int, int]:
    """Pad tokens of padded batches of ``batch_size`` (in order) and of first-fit packs.

    Packs are ``pack_size`` long; a row longer than that fills a pack of its own.
    First-fit looks back over the last open packs only, which keeps it linear.
    """
    padded = 0
    for start in range(0, len(lengths), batch_size):
        chunk = lengths[start : start + batch_size]
        padded += max(chunk) * len(chunk) - sum(chunk)
    room: list[int] = []
    for length in lengths:
        window = range(max(0, len(room) - _PACK_WINDOW), len(room))
        target = next((index for index in window if room[index] >= length), None)
        if target is None:
            room.append(max(pack_size, length))
            target = len(room) - 1
        room[target] -= length
    return padded, sum(room)


def _summary(manifest: Mapping[str, Any], lengths: Sequence[int], options: Any) -> str:
    reasons = collections.Counter(
        item["reason"] for shard in manifest["shards"] for item in shard["dropped"]
    )
    dropped = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items()))
    lines = [
        f"rows kept: {manifest['rows']}",
        f"rows dropped: {sum(reasons.values())}" + (f" ({dropped})" if dropped else ""),
        f"tokens: {manifest['tokens']:,}  trained tokens: {manifest['trained_tokens']:,}",
    ]
    if lengths:
        pack_size = options.pack_size or max(lengths)
        padded, packed = padding_estimate(lengths, options.train_batch_size, pack_size)
        lines.append(
            f"padding: {padded:,} pad tokens in padded batches of {options.train_batch_size}, "
            f"{packed:,} in packs of {pack_size:,}: packing would save {padded - packed:,}"
        )
    lines.append(f"shards: {len(manifest['shards'])} in {options.out}")
    return "\n".join(lines) + "\n"


# -- engines --------------------------------------------------------------------------------


def _shard_rows(samples: Sequence[Any], number: int, size: int) -> range:
    return range(number * size, min((number + 1) * size, len(samples)))


def _run_datasets(
    samples: Sequence[Any],
    todo: Sequence[int],
    writer: Any,
    collator: Any,
    options: argparse.Namespace,
    progress: Progress,
) -> None:
    datasets = require(
        "datasets", "--engine datasets needs the 'datasets' package: pip install datasets"
    )
    from ..pretokenized import pretokenize

    datasets.disable_progress_bars()  # the command draws its own
    for number in todo:
        rows = _shard_rows(samples, number, options.rows_per_shard)
        dataset = datasets.Dataset.from_list([samples[index] for index in rows])
        stored = pretokenize(
            dataset, collator, num_proc=options.num_proc, batch_size=options.batch_size
        )
        entry = writer.write(number, stored, first_index=rows.start)
        progress.add(len(rows), entry["tokens"], len(entry["dropped"]))


def _ray_batches(
    samples: Sequence[Any], todo: Sequence[int], collator: Any, options: argparse.Namespace
) -> Iterator[Any]:
    ray = require("ray", "--engine ray needs Ray Data: pip install 'vlm-collate[ray]'")
    from ..pretokenized import pretokenize_ray

    if not ray.is_initialized():  # RAY_ADDRESS, when set, joins a running cluster instead
        # One CPU beyond the actors keeps reading and writing going; None takes every core.
        cpus = None if options.num_proc is None else options.num_proc + 1
        ray.init(num_cpus=None if os.environ.get("RAY_ADDRESS") else cpus, log_to_driver=False)
    # Ray's own bars and progress logs would break the command's one-line bar.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    items = [
        {**samples[index], "row_id": index}
        for number in todo
        for index in _shard_rows(samples, number, options.rows_per_shard)
    ]
    rows = pretokenize_ray(
        ray.data.from_items(items),
        collator,
        batch_size=options.batch_size,
        num_actors=options.num_proc or 1,
        index_column="row_id",
    )
    yield from rows.iter_batches(batch_format="pyarrow", batch_size=None)


def _run_ray(
    samples: Sequence[Any],
    todo: Sequence[int],
    writer: Any,
    collator: Any,
    options: argparse.Namespace,
    progress: Progress,
) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    size = options.rows_per_shard
    pending: dict[int, list[Any]] = collections.defaultdict(list)
    for batch in _ray_batches(samples, todo, collator, options):
        shard_of = pc.divide(batch["source_index"], pa.scalar(size, pa.int64()))
        dropped = sum(1 for reason in batch["dropped_reason"].to_pylist() if reason)
        tokens = pc.sum(pc.list_value_length(batch["input_ids"])).as_py() or 0
        progress.add(batch.num_rows, tokens, dropped)
        for number in sorted(set(shard_of.to_pylist())):
            pending[number].append(batch.filter(pc.equal(shard_of, number)))
            table = pa.concat_tables(pending[number])
            if table.num_rows == len(_shard_rows(samples, number, size)):  # every row is back
                writer.write(number, table)
                del pending[number]


def run(options: argparse.Namespace) -> int:
    """Pre-tokenize ``options.data`` into shards under ``options.out``; returns the exit status."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ..pretokenized import ParquetShards, ShardWriter
    from .inspect import captured_logs, load_jsonl

    samples = [
        arrow_ready(record.example) for record in load_jsonl(options.data, limit=options.limit)
    ]
    collator = _collator(options)
    writer = ShardWriter.open(
        options.out,
        collator,
        row_group_size=options.row_group_size,
        settings={"rows_per_shard": options.rows_per_shard, "format": options.format},
    )
    shards = math.ceil(len(samples) / options.rows_per_shard)
    todo = [number for number in range(shards) if not writer.is_complete(number)]
    if len(todo) < shards:
        print(
            f"resuming: {shards - len(todo)} of {shards} shards already complete", file=sys.stderr
        )
    progress = Progress(
        total=sum(len(_shard_rows(samples, n, options.rows_per_shard)) for n in todo)
    )
    engine = _run_ray if options.engine == "ray" else _run_datasets
    with captured_logs() as logged:  # log lines would break the progress bar
        engine(samples, todo, writer, collator, options, progress)
    progress.close()
    manifest = writer.finish()
    lengths = ParquetShards.open(options.out, collator=collator).lengths()
    sys.stdout.write(_summary(manifest, lengths, options))
    for note in _notes(logged):
        print(f"note: {note}", file=sys.stderr)
    return 0


def _notes(logged: Sequence[Any]) -> list[str]:
    """Distinct warnings other than per-row drops (the summary and manifest hold those)."""
    notes = dict.fromkeys(
        record.getMessage() for record in logged if not record.msg.startswith("dropped sample")
    )
    return list(notes)[:10]
