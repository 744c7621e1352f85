"""``RobustCollator``: re-sample a whole batch from a seed when collating it fails.

A wrapped collator that raises a [`VLMCollateError`][vlm_collate.VLMCollateError] (an
unreadable image, a sample with no assistant turn, an overlong sample under
``overlong="raise"``, ...) gets a fresh batch of the same size drawn from the
dataset, up to ``max_retries`` times. Every failure is logged on the
``vlm_collate.robust`` logger, and the draws come from the wrapper's own
seeded `random.Random`, so a run can be replayed.

>>> robust = RobustCollator(collator=collator, dataset=dataset, seed=0)  # doctest: +SKIP
>>> loader = DataLoader(dataset, batch_size=8, collate_fn=robust)       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import random
import typing
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ._calls import CallState
from ._options import exception_types, integer, is_callable, non_negative_int, sequence_like
from .errors import BatchError, RetriesExhaustedError, VLMCollateError

__all__ = ["RetriesExhaustedError", "RobustCollator", "make_robust_collate", "worker_rng_seed"]

logger = logging.getLogger(__name__)


def worker_rng_seed(seed: int, worker_id: int | None) -> int | str:
    """NeMo Automodel of the re-sampling RNG in one process.

    Outside ``DataLoader`` workers this is ``seed`` itself, so
    ``random.Random(seed)`` replays the draws. Worker ``k`` uses the string
    ``"<seed>:worker<k>"`` instead: `random.Random` hashes a string seed
    with SHA-512, so the streams of different workers differ and do not depend
    on ``PYTHONHASHSEED``.
    """
    if worker_id is None:
        return seed
    return f"{seed}:worker{worker_id}"


def _current_worker_id() -> int | None:
    try:
        from torch.utils.data import get_worker_info
    except ImportError:  # torch is a dependency, but the wrapper itself does not need it
        return None
    info = get_worker_info()
    return None if info is None else info.id


def _exception_tuple(value: Any) -> tuple[Any, ...]:
    """One exception type or an iterable of them, as a tuple (checked by the validator)."""
    if isinstance(value, type):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        return (value,)


@attrs.define(kw_only=True)
class RobustCollator:
    """Wrap a collator so that a batch it rejects is replaced by a re-sampled one.

    ``collator(examples)`` is tried first on the caller's batch. When it raises
    one of ``retry_on`` (by default only [`VLMCollateError`][vlm_collate.VLMCollateError],
    which the collators raise for every data problem, including media files
    that cannot be read), the failure is logged and a new batch of
    ``len(examples)`` samples is drawn: ``dataset[rng.randrange(len(dataset))]``
    for each row, in order. This repeats at most ``max_retries`` times, so
    there are up to ``1 + max_retries`` attempts. Any other exception, such as
    a ``TypeError`` from a bug, propagates unchanged and is not counted.

    The RNG is ``random.Random(worker_rng_seed(seed, worker_id))``, created on
    the first failure in each process: the global `random` state is never
    touched. In a ``DataLoader`` worker, ``worker_id`` is
    ``torch.utils.data.get_worker_info().id``, so workers draw different
    batches; in the main process it is ``None`` and the RNG is
    ``random.Random(seed)``.

    Args:
        collator: Any callable taking a list of samples, usually a collator of
            this package.
        dataset: What to re-sample from: supports ``len()`` and integer indexing.
        max_retries: How many re-sampled batches to try after the first failure.
        seed: Seed of the re-sampling RNG.
        retry_on: The exception types that trigger a re-sample. Widen it (for
            example ``(VLMCollateError, OSError)``) only for a third-party
            collate function that does not convert its data errors.

    Raises:
        RetriesExhaustedError: The last attempt failed too; it chains the last
            error and says how many attempts were made.

    The counters ``batches``, ``failures``, ``resamples`` and ``exhausted``
    count calls, failed attempts, re-sampled batches and calls that gave up.
    Each process (each ``DataLoader`` worker) counts its own.
    ``last_indices`` holds the dataset indices of the last batch returned to
    the current thread (each thread sees its own calls), or
    ``None`` when it was the caller's batch.
    """

    # Called with the caller's own batch first, then with re-sampled lists.
    collator: Callable[[Sequence[Any]], Any] = attrs.field(validator=is_callable)

    dataset: Any = attrs.field(validator=sequence_like, repr=False)
    max_retries: int = attrs.field(default=10, validator=non_negative_int)
    seed: int = attrs.field(default=0, validator=integer)
    retry_on: tuple[type[Exception], ...] = attrs.field(
        default=(VLMCollateError,), converter=_exception_tuple, validator=exception_types
    )

    batches: int = attrs.field(init=False, default=0, eq=False)
    failures: int = attrs.field(init=False, default=0, eq=False)
    resamples: int = attrs.field(init=False, default=0, eq=False)
    exhausted: int = attrs.field(init=False, default=0, eq=False)
    _calls: CallState = attrs.field(init=False, factory=CallState, eq=False, repr=False)
    _rng: random.Random | None = attrs.field(init=False, default=None, eq=False, repr=False)
    _rng_worker: int | None = attrs.field(init=False, default=None, eq=False, repr=False)

    @property
    def last_indices(self) -> list[int] | None:
        """Dataset indices of the last batch this thread got back; None for the caller's own."""
        return typing.cast("list[int] | None", self._calls.get("indices"))

    @last_indices.setter
    def last_indices(self, indices: list[int] | None) -> None:
        self._calls.set("indices", indices)

    def _count(self, counter: str) -> None:
        with self._calls.lock:  # threads sharing the wrapper must not lose counts
            setattr(self, counter, getattr(self, counter) + 1)

    def __call__(self, examples: Sequence[Any]) -> Any:
        """Collate ``examples``, re-sampling the whole batch after each rejected attempt."""
        self._count("batches")
        batch: Sequence[Any] = examples
        indices: list[int] | None = None
        attempts = 1 + self.max_retries
        for attempt in range(1, attempts + 1):
            try:
                result = self.collator(batch)
            except self.retry_on as error:
                self._record_failure(error, attempt, attempts, indices)
                if attempt == attempts or not examples:
                    self._give_up(error, attempt, indices)
                indices = self._draw_indices(len(examples))
                batch = [self.dataset[index] for index in indices]
                self._count("resamples")
            else:
                self.last_indices = indices
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _record_failure(
        self, error: Exception, attempt: int, attempts: int, indices: list[int] | None
    ) -> None:
        self._count("failures")
        source = "the caller's batch" if indices is None else f"dataset indices {indices}"
        logger.warning(
            "collate attempt %d/%d failed on %s: %s: %s",
            attempt,
            attempts,
            source,
            type(error).__name__,
            error,
        )

    def _give_up(self, error: Exception, attempt: int, indices: list[int] | None) -> None:
        self._count("exhausted")
        resampled = attempt - 1
        reason = (
            ""
            if resampled
            else " (nothing to re-sample)"
            if self.max_retries
            else " (max_retries=0)"
        )
        last = "the caller's batch" if indices is None else f"dataset indices {indices}"
        msg = (
            f"collating failed on all {attempt} attempts: the caller's batch and "
            f"{resampled} re-sampled batches{reason}; the last one, on {last}, "
            f"raised {type(error).__name__}: {error}"
        )
        raise RetriesExhaustedError(msg) from error

    def _draw_indices(self, size: int) -> list[int]:
        worker_id = _current_worker_id()
        if self._rng is None or self._rng_worker != worker_id:
            self._rng = random.Random(worker_rng_seed(self.seed, worker_id))
            self._rng_worker = worker_id
        length = len(self.dataset)
        if length == 0:
            msg = "cannot re-sample: the dataset is empty"
            raise BatchError(msg)
        return [self._rng.randrange(length) for _ in range(size)]


def make_robust_collate(
    dataset: Any, collate_fn: Callable[[Sequence[Any]], Any], max_retries: int = 10
) -> RobustCollator:
    """NeMo Automodel's ``make_robust_collate``: a [`RobustCollator`][vlm_collate.RobustCollator]
    with
    seed 0.

    Unlike NeMo Automodel, it retries only on [`VLMCollateError`][vlm_collate.VLMCollateError],
    draws from its own RNG instead of the global `random` module, makes
    up to ``1 + max_retries`` attempts, and raises
    [`RetriesExhaustedError`][vlm_collate.RetriesExhaustedError] (a ``ValueError``) rather than
    ``RuntimeError`` when they all fail.
    """
    return RobustCollator(collator=collate_fn, dataset=dataset, max_retries=max_retries)
