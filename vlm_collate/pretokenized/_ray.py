"""Pre-tokenize a ``ray.data.Dataset`` on a pool of actors, each holding one collator.

The actors run the same row builder as [`pretokenize`][vlm_collate.pretokenized.pretokenize]
(``Dataset.map``), so both engines store the same rows; only the engine
differs. The same code runs on a laptop (``ray.init(num_cpus=2)``) and on a
cluster (``ray.init(address="auto")``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch

from .._deps import require
from .._pipeline import BaseCollator
from ..errors import ConfigurationError
from ._pretokenize import stored_rows
from ._shards import stored_table

__all__ = ["pretokenize_ray"]


def _ray_data() -> Any:
    return require("ray.data", "pretokenize_ray needs Ray Data: pip install 'vlm-collate[ray]'")


def build_collator(
    collator: BaseCollator | Callable[[], BaseCollator], options: Mapping[str, Any]
) -> BaseCollator:
    """The collator itself, or the one ``collator()`` builds, with ``options`` applied."""
    built = collator if isinstance(collator, BaseCollator) else collator()
    if not isinstance(built, BaseCollator):
        msg = f"'collator' must be a chat collator or a factory of one (got {type(built).__name__})"
        raise ConfigurationError(msg)
    return attrs.evolve(built, **options) if options else built


class _Tokenizer:
    """A Ray actor's callable: builds its collator once, then tokenizes batch after batch."""

    def __init__(
        self,
        collator: BaseCollator | Callable[[], BaseCollator],
        options: Mapping[str, Any],
        index_column: str,
        threads: int,
    ) -> None:
        torch.set_num_threads(threads)  # actors sharing a node must not oversubscribe it
        self.collator = build_collator(collator, options)
        self.index_column = index_column

    def __call__(self, batch: Any) -> Any:
        rows = batch.to_pylist()
        indices = [int(row.pop(self.index_column)) for row in rows]
        columns = {key: [row.get(key) for row in rows] for key in rows[0]} if rows else {}
        return stored_table(stored_rows(self.collator, columns, indices))


def _positive(value: Any, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        msg = f"'{name}' must be a positive int or None (got {value!r})."
        raise ConfigurationError(msg)


def pretokenize_ray(
    dataset: Any,
    collator: BaseCollator | Callable[[], BaseCollator],
    *,
    index_column: str,
    batch_size: int = 16,
    num_actors: int | None = None,
    num_cpus_per_actor: int = 1,
    **collator_options: Any,
) -> Any:
    """Tokenize every row of a ``ray.data.Dataset`` with ``collator`` on a pool of Ray actors.

    Each actor builds its collator once (so its processor once) and runs the
    template, hook and label steps batch after batch with ``map_batches``. The
    result is a lazy ``ray.data.Dataset`` of stored rows in the columns
    [`pretokenize`][vlm_collate.pretokenized.pretokenize] writes, one per source row:
    a row a policy dropped has an empty ``input_ids`` and says why in
    ``dropped_reason`` and ``dropped_detail``; ``source_index`` is its row id.
    Give it to [`write_shards`][vlm_collate.pretokenized.write_shards], which keeps the
    dropped rows out of the shards and lists them in the manifest.

    Args:
        dataset: A ``ray.data.Dataset`` of ``{"conversation": [...]}`` rows.
        collator: A picklable chat collator, or a picklable factory that
            builds one (to build a large processor on the actor instead of
            shipping it).
        batch_size: Rows per ``map_batches`` call.
        num_actors: Actors in the pool; None lets Ray size the pool to the cluster.
        num_cpus_per_actor: CPUs each actor reserves (and its torch threads).
        index_column: An integer column holding each row's id: Ray Data keeps
            no row order, so only an id says which row was dropped (add one
            when building the dataset, e.g. ``{**row, "row_id": i}``).
        **collator_options: Collator options applied on the actor with
            ``attrs.evolve`` (for example ``label_policy=``, ``max_length=``,
            or any option the collator class accepts).
    """
    ray_data = _ray_data()
    _positive(batch_size, "batch_size")
    _positive(num_actors, "num_actors")
    _positive(num_cpus_per_actor, "num_cpus_per_actor")
    if not isinstance(collator, BaseCollator) and not callable(collator):
        kind = type(collator).__name__
        msg = f"'collator' must be a chat collator or a factory of one (got {kind})"
        raise ConfigurationError(msg)
    if isinstance(collator, BaseCollator):
        build_collator(collator, collator_options)  # bad options fail here, not on an actor
    if not isinstance(index_column, str) or not index_column:
        msg = f"'index_column' must name an integer column of row ids (got {index_column!r})."
        raise ConfigurationError(msg)
    return dataset.map_batches(
        _Tokenizer,
        fn_constructor_kwargs={
            "collator": collator,
            "options": collator_options,
            "index_column": index_column,
            "threads": num_cpus_per_actor,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray_data.ActorPoolStrategy(
            **({"size": num_actors} if num_actors is not None else {"min_size": 1})
        ),
        num_cpus=num_cpus_per_actor,
    )
