"""LlavaOneVisionCollator: qwen-vl-utils media, images grouped by sample, ChatML labels.

Expected token ids are spelled out as text and tokenized with the tokenizer;
expected label texts come from the samples that went in. Videos are real mp4
files written with PyAV.
"""

from __future__ import annotations

import functools

import av
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tests.helpers.chat import chatml_run_matches, token_counts
from vlm_collate.families.llava_onevision import LlavaOneVisionCollator, PerSampleImagesMedia
from vlm_collate.labels import IGNORE_INDEX
from vlm_collate.registry import registered
from vlm_collate.testing import build_processor, decoded_label_runs
from vlm_collate.testing.strategies import answer_texts, prompt_texts

# The test processor's 56 px tiles hold (56 / 14) ** 2 = 16 patches. An image of
# a multi-image sample is one untiled view: 16 tokens plus a newline token.
TOKENS_PER_MULTI_IMAGE = 17
# A video frame is pooled from 4 x 4 to 2 x 2 tokens; a video adds one newline token.
TOKENS_PER_FRAME = 4


@functools.cache
def processor():
    """A real LlavaOnevisionProcessor (shared: treat as read-only)."""
    return build_processor("llava_onevision")


def tokenizer():
    return processor().tokenizer


def encode(text: str) -> list[int]:
    return tokenizer()(text, add_special_tokens=False)["input_ids"]


def write_clip(path, frames=8, fps=4, size=(64, 48)):
    """An mp4 of ``frames`` frames at ``fps``; frame i is grey level 20 * i."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            pixels = np.full((size[1], size[0], 3), 20 * index, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def ask(*items, answer="Done."):
    """A one-exchange sample: a user message of ``items`` (strings are text) and an answer."""
    content = [{"type": "text", "text": item} if isinstance(item, str) else item for item in items]
    return {
        "conversation": [
            {"role": "user", "content": content},
            {"role": "assistant", "content": answer},
        ]
    }


def image(colour="red", size=(64, 48)):
    return {"type": "image", "image": Image.new("RGB", size, colour)}


def runs(batch):
    return decoded_label_runs(batch["labels"], tokenizer())


def count(batch, token: str) -> list[int]:
    return token_counts(batch, tokenizer(), token)


class TestLlavaOneVisionRegistry:
    def test_seed_name_is_registered(self):
        """The seed's processor name (LLaVA-OneVision-1.5) maps to the same class."""
        assert LlavaOneVisionCollator is registered()["LlavaOneVisionProcessor"]


class TestLlavaOneVisionLabels:
    def test_image(self):
        """One image: the answer and its <|im_end|> are trained."""
        batch = LlavaOneVisionCollator(processor=processor())(
            [ask(image(), "What?", answer="A red box.")]
        )
        assert [["A red box.<|im_end|>"]] == runs(batch)

    def test_multi_image(self):
        """Two images in one sample: each is one untiled view of 17 tokens."""
        sample = ask(image(), image("blue", (40, 40)), "Compare.", answer="Two boxes.")
        batch = LlavaOneVisionCollator(processor=processor())([sample])
        assert [["Two boxes.<|im_end|>"]] == runs(batch)
        assert [2 * TOKENS_PER_MULTI_IMAGE] == count(batch, "<image>")

    def test_video_file(self, tmp_path):
        """8 frames at 4 fps are read at 2 fps: 4 frames of 4 tokens plus a newline token."""
        clip = {"type": "video", "video": str(write_clip(tmp_path / "clip.mp4"))}
        batch = LlavaOneVisionCollator(processor=processor())([ask(clip, "What?", answer="Grey.")])
        assert [["Grey.<|im_end|>"]] == runs(batch)
        assert [4 * TOKENS_PER_FRAME + 1] == count(batch, "<video>")
        assert [1] == batch["n_videos_per_sample"].tolist()

    def test_text_only_string_content(self):
        """Plain string content is rendered (the llava-hf template alone would drop it)."""
        sample = {
            "conversation": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
            ]
        }
        batch = LlavaOneVisionCollator(processor=processor())([sample])
        assert [["Hello.<|im_end|>"]] == runs(batch)
        expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        assert encode(expected) == batch["input_ids"][0, : len(encode(expected))].tolist()

    def test_mixed_batch(self, tmp_path):
        """Text-only, one-image, two-image and video samples each train their own answer."""
        clip = {"type": "video", "video": str(write_clip(tmp_path / "clip.mp4"))}
        samples = [
            ask("Hi", answer="Hello."),
            ask(image(), "Colour?", answer="Red."),
            ask(image("blue"), image("green"), "Colours?", answer="Blue, green."),
            ask(clip, "Brightness?", answer="Rising."),
        ]
        batch = LlavaOneVisionCollator(processor=processor())(samples)
        expected = [
            ["Hello.<|im_end|>"],
            ["Red.<|im_end|>"],
            ["Blue, green.<|im_end|>"],
            ["Rising.<|im_end|>"],
        ]
        assert expected == runs(batch)
        assert [0, 1, 2, 0] == batch["n_images_per_sample"].tolist()
        assert [0, 0, 0, 1] == batch["n_videos_per_sample"].tolist()
        assert 2 * TOKENS_PER_MULTI_IMAGE == count(batch, "<image>")[2]

    @given(
        st.lists(
            st.tuples(prompt_texts(), answer_texts(leading_newline=False)), min_size=1, max_size=3
        )
    )
    def test_answers_are_the_runs(self, exchanges):
        """For generated exchanges, the labelled runs are the answers plus <|im_end|>."""
        conversation = []
        for prompt, answer in exchanges:
            conversation.append({"role": "user", "content": prompt})
            conversation.append({"role": "assistant", "content": answer})
        batch = LlavaOneVisionCollator(processor=processor())([{"conversation": conversation}])
        expected = [answer + "<|im_end|>" for _, answer in exchanges]
        decoded = runs(batch)[0]
        assert len(expected) == len(decoded)
        for run, text in zip(decoded, expected, strict=True):
            assert chatml_run_matches(run, text), (run, text)


class TestLlavaOneVisionExactIds:
    def test_two_images(self):
        """Images come first, each as 17 <image> tokens and a newline; labels cover the answer only."""
        prompt = (
            "<|im_start|>user\n"
            + ("<image>" * TOKENS_PER_MULTI_IMAGE + "\n") * 2
            + "Compare.<|im_end|>\n<|im_start|>assistant\n"
        )
        prompt_ids, answer_ids, tail_ids = encode(prompt), encode("Same.<|im_end|>"), encode("\n")
        sample = ask("Compare.", image(), image("blue"), answer="Same.")
        batch = LlavaOneVisionCollator(processor=processor(), shift_labels=False)([sample])
        assert prompt_ids + answer_ids + tail_ids == batch["input_ids"][0].tolist()
        expected = [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [IGNORE_INDEX] * len(tail_ids)
        assert expected == batch["labels"][0].tolist()


class TestPerSampleImagesMedia:
    def test_images_are_grouped_by_sample(self):
        """Images come back as one list per sample, empty for samples without images."""
        conversations = [
            ask(image(), image("blue"), "Two")["conversation"],
            ask("None")["conversation"],
            ask(image("green"), "One")["conversation"],
        ]
        gathered = PerSampleImagesMedia().gather(conversations)
        assert [2, 0, 1] == [len(images) for images in gathered["images"]]

    def test_single_image_is_tiled_multi_images_are_not(self):
        """A sample's only image is tiled (more than 17 tokens); two images get 17 each."""
        samples = [ask(image(), "One", answer="A."), ask(image(), image(), "Two", answer="B.")]
        batch = LlavaOneVisionCollator(processor=processor())(samples)
        single, double = count(batch, "<image>")
        assert single > TOKENS_PER_MULTI_IMAGE
        assert 2 * TOKENS_PER_MULTI_IMAGE == double
        assert [1, 2] == batch["batch_num_images"].tolist()
