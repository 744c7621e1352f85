"""Row formats: conversion, strict detection, placeholders against media, role maps."""

from __future__ import annotations

import pytest

from vlm_collate import ConfigurationError, SampleError
from vlm_collate.formats import (
    FORMATS,
    OpenAIChat,
    ShareGPT,
    convert,
    detect,
    get_format,
)

from .rows import BUILDERS, wav_bytes


def llava_row(text: str = "<image>\nWhat is this?", **media) -> dict:
    return {
        **media,
        "conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": "A cat."}],
    }


class TestDetect:
    @pytest.mark.parametrize("name", sorted(BUILDERS))
    def test_each_format_is_detected(self, name, tmp_path):
        """A real row of each format is detected as that format and no other."""
        row, _, _ = BUILDERS[name](tmp_path)
        assert name == detect(row)

    def test_no_format_lists_every_format_and_what_is_missing(self):
        """A row of no known shape names every format and what the row lacks for it."""
        with pytest.raises(SampleError) as caught:
            detect({"question": "Hi", "answer": "Hello."}, index=7)
        message = str(caught.value)
        assert message.startswith("sample 7: no format fits the row (keys: 'question', 'answer')")
        for name in FORMATS:
            assert f"{name}: no " in message

    def test_several_formats_are_ambiguous(self):
        """A row that fits two formats is refused, naming both."""
        row = {"conversation": [], "texts": [{"user": "a", "assistant": "b"}]}
        with pytest.raises(SampleError, match=r"fits several formats \(conversation, cauldron\)"):
            detect(row)

    def test_text_only_messages_are_trl(self):
        """Plain-text 'messages' rows (all three message formats read them alike) are 'messages'."""
        row = {"messages": [{"role": "user", "content": "Hi"}]}
        assert "messages" == detect(row)

    def test_unknown_format_name(self):
        """An unknown format name is a ConfigurationError listing the names."""
        with pytest.raises(ConfigurationError, match="'format' must be one of 'conversation'"):
            get_format("alpaca")


class TestShareGPT:
    def test_placeholder_position_is_where_the_image_goes(self):
        """'<image>' in the middle of the text puts the image between the two text pieces."""
        row = llava_row("Look: <image> what is it?", image="cat.jpg")
        user = convert(row, "sharegpt", base="/data")["conversation"][0]
        expected = [
            {"type": "text", "text": "Look: "},
            {"type": "image", "image": "/data/cat.jpg"},
            {"type": "text", "text": " what is it?"},
        ]
        assert expected == user["content"]

    def test_roles_are_mapped(self):
        """human/gpt become user/assistant; the text has no placeholder left."""
        conversation = convert(llava_row(image="x.png"), "sharegpt")["conversation"]
        assert ["user", "assistant"] == [message["role"] for message in conversation]
        assert [{"type": "image", "image": "x.png"}, {"type": "text", "text": "What is this?"}] == (
            conversation[0]["content"]
        )

    def test_datasets_image_value(self):
        """A datasets.Image value ({"bytes", "path"}) goes through as the image."""
        value = {"bytes": b"\x89PNG...", "path": None}
        user = convert(llava_row(images=[value]), "sharegpt")["conversation"][0]
        assert value == user["content"][0]["image"]

    @pytest.mark.parametrize(
        ("text", "media", "found", "given"),
        [
            ("<image><image> two?", {"image": "a.png"}, 2, 1),
            ("none here", {"images": ["a.png"]}, 0, 1),
            ("<image> where?", {}, 1, 0),
        ],
    )
    def test_placeholder_count_must_equal_media(self, text, media, found, given):
        """Placeholders and images disagree: a SampleError names the row and both counts."""
        with pytest.raises(SampleError) as caught:
            convert(llava_row(text, **media), "sharegpt", index=3)
        assert 3 == caught.value.sample_index
        assert f"holds {found} <image> placeholder(s) in its text but {given} image(s)" in str(
            caught.value
        )

    def test_video_placeholder(self):
        """'<video>' takes the 'video' column."""
        row = {
            "video": "clip.mp4",
            "conversations": [
                {"from": "human", "value": "<video>Describe."},
                {"from": "gpt", "value": "A ball."},
            ],
        }
        user = convert(row, "sharegpt")["conversation"][0]
        assert {"type": "video", "video": "clip.mp4"} == user["content"][0]

    def test_system_column_and_tool_roles(self):
        """A 'system' column opens the conversation; function_call/observation are mapped."""
        row = {
            "system": "Use tools.",
            "conversations": [
                {"from": "human", "value": "Weather?"},
                {"from": "function_call", "value": '{"name": "weather"}'},
                {"from": "observation", "value": "Sunny."},
                {"from": "gpt", "value": "Sunny."},
            ],
        }
        roles = [message["role"] for message in convert(row, "sharegpt")["conversation"]]
        assert ["system", "user", "assistant", "tool", "assistant"] == roles

    def test_unknown_from_names_the_role_and_the_map(self):
        """An unknown 'from' is refused with the known roles and how to map it."""
        row = {"conversations": [{"from": "bot", "value": "Hi"}]}
        with pytest.raises(SampleError, match=r"role 'bot' is not one of the sharegpt roles"):
            convert(row, "sharegpt")

    def test_role_map_is_configurable(self):
        """roles={'bot': 'assistant'} reads a custom role name."""
        row = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "bot", "value": "Yo"}]}
        converted = ShareGPT(roles={"bot": "assistant"}).convert(row)
        assert "assistant" == converted["conversation"][1]["role"]

    def test_other_columns_are_kept(self):
        """An 'id' column stays in the converted sample; consumed columns do not."""
        converted = convert({**llava_row(image="a.png"), "id": "x1"}, "sharegpt")
        assert {"id", "conversation"} == set(converted)


class TestHalfConverted:
    def test_half_converted_row_is_refused_in_the_default_format(self):
        """Renamed roles, '<image>' left in the text and a top-level 'image': refused, clearly."""
        row = {
            "image": "cat.jpg",
            "conversation": [
                {"role": "user", "content": "<image>\nWhat is this?"},
                {"role": "assistant", "content": "A cat."},
            ],
        }
        with pytest.raises(SampleError) as caught:
            convert(row, "conversation", index=2)
        message = str(caught.value)
        assert message.startswith("sample 2, message 0: the text holds '<image>'")
        assert "format='sharegpt'" in message

    def test_own_row_with_image_text_but_no_media_column_passes(self):
        """The literal text '<image>' without media columns is left alone (nothing is lost)."""
        row = {"conversation": [{"role": "user", "content": "Write <image> in HTML."}]}
        assert row is convert(row, "conversation")

    def test_arrow_none_fields_are_dropped(self):
        """Message fields Arrow fills with None ('train', 'weight') are left out."""
        row = {"conversation": [{"role": "user", "content": "Hi", "train": None, "weight": None}]}
        assert [{"role": "user", "content": "Hi"}] == convert(row, "conversation")["conversation"]


class TestMessages:
    def test_placeholders_fill_in_order(self):
        """{'type': 'image'} items take the 'images' values in order."""
        row = {
            "images": ["a.png", "b.png"],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "image", "text": None}]},
            ],
        }
        content = convert(row, "messages", base="/d")["conversation"][0]["content"]
        assert [{"type": "image", "image": "/d/a.png"}, {"type": "image", "image": "/d/b.png"}] == (
            content
        )

    def test_slot_count_must_equal_images(self):
        """One placeholder item for two images: a SampleError with both counts."""
        row = {
            "images": ["a.png", "b.png"],
            "messages": [{"role": "user", "content": [{"type": "image"}]}],
        }
        with pytest.raises(SampleError, match="holds 1 {'type': 'image'} placeholder item"):
            convert(row, "messages")

    def test_prompt_and_completion(self):
        """TRL prompt/completion message lists read as one conversation."""
        row = {
            "prompt": [{"role": "user", "content": "Hi"}],
            "completion": [{"role": "assistant", "content": "Hello."}],
        }
        assert ["user", "assistant"] == [m["role"] for m in convert(row)["conversation"]]


class TestOpenAI:
    def test_remote_url_is_passed_on(self):
        """An https image URL is handed on untouched for the media access rules to judge."""
        row = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}
                    ],
                }
            ]
        }
        content = convert(row, "openai")["conversation"][0]["content"]
        assert [{"type": "image", "image": "https://x.test/a.png"}] == content

    def test_input_audio_is_decoded(self):
        """An input_audio item (base64 WAV) becomes an array at the file's rate."""
        import base64

        data = base64.b64encode(wav_bytes(seconds=0.25, rate=8000)).decode()
        row = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}
                    ],
                }
            ]
        }
        audio = convert(row, "openai")["conversation"][0]["content"][0]["audio"]
        assert (8000, 2000) == (audio["sampling_rate"], audio["array"].shape[0])

    def test_bad_data_uri(self):
        """A data: URI with invalid base64 is a MediaError naming the item."""
        row = {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": "data:image/png;base64,@@"}],
                }
            ]
        }
        with pytest.raises(SampleError, match=r"^sample 0, message 0, item 0: the data: URI"):
            OpenAIChat().convert(row, 0)


class TestCauldron:
    def test_images_open_the_first_user_turn(self):
        """Every image goes before the first question; later turns hold text only."""
        row = {
            "images": ["a.png"],
            "texts": [{"user": "Q1", "assistant": "A1"}, {"user": "Q2", "assistant": "A2"}],
        }
        conversation = convert(row, "cauldron")["conversation"]
        assert [{"type": "image", "image": "a.png"}, {"type": "text", "text": "Q1"}] == (
            conversation[0]["content"]
        )
        assert [{"type": "text", "text": "Q2"}] == conversation[2]["content"]


class TestOwnFormatHints:
    def test_a_sharegpt_row_in_the_default_format_names_its_format(self):
        """A ShareGPT row given to the default format is refused with a hint to pass sharegpt."""
        with pytest.raises(SampleError) as caught:
            convert(llava_row(image="cat.jpg"), "conversation", index=4)
        message = str(caught.value)
        assert message.startswith("sample 4: missing key 'conversation'")
        assert "pass format='sharegpt'" in message
