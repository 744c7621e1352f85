"""Label strategies and the vectorised marker scan."""

from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import vlm_collate as vc
from vlm_collate.labels import (
    IGNORE_INDEX,
    TurnMarkers,
    assistant_spans,
    labels_from_spans,
    naive_assistant_spans,
)
from vlm_collate.testing import decoded_label_runs

# Readable dummy ids: 1 2 3 open an assistant turn, 9 ends a turn, 7 is a token
# that begins with the text of 3 (think "\n\n" after "\n").
MARKERS = TurnMarkers(assistant_marker=(1, 2, 3), end_of_turn_id=9, merged_tail_ids=(7,))


def mask_of(row: list[int]) -> list[bool]:
    return assistant_spans(torch.tensor([row]), MARKERS)[0].tolist()


class TestAssistantSpans:
    def test_single_turn_content_and_end_token(self):
        """Content after the marker and the end-of-turn token are in the span."""
        row = [5, 1, 2, 3, 4, 4, 9, 5]
        assert [False, False, False, False, True, True, True, False] == mask_of(row)

    def test_two_turns(self):
        """Every assistant turn is found; text between turns is not."""
        row = [1, 2, 3, 4, 9, 6, 6, 1, 2, 3, 4, 4, 9, 6]
        expected = [False] * 3 + [True, True] + [False] * 5 + [True, True, True, False]
        assert expected == mask_of(row)

    def test_empty_answer_keeps_end_token(self):
        """A marker followed directly by the end token trains only the end token."""
        assert [False, False, False, True, False] == mask_of([1, 2, 3, 9, 6])

    def test_unterminated_turn_runs_to_row_end(self):
        """A turn cut off by truncation spans to the end of the row."""
        assert [False, False, False, True, True] == mask_of([1, 2, 3, 4, 4])

    def test_end_token_outside_turn_is_ignored(self):
        """An end token with no open turn (a user turn's end) is not trained."""
        assert [False, False, False, False, False] == mask_of([6, 9, 6, 9, 6])

    def test_partial_marker_is_not_a_turn(self):
        """Only the full marker opens a turn."""
        assert [False] * 6 == mask_of([1, 2, 4, 4, 9, 6])

    def test_marker_at_row_end_opens_nothing(self):
        """A marker with no room after it trains nothing."""
        assert [False, False, False, False] == mask_of([6, 1, 2, 3])

    def test_merged_tail_token_opens_turn_and_is_trained(self):
        """When the marker's last token merged with the answer, the merged token is trained."""
        assert [False, False, True, True, True, False] == mask_of([1, 2, 7, 4, 9, 6])

    def test_labels_copy_ids_inside_spans_only(self):
        """labels_from_spans keeps ids in spans and IGNORE_INDEX elsewhere."""
        ids = torch.tensor([[1, 2, 3, 4, 9, 6]])
        labels = labels_from_spans(ids, assistant_spans(ids, MARKERS))
        assert [[IGNORE_INDEX] * 3 + [4, 9, IGNORE_INDEX]] == labels.tolist()

    @given(
        st.lists(
            st.lists(st.sampled_from([1, 2, 3, 4, 7, 9]), min_size=0, max_size=40),
            min_size=1,
            max_size=4,
        )
    )
    def test_vectorised_equals_naive_scan(self, rows):
        """The vectorised scan equals the per-token loop on marker-dense sequences."""
        width = max(len(row) for row in rows)
        ids = torch.tensor(
            [row + [6] * (width - len(row)) for row in rows], dtype=torch.long
        ).reshape(len(rows), width)
        assert (
            naive_assistant_spans(ids, MARKERS).tolist() == assistant_spans(ids, MARKERS).tolist()
        )


class TestTurnMarkers:
    def test_rejects_empty_marker(self):
        """An empty marker is a configuration mistake."""
        with pytest.raises(vc.LabelStrategyError, match="assistant_marker"):
            TurnMarkers(assistant_marker=(), end_of_turn_id=9)

    def test_rejects_end_token_inside_marker(self):
        """The end token may not be part of the marker (the scan would be ambiguous)."""
        with pytest.raises(vc.LabelStrategyError, match="end_of_turn_id"):
            TurnMarkers(assistant_marker=(1, 9), end_of_turn_id=9)


class TestImStartMarker:
    def test_markers_are_chatml_ids(self, qwen_processor):
        """The marker is <|im_start|> 'assistant' '\\n' and the end is <|im_end|>."""
        tokenizer = qwen_processor.tokenizer
        expected = tuple(tokenizer.convert_tokens_to_ids(["<|im_start|>", "assistant", "Ċ"]))
        markers = vc.ImStartMarker().markers(qwen_processor)
        assert expected == markers.assistant_marker
        assert tokenizer.convert_tokens_to_ids("<|im_end|>") == markers.end_of_turn_id

    def test_newline_merges_are_known(self, qwen_processor):
        """Tokens such as '\\n\\n' are recognised as the marker's newline merged with the answer."""
        markers = vc.ImStartMarker().markers(qwen_processor)
        assert qwen_processor.tokenizer.convert_tokens_to_ids("ĊĊ") in markers.merged_tail_ids

    def test_not_applicable_without_chatml_tokens(self, mistral_processor):
        """A vocabulary without <|im_start|> makes the strategy step aside."""
        with pytest.raises(vc.LabelStrategyError, match="im_start"):
            vc.ImStartMarker().markers(mistral_processor)


class CountingTemplate:
    """Counts apply_chat_template calls on one object (a spy; the call goes through)."""

    def __init__(self, owner):
        self.calls = 0
        self.owner = owner
        self.original = owner.apply_chat_template

    def __enter__(self):
        def counted(*args, **kwargs):
            self.calls += 1
            return self.original(*args, **kwargs)

        self.owner.apply_chat_template = counted
        return self

    def __exit__(self, *exc):
        del self.owner.apply_chat_template


class TestDerivedTemplateMarker:
    def test_qwen_template_gives_chatml_marker(self, qwen_processor):
        """On a ChatML template the derived marker equals the vocabulary one."""
        derived = vc.DerivedTemplateMarker().markers(qwen_processor)
        assert vc.ImStartMarker().markers(qwen_processor) == derived

    def test_mistral_template_uses_closing_inst(self, mistral_processor):
        """Mistral has no assistant header; [/INST] opens the answer and </s> ends it."""
        tokenizer = mistral_processor.tokenizer
        markers = vc.DerivedTemplateMarker().markers(mistral_processor)
        assert (tokenizer.convert_tokens_to_ids("[/INST]"),) == markers.assistant_marker
        assert tokenizer.eos_token_id == markers.end_of_turn_id

    def test_no_renders_after_first_batch(self):
        """Markers are derived once per tokenizer; later batches render nothing for labels."""
        from vlm_collate.testing import build_processor

        processor = build_processor("llava_next_mistral")
        strategy = vc.DerivedTemplateMarker()
        ids = torch.tensor([[1, 2, 3]])
        strategy.build(ids, [[]], processor)
        with (
            CountingTemplate(processor) as spy,
            CountingTemplate(processor.tokenizer) as tokenizer_spy,
        ):
            for _ in range(3):
                strategy.build(ids, [[]], processor)
        assert 0 == spy.calls + tokenizer_spy.calls

    def test_template_without_turns_is_not_applicable(self, qwen_processor):
        """A template that drops assistant text cannot give markers."""
        from vlm_collate.testing import build_processor

        processor = build_processor(
            "qwen2_5_vl", chat_template="{% for m in messages %}{{ m['role'] }}{% endfor %}"
        )
        with pytest.raises(vc.LabelStrategyError):
            vc.DerivedTemplateMarker().markers(processor)


class TestLegacyBPEMatch:
    def test_labels_answers_and_warns(self, qwen_processor, caplog):
        """It finds a plain answer, trains its end token, and warns that it is fragile."""
        from vlm_collate._report import reset_warnings

        reset_warnings()
        collator = vc.Qwen25VLCollator(processor=qwen_processor, label_strategy=vc.LegacyBPEMatch())
        sample = {
            "conversation": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello world"},
            ]
        }
        with caplog.at_level(logging.WARNING, logger="vlm_collate.labels"):
            batch = collator([sample])
        assert [["Hello world<|im_end|>"]] == decoded_label_runs(
            batch["labels"], qwen_processor.tokenizer
        )
        assert any("LegacyBPEMatch" in record.getMessage() for record in caplog.records)

    def test_answer_repeated_in_prompt_is_found_in_its_turn(self, qwen_processor):
        """The search starts after the previous answer, so repeated text maps to the right turn."""
        collator = vc.Qwen25VLCollator(processor=qwen_processor, label_strategy=vc.LegacyBPEMatch())
        conversation = [
            {"role": "user", "content": "Say yes"},
            {"role": "assistant", "content": "yes"},
            {"role": "user", "content": "yes"},
            {"role": "assistant", "content": "no"},
        ]
        batch = collator([{"conversation": conversation}])
        assert [["yes<|im_end|>", "no<|im_end|>"]] == decoded_label_runs(
            batch["labels"], qwen_processor.tokenizer
        )


class FailingStrategy(vc.LabelStrategy):
    """A strategy that never applies."""

    def build(self, input_ids, conversations, processor):
        raise vc.LabelStrategyError("never applies")


class TestFirstOf:
    def test_returns_first_applicable(self, qwen_processor):
        """A failing strategy is skipped and the next one's labels are returned."""
        ids = torch.tensor(
            qwen_processor.tokenizer("<|im_start|>assistant\nhi<|im_end|>")["input_ids"]
        ).unsqueeze(0)
        expected = vc.ImStartMarker().build(ids, [[]], qwen_processor)
        actual = vc.FirstOf(FailingStrategy(), vc.ImStartMarker()).build(ids, [[]], qwen_processor)
        assert expected.tolist() == actual.tolist()

    def test_all_failing_raises_with_every_reason(self, qwen_processor):
        """When nothing applies, the error lists each strategy's reason."""
        with pytest.raises(vc.LabelStrategyError, match="FailingStrategy: never applies"):
            vc.FirstOf(FailingStrategy(), FailingStrategy()).build(
                torch.tensor([[1]]), [[]], qwen_processor
            )

    def test_rejects_non_strategies(self):
        """Only LabelStrategy instances compose."""
        with pytest.raises(TypeError, match="LabelStrategy"):
            vc.FirstOf("ImStartMarker")

    def test_needs_a_strategy(self):
        """An empty FirstOf is refused."""
        with pytest.raises(vc.LabelStrategyError):
            vc.FirstOf()


class TestImStartMarkerTemplateCheck:
    def test_template_closing_turns_otherwise_is_refused(self):
        """A ChatML-like template that closes turns with another token makes ImStartMarker step aside."""
        from vlm_collate.testing import build_processor

        template = (
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        )
        processor = build_processor("qwen2_5_vl", chat_template=template)
        with pytest.raises(vc.LabelStrategyError, match="does not write"):
            vc.ImStartMarker().markers(processor)
        sample = {
            "conversation": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Ciao."},
            ]
        }
        batch = vc.Qwen25VLCollator(processor=processor)([sample])
        assert [["Hello.<|endoftext|>", "Ciao.<|endoftext|>"]] == decoded_label_runs(
            batch["labels"], processor.tokenizer
        )


class TestDerivedMarkerEosTemplates:
    def test_template_ending_in_eos(self):
        """A template that appends EOS to every rendering (Phi-4) still yields its assistant header."""
        from vlm_collate.testing import build_processor

        processor = build_processor("phi4_mm")
        tokenizer = processor.tokenizer
        markers = vc.DerivedTemplateMarker().markers(processor)
        assert (tokenizer.convert_tokens_to_ids("<|assistant|>"),) == markers.assistant_marker
        assert tokenizer.convert_tokens_to_ids("<|end|>") == markers.end_of_turn_id


class TestSkipEmptyThink:
    def test_qwen3_thinking_empty_block_untrained(self):
        """On Qwen3-VL Thinking, the template's empty <think>\\n\\n</think>\\n\\n is left untrained."""
        from vlm_collate.testing import build_processor

        processor = build_processor("qwen3_vl_thinking")
        strategy = vc.SkipEmptyThink(
            vc.FirstOf(vc.ImStartMarker(), vc.DerivedTemplateMarker()), blank_after=True
        )
        sample = {
            "conversation": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
            ]
        }
        plain = vc.Qwen25VLCollator(processor=processor)([sample])
        skipped = vc.Qwen25VLCollator(processor=processor, label_strategy=strategy)([sample])
        assert [["<think>\n\n</think>\n\nHello.<|im_end|>"]] == decoded_label_runs(
            plain["labels"], processor.tokenizer
        )
        assert [["Hello.<|im_end|>"]] == decoded_label_runs(skipped["labels"], processor.tokenizer)

    def test_reasoning_stays_trained(self):
        """A block with reasoning in it is answer text and stays trained."""
        from vlm_collate.testing import build_processor

        processor = build_processor("qwen3_vl_thinking")
        strategy = vc.SkipEmptyThink(vc.ImStartMarker(), blank_after=True)
        sample = {
            "conversation": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "<think>\nwave\n</think>\n\nHello."},
            ]
        }
        batch = vc.Qwen25VLCollator(processor=processor, label_strategy=strategy)([sample])
        assert [["<think>\nwave\n</think>\n\nHello.<|im_end|>"]] == decoded_label_runs(
            batch["labels"], processor.tokenizer
        )
