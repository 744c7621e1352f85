"""Regenerate the example dataset bundled in ``vlm_collate/data``.

Run once by hand (``python -m tests.tools.make_example_data``); the outputs are
committed, so neither the tests nor users run this. Everything is drawn with
Pillow and encoded with PyAV from fixed parameters, so a rerun gives the same
pictures (encoders may still differ by a few bytes between library versions).
"""

from __future__ import annotations

import json
import pathlib

import av
import numpy as np
from PIL import Image, ImageDraw

DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "vlm_collate" / "data"

# Each sample is (id, conversation). Media paths are relative to the JSONL file.
SAMPLES: list[tuple[str, list[dict]]] = [
    (
        "single_image",  # single image and a question
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "images/red_square.png"},
                    {"type": "text", "text": "What colour is the square?"},
                ],
            },
            {"role": "assistant", "content": "The square is red."},
        ],
    ),
    (
        "two_images",  # two images in one turn
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "images/red_square.png"},
                    {"type": "image", "image": "images/sunset.jpg"},
                    {"type": "text", "text": "Which of the two pictures has a gradient?"},
                ],
            },
            {"role": "assistant", "content": "The second one: it fades from orange to purple."},
        ],
    ),
    (
        "video",  # a short video
        [
            {
                "role": "user",
                "content": [
                    {"type": "video", "video": "videos/moving_square.mp4"},
                    {"type": "text", "text": "What happens in this clip?"},
                ],
            },
            {"role": "assistant", "content": "A white square slides from left to right."},
        ],
    ),
    (
        "text_only",  # text only
        [
            {"role": "user", "content": "Name the three primary colours of light."},
            {"role": "assistant", "content": "Red, green and blue."},
        ],
    ),
    (
        "multi_turn",  # multi-turn with an image in the first turn
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "images/sunset.jpg"},
                    {"type": "text", "text": "Is this a photo of the day or the night?"},
                ],
            },
            {"role": "assistant", "content": "It looks like dusk."},
            {"role": "user", "content": [{"type": "text", "text": "Which colour is at the top?"}]},
            {"role": "assistant", "content": "Orange."},
        ],
    ),
    (
        "system_prompt",  # a system prompt
        [
            {"role": "system", "content": "You answer in exactly one word."},
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "images/red_square.png"},
                    {"type": "text", "text": "Which shape is drawn?"},
                ],
            },
            {"role": "assistant", "content": "Square."},
        ],
    ),
    (
        "unicode_answer",  # an answer with leading whitespace, unicode and HTML-like text
        [
            {"role": "user", "content": "How much is the coffee, and how do I write it in HTML?"},
            {
                "role": "assistant",
                "content": "  Ça coûte 3 € (≈ ¥480) 🙂 — write it as <b>3 €</b> & done.",
            },
        ],
    ),
    (
        "rgba_image",  # an RGBA image with transparency
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "images/logo_rgba.png"},
                    {"type": "text", "text": "Describe the logo."},
                ],
            },
            {"role": "assistant", "content": "A blue circle on a transparent background."},
        ],
    ),
    (
        "greyscale_image",  # a greyscale image
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "images/scan_grey.png"},
                    {"type": "text", "text": "Is this picture in colour?"},
                ],
            },
            {"role": "assistant", "content": "No, it is greyscale: dark stripes on a light page."},
        ],
    ),
    (
        "no_assistant_turn",  # problematic: no assistant turn, so nothing is trained
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "images/red_square.png"},
                    {"type": "text", "text": "This sample forgot its answer."},
                ],
            },
        ],
    ),
]


def red_square() -> Image.Image:
    image = Image.new("RGB", (64, 48), "white")
    ImageDraw.Draw(image).rectangle((16, 8, 47, 39), fill=(220, 30, 30))
    return image


def sunset() -> Image.Image:
    rows = np.linspace(0.0, 1.0, 112)[:, None, None]
    top, bottom = np.array([250, 150, 40]), np.array([90, 30, 120])
    gradient = (top * (1 - rows) + bottom * rows).astype(np.uint8)
    return Image.fromarray(np.repeat(gradient, 168, axis=1), mode="RGB")


def logo_rgba() -> Image.Image:
    image = Image.new("RGBA", (56, 56), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((6, 6, 49, 49), fill=(30, 80, 220, 255))
    return image


def scan_grey() -> Image.Image:
    image = Image.new("L", (56, 70), 230)
    draw = ImageDraw.Draw(image)
    for top in range(8, 64, 12):
        draw.rectangle((6, top, 49, top + 4), fill=40)
    return image


def write_video(path: pathlib.Path, frames: int = 8, size: int = 64) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            frame = np.zeros((size, size, 3), dtype=np.uint8)
            left = 4 + index * 6
            frame[24:40, left : left + 16] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    (DATA_DIR / "images").mkdir(parents=True, exist_ok=True)
    (DATA_DIR / "videos").mkdir(parents=True, exist_ok=True)
    red_square().save(DATA_DIR / "images" / "red_square.png", optimize=True)
    sunset().save(DATA_DIR / "images" / "sunset.jpg", quality=85)
    logo_rgba().save(DATA_DIR / "images" / "logo_rgba.png", optimize=True)
    scan_grey().save(DATA_DIR / "images" / "scan_grey.png", optimize=True)
    write_video(DATA_DIR / "videos" / "moving_square.mp4")
    lines = [
        json.dumps({"id": name, "conversation": conversation}, ensure_ascii=False)
        for name, conversation in SAMPLES
    ]
    (DATA_DIR / "example.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
