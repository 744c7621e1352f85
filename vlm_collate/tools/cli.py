"""The ``vlm-collate`` command.

``vlm-collate inspect`` collates a dataset file (the bundled example by
default) and shows, token by token, what the model would be trained on.
``vlm-collate convert`` rewrites a dataset in any supported row format as the
library's own JSONL (or Parquet). ``vlm-collate bench`` runs the benchmark
script. Every error this package raises is printed as one line (control
characters from the data escaped), and the command exits with status 2.

This module imports neither torch nor transformers: each command imports
what it needs when it runs, so ``--help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import os
import pathlib
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO, cast

from .. import __version__
from ..errors import ConfigurationError, VLMCollateError
from ..formats import FORMATS
from .pretokenize import add_parser as add_pretokenize
from .terminal import visible

__all__ = ["main"]

DEFAULT_PROCESSOR = "qwen2_5_vl"
EXIT_ERROR = 2
# The families of vlm_collate.testing, named here so that --help needs no import of
# transformers (tests/tools/test_cli.py checks the two lists agree).
FAMILY_NAMES = (
    "gemma4",
    "kimi_k25",
    "kimi_k25_remote",
    "kimi_vl",
    "llava_next_mistral",
    "llava_onevision",
    "nemotron_omni",
    "nemotron_parse",
    "phi4_mm",
    "qwen2_5_vl",
    "qwen2_vl",
    "qwen3_omni",
    "qwen3_vl",
    "qwen3_vl_thinking",
)
FORMAT_NAMES = (*FORMATS, "auto")
# Python option names in library messages, and the command-line flags that set them.
_FLAGS = {
    "empty_labels": "--empty-labels",
    "special_tokens_in_text": "--special-tokens",
    "overlong": "--overlong",
    "unsupported_media": "--unsupported-media",
    "unknown_roles": "--unknown-roles",
    "format": "--format",
}
_OPTION_HINT = re.compile(r"\b(" + "|".join(_FLAGS) + r")=(['\"])([\w-]+)\2")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (``sys.argv[1:]`` by default); returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] == "bench":
        return _bench(arguments[1:])
    options = _parser().parse_args(arguments)
    try:
        return cast("int", options.run(options))
    except VLMCollateError as exc:
        error(str(exc))
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep the final
        # flush at exit from raising again.
        with contextlib.suppress(AttributeError, OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def error(message: str) -> None:
    """Print ``message`` to stderr as one ``vlm-collate: error:`` line."""
    print(f"vlm-collate: error: {as_cli_text(' '.join(message.split()))}", file=sys.stderr)


def as_cli_text(text: str) -> str:
    """``text`` with control characters escaped and Python option hints worded as flags."""
    return _OPTION_HINT.sub(lambda found: f"{_FLAGS[found[1]]} {found[3]}", visible(text))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-collate",
        description="Chat-style multimodal samples to VLM training batches, and a look at them.",
    )
    parser.add_argument("--version", action="version", version=f"vlm-collate {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)
    for _name, add in _COMMANDS:
        add(commands)
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
            "Collate a dataset and show every row: trained tokens highlighted (or "
            "[[bracketed]] without colour), media placeholders collapsed, padding dimmed, and "
            "every dropped, truncated, empty-label or refused sample with its reason. Relative "
            "media paths are resolved against the data file's folder."
        ),
    )
    inspect.add_argument(
        "data",
        nargs="?",
        help=(
            "JSONL, JSON array, Parquet, a folder saved by datasets' save_to_disk, or a "
            "datasets loading script (default: bundled example)"
        ),
    )
    add_format_option(inspect)
    _add_collator_options(inspect)
    _add_bad_input_options(inspect)
    _add_label_policy_options(inspect)
    _add_output_options(inspect)
    add_keep_going_option(inspect)
    inspect.set_defaults(run=_inspect)


def _add_collator_options(inspect: argparse.ArgumentParser) -> None:
    """Which processor and collator settings ``inspect`` runs with."""
    inspect.add_argument(
        "--processor",
        default=DEFAULT_PROCESSOR,
        metavar="FAMILY|PATH",
        help=(
            f"a vlm_collate.testing family (default {DEFAULT_PROCESSOR}), one of: "
            f"{', '.join(FAMILY_NAMES)}; or a local processor directory"
        ),
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
    inspect.add_argument("--pixel-dtype", metavar="DTYPE", help="e.g. float32, bfloat16 or auto")


def _add_bad_input_options(inspect: argparse.ArgumentParser) -> None:
    """The bad-input policies, worded as flags."""
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
    inspect.add_argument(
        "--unknown-roles",
        choices=("raise", "warn", "drop", "allow"),
        default="warn",
        help="policy for a role that is neither system/user/assistant/tool nor trained "
        "(default: warn)",
    )


def _add_label_policy_options(inspect: argparse.ArgumentParser) -> None:
    """The label policy: which turns, roles and tokens are trained."""
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


def _add_output_options(inspect: argparse.ArgumentParser) -> None:
    """How much is shown, and where."""
    inspect.add_argument(
        "--limit", type=_positive, metavar="N", help="inspect only the first N samples"
    )
    inspect.add_argument(
        "--html", type=pathlib.Path, metavar="OUT.html", help="also write an HTML page"
    )
    inspect.add_argument(
        "--no-color", action="store_true", help="plain text, trained spans as [[...]]"
    )


def add_format_option(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """The ``--format`` option, shared by the commands that read dataset rows."""
    parser.add_argument(
        "--format",
        default=default,
        metavar="|".join(FORMAT_NAMES),
        help=f"row format of the data; auto picks the one format that fits (default: {default})",
    )


def add_keep_going_option(parser: argparse.ArgumentParser) -> None:
    """``--keep-going`` (the default) and ``--fail-fast``, shared by the row-reading commands."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--keep-going",
        dest="keep_going",
        action="store_true",
        default=True,
        help="report every bad row and go on; the exit status is 2 if any was refused (default)",
    )
    group.add_argument(
        "--fail-fast",
        dest="keep_going",
        action="store_false",
        help="stop at the first bad row",
    )


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
    _check_html_target(options.html)
    from ..registry import collator_for
    from . import inspect as inspection
    from .datafiles import media_base

    with _data_path(options.data) as (data_path, source):
        records = inspection.load_records(data_path, limit=options.limit, format=options.format)
    if not options.keep_going:
        first = next((record for record in records if record.error is not None), None)
        if first is not None:
            raise ConfigurationError(first.error)
    processor, processor_name = _load_processor(options.processor)
    with inspection.captured_logs() as logged:
        collator = collator_for(processor, **_collator_settings(options))
    result = inspection.inspect_samples(
        collator,
        records,
        batch_size=options.batch_size,
        source=source,
        processor=processor_name,
        notes=[
            f"relative media paths are resolved against {media_base(pathlib.Path(data_path))}",
            *(record.getMessage() for record in logged),
        ],
        keep_going=options.keep_going,
    )
    color = _use_color(options.no_color, sys.stdout)
    sys.stdout.write(as_cli_text(inspection.render_text(result, color=color)))
    if options.html is not None:
        _write(options.html, inspection.render_html(result))
        print(f"wrote {options.html}")
    sys.stdout.flush()
    refused = inspection.refused_rows(result)
    for message in refused:
        error(message)
    return EXIT_ERROR if refused else 0


def _collator_settings(options: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "max_length": options.max_length,
        "shift_labels": options.shift,
        "empty_labels": options.empty_labels,
        "overlong": options.overlong,
        "special_tokens_in_text": options.special_tokens,
        "unsupported_media": options.unsupported_media,
        "unknown_roles": options.unknown_roles,
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
    return settings


def _check_html_target(path: pathlib.Path | None) -> None:
    """Refuse an --html path that cannot be written, before any work is done."""
    if path is None:
        return
    folder = path.parent if str(path.parent) else pathlib.Path(".")
    if path.is_dir():
        problem = "is a directory"
    elif not folder.is_dir():
        problem = f"its folder {str(folder)!r} does not exist"
    elif not os.access(folder, os.W_OK):
        problem = f"its folder {str(folder)!r} is not writable"
    else:
        return
    msg = f"cannot write the HTML page {str(path)!r}: {problem}."
    raise ConfigurationError(msg)


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


def _add_convert(commands: Any) -> None:
    from .convert import add_parser

    add_parser(commands)


# Each subcommand: its name and the function that adds its parser (a table, so that
# a new subcommand is one more line here and a module of its own).
_COMMANDS: tuple[tuple[str, Callable[[Any], None]], ...] = (
    ("inspect", _add_inspect),
    ("convert", _add_convert),
    ("pretokenize", add_pretokenize),
)
