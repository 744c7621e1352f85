"""Malformed samples and unusable media: clear errors, no bare KeyError, no mutated sample."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import vlm_collate as vc
from tests.helpers.media_files import (
    quadrants,
    snapshot,
    write_corrupt,
    write_empty,
    write_image,
    write_png_claiming_size,
    write_truncated,
    write_video,
)
from vlm_collate import errors
from vlm_collate.testing import build_processor, decoded_label_runs

COLLATORS = [vc.Qwen25VLCollator, vc.DefaultCollator]


@pytest.fixture(scope="module")
def processor():
    return build_processor("qwen2_5_vl")


@pytest.fixture(params=COLLATORS, ids=lambda cls: cls.__name__)
def collator(request, processor):
    return request.param(processor=processor)


def good_sample(answer: str = "A fine answer.") -> dict[str, Any]:
    return {
        "conversation": [
            {"role": "user", "content": "Tell me something."},
            {"role": "assistant", "content": answer},
        ]
    }


def image_sample(image: Any, **item_keys: Any) -> dict[str, Any]:
    """A sample whose image sits in message 1, item 0 (after a system message)."""
    item = {"type": "image", **item_keys} if item_keys else {"type": "image", "image": image}
    return {
        "conversation": [
            {"role": "system", "content": "You describe pictures."},
            {"role": "user", "content": [item, {"type": "text", "text": "What is this?"}]},
            {"role": "assistant", "content": "A picture."},
        ]
    }


def video_sample(video: Any) -> dict[str, Any]:
    """A sample whose video sits in message 0, item 0."""
    content = [{"type": "video", "video": video}, {"type": "text", "text": "What happens?"}]
    return {
        "conversation": [
            {"role": "user", "content": content},
            {"role": "assistant", "content": "A clip."},
        ]
    }


def collate_error(collator: vc.BaseCollator, examples: Any, error: type[Exception]) -> Exception:
    """Collate, expect ``error``, and check the caller's examples were left as they were."""
    before = snapshot(examples)
    with pytest.raises(error) as caught:
        collator(examples)
    assert before == snapshot(examples)
    return caught.value


def collate_error_unloaded(
    collator: vc.BaseCollator, examples: Any, error: type[Exception]
) -> Exception:
    """Like :func:`collate_error`, for images that must reach the collator still unloaded.

    A snapshot would read every pixel and so load the image first; none is taken.
    """
    with pytest.raises(error) as caught:
        collator(examples)
    return caught.value


class TestErrorHierarchy:
    """The exception tree of vlm_collate.errors."""

    @pytest.mark.parametrize(
        ("error", "builtin"),
        [
            (errors.SampleError, ValueError),
            (errors.SampleTypeError, TypeError),
            (errors.SampleTypeError, ValueError),
            (errors.MediaError, ValueError),
            (errors.SpecialTokenError, ValueError),
            (errors.EmptyLabelsError, ValueError),
            (errors.OverlongError, ValueError),
            (errors.TemplateError, ValueError),
            (errors.ProcessorError, ValueError),
            (errors.BatchError, ValueError),
            (errors.LabelStrategyError, ValueError),
            (errors.ConfigurationError, ValueError),
            (errors.MissingDependencyError, ImportError),
        ],
    )
    def test_error_derives_from_base_and_builtin(self, error, builtin):
        """Each error is both a VLMCollateError and the fitting built-in exception."""
        assert (True, True) == (issubclass(error, vc.VLMCollateError), issubclass(error, builtin))

    def test_sample_error_message_starts_with_location(self):
        """A sample error's message starts with 'sample N, message M, item K'."""
        error = errors.MediaError("cannot read it", sample_index=3, message_index=2, item_index=0)
        assert "sample 3, message 2, item 0: cannot read it" == str(error)

    def test_sample_error_survives_pickling(self):
        """Indices and message survive a round trip through pickle (DataLoader workers)."""
        error = errors.SpecialTokenError("bad text", sample_index=4, message_index=1)
        copy = pickle.loads(pickle.dumps(error))
        assert (errors.SpecialTokenError, str(error), 4, 1, None) == (
            type(copy),
            str(copy),
            copy.sample_index,
            copy.message_index,
            copy.item_index,
        )

    def test_exported_from_package(self):
        """The public error classes are reachable from the package root."""
        names = [name for name in errors.__all__ if name not in ("relocated", "where")]
        assert names == [name for name in names if getattr(vc, name, None) is getattr(errors, name)]


class TestMalformedSample:
    """Samples whose structure is wrong, in both collators."""

    def test_missing_conversation_key(self, collator):
        """A sample without 'conversation' is a SampleError naming the sample and the key."""
        error = collate_error(collator, [good_sample(), {"messages": []}], errors.SampleError)
        assert (1, True, True) == (
            error.sample_index,
            str(error).startswith("sample 1:"),
            "'conversation'" in str(error),
        )

    @pytest.mark.parametrize("conversation", ["hello", {"role": "user"}, 7, None], ids=repr)
    def test_conversation_not_a_list(self, collator, conversation):
        """A conversation that is not a list of messages is a SampleTypeError (a TypeError)."""
        error = collate_error(collator, [good_sample(), {"conversation": conversation}], TypeError)
        assert (errors.SampleTypeError, 1) == (type(error), error.sample_index)

    @pytest.mark.parametrize("example", ["just text", 5, None, ["a", "b"]], ids=repr)
    def test_sample_not_a_mapping(self, collator, example):
        """A sample that is not a mapping is a SampleTypeError naming the sample."""
        error = collate_error(collator, [good_sample(), example], errors.SampleTypeError)
        assert "sample 1:" == str(error)[: len("sample 1:")]

    def test_empty_conversation(self, collator):
        """An empty conversation is a SampleError naming the sample."""
        error = collate_error(collator, [{"conversation": []}], errors.SampleError)
        assert 0 == error.sample_index

    def test_message_without_role(self, collator):
        """A message without a role names sample, message and the missing key."""
        example = {"conversation": [{"role": "user", "content": "Hi"}, {"content": "Hello."}]}
        error = collate_error(collator, [good_sample(), example], errors.SampleError)
        assert (True, True) == (
            str(error).startswith("sample 1, message 1:"),
            "'role'" in str(error),
        )

    @pytest.mark.parametrize("role", [None, "", 3], ids=repr)
    def test_message_with_unusable_role(self, collator, role):
        """A role that is empty or not a string is a SampleError naming the message."""
        example = {"conversation": [{"role": role, "content": "Hi"}]}
        error = collate_error(collator, [example], errors.SampleError)
        assert (0, 0) == (error.sample_index, error.message_index)

    def test_message_not_a_mapping(self, collator):
        """A message that is a bare string is a SampleTypeError naming the message."""
        example = {"conversation": [{"role": "user", "content": "Hi"}, "Hello."]}
        error = collate_error(collator, [example], errors.SampleTypeError)
        assert (0, 1) == (error.sample_index, error.message_index)

    @pytest.mark.parametrize(
        "content", [None, 42, {"type": "text", "text": "x"}, b"bytes"], ids=repr
    )
    def test_content_of_wrong_type(self, collator, content):
        """Content that is neither a string nor a list of items is a SampleTypeError."""
        example = {
            "conversation": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": content},
            ]
        }
        error = collate_error(collator, [good_sample(), example], errors.SampleTypeError)
        assert "sample 1, message 1:" == str(error)[: len("sample 1, message 1:")]

    def test_content_none_with_tool_calls_is_accepted(self, collator, processor):
        """An assistant message carrying tool_calls may have None content."""
        call = {"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}
        example = {
            "conversation": [
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "content": "Snow."},
                {"role": "assistant", "content": "It snows."},
            ]
        }
        before = snapshot(example)
        batch = collator([example])
        assert before == snapshot(example)
        assert (
            "It snows.<|im_end|>" == decoded_label_runs(batch["labels"], processor.tokenizer)[0][-1]
        )

    @pytest.mark.parametrize("text", [None, 12, ["a"], {"t": 1}], ids=repr)
    def test_text_item_not_a_string(self, collator, text):
        """A text item whose 'text' is not a string names sample, message and item."""
        example = {"conversation": [{"role": "user", "content": [{"type": "text", "text": text}]}]}
        error = collate_error(collator, [good_sample(), example], errors.SampleTypeError)
        assert "sample 1, message 0, item 0:" == str(error)[: len("sample 1, message 0, item 0:")]

    @pytest.mark.parametrize("kind", ["picture", None, 3], ids=repr)
    def test_unknown_item_type(self, collator, kind):
        """An item type other than text/image/video/audio is a SampleError naming the type."""
        content = [{"type": "text", "text": "Hi"}, {"type": kind, "data": "?"}]
        example = {"conversation": [{"role": "user", "content": content}]}
        error = collate_error(collator, [example], errors.SampleError)
        assert (0, 0, 1, True) == (
            error.sample_index,
            error.message_index,
            error.item_index,
            repr(kind) in str(error),
        )

    def test_item_not_a_mapping(self, collator):
        """A content item that is a bare string is a SampleTypeError naming the item."""
        example = {"conversation": [{"role": "user", "content": ["Hi there"]}]}
        error = collate_error(collator, [example], errors.SampleTypeError)
        assert (0, 0, 0) == (error.sample_index, error.message_index, error.item_index)


class TestBadBatch:
    """The batch itself is unusable."""

    def test_empty_batch(self, collator):
        """An empty list of samples is a BatchError (a ValueError)."""
        collate_error(collator, [], errors.BatchError)

    @pytest.mark.parametrize(
        "examples",
        [
            {"conversation": []},
            "text",
            None,
        ],
        ids=repr,
    )
    def test_batch_not_a_list(self, collator, examples):
        """A mapping, string or None in place of the list of samples is a BatchError."""
        collate_error(collator, examples, errors.BatchError)


class TestBadMedia:
    """Images and videos that cannot be used."""

    @pytest.mark.parametrize(
        "write",
        [
            pytest.param(lambda d: d / "absent.png", id="missing"),
            pytest.param(lambda d: write_truncated(d / "cut.png", "PNG"), id="truncated-png"),
            pytest.param(lambda d: write_truncated(d / "cut.jpg", "JPEG"), id="truncated-jpeg"),
            pytest.param(lambda d: write_corrupt(d / "noise.png"), id="corrupt"),
            pytest.param(lambda d: write_empty(d / "empty.png"), id="zero-size"),
            pytest.param(
                lambda d: write_png_claiming_size(d / "bomb.png", 100_000, 100_000), id="bomb"
            ),
        ],
    )
    def test_unusable_image_file(self, collator, tmp_path, write):
        """A missing, truncated, corrupt, empty or bomb image file is a MediaError saying where."""
        path = write(tmp_path)
        error = collate_error(collator, [good_sample(), image_sample(str(path))], errors.MediaError)
        assert ((1, 1, 0), True) == (
            (error.sample_index, error.message_index, error.item_index),
            str(path) in str(error),
        )

    def test_bomb_image_fails_fast(self, collator, tmp_path):
        """A header declaring 10^10 pixels is refused without decoding (well under a second)."""
        import time

        path = write_png_claiming_size(tmp_path / "bomb.png", 100_000, 100_000)
        start = time.perf_counter()
        collate_error(collator, [image_sample(path)], errors.MediaError)
        assert True == (time.perf_counter() - start < 1.0)  # noqa: E712

    @pytest.mark.parametrize("as_path", [False, True], ids=["pil", "file"])
    def test_image_over_max_image_pixels(self, processor, tmp_path, as_path):
        """An image larger than the collator's max_image_pixels is a MediaError naming the limit."""
        image = quadrants(64, 48)
        source = write_image(tmp_path / "big.png", image) if as_path else image
        collator = vc.Qwen25VLCollator(processor=processor, max_image_pixels=64 * 48 - 1)
        error = collate_error(collator, [good_sample(), image_sample(source)], errors.MediaError)
        assert (1, True) == (error.sample_index, f"max_image_pixels={64 * 48 - 1}" in str(error))

    def test_image_at_max_image_pixels_is_accepted(self, processor):
        """An image of exactly max_image_pixels pixels is collated."""
        collator = vc.Qwen25VLCollator(processor=processor, max_image_pixels=56 * 56)
        batch = collator([image_sample(quadrants(56, 56))])
        assert [1] == batch["n_images_per_sample"].tolist()

    @pytest.mark.parametrize("mode", ["RGB", "LA"])
    def test_truncated_file_opened_as_pil_image(self, collator, tmp_path, mode):
        """A lazily opened PIL image of a truncated file is a MediaError naming its place."""
        path = tmp_path / "cut.png"
        noise = np.random.default_rng(1).integers(0, 256, size=(96, 96, len(mode)), dtype=np.uint8)
        Image.fromarray(noise, mode=mode).save(path)
        path.write_bytes(path.read_bytes()[:2000])
        with Image.open(path) as lazy:
            error = collate_error_unloaded(
                collator, [good_sample(), image_sample(lazy)], errors.MediaError
            )
        assert (1, 1, 0) == (error.sample_index, error.message_index, error.item_index)

    def test_closed_pil_image(self, collator, tmp_path):
        """A lazily opened PIL image whose file is already closed is a MediaError."""
        path = write_image(tmp_path / "rgba.png", Image.new("RGBA", (56, 56), (1, 2, 3, 4)))
        with Image.open(path) as lazy:
            pass
        error = collate_error_unloaded(collator, [image_sample(lazy)], errors.MediaError)
        assert (0, 1, 0) == (error.sample_index, error.message_index, error.item_index)

    def test_image_without_pixels(self, collator):
        """A PIL image of size 0x0 is a MediaError."""
        error = collate_error(collator, [image_sample(Image.new("RGB", (0, 0)))], errors.MediaError)
        assert (0, 1, 0) == (error.sample_index, error.message_index, error.item_index)

    def test_corrupt_image_bytes_mapping(self, collator):
        """A datasets-style {"bytes": ...} image with bytes that are no image is a MediaError."""
        error = collate_error(
            collator,
            [good_sample(), image_sample({"bytes": b"\x89PNG", "path": None})],
            errors.MediaError,
        )
        assert (1, 1, 0) == (error.sample_index, error.message_index, error.item_index)

    @pytest.mark.parametrize("image", [7, {"pixels": [1, 2]}, 2.5], ids=repr)
    def test_image_of_wrong_type(self, collator, image):
        """An image given as an int, dict or float is a SampleTypeError naming the type."""
        error = collate_error(
            collator, [good_sample(), image_sample(image)], errors.SampleTypeError
        )
        assert ((1, 1, 0), True) == (
            (error.sample_index, error.message_index, error.item_index),
            type(image).__name__ in str(error),
        )

    def test_image_item_without_source(self, collator):
        """An image item with no image/url/path key is a SampleError naming the keys."""
        example = image_sample(None, caption="nothing here")
        error = collate_error(collator, [example], errors.SampleError)
        assert (1, 0, True) == (
            error.message_index,
            error.item_index,
            "image, url, path" in str(error),
        )

    @pytest.mark.parametrize(
        "write",
        [
            pytest.param(lambda d: d / "absent.mp4", id="missing"),
            pytest.param(lambda d: write_empty(d / "empty.mp4"), id="zero-size"),
            pytest.param(lambda d: write_corrupt(d / "noise.mp4"), id="corrupt"),
        ],
    )
    def test_unusable_video_file(self, collator, tmp_path, write):
        """A missing, empty or corrupt video file is a MediaError naming the file and its place."""
        path = write(tmp_path)
        error = collate_error(collator, [good_sample(), video_sample(str(path))], errors.MediaError)
        assert ((1, 0, 0), True) == (
            (error.sample_index, error.message_index, error.item_index),
            str(path) in str(error),
        )

    def test_video_with_no_frames(self, collator):
        """A video given as an empty list of frames is a MediaError."""
        example = {"conversation": [{"role": "user", "content": [{"type": "video", "video": []}]}]}
        error = collate_error(collator, [example], errors.MediaError)
        assert (0, 0, 0) == (error.sample_index, error.message_index, error.item_index)

    def test_readable_video_file_is_accepted(self, collator, tmp_path):
        """A real video file written with PyAV collates (the control case for the errors above)."""
        path = write_video(tmp_path / "clip.mp4", [quadrants(56, 56)] * 4)
        example = video_sample(str(path))
        before = snapshot(example)
        batch = collator([example])
        assert (before, [1]) == (snapshot(example), batch["n_videos_per_sample"].tolist())


# -- garbage in, only VLMCollateError out ---------------------------------------

# No ':' in generated strings, so that no string is ever a URL the processor would fetch.
_TEXT = st.text(st.characters(exclude_characters=":", exclude_categories=("Cs",)), max_size=10)
_KEYS = st.sampled_from(
    [
        "conversation",
        "role",
        "content",
        "type",
        "text",
        "image",
        "video",
        "audio",
        "tool_calls",
        "path",
        "url",
    ]
)
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-2, 2)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _TEXT
    | st.sampled_from(["user", "assistant", "system", "tool", "text", "image", "video", "audio"])
)
_GARBAGE = st.recursive(
    _LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(_KEYS | _TEXT, children, max_size=4)
    ),
    max_leaves=10,
)
_IMAGES = st.builds(
    Image.new,
    st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "I", "F", "1"]),
    st.tuples(st.integers(1, 64), st.integers(1, 64)),
)
_ROLES = st.sampled_from(["user", "assistant", "system", "tool"])


@st.composite
def _mostly_valid(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> Any:
    """Draw from ``valid``, or (one time in four) from the garbage strategy."""
    return draw(_GARBAGE) if draw(st.integers(0, 3)) == 0 else draw(valid)


_ITEMS = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": _mostly_valid(_TEXT)}),
    st.fixed_dictionaries({"type": st.just("image"), "image": _mostly_valid(_IMAGES)}),
    st.fixed_dictionaries(
        {"type": st.just("video"), "video": _mostly_valid(st.lists(_IMAGES, max_size=2))}
    ),
    st.fixed_dictionaries(
        {"type": _GARBAGE}, optional={"text": _GARBAGE, "image": _GARBAGE, "audio": _GARBAGE}
    ),
)
_MESSAGES = st.fixed_dictionaries(
    {"role": _mostly_valid(_ROLES)},
    optional={
        "content": _mostly_valid(_TEXT | st.lists(_mostly_valid(_ITEMS), max_size=3)),
        "tool_calls": _GARBAGE,
        "reasoning_content": _GARBAGE,
    },
)
_SAMPLES = st.lists(
    _mostly_valid(
        st.fixed_dictionaries(
            {"conversation": _mostly_valid(st.lists(_mostly_valid(_MESSAGES), max_size=4))}
        )
    ),
    max_size=3,
)


class TestGarbageInput:
    """Random JSON-like garbage as samples."""

    @settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(examples=_SAMPLES)
    def test_only_package_errors_escape(self, processor, examples):
        """Garbage samples either collate or raise a VLMCollateError, and are never modified."""
        collator = vc.Qwen25VLCollator(processor=processor, empty_labels="drop")
        before = snapshot(examples)
        try:
            collator(examples)
        except vc.VLMCollateError:
            pass
        assert before == snapshot(examples)
