"""One converter per row shape, from a dataset row to the library's own sample.

Each [`RowFormat`][vlm_collate.formats.RowFormat] says whether a row fits it (`missing`
names what is missing when it does not) and converts a row that fits into
``{"conversation": [...]}``, keeping the row's other columns (an ``id``, ...).
Media named in columns are placed where the text's ``<image>`` / ``<video>`` /
``<audio>`` placeholders (or ``{"type": "image"}`` items) stand, and the counts
must agree.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeGuard

import attrs

from ..errors import ConfigurationError, SampleError, SampleTypeError
from ._media import (
    MEDIA_COLUMNS,
    PLACEHOLDERS,
    count_placeholders,
    decode_audio,
    media_columns,
    media_item,
    split_placeholders,
    url_source,
)

__all__ = [
    "Cauldron",
    "Conversation",
    "LlamaFactory",
    "Messages",
    "OpenAIChat",
    "RowFormat",
    "ShareGPT",
]

Row = Mapping[str, Any]
Message = dict[str, Any]
_MEDIA_COLUMN_NAMES = frozenset(name for names in MEDIA_COLUMNS.values() for name in names)
_OPENAI_TYPES = frozenset({"image_url", "input_audio"})
_VISUAL_COLUMNS = ("image", "images", "video", "videos")


def _roles(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(key, str) and isinstance(role, str) and role for key, role in value.items()
    ):
        msg = (
            f"'roles' must map role names to role names, e.g. {{'human': 'user'}} (got {value!r})."
        )
        raise ConfigurationError(msg)
    return dict(value)


def _base(value: Any) -> pathlib.Path | None:
    return None if value is None else pathlib.Path(value)


@attrs.frozen(kw_only=True)
class RowFormat:
    """A row shape and its converter to the library's own sample.

    Args:
        roles: Role names to rename, over the format's own map
            (``{"bot": "assistant"}``).
        base: Folder that relative media paths are resolved against
            (None leaves them as they are).
    """

    name: ClassVar[str] = ""
    default_roles: ClassVar[Mapping[str, str]] = {}
    consumed: ClassVar[frozenset[str]] = frozenset()

    roles: Mapping[str, str] = attrs.field(factory=dict, converter=_roles)
    base: pathlib.Path | None = attrs.field(default=None, converter=_base)

    def missing(self, row: Row) -> str | None:
        """None when ``row`` has this shape, otherwise what it lacks, as a phrase."""
        raise NotImplementedError

    def convert(self, row: Any, index: int | None = None) -> dict[str, Any]:
        """Convert ``row`` to ``{"conversation": [...], ...}``; ``index`` names it in errors."""
        if not isinstance(row, Mapping):
            msg = f"expected a row as a mapping (got {type(row).__name__})"
            raise SampleTypeError(msg, sample_index=index)
        problem = self.missing(row)
        if problem is not None:
            msg = f"the row is not in the {self.name!r} format: {problem}"
            raise SampleError(msg, sample_index=index)
        kept = {key: value for key, value in row.items() if key not in self.consumed}
        return {**kept, "conversation": self.messages(row, index)}

    def messages(self, row: Row, index: int | None) -> list[Message]:
        """The row's conversation in the library's own shape."""
        raise NotImplementedError

    def role(self, name: Any, index: int | None, position: int) -> str:
        """The library's name for the row's role ``name``."""
        table = {**self.default_roles, **self.roles}
        if isinstance(name, str) and name in table:
            return table[name]
        if isinstance(name, str) and name and not self.default_roles:
            return name  # the role check of the collator judges it
        known = ", ".join(sorted(table))
        msg = (
            f"role {name!r} is not one of the {self.name} roles ({known}); "
            f"map it with roles={{{name!r}: 'user'}} or fix the row"
        )
        raise SampleError(msg, sample_index=index, message_index=position)


def _check_counts(
    texts: Sequence[str], media: Mapping[str, list[Any]], index: int | None, fmt: str
) -> None:
    """Placeholders in ``texts`` must equal the media given, kind by kind."""
    for kind, given in media.items():
        found = sum(count_placeholders(text)[kind] for text in texts)
        if found != len(given):
            columns = " / ".join(repr(column) for column in MEDIA_COLUMNS[kind])
            msg = (
                f"the {fmt} row holds {found} {PLACEHOLDERS[kind]} placeholder(s) in its text "
                f"but {len(given)} {kind}(s) in {columns}; each {kind} needs exactly one "
                "placeholder where it goes"
            )
            raise SampleError(msg, sample_index=index)


def _placeholder_content(text: str, queues: dict[str, list[Any]], base: Any) -> str | list[Any]:
    """Text without placeholders stays a string; with them it becomes a list of items."""
    if not any(count_placeholders(text).values()):
        return text
    return split_placeholders(text, queues, base)


def _strip_none(message: Mapping[str, Any]) -> dict[str, Any]:
    # Arrow gives every message every field of the column's schema; None means absent.
    return {key: value for key, value in message.items() if value is not None}


def _message_list(value: Any) -> TypeGuard[list[Mapping[str, Any]]]:
    """A non-empty list of mappings (an empty list fits no format: there is nothing to read)."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(message, Mapping) for message in value)
    )


def _text_of(message: Mapping[str, Any]) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            item["text"]
            for item in content
            if isinstance(item, Mapping) and isinstance(item.get("text"), str)
        ]
    return []


@attrs.frozen(kw_only=True)
class Conversation(RowFormat):
    """The library's own ``{"conversation": [{"role", "content"}, ...]}``.

    The row is passed on as it is, with two checks: a text ``<image>``
    placeholder next to top-level media columns is refused (a ShareGPT row
    converted halfway, whose media would otherwise be lost), and message
    fields set to None (as Arrow fills them) are left out.
    """

    name: ClassVar[str] = "conversation"

    def missing(self, row: Row) -> str | None:
        if not isinstance(row.get("conversation"), list):
            return "no 'conversation' list"
        return None

    def convert(self, row: Any, index: int | None = None) -> Any:
        if isinstance(row, Mapping) and "conversation" not in row:
            self._refuse_other_format(row, index)
        if not isinstance(row, Mapping) or not isinstance(row.get("conversation"), list):
            return row  # the sample check reports the malformed row with its position
        conversation = row["conversation"]
        self._refuse_half_converted(row, conversation, index)
        if not any(
            isinstance(message, Mapping) and None in message.values() for message in conversation
        ):
            return row
        messages = [
            _strip_none(message) if isinstance(message, Mapping) else message
            for message in conversation
        ]
        return {**row, "conversation": messages}

    def _refuse_other_format(self, row: Row, index: int | None) -> None:
        """A row in another known format gets a hint naming it, not just the missing key."""
        others = [cls for cls in _OTHER_FORMATS if cls().missing(row) is None]
        if len(others) != 1:
            return
        keys = ", ".join(repr(key) for key in list(row)[:8])
        msg = (
            f"missing key 'conversation' (keys present: {keys}); the row looks like the "
            f"{others[0].name!r} format: pass format={others[0].name!r} (or 'auto')"
        )
        raise SampleError(msg, sample_index=index)

    def _refuse_half_converted(self, row: Row, conversation: list[Any], index: int | None) -> None:
        # Audio is left out: NeMo Automodel's top-level "audio" is read by Phi-4's collator.
        columns = [name for name in _VISUAL_COLUMNS if row.get(name) is not None]
        if not columns:
            return
        for position, message in enumerate(conversation):
            if not isinstance(message, Mapping):
                continue
            for text in _text_of(message):
                counts = count_placeholders(text)
                found = [PLACEHOLDERS[kind] for kind in ("image", "video") if counts[kind]]
                if found:
                    msg = (
                        f"the text holds {found[0]!r} and the row has a top-level "
                        f"{columns[0]!r} column: it looks converted halfway from ShareGPT/LLaVA, "
                        f"and its {columns[0]} would never reach the model; pass "
                        "format='sharegpt' (or 'llamafactory') to place the media where the "
                        "placeholders are, or put them in 'content' as {'type': 'image', ...} items"
                    )
                    raise SampleError(msg, sample_index=index, message_index=position)


@attrs.frozen(kw_only=True)
class ShareGPT(RowFormat):
    """ShareGPT / LLaVA / LLaVA-OneVision: ``conversations`` of ``{"from", "value"}``.

    Media come from ``image``/``images``/``video``/``videos``/``audio``/``audios``
    and go where the ``<image>``/``<video>``/``<audio>`` placeholders are. A
    ``system`` column becomes the first message.
    """

    name: ClassVar[str] = "sharegpt"
    default_roles: ClassVar[Mapping[str, str]] = {
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "system": "system",
        "function_call": "assistant",
        "observation": "tool",
        "tool": "tool",
    }
    consumed: ClassVar[frozenset[str]] = frozenset({"conversations", "system"}) | (
        _MEDIA_COLUMN_NAMES
    )

    def missing(self, row: Row) -> str | None:
        turns = row.get("conversations")
        if not _message_list(turns):
            return "no 'conversations' list of messages"
        if not all("from" in turn or "role" in turn for turn in turns):
            return "its 'conversations' messages have no 'from' (or 'role')"
        return None

    def messages(self, row: Row, index: int | None) -> list[Message]:
        turns = row["conversations"]
        texts = [self._value(turn, index, position) for position, turn in enumerate(turns)]
        queues = media_columns(row, index)
        _check_counts(texts, queues, index, self.name)
        messages: list[Message] = []
        system = row.get("system")
        if isinstance(system, str) and system:
            messages.append({"role": "system", "content": system})
        for position, (turn, text) in enumerate(zip(turns, texts, strict=True)):
            role = self.role(turn.get("from", turn.get("role")), index, position)
            messages.append(
                {"role": role, "content": _placeholder_content(text, queues, self.base)}
            )
        return messages

    def _value(self, turn: Mapping[str, Any], index: int | None, position: int) -> str:
        value = turn.get("value", turn.get("content"))
        if not isinstance(value, str):
            msg = f"a ShareGPT message needs a string 'value' (got {type(value).__name__})"
            raise SampleTypeError(msg, sample_index=index, message_index=position)
        return value


def _chat_messages(row: Row) -> list[Any] | None:
    """``messages``, or ``prompt`` followed by ``completion`` (TRL's two-part rows)."""
    if _message_list(row.get("messages")):
        return list(row["messages"])
    prompt, completion = row.get("prompt"), row.get("completion")
    if _message_list(prompt) and _message_list(completion):
        return [*prompt, *completion]
    if isinstance(prompt, str) and isinstance(completion, str):
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    return None


def _item_types(messages: list[Any]) -> set[Any]:
    return {
        item.get("type")
        for message in messages
        if isinstance(message.get("content"), list)
        for item in message["content"]
        if isinstance(item, Mapping)
    }


def _has_text_placeholders(messages: list[Any]) -> bool:
    return any(
        any(count_placeholders(text).values()) for message in messages for text in _text_of(message)
    )


_NO_MESSAGES = "no 'messages' list (or 'prompt' and 'completion')"


@attrs.frozen(kw_only=True)
class Messages(RowFormat):
    """TRL / Hugging Face ``messages`` with ``{"type": "image"}`` items filled from ``images``.

    Placeholder items (``{"type": "image"}``, ``{"type": "video"}``,
    ``{"type": "audio"}`` without a source) take the next value of the
    ``images`` / ``videos`` / ``audios`` column. ``prompt`` + ``completion``
    rows are read as one conversation.
    """

    name: ClassVar[str] = "messages"
    consumed: ClassVar[frozenset[str]] = frozenset({"messages", "prompt", "completion"}) | (
        _MEDIA_COLUMN_NAMES
    )

    def missing(self, row: Row) -> str | None:
        messages = _chat_messages(row)
        if messages is None:
            return _NO_MESSAGES
        if _item_types(messages) & _OPENAI_TYPES:
            return "its content holds OpenAI 'image_url' / 'input_audio' items"
        if _has_text_placeholders(messages):
            return "its text holds '<image>'-style placeholders (a LLaMA-Factory row)"
        return None

    def messages(self, row: Row, index: int | None) -> list[Message]:
        messages = _chat_messages(row) or []
        queues = media_columns(row, index)
        self._check_slots(messages, queues, index)
        converted = []
        for position, message in enumerate(messages):
            message = _strip_none(message)
            message["role"] = self.role(message.get("role"), index, position)
            content = message.get("content")
            if isinstance(content, list):
                message["content"] = [self._item(item, queues) for item in content]
            converted.append(message)
        return converted

    def _item(self, item: Any, queues: dict[str, list[Any]]) -> Any:
        if not isinstance(item, Mapping):
            return item  # the sample check names it
        item = _strip_none(item)
        kind = item.get("type")
        if kind in queues and not _has_source(item, kind):
            return media_item(kind, queues[kind].pop(0), self.base)
        if kind in queues:
            key = next(key for key in (kind, "path", "url") if item.get(key) is not None)
            return {**media_item(kind, item[key], self.base), **_extras(item, kind, key)}
        return item

    def _check_slots(
        self, messages: list[Any], queues: dict[str, list[Any]], index: int | None
    ) -> None:
        for kind, given in queues.items():
            slots = sum(
                1
                for message in messages
                if isinstance(message.get("content"), list)
                for item in message["content"]
                if isinstance(item, Mapping)
                and item.get("type") == kind
                and not _has_source(item, kind)
            )
            if slots != len(given):
                msg = (
                    f"the row holds {slots} {{'type': {kind!r}}} placeholder item(s) but "
                    f"{len(given)} {kind}(s) in {MEDIA_COLUMNS[kind][1]!r}; each {kind} needs "
                    "exactly one placeholder item where it goes"
                )
                raise SampleError(msg, sample_index=index)


def _has_source(item: Mapping[str, Any], kind: str) -> bool:
    return any(item.get(key) is not None for key in (kind, "path", "url"))


def _extras(item: Mapping[str, Any], kind: str, key: str) -> dict[str, Any]:
    """An item's options (``fps``, ``max_pixels``, ...) without its source keys."""
    return {name: value for name, value in item.items() if name not in ("type", kind, key)}


@attrs.frozen(kw_only=True)
class LlamaFactory(RowFormat):
    """LLaMA-Factory's ``messages`` with ``<image>`` placeholders in string content.

    Media come from ``images`` / ``videos`` / ``audios`` and go where the
    placeholders are; ``observation`` turns are tool results and
    ``function_call`` turns are the assistant's.
    """

    name: ClassVar[str] = "llamafactory"
    default_roles: ClassVar[Mapping[str, str]] = {
        "user": "user",
        "assistant": "assistant",
        "system": "system",
        "tool": "tool",
        "function_call": "assistant",
        "observation": "tool",
    }
    consumed: ClassVar[frozenset[str]] = frozenset({"messages", "system"}) | _MEDIA_COLUMN_NAMES

    def missing(self, row: Row) -> str | None:
        messages = row.get("messages")
        if not _message_list(messages):
            return "no 'messages' list"
        if not all(isinstance(message.get("content"), str) for message in messages):
            return "its 'messages' content is not all strings"
        if not _has_text_placeholders(messages):
            return "no '<image>' / '<video>' / '<audio>' placeholder in its message text"
        return None

    def messages(self, row: Row, index: int | None) -> list[Message]:
        turns = row["messages"]
        queues = media_columns(row, index)
        _check_counts([turn["content"] for turn in turns], queues, index, self.name)
        messages: list[Message] = []
        system = row.get("system")
        if isinstance(system, str) and system:
            messages.append({"role": "system", "content": system})
        for position, turn in enumerate(turns):
            role = self.role(turn.get("role"), index, position)
            content = _placeholder_content(turn["content"], queues, self.base)
            messages.append({"role": role, "content": content})
        return messages


@attrs.frozen(kw_only=True)
class OpenAIChat(RowFormat):
    """OpenAI chat ``messages``: ``image_url`` and ``input_audio`` items, string or list content.

    ``image_url`` takes ``file://`` URLs, local paths, ``data:`` URIs (decoded
    here, then checked like any bytes) and remote URLs, which are passed on
    for the collator's media access rules to allow or refuse. ``developer``
    messages are system messages.
    """

    name: ClassVar[str] = "openai"
    default_roles: ClassVar[Mapping[str, str]] = {
        "system": "system",
        "developer": "system",
        "user": "user",
        "assistant": "assistant",
        "tool": "tool",
    }
    consumed: ClassVar[frozenset[str]] = frozenset({"messages"})

    def missing(self, row: Row) -> str | None:
        messages = row.get("messages")
        if not _message_list(messages):
            return "no 'messages' list"
        if not _item_types(messages) & _OPENAI_TYPES:
            return "no 'image_url' or 'input_audio' item in its content"
        if any(row.get(column) is not None for column in _MEDIA_COLUMN_NAMES):
            return "it has media columns, which OpenAI rows never have"
        return None

    def messages(self, row: Row, index: int | None) -> list[Message]:
        converted = []
        for position, message in enumerate(row["messages"]):
            message = _strip_none(message)
            message["role"] = self.role(message.get("role"), index, position)
            content = message.get("content")
            if isinstance(content, list):
                message["content"] = [
                    self._item(
                        item,
                        {"sample_index": index, "message_index": position, "item_index": number},
                    )
                    for number, item in enumerate(content)
                ]
            converted.append(message)
        return converted

    def _item(self, item: Any, where: dict[str, int | None]) -> Any:
        if not isinstance(item, Mapping):
            return item
        item = _strip_none(item)
        kind = item.get("type")
        if kind == "image_url":
            url = item.get("image_url")
            url = url.get("url") if isinstance(url, Mapping) else url
            if not isinstance(url, str) or not url:
                msg = f"an 'image_url' item needs a string URL (got {url!r})"
                raise SampleTypeError(msg, **where)
            return {"type": "image", "image": url_source(url, self.base, where)}
        if kind == "input_audio":
            audio = item.get("input_audio")
            data = audio.get("data") if isinstance(audio, Mapping) else audio
            return {"type": "audio", "audio": decode_audio(data, where)}
        if kind in ("input_text", "output_text"):
            return {"type": "text", "text": item.get("text")}
        return item


@attrs.frozen(kw_only=True)
class Cauldron(RowFormat):
    """``the_cauldron`` rows: ``images`` plus ``texts: [{"user", "assistant"}, ...]``.

    Every image goes at the start of the first user turn, as the dataset means.
    """

    name: ClassVar[str] = "cauldron"
    consumed: ClassVar[frozenset[str]] = frozenset({"texts"}) | _MEDIA_COLUMN_NAMES

    def missing(self, row: Row) -> str | None:
        texts = row.get("texts")
        if not _message_list(texts) or not texts:
            return "no 'texts' list"
        if not all("user" in turn and "assistant" in turn for turn in texts):
            return "its 'texts' entries lack 'user' / 'assistant'"
        return None

    def messages(self, row: Row, index: int | None) -> list[Message]:
        queues = media_columns(row, index)
        extra = [kind for kind in ("video", "audio") if queues[kind]]
        if extra:
            msg = f"a the_cauldron row holds images only (got {extra[0]}s)"
            raise SampleError(msg, sample_index=index)
        messages: list[Message] = []
        for position, turn in enumerate(row["texts"]):
            user, assistant = turn.get("user"), turn.get("assistant")
            if not isinstance(user, str) or not isinstance(assistant, str):
                msg = "each 'texts' entry needs string 'user' and 'assistant' values"
                raise SampleTypeError(msg, sample_index=index, message_index=2 * position)
            content: list[dict[str, Any]] = []
            if position == 0:
                content = [media_item("image", image, self.base) for image in queues["image"]]
            content.append({"type": "text", "text": user})
            messages.append({"role": "user", "content": content})
            messages.append({"role": "assistant", "content": assistant})
        return messages


_OTHER_FORMATS = (Messages, ShareGPT, LlamaFactory, OpenAIChat, Cauldron)
