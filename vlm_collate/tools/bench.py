"""Benchmark: label building, collate overhead and template renders, in one run.

Run it with ``python -m vlm_collate.tools.bench`` or ``vlm-collate bench``
(``--quick`` for a smoke run, ``--help`` for the options). Every figure is
compared with a baseline measured in the same process and run, so the ratios
hold on any machine even when the absolute times do not:

1. ``labels``: the vectorised [`assistant_spans`][vlm_collate.labels.assistant_spans]
   against [`naive_assistant_spans`][vlm_collate.labels.naive_assistant_spans] (a per-token
   Python scan) on rows of real Qwen tokens; the two masks must be identical.
2. ``collate``: a [`Qwen25VLCollator`][vlm_collate.Qwen25VLCollator] batch against the
   work no collator can avoid (rendering the chat template and one processor
   call), as an overhead in percent.
3. ``derived markers``: chat-template renders made while building labels
   with [`DerivedTemplateMarker`][vlm_collate.DerivedTemplateMarker], after the first batch.
4. ``nemo_automodel``: NeMo Automodel's ``qwen2_5_collate_fn`` on the same batch, when
   ``nemo_automodel`` is importable.

The processors are the offline ones of [`vlm_collate.testing`][vlm_collate.testing], and the
samples are generated from a seeded random source: real Pillow images and
multi-turn conversations. The benchmark needs the ``test`` extra.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import datetime
import functools
import gc
import os
import platform
import pstats
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, cast

import attrs
import torch
from PIL import Image, ImageDraw

from .._pipeline import BaseCollator
from ..families.default import DefaultCollator
from ..families.qwen_vl import Qwen25VLCollator
from ..labels import (
    ImStartMarker,
    LabelPolicy,
    LabelStrategy,
    assistant_spans,
    labels_from_spans,
    naive_assistant_spans,
)

__all__ = [
    "BenchSettings",
    "ConversationWriter",
    "RenderSpy",
    "Timing",
    "main",
    "measure",
    "measure_interleaved",
    "run",
]

LABEL_GOAL = 50.0
OVERHEAD_GOAL_PERCENT = 5.0
# The per-token references take tens of milliseconds; this many timed runs suffice.
_SLOW_REFERENCE_RUNS = 5


@attrs.frozen(kw_only=True)
class BenchSettings:
    """What to measure and how often.

    Args:
        repeat: Timed runs per measurement; the median is reported.
        warmup: Untimed runs before the timed ones.
        label_rows: Rows of the label-building batch.
        seq_len: Real tokens aimed at per label-building row.
        collate_batch: Samples in the collate-overhead batch.
        max_pixels: Image budget of the collate processor; None keeps
            ``build_processor``'s own.
        render_batches: Batches collated after the first when counting renders.
        profile: When to profile the collator and print where it spends its
            time: ``"auto"`` when the overhead misses its goal, ``"always"``
            or ``"never"``.
        seed: Seed of the generated conversations and images.
        threads: Torch intra-op threads. One by default, as in ``DataLoader``
            workers, where collators run (PyTorch sets one thread there);
            None keeps torch's own default.
    """

    repeat: int = 30
    warmup: int = 2
    label_rows: int = 8
    seq_len: int = 3000
    collate_batch: int = 16
    max_pixels: int | None = None
    render_batches: int = 5
    profile: Literal["auto", "always", "never"] = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "always", "never"))
    )
    seed: int = 0
    threads: int | None = 1


# -- timing -------------------------------------------------------------------


def _seconds(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(values)


@attrs.frozen
class Timing:
    """Wall-clock and CPU times of the timed runs of one candidate, in seconds.

    CPU time is this process's, summed over its threads; other work on the
    machine hardly changes it, so it is the steadier figure on a busy machine.
    """

    wall: tuple[float, ...] = attrs.field(converter=_seconds)
    cpu: tuple[float, ...] = attrs.field(converter=_seconds)

    @property
    def median(self) -> float:
        """Median wall time: the figure reported and compared with goals."""
        return statistics.median(self.wall)

    @property
    def best(self) -> float:
        """The fastest run's wall time: the least disturbed by other work."""
        return min(self.wall)

    @property
    def cpu_median(self) -> float:
        """Median CPU time."""
        return statistics.median(self.cpu)


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall and CPU seconds of one call, with the garbage collector paused (as ``timeit`` does)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        if collecting:
            gc.enable()


def measure(fn: Callable[[], Any], *, repeat: int, warmup: int) -> Timing:
    """Time ``repeat`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    runs = [_timed(fn) for _ in range(repeat)]
    return Timing([wall for wall, _ in runs], [cpu for _, cpu in runs])


def measure_interleaved(
    candidates: Mapping[str, Callable[[], Any]], *, repeat: int, warmup: int
) -> dict[str, Timing]:
    """Time each candidate ``repeat`` times, in alternation.

    Each round runs every candidate once, in an order rotated from round to
    round, so that drift in the machine's speed hits all of them alike.
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for round_index in range(repeat):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(_timed(candidates[name]))
    return {
        name: Timing([wall for wall, _ in pairs], [cpu for _, cpu in pairs])
        for name, pairs in runs.items()
    }


# -- generated samples ----------------------------------------------------------

_SUBJECTS = (
    "the red bicycle",
    "a wooden table",
    "the harbour crane",
    "two pigeons",
    "the street sign",
    "a glass of water",
    "the mountain ridge",
    "the parked van",
    "an open notebook",
    "the lamp post",
    "a striped umbrella",
    "the bakery window",
    "three oranges",
    "the railway bridge",
    "a tabby cat",
)
_PLACES = (
    "in the top left corner",
    "near the centre",
    "at the bottom edge",
    "on the right",
    "behind the fence",
)
_VERBS = (
    "leans against",
    "sits beside",
    "casts a shadow over",
    "partly hides",
    "points towards",
    "faces",
)
_SYSTEM_PROMPT = "You describe photographs plainly and say when you are unsure."
_ADJECTIVES = ("faded", "bright", "narrow", "weathered", "glossy", "crowded", "quiet", "tilted")
_QUESTIONS = (
    "What is {subject} doing {place}?",
    "How many objects can you count {place}?",
    "Describe {subject} in two or three sentences.",
    "Is {subject} closer to the camera than {other}?",
    "What colour is {subject}, and how sure are you?",
    "Write a short caption for this picture.",
    "Could {subject} be moved without touching {other}?",
)


@attrs.define
class ConversationWriter:
    """Writes plausible multi-turn conversations about pictures, from a seeded source."""

    rng: random.Random

    def question(self) -> str:
        template = self.rng.choice(_QUESTIONS)
        subject, other = self.rng.sample(_SUBJECTS, 2)
        return template.format(subject=subject, other=other, place=self.rng.choice(_PLACES))

    def sentence(self) -> str:
        subject, other = self.rng.sample(_SUBJECTS, 2)
        adjective = self.rng.choice(_ADJECTIVES)
        verb = self.rng.choice(_VERBS)
        sentence = f"{subject.capitalize()} {verb} {other}, and the light looks {adjective}"
        if self.rng.random() < 0.3:
            sentence += f" (about {self.rng.randint(2, 40)} metres away)"
        return sentence + "."

    def answer(self, sentences: tuple[int, int]) -> str:
        parts = [self.sentence() for _ in range(self.rng.randint(*sentences))]
        if self.rng.random() < 0.25:
            items = "\n".join(
                f"- {self.rng.choice(_SUBJECTS)}" for _ in range(self.rng.randint(2, 4))
            )
            parts.append(f"In short:\n{items}")
        return " ".join(parts)

    def image(self, sizes: tuple[int, int]) -> Image.Image:
        """A picture of a few coloured shapes on a plain background."""
        width, height = self.rng.randint(*sizes), self.rng.randint(*sizes)
        image = Image.new("RGB", (width, height), self._colour())
        draw = ImageDraw.Draw(image)
        for _ in range(self.rng.randint(3, 8)):
            left, top = self.rng.randrange(width), self.rng.randrange(height)
            box = (
                left,
                top,
                left + self.rng.randint(10, width),
                top + self.rng.randint(10, height),
            )
            shape = draw.ellipse if self.rng.random() < 0.5 else draw.rectangle
            shape(box, fill=self._colour())
        return image

    def _colour(self) -> tuple[int, int, int]:
        return (self.rng.randrange(256), self.rng.randrange(256), self.rng.randrange(256))


def _user_turn(text: str, images: Sequence[Image.Image]) -> dict[str, Any]:
    content = [{"type": "image", "image": image} for image in images]
    return {"role": "user", "content": [*content, {"type": "text", "text": text}]}


def _assistant_turn(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def collate_samples(writer: ConversationWriter, count: int) -> list[dict[str, Any]]:
    """``count`` samples of 1 to 3 turns, some with a system prompt.

    The first user turn holds an image of 200 to 400 pixels a side.
    """
    samples = []
    for _ in range(count):
        conversation: list[dict[str, Any]] = []
        if writer.rng.random() < 0.25:
            conversation.append({"role": "system", "content": _SYSTEM_PROMPT})
        conversation.append(_user_turn(writer.question(), [writer.image((200, 400))]))
        conversation.append(_assistant_turn(writer.answer((1, 4))))
        for _ in range(writer.rng.randint(0, 2)):
            conversation += [
                _user_turn(writer.question(), []),
                _assistant_turn(writer.answer((1, 4))),
            ]
        samples.append({"conversation": conversation})
    return samples


def long_samples(
    writer: ConversationWriter, processor: Any, *, rows: int, seq_len: int
) -> list[dict[str, Any]]:
    """``rows`` conversations of about ``seq_len`` tokens: many turns, an image in some."""
    tokenizer = processor.tokenizer
    samples = []
    for _ in range(rows):
        conversation: list[dict[str, Any]] = []
        tokens = 0
        while tokens < seq_len:
            images = [writer.image((200, 400))] if writer.rng.random() < 0.3 else []
            question, answer = writer.question(), writer.answer((2, 8))
            conversation += [_user_turn(question, images), _assistant_turn(answer)]
            tokens += len(tokenizer(question + answer, add_special_tokens=False)["input_ids"])
            tokens += 10 + sum(_image_tokens(processor, image) for image in images)
        samples.append({"conversation": conversation})
    return samples


def _image_tokens(processor: Any, image: Image.Image) -> int:
    """Placeholder tokens the processor expands one image into."""
    image_processor = processor.image_processor
    grid = image_processor(images=[image], return_tensors="pt")["image_grid_thw"]
    return int(grid.prod()) // getattr(image_processor, "merge_size", 1) ** 2


def _images_of(conversations: Sequence[Sequence[Mapping[str, Any]]]) -> list[Any]:
    return [
        item["image"]
        for conversation in conversations
        for message in conversation
        if isinstance(message["content"], list)
        for item in message["content"]
        if item["type"] == "image"
    ]


def _conversations(samples: Sequence[Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
    return [sample["conversation"] for sample in samples]


# -- report helpers -------------------------------------------------------------

_TABLE_HEADER = f"    {'':<46}{'wall median':>12}{'wall best':>12}{'CPU median':>12}{'runs':>6}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds < 0.01 else f"{seconds * 1e3:.1f} ms"


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _goal(met: bool) -> str:
    return "met" if met else "MISSED"


def _row(name: str, timing: Timing, note: str = "") -> str:
    figures = f"{_ms(timing.median):>12}{_ms(timing.best):>12}{_ms(timing.cpu_median):>12}"
    return f"    {name:<46}{figures}{len(timing.wall):>6}{'   ' + note if note else ''}"


def _percent_above(candidate: float, baseline: float) -> float:
    return (candidate - baseline) / baseline * 100


def _paired_percent_above(candidate: Timing, baseline: Timing) -> float:
    """Median over rounds of one candidate's run against the baseline's run of the same round."""
    ratios = [ours / base for ours, base in zip(candidate.wall, baseline.wall, strict=True)]
    return (statistics.median(ratios) - 1) * 100


def _load() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews wall times."""
    if not hasattr(os, "getloadavg"):
        return "unknown"
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def _header(settings: BenchSettings) -> list[str]:
    import transformers

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"vlm_collate benchmark, {now}",
        f"    python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {platform.machine()}",
        f"    {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"load average {_load()}",
        f"    repeat={settings.repeat} warmup={settings.warmup} seed={settings.seed}",
    ]


# -- 1. label building -------------------------------------------------------------


def bench_labels(
    settings: BenchSettings, processor: Any, seed_module: Any
) -> tuple[list[str], bool]:
    """Time the vectorised scan against the per-token one; returns report lines and identity."""
    writer = ConversationWriter(random.Random(settings.seed))
    samples = long_samples(writer, processor, rows=settings.label_rows, seq_len=settings.seq_len)
    conversations = _conversations(samples)
    encoded = _floor_call(processor, conversations)
    input_ids = encoded["input_ids"]
    markers = ImStartMarker().markers(processor)
    strategy = Qwen25VLCollator(processor=processor).label_strategy

    vectorised = assistant_spans(input_ids, markers)
    identical = torch.equal(vectorised, naive_assistant_spans(input_ids, markers))
    repeat, warmup = settings.repeat, settings.warmup
    slow_runs = min(repeat, _SLOW_REFERENCE_RUNS)
    fast = measure(lambda: assistant_spans(input_ids, markers), repeat=repeat, warmup=warmup)
    naive = measure(lambda: naive_assistant_spans(input_ids, markers), repeat=slow_runs, warmup=1)
    build = measure(
        lambda: strategy.build(input_ids, conversations, processor), repeat=repeat, warmup=warmup
    )
    labels = strategy.build(input_ids, conversations, processor)
    indices = list(range(len(conversations)))
    policies = {
        "turns='last', loss_weights": LabelPolicy(turns="last", loss_weights=True),
        "roles='assistant,user'": LabelPolicy(roles="assistant,user"),
    }
    policy_times = {
        name: measure(
            functools.partial(policy.apply, labels, input_ids, conversations, indices, processor),
            repeat=repeat,
            warmup=warmup,
        )
        for name, policy in policies.items()
    }
    lengths = encoded["attention_mask"].sum(dim=1).tolist()
    turns = sum(
        message["role"] == "assistant" for messages in conversations for message in messages
    )
    lines = [
        "",
        f"[1] label building: B={len(lengths)} rows of {min(lengths)}-{max(lengths)} real Qwen "
        f"tokens (padded to {input_ids.shape[1]}), {turns} assistant turns, "
        f"{len(_images_of(conversations))} images",
        _TABLE_HEADER,
        _row("vectorised assistant_spans", fast),
        _row("naive_assistant_spans (per-token loop)", naive),
        _row("label_strategy.build (Qwen25VLCollator)", build),
        *(_row(f"+ LabelPolicy({name}).apply", timing) for name, timing in policy_times.items()),
    ]
    expected_labels = labels_from_spans(input_ids, vectorised)
    seed_lines, seed_identical = _seed_label_lines(
        seed_module, input_ids, conversations, processor, expected_labels, slow_runs
    )
    speedup = naive.median / fast.median
    lines += seed_lines
    lines += [
        f"    assistant turns found by the vectorised scan: {_span_count(vectorised)} of {turns}",
        f"labels: vectorised {_ms(fast.median)}, naive {_ms(naive.median)}, speed-up "
        f"{speedup:.0f}x (goal >= {LABEL_GOAL:.0f}x: {_goal(speedup >= LABEL_GOAL)}), "
        f"identical: {_yes(identical)}",
    ]
    return lines, identical and seed_identical is not False


def _floor_call(processor: Any, conversations: Sequence[Sequence[Mapping[str, Any]]]) -> Any:
    """The least any collator must do: render every conversation, then one processor call."""
    texts = _render_texts(processor, conversations)
    return _run_processor(processor, texts, _images_of(conversations))


def _render_texts(
    processor: Any, conversations: Sequence[Sequence[Mapping[str, Any]]]
) -> list[str]:
    return [processor.apply_chat_template(messages, tokenize=False) for messages in conversations]


def _run_processor(processor: Any, texts: list[str], images: list[Any]) -> Any:
    return processor(text=texts, images=images, padding=True, return_tensors="pt")


def _span_count(spans: torch.Tensor) -> int:
    """Number of runs of True in a ``[B, L]`` mask."""
    opened = spans[:, 1:] & ~spans[:, :-1]
    return int(opened.sum() + spans[:, 0].sum())


def _seed_label_lines(
    seed_module: Any,
    input_ids: torch.Tensor,
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    processor: Any,
    expected: torch.Tensor,
    runs: int,
) -> tuple[list[str], bool | None]:
    """NeMo Automodel's own label builder, timed as a second per-token reference."""
    if seed_module is None:
        return [], None

    def seed_labels() -> torch.Tensor:
        return cast(
            "torch.Tensor",
            seed_module.build_labels_from_template(input_ids, conversations, processor),
        )

    identical = torch.equal(expected, seed_labels())
    timing = measure(seed_labels, repeat=runs, warmup=1)
    note = f"same labels: {_yes(identical)}"
    return [_row("NeMo build_labels_from_template (per-token)", timing, note)], identical


# -- 2. collate overhead ------------------------------------------------------------


def bench_collate(
    settings: BenchSettings, processor: Any, seed_module: Any, budget: str
) -> list[str]:
    """Time the collator against the processor floor (and NeMo Automodel's collate function)."""
    writer = ConversationWriter(random.Random(settings.seed + 1))
    samples = collate_samples(writer, settings.collate_batch)
    conversations = _conversations(samples)
    collator = Qwen25VLCollator(processor=processor)
    with_policy = Qwen25VLCollator(processor=processor, label_policy=_BENCH_POLICY)
    candidates: dict[str, Callable[[], Any]] = {
        "floor": lambda: _floor_call(processor, conversations),
        "collator": lambda: collator(samples),
        "policy": lambda: with_policy(samples),
    }
    if seed_module is not None:
        candidates["seed"] = lambda: seed_module.qwen2_5_collate_fn(samples, processor)
    timings = measure_interleaved(candidates, repeat=settings.repeat, warmup=settings.warmup)
    ours, base = timings["collator"], timings["floor"]
    overhead = _percent_above(ours.median, base.median)
    tokens = _floor_call(processor, conversations)["attention_mask"].sum(dim=1).tolist()
    lines = [
        "",
        f"[2] collate overhead: {len(samples)} samples with one image each (200-400 px), "
        f"1-3 turns, {min(tokens)}-{max(tokens)} tokens per row; timed interleaved",
        f"    image budget: {budget}",
        _TABLE_HEADER,
        _row("floor: apply_chat_template x N + processor()", base),
        _row("Qwen25VLCollator(processor=p)(samples)", ours),
        _row("  with label_policy (last turn, loss weights)", timings["policy"]),
    ]
    if "seed" in timings:
        lines.append(_row("NeMo qwen2_5_collate_fn(samples, p)", timings["seed"]))
    lines.append(
        f"collate: collator {_ms(ours.median)}, floor {_ms(base.median)}, overhead "
        f"{overhead:+.1f}% (goal <= {OVERHEAD_GOAL_PERCENT:.0f}%: "
        f"{_goal(overhead <= OVERHEAD_GOAL_PERCENT)}); paired rounds "
        f"{_paired_percent_above(ours, base):+.1f}%, best runs "
        f"{_percent_above(ours.best, base.best):+.1f}%, CPU time "
        f"{_percent_above(ours.cpu_median, base.cpu_median):+.1f}%"
    )
    lines.append(
        f"label policy: turns='last', loss_weights=True costs "
        f"{_percent_above(timings['policy'].median, ours.median):+.1f}% over the default policy"
    )
    lines += _contention_warning(base)
    if "seed" in timings:
        lines += _seed_collate_lines(seed_module, samples, processor, collator, timings)
    missed = overhead > OVERHEAD_GOAL_PERCENT
    if settings.profile == "always" or (settings.profile == "auto" and missed):
        lines += profile_collator(collator, samples, processor, runs=max(settings.repeat, 5))
    return lines


_BENCH_POLICY = LabelPolicy(turns="last", loss_weights=True)

# Undisturbed, a single-threaded run's wall time is within a few percent of its CPU time.
_CONTENDED_RATIO = 1.2


def _contention_warning(timing: Timing) -> list[str]:
    """A warning when other processes took the CPU away during the timed runs."""
    ratio = timing.median / timing.cpu_median
    if ratio < _CONTENDED_RATIO:
        return []
    return [
        f"    warning: the floor's median wall time is {ratio:.1f}x its CPU time, so other "
        "processes competed for the CPU; the CPU-time and best-run figures are the steadier ones"
    ]


def _seed_collate_lines(
    seed_module: Any,
    samples: Sequence[Mapping[str, Any]],
    processor: Any,
    collator: BaseCollator,
    timings: Mapping[str, Timing],
) -> list[str]:
    ours, theirs = collator(samples), seed_module.qwen2_5_collate_fn(samples, processor)
    same_ids = torch.equal(ours["input_ids"], theirs["input_ids"])
    same_labels = torch.equal(ours["labels"], theirs["labels"])
    collator_time, seed_time, floor_time = (
        timings[name].median for name in ("collator", "seed", "floor")
    )
    return [
        f"nemo_automodel: qwen2_5_collate_fn {_ms(seed_time)} "
        f"({_percent_above(seed_time, floor_time):+.1f}% above the floor), "
        f"vlm_collate {_ms(collator_time)}, ratio vlm_collate/nemo_automodel "
        f"{collator_time / seed_time:.2f}x, same input_ids: {_yes(same_ids)}, "
        f"same labels: {_yes(same_labels)}"
    ]


_STEPS = ("filter", "template", "hook", "labels", "check", "pad", "media")


def profile_collator(
    collator: BaseCollator,
    samples: Sequence[Mapping[str, Any]],
    processor: Any,
    *,
    runs: int,
) -> list[str]:
    """Profile collator and floor; show where the collator spends time the floor does not."""
    conversations = _conversations(samples)
    ours = _profile(lambda: collator(samples), runs)
    floor = _profile(lambda: _floor_call(processor, conversations), runs)

    def per_call(stats: pstats.Stats, file_suffix: str, function: str) -> str:
        return _ms(_cumulative(stats, file_suffix, function) / runs)

    lines = [
        f"    profile (cProfile, cumulative per call, mean of {runs} calls; cProfile slows "
        "Python-heavy code more than the processor's C code):",
        f"      total: collator {_ms(_total(ours) / runs)}, floor {_ms(_total(floor) / runs)}",
        f"      chat-template renders: collator {per_call(ours, '_pipeline.py', 'render')}, "
        f"floor {per_call(floor, 'bench.py', '_render_texts')}",
        f"      processor call: collator {per_call(ours, '_pipeline.py', 'call_processor')}, "
        f"floor {per_call(floor, 'bench.py', '_run_processor')}",
        "      pipeline steps: "
        + ", ".join(f"{step} {per_call(ours, '_pipeline.py', step)}" for step in _STEPS),
        "      costliest vlm_collate functions beyond the floor (neither the renders, the "
        "processor call, nor their callers):",
        f"        {'':<56}{'cumulative':>12}{'own':>12}",
    ]
    for where, cumulative, own in _beyond_floor(ours)[:12]:
        lines.append(f"        {where:<56}{_ms(cumulative / runs):>12}{_ms(own / runs):>12}")
    return lines


def _profile(fn: Callable[[], Any], runs: int) -> pstats.Stats:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(runs):
        fn()
    profiler.disable()
    return pstats.Stats(profiler)


def _entries(stats: pstats.Stats) -> Iterator[tuple[str, int, str, float]]:
    """``(file, line, function, cumulative seconds)`` of every profiled function."""
    for (filename, line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        yield filename, line, function, row[3]


def _total(stats: pstats.Stats) -> float:
    return cast("float", stats.total_tt)  # type: ignore[attr-defined]


def _cumulative(stats: pstats.Stats, file_suffix: str, function: str) -> float:
    suffix = os.path.join("vlm_collate", file_suffix)
    found = [
        cumulative
        for filename, _, name, cumulative in _entries(stats)
        if name == function and filename.endswith(suffix)
    ]
    return max(found, default=0.0)


_FLOOR_WORK = ("render", "call_processor")


def _beyond_floor(stats: pstats.Stats) -> list[tuple[str, float, float]]:
    """``(function, cumulative, own seconds)`` of package functions doing no floor work.

    Floor work is ``BaseCollator.render`` and ``BaseCollator.call_processor``
    with everything they call; their callers (``__call__``, ``template``) mix
    floor work with the rest, so they are left out too.
    """
    table = stats.stats  # type: ignore[attr-defined]
    base = os.path.join("vlm_collate", "_pipeline.py")
    roots = [key for key in table if key[2] in _FLOOR_WORK and key[0].endswith(base)]
    stats.calc_callees()
    callees = stats.all_callees  # type: ignore[attr-defined]
    excluded = _reachable(roots, lambda key: callees.get(key, {}))
    excluded |= _reachable(roots, lambda key: table[key][4])
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = [
        (f"{os.path.relpath(key[0], os.path.dirname(package))}:{key[1]} {key[2]}", row[3], row[2])
        for key, row in table.items()
        if key[0].startswith(package) and key not in excluded and not key[0].endswith("bench.py")
    ]
    return sorted(found, key=lambda entry: entry[1], reverse=True)


def _reachable(starts: Sequence[Any], neighbours: Callable[[Any], Any]) -> set[Any]:
    seen = set(starts)
    pending = list(starts)
    while pending:
        for key in neighbours(pending.pop()):
            if key not in seen:
                seen.add(key)
                pending.append(key)
    return seen


# -- 3. renders per batch -------------------------------------------------------------


@attrs.define
class RenderSpy:
    """Counts ``apply_chat_template`` calls on real objects, by phase.

    [`install`][vlm_collate.tools.bench.RenderSpy.install] replaces the method on one instance with
    a wrapper that
    counts the call and then runs the original; [`remove`][vlm_collate.tools.bench.RenderSpy.remove]
    takes it away.
    """

    counts: collections.Counter[str] = attrs.Factory(collections.Counter)
    phase: str = "outside"
    _owners: list[Any] = attrs.Factory(list)

    def install(self, owner: Any) -> None:
        original = owner.apply_chat_template

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.counts[self.phase] += 1
            return original(*args, **kwargs)

        owner.apply_chat_template = counting
        self._owners.append(owner)

    def remove(self) -> None:
        for owner in self._owners:
            vars(owner).pop("apply_chat_template", None)
        self._owners.clear()


@attrs.frozen
class _PhaseMarking(LabelStrategy):
    """Runs ``inner`` with the spy's phase set to ``"labels"``."""

    inner: LabelStrategy
    spy: RenderSpy = attrs.field(eq=False)

    def build(self, input_ids: torch.Tensor, conversations: Any, processor: Any) -> torch.Tensor:
        self.spy.phase = "labels"
        try:
            return self.inner.build(input_ids, conversations, processor)
        finally:
            self.spy.phase = "outside"


def bench_renders(settings: BenchSettings, processor: Any, family: str) -> list[str]:
    """Count template renders by the label strategy of ``DefaultCollator``, batch by batch."""
    writer = ConversationWriter(random.Random(settings.seed + 2))
    spy = RenderSpy()
    strategy = DefaultCollator(processor=processor).label_strategy
    collator = DefaultCollator(processor=processor, label_strategy=_PhaseMarking(strategy, spy))
    for owner in (processor, processor.tokenizer):
        spy.install(owner)
    per_batch = []
    try:
        for _ in range(1 + settings.render_batches):
            spy.counts.clear()
            collator(collate_samples(writer, 4))
            per_batch.append(dict(spy.counts))
    finally:
        spy.remove()
    by_labels = [counts.get("labels", 0) for counts in per_batch]
    by_template_step = [counts.get("outside", 0) for counts in per_batch]
    later = sum(by_labels[1:])
    return [
        "",
        f"[3] template renders: DefaultCollator on {family} ({type(processor).__name__}), "
        f"label strategy {strategy!r}; batches of 4 samples",
        f"    renders while building labels, per batch:      {by_labels}",
        f"    the template step's own calls, per batch:      {by_template_step}",
        f"derived markers: {by_labels[0]} renders by the label strategy in the first batch, "
        f"{later} in the next {settings.render_batches} batches (goal 0: {_goal(later == 0)})",
    ]


# -- 4. NeMo Automodel ------------------------------------------------------------------------


def import_seed() -> tuple[Any, str]:
    """Return NeMo Automodel's ``collate_fns`` module (or None) and a sentence saying why not."""
    try:
        from nemo_automodel.components.datasets.vlm import collate_fns
    except Exception as exc:  # any import failure means the comparison is skipped
        return None, f"nemo_automodel is not importable ({type(exc).__name__}: {exc})"
    version = getattr(sys.modules.get("nemo_automodel"), "__version__", "unknown version")
    return collate_fns, f"nemo_automodel {version}"


# -- command line ---------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        msg = f"must be a positive int (got {value})"
        raise argparse.ArgumentTypeError(msg)
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        msg = f"must be 0 or a positive int (got {value})"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m vlm_collate.tools.bench",
        description="Time label building and collate overhead against baselines "
        "measured in the same run.",
    )
    parser.add_argument(
        "--repeat", type=_positive, help="timed runs per figure (default 30; 3 with --quick)"
    )
    parser.add_argument(
        "--warmup", type=_non_negative, help="untimed runs first (default 2; 1 with --quick)"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=8,
        help="rows of the label-building batch (default 8)",
    )
    parser.add_argument(
        "--seq-len",
        type=_positive,
        default=3000,
        help="real tokens per label-building row (default 3000)",
    )
    parser.add_argument(
        "--collate-batch",
        type=_positive,
        default=16,
        help="samples of the collate batch (default 16)",
    )
    parser.add_argument(
        "--max-pixels",
        type=_positive,
        help="image budget of the collate processor, e.g. 200704 (= 28*28*256); "
        "default: build_processor's own",
    )
    parser.add_argument(
        "--batches",
        type=_positive,
        help="batches after the first in the render count (default 5; 2 with --quick)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the collator (also done when the overhead misses 5%%, but not with --quick)",
    )
    parser.add_argument(
        "--threads",
        type=_non_negative,
        default=1,
        help="torch threads (default 1, as in DataLoader workers; 0 keeps torch's default)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the generated samples (default 0)"
    )
    parser.add_argument(
        "--no-nemo-compare",
        dest="no_seed_compare",
        action="store_true",
        help="skip the comparison with nemo_automodel's collate_fns",
    )
    parser.add_argument(  # the former name, still accepted
        "--no-seed-compare", dest="no_seed_compare", action="store_true", help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--quick", action="store_true", help="few repeats: a smoke run, not a measurement"
    )
    return parser


def settings_from(args: argparse.Namespace) -> BenchSettings:
    """Turn parsed options into settings; ``--quick`` lowers the defaults only."""
    quick = args.quick

    def pick(value: int | None, normal: int, fast: int) -> int:
        return value if value is not None else (fast if quick else normal)

    return BenchSettings(
        repeat=pick(args.repeat, 30, 3),
        warmup=pick(args.warmup, 2, 1),
        label_rows=args.batch_size,
        seq_len=args.seq_len,
        collate_batch=args.collate_batch,
        max_pixels=args.max_pixels,
        render_batches=pick(args.batches, 5, 2),
        profile="always" if args.profile else ("never" if quick else "auto"),
        seed=args.seed,
        threads=args.threads or None,
    )


def run(
    settings: BenchSettings, *, compare_seed: bool = True, emit: Callable[[str], None] = print
) -> bool:
    """Run every benchmark, passing report lines to ``emit`` as each part ends.

    Torch's thread count is restored afterwards. Returns whether every
    output check (identical labels) passed.
    """
    previous_threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        return _run_all(settings, compare_seed, emit)
    finally:
        torch.set_num_threads(previous_threads)


def _run_all(settings: BenchSettings, compare_seed: bool, emit: Callable[[str], None]) -> bool:
    from ..testing import build_processor

    seed_module, seed_note = import_seed() if compare_seed else (None, "--no-nemo-compare given")
    _emit(emit, [*_header(settings), f"    NeMo Automodel under comparison: {seed_note}"])
    label_lines, identical = bench_labels(settings, build_processor("qwen2_5_vl"), seed_module)
    _emit(emit, label_lines)
    collate_processor = build_processor("qwen2_5_vl", max_pixels=settings.max_pixels)
    budget = _budget(collate_processor, settings)
    _emit(emit, bench_collate(settings, collate_processor, seed_module, budget))
    if seed_module is None:
        _emit(emit, [f"nemo_automodel: skipped, {seed_note}"])
    llava = build_processor("llava_next_mistral")
    _emit(emit, bench_renders(settings, llava, "llava_next_mistral"))
    _emit(emit, ["", f"load average at the end: {_load()}"])
    return identical


def _emit(emit: Callable[[str], None], lines: Sequence[str]) -> None:
    for line in lines:
        emit(line)


def _budget(processor: Any, settings: BenchSettings) -> str:
    image_processor = processor.image_processor
    side = image_processor.patch_size * image_processor.merge_size
    pixels, smallest = image_processor.size["longest_edge"], image_processor.size["shortest_edge"]
    origin = "--max-pixels" if settings.max_pixels is not None else "build_processor's default"
    return (
        f"max_pixels={pixels} (= {side}*{side}*{pixels // side**2}, {origin}), "
        f"min_pixels={smallest}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its report; 0 unless an output check failed."""
    args = build_parser().parse_args(argv)
    identical = run(settings_from(args), compare_seed=not args.no_seed_compare)
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
