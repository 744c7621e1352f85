"""The collator pipeline, as a template method.

`__call__` runs every batch through the same steps::

    filter    validate, copy and normalise samples; apply the text and length policies
    template  render the chat template and run the processor
    hook      model-specific changes to the tokenized batch (identity by default)
    labels    the label strategy, then padding and media placeholders masked
    check     the overlong and empty-label policies; dropped samples re-run the steps above
    pad       pad / truncate token-axis tensors, then shift labels
    media     the media strategy finishes pixels and per-sample media counts

A model family subclasses [`BaseCollator`][vlm_collate.BaseCollator], names its ``label_strategy``
and ``media_strategy``, and overrides only the steps that differ.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import contextvars
import functools
import inspect
import logging
import re
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal, cast

import attrs
import torch

from ._cache import ObjectCache
from ._calls import CallState
from ._checks import (
    EmptyLabelsPolicy,
    OverlongPolicy,
    SpecialTokensPolicy,
    check_empty_labels,
    check_estimated_length,
    check_length,
    check_special_tokens,
    check_supported_media,
    drop_samples,
)
from ._hf_trainer import warn_if_shifted_for_trainer
from ._options import (
    boolean,
    one_of,
    optional,
    positive_int,
    subset_of,
    to_dict,
    to_names,
    to_pixel_dtype_or_auto,
    token_count_or_none,
)
from ._padding import (
    Side,
    padded_length,
    padded_side,
    repad,
    shift_for_next_token,
    token_axis_keys,
)
from ._padding_free import check_padding_free, padding_free_batch
from ._prepare import prepare_sample
from ._report import CollateReport, DroppedSample, SampleWarning, warn_once
from ._samples import STEERING_KEYS, Sample, require_batch
from ._template import render
from ._tokens import tokenizer_of
from ._types import Processor
from .errors import (
    ConfigurationError,
    ProcessorError,
    SampleError,
    TemplateError,
    VLMCollateError,
    relocated,
)
from .formats import (
    RowFormat,
    UnknownRolesPolicy,
    empty_labels_hint,
    format_converter,
    role_problem,
)
from .labels import IGNORE_INDEX, LabelPolicy, LabelStrategy, ReasoningMarkers
from .media import (
    DEFAULT_MAX_IMAGE_PIXELS,
    MEDIA_KEYS,
    MediaAccess,
    MediaStrategy,
    estimate_tokens,
    media_token_ids,
    using_access,
    vision_token_ids,
)

__all__ = [
    "BaseCollator",
    "CollateReport",
    "DroppedSample",
    "EmptyLabelsPolicy",
    "OverlongPolicy",
    "SampleWarning",
    "SpecialTokensPolicy",
]

logger = logging.getLogger("vlm_collate")

# The default of the strategy fields: __attrs_post_init__ asks the family for
# its strategies once every field (a subclass's too) is set.
_FROM_FAMILY: Any = None
_CURRENT_REPORT: contextvars.ContextVar[CollateReport] = contextvars.ContextVar("report")
_SPECIAL_PATTERNS = ObjectCache()
_MEDIA_IDS = ObjectCache()


# attrs converters as plain functions: mypy's attrs plugin reads no classmethods.
def _media_access(value: Any) -> MediaAccess:
    return MediaAccess.coerce(value)


def _label_policy(value: LabelPolicy | Mapping[str, Any] | None) -> LabelPolicy:
    return LabelPolicy.coerce(value)


@attrs.define(kw_only=True)
class BaseCollator(abc.ABC):
    """Turns a list of chat samples into a training batch.

    An abstract class: a model family subclasses it, implements
    `default_label_strategy` and `default_media_strategy`, and may
    override any step method (never ``__call__``). A caller may still pass
    ``label_strategy=`` or ``media_strategy=`` to replace the family's choice.

    Args:
        processor: The model's Hugging Face processor (or tokenizer).
        max_length: Longest allowed row, in tokens before shifting.
        drop_overlong: Estimate each sample's length (text plus expanded image
            tokens) before the processor runs, and apply ``overlong`` to those
            over ``max_length``.
        padding: ``"longest"`` pads to the longest row; ``"max_length"`` to ``max_length``.
        pad_to_multiple_of: Round the final row length up to a multiple of this.
        padding_side: ``"left"`` or ``"right"``; None keeps the tokenizer's side.
        shift_labels: True gives pre-shifted labels (``labels[:, t]`` is the target of
            ``input_ids[:, t]``, one column shorter); False gives Hugging Face's
            unshifted convention for models that shift internally.
        pixel_dtype: Dtype of pixel tensors; ``"auto"`` uses the family default.
        empty_labels: Policy for a sample with no trained token.
        special_tokens_in_text: Policy for message text holding control tokens.
        overlong: Policy for a sample longer than ``max_length``.
        unsupported_media: Policy for a sample holding media the processor
            cannot take (see `supported_media`): ``"raise"`` or ``"drop"``.
        max_image_pixels: Largest accepted image area (decompression-bomb guard);
            when not the default it overrides ``media_access.max_image_pixels``.
        media_access: What media references samples may name and how large media
            may be (a [`MediaAccess`][vlm_collate.MediaAccess] or a mapping of its
            options). The default refuses URLs and bounds every medium.
        processor_kwargs: Extra keyword arguments for the processor call.
        trusted_keys: Steering keys of a sample the collator obeys; by default
            none, so a dataset row cannot steer the library. ``("_injected_fake",)``
            lets the code that adds placeholder images (as NeMo's dataset
            wrapper does) hide them from attention.
        label_strategy: Finds the assistant turns (which tokens are trained).
        label_policy: Chooses which of the turns are trained, their end-of-turn
            tokens, reasoning blocks and loss weights (a [`LabelPolicy`][vlm_collate.LabelPolicy]
            or a mapping of its options). The default trains every assistant
            turn, as NeMo Automodel does.
        media_strategy: Gathers and finishes media.
        format: The row format of the samples (see `vlm_collate.formats`):
            ``"conversation"`` (the library's own, the default), ``"messages"``,
            ``"sharegpt"``, ``"llamafactory"``, ``"openai"``, ``"cauldron"``,
            ``"auto"`` or a [`RowFormat`][vlm_collate.formats.RowFormat].
        unknown_roles: Policy for a message whose role is neither a standard
            role (system, user, assistant, tool) nor one the label policy
            trains: ``"raise"``, ``"warn"``, ``"drop"`` or ``"allow"``.
        padding_free: Return one row ``[1, total]`` of the samples end to end, with
            ``cu_seq_lens_q/k`` and ``max_length_q/k`` for flash-attention varlen
            kernels, per-sample ``position_ids`` and no padding.
    """

    default_pixel_dtype: ClassVar[torch.dtype | None] = None
    processor_defaults: ClassVar[Mapping[str, Any]] = {}
    reasoning_markers: ClassVar[ReasoningMarkers] = ReasoningMarkers()
    # Roles whose turns the template writes inside assistant turns (Gemma 4's tool responses).
    embedded_roles: ClassVar[frozenset[str]] = frozenset()
    # Batch entries holding media, never padded or shifted along the token axis;
    # a family whose processor returns more adds its own.
    media_keys: ClassVar[frozenset[str]] = MEDIA_KEYS

    processor: Processor
    max_length: int | None = attrs.field(default=None, validator=token_count_or_none)
    drop_overlong: bool = attrs.field(default=False, validator=boolean)
    padding: Literal["longest", "max_length"] = attrs.field(
        default="longest", validator=one_of("longest", "max_length")
    )
    pad_to_multiple_of: int | None = attrs.field(default=None, validator=token_count_or_none)
    padding_side: Literal["left", "right"] | None = attrs.field(
        default=None, validator=optional(one_of("left", "right"))
    )
    shift_labels: bool = attrs.field(default=True, validator=boolean)
    pixel_dtype: torch.dtype | str | None = attrs.field(
        default="auto", converter=to_pixel_dtype_or_auto
    )
    empty_labels: EmptyLabelsPolicy = attrs.field(
        default="raise", validator=one_of("raise", "warn", "drop")
    )
    special_tokens_in_text: SpecialTokensPolicy = attrs.field(
        default="raise", validator=one_of("raise", "drop", "allow")
    )
    overlong: OverlongPolicy = attrs.field(
        default="drop", validator=one_of("drop", "raise", "truncate")
    )
    unsupported_media: Literal["raise", "drop"] = attrs.field(
        default="raise", validator=one_of("raise", "drop")
    )
    max_image_pixels: int = attrs.field(default=DEFAULT_MAX_IMAGE_PIXELS, validator=positive_int)
    media_access: MediaAccess = attrs.field(factory=MediaAccess, converter=_media_access)
    # mypy's attrs plugin does not read attrs.Converter objects (takes_field=True).
    processor_kwargs: Mapping[str, Any] = attrs.field(factory=dict, converter=to_dict)  # type: ignore[misc]
    trusted_keys: tuple[str, ...] = attrs.field(
        default=(),
        converter=to_names,  # type: ignore[misc]  # an attrs.Converter, see above
        validator=subset_of(STEERING_KEYS),
    )
    label_strategy: LabelStrategy = _FROM_FAMILY
    label_policy: LabelPolicy = attrs.field(factory=LabelPolicy, converter=_label_policy)
    media_strategy: MediaStrategy = _FROM_FAMILY
    # The attrs.field stub types the attribute by its default, not by the converter's result.
    format: RowFormat = attrs.field(default="conversation", converter=format_converter)  # type: ignore[assignment]
    unknown_roles: UnknownRolesPolicy = attrs.field(
        default="raise", validator=one_of("raise", "warn", "drop", "allow")
    )
    padding_free: bool = attrs.field(default=False, validator=boolean)

    _calls: CallState = attrs.field(init=False, factory=CallState, eq=False, repr=False)
    _warned_pre_shift: bool = attrs.field(init=False, default=False, eq=False, repr=False)
    dropped_counts: collections.Counter[str] = attrs.field(
        init=False, factory=collections.Counter, eq=False, repr=False
    )

    def __new__(cls, *args: Any, **kwargs: Any) -> BaseCollator:
        if inspect.isabstract(cls):
            missing = ", ".join(sorted(cls.__abstractmethods__))
            msg = (
                f"{cls.__name__} is abstract: subclass it and implement {missing} "
                "(see 'Adding a VLM' in the docs), or use vlm_collate.collator_for(processor)."
            )
            raise TypeError(msg)
        return super().__new__(cls)

    def __attrs_post_init__(self) -> None:
        if self.label_strategy is None:
            self.label_strategy = self.default_label_strategy()
        if self.media_strategy is None:
            self.media_strategy = self.default_media_strategy()
        for name, kind in (("label_strategy", LabelStrategy), ("media_strategy", MediaStrategy)):
            value = getattr(self, name)
            if not isinstance(value, kind):
                msg = f"'{name}' must be a {kind.__name__} (got {type(value).__name__})."
                raise ConfigurationError(msg)
        if self.padding == "max_length" and self.max_length is None:
            msg = "'padding' is 'max_length' but 'max_length' is None; give a max_length."
            raise ConfigurationError(msg)
        if self.drop_overlong and self.max_length is None:
            msg = "'drop_overlong' needs 'max_length' (got None)."
            raise ConfigurationError(msg)
        # One image limit in effect: max_image_pixels, when given, wins.
        self.media_access = self.media_access.with_max_image_pixels(self.max_image_pixels)
        self.max_image_pixels = self.media_access.max_image_pixels
        check_padding_free(self)

    @property
    def last_report(self) -> CollateReport | None:
        """The report of the last call made from the current thread (None before any).

        Each thread sees its own calls' reports, so a collator shared by
        several threads never hands one caller another call's report.
        """
        return typing.cast("CollateReport | None", self._calls.get("report"))

    @last_report.setter
    def last_report(self, report: CollateReport | None) -> None:
        self._calls.set("report", report)

    @abc.abstractmethod
    def default_label_strategy(self) -> LabelStrategy:
        """The family's label strategy, used when the caller passes none."""

    @abc.abstractmethod
    def default_media_strategy(self) -> MediaStrategy:
        """The family's media strategy, used when the caller passes none."""

    @property
    def tokenizer(self) -> Any:
        """The processor's tokenizer."""
        return tokenizer_of(self.processor)

    @property
    def resolved_pixel_dtype(self) -> torch.dtype | None:
        """The pixel dtype in effect (``"auto"`` resolved to the family default)."""
        if self.pixel_dtype == "auto":
            return self.default_pixel_dtype
        return typing.cast("torch.dtype | None", self.pixel_dtype)

    @typing.final
    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate ``examples`` into a batch of tensors."""
        report = self.last_report = CollateReport(batch_size=0)
        with _reporting(report):
            samples = self.filter(examples, report)
            while True:
                report.truncated.clear()
                batch = self.hook(self.template(samples), samples)
                batch["labels"], weights = self.labels(batch, samples)
                if weights is not None:
                    batch["loss_weights"] = weights
                rejected = self.check(batch, samples, report)
                if not rejected:
                    break
                samples = drop_samples(samples, rejected, report, self.dropped_counts)
            report.kept = [sample.index for sample in samples]
            lengths = self._attention_mask(batch).sum(dim=1).tolist()
            batch = self.media(self.pad(batch, samples), samples)
            return padding_free_batch(self, batch, samples, lengths) if self.padding_free else batch

    def current_report(self) -> CollateReport:
        """The report of the batch being collated, for steps that add to it."""
        try:
            return _CURRENT_REPORT.get()
        except LookupError:
            msg = "current_report() is only available while the collator runs its steps."
            raise RuntimeError(msg) from None

    # -- steps ---------------------------------------------------------------

    def filter(self, examples: Sequence[Mapping[str, Any]], report: CollateReport) -> list[Sample]:
        """Validate and copy every example; apply the text and estimated-length policies."""
        if not self._warned_pre_shift:
            self._warned_pre_shift = warn_if_shifted_for_trainer(self)
        require_batch(examples, "samples")
        report.batch_size = len(examples)
        samples = [
            prepare_sample(
                self.format.convert(example, index),
                index,
                media_access=self.media_access,
                trusted_keys=self.trusted_keys,
            )
            for index, example in enumerate(examples)
        ]
        for sample in samples:  # what the media readers noted, such as a multi-frame image
            for reason, detail in sample.media_notes:
                report.warn(SampleWarning(sample.index, reason, detail), logger)
        supported = self.supported_media()
        rejected = {}
        for sample in samples:
            problem = (
                role_problem(self, sample, report)
                or check_supported_media(
                    sample, supported, self.unsupported_media, self.media_refusal
                )
                or check_special_tokens(sample, self._special_tokens(), self.special_tokens_in_text)
                or self._estimated_overlong(sample)
            )
            if problem is not None:
                rejected[sample.index] = problem
        return drop_samples(samples, rejected, report, self.dropped_counts)

    def supported_media(self) -> frozenset[str]:
        """Modalities the processor takes, read from its sub-processors.

        A sample with any other modality is refused rather than trained
        without it. Families whose processors differ override this.
        """
        processor = self.processor
        found = set()
        if getattr(processor, "image_processor", None) is not None:
            found.add("image")
        if getattr(processor, "video_processor", None) is not None:
            found.add("video")
        if any(
            getattr(processor, name, None) is not None
            for name in ("feature_extractor", "audio_processor", "audio_feature_extractor")
        ):
            found.add("audio")
        return frozenset(found)

    def media_refusal(self, kind: str) -> str:
        """The sentence explaining why ``kind`` items are refused."""
        return f"{type(self.processor).__name__} cannot take {kind} items; the {kind} would be lost"

    def template(self, samples: Sequence[Sample]) -> dict[str, Any]:
        """Render each conversation to text and run the processor on texts and media."""
        texts = [self.render(sample) for sample in samples]
        media = self.gather_media(samples)
        return self.call_processor(samples, text=texts, **media)

    def hook(self, batch: dict[str, Any], samples: Sequence[Sample]) -> dict[str, Any]:
        """Change the tokenized batch before labels are built (identity by default)."""
        return batch

    def labels(
        self, batch: Mapping[str, Any], samples: Sequence[Sample]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Build ``(labels, loss_weights)``; padding and media placeholders are never trained.

        The label strategy finds the turns, the label policy chooses among
        them. The weights are None unless the policy asks for loss weights;
        they are 0 wherever labels are ignored.
        """
        input_ids = batch["input_ids"]
        conversations = [sample.conversation for sample in samples]
        labels = self.label_strategy.build(input_ids, conversations, self.processor)
        labels, weights = self.label_policy.apply(
            labels,
            input_ids,
            conversations,
            [sample.index for sample in samples],
            self.processor,
            reasoning_markers=self.reasoning_markers,
            embedded_roles=self.embedded_roles,
        )
        untrained = self._attention_mask(batch) == 0
        media_ids = self._media_token_tensor()
        if media_ids.numel():
            untrained |= torch.isin(input_ids, media_ids)
        labels = labels.masked_fill(untrained, IGNORE_INDEX)
        return labels, _weights_for(labels, weights)

    def check(
        self, batch: dict[str, Any], samples: Sequence[Sample], report: CollateReport
    ) -> dict[int, DroppedSample]:
        """Apply the ``overlong`` and ``empty_labels`` policies to the processed rows.

        Returns the samples to drop, keyed by their index; the caller re-runs
        the steps without them.
        """
        lengths = self._attention_mask(batch).sum(dim=1).tolist()
        trained = (batch["labels"] != IGNORE_INDEX).any(dim=1).tolist()  # padding is never labelled
        rejected = {}
        for row, sample in enumerate(samples):
            if self.max_length is not None and lengths[row] > self.max_length:
                problem = check_length(
                    sample.index,
                    lengths[row],
                    self.max_length,
                    self.overlong,
                    functools.partial(self._cut_hits_media, batch, row, lengths[row]),
                )
                if problem is not None:
                    rejected[sample.index] = problem
                    continue
                report.truncated.append(sample.index)
                trained[row] = self._row_has_labels(batch, row, lengths[row])
            if not trained[row]:
                hint = empty_labels_hint(sample.conversation, self.label_policy.roles)
                problem = check_empty_labels(
                    sample.index, f"{_EMPTY_LABELS_DETAIL} ({hint})", self.empty_labels, report
                )
                if problem is not None:
                    rejected[sample.index] = problem
        return rejected

    def pad(self, batch: dict[str, Any], samples: Sequence[Sample]) -> dict[str, Any]:
        """Pad or truncate every token-axis tensor, then shift labels if asked."""
        keys = token_axis_keys(batch, exclude=self.media_keys)
        lengths = self._attention_mask(batch).sum(dim=1).tolist()
        longest = max(lengths)
        if self.max_length is not None:
            longest = min(longest, self.max_length)
        length = padded_length(
            longest,
            max_length=self.max_length,
            pad_to_max_length=self.padding == "max_length",
            pad_to_multiple_of=self.pad_to_multiple_of,
            shift=self.shift_labels,
        )
        side_in = self._padded_side(batch)
        side_out = cast(
            "Side", self.padding_side or getattr(self.tokenizer, "padding_side", "right")
        )
        for key in keys:
            batch[key] = repad(
                batch[key],
                lengths,
                length,
                side_in=side_in,
                side_out=side_out,
                pad_value=self._pad_value(key),
            )
        if self.shift_labels:
            shift_for_next_token(batch, keys)
        return batch

    def media(self, batch: dict[str, Any], samples: Sequence[Sample]) -> dict[str, Any]:
        """Hide fake images from attention, then let the media strategy finish media.

        A sample marked ``"_injected_fake": True`` carries a placeholder image
        (added so every rank runs the vision tower under FSDP / ZeRO-3); its
        vision tokens get ``attention_mask`` 0. The mark is read only when
        ``"_injected_fake"`` is in ``trusted_keys``.
        """
        fake_rows = [
            row for row, sample in enumerate(samples) if sample.flags.get("_injected_fake")
        ]
        if fake_rows and "attention_mask" in batch:
            self._mask_fake_images(batch, fake_rows)
        return self.media_strategy.finalize(
            batch,
            [sample.conversation for sample in samples],
            processor=self.processor,
            pixel_dtype=self.resolved_pixel_dtype,
        )

    # -- helpers for steps ---------------------------------------------------

    def render(self, sample: Sample, **template_kwargs: Any) -> str:
        """Render one sample's conversation with the chat template."""
        try:
            return render(self.processor, sample.conversation, **template_kwargs)
        except TemplateError as exc:
            raise TemplateError(str(exc), sample_index=sample.index) from exc

    def gather_media(self, samples: Sequence[Sample]) -> dict[str, Any]:
        """Ask the media strategy for processor inputs; errors name the caller's sample index."""
        try:
            with using_access(self.media_access):
                return self.media_strategy.gather([sample.conversation for sample in samples])
        except SampleError as exc:
            if exc.sample_index is None or not 0 <= exc.sample_index < len(samples):
                raise
            raise relocated(exc, samples[exc.sample_index].index) from exc

    def call_processor(self, samples: Sequence[Sample], **inputs: Any) -> dict[str, Any]:
        """Call the processor with padding and tensors on; failures name the samples."""
        options = {
            "padding": True,
            "return_tensors": "pt",
            **self.processor_defaults,
            **inputs,
            **self.processor_kwargs,
        }
        try:
            return dict(self.processor(**options))
        except VLMCollateError:
            raise
        except Exception as exc:
            raise self._processor_error(samples, exc) from exc

    def _processor_error(self, samples: Sequence[Sample], exc: Exception) -> VLMCollateError:
        for sample in samples:  # a template error in one sample is the most useful answer
            try:
                self.render(sample)
            except TemplateError as template_error:
                return template_error
        failure = f"{type(exc).__name__}: {exc}"
        if len(samples) == 1:
            return ProcessorError(f"the processor failed: {failure}", sample_index=samples[0].index)
        for sample in samples:  # error path only: the sample that fails on its own is the culprit
            try:
                self.template([sample])
            except VLMCollateError as error:
                return error
        indices = ", ".join(str(sample.index) for sample in samples)
        msg = f"the processor failed on samples {indices} together (each alone works): {failure}"
        return ProcessorError(msg)

    def _mask_fake_images(self, batch: dict[str, Any], rows: Sequence[int]) -> None:
        vision_ids = torch.tensor(sorted(vision_token_ids(self.processor)), dtype=torch.long)
        if not vision_ids.numel():
            name = type(self.processor).__name__
            warn_once(
                logger,
                ("no vision tokens", name),
                "%s exposes no vision placeholder tokens, so fake images stay visible to "
                "attention; set image_token_id on the processor to fix this.",
                name,
            )
            return
        for row in rows:
            placeholders = torch.isin(batch["input_ids"][row], vision_ids)
            batch["attention_mask"][row] = batch["attention_mask"][row].masked_fill(placeholders, 0)

    def _padded_side(self, batch: Mapping[str, Any]) -> Side:
        """The side the processor padded on, read from the attention mask.

        Right-padded rows always start with a real token, so a padded first
        column means left padding (processors may override the tokenizer's side).
        """
        return padded_side(self._attention_mask(batch))

    def _attention_mask(self, batch: Mapping[str, Any]) -> torch.Tensor:
        mask: torch.Tensor | None = batch.get("attention_mask")
        if mask is None:
            return torch.ones_like(batch["input_ids"])
        return mask

    def _media_token_tensor(self) -> torch.Tensor:
        return _MEDIA_IDS.get_or_compute(
            self.processor,
            "media token ids",
            lambda: torch.tensor(sorted(media_token_ids(self.processor)), dtype=torch.long),
        )

    def _pad_value(self, key: str) -> int:
        if key == "input_ids":
            pad_id = getattr(self.tokenizer, "pad_token_id", None)
            return pad_id if isinstance(pad_id, int) else 0
        if key == "labels":
            return IGNORE_INDEX
        return 0  # attention masks, token types and loss weights

    def _special_tokens(self) -> re.Pattern[str] | None:
        tokenizer = self.tokenizer
        return _SPECIAL_PATTERNS.get_or_compute(
            tokenizer, "control tokens", lambda: _control_token_pattern(tokenizer)
        )

    def _estimated_overlong(self, sample: Sample) -> DroppedSample | None:
        if not self.drop_overlong or self.max_length is None:
            return None
        estimate = estimate_tokens(sample.conversation, self.processor)
        return check_estimated_length(sample.index, estimate, self.max_length, self.overlong)

    def _cut_hits_media(self, batch: Mapping[str, Any], row: int, length: int) -> bool:
        """Whether cutting a row at ``max_length`` would remove media tokens."""
        lost = self._real_tokens(batch, row, length)[self.max_length :]
        media_ids = self._media_token_tensor()
        return bool(media_ids.numel() and torch.isin(lost, media_ids).any())

    def _real_tokens(
        self, batch: Mapping[str, Any], row: int, length: int, key: str = "input_ids"
    ) -> torch.Tensor:
        values: torch.Tensor = batch[key][row]
        side = self._padded_side(batch)
        return values[:length] if side == "right" else values[values.shape[0] - length :]

    def _row_has_labels(self, batch: Mapping[str, Any], row: int, length: int) -> bool:
        """Whether the first ``max_length`` real tokens of a row hold a label."""
        labels = self._real_tokens(batch, row, length, key="labels")[: self.max_length]
        return bool((labels != IGNORE_INDEX).any())


_EMPTY_LABELS_DETAIL = (
    "no token would be trained: the sample has no assistant turn, the label policy "
    "selects none of its turns, or max_length cut it off"
)


@contextlib.contextmanager
def _reporting(report: CollateReport) -> Iterator[None]:
    """Make ``report`` the current one (per thread and task) while the steps run."""
    token = _CURRENT_REPORT.set(report)
    try:
        yield
    finally:
        _CURRENT_REPORT.reset(token)


def _weights_for(labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor | None:
    """Loss weights that are 0 wherever ``labels`` are ignored."""
    return None if weights is None else weights.masked_fill(labels == IGNORE_INDEX, 0.0)


def _control_token_pattern(tokenizer: Any) -> re.Pattern[str] | None:
    """One pattern matching any control token string of the tokenizer, longest first."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    tokens = {str(token) for token in getattr(tokenizer, "all_special_tokens", []) or []}
    tokens |= {str(token) for token in added.values() if getattr(token, "special", False)}
    ordered = sorted((token for token in tokens if token), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None
