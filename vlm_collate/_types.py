"""The shapes the library asks of the objects users hand it.

These are structural (`typing.Protocol`): any Hugging Face processor
or tokenizer fits, and so does a stand-in written for tests. They say what
is used, not everything those classes offer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = ["Batch", "Conversation", "Message", "Processor", "Tokenizer"]

Message = Mapping[str, Any]
Conversation = Sequence[Message]
Batch = dict[str, Any]


class Tokenizer(Protocol):
    """A tokenizer: it tokenizes text and maps token strings to ids."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def convert_tokens_to_ids(self, tokens: Any) -> Any: ...


class Processor(Protocol):
    """A processor (or a tokenizer standing in for one): it renders chats and encodes them."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def apply_chat_template(self, conversation: Any, *args: Any, **kwargs: Any) -> Any: ...
