"""Reading dataset files for the command line: JSONL, JSON arrays, Parquet, ``datasets``.

`read_rows` yields every row of a data file as a `RawRow`; a row
that cannot be read (broken JSON, invalid UTF-8, nesting too deep) is yielded
with its ``error`` set, so that the caller reports it and goes on. A problem
with the file itself (missing, binary, a plain folder, a JSON array that does
not parse) is a [`ConfigurationError`][vlm_collate.ConfigurationError] with a one-line
message. Nothing here imports torch.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from .._deps import require
from ..errors import ConfigurationError

__all__ = ["RawRow", "media_base", "read_rows"]

_SNIFF_BYTES = 8192
_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@attrs.frozen
class RawRow:
    """One row of a data file, as read.

    Args:
        index: Position of the row in the file (0-based, blank lines skipped).
        line: Line number in the file (1-based) when the file has lines, else None.
        value: The parsed row (None when ``error`` is set).
        error: Why the row could not be read, as a sentence.
    """

    index: int
    line: int | None
    value: Any = attrs.field(default=None, repr=False)
    error: str | None = None

    @property
    def where(self) -> str:
        """``"line 7"`` or ``"row 6"``, for messages."""
        return f"line {self.line}" if self.line is not None else f"row {self.index}"


def media_base(path: pathlib.Path) -> pathlib.Path:
    """The folder relative media paths of ``path``'s rows are resolved against."""
    return path if path.is_dir() else path.parent


def read_rows(path: str | pathlib.Path, *, limit: int | None = None) -> Iterator[RawRow]:
    """Yield the rows of a JSONL, JSON array, Parquet file, saved dataset or loading script.

    Raises:
        ConfigurationError: The path is missing, a folder that is no saved
            dataset, a binary file of no known kind, or a JSON array file that
            does not parse.
    """
    path = pathlib.Path(path)
    rows = _reader(path)(path)
    for count, row in enumerate(rows):
        if limit is not None and count >= limit:
            return
        yield row


def _reader(path: pathlib.Path) -> Any:
    if path.is_dir():
        if any((path / marker).is_file() for marker in _DATASET_MARKERS):
            return _saved_dataset
        msg = (
            f"{str(path)!r} is a directory, not a data file or a folder saved by "
            "datasets' save_to_disk."
        )
        raise ConfigurationError(msg)
    if not path.exists():
        msg = f"data file {str(path)!r} does not exist."
        raise ConfigurationError(msg)
    if not path.is_file():
        msg = f"data file {str(path)!r} is not a regular file."
        raise ConfigurationError(msg)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet
    if suffix == ".py":
        return _loading_script
    if suffix == ".arrow":
        return _arrow_file
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if head.startswith(b"PAR1"):
        return _parquet
    if b"\x00" in head:
        msg = (
            f"{str(path)!r} is a binary file, not JSONL, JSON, Parquet or a saved dataset "
            "(it holds NUL bytes)."
        )
        raise ConfigurationError(msg)
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        return _json_array
    return _jsonl


def _parse(text: str) -> tuple[Any, str | None]:
    """``(value, None)``, or ``(None, why)`` for broken or too deeply nested JSON."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    except RecursionError:
        return None, "invalid JSON (nested too deeply to read)"


def _jsonl(path: pathlib.Path) -> Iterator[RawRow]:
    index = 0
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                error = (
                    f"line {line_number}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at "
                    f"column {exc.start + 1})"
                )
                yield RawRow(index=index, line=line_number, error=error)
                index += 1
                continue
            if not line.strip():
                continue
            value, problem = _parse(line.removeprefix("\ufeff"))
            if problem is not None:
                problem = problem.replace(" at line 1, column", " at column")
                yield RawRow(index=index, line=line_number, error=f"line {line_number}: {problem}")
            else:
                yield RawRow(index=index, line=line_number, value=value)
            index += 1


def _json_array(path: pathlib.Path) -> Iterator[RawRow]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        msg = f"{path}: not valid UTF-8 (byte at offset {exc.start})."
        raise ConfigurationError(msg) from exc
    value, error = _parse(text)
    if error is not None:
        msg = f"{path}: {error}."
        raise ConfigurationError(msg)
    if not isinstance(value, list):
        msg = f"{path}: expected a JSON array of rows (got {type(value).__name__})."
        raise ConfigurationError(msg)
    lines = _element_lines(text, len(value))
    for index, row in enumerate(value):
        yield RawRow(index=index, line=lines[index] if index < len(lines) else None, value=row)


def _element_lines(text: str, count: int) -> list[int]:
    """The line each top-level element of a JSON array starts on (one pass, no re-parse)."""
    decoder = json.JSONDecoder()
    lines, position, line = [], text.index("[") + 1, 1 + text[: text.index("[")].count("\n")
    for _ in range(count):
        while position < len(text) and text[position] in " \t\r\n,":
            line += text[position] == "\n"
            position += 1
        lines.append(line)
        try:
            _, end = decoder.raw_decode(text, position)
        except (json.JSONDecodeError, RecursionError):
            break
        line += text.count("\n", position, end)
        position = end
    return lines


def _parquet(path: pathlib.Path) -> Iterator[RawRow]:
    parquet = require("pyarrow.parquet", "reading Parquet needs pyarrow: pip install pyarrow")
    try:
        handle = parquet.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a bad file
        msg = f"{str(path)!r} is not a readable Parquet file ({exc})."
        raise ConfigurationError(msg) from exc
    index = 0
    for batch in handle.iter_batches(batch_size=256):
        for row in batch.to_pylist():
            yield RawRow(index=index, line=None, value=row)
            index += 1


def _datasets() -> Any:
    return require(
        "datasets", "reading a saved dataset needs the 'datasets' package: pip install datasets"
    )


def _dataset_rows(dataset: Any) -> Iterator[RawRow]:
    for index, row in enumerate(dataset):
        yield RawRow(index=index, line=None, value=row)


def _first_split(loaded: Any, path: pathlib.Path) -> Any:
    if isinstance(loaded, Mapping):  # a DatasetDict: read its train split, or its first
        splits = list(loaded.keys())
        if not splits:
            msg = f"{str(path)!r} holds no split."
            raise ConfigurationError(msg)
        return loaded["train" if "train" in splits else splits[0]]
    return loaded


def _saved_dataset(path: pathlib.Path) -> Iterator[RawRow]:
    datasets = _datasets()
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, ... here
        msg = f"cannot load the saved dataset {str(path)!r} ({type(exc).__name__}: {exc})."
        raise ConfigurationError(msg) from exc
    yield from _dataset_rows(_first_split(loaded, path))


def _arrow_file(path: pathlib.Path) -> Iterator[RawRow]:
    datasets = _datasets()
    try:
        loaded = datasets.Dataset.from_file(str(path))
    except Exception as exc:  # pyarrow errors for a file that is no Arrow stream
        msg = f"{str(path)!r} is not a readable Arrow file ({exc})."
        raise ConfigurationError(msg) from exc
    yield from _dataset_rows(loaded)


def _loading_script(path: pathlib.Path) -> Iterator[RawRow]:
    """Run a ``datasets`` loading script's builder and read its first split.

    ``datasets`` 4 and later no longer load scripts by name, so the script's
    builder class is found and run here, with its cache in a temporary folder.
    """
    datasets = _datasets()
    builder_class = _builder_class(path, datasets)
    with tempfile.TemporaryDirectory(prefix="vlm-collate-") as cache:
        try:
            builder = builder_class(cache_dir=cache)
            builder.download_and_prepare()
            loaded = builder.as_dataset()
        except Exception as exc:  # the script's own code runs here
            msg = f"the loading script {str(path)!r} failed ({type(exc).__name__}: {exc})."
            raise ConfigurationError(msg) from exc
        yield from _dataset_rows(_first_split(loaded, path))


def _builder_class(path: pathlib.Path, datasets: Any) -> type:
    name = f"vlm_collate_loading_script_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        msg = f"cannot import the loading script {str(path)!r}."
        raise ConfigurationError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the script's own import-time code
        msg = f"the loading script {str(path)!r} failed to import ({type(exc).__name__}: {exc})."
        raise ConfigurationError(msg) from exc
    builders = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, datasets.DatasetBuilder)
        and value.__module__ == name
    ]
    if len(builders) != 1:
        msg = (
            f"the loading script {str(path)!r} must define one datasets.DatasetBuilder "
            f"subclass (found {len(builders)})."
        )
        raise ConfigurationError(msg)
    return builders[0]
