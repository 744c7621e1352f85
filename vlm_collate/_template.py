"""Rendering chat templates through a processor or a tokenizer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from .errors import TemplateError

__all__ = ["has_chat_template", "render", "text_content"]


def has_chat_template(obj: Any) -> bool:
    """Return True when ``obj`` (processor or tokenizer) carries a chat template."""
    return bool(getattr(obj, "chat_template", None)) or bool(
        getattr(getattr(obj, "tokenizer", None), "chat_template", None)
    )


def render(
    processor: Any,
    conversation: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = False,
    **template_kwargs: Any,
) -> str:
    """Render one conversation to text with the processor's (or tokenizer's) template.

    Processors' templates read list content; tokenizers' templates usually read
    strings. The processor is asked first, the tokenizer second.
    """
    owners = [processor]
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        owners.append(tokenizer)
    errors = []
    for owner in owners:
        if not getattr(owner, "chat_template", None):
            continue
        try:
            rendered = owner.apply_chat_template(
                list(conversation),
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
                **template_kwargs,
            )
        except Exception as exc:  # jinja errors vary by template; try the next owner
            errors.append(f"{type(owner).__name__}: {exc}")
            continue
        return cast("str", rendered[0] if isinstance(rendered, list) else rendered)
    detail = "; ".join(errors) or "no chat template on the processor or its tokenizer"
    msg = f"cannot render the chat template ({detail})."
    raise TemplateError(msg)


def text_content(messages: Sequence[Mapping[str, Any]], *, as_list: bool) -> list[dict[str, Any]]:
    """Return messages whose string content is (or is not) wrapped in a text item."""
    if not as_list:
        return [dict(message) for message in messages]
    return [
        {**message, "content": [{"type": "text", "text": message["content"]}]}
        for message in messages
    ]
