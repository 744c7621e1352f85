"""Label policies: which of the turns a label strategy finds are trained, and how much.

A [`LabelStrategy`][vlm_collate.LabelStrategy] answers a structural question:
where do the assistant turns of this row lie? A [`LabelPolicy`][vlm_collate.LabelPolicy] answers a
training question: which of those turns (and, optionally, which turns of other
roles) should the model learn from, with their end-of-turn token or not, with
their reasoning or not, and with what weight. Keeping the two apart means one
policy works with every strategy and every model family, without rebuilding a
family's strategy chain.

Turns are read from the strategy's labels: each maximal run of labelled
positions is one assistant turn, and the k-th run of a row is the k-th
assistant message of the sample. Turns of other roles are found with markers
derived from the chat template
([`vlm_collate.labels.role_markers`][vlm_collate.labels.role_markers]).
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs
import torch

from .._options import boolean, instance_of, is_callable, one_of, optional, string
from .._report import warn_once
from .._samples import is_weight
from .._tokens import special_ids
from ..errors import ConfigurationError, SampleError
from ._roles import role_markers
from ._strategies import (
    IGNORE_INDEX,
    TurnMarkers,
    assistant_spans,
    is_blank,
    message_text,
    reasoning_block_end,
    single_token_id,
    tokenizer_of,
)

__all__ = ["LabelPolicy", "ReasoningMarkers", "Turn", "find_turns", "mask_enclosed"]

logger = logging.getLogger("vlm_collate.labels")

TurnSelector = Callable[[int, int, Mapping[str, Any]], bool]
TurnWeight = Callable[[int, int, Mapping[str, Any]], float]
TurnsChoice = Literal["all", "last"] | int | TurnSelector
EndOfTurnChoice = Literal["always", "never", "last"]
ReasoningChoice = Literal["train", "answer_only", "skip_empty"]

_MESSAGE_KEYS = ("train", "weight")


@attrs.frozen
class ReasoningMarkers:
    """The tokens that delimit a reasoning block at the start of an answer.

    Args:
        open_token: Token that opens the block (``<think>``).
        close_token: Token that closes it (``</think>``).
        channel_name: Text right after ``open_token`` that names the block
            rather than being reasoning (Gemma 4 writes ``thought``); a block
            holding only this and whitespace is empty.
    """

    open_token: str = attrs.field(default="<think>", validator=string)
    close_token: str = attrs.field(default="</think>", validator=string)
    channel_name: str = attrs.field(default="", validator=string)


@attrs.frozen
class Turn:
    """One turn found in a row of token ids.

    Args:
        role: The message role.
        start: First position of the turn's labelled run.
        stop: One past its last position.
        has_end: Whether ``stop - 1`` is the end-of-turn token.
        message: Index of the message in the sample's conversation, or None
            when the turns of this role cannot be matched one to one with
            the sample's messages.
    """

    role: str
    start: int
    stop: int
    has_end: bool
    message: int | None


def _to_roles(value: str | Iterable[str]) -> frozenset[str]:
    if isinstance(value, str):
        roles = value.split(",")
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        roles = list(value)
    else:
        msg = f"'roles' must be a comma-separated string or an iterable of roles (got {value!r})."
        raise ConfigurationError(msg)
    cleaned = frozenset(role.strip() for role in roles if isinstance(role, str) and role.strip())
    if not cleaned or len(cleaned) != len([role for role in roles if str(role).strip()]):
        msg = f"'roles' must name at least one role, as strings (got {value!r})."
        raise ConfigurationError(msg)
    return cleaned


def _check_turns(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (isinstance(value, str) and value in ("all", "last")) or callable(value):
        return
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return
    msg = (
        "'turns' must be 'all', 'last', a positive int (the first N turns) or a callable "
        f"(sample_index, turn_index, message) -> bool (got {value!r})."
    )
    raise ConfigurationError(msg)


@attrs.frozen(kw_only=True)
class LabelPolicy:
    """Which turns are trained, and how.

    The default trains every assistant turn with its end-of-turn token, as
    NeMo Automodel does; a collator with the default policy runs exactly NeMo Automodel's
    label path.

    Per-message keys in a sample override the policy for that message:
    ``"train": False`` never trains it, ``"train": True`` always does (even
    for a role not in ``roles``, when the template gives that role turns of
    its own), and ``"weight": 0.5`` sets its loss weight when ``loss_weights``
    is on (a weight of 0 is the same as ``"train": False``, with or without it).

    Args:
        turns: Which candidate turns are trained: ``"all"``, ``"last"``, the
            first ``N`` (an int), or a callable ``(sample_index, turn_index,
            message) -> bool``. ``turn_index`` counts the sample's candidate
            turns (turns of ``roles``) from 0 in order; ``sample_index`` is the
            sample's position in the batch the caller passed in.
        roles: Roles whose turns are candidates (``"assistant"`` by default);
            a comma-separated string or an iterable.
        train_on_end_of_turn: ``"always"`` trains each turn's end-of-turn token,
            ``"never"`` none, ``"last"`` only the last trained turn's.
        reasoning: For answers that open with a reasoning block: ``"train"``
            trains what the label strategy labels, ``"answer_only"`` leaves
            every reasoning block untrained, ``"skip_empty"`` leaves only
            empty blocks untrained. Whitespace right after a block counts
            as part of it.
        reasoning_markers: Delimiters of a reasoning block; None uses the
            collator's family default.
        loss_weights: Add a float ``loss_weights`` tensor shaped like
            ``labels``: 0 where labels are ignored, the turn's weight elsewhere.
        weight: Optional callable ``(sample_index, turn_index, message) ->
            float`` giving a turn's weight when its message has no
            ``"weight"`` key (1.0 otherwise).
    """

    turns: TurnsChoice = attrs.field(default="all", validator=_check_turns)
    roles: frozenset[str] = attrs.field(default=frozenset({"assistant"}), converter=_to_roles)
    train_on_end_of_turn: EndOfTurnChoice = attrs.field(
        default="always", validator=one_of("always", "never", "last")
    )
    reasoning: ReasoningChoice = attrs.field(
        default="train", validator=one_of("train", "answer_only", "skip_empty")
    )
    reasoning_markers: ReasoningMarkers | None = attrs.field(
        default=None, validator=optional(instance_of(ReasoningMarkers))
    )
    loss_weights: bool = attrs.field(default=False, validator=boolean)
    weight: TurnWeight | None = attrs.field(default=None, validator=optional(is_callable))

    @classmethod
    def coerce(cls, value: LabelPolicy | Mapping[str, Any] | None) -> LabelPolicy:
        """A policy from a policy, a mapping of its options (YAML / Hydra) or None."""
        if value is None:
            return cls()
        if isinstance(value, LabelPolicy):
            return value
        if isinstance(value, Mapping):
            options = dict(value)
            markers = options.get("reasoning_markers")
            try:
                if isinstance(markers, Mapping):
                    options["reasoning_markers"] = ReasoningMarkers(**markers)
                elif isinstance(markers, Sequence) and not isinstance(markers, str):
                    options["reasoning_markers"] = ReasoningMarkers(*markers)
                return cls(**options)
            except TypeError as exc:
                msg = f"'label_policy' got an unknown option: {exc}"
                raise ConfigurationError(msg) from exc
        msg = f"'label_policy' must be a LabelPolicy or a mapping (got {type(value).__name__})."
        raise ConfigurationError(msg)

    @property
    def selects_all(self) -> bool:
        """Whether the policy trains exactly what the label strategy labels."""
        return (
            self.turns == "all"
            and self.roles == frozenset({"assistant"})
            and self.train_on_end_of_turn == "always"
            and self.reasoning == "train"
            and self.weight is None
        )

    def needs_turns(self, conversations: Sequence[Sequence[Mapping[str, Any]]]) -> bool:
        """Whether labels must be rebuilt turn by turn (False: the strategy's labels stand)."""
        return self._needs_turns(_MessageKeys.of(conversations))

    def _needs_turns(self, keys: _MessageKeys) -> bool:
        if not self.selects_all:
            return True
        return keys.train or keys.zero_weight or (self.loss_weights and keys.weight)

    def apply(
        self,
        labels: torch.Tensor,
        input_ids: torch.Tensor,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        sample_indices: Sequence[int],
        processor: Any,
        *,
        reasoning_markers: ReasoningMarkers | None = None,
        embedded_roles: frozenset[str] = frozenset(),
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Labels (and weights, when asked) after applying the policy.

        The default policy on samples without ``"train"`` / ``"weight"`` keys
        returns ``labels`` itself, so NeMo Automodel's label path costs one scan of
        the messages' keys.

        Args:
            labels: The label strategy's ``[B, L]`` labels.
            input_ids: The ``[B, L]`` token ids they label.
            conversations: The samples' conversations, one per row.
            sample_indices: Each row's position in the caller's batch.
            processor: The processor whose tokenizer made ``input_ids``.
            reasoning_markers: The family's reasoning delimiters, used when
                the policy names none.
            embedded_roles: Roles the template writes inside assistant turns
                (Gemma 4's tool responses): they have no turns of their own to
                find, and are trained or not with the turn that holds them.
        """
        keys = _MessageKeys.of(conversations)
        if keys.weight and not self.loss_weights:
            _warn_ignored_weights()
        if not self._needs_turns(keys):
            weights = (labels != IGNORE_INDEX).float() if self.loss_weights else None
            return labels, weights
        weights = (
            torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
            if self.loss_weights
            else None
        )
        tokenizer = tokenizer_of(processor)
        extra_roles = keys.flagged_roles - self.roles - embedded_roles
        turns = find_turns(
            labels,
            input_ids,
            conversations,
            processor,
            roles=(self.roles | extra_roles) - embedded_roles,
            sample_indices=sample_indices,
        )
        block = self._reasoning_ids(tokenizer, reasoning_markers)
        out = torch.full_like(labels, IGNORE_INDEX)
        for row, row_turns in enumerate(turns):
            conversation = conversations[row]
            chosen = self._choose(row_turns, conversation, sample_indices[row])
            last = chosen[-1][0] if chosen else None
            ids = input_ids[row]
            for turn, weight in chosen:
                stop = turn.stop
                if turn.has_end and (
                    self.train_on_end_of_turn == "never"
                    or (self.train_on_end_of_turn == "last" and turn is not last)
                ):
                    stop -= 1
                out[row, turn.start : stop] = ids[turn.start : stop]
                if turn.role == "assistant" and block is not None:
                    self._mask_reasoning(out[row], ids, turn.start, stop, block, tokenizer)
                if weights is not None:
                    weights[row, turn.start : stop] = weight
        if weights is not None:
            weights.masked_fill_(out == IGNORE_INDEX, 0.0)
        return out, weights

    # -- turn selection ---------------------------------------------------------

    def _choose(
        self,
        turns: Sequence[Turn],
        conversation: Sequence[Mapping[str, Any]],
        sample_index: int,
    ) -> list[tuple[Turn, float]]:
        """The turns to train, each with its weight, in order."""
        candidates = [turn for turn in turns if turn.role in self.roles]
        positions = {id(turn): position for position, turn in enumerate(candidates)}
        chosen = []
        for turn in turns:
            message = _message_of(conversation, turn)
            flag = message.get("train") if message is not None else None
            position = positions.get(id(turn))
            if flag is not None:  # the sample's own flag wins; the rule is not consulted
                selected = bool(flag)
            else:
                selected = position is not None and self._selected(
                    position, len(candidates), sample_index, message
                )
            if not selected:
                continue
            if position is not None:
                weight = self._weight(sample_index, position, message)
            else:  # trained only by its own "train" flag: its own weight or 1
                weight = float(message.get("weight", 1.0)) if message is not None else 1.0
            if weight == 0.0:
                continue
            chosen.append((turn, weight))
        return chosen

    def _selected(
        self, position: int, count: int, sample_index: int, message: Mapping[str, Any] | None
    ) -> bool:
        if self.turns == "all":
            return True
        if self.turns == "last":
            return position == count - 1
        if isinstance(self.turns, int):
            return position < self.turns
        view = types.MappingProxyType(dict(message)) if message is not None else {}
        return bool(self.turns(sample_index, position, view))

    def _weight(self, sample_index: int, position: int, message: Mapping[str, Any] | None) -> float:
        if message is not None and "weight" in message:
            return float(message["weight"])
        if self.weight is None:
            return 1.0
        view = types.MappingProxyType(dict(message)) if message is not None else {}
        value = self.weight(sample_index, position, view)
        if not is_weight(value):
            msg = (
                f"the 'weight' callable returned {value!r} for sample {sample_index}, turn "
                f"{position}; a weight must be a finite number >= 0."
            )
            raise ConfigurationError(msg)
        return float(value)

    # -- reasoning ---------------------------------------------------------------

    def _reasoning_ids(
        self, tokenizer: Any, family: ReasoningMarkers | None
    ) -> tuple[int, int, str] | None:
        if self.reasoning == "train":
            return None
        markers = self.reasoning_markers or family or ReasoningMarkers()
        open_id = single_token_id(tokenizer, markers.open_token)
        close_id = single_token_id(tokenizer, markers.close_token)
        if open_id is None or close_id is None:
            msg = (
                f"reasoning={self.reasoning!r} needs {markers.open_token!r} and "
                f"{markers.close_token!r} as single tokens, but {type(tokenizer).__name__} lacks "
                "them; pass reasoning_markers=ReasoningMarkers(...) with this model's delimiters."
            )
            raise ConfigurationError(msg)
        return open_id, close_id, markers.channel_name

    def _mask_reasoning(
        self,
        labels: torch.Tensor,
        ids: torch.Tensor,
        start: int,
        stop: int,
        block: tuple[int, int, str],
        tokenizer: Any,
    ) -> None:
        open_id, close_id, channel = block
        tokens = ids[start:stop].tolist()
        first = 0
        while first < len(tokens) and is_blank(tokenizer, tokens[first]):
            first += 1
        if first >= len(tokens) or tokens[first] != open_id:
            return
        end = reasoning_block_end(
            tokens,
            first,
            close_id,
            tokenizer,
            empty_only=self.reasoning == "skip_empty",
            blank_after=True,
            channel_name=channel,
        )
        if end is not None:  # None: not closed inside the turn, or not empty
            labels[start : start + end] = IGNORE_INDEX


@attrs.frozen
class _MessageKeys:
    """Which per-message label keys a batch uses, read in one pass over its messages."""

    train: bool
    weight: bool  # a weight other than 0
    zero_weight: bool
    flagged_roles: frozenset[str]  # roles of messages with "train": True

    @classmethod
    def of(cls, conversations: Sequence[Sequence[Mapping[str, Any]]]) -> _MessageKeys:
        train = weight = zero_weight = False
        flagged = set()
        for conversation in conversations:
            for message in conversation:
                if "train" in message:
                    train = True
                    if message["train"] is True:
                        flagged.add(message["role"])
                if "weight" in message:
                    if message["weight"] == 0:
                        zero_weight = True
                    else:
                        weight = True
        return cls(train, weight, zero_weight, frozenset(flagged))


def _warn_ignored_weights() -> None:
    """Say once per process that message weights go unused without ``loss_weights``."""
    warn_once(
        logger,
        "ignored message weights",
        "messages carry 'weight' keys but the label policy has loss_weights=False, so "
        "only weight 0 has an effect (the turn is not trained); pass "
        "label_policy=LabelPolicy(loss_weights=True) for a loss_weights tensor.",
    )


def mask_enclosed(
    labels: torch.Tensor, input_ids: torch.Tensor, open_id: int, close_id: int
) -> torch.Tensor:
    """``labels`` with every ``open_id ... close_id`` stretch (both included) untrained.

    Used for text a template writes inside an assistant turn that the model
    does not produce, such as Gemma 4's tool responses.
    """
    inside = assistant_spans(
        input_ids, TurnMarkers(assistant_marker=(open_id,), end_of_turn_id=close_id)
    )
    return labels.masked_fill(inside | (input_ids == open_id), IGNORE_INDEX)


def _message_of(conversation: Sequence[Mapping[str, Any]], turn: Turn) -> Mapping[str, Any] | None:
    return conversation[turn.message] if turn.message is not None else None


def find_turns(
    labels: torch.Tensor,
    input_ids: torch.Tensor,
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    processor: Any,
    *,
    roles: Iterable[str] = ("assistant",),
    sample_indices: Sequence[int] | None = None,
) -> list[list[Turn]]:
    """The turns of each row, in order of position.

    Assistant turns are the labelled runs of ``labels``; other roles are
    found with markers derived from the chat template. When a row holds as
    many turns of a role as its sample has messages of that role, they are
    matched in order (assistant turns may also match the messages with text,
    for strategies that find no turn for an empty answer); when the counts
    differ, a [`SampleError`][vlm_collate.SampleError] says so
    if the sample asks for per-message control, else the turns keep no
    message. ``sample_indices`` (each row's index in the caller's batch)
    name the sample in that error.
    """
    tokenizer = tokenizer_of(processor)
    special = special_ids(tokenizer)
    spans = {"assistant": labels != IGNORE_INDEX}
    ends: dict[str, int | None] = {"assistant": None}
    for role in sorted(set(roles) - {"assistant"}):
        markers = role_markers(processor, role)
        spans[role] = assistant_spans(input_ids, markers)
        ends[role] = markers.end_of_turn_id
    runs_of = {role: _runs(mask) for role, mask in spans.items()}
    result = []
    for row, conversation in enumerate(conversations):
        row_turns: list[Turn] = []
        ids = input_ids[row].tolist()
        for role in spans:
            runs = runs_of[role][row]
            messages = [
                index for index, message in enumerate(conversation) if message.get("role") == role
            ]
            if len(runs) != len(messages) and role == "assistant":
                # Strategies that search for answer texts find no turn for an empty answer.
                written = [index for index in messages if message_text(conversation[index])]
                if len(runs) == len(written):
                    messages = written
            matched = len(runs) == len(messages)
            if not matched and _asks_per_message(conversation, role):
                msg = (
                    f"found {len(runs)} {role} turns in the tokens but the sample has "
                    f"{len(messages)} {role} messages, so per-message 'train' / 'weight' keys "
                    "cannot be matched to turns (the chat template drops or merges some of them)"
                )
                index = sample_indices[row] if sample_indices is not None else row
                raise SampleError(msg, sample_index=index)
            end_id = ends[role]
            for position, (start, stop) in enumerate(runs):
                last = ids[stop - 1]
                has_end = last == end_id if end_id is not None else last in special
                row_turns.append(
                    Turn(role, start, stop, has_end, messages[position] if matched else None)
                )
        row_turns.sort(key=lambda turn: turn.start)
        result.append(row_turns)
    return result


def _asks_per_message(conversation: Sequence[Mapping[str, Any]], role: str) -> bool:
    return any(
        message.get("role") == role and any(key in message for key in _MESSAGE_KEYS)
        for message in conversation
    )


def _runs(mask: torch.Tensor) -> list[list[tuple[int, int]]]:
    """``(start, stop)`` of each maximal run of True, per row of a ``[B, L]`` bool tensor."""
    rows = mask.shape[0]
    border = mask.new_zeros((rows, 1))
    edges = torch.cat([border, mask, border], dim=1).to(torch.int8).diff(dim=1)
    starts = (edges == 1).nonzero().tolist()  # row-major, so runs come out in order
    stops = (edges == -1).nonzero().tolist()
    runs: list[list[tuple[int, int]]] = [[] for _ in range(rows)]
    for (row, start), (_, stop) in zip(starts, stops, strict=True):
        runs[row].append((start, stop))
    return runs
