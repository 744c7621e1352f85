"""Label strategies: which tokens of a batch are trained.

A [`LabelStrategy`][vlm_collate.LabelStrategy] turns a ``[B, L]`` tensor of token ids into labels of
the same shape holding `IGNORE_INDEX` everywhere except assistant content
and its end-of-turn token. Marker strategies find assistant turns by the token
ids the chat template wraps them in; the scan is vectorised torch code
([`assistant_spans`][vlm_collate.labels.assistant_spans]), and
[`naive_assistant_spans`][vlm_collate.labels.naive_assistant_spans] is the plain
per-token loop it is tested and benchmarked against.
"""

from __future__ import annotations

import abc
import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import attrs
import torch

from .._cache import ObjectCache
from .._report import warn_once
from .._template import render, text_content
from .._tokens import single_token_id, special_ids, tokenizer_of
from ..errors import LabelStrategyError, TemplateError

__all__ = [
    "IGNORE_INDEX",
    "DerivedTemplateMarker",
    "FirstOf",
    "ImStartMarker",
    "LabelStrategy",
    "LegacyBPEMatch",
    "MarkerStrategy",
    "SkipEmptyThink",
    "TurnMarkers",
    "assistant_spans",
    "is_blank",
    "labels_from_spans",
    "message_text",
    "naive_assistant_spans",
    "reasoning_block_end",
    "single_token_id",
    "tokenize_with_offsets",
    "tokenizer_of",
    "with_fallbacks",
]

IGNORE_INDEX = -100

logger = logging.getLogger("vlm_collate.labels")

Conversations = Sequence[Sequence[dict[str, Any]]]


def _id_tuple(ids: Iterable[int]) -> tuple[int, ...]:
    return tuple(ids)


@attrs.frozen
class TurnMarkers:
    """Token ids that delimit an assistant turn.

    Args:
        assistant_marker: Ids that open an assistant turn, e.g. the ids of
            ``<|im_start|>assistant\\n``.
        end_of_turn_id: Id that closes the turn; it is trained.
        merged_tail_ids: Ids of tokens that begin with the marker's last token
            text, e.g. ``"\\n\\n"`` when the marker ends in ``"\\n"``. Byte-level
            BPE merges the marker's trailing newline with an answer that starts
            with a newline; such a token then opens the answer and is trained.
    """

    assistant_marker: tuple[int, ...] = attrs.field(converter=_id_tuple)
    end_of_turn_id: int
    merged_tail_ids: tuple[int, ...] = attrs.field(default=(), converter=_id_tuple)

    def __attrs_post_init__(self) -> None:
        if not self.assistant_marker:
            msg = "'assistant_marker' must hold at least one token id (got an empty sequence)."
            raise LabelStrategyError(msg)
        if self.end_of_turn_id in self.assistant_marker:
            msg = (
                f"'end_of_turn_id' {self.end_of_turn_id} must not occur in the assistant marker "
                f"{list(self.assistant_marker)}."
            )
            raise LabelStrategyError(msg)


def assistant_spans(input_ids: torch.Tensor, markers: TurnMarkers) -> torch.Tensor:
    """Return a bool mask of assistant content and end-of-turn positions.

    A span opens right after each assistant marker and closes at the next
    end-of-turn token (inclusive), or at the end of the row. Vectorised: a
    position is inside a span when the last span start at or before it comes
    after the last end-of-turn token strictly before it.

    Args:
        input_ids: ``[B, L]`` token ids.
        markers: The turn markers to look for.
    """
    batch, length = input_ids.shape
    marker = markers.assistant_marker
    width = len(marker)
    starts = torch.zeros((batch, length), dtype=torch.bool, device=input_ids.device)
    count = length - width + 1  # where the marker's head fits with one more token after it
    if count > 0:
        rows, columns = _head_matches(input_ids, marker[:-1], count)
        following = input_ids[rows, columns + width - 1]
        full = (following == marker[-1]) & (columns + width < length)
        starts[rows[full], columns[full] + width] = True  # the answer starts after the marker
        if markers.merged_tail_ids and following.numel():
            tail = _tail_set(markers.merged_tail_ids)
            merged = torch.tensor([token in tail for token in following.tolist()], dtype=torch.bool)
            starts[rows[merged], columns[merged] + width - 1] = True
    positions = torch.arange(length, device=input_ids.device)
    last_start = torch.where(starts, positions, -1).cummax(dim=1).values
    last_end = torch.where(input_ids == markers.end_of_turn_id, positions, -1).cummax(dim=1).values
    inside = torch.empty_like(starts)
    if length == 0:
        return inside
    inside[:, 0] = last_start[:, 0] >= 0
    inside[:, 1:] = last_start[:, 1:] > last_end[:, :-1]
    return inside


@functools.lru_cache(maxsize=64)
def _tail_set(ids: tuple[int, ...]) -> frozenset[int]:
    return frozenset(ids)


def _head_matches(
    input_ids: torch.Tensor, head: Sequence[int], count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and positions ``i < count`` where ``head`` starts.

    Only the first token is compared over the whole batch; the few candidate
    positions are then narrowed by indexing, which costs far less than more
    full-size comparisons.
    """
    if not head:
        positions = torch.arange(count, device=input_ids.device)
        return (
            torch.arange(input_ids.shape[0], device=input_ids.device).repeat_interleave(count),
            positions.repeat(input_ids.shape[0]),
        )
    rows, columns = (input_ids[:, :count] == head[0]).nonzero(as_tuple=True)
    for offset, token in enumerate(head[1:], start=1):
        keep = input_ids[rows, columns + offset] == token
        rows, columns = rows[keep], columns[keep]
    return rows, columns


def naive_assistant_spans(input_ids: torch.Tensor, markers: TurnMarkers) -> torch.Tensor:
    """Per-token Python reference for [`assistant_spans`][vlm_collate.labels.assistant_spans] (slow;
    for tests and benchmarks)."""
    marker = list(markers.assistant_marker)
    merged = set(markers.merged_tail_ids)
    width = len(marker)
    mask = torch.zeros(input_ids.shape, dtype=torch.bool)
    for row, ids in enumerate(input_ids.tolist()):
        position = 0
        while position < len(ids):
            content = None
            if ids[position : position + width] == marker:
                content = position + width
            elif ids[position : position + width - 1] == marker[:-1] and position + width - 1 < len(
                ids
            ):
                if ids[position + width - 1] in merged:
                    content = position + width - 1
            if content is None or content >= len(ids):
                position += 1
                continue
            end = content
            while end < len(ids) and ids[end] != markers.end_of_turn_id:
                end += 1
            stop = min(end + 1, len(ids))
            for index in range(content, stop):
                mask[row, index] = True
            position = stop
    return mask


def labels_from_spans(input_ids: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """Copy ``input_ids`` where ``spans`` is True and `IGNORE_INDEX` elsewhere."""
    return torch.where(spans, input_ids, torch.full_like(input_ids, IGNORE_INDEX))


class LabelStrategy(abc.ABC):
    """Decides which tokens are trained.

    Subclasses implement [`build`][vlm_collate.labels._strategies.LabelStrategy.build]. A strategy
    that cannot work with the
    given processor raises [`LabelStrategyError`][vlm_collate.LabelStrategyError], so
    that [`FirstOf`][vlm_collate.FirstOf] can try the next one.
    """

    @abc.abstractmethod
    def build(
        self, input_ids: torch.Tensor, conversations: Conversations, processor: Any
    ) -> torch.Tensor:
        """Return ``[B, L]`` labels for ``input_ids`` (``IGNORE_INDEX`` where untrained)."""


class MarkerStrategy(LabelStrategy):
    """A strategy that scans for [`TurnMarkers`][vlm_collate.TurnMarkers] it resolves once per
    tokenizer."""

    def build(
        self, input_ids: torch.Tensor, conversations: Conversations, processor: Any
    ) -> torch.Tensor:
        markers = self.markers(processor)
        return labels_from_spans(input_ids, assistant_spans(input_ids, markers))

    def markers(self, processor: Any) -> TurnMarkers:
        """Return the turn markers for ``processor``, resolving them on first use."""
        tokenizer = tokenizer_of(processor)
        key = (self, _template_of(processor), _template_of(tokenizer))
        return _MARKER_CACHE.get_or_compute(tokenizer, key, lambda: self.resolve(processor))

    @abc.abstractmethod
    def resolve(self, processor: Any) -> TurnMarkers:
        """Find the markers for ``processor`` (called once per tokenizer and template)."""


_MARKER_CACHE = ObjectCache()


def _template_of(obj: Any) -> str | None:
    template = getattr(obj, "chat_template", None)
    return template if isinstance(template, str) else None


def merged_tail_ids(tokenizer: Any, token_id: int) -> tuple[int, ...]:
    """Return ids of vocabulary entries that extend the text of ``token_id``.

    Special and added tokens never merge with their neighbours, so they give none.
    """
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    if token_id in added:
        return ()
    try:
        piece = tokenizer.convert_ids_to_tokens(token_id)
        vocab = tokenizer.get_vocab()
    except Exception:
        return ()
    if not isinstance(piece, str) or not piece:
        return ()
    return tuple(
        sorted(
            index
            for text, index in vocab.items()
            if text != piece and text.startswith(piece) and index not in added
        )
    )


@attrs.frozen(kw_only=True)
class ImStartMarker(MarkerStrategy):
    """ChatML turns: ``<|im_start|>assistant\\n`` ... ``<|im_end|>`` (Qwen family).

    The ids are read straight from the vocabulary; no template is rendered.

    Args:
        start_token: Token that opens every turn.
        role: Role name of the trained turns.
        end_token: Token that closes every turn.
    """

    start_token: str = "<|im_start|>"
    role: str = "assistant"
    end_token: str = "<|im_end|>"

    def resolve(self, processor: Any) -> TurnMarkers:
        tokenizer = tokenizer_of(processor)
        start_id = single_token_id(tokenizer, self.start_token)
        end_id = single_token_id(tokenizer, self.end_token)
        if start_id is None or end_id is None:
            msg = (
                f"ImStartMarker needs {self.start_token!r} and {self.end_token!r} as single "
                f"tokens, but {type(tokenizer).__name__} lacks them."
            )
            raise LabelStrategyError(msg)
        templates = [t for t in (_template_of(processor), _template_of(tokenizer)) if t]
        if templates and not any(self.end_token in t and self.start_token in t for t in templates):
            msg = (
                f"the chat template does not write {self.start_token!r} ... {self.end_token!r} "
                "turns, so ImStartMarker would mislabel it."
            )
            raise LabelStrategyError(msg)
        role_ids = list(tokenizer.encode(f"{self.role}\n", add_special_tokens=False))
        marker = [start_id, *role_ids]
        return TurnMarkers(
            assistant_marker=marker,
            end_of_turn_id=end_id,
            merged_tail_ids=merged_tail_ids(tokenizer, marker[-1]),
        )


_USER_SENTINELS = ("Qzxv one", "Qzxv two")
_ANSWER_SENTINELS = ("Wjkp first reply", "Wjkp second reply")


@attrs.frozen(kw_only=True)
class DerivedTemplateMarker(MarkerStrategy):
    """Derives the assistant marker and end-of-turn id from the chat template.

    The assistant header is what ``add_generation_prompt=True`` appends to a
    prompt (``<|im_start|>assistant\\n``, ``<start_of_turn>model\\n``, ...). A
    two-turn conversation with sentinel texts is rendered and tokenized; the
    marker is the run of whole tokens that both assistant headers share. When a
    template emits no header of its own (Mistral's ``[INST] ...[/INST] answer</s>``),
    the special tokens that close the user turn (``[/INST]``) are the marker.
    The end-of-turn id is the first special token after each answer.

    All of this runs once per tokenizer and template, then is cached: later
    batches render nothing.
    """

    def resolve(self, processor: Any) -> TurnMarkers:
        tokenizer = tokenizer_of(processor)
        messages = [
            {"role": "user", "content": _USER_SENTINELS[0]},
            {"role": "assistant", "content": _ANSWER_SENTINELS[0]},
            {"role": "user", "content": _USER_SENTINELS[1]},
            {"role": "assistant", "content": _ANSWER_SENTINELS[1]},
        ]
        try:
            text, without, with_header = _render_sentinels(processor, messages)
        except TemplateError as exc:
            msg = f"DerivedTemplateMarker cannot render the template: {exc}"
            raise LabelStrategyError(msg) from exc
        header = _generation_header(without, with_header, getattr(tokenizer, "eos_token", None))
        ids, offsets = tokenize_with_offsets(tokenizer, text)
        special = special_ids(tokenizer)
        headers, ends = [], []
        for user, answer in zip(_USER_SENTINELS, _ANSWER_SENTINELS, strict=True):
            answer_start = _locate(text, answer)
            user_end = _locate(text, user) + len(user)
            found = []
            header_at = text.rfind(header, user_end, answer_start) if header.strip() else -1
            if header_at >= 0:
                found = _whole_tokens(ids, offsets, header_at, header_at + len(header))
            if not found:
                closing = _whole_tokens(ids, offsets, user_end, answer_start)
                found = _special_suffix(closing, special)
            headers.append(found)
            ends.append(_end_token(text, ids, offsets, answer, special))
        marker = _common_prefix(headers)
        if not marker or ends[0] is None or ends[0] != ends[1]:
            msg = (
                f"cannot derive turn markers from the chat template of {type(processor).__name__}: "
                f"assistant headers {headers}, end-of-turn candidates {ends}, rendered {text!r}."
            )
            raise LabelStrategyError(msg)
        return TurnMarkers(
            assistant_marker=marker,
            end_of_turn_id=ends[0],
            merged_tail_ids=merged_tail_ids(tokenizer, marker[-1]),
        )


def _render_sentinels(processor: Any, messages: list[dict[str, Any]]) -> tuple[str, str, str]:
    """Render the sentinel conversation, its first user turn, and that turn plus the header."""
    try:
        as_list = True
        text = render(processor, text_content(messages, as_list=True))
    except TemplateError:
        as_list = False
        text = render(processor, text_content(messages, as_list=False))
    prompt = text_content(messages[:1], as_list=as_list)
    without = render(processor, prompt)
    with_header = render(processor, prompt, add_generation_prompt=True)
    return text, without, with_header


def _generation_header(without: str, with_header: str, eos: str | None) -> str:
    """What ``add_generation_prompt=True`` appends to a prompt.

    Some templates close every rendered conversation with the EOS token
    (Phi-4); the prompt then ends in EOS only when no header follows.
    """
    for prompt in (without, without.removesuffix(eos) if eos else without):
        if with_header.startswith(prompt):
            return with_header[len(prompt) :]
    return ""


def tokenize_with_offsets(
    tokenizer: Any, text: str, *, user: str = "DerivedTemplateMarker"
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` (no special tokens added) and each token's character span.

    Raises [`LabelStrategyError`][vlm_collate.LabelStrategyError], naming ``user``, for tokenizers
    that
    cannot give offsets (slow tokenizers).
    """
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except Exception as exc:  # slow tokenizers raise NotImplementedError, others vary
        msg = f"{user} needs token offsets, which {type(tokenizer).__name__} cannot give ({exc})."
        raise LabelStrategyError(msg) from exc
    offsets = [(int(start), int(stop)) for start, stop in encoded["offset_mapping"]]
    return list(encoded["input_ids"]), offsets


def _locate(text: str, needle: str) -> int:
    position = text.find(needle)
    if position < 0:
        msg = f"the sentinel {needle!r} does not appear in the rendered template {text!r}."
        raise LabelStrategyError(msg)
    return position


def _whole_tokens(
    ids: list[int], offsets: list[tuple[int, int]], start: int, stop: int
) -> list[int]:
    """Ids of the non-empty tokens lying entirely inside ``text[start:stop]``."""
    return [
        token
        for token, (left, right) in zip(ids, offsets, strict=True)
        if start <= left and right <= stop and right > left
    ]


def _special_suffix(tokens: list[int], special: set[int]) -> list[int]:
    suffix: list[int] = []
    for token in reversed(tokens):
        if token not in special:
            break
        suffix.insert(0, token)
    return suffix


def _end_token(
    text: str, ids: list[int], offsets: list[tuple[int, int]], answer: str, special: set[int]
) -> int | None:
    answer_end = _locate(text, answer) + len(answer)
    for token, (left, _) in zip(ids, offsets, strict=True):
        if left >= answer_end and token in special:
            return token
    return None


def _common_prefix(runs: list[list[int]]) -> list[int]:
    prefix = list(runs[0])
    for run in runs[1:]:
        length = 0
        while length < min(len(prefix), len(run)) and prefix[length] == run[length]:
            length += 1
        prefix = prefix[:length]
    return prefix


@attrs.frozen(kw_only=True)
class LegacyBPEMatch(LabelStrategy):
    """Re-tokenizes each assistant text and searches for it in the ids.

    The last resort: byte-pair merges at the turn boundary can make the
    standalone tokens differ from the in-context ones, and then a turn (and
    every later one in that sample) stays unlabelled. A warning is logged
    the first time it is used for a tokenizer class.
    """

    def build(
        self, input_ids: torch.Tensor, conversations: Conversations, processor: Any
    ) -> torch.Tensor:
        tokenizer = tokenizer_of(processor)
        name = type(tokenizer).__name__
        warn_once(
            logger,
            ("LegacyBPEMatch", name),
            "LegacyBPEMatch labels %s by re-tokenizing assistant texts; turns whose "
            "tokens merge with the template may be left unlabelled.",
            name,
        )
        special = special_ids(tokenizer)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for row, conversation in enumerate(conversations):
            for start, stop in self._spans(input_ids[row], conversation, tokenizer, special):
                labels[row, start:stop] = input_ids[row, start:stop]
        return labels

    def _spans(
        self,
        ids: torch.Tensor,
        conversation: Sequence[dict[str, Any]],
        tokenizer: Any,
        special: set[int],
    ) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        cursor = 0
        for message in conversation:
            if message.get("role") != "assistant":
                continue
            text = message_text(message)
            if not text:
                continue
            found = _find(ids, _encode(tokenizer, text), cursor)
            if found is None and text != text.lstrip():
                found = _find(ids, _encode(tokenizer, text.lstrip()), cursor)
            if found is None:
                logger.warning(
                    "LegacyBPEMatch could not find an assistant turn; later turns stay unlabelled."
                )
                break
            start, stop = found
            if stop < len(ids) and int(ids[stop]) in special:
                stop += 1
            spans.append((start, stop))
            cursor = stop
        return spans


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message: its string content, or its text items joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(item.get("text", "")) for item in content if item.get("type") == "text")
    return ""


def _encode(tokenizer: Any, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def _find(ids: torch.Tensor, pattern: torch.Tensor, start: int) -> tuple[int, int] | None:
    """First ``(start, stop)`` of ``pattern`` in ``ids[start:]``, vectorised with ``unfold``."""
    width = pattern.numel()
    if width == 0 or ids.numel() - start < width:
        return None
    windows = ids[start:].unfold(0, width, 1)
    hits = (windows == pattern.to(ids.device)).all(dim=1).nonzero()
    if hits.numel() == 0:
        return None
    first = start + int(hits[0])
    return first, first + width


@attrs.frozen(init=False)
class FirstOf(LabelStrategy):
    """Tries each strategy in order and returns the first one that applies.

    ``FirstOf(ImStartMarker(), DerivedTemplateMarker(), LegacyBPEMatch())`` is
    NeMo Automodel's ``build_labels_from_template`` chain.
    """

    strategies: tuple[LabelStrategy, ...]

    def __init__(self, *strategies: LabelStrategy) -> None:
        if not strategies:
            msg = "FirstOf needs at least one strategy (got none)."
            raise LabelStrategyError(msg)
        for strategy in strategies:
            if not isinstance(strategy, LabelStrategy):
                msg = f"FirstOf takes LabelStrategy instances (got {type(strategy).__name__})."
                raise TypeError(msg)
        self.__attrs_init__(strategies=tuple(strategies))

    def build(
        self, input_ids: torch.Tensor, conversations: Conversations, processor: Any
    ) -> torch.Tensor:
        return self.first_applicable(processor, input_ids, conversations)[1]

    def first_applicable(
        self, processor: Any, input_ids: torch.Tensor, conversations: Conversations
    ) -> tuple[LabelStrategy, torch.Tensor]:
        """Return the strategy that applied and its labels."""
        failures = []
        for strategy in self.strategies:
            try:
                return strategy, strategy.build(input_ids, conversations, processor)
            except LabelStrategyError as exc:
                failures.append(f"{type(strategy).__name__}: {exc}")
        msg = "no label strategy applies: " + "; ".join(failures)
        raise LabelStrategyError(msg)


def with_fallbacks(*preferred: LabelStrategy) -> FirstOf:
    """``FirstOf(*preferred, DerivedTemplateMarker(), LegacyBPEMatch())``: a family's usual chain.

    The family's own strategies come first; markers derived from the chat
    template, then re-tokenized answer search, catch templates they do not fit.
    """
    return FirstOf(*preferred, DerivedTemplateMarker(), LegacyBPEMatch())


@attrs.frozen
class SkipEmptyThink(LabelStrategy):
    """Another strategy's labels, minus an empty reasoning block that opens a turn.

    Reasoning templates open every answer without reasoning with an empty
    block: ``<think></think>`` (Kimi K2.5, Nemotron) or
    ``<think>\\n\\n</think>\\n\\n`` (Qwen3 thinking). Where the generation
    prompt supplies the whole block at inference (Kimi K2.5 and Nemotron with
    thinking off), it is prompt, not answer, and should not be trained. Where
    the generation prompt only opens it (Qwen3-VL Thinking), the model writes
    the rest itself, so leave such templates unwrapped. A block with reasoning
    in it stays trained. ``LabelPolicy(reasoning="skip_empty")`` does the
    same for any collator.

    Args:
        inner: The strategy whose labels are filtered.
        open_token: Token that opens a reasoning block.
        close_token: Token that closes it.
        blank_after: Also leave the whitespace tokens right after the block
            untrained, for templates that write them (Qwen3 writes ``\n\n``).
            Off by default: after ``<think></think>`` whitespace is answer text.
    """

    inner: LabelStrategy
    open_token: str = "<think>"
    close_token: str = "</think>"
    blank_after: bool = False

    def build(
        self, input_ids: torch.Tensor, conversations: Conversations, processor: Any
    ) -> torch.Tensor:
        labels = self.inner.build(input_ids, conversations, processor)
        tokenizer = tokenizer_of(processor)
        open_id = single_token_id(tokenizer, self.open_token)
        close_id = single_token_id(tokenizer, self.close_token)
        if open_id is None or close_id is None or input_ids.shape[1] < 2:
            return labels
        trained = labels != IGNORE_INDEX
        run_starts = trained.clone()
        run_starts[:, 1:] &= ~trained[:, :-1]
        rows, columns = (run_starts & (input_ids == open_id)).nonzero(as_tuple=True)
        for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
            ids = input_ids[row].tolist()
            stop = reasoning_block_end(
                ids, column, close_id, tokenizer, empty_only=True, blank_after=self.blank_after
            )
            if stop is not None:
                labels[row, column:stop] = IGNORE_INDEX
        return labels


def reasoning_block_end(
    ids: Sequence[int],
    start: int,
    close_id: int,
    tokenizer: Any,
    *,
    empty_only: bool,
    blank_after: bool,
    channel_name: str = "",
) -> int | None:
    """End of the reasoning block whose opening token is ``ids[start]``, or None.

    The block runs to the first ``close_id`` (included), then, with
    ``blank_after``, over the whitespace tokens after it. None when the block
    is not closed, or, with ``empty_only``, when it holds anything but
    whitespace and ``channel_name`` (the name Gemma 4 writes after its opening
    token).
    """
    try:
        close = list(ids).index(close_id, start + 1)
    except ValueError:
        return None
    if empty_only:
        inner = tokenizer.decode(list(ids[start + 1 : close]), skip_special_tokens=False)
        if inner.strip() not in ("", channel_name.strip()):
            return None  # reasoning text: the block is not empty
    position = close + 1
    while blank_after and position < len(ids) and is_blank(tokenizer, ids[position]):
        position += 1
    return position


def is_blank(tokenizer: Any, token_id: int) -> bool:
    """Whether a (non-added) token decodes to whitespace only."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    if token_id in added:
        return False
    return cast("str", tokenizer.decode([token_id])).strip() == ""
