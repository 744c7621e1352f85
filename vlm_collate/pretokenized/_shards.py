"""Parquet shards of pre-tokenized rows, their manifest, and a streaming reader.

A shard directory holds ``shard-00000.parquet``, ``shard-00001.parquet``, ...
in exactly the columns [`pretokenize`][vlm_collate.pretokenized.pretokenize] stores
(token lists, flat media tensors beside their shapes, ``source_index``), a
completion mark ``shard-00000.done.json`` per finished shard, and
``manifest.json``: what made the rows (collator class and options, processor,
tokenizer hash, label policy), the counts, and the list of shards.

Shards are plain Parquet with numeric and string columns only: reading them
back never unpickles anything. [`ParquetShards`][vlm_collate.ParquetShards] refuses shards made with
another tokenizer or collator than the one it is given, because the ids would
silently mean other tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import torch

from .._cache import ObjectCache
from .._deps import require
from .._pipeline import BaseCollator, DroppedSample
from ..errors import ConfigurationError
from ..labels import IGNORE_INDEX, tokenizer_of
from ..media import PIXEL_KEYS
from ._collator import PreTokenizedCollator
from ._pretokenize import SCALAR_COLUMNS, PreTokenizedDataset, sample_from_row, stored_columns

__all__ = ["ParquetShards", "ShardWriter", "write_shards"]

MANIFEST = "manifest.json"
FORMAT = "vlm_collate.pretokenized.shards"
FORMAT_VERSION = 1
# The fields a reader compares; a difference in any would mean other token ids or labels.
_CHECKED: tuple[str, ...] = (
    "collator",
    "processor",
    "vocab_size",
    "tokenizer_hash",
    "label_policy",
)
_PROCESSOR_CHECKED: tuple[str, ...] = ("vocab_size", "tokenizer_hash")


def _pyarrow() -> Any:
    hint = "Parquet shards need pyarrow: pip install 'vlm-collate[parquet]'"
    require("pyarrow.parquet", hint)  # a submodule the callers reach as pyarrow.parquet
    return require("pyarrow", hint)


def arrow_schema() -> Any:
    """The Arrow schema of stored rows: lists of int64/float32, scalar index and reasons."""
    pa = _pyarrow()
    kinds = {"int64": pa.int64(), "float32": pa.float32(), "string": pa.string()}
    return pa.schema(
        [
            pa.field(key, kinds[kind] if key in SCALAR_COLUMNS else pa.list_(kinds[kind]))
            for key, kind in stored_columns().items()
        ]
    )


def stored_table(columns: Mapping[str, Sequence[Any]]) -> Any:
    """An Arrow table of stored rows from ``{column: values}`` (numpy arrays or lists)."""
    pa = _pyarrow()
    schema = arrow_schema()
    arrays = []
    for field in schema:
        values = columns[field.name]
        if field.name in SCALAR_COLUMNS:
            arrays.append(pa.array(list(values), type=field.type))
            continue
        element = field.type.value_type.to_pandas_dtype()
        parts = [np.asarray(value, dtype=element).reshape(-1) for value in values]
        offsets = np.zeros(len(parts) + 1, dtype=np.int32)
        np.cumsum([part.size for part in parts], out=offsets[1:])
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=element)
        arrays.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)))
    return pa.Table.from_arrays(arrays, schema=schema)


def shard_schema() -> Any:
    """The Parquet schema of a shard: stored rows, pixel columns as raw float32 bytes.

    Parquet decodes a list of floats value by value; the same numbers as one
    byte string per row read several times faster. The manifest records their
    dtype, and their shapes are the ``*_shape`` columns as before.
    """
    pa = _pyarrow()
    return pa.schema(
        [
            pa.field(field.name, pa.large_binary()) if field.name in PIXEL_KEYS else field
            for field in arrow_schema()
        ]
    )


def _to_bytes(column: Any) -> Any:
    """A list<float32> column as one large_binary value per row, sharing no Python objects."""
    pa = _pyarrow()
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = column.offsets.to_numpy().astype(np.int64)
    values = column.values.to_numpy()[offsets[0] : offsets[-1]]
    offsets = (offsets - offsets[0]) * values.itemsize
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(column), [None, pa.py_buffer(offsets), pa.py_buffer(values)]
    )


def _shard_table(table: Any) -> Any:
    for key in PIXEL_KEYS:
        index = table.schema.get_field_index(key)
        table = table.set_column(index, key, _to_bytes(table[key]))
    return table


# -- what made the rows -------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Options as JSON: attrs objects as their fields, dtypes and anything else as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, frozenset, set)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(item) for item in items]
    if attrs.has(type(value)):
        fields = {
            field.name: _jsonable(getattr(value, field.name))
            for field in attrs.fields(type(value))
            if field.init and field.name != "processor"
        }
        return {"class": _qualified(type(value)), **fields}
    return str(value)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# Hashing a 150k-token vocabulary takes a while; a tokenizer whose size and template are
# unchanged keeps its hash (adding tokens changes its size).
_HASHES = ObjectCache()


def tokenizer_hash(processor: Any) -> str:
    """SHA-256 of the vocabulary, the added tokens and the chat template of ``processor``."""
    tokenizer = tokenizer_of(processor)
    template = getattr(processor, "chat_template", None) or getattr(
        tokenizer, "chat_template", None
    )
    template_text = json.dumps(_jsonable(template), sort_keys=True)
    return _HASHES.get_or_compute(
        tokenizer, (len(tokenizer), template_text), lambda: _hash(tokenizer, template_text)
    )


def _hash(tokenizer: Any, template_text: str) -> str:
    digest = hashlib.sha256()
    for token, index in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
        digest.update(f"{index}\t{token}\n".encode("utf-8", "surrogatepass"))
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    for index, token in sorted(added.items()):
        digest.update(f"added {index}\t{token}\n".encode("utf-8", "surrogatepass"))
    digest.update(template_text.encode("utf-8", "surrogatepass"))
    return "sha256:" + digest.hexdigest()


def _processor_fields(processor: Any) -> dict[str, Any]:
    tokenizer = tokenizer_of(processor)
    return {
        "processor": {
            "class": type(processor).__name__,
            "name": str(getattr(tokenizer, "name_or_path", "") or ""),
        },
        "vocab_size": len(tokenizer),
        "tokenizer_hash": tokenizer_hash(processor),
    }


def collator_fingerprint(collator: BaseCollator) -> dict[str, Any]:
    """The manifest fields that describe how ``collator`` tokenized the rows."""
    options = _jsonable(collator)
    options.pop("class", None)
    return {
        "collator": {"class": _qualified(type(collator)), "options": options},
        **_processor_fields(collator.processor),
        "label_policy": _jsonable(collator.label_policy),
    }


def _differences(expected: Mapping[str, Any], found: Mapping[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for key in keys:
        want, got = expected.get(key), found.get(key)
        if key in ("collator", "processor"):
            want, got = (want or {}).get("class"), (got or {}).get("class")
        elif key == "collator_options":
            want = (expected.get("collator") or {}).get("options") or {}
            got = (found.get("collator") or {}).get("options") or {}
            names = sorted(name for name in {*want, *got} if want.get(name) != got.get(name))
            want = {name: want.get(name) for name in names}
            got = {name: got.get(name) for name in names}
        if want != got:
            parts.append(f"{key}: shards have {got!r}, the collator has {want!r}")
    return "; ".join(parts)


# -- writing ----------------------------------------------------------------------------


def _write_json(path: pathlib.Path, content: Mapping[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(content, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(temporary, path)  # a reader never sees half a file


def _read_json(path: pathlib.Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        msg = f"cannot read {str(path)!r}: {exc}"
        raise ConfigurationError(msg) from exc
    if not isinstance(content, dict):
        msg = f"{str(path)!r} must hold a JSON object (got {type(content).__name__})"
        raise ConfigurationError(msg)
    return content


def _counts(table: Any) -> dict[str, int]:
    pa = _pyarrow()
    import pyarrow.compute as pc

    labels = pc.list_flatten(table["labels"])
    trained = pc.sum(pc.not_equal(labels, pa.scalar(IGNORE_INDEX, pa.int64()))).as_py() or 0
    return {
        "tokens": int(pc.sum(pc.list_value_length(table["input_ids"])).as_py() or 0),
        "trained_tokens": int(trained),
    }


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"'{name}' must be a positive int (got {value!r})."
        raise ConfigurationError(msg)
    return value


def _normalised(rows: Any, first_index: int) -> Any:
    """Stored rows as one Arrow table in the stored schema, ids shifted, in id order."""
    pa = _pyarrow()
    table = _dataset_table(rows) if isinstance(rows, PreTokenizedDataset) else rows
    table = table.select(arrow_schema().names).cast(arrow_schema())
    if first_index:
        import pyarrow.compute as pc

        shifted = pc.add(table["source_index"], pa.scalar(first_index, pa.int64()))
        position = table.schema.get_field_index("source_index")
        table = table.set_column(position, "source_index", shifted)
    return table.sort_by("source_index")


def _dropped_entries(dropped: Any) -> list[dict[str, Any]]:
    return [
        {"index": index, "reason": reason, "detail": detail}
        for index, reason, detail in zip(
            dropped["source_index"].to_pylist(),
            dropped["dropped_reason"].to_pylist(),
            dropped["dropped_detail"].to_pylist(),
            strict=True,
        )
    ]


@attrs.frozen(kw_only=True)
class ShardWriter:
    """Writes numbered Parquet shards and keeps ``manifest.json`` up to date.

    A shard is complete once its completion mark exists; the mark is written
    after the Parquet file is in place, so an interrupted run leaves no shard
    that looks complete but is not. Re-opening a directory with the same
    collator resumes it: `is_complete` says which shards to skip.

    Args:
        path: The shard directory.
        header: Manifest fields describing the rows (see `open`).
        row_group_size: Rows per Parquet row group (the reader's streaming step).
    """

    path: pathlib.Path
    header: Mapping[str, Any]
    row_group_size: int = 128

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        collator: BaseCollator,
        *,
        row_group_size: int = 128,
        settings: Mapping[str, Any] | None = None,
    ) -> ShardWriter:
        """Create ``path`` (or resume it when its manifest was written by the same collator).

        Args:
            path: The shard directory.
            collator: The chat collator that tokenizes the rows.
            row_group_size: Rows per Parquet row group.
            settings: Extra manifest fields a resumed run must also match
                (the command line stores its rows per shard here).
        """
        _pyarrow()
        _positive(row_group_size, "row_group_size")
        from .. import __version__

        directory = pathlib.Path(path)
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            **collator_fingerprint(collator),
            "dtypes": {key: np.dtype(np.float32).str for key in PIXEL_KEYS},
            "settings": dict(settings or {}),
        }
        if (directory / MANIFEST).exists():
            found = _read_json(directory / MANIFEST)
            differs = _differences(header, found, (*_CHECKED, "collator_options", "settings"))
            if differs:
                msg = f"{str(directory)!r} holds shards made differently ({differs})"
                raise ConfigurationError(msg)
        directory.mkdir(parents=True, exist_ok=True)
        writer = cls(path=directory, header=header, row_group_size=row_group_size)
        writer.update_manifest()
        return writer

    def shard_name(self, number: int) -> str:
        return f"shard-{number:05d}.parquet"

    def _mark(self, number: int) -> pathlib.Path:
        return self.path / f"shard-{number:05d}.done.json"

    def is_complete(self, number: int) -> bool:
        """Whether shard ``number`` was written in full (by this run or an earlier one)."""
        return self._mark(number).exists() and (self.path / self.shard_name(number)).exists()

    def write(self, number: int, rows: Any, *, first_index: int = 0) -> dict[str, Any]:
        """Write stored rows as shard ``number``; returns its manifest entry.

        Dropped rows go to the manifest with their ``source_index``, not to the shard.

        Args:
            number: The shard's number.
            rows: An Arrow table of stored rows (kept and dropped), or a
                [`PreTokenizedDataset`][vlm_collate.pretokenized.PreTokenizedDataset].
            first_index: Added to every ``source_index``: the row id of the
                first source row when ``rows`` were numbered from 0.
        """
        pa = _pyarrow()
        table = _normalised(rows, first_index)
        reasons = table["dropped_reason"].to_pylist()
        kept = table.filter(pa.array([not reason for reason in reasons]))
        dropped = table.filter(pa.array([bool(reason) for reason in reasons]))
        shard = self.path / self.shard_name(number)
        temporary = shard.with_name(shard.name + ".tmp")
        pa.parquet.write_table(
            _shard_table(kept),
            temporary,
            row_group_size=self.row_group_size,
            # Dictionaries and compression barely shrink pixel floats but slow reading.
            use_dictionary=False,
            compression={
                field.name: "none" if field.name in PIXEL_KEYS else "snappy"
                for field in kept.schema
            },
        )
        os.replace(temporary, shard)
        entry = {
            "file": shard.name,
            "rows": kept.num_rows,
            **_counts(kept),
            "dropped": _dropped_entries(dropped),
            "complete": True,
        }
        _write_json(self._mark(number), entry)
        self.update_manifest()
        return entry

    def finish(self) -> dict[str, Any]:
        """Mark the run complete: every shard is written. Returns the manifest."""
        return self.update_manifest(complete=True)

    def update_manifest(self, *, complete: bool = False) -> dict[str, Any]:
        """Rewrite ``manifest.json`` from the completion marks; returns it.

        Args:
            complete: Whether every shard of the run is written (see `finish`).
        """
        shards = [_read_json(mark) for mark in sorted(self.path.glob("shard-*.done.json"))]
        manifest = {
            **self.header,
            "rows": sum(shard["rows"] for shard in shards),
            "dropped": sum(len(shard["dropped"]) for shard in shards),
            "tokens": sum(shard["tokens"] for shard in shards),
            "trained_tokens": sum(shard["trained_tokens"] for shard in shards),
            "row_group_size": self.row_group_size,
            "complete": complete,
            "shards": shards,
        }
        _write_json(self.path / MANIFEST, manifest)
        return manifest


def _dataset_table(stored: PreTokenizedDataset) -> Any:
    """All stored rows of the ``datasets`` path, kept and dropped, in source order."""
    pa = _pyarrow()
    table = stored.dataset.with_format("arrow")[:]  # applies the selection of kept rows
    parts = [table.replace_schema_metadata(None).cast(arrow_schema())]
    if stored.dropped:
        empty: dict[str, list[Any]] = {
            key: [[]] * len(stored.dropped) for key in arrow_schema().names
        }
        empty.update(
            source_index=[item.index for item in stored.dropped],
            dropped_reason=[item.reason for item in stored.dropped],
            dropped_detail=[item.detail for item in stored.dropped],
        )
        parts.append(stored_table(empty))
    return pa.concat_tables(parts).sort_by("source_index")


def _tables(rows: Any, batch_rows: int) -> Iterator[Any]:
    """Arrow tables of stored rows (kept and dropped) from any supported source."""
    if isinstance(rows, PreTokenizedDataset):
        yield _dataset_table(rows)
    elif hasattr(rows, "iter_batches"):  # a ray.data.Dataset of stored rows
        yield from rows.iter_batches(batch_size=batch_rows, batch_format="pyarrow")
    else:
        yield from rows


def write_shards(
    rows: Any,
    path: str | os.PathLike[str],
    *,
    collator: BaseCollator,
    rows_per_shard: int = 1024,
    row_group_size: int = 128,
) -> dict[str, Any]:
    """Write stored rows as Parquet shards with a manifest; returns the manifest.

    Args:
        rows: A [`PreTokenizedDataset`][vlm_collate.pretokenized.PreTokenizedDataset], the
            ``ray.data.Dataset`` [`pretokenize_ray`][vlm_collate.pretokenized.pretokenize_ray]
            returns, or an iterable of Arrow tables of stored rows.
        path: The shard directory (created; earlier shards in it are replaced).
        collator: The chat collator that tokenized the rows, for the manifest.
        rows_per_shard: Source rows (kept or dropped) per shard.
        row_group_size: Rows per Parquet row group.
    """
    pa = _pyarrow()
    _positive(rows_per_shard, "rows_per_shard")
    writer = ShardWriter.open(path, collator, row_group_size=row_group_size)
    for old in [*writer.path.glob("shard-*.done.json"), *writer.path.glob("shard-*.parquet")]:
        old.unlink()
    pending: list[Any] = []
    count = number = 0
    for table in _tables(rows, rows_per_shard):
        pending.append(table if isinstance(table, pa.Table) else pa.table(table))
        count += pending[-1].num_rows
        while count >= rows_per_shard:
            whole = pa.concat_tables(pending)
            writer.write(number, whole.slice(0, rows_per_shard))
            pending, number = [whole.slice(rows_per_shard)], number + 1
            count -= rows_per_shard
    if count or number == 0:
        empty = stored_table({key: [] for key in arrow_schema().names})
        writer.write(number, pa.concat_tables([empty, *pending]))
    return writer.finish()


# -- reading ------------------------------------------------------------------------------


def _check_collator(manifest: Mapping[str, Any], collator: Any, where: str) -> None:
    if isinstance(collator, PreTokenizedCollator):
        if collator.processor is None:
            msg = (
                "the PreTokenizedCollator given to check the shards has no 'processor'; "
                "give it the processor the shards were made with"
            )
            raise ConfigurationError(msg)
        expected, keys = _processor_fields(collator.processor), _PROCESSOR_CHECKED
    elif isinstance(collator, BaseCollator):
        expected, keys = collator_fingerprint(collator), _CHECKED
    else:
        msg = (
            "'collator' must be a chat collator or a PreTokenizedCollator "
            f"(got {type(collator).__name__})"
        )
        raise ConfigurationError(msg)
    differs = _differences(expected, manifest, keys)
    if differs:
        msg = f"{where} do not match the collator ({differs})"
        raise ConfigurationError(msg)


def _flat_columns(batch: Any) -> dict[str, Any]:
    """Per column, the values of a record batch and each row's bounds in them."""
    pa = _pyarrow()
    columns: dict[str, Any] = {}
    for name in batch.schema.names:
        column = batch.column(name)
        if name in SCALAR_COLUMNS:
            columns[name] = column.to_pylist()
        elif column.type == pa.large_binary():
            buffers = column.buffers()
            offsets = np.frombuffer(buffers[1], dtype=np.int64)
            offsets = offsets[column.offset : column.offset + len(column) + 1]
            data = (
                np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] else np.zeros(0, np.uint8)
            )
            columns[name] = (
                offsets // 4 - offsets[0] // 4,
                data[offsets[0] : offsets[-1]].view(np.float32),
            )
        else:
            offsets = column.offsets.to_numpy()
            values = column.values.to_numpy(zero_copy_only=False)
            columns[name] = (offsets - offsets[0], values[offsets[0] : offsets[-1]])
    return columns


def _samples(batch: Any) -> Iterator[dict[str, torch.Tensor]]:
    """Samples of one record batch, sliced from its flat columns without a Python list per value."""
    columns = _flat_columns(batch)
    for position in range(batch.num_rows):
        row = {}
        for name, column in columns.items():
            if isinstance(column, list):
                row[name] = column[position]
            else:
                offsets, values = column
                # A copy: Arrow buffers are read-only, and torch wants to own its tensors.
                row[name] = values[offsets[position] : offsets[position + 1]].copy()
        yield sample_from_row(row)


def _check_schemas(directory: pathlib.Path, shards: Sequence[Mapping[str, Any]]) -> None:
    """Refuse any shard whose columns are not the stored-row columns (read from its footer)."""
    pa = _pyarrow()
    expected = shard_schema()
    for shard in shards:
        schema = pa.parquet.read_schema(directory / shard["file"])
        if not schema.remove_metadata().equals(expected):
            msg = (
                f"shard {shard['file']!r} does not have the stored-row columns "
                f"(expected {expected.names}, got {schema.names} with types "
                f"{[str(field.type) for field in schema]})"
            )
            raise ConfigurationError(msg)


@attrs.frozen(kw_only=True)
class ParquetShards(torch.utils.data.IterableDataset[dict[str, torch.Tensor]]):
    """Pre-tokenized samples streamed from Parquet shards, one row group at a time.

    An iterable torch dataset: iterating yields the mappings
    [`PreTokenizedCollator`][vlm_collate.PreTokenizedCollator] and
    [`pack`][vlm_collate.pretokenized.pack] take, in shard order. In a
    ``DataLoader`` with workers, each worker reads every ``num_workers``-th
    shard; ``rank`` and ``world_size`` split the shards across training
    processes the same way.

    Args:
        path: The shard directory.
        manifest: Its manifest.
        rank: This process's share of the shards (0-based).
        world_size: How many processes share them.
    """

    path: pathlib.Path
    manifest: Mapping[str, Any] = attrs.field(repr=False)
    rank: int = 0
    world_size: int = 1

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        collator: Any,
        rank: int = 0,
        world_size: int = 1,
        allow_incomplete: bool = False,
    ) -> ParquetShards:
        """Open a shard directory, refusing it if it was made for another collator.

        Args:
            path: The directory [`ShardWriter`][vlm_collate.ShardWriter] or
                [`write_shards`][vlm_collate.write_shards] wrote.
            collator: The collator that will read the rows: a chat collator
                (its class, processor, tokenizer and label policy must match) or a
                [`PreTokenizedCollator`][vlm_collate.PreTokenizedCollator] with the processor
                (its vocabulary size and tokenizer hash must match).
            rank: This process's share of the shards.
            world_size: How many processes share them.
            allow_incomplete: Read the complete shards of an unfinished run
                instead of refusing it.
        """
        _pyarrow()
        directory = pathlib.Path(path)
        manifest = _read_json(directory / MANIFEST)
        if manifest.get("format") != FORMAT:
            found = manifest.get("format")
            msg = f"{str(directory)!r} is not a shard directory (manifest format {found!r})"
            raise ConfigurationError(msg)
        _check_collator(manifest, collator, f"the shards in {str(directory)!r}")
        if not allow_incomplete and not manifest.get("complete"):
            msg = (
                f"{str(directory)!r} holds an unfinished run (its manifest is not complete); "
                "resume the run, or pass allow_incomplete=True to read its complete shards"
            )
            raise ConfigurationError(msg)
        _check_schemas(directory, manifest.get("shards") or [])
        return cls(path=directory, manifest=manifest, rank=rank, world_size=world_size)

    def _my_shards(self) -> list[str]:
        files = [shard["file"] for shard in self.manifest["shards"] if shard.get("complete")]
        share = files[self.rank :: self.world_size]
        worker = torch.utils.data.get_worker_info()
        return share if worker is None else share[worker.id :: worker.num_workers]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        pa = _pyarrow()
        for name in self._my_shards():
            handle = pa.parquet.ParquetFile(self.path / name)
            for batch in handle.iter_batches(batch_size=self.manifest["row_group_size"]):
                yield from _samples(batch)

    def __len__(self) -> int:
        return int(self.manifest["rows"])

    @property
    def dropped(self) -> list[DroppedSample]:
        """Source rows a policy dropped, with their row id, reason and detail."""
        return [
            DroppedSample(int(item["index"]), item["reason"], item["detail"])
            for shard in self.manifest["shards"]
            for item in shard["dropped"]
        ]

    @property
    def source_indices(self) -> list[int]:
        """Source row of each kept sample, in reading order."""
        return [index for indices in self._column("source_index") for index in indices]

    def lengths(self) -> list[int]:
        """Tokens of each kept sample, in reading order, read from one column only."""
        import pyarrow.compute as pc

        return [
            length
            for chunk in self._column("input_ids", transform=pc.list_value_length)
            for length in chunk
        ]

    def _column(self, name: str, transform: Any = None) -> Iterable[list[int]]:
        pa = _pyarrow()
        for file in self._my_shards():
            column = pa.parquet.read_table(self.path / file, columns=[name])[name]
            yield (transform(column) if transform else column).to_pylist()
