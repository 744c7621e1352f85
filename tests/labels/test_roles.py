"""role_markers: turn markers of system, user and tool turns, derived from chat templates."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from vlm_collate._template import render
from vlm_collate.errors import ConfigurationError, LabelStrategyError
from vlm_collate.labels import assistant_spans, labels_from_spans, role_markers
from vlm_collate.testing import FAMILIES, answer_texts, build_processor, label_runs

SYSTEM, USER, TOOL = "system", "user", "tool"
ROLES = (SYSTEM, USER, TOOL)

# The token that closes each role's turn, read from the templates in
# vlm_collate/testing/templates/ (None: the template writes no turn of the role's own).
EXPECTED_CLOSING = {
    # A "<|turn>system" turn of its own (gemma4.jinja:67-83); tool replies are written
    # inside the calling model turn, never as turns (gemma4.jinja:11-15, 129-151).
    "gemma4": {SYSTEM: "<turn|>", USER: "<turn|>", TOOL: None},
    # <|im_system|>/<|im_user|> turns; a tool turn opens with "## Return of ID\n", text
    # that differs per message, before the content (kimi_k25.jinja:72-73).
    "kimi_k25": {SYSTEM: "<|im_end|>", USER: "<|im_end|>", TOOL: None},
    "kimi_k25_remote": {SYSTEM: "<|im_end|>", USER: "<|im_end|>", TOOL: None},
    # Every role opens with its name and <|im_middle|>; tool has no opening token
    # but is a turn of its own (kimi_vl.jinja:7-12).
    "kimi_vl": {SYSTEM: "<|im_end|>", USER: "<|im_end|>", TOOL: "<|im_end|>"},
    # System text opens the last user turn (llava_next_mistral.jinja:44-46); tool
    # raises (llava_next_mistral.jinja:51).
    "llava_next_mistral": {SYSTEM: None, USER: "[/INST]", TOOL: None},
    # Any role is a ChatML turn (llava_onevision.jinja:8, 24).
    "llava_onevision": {SYSTEM: "<|im_end|>", USER: "<|im_end|>", TOOL: "<|im_end|>"},
    # System turn always written, any other role a ChatML turn (nemotron_omni.jinja:30, 36).
    "nemotron_omni": {SYSTEM: "<|im_end|>", USER: "<|im_end|>", TOOL: "<|im_end|>"},
    # No chat template at all (nemotron_parse.jinja:4; the processor has none).
    "nemotron_parse": {SYSTEM: None, USER: None, TOOL: None},
    # <|ROLE|> ... <|end|> for every role (phi4_mm.jinja:4, 21), but <|tool|> also opens
    # the tool declarations a system message carries in its "tools" field
    # (phi4_mm.jinja:18-19), so a tool turn cannot be told apart from them.
    "phi4_mm": {SYSTEM: "<|end|>", USER: "<|end|>", TOOL: None},
    # Plain ChatML for every role, tool included (qwen2_vl.jinja:9, 31).
    "qwen2_5_vl": {SYSTEM: "<|im_end|>", USER: "<|im_end|>", TOOL: "<|im_end|>"},
    "qwen2_vl": {SYSTEM: "<|im_end|>", USER: "<|im_end|>", TOOL: "<|im_end|>"},
    # Tool results are <tool_response> blocks inside "<|im_start|>user" turns
    # (qwen3_vl.jinja:73-80), so "<|im_start|>user\n" also opens tool results and
    # user turns cannot be told apart; each tool block closes with </tool_response>.
    "qwen3_omni": {SYSTEM: "<|im_end|>", USER: None, TOOL: "</tool_response>"},
    "qwen3_vl": {SYSTEM: "<|im_end|>", USER: None, TOOL: "</tool_response>"},
    "qwen3_vl_thinking": {SYSTEM: "<|im_end|>", USER: None, TOOL: "</tool_response>"},
}
# Templates that render tool messages at all (Mistral raises; Nemotron-Parse has none).
RENDERS_TOOL_MESSAGES = set(EXPECTED_CLOSING) - {"llava_next_mistral", "nemotron_parse"}
# Processors that take an image with plain text (the remote-code Kimi K2.5 wants messages).
TAKES_IMAGES = set(EXPECTED_CLOSING) - {"kimi_k25_remote", "nemotron_parse"}
# Text the templates write around an image inside a user turn that is not a special token.
MEDIA_WORDS = ("image",)

TEXTS = {
    SYSTEM: ["Answer like a careful quokka."],
    USER: ["Which bridge is longest?", "And the oldest one?"],
    TOOL: ["bridge: 1991 m", "opened: 1883"],
}
ANSWERS = ["Let me check.", "It is the Akashi bridge.", "The Brooklyn bridge."]


@functools.cache
def processor(family: str):
    """One processor per family for this module (never changed)."""
    return build_processor(family)


def tokenizer(family: str):
    return getattr(processor(family), "tokenizer", processor(family))


def conversation(family: str, texts: dict[str, list[str]], image=None) -> list[dict]:
    """A chat holding every role the family's template writes, with ``texts`` per role."""
    messages = []
    if EXPECTED_CLOSING[family][SYSTEM] is not None:
        messages.append(item(SYSTEM, texts[SYSTEM][0]))
    first_user = item(USER, texts[USER][0])
    if image is not None:
        first_user["content"].insert(0, {"type": "image", "image": image})
    messages.append(first_user)
    if family in RENDERS_TOOL_MESSAGES:
        calls = [
            {"id": f"call_{n}", "type": "function", "function": {"name": "f", "arguments": {}}}
            for n in range(len(texts[TOOL]))
        ]
        messages.append({**item("assistant", ANSWERS[0]), "tool_calls": calls})
        for n, text in enumerate(texts[TOOL]):
            messages.append({**item(TOOL, text), "tool_call_id": f"call_{n}"})
    else:
        messages.append(item("assistant", ANSWERS[0]))
    messages += [item("assistant", ANSWERS[1])] if family in RENDERS_TOOL_MESSAGES else []
    messages += [item(USER, texts[USER][1]), item("assistant", ANSWERS[2])]
    return messages


def item(role: str, text: str) -> dict:
    return {"role": role, "content": [{"type": "text", "text": text}]}


def input_ids(family: str, messages: list[dict], image=None) -> torch.Tensor:
    """Render with the family's template, then tokenize (or run the processor with the image)."""
    text = render(processor(family), messages)
    if image is not None:
        return processor(family)(text=[text], images=[image], return_tensors="pt")["input_ids"]
    ids = tokenizer(family)(text, add_special_tokens=False)["input_ids"]
    return torch.tensor([ids])


def scanned_runs(family: str, role: str, ids: torch.Tensor) -> list[list[int]]:
    """Token runs the scan marks for ``role``."""
    spans = assistant_spans(ids, role_markers(processor(family), role))
    return label_runs(labels_from_spans(ids, spans))[0]


def split_runs(family: str, runs: list[list[int]]) -> list[tuple[str, str]]:
    """(text without the closing token, closing token) of each run, special tokens dropped."""
    decode = tokenizer(family).decode
    return [(decode(run[:-1], skip_special_tokens=True).strip(), decode(run[-1:])) for run in runs]


def without_media_words(text: str) -> str:
    for word in MEDIA_WORDS:
        text = text.replace(word, "", 1) if text.startswith(word) else text
    return text.strip()


SUPPORTED = [(f, r) for f in EXPECTED_CLOSING for r in ROLES if EXPECTED_CLOSING[f][r]]
UNSUPPORTED = [(f, r) for f in EXPECTED_CLOSING for r in ROLES if not EXPECTED_CLOSING[f][r]]


class TestFamilyTable:
    def test_table_covers_every_family(self):
        """The expected table names exactly the families the testing module builds."""
        assert sorted(FAMILIES) == sorted(EXPECTED_CLOSING)

    @pytest.mark.parametrize(("family", "role"), SUPPORTED)
    def test_spans_are_the_role_messages(self, family, role):
        """Each message of the role is one span: its text, then the turn's closing token."""
        ids = input_ids(family, conversation(family, TEXTS))
        expected = [(text, EXPECTED_CLOSING[family][role]) for text in TEXTS[role]]
        assert expected == split_runs(family, scanned_runs(family, role, ids))

    @pytest.mark.parametrize(("family", "role"), UNSUPPORTED)
    def test_role_without_a_turn_of_its_own_is_refused(self, family, role):
        """A role the template writes no distinct turn for raises LabelStrategyError."""
        with pytest.raises(LabelStrategyError) as caught:
            role_markers(processor(family), role)
        message = str(caught.value)
        assert (True, True) == (repr(role) in message, type(processor(family)).__name__ in message)

    @pytest.mark.parametrize(
        ("family", "role"), [(f, r) for f, r in SUPPORTED if f in TAKES_IMAGES]
    )
    def test_image_in_a_user_turn_changes_no_span(self, family, role):
        """With an image in the first user turn, spans still hold exactly the role's texts."""
        image = Image.new("RGB", (40, 30), (30, 120, 200))
        ids = input_ids(family, conversation(family, TEXTS, image=image), image=image)
        pairs = split_runs(family, scanned_runs(family, role, ids))
        actual = [(without_media_words(text), closing) for text, closing in pairs]
        expected = [(text, EXPECTED_CLOSING[family][role]) for text in TEXTS[role]]
        assert expected == actual


class TestRandomTexts:
    @pytest.mark.parametrize(
        ("family", "role"),
        [
            ("qwen2_5_vl", USER),
            ("qwen3_vl", TOOL),
            ("llava_next_mistral", USER),
            ("gemma4", SYSTEM),
            ("kimi_vl", TOOL),
            ("phi4_mm", USER),
        ],
    )
    @given(data=st.data())
    def test_any_plain_text_is_one_span(self, family, role, data):
        """Texts with leading newlines, spaces, unicode and braces still give one span each."""
        texts = {
            name: data.draw(st.lists(answer_texts(allow_empty=False), min_size=2, max_size=2))
            for name in ROLES
        }
        ids = input_ids(family, conversation(family, texts))
        written = texts[role][:1] if role == SYSTEM else texts[role]
        expected = [(text.strip(), EXPECTED_CLOSING[family][role]) for text in written]
        assert expected == split_runs(family, scanned_runs(family, role, ids))


class TestToolResults:
    def test_consecutive_tool_messages_in_one_qwen3_user_turn(self):
        """Qwen3-VL writes three tool results in one user turn; each is its own span."""
        results = ["first result", "second result", "third result"]
        calls = [{"id": f"c{n}", "function": {"name": "f", "arguments": {}}} for n in range(3)]
        messages = [
            item(USER, "Run the three lookups."),
            {**item("assistant", ""), "tool_calls": calls},
            *[{**item(TOOL, text), "tool_call_id": f"c{n}"} for n, text in enumerate(results)],
            item("assistant", "Done."),
        ]
        ids = input_ids("qwen3_vl", messages)
        expected = [(text, "</tool_response>") for text in results]
        assert expected == split_runs("qwen3_vl", scanned_runs("qwen3_vl", TOOL, ids))

    def test_qwen3_tool_spans_leave_turn_tokens_alone(self):
        """No <|im_start|>, <|im_end|> or <tool_response> token is marked as tool text."""
        ids = input_ids("qwen3_vl", conversation("qwen3_vl", TEXTS))
        marked = {token for run in scanned_runs("qwen3_vl", TOOL, ids) for token in run[:-1]}
        turn_tokens = tokenizer("qwen3_vl").convert_tokens_to_ids(
            ["<|im_start|>", "<|im_end|>", "<tool_response>"]
        )
        assert set() == marked & set(turn_tokens)


class TestMistralUser:
    def test_inst_turns_are_user_spans(self):
        """[INST] opens a user span that closes with [/INST]; answers stay outside."""
        messages = [
            item(USER, "Name a colour."),
            item("assistant", "Blue."),
            item(USER, "Another?"),
            item("assistant", "Green."),
        ]
        ids = input_ids("llava_next_mistral", messages)
        runs = scanned_runs("llava_next_mistral", USER, ids)
        expected = [("Name a colour.", "[/INST]"), ("Another?", "[/INST]")]
        assert expected == split_runs("llava_next_mistral", runs)

    def test_system_text_rides_in_the_last_user_span(self):
        """The template folds the system text into the last user turn, so it is in that span."""
        messages = [
            item(SYSTEM, "Be brief."),
            item(USER, "Name a colour."),
            item("assistant", "Blue."),
            item(USER, "Another?"),
            item("assistant", "Green."),
        ]
        ids = input_ids("llava_next_mistral", messages)
        runs = scanned_runs("llava_next_mistral", USER, ids)
        expected = [("Name a colour.", "[/INST]"), ("Be brief.\n\nAnother?", "[/INST]")]
        assert expected == split_runs("llava_next_mistral", runs)


class TestTemplateQuirks:
    def test_qwen2_default_system_prompt_is_a_system_span(self):
        """Qwen2-VL writes its default system prompt when none is given: one system span."""
        ids = input_ids("qwen2_5_vl", [item(USER, "Hi"), item("assistant", "Hello.")])
        runs = scanned_runs("qwen2_5_vl", SYSTEM, ids)
        assert [("You are a helpful assistant.", "<|im_end|>")] == split_runs("qwen2_5_vl", runs)

    def test_custom_role_written_as_a_turn(self):
        """Qwen2-VL writes any role as a ChatML turn, so a custom role has markers."""
        messages = [
            item(USER, "Hi"),
            item("observation", "sensor reads 4"),
            item("assistant", "Four."),
        ]
        ids = input_ids("qwen2_vl", messages)
        runs = scanned_runs("qwen2_vl", "observation", ids)
        assert [("sensor reads 4", "<|im_end|>")] == split_runs("qwen2_vl", runs)

    def test_custom_role_left_out_is_refused(self):
        """Qwen3-VL drops roles it does not know, so a custom role is refused."""
        with pytest.raises(LabelStrategyError, match="'observation'"):
            role_markers(processor("qwen3_vl"), "observation")

    def test_assistant_is_the_derived_assistant_header(self):
        """The assistant role gives the generation header and end of turn."""
        markers = role_markers(processor("qwen2_5_vl"), "assistant")
        decode = tokenizer("qwen2_5_vl").decode
        actual = (decode(list(markers.assistant_marker)), decode([markers.end_of_turn_id]))
        assert ("<|im_start|>assistant\n", "<|im_end|>") == actual


def counting_processor(family: str):
    """A fresh processor whose chat-template renders are counted in the returned list."""
    fresh = build_processor(family)
    calls = []
    original = fresh.apply_chat_template

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    fresh.apply_chat_template = counting
    return fresh, calls


class TestCache:
    def test_second_call_returns_the_same_markers_without_rendering(self):
        """Markers are derived once per tokenizer and template, then reused."""
        fresh, calls = counting_processor("qwen2_5_vl")
        first = role_markers(fresh, TOOL)
        rendered = len(calls)
        second = role_markers(fresh, TOOL)
        assert (True, rendered) == (first is second, len(calls))

    def test_refusal_is_cached_too(self):
        """A refused role raises again without rendering again."""
        fresh, calls = counting_processor("llava_next_mistral")
        with pytest.raises(LabelStrategyError):
            role_markers(fresh, SYSTEM)
        rendered = len(calls)
        with pytest.raises(LabelStrategyError):
            role_markers(fresh, SYSTEM)
        assert rendered == len(calls)

    def test_a_new_template_derives_again(self):
        """Changing the chat template gives the new template's markers."""
        fresh = build_processor("qwen2_5_vl")
        role_markers(fresh, TOOL)
        qwen3_template = processor("qwen3_vl").chat_template
        fresh.chat_template = qwen3_template
        fresh.tokenizer.chat_template = qwen3_template
        markers = role_markers(fresh, TOOL)
        decode = fresh.tokenizer.decode
        actual = (decode(list(markers.assistant_marker)), decode([markers.end_of_turn_id]))
        assert ("<tool_response>\n", "</tool_response>") == actual


class TestErrors:
    def test_message_names_processor_role_and_reason(self):
        """The refusal says which processor, which role, and that the text is folded."""
        with pytest.raises(LabelStrategyError) as caught:
            role_markers(processor("llava_next_mistral"), SYSTEM)
        expected = (
            "the chat template of LlavaNextProcessor writes no turn of its own for 'system' "
            "(it writes that text into the 'user' turn that follows), so 'system' turns "
            "cannot be trained."
        )
        assert expected == str(caught.value)

    def test_shared_opening_names_the_other_role(self):
        """Qwen3-VL's user opening also opens tool results, and the message says so."""
        with pytest.raises(LabelStrategyError, match="Qwen3VLProcessor.*'tool' messages"):
            role_markers(processor("qwen3_vl"), USER)

    def test_phi4_tool_opening_shared_with_system_tool_declarations(self):
        """Phi-4's <|tool|> also opens a system message's tool list, and the message says so."""
        with pytest.raises(LabelStrategyError, match="'<\\|tool\\|>'.*'system' messages"):
            role_markers(processor("phi4_mm"), TOOL)

    @pytest.mark.parametrize("role", ["", None, 3])
    def test_role_must_be_a_non_empty_string(self, role):
        """A role that is not a non-empty str is a configuration error."""
        with pytest.raises(ConfigurationError, match="'role'"):
            role_markers(processor("qwen2_5_vl"), role)
