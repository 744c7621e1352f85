"""Real rows in every supported format, with their media written to disk (not a test module).

Each builder returns ``(row, answers, images)``: the row as its dataset holds
it, the assistant texts it must train, and the image sizes it carries in the
order they must reach the processor.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import av
import numpy as np

from tests.helpers.media_files import quadrants, write_image

SIZES = ((56, 84), (84, 56))


def images(folder: Path) -> list[str]:
    """Two PNG files of distinct sizes, as paths relative to ``folder``."""
    names = []
    for number, size in enumerate(SIZES):
        write_image(folder / f"image{number}.png", quadrants(*size))
        names.append(f"image{number}.png")
    return names


def sharegpt(folder: Path) -> tuple[dict, list[str], tuple]:
    """A LLaVA row: two images, placeholders in two turns, ShareGPT roles."""
    row = {
        "id": "llava-1",
        "images": images(folder),
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is on the left?"},
            {"from": "gpt", "value": "Red and blue."},
            {"from": "human", "value": "And here? <image>"},
            {"from": "gpt", "value": "Green and yellow."},
        ],
    }
    return row, ["Red and blue.", "Green and yellow."], SIZES


def messages(folder: Path) -> tuple[dict, list[str], tuple]:
    """A TRL row: {"type": "image"} placeholder items filled from 'images'."""
    first, second = images(folder)
    row = {
        "images": [str(folder / first), str(folder / second)],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "text", "text": "Compare"},
                    {"type": "image"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "The first is taller."}]},
        ],
    }
    return row, ["The first is taller."], SIZES


def llamafactory(folder: Path) -> tuple[dict, list[str], tuple]:
    """A LLaMA-Factory row: '<image>' in string content, an 'images' list."""
    row = {
        "images": images(folder),
        "messages": [
            {"role": "user", "content": "<image><image>Which is wider?"},
            {"role": "assistant", "content": "The second."},
        ],
    }
    return row, ["The second."], SIZES


def openai(folder: Path) -> tuple[dict, list[str], tuple]:
    """An OpenAI row: a file:// URL and a data: URI."""
    first, second = images(folder)
    encoded = base64.b64encode((folder / second).read_bytes()).decode()
    row = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": (folder / first).as_uri()}},
                    {"type": "text", "text": "and"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}"}},
                ],
            },
            {"role": "assistant", "content": "Two boxes."},
        ]
    }
    return row, ["Two boxes."], SIZES


def cauldron(folder: Path) -> tuple[dict, list[str], tuple]:
    """A the_cauldron row: PIL images and two question/answer pairs."""
    row = {
        "images": [quadrants(*size) for size in SIZES],
        "texts": [
            {"user": "Describe.", "assistant": "Four colours.", "source": "test"},
            {"user": "Again?", "assistant": "Still four.", "source": "test"},
        ],
    }
    return row, ["Four colours.", "Still four."], SIZES


def conversation(folder: Path) -> tuple[dict, list[str], tuple]:
    """The library's own row."""
    first, second = images(folder)
    row = {
        "conversation": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": str(folder / first)},
                    {"type": "image", "image": str(folder / second)},
                    {"type": "text", "text": "Sizes?"},
                ],
            },
            {"role": "assistant", "content": "Two sizes."},
        ]
    }
    return row, ["Two sizes."], SIZES


BUILDERS = {
    "conversation": conversation,
    "messages": messages,
    "sharegpt": sharegpt,
    "llamafactory": llamafactory,
    "openai": openai,
    "cauldron": cauldron,
}


def wav_bytes(seconds: float = 0.5, rate: int = 16000) -> bytes:
    """A mono 16-bit WAV file of a 440 Hz tone, written with PyAV."""
    buffer = io.BytesIO()
    samples = (np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate) * 20000).astype(
        np.int16
    )
    with av.open(buffer, "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return buffer.getvalue()
