"""The ``vlm-collate`` command.

``vlm-collate inspect`` collates a JSONL dataset (the bundled example by
default) and shows, token by token, what the model would be trained on.
``vlm-collate bench`` runs the benchmark script. Every error this package
raises is printed as one line, and the command exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import os
import pathlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from ..errors import ConfigurationError, VLMCollateError
from .pretokenize import add_parser as add_pretokenize

__all__ = ["main"]

DEFAULT_PROCESSOR = "qwen2_5_vl"
EXIT_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (``sys.argv[1:]`` by default); returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] == "bench":
        return _bench(arguments[1:])
    parser = _parser()
    options = parser.parse_args(arguments)
    try:
        return options.run(options)
    except VLMCollateError as exc:
        message = " ".join(str(exc).split())
        print(f"vlm-collate: error: {message}", file=sys.stderr)
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-collate",
        description="Chat-style multimodal samples to VLM training batches, and a look at them.",
    )
    commands = parser.add_subparsers(title="commands", dest="command", required=True)
    _add_inspect(commands)
    add_pretokenize(commands)
    bench = commands.add_parser(
        "bench",
        help="run the collate benchmarks (arguments go to vlm_collate.tools.bench)",
        add_help=False,
    )
    bench.set_defaults(run=lambda options: _bench([]))
    return parser


def _add_inspect(commands: Any) -> None:
    inspect = commands.add_parser(
        "inspect",
        help="show which tokens of each sample are trained",
        description=(
            "Collate a JSONL dataset and show every row: trained tokens highlighted (or "
            "[[bracketed]] without colour), media placeholders collapsed, padding dimmed, and "
            "every dropped, truncated or empty-label sample with its reason."
        ),
    )
    inspect.add_argument(
        "data",
        nargs="?",
        help="JSONL file of {'conversation': [...]} samples (default: bundled example)",
    )
    inspect.add_argument(
        "--processor",
        default=DEFAULT_PROCESSOR,
        metavar="FAMILY|PATH",
        help=f"a vlm_collate.testing family (default {DEFAULT_PROCESSOR}) or a local directory",
    )
    inspect.add_argument(
        "--max-length", type=_positive, metavar="N", help="longest allowed row, in tokens"
    )
    inspect.add_argument(
        "--batch-size", type=_positive, default=4, metavar="N", help="samples per batch (default 4)"
    )
    inspect.add_argument(
        "--shift",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pre-shift labels, the collator default (--no-shift: the Hugging Face convention)",
    )
    inspect.add_argument(
        "--empty-labels", choices=("raise", "warn", "drop"), default="warn", help="default: warn"
    )
    inspect.add_argument(
        "--overlong", choices=("drop", "raise", "truncate"), default="drop", help="default: drop"
    )
    inspect.add_argument(
        "--special-tokens",
        choices=("raise", "drop", "allow"),
        default="drop",
        help="policy for control tokens in message text (default: drop)",
    )
    inspect.add_argument(
        "--unsupported-media",
        choices=("raise", "drop"),
        default="drop",
        help="policy for media the processor cannot take (default: drop, and say so)",
    )
    inspect.add_argument("--pixel-dtype", metavar="DTYPE", help="e.g. float32, bfloat16 or auto")
    policy = inspect.add_argument_group(
        "label policy", "which turns are trained (see docs: controlling what is trained)"
    )
    policy.add_argument(
        "--turns",
        type=_turns,
        default="all",
        metavar="all|last|N",
        help="train every turn (default), the last one, or the first N",
    )
    policy.add_argument(
        "--roles",
        default="assistant",
        metavar="ROLE[,ROLE]",
        help="roles whose turns are trained, e.g. assistant,tool (default: assistant)",
    )
    policy.add_argument(
        "--train-on-end-of-turn",
        "--end-of-turn",
        dest="train_on_end_of_turn",
        choices=("always", "never", "last"),
        default="always",
        help="train each turn's end token: always (default), never, or for the last turn only",
    )
    policy.add_argument(
        "--reasoning",
        choices=("train", "answer_only", "skip_empty"),
        default="train",
        help="reasoning blocks: train (default), answer_only, or skip_empty",
    )
    policy.add_argument(
        "--loss-weights",
        action="store_true",
        help="build loss_weights and show each trained run's weight when it is not 1",
    )
    inspect.add_argument(
        "--limit", type=_positive, metavar="N", help="inspect only the first N samples"
    )
    inspect.add_argument(
        "--html", type=pathlib.Path, metavar="OUT.html", help="also write an HTML page"
    )
    inspect.add_argument(
        "--no-color", action="store_true", help="plain text, trained spans as [[...]]"
    )
    inspect.set_defaults(run=_inspect)


def _turns(text: str) -> str | int:
    if text in ("all", "last"):
        return text
    try:
        return _positive(text)
    except argparse.ArgumentTypeError:
        msg = f"expected 'all', 'last' or a positive integer (got {text!r})"
        raise argparse.ArgumentTypeError(msg) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        msg = f"expected a positive integer (got {text!r})"
        raise argparse.ArgumentTypeError(msg)
    return value


def _inspect(options: argparse.Namespace) -> int:
    # Set before transformers is imported, so that nothing tries the model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from . import inspect as inspection
    from ..registry import collator_for

    with _data_path(options.data) as (data_path, source):
        records = inspection.load_jsonl(data_path, limit=options.limit)
    processor, processor_name = _load_processor(options.processor)
    settings: dict[str, Any] = {
        "max_length": options.max_length,
        "shift_labels": options.shift,
        "empty_labels": options.empty_labels,
        "overlong": options.overlong,
        "special_tokens_in_text": options.special_tokens,
        "unsupported_media": options.unsupported_media,
        "label_policy": {
            "turns": options.turns,
            "roles": options.roles,
            "train_on_end_of_turn": options.train_on_end_of_turn,
            "reasoning": options.reasoning,
            "loss_weights": options.loss_weights,
        },
    }
    if options.pixel_dtype is not None:
        settings["pixel_dtype"] = options.pixel_dtype
    with inspection.captured_logs() as logged:
        collator = collator_for(processor, **settings)
    result = inspection.inspect_samples(
        collator,
        records,
        batch_size=options.batch_size,
        source=source,
        processor=processor_name,
        notes=[record.getMessage() for record in logged],
    )
    sys.stdout.write(inspection.render_text(result, color=_use_color(options.no_color, sys.stdout)))
    if options.html is not None:
        _write(options.html, inspection.render_html(result))
        print(f"wrote {options.html}")
    return 0


@contextlib.contextmanager
def _data_path(data: str | None) -> Iterator[tuple[pathlib.Path, str]]:
    if data is not None:
        yield pathlib.Path(data), data
        return
    bundled = importlib.resources.files("vlm_collate") / "data" / "example.jsonl"
    with importlib.resources.as_file(bundled) as path:
        yield path, f"bundled example ({path})"


def _load_processor(name: str) -> tuple[Any, str]:
    from ..testing import FAMILIES, build_processor

    if name in FAMILIES:
        processor = build_processor(name)
        return processor, f"{name} ({type(processor).__name__}, vlm_collate.testing)"
    path = pathlib.Path(name)
    if not path.is_dir():
        families = ", ".join(FAMILIES)
        msg = f"'--processor' must be one of {families} or a processor directory (got {name!r})."
        raise ConfigurationError(msg)
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ... here
        msg = f"cannot load a processor from {str(path)!r}: {type(exc).__name__}: {exc}"
        raise ConfigurationError(msg) from exc
    return processor, f"{path} ({type(processor).__name__})"


def _use_color(no_color: bool, stream: TextIO) -> bool:
    if no_color or os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _write(path: pathlib.Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        msg = f"cannot write {str(path)!r}: {exc.strerror or exc}"
        raise ConfigurationError(msg) from exc


def _bench(arguments: list[str]) -> int:
    try:
        from . import bench
    except ImportError as exc:
        print(f"vlm-collate: error: the bench command is not available ({exc})", file=sys.stderr)
        return EXIT_ERROR
    return bench.main(arguments)
