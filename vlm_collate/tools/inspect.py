"""Seeing what a collator trains on: the engine behind ``vlm-collate inspect``.

[`load_records`][vlm_collate.tools.inspect.load_records] reads and converts the rows of a dataset
file
([`load_jsonl`][vlm_collate.tools.inspect.load_jsonl] reads a JSONL file of own-format samples),
[`inspect_samples`][vlm_collate.tools.inspect.inspect_samples]
collates it batch by batch and records, for every token of every row, whether
it is prompt, trained, media placeholder or padding;
[`render_text`][vlm_collate.tools.inspect.render_text] and
[`render_html`][vlm_collate.tools.inspect.render_html] turn that record into a terminal view or a
standalone HTML
page. The renderers are pure functions of an [`Inspection`][vlm_collate.tools.inspect.Inspection].

Labels are mapped back onto the tokens they train. Every view describes the
rows as they are before the label shift (the collator is run with
``shift_labels=False``; the shift only drops a column afterwards), so a
sample's token count is the same in every batch, view and setting: a
pre-shifted batch stores the target of token ``t`` at ``labels[t - 1]`` and
holds one column fewer of ``input_ids``.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, cast

import attrs
import torch

from .._pipeline import BaseCollator
from .._report import CollateReport, DroppedSample
from ..errors import (
    BatchError,
    ConfigurationError,
    SampleError,
    VLMCollateError,
    relocated,
)
from ..formats import RowFormat, get_format
from ..labels import IGNORE_INDEX
from ..media import is_remote, media_token_ids
from .datafiles import RawRow, media_base, read_rows
from .media_view import MediaView, media_views
from .terminal import visible

__all__ = [
    "BatchView",
    "Inspection",
    "MediaView",
    "Record",
    "SampleView",
    "Segment",
    "TokenRow",
    "captured_logs",
    "describe_row",
    "inspect_samples",
    "load_jsonl",
    "load_records",
    "refused_rows",
    "render_html",
    "render_text",
]

Kind = Literal["prompt", "trained", "media", "padding"]

_MEDIA_KEYS = {kind: (kind, "path", "url") for kind in ("image", "video", "audio")}
# base.py logs every dropped sample with this format; the report already shows them.
_DROPPED_LOG_FORMAT = "dropped sample %d (%s): %s"
# The DroppedSample reason of a row that could not be read, converted or collated.
REFUSED = "refused"
# Batch-level log notes about a per-message key, attached to the samples using it.
_MESSAGE_KEY_NOTES = ("weight", "train")


# -- data model ---------------------------------------------------------------


@attrs.frozen
class Record:
    """One sample read from a JSONL file.

    Args:
        index: Position of the sample in the file (0-based, blank lines skipped).
        line: Line number in the file (1-based); None for files without lines (Parquet).
        example: The sample, converted to the library's format, media paths
            resolved against the file's directory.
        error: Why the row could not be read or converted (``example`` is then empty).
    """

    index: int
    line: int | None
    example: Mapping[str, Any] = attrs.field(repr=False, factory=dict)
    error: str | None = None

    @property
    def name(self) -> str | None:
        """The sample's ``"id"``, if it has one."""
        value = self.example.get("id") if isinstance(self.example, Mapping) else None
        return str(value) if isinstance(value, (str, int)) else None

    @property
    def where(self) -> str:
        """``"line 7"``, or ``"row 6"`` for files without lines."""
        return f"line {self.line}" if self.line is not None else f"row {self.index}"


@attrs.frozen
class Segment:
    """A run of tokens of one kind, as text.

    Args:
        kind: ``"prompt"``, ``"trained"``, ``"media"`` or ``"padding"``.
        text: The decoded text; for ``repeat > 1``, one token's text.
        repeat: How many times the token ``text`` repeats (collapsed runs).
        weight: The loss weight of a trained run, when the batch has ``loss_weights``.
    """

    kind: Kind
    text: str
    repeat: int = 1
    weight: float | None = None


@attrs.frozen
class TokenRow:
    """Every token of one row, for the per-token view.

    Args:
        ids: The row's token ids before the label shift (padding included).
        targets: ``targets[t]`` is the label that trains ``ids[t]`` (``IGNORE_INDEX`` if none).
        kinds: One letter per token: ``p`` prompt, ``t`` trained, ``m`` media, ``d`` padding.
        pieces: Each token's text.
        weights: Each token's loss weight, when the batch has ``loss_weights``.
        media_slots: For each token, the index in the sample's media it stands for, or -1.
    """

    ids: tuple[int, ...]
    targets: tuple[int, ...]
    kinds: str
    pieces: tuple[str, ...]
    weights: tuple[float, ...] | None = None
    media_slots: tuple[int, ...] = ()


@attrs.frozen
class SampleView:
    """What became of one sample: its row's tokens, counts and warnings."""

    index: int
    line: int | None
    name: str | None
    segments: tuple[Segment, ...] = ()
    tokens: int = 0
    trained: int = 0
    padding: int = 0
    media: tuple[tuple[str, int], ...] = ()
    truncated: bool = False
    dropped: DroppedSample | None = None
    warnings: tuple[str, ...] = ()
    detail: TokenRow | None = attrs.field(default=None, repr=False, eq=False)
    media_items: tuple[MediaView, ...] = attrs.field(default=(), repr=False, eq=False)


@attrs.frozen
class BatchView:
    """One collated batch: which samples it held, its shape, and loose notes."""

    number: int
    indices: tuple[int, ...]
    shape: tuple[int, ...] | None
    notes: tuple[str, ...] = ()
    shifted: bool = False  # ``shape`` is before the shift; the batch has one column fewer


@attrs.frozen
class Inspection:
    """Everything the renderers show."""

    source: str
    processor: str
    collator: str
    options: Mapping[str, Any]
    samples: tuple[SampleView, ...]
    batches: tuple[BatchView, ...]
    notes: tuple[str, ...] = ()

    @property
    def shift_labels(self) -> bool:
        return bool(self.options.get("shift_labels", True))

    def summary(self) -> dict[str, int]:
        """Counts for the summary line, by name."""
        kept = [view for view in self.samples if view.dropped is None]
        return {
            "samples": len(self.samples),
            "kept": len(kept),
            "dropped": len(self.samples) - len(kept),
            "truncated": sum(view.truncated for view in kept),
            "tokens": sum(view.tokens for view in kept),
            "trained": sum(view.trained for view in kept),
            "warnings": sum(len(view.warnings) for view in self.samples)
            + sum(len(batch.notes) for batch in self.batches),
        }


# -- reading data -------------------------------------------------------------


def load_jsonl(path: str | os.PathLike[str], *, limit: int | None = None) -> list[Record]:
    """Read chat samples from a JSONL file, one JSON object per line.

    Relative image, video and audio paths are resolved against the file's
    directory; blank lines are skipped. The first unreadable line raises.

    Args:
        path: The JSONL file.
        limit: Read at most this many samples.
    """
    records = load_records(path, limit=limit, format="conversation")
    for record in records:
        if record.error is not None:
            msg = f"{path}, {record.error}"
            raise SampleError(msg)
    return records


def load_records(
    path: str | os.PathLike[str],
    *,
    limit: int | None = None,
    format: str | RowFormat = "auto",
) -> list[Record]:
    """Read and convert the rows of a data file; rows that fail carry their ``error``.

    Reads JSONL, a JSON array, Parquet, a saved ``datasets`` folder or a loading
    script (see `vlm_collate.tools.datafiles`); each row is
    converted from
    ``format`` to the library's own sample and its relative media paths are
    resolved against the data file's folder.

    Raises:
        ConfigurationError: The file itself cannot be read.
        SampleError: The file holds no rows.
    """
    path = pathlib.Path(path)
    row_format = get_format(format)
    base = media_base(path)
    records = [_record(row, row_format, base) for row in read_rows(path, limit=limit)]
    if not records:
        msg = f"{path}: the file holds no samples."
        raise SampleError(msg)
    return records


def _record(row: RawRow, row_format: RowFormat, base: pathlib.Path) -> Record:
    if row.error is not None:
        return Record(index=row.index, line=row.line, error=row.error)
    if not isinstance(row.value, dict):
        error = f"{row.where}: expected a JSON object (got {type(row.value).__name__})"
        return Record(index=row.index, line=row.line, error=error)
    try:
        example = row_format.convert(row.value, row.index)
    except VLMCollateError as exc:
        return Record(index=row.index, line=row.line, error=f"{exc} ({row.where})")
    return Record(index=row.index, line=row.line, example=_resolve_media(example, base))


def _resolve_media(example: dict[str, Any], base: pathlib.Path) -> dict[str, Any]:
    """Return a copy of ``example`` whose relative media paths start at ``base``."""
    conversation = example.get("conversation")
    if not isinstance(conversation, list):
        return example  # the collator reports the malformed sample with its position
    messages = []
    for message in conversation:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            message = {**message, "content": [_resolve_item(item, base) for item in content]}
        messages.append(message)
    return {**example, "conversation": messages}


def _resolve_item(item: Any, base: pathlib.Path) -> Any:
    kind = item.get("type") if isinstance(item, dict) else None
    if kind not in _MEDIA_KEYS:
        return item
    resolved = dict(item)
    for key in _MEDIA_KEYS[kind]:
        value = item.get(key)
        if (
            isinstance(value, str)
            and value
            and not is_remote(value)
            and not value.startswith("file:")
        ):
            resolved[key] = str(base / value)  # an absolute value stays as it is
    return resolved


# -- collating and analysing ----------------------------------------------------


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def captured_logs() -> Iterator[list[logging.LogRecord]]:
    """Collect this package's warnings instead of printing them; yields the list."""
    package_logger = logging.getLogger("vlm_collate")
    handler = _ListHandler()
    propagate = package_logger.propagate
    package_logger.addHandler(handler)
    package_logger.propagate = False
    try:
        yield handler.records
    finally:
        package_logger.removeHandler(handler)
        package_logger.propagate = propagate


def inspect_samples(
    collator: BaseCollator,
    records: Sequence[Record],
    *,
    batch_size: int = 4,
    source: str = "",
    processor: str = "",
    notes: Sequence[str] = (),
    keep_going: bool = True,
) -> Inspection:
    """Collate ``records`` in batches of ``batch_size`` and describe every row.

    With ``keep_going`` (the default), a row that cannot be read, converted or
    collated is shown as refused, with its error placed in the file, and the
    other rows of its batch are collated without it. Otherwise the first
    [`VLMCollateError`][vlm_collate.VLMCollateError] is raised again with the sample's
    position in the file (index and line) instead of its position in the batch.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        msg = f"'batch_size' must be a positive int (got {batch_size!r})."
        raise ConfigurationError(msg)
    views: list[SampleView] = []
    batches: list[BatchView] = []
    # The shift only drops a column after padding: viewing the unshifted rows
    # shows every token, and the same counts whatever the setting.
    viewer = attrs.evolve(collator, shift_labels=False) if collator.shift_labels else collator
    for number, start in enumerate(range(0, len(records), batch_size)):
        chunk = list(records[start : start + batch_size])
        batch_views, batch_view = _inspect_chunk(viewer, chunk, number, keep_going=keep_going)
        views.extend(batch_views)
        batches.append(batch_view)
    if collator.shift_labels:
        batches = [attrs.evolve(view, shifted=True) for view in batches]
    options = {
        "max_length": collator.max_length,
        "shift_labels": collator.shift_labels,
        "empty_labels": collator.empty_labels,
        "special_tokens_in_text": collator.special_tokens_in_text,
        "overlong": collator.overlong,
        "batch_size": batch_size,
    }
    options.update(_policy_options(collator))
    return Inspection(
        source=source,
        processor=processor or type(collator.processor).__name__,
        collator=type(collator).__name__,
        options=options,
        samples=tuple(views),
        batches=tuple(batches),
        notes=tuple(notes),
    )


def _policy_options(collator: BaseCollator) -> dict[str, Any]:
    """The label policy's settings that differ from the default, for the settings line."""
    policy = getattr(collator, "label_policy", None)
    if policy is None:
        return {}
    shown = {}
    default = type(policy)()
    for name in ("turns", "roles", "train_on_end_of_turn", "reasoning", "loss_weights"):
        value = getattr(policy, name)
        if value != getattr(default, name):
            if name == "roles":
                value = ",".join(sorted(value))
            elif callable(value):
                value = getattr(value, "__name__", "callable")
            shown[name] = value
    return shown


def refused_rows(inspection: Inspection) -> list[str]:
    """The one-line error of every refused row, in file order."""
    return [
        view.dropped.detail
        for view in inspection.samples
        if view.dropped is not None and view.dropped.reason == REFUSED
    ]


def _refused(record: Record, detail: str) -> SampleView:
    return SampleView(
        index=record.index,
        line=record.line,
        name=record.name,
        dropped=DroppedSample(record.index, REFUSED, detail),
    )


def _inspect_chunk(
    collator: BaseCollator, chunk: list[Record], number: int, *, keep_going: bool
) -> tuple[list[SampleView], BatchView]:
    """Describe one batch of records; with ``keep_going``, bad rows are refused, not raised."""
    refused = {}
    for record in chunk:
        if record.error is not None:
            if not keep_going:
                raise SampleError(record.error)
            refused[record.index] = _refused(record, record.error)
    good = [record for record in chunk if record.index not in refused]
    try:
        views, batch_view = _inspect_batch(collator, good, number) if good else ([], None)
    except VLMCollateError as exc:
        if not keep_going:
            raise
        if len(good) == 1:
            refused[good[0].index] = _refused(good[0], " ".join(str(exc).split()))
        for record in good if len(good) > 1 else ():
            try:
                _inspect_batch(collator, [record], number)
            except VLMCollateError as exc:
                refused[record.index] = _refused(record, " ".join(str(exc).split()))
        good = [record for record in good if record.index not in refused]
        views, batch_view = _inspect_batch(collator, good, number) if good else ([], None)
    if batch_view is None:
        batch_view = BatchView(number=number, indices=(), shape=None)
    by_index = {view.index: view for view in [*views, *refused.values()]}
    indices = tuple(record.index for record in chunk)
    ordered = [by_index[index] for index in indices]
    return ordered, attrs.evolve(batch_view, indices=indices)


def _inspect_batch(
    collator: BaseCollator, chunk: list[Record], number: int
) -> tuple[list[SampleView], BatchView]:
    indices = tuple(record.index for record in chunk)
    with captured_logs() as logged:
        try:
            batch = collator([record.example for record in chunk])
        except BatchError as exc:
            if not _all_dropped(collator.last_report, len(chunk)):
                raise _located(exc, chunk) from exc
            batch = None
        except VLMCollateError as exc:
            raise _located(exc, chunk) from exc
        report = collator.last_report
    if report is None:  # a collator call, raising or not, records its report
        raise AssertionError("the collator recorded no report")  # pragma: no cover
    warnings = _warnings_by_sample(report, chunk)
    notes = tuple(_attach_notes(_loose_notes(logged, report), chunk, warnings))
    views = _row_views(collator, batch, report, chunk, warnings)
    shape = tuple(batch["input_ids"].shape) if batch is not None else None
    return views, BatchView(number=number, indices=indices, shape=shape, notes=notes)


def _all_dropped(report: CollateReport | None, batch_size: int) -> bool:
    """Whether the failed call's report shows every sample of the batch dropped."""
    if report is None:
        return False
    return {item.index for item in report.dropped} == set(range(batch_size))


def _located(exc: VLMCollateError, chunk: Sequence[Record]) -> VLMCollateError:
    """The same error, placed in the file instead of in the batch."""
    local = getattr(exc, "sample_index", None)
    if isinstance(exc, SampleError) and isinstance(local, int) and 0 <= local < len(chunk):
        record = chunk[local]
        return relocated(exc, record.index, f"{exc.detail} ({record.where})")
    first, last = chunk[0], chunk[-1]
    where = (
        f"batch of samples {first.index}-{last.index} ({first.where} to {last.where}; "
        "sample numbers after this count from 0 within the batch)"
    )
    return type(exc)(f"{where}: {exc}")


def _warnings_by_sample(report: CollateReport, chunk: Sequence[Record]) -> dict[int, list[str]]:
    warnings: dict[int, list[str]] = collections.defaultdict(list)
    for warning in report.warnings:
        warnings[chunk[warning.index].index].append(warning.detail)
    return warnings


def _loose_notes(logged: list[logging.LogRecord], report: CollateReport) -> Iterator[str]:
    """Warnings that belong to no sample (for example a fallback label strategy)."""
    known = {str(warning) for warning in report.warnings}
    for record in logged:
        if record.msg == _DROPPED_LOG_FORMAT:
            continue
        text = record.getMessage()
        if text not in known:
            known.add(text)
            yield text


def _attach_notes(
    notes: Iterator[str], chunk: Sequence[Record], warnings: dict[int, list[str]]
) -> Iterator[str]:
    """Give a note about message keys to the samples holding them; yield the rest."""
    for note in notes:
        key = next((key for key in _MESSAGE_KEY_NOTES if f"'{key}' keys" in note), None)
        owners = [record for record in chunk if key is not None and _has_message_key(record, key)]
        if not owners:
            yield note
        for record in owners:
            warnings[record.index].append(note)


def _has_message_key(record: Record, key: str) -> bool:
    conversation = record.example.get("conversation")
    messages = conversation if isinstance(conversation, list) else ()
    return any(isinstance(message, dict) and key in message for message in messages)


def _row_views(
    collator: BaseCollator,
    batch: Mapping[str, Any] | None,
    report: CollateReport,
    chunk: Sequence[Record],
    warnings: Mapping[int, list[str]],
) -> list[SampleView]:
    rows = {local: row for row, local in enumerate(report.kept)}
    truncated = set(report.truncated)
    dropped = {item.index: item for item in report.dropped}
    media_ids = media_token_ids(collator.processor)
    views = []
    for local, record in enumerate(chunk):
        extra = tuple(warnings.get(record.index, ()))
        if batch is None or local not in rows:
            reason = dropped.get(local)
            reason = attrs.evolve(reason, index=record.index) if reason is not None else None
            views.append(
                SampleView(
                    index=record.index,
                    line=record.line,
                    name=record.name,
                    dropped=reason,
                    warnings=extra,
                )
            )
            continue
        row = describe_row(
            batch, rows[local], collator.tokenizer, media_ids, shifted=collator.shift_labels
        )
        media = media_views(record.example, _row_grids(batch, rows[local]), collator.processor)
        views.append(
            attrs.evolve(
                row,
                index=record.index,
                line=record.line,
                name=record.name,
                truncated=local in truncated,
                warnings=extra + row.warnings,
                detail=_with_media_slots(row.detail, media, collator.processor),
                media_items=media,
            )
        )
    return views


def _row_grids(batch: Mapping[str, Any], row: int) -> dict[str, list[list[int]]]:
    """This row's ``image_grid_thw`` / ``video_grid_thw`` entries, by media kind."""
    grids = {}
    for kind in ("image", "video"):
        grid = batch.get(f"{kind}_grid_thw")
        counts = batch.get(f"n_{kind}s_per_sample")
        if not isinstance(grid, torch.Tensor) or not isinstance(counts, torch.Tensor):
            continue
        start = int(counts[:row].sum())
        grids[kind] = grid[start : start + int(counts[row])].tolist()
    return grids


def _with_media_slots(
    detail: TokenRow | None, media: Sequence[MediaView], processor: Any
) -> TokenRow | None:
    """Point each placeholder run at the image or video it stands for, when runs match items."""
    if detail is None or not media:
        return detail
    slots = [-1] * len(detail.ids)
    tokenizer = getattr(processor, "tokenizer", processor)
    for kind in ("image", "video"):
        token = getattr(processor, f"{kind}_token", None)
        token_id = tokenizer.convert_tokens_to_ids(token) if isinstance(token, str) else None
        items = [position for position, view in enumerate(media) if view.kind == kind]
        starts = [
            t
            for t, value in enumerate(detail.ids)
            if value == token_id and (t == 0 or detail.ids[t - 1] != token_id)
        ]
        if token_id is None or len(starts) != len(items):
            continue
        for start, item in zip(starts, items, strict=True):
            end = start
            while end < len(detail.ids) and detail.ids[end] == token_id:
                slots[end] = item
                end += 1
    return attrs.evolve(detail, media_slots=tuple(slots))


def describe_row(
    batch: Mapping[str, Any], row: int, tokenizer: Any, media_ids: frozenset[int], *, shifted: bool
) -> SampleView:
    """Describe one row of a collated batch; index, line and name are left at 0/None."""
    ids, real, targets = _aligned_row(batch, row, shifted=shifted)
    weights = _aligned_weights(batch, row, len(ids), shifted=shifted)
    kinds: list[Kind] = []
    for token, is_real, target in zip(ids, real, targets, strict=True):
        if target != IGNORE_INDEX:
            kinds.append("trained")
        elif not is_real:
            kinds.append("padding")
        elif token in media_ids:
            kinds.append("media")
        else:
            kinds.append("prompt")
    mask = _mask(batch)[row]
    media = collections.Counter(
        token for token, is_real in zip(ids, real, strict=True) if is_real and token in media_ids
    )
    warnings = _row_problems(ids, real, targets, media_ids)
    detail = TokenRow(
        ids=tuple(ids),
        targets=tuple(targets),
        kinds="".join(kind[0] if kind != "padding" else "d" for kind in kinds),
        pieces=tuple(_token_pieces(tokenizer, ids)),
        weights=tuple(weights) if weights is not None else None,
    )
    return SampleView(
        index=0,
        line=0,
        name=None,
        segments=tuple(_segments(ids, kinds, tokenizer, weights)),
        tokens=int(mask.sum()),
        trained=sum(target != IGNORE_INDEX for target in targets),
        padding=int((mask == 0).sum()),
        media=tuple((_token_text(tokenizer, token), count) for token, count in media.most_common()),
        warnings=tuple(warnings),
        detail=detail,
    )


def _mask(batch: Mapping[str, Any]) -> torch.Tensor:
    mask = batch.get("attention_mask")
    return mask if isinstance(mask, torch.Tensor) else torch.ones_like(batch["input_ids"])


def _aligned_row(
    batch: Mapping[str, Any], row: int, *, shifted: bool
) -> tuple[list[int], list[bool], list[int]]:
    """Token ids, realness and targets, aligned so that ``targets[t]`` trains ``ids[t]``."""
    ids = batch["input_ids"][row].tolist()
    real = [bool(value) for value in _mask(batch)[row].tolist()]
    labels = batch["labels"][row].tolist()
    if not shifted:
        return ids, real, labels
    # labels[t] is the target at position t, i.e. the token at t + 1.
    targets = [IGNORE_INDEX, *labels]
    if labels and labels[-1] != IGNORE_INDEX:  # the shift cut this token from input_ids
        ids.append(labels[-1])
        real.append(True)
    return ids, real, targets[: len(ids)]


def _aligned_weights(
    batch: Mapping[str, Any], row: int, length: int, *, shifted: bool
) -> list[float] | None:
    """``loss_weights`` aligned like `_aligned_row`'s targets, or None without them."""
    weights = batch.get("loss_weights")
    if not isinstance(weights, torch.Tensor):
        return None
    values = weights[row].tolist()
    if shifted:
        values = [0.0, *values]
    values += [0.0] * (length - len(values))
    return values[:length]


def _row_problems(
    ids: list[int], real: list[bool], targets: list[int], media_ids: frozenset[int]
) -> Iterator[str]:
    trained = [
        (token, is_real, target)
        for token, is_real, target in zip(ids, real, targets, strict=True)
        if target != IGNORE_INDEX
    ]
    mismatched = sum(token != target for token, _, target in trained)
    if mismatched:
        yield f"{mismatched} label(s) differ from the token they should train (label shift bug?)"
    padded = sum(not is_real for _, is_real, _ in trained)
    if padded:
        yield f"{padded} padding token(s) are trained"
    media = sum(token in media_ids for token, _, _ in trained)
    if media:
        yield f"{media} media placeholder token(s) are trained"


def _segments(
    ids: list[int], kinds: list[Kind], tokenizer: Any, weights: list[float] | None = None
) -> Iterator[Segment]:
    """Group tokens into runs of one kind; media and padding runs collapse per token.

    With ``weights``, a trained run also breaks where its loss weight changes.
    """
    bounds = [0] + [
        t
        for t in range(1, len(ids))
        if kinds[t] != kinds[t - 1]
        or _repeats(kinds[t], ids, t)
        or (weights is not None and kinds[t] == "trained" and weights[t] != weights[t - 1])
    ]
    bounds.append(len(ids))
    texts = _decoded_pieces(ids, bounds, tokenizer)
    for (start, end), text in zip(itertools.pairwise(bounds), texts, strict=True):
        kind = kinds[start]
        if kind in ("media", "padding"):
            yield Segment(kind, _token_text(tokenizer, ids[start]), end - start)
        elif text:
            weight = weights[start] if weights is not None and kind == "trained" else None
            yield Segment(kind, text, weight=weight)


def _repeats(kind: Kind, ids: list[int], t: int) -> bool:
    """A media or padding run breaks wherever the token changes."""
    return kind in ("media", "padding") and ids[t] != ids[t - 1]


# Tokens of left context decoded with each piece: enough for SentencePiece to keep a
# piece's leading space, and bounded so that decoding a row stays linear in its length.
_CONTEXT_TOKENS = 8


def _decoded_pieces(ids: list[int], bounds: list[int], tokenizer: Any) -> list[str]:
    """Text of each ``ids[bounds[i]:bounds[i + 1]]``, decoded in context.

    Decoding a few tokens before the piece and taking the difference keeps
    characters that SentencePiece would drop at the start of a lone piece (a
    leading space).
    """
    pieces = []
    for start, end in itertools.pairwise(bounds):
        left = max(0, start - _CONTEXT_TOKENS)
        before = _decode(tokenizer, ids[left:start])
        after = _decode(tokenizer, ids[left:end])
        pieces.append(
            after[len(before) :] if after.startswith(before) else _decode(tokenizer, ids[start:end])
        )
    return pieces


_PIECE_CONTEXT = 4


def _token_pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each token's text; decoded in a little context where lone tokens lose characters."""
    singles = tokenizer.batch_decode(
        [[token] for token in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    if "".join(singles) == _decode(tokenizer, ids):
        return list(singles)
    pieces = []
    for t, single in enumerate(singles):
        window = ids[max(0, t - _PIECE_CONTEXT) : t + 1]
        before, after = _decode(tokenizer, window[:-1]), _decode(tokenizer, window)
        pieces.append(after[len(before) :] if after.startswith(before) else single)
    return pieces


def _decode(tokenizer: Any, ids: list[int]) -> str:
    if not ids:
        return ""
    return cast(
        "str",
        tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
    )


def _token_text(tokenizer: Any, token: int) -> str:
    text = tokenizer.convert_ids_to_tokens(token)
    return text if isinstance(text, str) else str(token)


# -- rendering ---------------------------------------------------------------------


_ANSI = {
    "trained": "\x1b[30;42m",
    "media": "\x1b[35m",
    "padding": "\x1b[2m",
    "header": "\x1b[1m",
    "warning": "\x1b[33m",
    "dropped": "\x1b[31m",
}
_RESET = "\x1b[0m"
_SHIFT_NOTE = (
    "labels are pre-shifted: 'trained' counts the tokens the loss predicts, each stored "
    "at labels[t-1]; 'tokens' counts the row before the shift (input_ids has one fewer)"
)


def _paint(text: str, style: str | None, color: bool) -> str:
    """Colour ``text`` line by line, so a background never spills past a newline.

    Control characters from the data are escaped first, coloured or not.
    """
    text = visible(text)
    if not color or style is None or not text:
        return text
    return "\n".join(f"{_ANSI[style]}{part}{_RESET}" if part else part for part in text.split("\n"))


def _segment_text(segment: Segment) -> str:
    return f"{segment.text} x{segment.repeat}" if segment.repeat > 1 else segment.text


def _weight_note(segment: Segment) -> str:
    """``{w=0.5}`` after a trained run whose loss weight is not 1."""
    if segment.weight is None or segment.weight == 1.0:
        return ""
    return f"{{w={segment.weight:g}}}"


def _plain_segment(segment: Segment) -> str:
    text = _segment_text(segment)
    if segment.kind == "trained":
        return f"[[{text}]]{_weight_note(segment)}"
    if segment.kind == "padding":
        return f"{{pad {text}}}"
    return text


def _legend(inspection: Inspection, color: bool) -> str:
    if color:
        parts = [
            _paint("trained", "trained", True),
            "prompt",
            _paint("<media> xN", "media", True),
            _paint("padding", "padding", True),
        ]
        legend = "legend: " + "  ".join(parts)
    else:
        legend = "legend: [[trained tokens]]  prompt tokens  <media> xN  {pad <token> xN}"
    if inspection.shift_labels:
        legend += f"\n{_SHIFT_NOTE}"
    return legend


def _counts(view: SampleView) -> str:
    if view.dropped is not None and view.dropped.reason == REFUSED:
        return f"REFUSED: {view.dropped.detail}"
    if view.dropped is not None:
        return f"DROPPED ({view.dropped.reason}): {view.dropped.detail}"
    if not view.segments:
        return "DROPPED (reason not reported)"
    parts = [_plural(view.tokens, "token"), f"{view.trained} trained"]
    if view.media:
        parts.append("media " + ", ".join(f"{token} x{count}" for token, count in view.media))
    parts.append(f"{view.padding} padding")
    if view.truncated:
        parts.append("truncated to max_length")
    return ", ".join(parts)


def _title(view: SampleView) -> str:
    name = f" [{view.name}]" if view.name else ""
    where = f"line {view.line}" if view.line is not None else f"row {view.index}"
    return f"sample {view.index}{name} ({where})"


def _plural(count: int, noun: str, suffix: str = "") -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}{suffix}"


def _summary_line(inspection: Inspection) -> str:
    counts = inspection.summary()
    parts = [
        _plural(counts["samples"], "sample"),
        _plural(counts["kept"], "row", " kept"),
        f"{counts['dropped']} dropped",
        f"{counts['truncated']} truncated",
        _plural(counts["tokens"], "token"),
        _plural(counts["trained"], "trained token"),
        _plural(counts["warnings"], "warning"),
    ]
    return "summary: " + ", ".join(parts)


def _settings(inspection: Inspection) -> list[str]:
    options = ", ".join(f"{key}={value!r}" for key, value in inspection.options.items())
    return [
        f"data: {inspection.source}",
        f"processor: {inspection.processor} -> {inspection.collator}",
        f"options: {options}",
    ]


def _batch_title(batch: BatchView) -> str:
    if batch.shape and batch.shifted:
        rows, width = batch.shape
        shape = f"{rows}x{width - 1} ({rows}x{width} before the shift)"
    elif batch.shape:
        shape = "x".join(map(str, batch.shape))
    else:
        shape = "no rows, every sample was dropped"
    first, last = batch.indices[0], batch.indices[-1]
    samples = f"sample {first}" if first == last else f"samples {first}-{last}"
    return f"{samples}, input_ids {shape}"


def render_text(inspection: Inspection, *, color: bool = False) -> str:
    """The terminal view; ANSI colours when ``color``, otherwise ``[[trained]]`` markers."""
    lines = [
        *(visible(line) for line in _settings(inspection)),
        *(visible(f"note: {note}") for note in inspection.notes),
        _legend(inspection, color),
    ]
    by_index = {view.index: view for view in inspection.samples}
    for batch in inspection.batches:
        lines += [
            "",
            f"== batch {batch.number}: {_batch_title(batch)}",
        ]
        lines += [_paint(f"warning: {note}", "warning", color) for note in batch.notes]
        for index in batch.indices:
            lines += ["", *_text_sample(by_index[index], color)]
    lines += ["", _paint(_summary_line(inspection), "header", color)]
    return "\n".join(lines) + "\n"


def _text_sample(view: SampleView, color: bool) -> list[str]:
    style = "dropped" if view.dropped is not None or not view.segments else "header"
    lines = [_paint(f"-- {_title(view)}: {_counts(view)}", style, color)]
    lines += [_paint(f"warning: {warning}", "warning", color) for warning in view.warnings]
    if view.segments:
        if color:
            body = "".join(
                _paint(_segment_text(s), None if s.kind == "prompt" else s.kind, True)
                + _paint(_weight_note(s), "warning", True)
                for s in view.segments
            )
        else:
            body = visible("".join(_plain_segment(segment) for segment in view.segments))
        lines.append(body.rstrip("\n"))
    return lines


def render_html(inspection: Inspection) -> str:
    """The standalone HTML page: thumbnails, per-token tooltips, a batch chart, paginated.

    See [`vlm_collate.tools.html_view`][vlm_collate.tools.html_view].
    """
    from .html_view import render_html as render

    return render(inspection)
