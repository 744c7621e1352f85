"""Small questions about a tokenizer: which object it is, one token's id, its special ids."""

from __future__ import annotations

from typing import Any

__all__ = ["single_token_id", "special_ids", "tokenizer_of"]


def tokenizer_of(processor: Any) -> Any:
    """Return the processor's tokenizer, or the object itself if it is one."""
    return getattr(processor, "tokenizer", None) or processor


def single_token_id(tokenizer: Any, token: str) -> int | None:
    """Return the id of a single-token string, or None when the vocabulary lacks it."""
    try:
        token_id = tokenizer.convert_tokens_to_ids(token)
    except Exception:  # tokenizers raise many kinds for an unknown token
        return None
    if not isinstance(token_id, int) or token_id == getattr(tokenizer, "unk_token_id", None):
        return None
    return token_id


def special_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special tokens, added special tokens included."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return set(getattr(tokenizer, "all_special_ids", []) or []) | {
        index for index, token in added.items() if getattr(token, "special", False)
    }
