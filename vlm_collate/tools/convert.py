"""``vlm-collate convert IN OUT --format F``: a dataset in any row format, as the library's own.

Every row of ``IN`` (JSONL, JSON array, Parquet, saved ``datasets`` folder or
loading script) is converted to ``{"conversation": [...]}`` and written to
``OUT``: JSONL, or Parquet when ``OUT`` ends in ``.parquet``. A row that
cannot be read or converted is reported on stderr with its line (or row) and
why, and left out; the exit status is then 2. Relative media paths are
rewritten relative to ``OUT``'s folder, so the new file finds the same media.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from ..errors import ConfigurationError, VLMCollateError
from ..formats import get_format

__all__ = ["add_parser", "converted_rows", "run"]

_MEDIA = ("image", "video", "audio")


@attrs.frozen
class Converted:
    """One row's outcome: the converted sample, or why the row was refused."""

    index: int
    where: str
    sample: Mapping[str, Any] | None = None
    error: str | None = None


def add_parser(commands: Any) -> None:
    """Register ``convert`` on the command line's subparsers."""
    from .cli import add_format_option

    parser = commands.add_parser(
        "convert",
        help="write a dataset in any supported row format as the library's own JSONL or Parquet",
        description=(
            "Convert every row of IN to the library's own {'conversation': [...]} samples and "
            "write them to OUT (JSONL, or Parquet when OUT ends in .parquet). Each refused row "
            "is reported with its line and why; the exit status is then 2."
        ),
    )
    parser.add_argument("input", metavar="IN", help="JSONL, JSON array, Parquet or a saved dataset")
    parser.add_argument("output", metavar="OUT", type=pathlib.Path, help="OUT.jsonl or OUT.parquet")
    add_format_option(parser)
    parser.add_argument("--limit", type=int, metavar="N", help="convert only the first N rows")
    parser.add_argument(
        "--force", action="store_true", help="overwrite OUT if it exists (default: refuse)"
    )
    parser.set_defaults(run=run)


def converted_rows(
    path: pathlib.Path, output: pathlib.Path, fmt: str, limit: int | None = None
) -> Iterator[Converted]:
    """Convert each row of ``path``; relative media paths are made relative to ``output``."""
    from .datafiles import media_base, read_rows

    row_format = get_format(fmt)
    source, target = media_base(path).resolve(), output.resolve().parent
    for row in read_rows(path, limit=limit):
        if row.error is not None:
            yield Converted(row.index, row.where, error=row.error)
            continue
        try:
            sample = row_format.convert(row.value, row.index)
            if not isinstance(sample, Mapping) or not isinstance(sample.get("conversation"), list):
                msg = "the row holds no 'conversation' list"
                raise ConfigurationError(msg)
            sample = _moved(sample, source, target)
        except VLMCollateError as exc:
            yield Converted(row.index, row.where, error=f"{exc} ({row.where})")
            continue
        yield Converted(row.index, row.where, sample=sample)


def _moved(sample: Mapping[str, Any], source: pathlib.Path, target: pathlib.Path) -> dict[str, Any]:
    messages = []
    for message in sample["conversation"]:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):
            message = {
                **message,
                "content": [_moved_item(item, source, target) for item in content],
            }
        messages.append(message)
    return {**sample, "conversation": messages}


def _moved_item(item: Any, source: pathlib.Path, target: pathlib.Path) -> Any:
    kind = item.get("type") if isinstance(item, Mapping) else None
    value = item.get(kind) if kind in _MEDIA else None
    if not isinstance(value, str) or not value or "://" in value or value.startswith("data:"):
        return item
    path = pathlib.Path(value)
    if not path.is_absolute():
        path = source / path
    return {**item, kind: os.path.relpath(path, target)}


def run(options: argparse.Namespace) -> int:
    """Convert ``options.input`` to ``options.output``; returns the exit status."""
    from .cli import EXIT_ERROR, error

    output: pathlib.Path = options.output
    if output.exists() and not options.force:
        msg = f"{str(output)!r} exists; pass --force to overwrite it."
        raise ConfigurationError(msg)
    if not output.parent.is_dir() and str(output.parent):
        msg = f"cannot write {str(output)!r}: its folder does not exist."
        raise ConfigurationError(msg)
    rows = converted_rows(pathlib.Path(options.input), output, options.format, options.limit)
    kept: list[Mapping[str, Any]] = []
    refused = 0
    for row in rows:
        if row.error is not None or row.sample is None:
            error(row.error or f"sample {row.index}: not converted ({row.where})")
            refused += 1
            continue
        problem = _unwritable(row.sample, parquet=output.suffix == ".parquet")
        if problem is not None:
            error(f"sample {row.index}: {problem} ({row.where})")
            refused += 1
            continue
        kept.append(row.sample)
    _write(kept, output)
    print(f"wrote {len(kept)} samples to {output}; refused {refused}", file=sys.stderr)
    return EXIT_ERROR if refused else 0


def _unwritable(sample: Mapping[str, Any], *, parquet: bool) -> str | None:
    """Why ``sample`` cannot go into the output file, or None."""
    if parquet:
        return None
    try:
        json.dumps(sample, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        return (
            f"holds values JSON cannot store ({exc}); write OUT.parquet instead, which keeps "
            "images as bytes"
        )
    return None


def _write(samples: list[Mapping[str, Any]], output: pathlib.Path) -> None:
    if output.suffix == ".parquet":
        _write_parquet(samples, output)
        return
    with output.open("w", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(json.dumps(sample, ensure_ascii=False) + "\n")


def _write_parquet(samples: list[Mapping[str, Any]], output: pathlib.Path) -> None:
    """Parquet rows: string content as text items and images as ``{"bytes", "path"}``."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as parquet
    except ImportError as exc:
        msg = "writing Parquet needs pyarrow: pip install pyarrow"
        raise ConfigurationError(msg) from exc
    rows = [_arrow_ready(sample) for sample in samples]
    try:
        parquet.write_table(pa.Table.from_pylist(rows), output)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        msg = f"cannot write {str(output)!r} as Parquet: the rows' fields differ in type ({exc})."
        raise ConfigurationError(msg) from exc


def _arrow_ready(sample: Mapping[str, Any]) -> dict[str, Any]:
    messages = []
    for message in sample["conversation"]:
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        elif isinstance(content, list):
            content = [_arrow_item(item) for item in content]
        messages.append({**message, "content": content})
    return {**sample, "conversation": messages}


def _arrow_item(item: Any) -> Any:
    if not isinstance(item, Mapping) or item.get("type") != "image":
        return item
    from PIL import Image

    image = item.get("image")
    if isinstance(image, str):
        image = {"bytes": None, "path": image}
    elif isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        image = {"bytes": buffer.getvalue(), "path": None}
    return {**item, "image": image}
