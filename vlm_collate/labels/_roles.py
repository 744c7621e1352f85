"""Turn markers of roles other than the assistant, derived from the chat template.

[`role_markers`][vlm_collate.labels.role_markers] finds the token ids that open a turn of a role
(``system``,
``user``, ``tool``, ...) and the id that closes it, so that
[`assistant_spans`][vlm_collate.labels.assistant_spans] finds those turns the way it finds
assistant turns. Like [`DerivedTemplateMarker`][vlm_collate.DerivedTemplateMarker], it
renders a conversation with sentinel texts, tokenizes it with offsets and reads
the whole tokens around each sentinel. The markers found are then tried on that
same conversation: the scan must mark exactly the role's messages, or the role
is refused with a [`LabelStrategyError`][vlm_collate.LabelStrategyError] that says why.

Two limits come from the templates, not from the scan: a template that opens
every conversation with a default (or empty) system turn gives a system span
to a conversation without a system message, and a template that folds the
system text into a user turn (Mistral) writes it inside that user's span.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import attrs
import torch

from .._template import render, text_content
from ..errors import ConfigurationError, LabelStrategyError, TemplateError
from ._strategies import (
    _MARKER_CACHE,
    DerivedTemplateMarker,
    TurnMarkers,
    _template_of,
    _whole_tokens,
    assistant_spans,
    merged_tail_ids,
    tokenize_with_offsets,
    tokenizer_of,
)

__all__ = ["role_markers"]

Message = dict[str, Any]


def role_markers(processor: Any, role: str) -> TurnMarkers:
    """Return the markers of ``role`` turns in the processor's chat template.

    The result (a refusal too) is cached per tokenizer and template, so a
    collator derives each role once. For ``"assistant"`` this is
    ``DerivedTemplateMarker().markers(processor)``.

    Args:
        processor: A processor or tokenizer with a chat template.
        role: The role whose turns are wanted: ``"system"``, ``"user"``,
            ``"tool"`` or any other role the template writes as its own turn.

    Raises:
        LabelStrategyError: The template writes no turn of its own for ``role``
            (it folds the text into another turn, leaves it out or refuses the
            role), or the tokens that open its turns also open other text.
    """
    if not isinstance(role, str) or not role:
        msg = f"'role' must be a non-empty str (got {role!r})."
        raise ConfigurationError(msg)
    if role == "assistant":
        return DerivedTemplateMarker().markers(processor)
    tokenizer = tokenizer_of(processor)
    key = ("role_markers", role, _template_of(processor), _template_of(tokenizer))
    found = _MARKER_CACHE.get_or_compute(tokenizer, key, lambda: _derive_or_refuse(processor, role))
    if isinstance(found, _Refusal):
        raise LabelStrategyError(found.message)
    return found


@attrs.frozen
class _Refusal:
    """Why a role has no markers, kept in the cache like a result."""

    message: str


@attrs.frozen
class _Rendered:
    """A sentinel conversation, rendered and tokenized."""

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    roles: dict[str, str]  # sentinel text -> role of its message, in message order
    starts: dict[str, int]  # sentinel text -> where it starts in ``text`` (when written)


def _derive(processor: Any, role: str) -> TurnMarkers:
    """Find, then check, the markers of ``role`` turns."""
    tokenizer = tokenizer_of(processor)
    rendered = _render_first(processor, role)
    sentinels = [sentinel for sentinel, owner in rendered.roles.items() if owner == role]
    _check_written_apart(processor, role, rendered, sentinels)
    marked = _marked_ids(tokenizer)
    end_id = _end_of_turn(processor, role, rendered, sentinels, marked)
    runs = [_run_before(rendered, sentinel) for sentinel in sentinels]
    candidates = _candidates(_common_suffix(runs), marked, end_id)
    if not candidates:
        pieces = [tokenizer.decode(run) for run in runs]
        _no_turn(
            processor,
            role,
            f"the text before each such message differs and shares no special token: {pieces!r}",
        )
    return _first_exact(processor, role, rendered, candidates, end_id)


def _check_written_apart(
    processor: Any, role: str, rendered: _Rendered, sentinels: list[str]
) -> None:
    """Refuse a role whose text is missing or sits inside another message's turn."""
    if any(sentinel not in rendered.starts for sentinel in sentinels):
        _no_turn(processor, role, "it leaves that text out")
    host = _host_before(rendered, sentinels)
    if host is not None:
        _no_turn(
            processor,
            role,
            f"it writes that text inside the turn of the {host!r} message before it",
        )
    if _inside_assistant_turns(processor, rendered, sentinels):
        _no_turn(processor, role, "it writes that text inside the assistant's turn")


def _first_exact(
    processor: Any,
    role: str,
    rendered: _Rendered,
    candidates: list[tuple[int, ...]],
    end_id: int,
) -> TurnMarkers:
    """The first candidate whose scan marks exactly the role's sentinels."""
    tokenizer = tokenizer_of(processor)
    sentinels = [sentinel for sentinel, owner in rendered.roles.items() if owner == role]
    holders: set[str] = set()
    for marker in candidates:
        spans = _span_texts(rendered, TurnMarkers(assistant_marker=marker, end_of_turn_id=end_id))
        if [span.strip() for span in spans] == sentinels:
            # Sentinels open with a letter, so merged tails play no part in the check.
            tails = merged_tail_ids(tokenizer, marker[-1])
            return TurnMarkers(
                assistant_marker=marker, end_of_turn_id=end_id, merged_tail_ids=tails
            )
        holders |= {rendered.roles[s] for span in spans for s in rendered.roles if s in span}
    shared = ", ".join(repr(owner) for owner in sorted(holders - {role})) or "other"
    opening = tokenizer.decode(list(candidates[0]))
    msg = (
        f"the chat template of {type(processor).__name__} opens {role!r} turns with tokens "
        f"({opening!r}) that also open turns holding {shared} messages, so {role!r} turns "
        "cannot be trained."
    )
    raise LabelStrategyError(msg)


def _no_turn(processor: Any, role: str, why: str) -> NoReturn:
    msg = (
        f"the chat template of {type(processor).__name__} writes no turn of its own for "
        f"{role!r} ({why}), so {role!r} turns cannot be trained."
    )
    raise LabelStrategyError(msg)


def _sentinel_conversations(role: str) -> list[list[Message]]:
    """Conversations holding ``role`` twice (system once), richest first.

    Tool messages follow an assistant message that calls the tools, as every
    template that writes them expects, after a system message that declares the
    tools in its ``tools`` field (Phi-4 writes that field inside ``<|tool|>``).
    The plainer conversations are used only when the template refuses the
    richer ones.
    """
    users = [_message("user", "Vqmz user one"), _message("user", "Vqmz user two")]
    replies = [_message("assistant", f"Vqmz reply {n}") for n in ("one", "two", "three")]
    calling = {**replies[0], "tool_calls": [_tool_call(0), _tool_call(1)]}
    tools = [
        {**_message("tool", "Vqmz tool one"), "tool_call_id": "call_0"},
        {**_message("tool", "Vqmz tool two"), "tool_call_id": "call_1"},
    ]
    with_tools = [users[0], calling, *tools, replies[1], users[1], replies[2]]
    plain = [users[0], replies[0], users[1], replies[1]]
    system = _message("system", "Vqmz system note")
    if role == "tool":
        return [[{**system, "tools": "Vqmz tool list"}, *with_tools]]
    if role == "user":
        return [with_tools, plain]
    if role == "system":
        return [[system, *with_tools], [system, *plain]]
    others = [_message(role, "Vqmz other one"), _message(role, "Vqmz other two")]
    return [[users[0], replies[0], others[0], users[1], replies[1], others[1]]]


def _message(role: str, text: str) -> Message:
    return {"role": role, "content": text}


def _tool_call(index: int) -> dict[str, Any]:
    return {
        "id": f"call_{index}",
        "type": "function",
        "function": {"name": "lookup", "arguments": {"query": f"q{index}"}},
    }


def _render_first(processor: Any, role: str) -> _Rendered:
    """Render the first sentinel conversation the template accepts."""
    refusals = []
    for messages in _sentinel_conversations(role):
        try:
            text = _render_either(processor, messages)
        except TemplateError as exc:
            refusals.append(str(exc))
            continue
        return _tokenized(processor, text, messages)
    _no_turn(processor, role, f"it refuses the role: {refusals[0]}")


def _render_either(processor: Any, messages: list[Message]) -> str:
    """Render with list content first and string content second (templates differ)."""
    try:
        return render(processor, text_content(messages, as_list=True))
    except TemplateError:
        return render(processor, text_content(messages, as_list=False))


def _tokenized(processor: Any, text: str, messages: list[Message]) -> _Rendered:
    ids, offsets = tokenize_with_offsets(tokenizer_of(processor), text, user="role_markers")
    roles = {}
    for message in messages:
        roles[message["content"]] = message["role"]
        if isinstance(message.get("tools"), str):
            roles[message["tools"]] = message["role"]
    starts = {sentinel: text.find(sentinel) for sentinel in roles if sentinel in text}
    return _Rendered(
        text=text,
        ids=ids,
        offsets=offsets,
        roles=roles,
        starts=starts,
    )


def _derive_or_refuse(processor: Any, role: str) -> TurnMarkers | _Refusal:
    """The role's markers, or the reason it has none (a refusal is cached like a result)."""
    try:
        return _derive(processor, role)
    except LabelStrategyError as exc:
        return _Refusal(str(exc))


def _marked_ids(tokenizer: Any) -> set[int]:
    """Ids of special and added tokens: the tokenizer never merges them with text."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return set(getattr(tokenizer, "all_special_ids", []) or []) | set(added)


def _host_before(rendered: _Rendered, sentinels: list[str]) -> str | None:
    """Role of an earlier message whose text comes after one of ``sentinels``, if any.

    Gemma 4 writes tool replies inside the calling assistant's turn, ahead of
    that message's own text.
    """
    order = list(rendered.roles)
    for sentinel in sentinels:
        for earlier in order[: order.index(sentinel)]:
            if rendered.starts.get(earlier, -1) > rendered.starts[sentinel]:
                return rendered.roles[earlier]
    return None


def _inside_assistant_turns(processor: Any, rendered: _Rendered, sentinels: list[str]) -> bool:
    """Whether the template writes any of ``sentinels`` inside an assistant turn."""
    try:
        markers = DerivedTemplateMarker().markers(processor)
    except LabelStrategyError:
        return False
    inside = assistant_spans(torch.tensor([rendered.ids]), markers)[0].tolist()
    for sentinel in sentinels:
        start = rendered.starts[sentinel]
        stop = start + len(sentinel)
        for flag, (left, right) in zip(inside, rendered.offsets, strict=True):
            if flag and left < stop and right > start:
                return True
    return False


def _end_of_turn(
    processor: Any, role: str, rendered: _Rendered, sentinels: list[str], marked: set[int]
) -> int:
    """The special or added token after each sentinel, before the next message's text."""
    ends = []
    for sentinel in sentinels:
        start = rendered.starts[sentinel]
        stop = start + len(sentinel)
        later = sorted(
            (begin, rendered.roles[other])
            for other, begin in rendered.starts.items()
            if begin > start
        )
        limit = later[0][0] if later else len(rendered.text)
        end = next(
            (
                (token, left)
                for token, (left, _) in zip(rendered.ids, rendered.offsets, strict=True)
                if left >= stop and token in marked
            ),
            None,
        )
        if end is None or end[1] >= limit:
            follower = f"the {later[0][1]!r} turn that follows" if later else "no closed turn"
            _no_turn(processor, role, f"it writes that text into {follower}")
        ends.append(end[0])
    if len(set(ends)) > 1:
        _no_turn(processor, role, f"its messages are closed by different tokens {ends}")
    return ends[0]


def _run_before(rendered: _Rendered, sentinel: str) -> list[int]:
    """Whole tokens between the previous message's text and ``sentinel``."""
    start = rendered.starts[sentinel]
    previous = [
        begin + len(other)
        for other, begin in rendered.starts.items()
        if begin + len(other) <= start and other != sentinel
    ]
    return _whole_tokens(rendered.ids, rendered.offsets, max(previous, default=0), start)


def _common_suffix(runs: Sequence[list[int]]) -> list[int]:
    suffix = list(runs[0])
    for run in runs[1:]:
        length = 0
        while length < min(len(suffix), len(run)) and suffix[-1 - length] == run[-1 - length]:
            length += 1
        suffix = suffix[len(suffix) - length :]
    return suffix


def _candidates(suffix: list[int], marked: set[int], end_id: int) -> list[tuple[int, ...]]:
    """Possible markers: tails of ``suffix`` holding a special token, most likely first.

    Tails that start with a special token come first, shortest first, since a
    shorter marker does not depend on what precedes the turn; then the other
    tails that hold a special token (Kimi-VL opens a tool turn with the
    plain word ``tool`` before ``<|im_middle|>``).
    """
    tails = [tuple(suffix[index:]) for index in reversed(range(len(suffix)))]
    usable = [tail for tail in tails if end_id not in tail and marked.intersection(tail)]
    return [tail for tail in usable if tail[0] in marked] + [
        tail for tail in usable if tail[0] not in marked
    ]


def _span_texts(rendered: _Rendered, markers: TurnMarkers) -> list[str]:
    """The text of each span the scan marks, without its closing token."""
    inside = assistant_spans(torch.tensor([rendered.ids]), markers)[0].tolist()
    texts = []
    position = 0
    while position < len(inside):
        if not inside[position]:
            position += 1
            continue
        stop = position
        while stop + 1 < len(inside) and inside[stop + 1]:
            stop += 1
        last_left, last_right = rendered.offsets[stop]
        closed = rendered.ids[stop] == markers.end_of_turn_id
        texts.append(
            rendered.text[rendered.offsets[position][0] : last_left if closed else last_right]
        )
        position = stop + 1
    return texts
