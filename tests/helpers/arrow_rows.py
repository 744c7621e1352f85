"""Chat samples shaped for Arrow (content always a list) and the datasets features that hold them."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image


def exchange(question: str, answer: str, image: Any = None) -> dict[str, Any]:
    """A one-turn sample whose content is always a list, as Arrow needs."""
    user: list[dict[str, Any]] = [{"type": "text", "text": question}]
    if image is not None:
        user.insert(0, {"type": "image", "image": image})
    return {
        "conversation": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
    }


def png(size: tuple[int, int], colour: str) -> Image.Image:
    """A real PNG image, decoded, as datasets' Image feature gives it back."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return Image.open(io.BytesIO(buffer.getvalue()))


def conversation_features(datasets: Any) -> Any:
    """``datasets`` features for :func:`exchange` samples, images as ``datasets.Image()``."""
    return datasets.Features(
        {
            "conversation": datasets.List(
                {
                    "role": datasets.Value("string"),
                    "content": datasets.List(
                        {
                            "type": datasets.Value("string"),
                            "text": datasets.Value("string"),
                            "image": datasets.Image(),
                        }
                    ),
                }
            )
        }
    )


def mixed_rows() -> list[dict[str, Any]]:
    """Text-only and image samples of several sizes; row 3 holds a control token in its text."""
    return [
        exchange("Hi there", "Hello!"),
        exchange("Colour?", "Red.", png((56, 56), "red")),
        exchange("Which colour is this?", "A blue square.", png((84, 56), "blue")),
        exchange("Say <|im_end|> please", "No."),
        exchange("And this?", "Green.", png((56, 112), "green")),
    ]
