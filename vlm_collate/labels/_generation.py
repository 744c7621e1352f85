"""Labels from the ``{% generation %}`` blocks of a chat template.

Templates written for ``return_assistant_tokens_mask`` wrap what the model
must learn to write in ``{% generation %}`` ... ``{% endgeneration %}``.
[`GenerationTagMask`][vlm_collate.GenerationTagMask] renders each conversation while recording where
those blocks fall in the text, tokenizes the text with offsets, and carries
the marked tokens over to the processor's row of ``input_ids``. That row is
not the plain tokenization: media placeholders are expanded into many tokens,
the row is padded on either side, and some processors insert text around
media. [`align_token_ids`][vlm_collate.labels.align_token_ids] pairs the two token sequences.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch

from .._template import render
from ..errors import LabelStrategyError, TemplateError
from ._strategies import (
    IGNORE_INDEX,
    Conversations,
    LabelStrategy,
    tokenize_with_offsets,
    tokenizer_of,
)

__all__ = ["GenerationTagMask", "align_token_ids", "has_generation_block"]

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")

Span = tuple[int, int]


def has_generation_block(template: str | None) -> bool:
    """Return True when ``template`` holds a ``{% generation %}`` tag."""
    return template is not None and bool(template) and _GENERATION_TAG.search(template) is not None


@attrs.frozen(kw_only=True)
class GenerationTagMask(LabelStrategy):
    """Trains the tokens a template's ``{% generation %}`` blocks produce.

    The template decides what is trained, so it also covers roles and turn
    layouts no marker describes. A template without a generation block
    raises [`LabelStrategyError`][vlm_collate.LabelStrategyError], so that
    ``FirstOf(GenerationTagMask(), ImStartMarker(), ...)`` moves on to the
    next strategy. A conversation whose blocks hold no token gives an
    unlabelled row (the collator's ``empty_labels`` policy decides its fate).

    Each conversation is rendered twice more (once with generation tracking,
    once through [`vlm_collate._template.render`][vlm_collate._template.render] to check that the
    text
    is the one the collator gave the processor) and tokenized once more, so
    this strategy costs more than the marker scans.
    """

    def build(
        self, input_ids: torch.Tensor, conversations: Conversations, processor: Any
    ) -> torch.Tensor:
        if len(conversations) != input_ids.shape[0]:
            msg = (
                f"GenerationTagMask got {len(conversations)} conversations for "
                f"{input_ids.shape[0]} rows of input_ids; they must pair one to one."
            )
            raise LabelStrategyError(msg)
        owners = _template_owners(processor)
        if not any(has_generation_block(template) for _, template in owners):
            msg = (
                f"the chat template of {type(processor).__name__} has no "
                "{% generation %} block, so GenerationTagMask cannot tell what to train."
            )
            raise LabelStrategyError(msg)
        render_tracked = _tracking_renderer()
        tokenizer = tokenizer_of(processor)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for row, conversation in enumerate(conversations):
            text, spans = _render_spans(render_tracked, processor, owners, conversation, row)
            source, offsets = tokenize_with_offsets(tokenizer, text, user="GenerationTagMask")
            marked = _tokens_in_spans(offsets, spans)
            if not marked:
                continue
            row_ids = input_ids[row]
            positions = align_token_ids(source, row_ids.tolist())
            unmatched = [index for index in marked if positions[index] < 0]
            if unmatched:
                raise LabelStrategyError(_unmatched_message(row, text, offsets, unmatched, marked))
            index = torch.tensor([positions[i] for i in marked], dtype=torch.long)
            labels[row, index] = row_ids[index]
        return labels


def _template_owners(processor: Any) -> list[tuple[Any, str]]:
    """The objects whose templates [`render`][vlm_collate._template.render] tries, in its order."""
    owners = [processor]
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        owners.append(tokenizer)
    found = []
    for owner in owners:
        template = getattr(owner, "chat_template", None)
        if isinstance(template, Mapping):  # named templates: apply_chat_template uses "default"
            template = template.get("default")
        if isinstance(template, str) and template:
            found.append((owner, template))
    return found


def _tracking_renderer() -> Callable[..., Any]:
    try:
        from transformers.utils.chat_template_utils import render_jinja_template
    except ImportError as exc:
        msg = (
            "GenerationTagMask needs transformers.utils.chat_template_utils.render_jinja_template "
            f"(with return_assistant_tokens_mask), which this transformers lacks ({exc})."
        )
        raise LabelStrategyError(msg) from exc
    return render_jinja_template


def _render_spans(
    render_tracked: Callable[..., Any],
    processor: Any,
    owners: list[tuple[Any, str]],
    conversation: Sequence[Mapping[str, Any]],
    row: int,
) -> tuple[str, list[Span]]:
    """Render like the collator does, recording the character spans of generation blocks.

    The first template that renders wins, as in [`render`][vlm_collate._template.render];
    the text is then checked against that function's, so the spans describe
    the very text the processor tokenized.
    """
    messages = [{key: value for key, value in m.items() if value is not None} for m in conversation]
    errors = []
    for owner, template in owners:
        special_tokens = dict(getattr(tokenizer_of(owner), "special_tokens_map", {}) or {})
        try:
            rendered, indices = render_tracked(
                conversations=[messages],
                chat_template=template,
                return_assistant_tokens_mask=True,
                add_generation_prompt=False,
                **special_tokens,
            )
        except TypeError as exc:
            msg = f"transformers' render_jinja_template cannot track generation blocks ({exc})."
            raise LabelStrategyError(msg) from exc
        except Exception as exc:  # jinja errors vary by template; render() tries the next owner
            errors.append(f"{type(owner).__name__}: {exc}")
            continue
        if not has_generation_block(template):
            msg = f"the chat template of {type(owner).__name__} has no {{% generation %}} block."
            raise LabelStrategyError(msg)
        return _checked(processor, conversation, rendered[0], indices[0], row)
    msg = f"row {row}: cannot render the chat template ({'; '.join(errors)})."
    raise LabelStrategyError(msg)


def _checked(
    processor: Any, conversation: Sequence[Mapping[str, Any]], text: str, spans: Any, row: int
) -> tuple[str, list[Span]]:
    try:
        expected = render(processor, conversation)
    except TemplateError as exc:
        msg = f"row {row}: {exc}"
        raise LabelStrategyError(msg) from exc
    if expected != text:
        msg = (
            f"row {row}: rendering with generation tracking gave a different text than "
            f"apply_chat_template ({text[:80]!r}... against {expected[:80]!r}...), so its "
            "generation spans cannot be trusted."
        )
        raise LabelStrategyError(msg)
    return text, sorted((int(start), int(stop)) for start, stop in spans)


def _tokens_in_spans(offsets: Sequence[Span], spans: Sequence[Span]) -> list[int]:
    """Indices of the tokens whose characters overlap a span.

    A token that straddles a span edge (a merged ``"\\n\\n"``, SentencePiece's
    ``"▁A"`` after a template space) carries answer text, so it is marked.
    Zero-width tokens carry none and never are. One pass: both lists are in
    text order.
    """
    marked = []
    span = 0
    for index, (start, stop) in enumerate(offsets):
        while span < len(spans) and spans[span][1] <= start:
            span += 1
        if span == len(spans):
            break
        if stop > start and start < spans[span][1] and stop > spans[span][0]:
            marked.append(index)
    return marked


def _unmatched_message(
    row: int, text: str, offsets: Sequence[Span], unmatched: list[int], marked: list[int]
) -> str:
    start, stop = offsets[unmatched[0]]
    return (
        f"row {row}: {len(unmatched)} of the {len(marked)} tokens inside generation blocks "
        f"have no counterpart in the processor's input_ids (the first is {text[start:stop]!r} "
        f"at character {start}); the processor changed the text inside an answer, or cut it off."
    )


def align_token_ids(source: Sequence[int], target: Sequence[int]) -> list[int]:
    """Return, for each token of ``source``, its position in ``target`` (-1 when unmatched).

    ``target`` is ``source`` with tokens inserted: padding on either side,
    media placeholders expanded into runs, text a processor adds around
    media. A two-pointer walk pairs each source token with the next equal
    target token. When the walk runs out of target (a source token really is
    missing or changed), `difflib.SequenceMatcher` pairs the longest
    common blocks instead, on runs of repeated tokens collapsed to one entry
    so that long placeholder and padding runs cost nothing.

    Args:
        source: Token ids of the plain tokenization.
        target: Token ids of the processor's row.
    """
    source = list(source)
    target = list(target)
    walked = _walk(source, target)
    if walked is not None:
        return walked
    return _block_alignment(source, target)


def _walk(source: list[int], target: list[int]) -> list[int] | None:
    """Leftmost embedding of ``source`` as a subsequence of ``target``, or None."""
    positions = []
    cursor = 0
    for token in source:
        while cursor < len(target) and target[cursor] != token:
            cursor += 1
        if cursor == len(target):
            return None
        positions.append(cursor)
        cursor += 1
    return positions


def _runs(tokens: list[int]) -> tuple[list[int], list[int], list[int]]:
    """Collapse repeats: the value, start and length of each run."""
    values: list[int] = []
    starts: list[int] = []
    lengths: list[int] = []
    for position, token in enumerate(tokens):
        if values and values[-1] == token:
            lengths[-1] += 1
        else:
            values.append(token)
            starts.append(position)
            lengths.append(1)
    return values, starts, lengths


def _block_alignment(source: list[int], target: list[int]) -> list[int]:
    positions = [-1] * len(source)
    source_values, source_starts, source_lengths = _runs(source)
    target_values, target_starts, target_lengths = _runs(target)
    matcher = difflib.SequenceMatcher(None, source_values, target_values, autojunk=False)
    for source_run, target_run, size in matcher.get_matching_blocks():
        for step in range(size):
            source_start = source_starts[source_run + step]
            target_start = target_starts[target_run + step]
            paired = min(source_lengths[source_run + step], target_lengths[target_run + step])
            for offset in range(paired):
                positions[source_start + offset] = target_start + offset
    return positions
