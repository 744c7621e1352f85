"""The collator pipeline, as a template method.

`BaseCollator.__call__` runs every batch through the same steps:

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

import collections
import logging
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import attrs
import torch

from ._hf_trainer import warn_if_shifted_for_trainer
from ._options import one_of as _one_of
from ._padding import padded_length, padded_side, repad, shift_for_next_token, token_axis_keys
from ._prepare import prepare_sample
from ._samples import MEDIA_TYPES, Sample, find_special_token, require_batch
from ._template import render
from .errors import (
    BatchError,
    ConfigurationError,
    EmptyLabelsError,
    MediaError,
    OverlongError,
    ProcessorError,
    SampleError,
    SpecialTokenError,
    TemplateError,
    VLMCollateError,
)
from .labels import (
    IGNORE_INDEX,
    LabelPolicy,
    LabelStrategy,
    ReasoningMarkers,
    mask_enclosed,
    single_token_id,
    tokenizer_of,
)
from .media import (
    DEFAULT_MAX_IMAGE_PIXELS,
    MEDIA_KEYS,
    MediaStrategy,
    estimate_tokens,
    media_token_ids,
    vision_token_ids,
)

__all__ = ["BaseCollator", "CollateReport", "DroppedSample", "SampleWarning"]

logger = logging.getLogger("vlm_collate")

_WARNED_NO_VISION_TOKENS: set[str] = set()

EmptyLabelsPolicy = Literal["raise", "warn", "drop"]
SpecialTokensPolicy = Literal["raise", "drop", "allow"]
OverlongPolicy = Literal["drop", "raise", "truncate"]


@attrs.frozen
class DroppedSample:
    """A sample left out of a batch, and why.

    Args:
        index: Position of the sample in the batch the caller passed in.
        reason: ``"overlong"``, ``"special_tokens"``, ``"empty_labels"`` or
            ``"unsupported_media"``.
        detail: A sentence a person can act on.
    """

    index: int
    reason: str
    detail: str


@attrs.frozen
class SampleWarning:
    """A kept sample that will not train as its author may expect.

    Args:
        index: Position of the sample in the batch the caller passed in.
        reason: ``"empty_labels"`` for now.
        detail: A sentence a person can act on.
    """

    index: int
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"sample {self.index}: {self.detail}"


@attrs.define
class CollateReport:
    """What happened to one batch: which samples became rows, which were dropped."""

    batch_size: int
    kept: list[int] = attrs.Factory(list)
    dropped: list[DroppedSample] = attrs.Factory(list)
    truncated: list[int] = attrs.Factory(list)
    warnings: list[SampleWarning] = attrs.Factory(list)


def _unsupported_media(sample: Sample, supported: frozenset[str]) -> Any:
    """``(message, item, kind)`` of the first media item the processor cannot take."""
    for position, message in enumerate(sample.conversation):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for item_index, item in enumerate(content):
            kind = item.get("type")
            if kind in MEDIA_TYPES and kind not in supported:
                return position, item_index, kind
    return None


def _positive_or_none(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        msg = f"'{attribute.name}' must be a positive int or None (got {value!r})."
        raise ConfigurationError(msg)


def _to_dtype(value: Any) -> torch.dtype | str | None:
    if value is None or value == "auto" or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str):
        dtype = getattr(torch, value.removeprefix("torch."), None)
        if isinstance(dtype, torch.dtype):
            return dtype
    msg = f"'pixel_dtype' must be a torch dtype, its name, 'auto' or None (got {value!r})."
    raise ConfigurationError(msg)


@attrs.define(kw_only=True)
class BaseCollator:
    """Turns a list of chat samples into a training batch.

    Subclasses must define ``label_strategy`` and ``media_strategy`` (as field
    defaults, or the caller passes them) and may override any step method.

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
            cannot take (see
            [`supported_media`][vlm_collate._pipeline.BaseCollator.supported_media]): ``"raise"`` or
            ``"drop"``.
        max_image_pixels: Largest accepted image area (decompression-bomb guard).
        processor_kwargs: Extra keyword arguments for the processor call.
        label_strategy: Finds the assistant turns (which tokens are trained).
        label_policy: Chooses which of the turns are trained, their end-of-turn
            tokens, reasoning blocks and loss weights (a [`LabelPolicy`][vlm_collate.LabelPolicy]
            or a mapping of its options). The default trains every assistant
            turn, as NeMo Automodel does.
        media_strategy: Gathers and finishes media.
    """

    default_pixel_dtype: ClassVar[torch.dtype | None] = None
    processor_defaults: ClassVar[Mapping[str, Any]] = {}
    reasoning_markers: ClassVar[ReasoningMarkers] = ReasoningMarkers()
    # Tokens around tool responses that the template writes inside assistant turns.
    embedded_tool_responses: ClassVar[tuple[str, str] | None] = None

    processor: Any
    max_length: int | None = attrs.field(default=None, validator=_positive_or_none)
    drop_overlong: bool = False
    padding: Literal["longest", "max_length"] = attrs.field(
        default="longest", validator=_one_of("longest", "max_length")
    )
    pad_to_multiple_of: int | None = attrs.field(default=None, validator=_positive_or_none)
    padding_side: Literal["left", "right"] | None = attrs.field(
        default=None, validator=attrs.validators.optional(_one_of("left", "right"))
    )
    shift_labels: bool = True
    pixel_dtype: torch.dtype | str | None = attrs.field(default="auto", converter=_to_dtype)
    empty_labels: EmptyLabelsPolicy = attrs.field(
        default="raise", validator=_one_of("raise", "warn", "drop")
    )
    special_tokens_in_text: SpecialTokensPolicy = attrs.field(
        default="raise", validator=_one_of("raise", "drop", "allow")
    )
    overlong: OverlongPolicy = attrs.field(
        default="drop", validator=_one_of("drop", "raise", "truncate")
    )
    unsupported_media: Literal["raise", "drop"] = attrs.field(
        default="raise", validator=_one_of("raise", "drop")
    )
    max_image_pixels: int = attrs.field(
        default=DEFAULT_MAX_IMAGE_PIXELS, validator=_positive_or_none
    )
    processor_kwargs: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    label_strategy: LabelStrategy | None = None
    label_policy: LabelPolicy = attrs.field(factory=LabelPolicy, converter=LabelPolicy.coerce)
    media_strategy: MediaStrategy | None = None

    last_report: CollateReport | None = attrs.field(init=False, default=None, eq=False, repr=False)
    dropped_counts: collections.Counter[str] = attrs.field(
        init=False, factory=collections.Counter, eq=False, repr=False
    )
    _special_pattern: re.Pattern[str] | bool | None = attrs.field(
        init=False, default=False, eq=False, repr=False
    )
    _media_ids: torch.Tensor | None = attrs.field(init=False, default=None, eq=False, repr=False)
    _warned_pre_shift: bool = attrs.field(init=False, default=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        for name, kind in (("label_strategy", LabelStrategy), ("media_strategy", MediaStrategy)):
            value = getattr(self, name)
            if value is None:
                msg = f"{type(self).__name__} must define {name} (a {kind.__name__})."
                raise ConfigurationError(msg)
            if not isinstance(value, kind):
                msg = f"'{name}' must be a {kind.__name__} (got {type(value).__name__})."
                raise ConfigurationError(msg)
        if self.padding == "max_length" and self.max_length is None:
            msg = "'padding' is 'max_length' but 'max_length' is None; give a max_length."
            raise ConfigurationError(msg)
        if self.drop_overlong and self.max_length is None:
            msg = "'drop_overlong' needs 'max_length' (got None)."
            raise ConfigurationError(msg)

    @classmethod
    def from_processor(cls, processor: Any, **options: Any) -> BaseCollator:
        """Build a collator; the same as ``cls(processor=processor, **options)``."""
        return cls(processor=processor, **options)

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
        if not self._warned_pre_shift:
            self._warned_pre_shift = warn_if_shifted_for_trainer(self)
        samples = self.filter(examples, report)
        while True:
            batch = self.template(samples)
            batch = self.hook(batch, samples)
            batch["labels"] = self.labels(batch, samples)
            rejected = self.check(batch, samples, report)
            if not rejected:
                break
            samples = self._without(samples, rejected, report)
        report.kept = [sample.index for sample in samples]
        batch = self.pad(batch, samples)
        return self.media(batch, samples)

    # -- steps ---------------------------------------------------------------

    def filter(self, examples: Sequence[Mapping[str, Any]], report: CollateReport) -> list[Sample]:
        """Validate and copy every example; apply the text and estimated-length policies."""
        require_batch(examples, "samples")
        report.batch_size = len(examples)
        samples = [
            prepare_sample(example, index, max_image_pixels=self.max_image_pixels)
            for index, example in enumerate(examples)
        ]
        supported = self.supported_media()
        rejected = {}
        for sample in samples:
            problem = (
                self._unsupported_media_problem(sample, supported)
                or self._special_token_problem(sample)
                or self._estimated_overlong(sample)
            )
            if problem is not None:
                rejected[sample.index] = problem
        return self._without(samples, rejected, report) if rejected else samples

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

    def labels(self, batch: dict[str, Any], samples: Sequence[Sample]) -> torch.Tensor:
        """Build labels; padding and media placeholders are never trained.

        The label strategy finds the turns, the label policy chooses among
        them. When the policy asks for loss weights, this step also puts
        ``batch["loss_weights"]`` in the batch (0 wherever labels are ignored).
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
            embedded_roles=frozenset({"tool"}) if self.embedded_tool_responses else frozenset(),
        )
        labels = self._untrain_tool_responses(labels, input_ids)
        untrained = self._attention_mask(batch) == 0
        media_ids = self._media_token_tensor()
        if media_ids.numel():
            untrained |= torch.isin(input_ids, media_ids)
        labels = labels.masked_fill(untrained, IGNORE_INDEX)
        if weights is not None:
            batch["loss_weights"] = weights.masked_fill(labels == IGNORE_INDEX, 0.0)
        return labels

    def check(
        self, batch: dict[str, Any], samples: Sequence[Sample], report: CollateReport
    ) -> dict[int, DroppedSample]:
        """Apply the ``overlong`` and ``empty_labels`` policies to the processed rows.

        Returns the samples to drop, keyed by their index; the caller re-runs
        the steps without them.
        """
        lengths = self._attention_mask(batch).sum(dim=1).tolist()
        trained = (batch["labels"] != IGNORE_INDEX).any(dim=1).tolist()  # padding is never labelled
        report.truncated = []
        rejected = {}
        for row, sample in enumerate(samples):
            if self.max_length is not None and lengths[row] > self.max_length:
                problem = self._overlong_problem(batch, row, sample, lengths[row])
                if problem is not None:
                    rejected[sample.index] = problem
                    continue
                report.truncated.append(sample.index)
                trained[row] = self._row_has_labels(batch, row, lengths[row])
            if not trained[row]:
                problem = self._empty_labels_problem(sample, report)
                if problem is not None:
                    rejected[sample.index] = problem
        return rejected

    def pad(self, batch: dict[str, Any], samples: Sequence[Sample]) -> dict[str, Any]:
        """Pad or truncate every token-axis tensor, then shift labels if asked."""
        keys = token_axis_keys(batch, exclude=MEDIA_KEYS)
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
        side_out = self.padding_side or getattr(self.tokenizer, "padding_side", "right")
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
        vision tokens get ``attention_mask`` 0.
        """
        fake_rows = [
            row for row, sample in enumerate(samples) if sample.example.get("_injected_fake")
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
            return self.media_strategy.gather([sample.conversation for sample in samples])
        except SampleError as exc:
            if exc.sample_index is None or not 0 <= exc.sample_index < len(samples):
                raise
            raise type(exc)(
                exc.detail,
                sample_index=samples[exc.sample_index].index,
                message_index=exc.message_index,
                item_index=exc.item_index,
            ) from exc

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
        indices = ", ".join(str(sample.index) for sample in samples)
        msg = f"the processor failed on samples {indices}: {type(exc).__name__}: {exc}"
        return ProcessorError(msg)

    def _untrain_tool_responses(
        self, labels: torch.Tensor, input_ids: torch.Tensor
    ) -> torch.Tensor:
        """Untrain tool responses written inside assistant turns, unless 'tool' is a role."""
        if self.embedded_tool_responses is None or "tool" in self.label_policy.roles:
            return labels
        open_id, close_id = (
            single_token_id(self.tokenizer, token) for token in self.embedded_tool_responses
        )
        if open_id is None or close_id is None:
            return labels
        return mask_enclosed(labels, input_ids, open_id, close_id)

    def _mask_fake_images(self, batch: dict[str, Any], rows: Sequence[int]) -> None:
        vision_ids = torch.tensor(sorted(vision_token_ids(self.processor)), dtype=torch.long)
        if not vision_ids.numel():
            name = type(self.processor).__name__
            if name not in _WARNED_NO_VISION_TOKENS:
                _WARNED_NO_VISION_TOKENS.add(name)
                logger.warning(
                    "%s exposes no vision placeholder tokens, so fake images stay visible to "
                    "attention; set image_token_id on the processor to fix this.",
                    name,
                )
            return
        for row in rows:
            placeholders = torch.isin(batch["input_ids"][row], vision_ids)
            batch["attention_mask"][row] = batch["attention_mask"][row].masked_fill(placeholders, 0)

    def _padded_side(self, batch: Mapping[str, Any]) -> str:
        """The side the processor padded on, read from the attention mask.

        Right-padded rows always start with a real token, so a padded first
        column means left padding (processors may override the tokenizer's side).
        """
        return padded_side(self._attention_mask(batch))

    def _attention_mask(self, batch: Mapping[str, Any]) -> torch.Tensor:
        mask = batch.get("attention_mask")
        if mask is None:
            return torch.ones_like(batch["input_ids"])
        return mask

    def _media_token_tensor(self) -> torch.Tensor:
        if self._media_ids is None:
            self._media_ids = torch.tensor(
                sorted(media_token_ids(self.processor)), dtype=torch.long
            )
        return self._media_ids

    def _pad_value(self, key: str) -> int:
        if key == "input_ids":
            pad_id = getattr(self.tokenizer, "pad_token_id", None)
            return pad_id if isinstance(pad_id, int) else 0
        if key == "labels":
            return IGNORE_INDEX
        return 0  # attention masks, token types and loss weights

    def _unsupported_media_problem(
        self, sample: Sample, supported: frozenset[str]
    ) -> DroppedSample | None:
        found = _unsupported_media(sample, supported)
        if found is None:
            return None
        position, item_index, kind = found
        detail = self.media_refusal(kind)
        if self.unsupported_media == "raise":
            raise MediaError(
                detail, sample_index=sample.index, message_index=position, item_index=item_index
            )
        return DroppedSample(sample.index, "unsupported_media", f"message {position}: {detail}")

    def _special_token_problem(self, sample: Sample) -> DroppedSample | None:
        if self.special_tokens_in_text == "allow":
            return None
        found = find_special_token(sample.conversation, self._special_tokens())
        if found is None:
            return None
        position, token = found
        detail = (
            f"message text contains the control token {token!r}, which would corrupt the "
            "turn structure and labels (special_tokens_in_text='allow' keeps it)"
        )
        if self.special_tokens_in_text == "raise":
            raise SpecialTokenError(detail, sample_index=sample.index, message_index=position)
        return DroppedSample(sample.index, "special_tokens", f"message {position}: {detail}")

    def _special_tokens(self) -> re.Pattern[str] | None:
        if self._special_pattern is False:
            tokenizer = self.tokenizer
            added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
            tokens = {str(token) for token in getattr(tokenizer, "all_special_tokens", []) or []}
            tokens |= {str(token) for token in added.values() if getattr(token, "special", False)}
            tokens = {token for token in tokens if token}
            ordered = sorted(tokens, key=len, reverse=True)
            self._special_pattern = (
                re.compile("|".join(map(re.escape, ordered))) if ordered else None
            )
        return self._special_pattern

    def _estimated_overlong(self, sample: Sample) -> DroppedSample | None:
        if not self.drop_overlong or self.max_length is None:
            return None
        estimate = estimate_tokens(sample.conversation, self.processor)
        if estimate <= self.max_length or self.overlong == "truncate":
            return None
        detail = (
            f"estimated {estimate} tokens (text plus expanded media) > max_length={self.max_length}"
        )
        if self.overlong == "raise":
            raise OverlongError(detail, sample_index=sample.index)
        return DroppedSample(sample.index, "overlong", detail)

    def _overlong_problem(
        self, batch: Mapping[str, Any], row: int, sample: Sample, length: int
    ) -> DroppedSample | None:
        detail = f"{length} tokens > max_length={self.max_length}"
        if self.overlong == "raise":
            raise OverlongError(detail, sample_index=sample.index)
        if self.overlong == "drop":
            return DroppedSample(sample.index, "overlong", detail)
        lost = self._real_tokens(batch, row, length)[self.max_length :]
        media_ids = self._media_token_tensor()
        if media_ids.numel() and torch.isin(lost, media_ids).any():
            detail += "; truncating would cut through media tokens, so the sample is dropped"
            return DroppedSample(sample.index, "overlong", detail)
        return None

    def _real_tokens(
        self, batch: Mapping[str, Any], row: int, length: int, key: str = "input_ids"
    ) -> torch.Tensor:
        values = batch[key][row]
        side = self._padded_side(batch)
        return values[:length] if side == "right" else values[values.shape[0] - length :]

    def _row_has_labels(self, batch: Mapping[str, Any], row: int, length: int) -> bool:
        """Whether the first ``max_length`` real tokens of a row hold a label."""
        labels = self._real_tokens(batch, row, length, key="labels")[: self.max_length]
        return bool((labels != IGNORE_INDEX).any())

    def _empty_labels_problem(self, sample: Sample, report: CollateReport) -> DroppedSample | None:
        detail = (
            "no token would be trained: the sample has no assistant turn, the label policy "
            "selects none of its turns, or max_length cut it off"
        )
        if self.empty_labels == "raise":
            raise EmptyLabelsError(
                detail + " (empty_labels='drop' or 'warn' keeps training going)",
                sample_index=sample.index,
            )
        if self.empty_labels == "drop":
            return DroppedSample(sample.index, "empty_labels", detail)
        warning = SampleWarning(sample.index, "empty_labels", detail)
        if warning not in report.warnings:
            report.warnings.append(warning)
            logger.warning("%s", warning)
        return None

    def _without(
        self,
        samples: Sequence[Sample],
        rejected: Mapping[int, DroppedSample],
        report: CollateReport,
    ) -> list[Sample]:
        for dropped in rejected.values():
            report.dropped.append(dropped)
            self.dropped_counts[dropped.reason] += 1
            logger.warning(
                "dropped sample %d (%s): %s", dropped.index, dropped.reason, dropped.detail
            )
        kept = [sample for sample in samples if sample.index not in rejected]
        if not kept:
            reasons = "; ".join(f"sample {d.index}: {d.detail}" for d in report.dropped)
            msg = f"every sample of the batch was dropped ({reasons})."
            raise BatchError(msg)
        return kept
