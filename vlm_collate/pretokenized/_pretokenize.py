"""Pre-tokenize a Hugging Face ``datasets.Dataset`` with any chat collator.

[`pretokenize`][vlm_collate.pretokenize] runs the template, hook and label steps of a collator on
every row with ``Dataset.map`` (in ``num_proc`` processes if asked) and keeps,
per sample, the unpadded token rows and the media tensors. The result is a
sequence of samples for [`PreTokenizedCollator`][vlm_collate.PreTokenizedCollator] or for
[`vlm_collate.pretokenized.pack`][vlm_collate.pack]; samples a policy dropped are listed in its
``dropped`` report, with their row index in the source dataset.

Arrow stores every row with one schema, so each tensor is stored flat next to
its shape (``pixel_values`` and ``pixel_values_shape``); a key the sample does
not have is stored empty. Token keys are stored as int64, ``loss_weights`` (from
a collator whose label policy asks for them) as float32.
[`sample_from_row`][vlm_collate.pretokenized.sample_from_row]
turns a stored row back into the mapping of tensors the collators take.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import torch

from .._deps import require
from .._report import DroppedSample
from ..errors import (
    BatchError,
    SampleError,
    SampleTypeError,
    relocated,
)
from ..formats import RowFormat, get_format
from ..media import CONCATENATED_KEYS, PIXEL_KEYS, MediaAccess
from ._validate import OPTIONAL_TOKEN_KEYS, REQUIRED_TOKEN_KEYS, WEIGHTS_KEY

__all__ = ["PreTokenizedDataset", "pretokenize", "sample_from_row"]

TOKEN_KEYS = (*REQUIRED_TOKEN_KEYS, *OPTIONAL_TOKEN_KEYS)
STORED_MEDIA_KEYS = (*PIXEL_KEYS, *CONCATENATED_KEYS)
_SHAPE = "_shape"
# Pixels (and seconds per grid) are stored as float32, every other media entry as int64.
_DTYPES = {
    key: np.float32 if key in PIXEL_KEYS or key == "second_per_grid_ts" else np.int64
    for key in STORED_MEDIA_KEYS
}


def _datasets() -> Any:
    return require("datasets", "pretokenize needs the 'datasets' package: pip install datasets")


def stored_columns() -> dict[str, str]:
    """Every stored column and its Arrow element type: ``"int64"``, ``"float32"`` or ``"string"``.

    A column of tensor data holds a list of that type; ``source_index`` is a
    scalar int64 and the ``dropped_*`` columns are scalar strings. Both the
    ``datasets`` path and the Parquet shards write exactly these columns.
    """
    columns = {key: "int64" for key in TOKEN_KEYS}
    columns[WEIGHTS_KEY] = "float32"
    for key in STORED_MEDIA_KEYS:
        columns[key] = np.dtype(_DTYPES[key]).name
        columns[key + _SHAPE] = "int64"
    columns.update(source_index="int64", dropped_reason="string", dropped_detail="string")
    return columns


SCALAR_COLUMNS = ("source_index", "dropped_reason", "dropped_detail")


def _features() -> Any:
    datasets = _datasets()
    return datasets.Features(
        {
            key: datasets.Value(kind)
            if key in SCALAR_COLUMNS
            else datasets.Sequence(datasets.Value(kind))
            for key, kind in stored_columns().items()
        }
    )


def _decode_image(value: Any) -> Any:
    """Arrow keeps an undeclared image as ``{"bytes", "path"}``.

    Bytes stay a ``{"bytes"}`` mapping, which the collator's media reader
    checks (size, pixels from the header, truncation) before decoding.
    """
    if isinstance(value, Mapping) and ("bytes" in value or "path" in value):
        if value.get("bytes") is not None:
            return {"bytes": value["bytes"]}
        return value.get("path")
    return value


def _conversation_of(example: Mapping[str, Any]) -> dict[str, Any]:
    """Undo Arrow's struct filling: drop None fields, decode images, fill placeholders."""
    images = list(example.get("images") or [])
    messages = []
    for message in example["conversation"]:
        content = message.get("content")
        if isinstance(content, list):
            items = []
            for item in content:
                item = {key: value for key, value in item.items() if value is not None}
                if item.get("type") == "image":
                    if "image" not in item and images:
                        item["image"] = images.pop(0)
                    if "image" in item:
                        item["image"] = _decode_image(item["image"])
                items.append(item)
            content = items
        messages.append({**{k: v for k, v in message.items() if v is not None}, "content": content})
    return {**{k: v for k, v in example.items() if k != "images"}, "conversation": messages}


def _stored(value: Any, key: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(value, (list, tuple)):
        shapes = {tuple(item.shape[1:]) for item in value}
        if len(shapes) != 1:
            msg = f"'{key}' holds tensors of different shapes, which pretokenize cannot store"
            raise SampleTypeError(msg, sample_index=index)
        value = torch.cat(list(value), dim=0)
    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    tensor = tensor.float() if _DTYPES[key] is np.float32 else tensor.long()
    return tensor.reshape(-1).numpy(), np.asarray(tensor.shape, dtype=np.int64)


def stored_row(
    collator: Any, example: Mapping[str, Any], index: int, row_format: RowFormat
) -> dict[str, Any]:
    """Tokenize one source row with ``collator`` into a stored row (a dropped one says why)."""
    from ._collator import pretokenize_sample

    no_ints = np.zeros(0, dtype=np.int64)
    row: dict[str, Any] = {key: no_ints for key in TOKEN_KEYS}
    row[WEIGHTS_KEY] = np.zeros(0, dtype=np.float32)
    for key in STORED_MEDIA_KEYS:
        row[key], row[key + _SHAPE] = np.zeros(0, dtype=_DTYPES[key]), no_ints
    row.update(source_index=index, dropped_reason="", dropped_detail="")
    conversation = _conversation_of(row_format.convert(example, index))
    try:
        sample = pretokenize_sample(collator, conversation)
    except SampleError as error:
        # The collator saw a batch of one; name the row of the dataset instead.
        raise relocated(error, index) from error
    except BatchError:
        # A policy dropped the sample; run it once more to read why from the report.
        single = attrs.evolve(collator, shift_labels=False)
        try:
            single([conversation])
        except BatchError:
            pass
        dropped = single.last_report.dropped if single.last_report else []
        if not dropped:
            raise
        row.update(dropped_reason=dropped[0].reason, dropped_detail=dropped[0].detail)
        return row
    for key in TOKEN_KEYS:
        if key in sample:
            row[key] = sample[key].long().numpy()
    if sample.get(WEIGHTS_KEY) is not None:
        row[WEIGHTS_KEY] = sample[WEIGHTS_KEY].float().numpy()
    for key in STORED_MEDIA_KEYS:
        if sample.get(key) is not None:
            row[key], row[key + _SHAPE] = _stored(sample[key], key, index)
    return row


def stored_rows(
    collator: Any,
    batch: Mapping[str, Sequence[Any]],
    indices: Sequence[int],
    row_format: RowFormat | None = None,
) -> dict[str, list[Any]]:
    """Stored rows, column by column, of a batch of source rows (``{column: values}``).

    ``indices`` are the rows' positions in the source dataset; every engine
    (``Dataset.map``, Ray Data) builds its rows here, so they are the same.
    Rows are converted from ``row_format`` (None: the collator's ``format``)
    once, here; the collator then sees the library's own samples.
    """
    if row_format is None:
        row_format = collator.format
        collator = attrs.evolve(collator, format="conversation")
    rows = [
        stored_row(
            collator, {key: values[position] for key, values in batch.items()}, index, row_format
        )
        for position, index in enumerate(indices)
    ]
    return {key: [row[key] for row in rows] for key in stored_columns()}


def _map_batch(
    batch: Mapping[str, list[Any]],
    indices: list[int],
    rank: int | None,
    *,
    collator: Any,
    row_format: RowFormat,
) -> dict[str, Any]:
    if rank is not None and torch.get_num_threads() != 1:
        # A forked worker must not reuse the parent's OpenMP pool (it can deadlock),
        # and num_proc workers with one thread each do not oversubscribe the cores.
        torch.set_num_threads(1)
    return stored_rows(collator, batch, indices, row_format)


def sample_from_row(row: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Turn one stored row of [`pretokenize`][vlm_collate.pretokenize] back into a pre-tokenized
    sample.

    Token keys come back as int64 tensors and ``loss_weights`` as float32; a
    key stored empty (the sample had none) is left out.
    """
    sample = {key: torch.as_tensor(np.asarray(row[key]), dtype=torch.long) for key in TOKEN_KEYS}
    if WEIGHTS_KEY in row:  # rows stored before loss weights were kept have no such column
        sample[WEIGHTS_KEY] = torch.as_tensor(np.asarray(row[WEIGHTS_KEY]), dtype=torch.float32)
    length = sample["input_ids"].shape[0]
    for key in (*OPTIONAL_TOKEN_KEYS, WEIGHTS_KEY):
        if key in sample and sample[key].shape[0] != length:  # stored empty: the sample has none
            del sample[key]
    for key in STORED_MEDIA_KEYS:
        shape = [int(size) for size in np.asarray(row[key + _SHAPE]).tolist()]
        if shape:
            values = torch.as_tensor(np.asarray(row[key]))
            sample[key] = values.reshape(shape)
    return sample


@attrs.frozen
class PreTokenizedDataset(Sequence[Any]):
    """Pre-tokenized samples backed by a ``datasets.Dataset``, and the samples dropped on the way.

    It is a sequence (and so a map-style torch dataset): item ``i`` is the
    mapping of tensors [`PreTokenizedCollator`][vlm_collate.PreTokenizedCollator] takes.

    Args:
        dataset: The stored rows of the kept samples (flat tensors, shapes, ``source_index``).
        dropped: Samples a policy dropped; ``index`` is the row of the source dataset.
    """

    dataset: Any
    dropped: list[DroppedSample] = attrs.Factory(list)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[position] for position in range(*index.indices(len(self)))]
        return sample_from_row(self.dataset.with_format("numpy")[index])

    @property
    def source_indices(self) -> list[int]:
        """Row of the source dataset each kept sample came from."""
        return list(self.dataset["source_index"])

    @staticmethod
    def from_parquet(path: Any, *, collator: Any, **options: Any) -> Any:
        """Stream shards written by [`write_shards`][vlm_collate.pretokenized.write_shards].

        The same as `open>`.
        """
        from ._shards import ParquetShards

        return ParquetShards.open(path, collator=collator, **options)


def _map_fingerprint(dataset: Any, collator: Any, batch_size: int) -> str | None:
    """A cache key for ``Dataset.map`` from what decides the rows.

    Without it ``datasets`` hashes the whole collator, processor included,
    with dill: seconds per call for a large vocabulary.
    """
    source = getattr(dataset, "_fingerprint", None)
    if source is None:
        return None
    from .. import __version__
    from ._shards import collator_fingerprint

    processor = collator.processor
    described = {
        "source": source,
        "collator": collator_fingerprint(collator),
        "processor": processor.to_json_string() if hasattr(processor, "to_json_string") else "",
        "batch_size": batch_size,
        "version": __version__,
    }
    encoded = json.dumps(described, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()[:32]


def pretokenize(
    dataset: Any,
    collator: Any,
    *,
    format: str | RowFormat | None = None,
    num_proc: int | None = None,
    batch_size: int = 16,
    media_access: Any = None,
) -> PreTokenizedDataset:
    """Tokenize every row of ``dataset`` with ``collator`` ahead of training.

    A collator built with ``LabelPolicy(loss_weights=True)`` stores each
    sample's per-token ``loss_weights`` too (float32, unshifted like labels).
    Rows hold a ``"conversation"`` as the chat collators take it (or any
    format given by ``format``). Images may be
    PIL images (the ``datasets.Image`` feature), paths, or placeholders
    ``{"type": "image"}`` filled in order from an ``"images"`` column. Errors
    raised by a policy set to ``"raise"`` propagate, naming the dataset row
    (``"sample 41, message 1: ..."``); samples dropped by a policy set to
    ``"drop"`` are reported in ``result.dropped``.

    Args:
        dataset: A ``datasets.Dataset``.
        collator: Any chat collator (a [`BaseCollator`][vlm_collate.BaseCollator]); it is
            pickled into the worker processes when ``num_proc > 1``.
        num_proc: Processes for ``Dataset.map``; None works in this process.
            Each worker process runs torch with one thread.
        batch_size: Rows handed to each ``map`` call.
        media_access: A [`MediaAccess`][vlm_collate.MediaAccess] (or a mapping of its
            options) replacing the collator's own media policy; None keeps it.
        format: The rows' format (see `vlm_collate.formats`), for
            example ``"sharegpt"`` or ``"auto"``; None uses the collator's
            ``format``.
    """
    if media_access is not None:
        collator = attrs.evolve(collator, media_access=MediaAccess.coerce(media_access))
    row_format = collator.format if format is None else get_format(format)
    # Rows are converted once, here; the collator then sees the library's own samples.
    collator = attrs.evolve(collator, format="conversation")
    stored = dataset.map(
        _map_batch,
        new_fingerprint=_map_fingerprint(dataset, collator, batch_size),
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        with_rank=True,
        num_proc=num_proc,
        fn_kwargs={"collator": collator, "row_format": row_format},
        remove_columns=list(dataset.column_names),
        features=_features(),
        desc="pre-tokenizing",
    )
    reasons = stored["dropped_reason"]
    dropped_rows = [position for position, reason in enumerate(reasons) if reason]
    dropped = [
        DroppedSample(int(row["source_index"]), row["dropped_reason"], row["dropped_detail"])
        for row in (stored[position] for position in dropped_rows)
    ]
    if dropped_rows:
        kept = sorted(set(range(len(stored))) - set(dropped_rows))
        stored = stored.select(kept)
    return PreTokenizedDataset(stored, dropped)
