"""Sample builders and run oracles shared by the test files (not a test module)."""

from __future__ import annotations

import torch
from PIL import Image


def image_sample(answer: str = "A red box.", *images: Image.Image, prompt: str = "What?") -> dict:
    """A user turn with ``images`` then ``prompt``, and one assistant ``answer``."""
    content = [{"type": "image", "image": image} for image in images]
    return {
        "conversation": [
            {"role": "user", "content": [*content, {"type": "text", "text": prompt}]},
            {"role": "assistant", "content": answer},
        ]
    }


def text_sample(answer: str = "Hello.", prompt: str = "Hi") -> dict:
    """One text-only exchange."""
    return {
        "conversation": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": answer},
        ]
    }


def token_counts(batch: dict, tokenizer, token: str) -> list[int]:
    """How often ``token`` occurs in each row of ``batch["input_ids"]``."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    return (batch["input_ids"] == token_id).sum(dim=1).tolist()


def chatml_run_matches(run: str, expected: str) -> bool:
    """A decoded ChatML labelled run equals ``expected`` (answer plus end token).

    An answer that starts with whitespace may merge with the header's newline
    into one trained token (the pre-tokenizer joins whitespace runs ending in a
    newline): the run then carries that one newline in front, and nothing else.
    """
    return run == expected or (expected[:1].isspace() and run == "\n" + expected)


# Qwen2-VL / Qwen2.5-VL placeholder and boundary tokens, named here rather than
# asked of the library, so a test of what is never trained has its own oracle.
QWEN_VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def token_ids(tokenizer, tokens) -> torch.Tensor:
    """The ids of ``tokens`` (each a single token of ``tokenizer``)."""
    return torch.tensor([tokenizer.convert_tokens_to_ids(token) for token in tokens])
