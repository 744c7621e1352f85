"""Hypothesis strategies for chat samples.

They generate what real datasets contain and what breaks collators: several
turns, system and tool roles, unicode, leading whitespace, empty answers,
answers that also appear in prompts, and images of random size and mode.

Texts are NFC-normalised, as the Qwen2 tokenizer normalises text to NFC; a
decoded run can only equal its source text if the source is normalised too.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from PIL import Image

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - exercised only without hypothesis
    from ..errors import MissingDependencyError

    msg = "vlm_collate.testing strategies need 'hypothesis': pip install hypothesis"
    raise MissingDependencyError(msg) from exc

__all__ = [
    "CONTROL_TOKENS",
    "IMAGE_MODES",
    "answer_texts",
    "conversations",
    "examples",
    "images",
    "prompt_texts",
]

IMAGE_MODES = ("RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16")

_WORDS = (
    "the",
    "cat",
    "naïve",
    "日本語",
    "emoji 🙂",
    "x=1",
    "(a, b)",
    "Ünïcödé",
    "42",
    "<b>",
    "{{ x }}",
)
_LETTERS = st.characters(
    blacklist_categories=("Cs", "Cc", "Co", "Cn"),
    blacklist_characters="\u2028\u2029\x85",
)


# Control-token shapes of the supported templates. Text holding them is bad
# input (the collator's special_tokens_in_text policy), not a labelling case.
CONTROL_TOKENS = re.compile(
    r"<\|[^<>|]*\|>|<\|?[a-z_]+\|>|<\|[a-z_]+>"
    r"|</?(image|video|audio|s|unk|pad|think|tool_call|tool_response|start_of_turn|end_of_turn|bos|eos)>"
    r"|\[/?[A-Z_]+\]"
)


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _plain(text: str) -> bool:
    return CONTROL_TOKENS.search(text) is None


def prompt_texts() -> st.SearchStrategy[str]:
    """Non-empty user/system texts: words, unicode and punctuation."""
    words = st.lists(
        st.one_of(st.sampled_from(_WORDS), st.text(_LETTERS, min_size=1, max_size=8)),
        min_size=1,
        max_size=8,
    )
    return words.map(" ".join).map(_nfc).filter(lambda text: text.strip() != "" and _plain(text))


def answer_texts(
    *, allow_empty: bool = True, leading_newline: bool = True
) -> st.SearchStrategy[str]:
    """Assistant texts: maybe empty, maybe with leading spaces, tabs or newlines."""
    leads = [" ", "  ", "\t"] + (["\n", "\n\n"] if leading_newline else [])
    body = st.lists(
        st.one_of(st.sampled_from(_WORDS), st.text(_LETTERS, min_size=1, max_size=10)),
        min_size=0 if allow_empty else 1,
        max_size=10,
    ).map(" ".join)
    lead = st.one_of(st.just(""), st.sampled_from(leads))
    tail = st.sampled_from(["", "", ".", "\n", " "])
    text = st.tuples(lead, body, tail).map("".join).map(_nfc).filter(_plain)
    return text if allow_empty else text.filter(lambda value: value.strip() != "")


@st.composite
def images(
    draw: st.DrawFn, *, modes: tuple[str, ...] = IMAGE_MODES, max_side: int = 96
) -> Image.Image:
    """A PIL image of random size, mode and content."""
    width = draw(st.integers(8, max_side))
    height = draw(st.integers(8, max_side))
    mode = draw(st.sampled_from(modes))
    seed = draw(st.integers(0, 255))
    gradient = Image.linear_gradient("L").resize((width, height))
    base = Image.merge(
        "RGB", (gradient, gradient.rotate(90), Image.new("L", (width, height), seed))
    )
    if mode == "I;16":
        return base.convert("L").point(lambda value: value * 257).convert("I;16")
    if mode == "P":
        return base.convert("P", palette=Image.Palette.ADAPTIVE)
    return base.convert(mode)


@st.composite
def conversations(
    draw: st.DrawFn,
    *,
    max_turns: int = 3,
    with_images: bool = True,
    with_system: bool | None = None,
    roles: tuple[str, ...] = ("user",),
    list_content: bool | None = None,
    allow_empty_answers: bool = True,
    leading_newline: bool = True,
    label_keys: bool = False,
) -> list[dict[str, Any]]:
    """A conversation of one to ``max_turns`` user/assistant exchanges.

    Args:
        max_turns: Most user/assistant exchanges.
        with_images: Allow image items in user turns.
        with_system: Force (True) or forbid (False) a system message; None draws.
        roles: Extra prompt roles that may replace "user" in later exchanges
            (for example ``("user", "tool")``); the first exchange is always "user".
        list_content: Force list-of-items content (True) or strings (False); None draws.
        allow_empty_answers: Allow ``""`` as an assistant text.
        leading_newline: Allow answers that begin with a newline.
        label_keys: Give some assistant messages a ``"train"`` flag or a
            ``"weight"`` (0 included), as [`LabelPolicy`][vlm_collate.LabelPolicy] reads them.
    """
    messages: list[dict[str, Any]] = []
    system = draw(st.booleans()) if with_system is None else with_system
    if system:
        messages.append({"role": "system", "content": draw(prompt_texts())})
    answers: list[str] = []
    for turn in range(draw(st.integers(1, max_turns))):
        role = "user" if turn == 0 else draw(st.sampled_from(roles))
        prompt = draw(prompt_texts())
        if answers and draw(st.integers(0, 3)) == 0:
            prompt = answers[-1].strip() or prompt  # an answer repeated in a later prompt
        items: list[dict[str, Any]] = []
        if with_images and role == "user":
            for _ in range(draw(st.integers(0, 2))):
                items.append({"type": "image", "image": draw(images())})
        as_list = draw(st.booleans()) if list_content is None else list_content
        if items or as_list:
            messages.append({"role": role, "content": [*items, {"type": "text", "text": prompt}]})
        else:
            messages.append({"role": role, "content": prompt})
        answer = draw(
            answer_texts(allow_empty=allow_empty_answers, leading_newline=leading_newline)
        )
        answers.append(answer)
        content: Any = [{"type": "text", "text": answer}] if as_list else answer
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if label_keys:
            message.update(draw(_label_keys))
        messages.append(message)
    return messages


_label_keys: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({}),
    st.just({}),
    st.fixed_dictionaries({"train": st.booleans()}),
    st.fixed_dictionaries({"weight": st.sampled_from([0.0, 0.25, 0.5, 2.0])}),
)


def examples(
    *, min_size: int = 1, max_size: int = 4, **conversation_options: Any
) -> st.SearchStrategy[list[dict[str, Any]]]:
    """A batch of samples ``{"conversation": [...]}``; options go to `conversations`."""
    sample = conversations(**conversation_options).map(
        lambda conversation: {"conversation": conversation}
    )
    return st.lists(sample, min_size=min_size, max_size=max_size)
