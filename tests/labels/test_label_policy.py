"""LabelPolicy: which turns are trained, their end tokens, reasoning and loss weights.

Every expectation is computed here from the generated inputs (the assistant
texts, flags and weights that went in, and the policy), by a small oracle that
shares no code with :mod:`vlm_collate.policy`; the collator's decoded labelled
runs must equal what the oracle selects, in order.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import assume, event, given
from hypothesis import strategies as st

import vlm_collate as vc
from tests.helpers.chat import QWEN_VISION_TOKENS, chatml_run_matches, text_sample, token_ids
from vlm_collate.errors import BatchError, ConfigurationError, SampleError, SampleTypeError
from vlm_collate.labels import IGNORE_INDEX, LabelPolicy, ReasoningMarkers
from vlm_collate.testing import FAMILIES, build_processor, decoded_label_runs, label_runs
from vlm_collate.testing.strategies import answer_texts, examples, prompt_texts


@functools.cache
def processor(family: str):
    return build_processor(family)


def text_of(message) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(item["text"] for item in content if item["type"] == "text")


def every_other(sample_index, turn_index, message):
    """A user callable: trains turns whose index has the parity of the sample's index."""
    return (sample_index + turn_index) % 2 == 0


TURN_CHOICES = ("all", "last", 1, 2, every_other)
TURNS = st.sampled_from(TURN_CHOICES)
END_CHOICES = st.sampled_from(["always", "never", "last"])


def expected_turns(sample_index, conversation, *, turns, train_on_end_of_turn):
    """The oracle: ``[(assistant text, weight, with end token)]`` the policy selects, in order."""
    assistant = [m for m in conversation if m["role"] == "assistant"]
    picked = []
    for position, message in enumerate(assistant):
        if turns == "all":
            selected = True
        elif turns == "last":
            selected = position == len(assistant) - 1
        elif isinstance(turns, int):
            selected = position < turns
        else:
            selected = turns(sample_index, position, message)
        if "train" in message:
            selected = message["train"]
        weight = message.get("weight", 1.0)
        if selected and weight != 0:
            picked.append([text_of(message), float(weight), True])
    if train_on_end_of_turn == "never":
        for turn in picked:
            turn[2] = False
    elif train_on_end_of_turn == "last":
        for turn in picked[:-1]:
            turn[2] = False
    return picked


def repeats_an_answer(conversation) -> bool:
    """Whether an assistant text occurs more than once in the rendered conversation."""
    rendered = processor("qwen2_5_vl").apply_chat_template(conversation, tokenize=False)
    return any(
        rendered.count(text_of(message)) != 1
        for message in conversation
        if message["role"] == "assistant"
    )


def qwen_matches(run: str, text: str, with_end: bool) -> bool:
    return chatml_run_matches(run, text + ("<|im_end|>" if with_end else ""))


def mistral_matches(run: str, text: str, with_end: bool) -> bool:
    """The Mistral template trims the answer and writes ' ' before it and </s> after."""
    return run.lstrip(" ") == text.strip() + ("</s>" if with_end else "")


def decodes_to_nothing(text: str, with_end: bool, family: str) -> bool:
    if with_end:
        return False
    return text.strip() == "" if family == "llava_next_mistral" else text == ""


def check_batch(collator, samples, family, matches, *, turns, train_on_end_of_turn):
    """Collate, then compare every kept row's runs (and weights) with the oracle."""
    expected = {
        index: [
            turn
            for turn in expected_turns(
                index,
                sample["conversation"],
                turns=turns,
                train_on_end_of_turn=train_on_end_of_turn,
            )
            if not decodes_to_nothing(turn[0], turn[2], family)
        ]
        for index, sample in enumerate(samples)
    }
    if not any(expected.values()):
        event("no sample trains a token: the batch must be refused")
        with pytest.raises(BatchError):
            collator(samples)
        return
    batch = collator(samples)
    report = collator.last_report
    assert sorted(index for index, turns in expected.items() if turns) == report.kept
    tokenizer = collator.tokenizer
    decoded = decoded_label_runs(batch["labels"], tokenizer)
    for row, index in enumerate(report.kept):
        want = expected[index]
        assert len(want) == len(decoded[row]), (want, decoded[row])
        for run, (text, _, with_end) in zip(decoded[row], want, strict=True):
            assert matches(run, text, with_end), (run, text, with_end)
    if "loss_weights" in batch:
        weights, labels = batch["loss_weights"], batch["labels"]
        assert weights.dtype == torch.float32
        assert labels.shape == weights.shape
        assert torch.equal(weights == 0, labels == IGNORE_INDEX)
        for row, index in enumerate(report.kept):
            trained = (labels[row] != IGNORE_INDEX).tolist()
            runs, current, previous = [], [], False
            for value, on in zip(weights[row].tolist(), trained, strict=True):
                if on:
                    current.append(value)
                elif previous:
                    runs.append(current)
                    current = []
                previous = on
            if current:
                runs.append(current)
            assert [
                [w] * len(run) for run, (_, w, _) in zip(runs, expected[index], strict=True)
            ] == runs


qwen_flagged = examples(max_size=3, roles=("user", "tool"), label_keys=True)
mistral_flagged = examples(
    max_size=3, with_system=False, allow_empty_answers=False, label_keys=True
)
# LegacyBPEMatch cannot find empty or blank answers at all (its documented limit), with or
# without a policy, so its batches hold answers with text.
legacy_flagged = examples(
    max_size=2,
    with_images=False,
    leading_newline=False,
    allow_empty_answers=False,
    label_keys=True,
)


class TestTurnSelection:
    @given(
        samples=qwen_flagged,
        turns=TURNS,
        train_on_end_of_turn=END_CHOICES,
        weights=st.booleans(),
    )
    def test_qwen_runs_equal_selected_texts(self, samples, turns, train_on_end_of_turn, weights):
        """Qwen2 vocabulary: runs are the selected assistant texts (end token per policy), in order."""
        policy = LabelPolicy(
            turns=turns, train_on_end_of_turn=train_on_end_of_turn, loss_weights=weights
        )
        collator = vc.Qwen25VLCollator(
            processor=processor("qwen2_5_vl"), label_policy=policy, empty_labels="drop"
        )
        check_batch(
            collator,
            samples,
            "qwen2_5_vl",
            qwen_matches,
            turns=turns,
            train_on_end_of_turn=train_on_end_of_turn,
        )

    @given(
        samples=mistral_flagged,
        turns=TURNS,
        train_on_end_of_turn=END_CHOICES,
    )
    def test_mistral_runs_equal_selected_texts(self, samples, turns, train_on_end_of_turn):
        """Mistral SentencePiece ([/INST] marker derived from the template): the same property."""
        policy = LabelPolicy(
            turns=turns, train_on_end_of_turn=train_on_end_of_turn, loss_weights=True
        )
        collator = vc.DefaultCollator(
            processor=processor("llava_next_mistral"), label_policy=policy, empty_labels="drop"
        )
        check_batch(
            collator,
            samples,
            "llava_next_mistral",
            mistral_matches,
            turns=turns,
            train_on_end_of_turn=train_on_end_of_turn,
        )

    @given(
        samples=legacy_flagged,
        turns=TURNS,
        train_on_end_of_turn=END_CHOICES,
        strategy=st.sampled_from(["im_start", "derived", "legacy", "first_of"]),
    )
    def test_every_strategy_and_first_of(self, samples, turns, train_on_end_of_turn, strategy):
        """ImStartMarker, DerivedTemplateMarker, LegacyBPEMatch and FirstOf all obey the policy."""
        if strategy == "legacy":
            # Searching for answer texts finds an answer that also occurs elsewhere in the
            # rendered text there (LegacyBPEMatch's documented limit, with or without a policy).
            assume(not any(repeats_an_answer(sample["conversation"]) for sample in samples))
        strategies = {
            "im_start": vc.ImStartMarker(),
            "derived": vc.DerivedTemplateMarker(),
            "legacy": vc.LegacyBPEMatch(),
            "first_of": vc.FirstOf(vc.ImStartMarker(), vc.DerivedTemplateMarker()),
        }
        collator = vc.Qwen25VLCollator(
            processor=processor("qwen2_5_vl"),
            label_strategy=strategies[strategy],
            label_policy=LabelPolicy(
                turns=turns, train_on_end_of_turn=train_on_end_of_turn, loss_weights=True
            ),
            empty_labels="drop",
        )
        check_batch(
            collator,
            samples,
            "qwen2_5_vl",
            qwen_matches,
            turns=turns,
            train_on_end_of_turn=train_on_end_of_turn,
        )

    @given(
        samples=examples(max_size=3, roles=("user", "tool"), label_keys=True),
        turns=TURNS,
        train_on_end_of_turn=END_CHOICES,
        roles=st.sets(st.sampled_from(["assistant", "user", "system", "tool"]), min_size=1),
        reasoning=st.sampled_from(["train", "answer_only", "skip_empty"]),
        left=st.booleans(),
    )
    def test_never_labels_padding_or_media(
        self, samples, turns, train_on_end_of_turn, roles, reasoning, left
    ):
        """Under any policy (roles and reasoning too), no label sits on padding or media."""
        proc = processor("qwen2_5_vl")
        collator = vc.Qwen25VLCollator(
            processor=proc,
            label_policy=LabelPolicy(
                turns=turns,
                train_on_end_of_turn=train_on_end_of_turn,
                roles=roles,
                reasoning=reasoning,
                loss_weights=True,
            ),
            empty_labels="warn",
            padding_side="left" if left else "right",
            shift_labels=False,
        )
        batch = collator(samples)
        trained = batch["labels"] != IGNORE_INDEX
        assert not bool((trained & (batch["attention_mask"] == 0)).any())
        media = token_ids(proc.tokenizer, QWEN_VISION_TOKENS)
        assert not bool((trained & torch.isin(batch["input_ids"], media)).any())
        assert not bool(((batch["loss_weights"] != 0) & ~trained).any())


CONVERSATION = [
    {"role": "user", "content": "Question one"},
    {"role": "assistant", "content": "Answer one."},
    {"role": "user", "content": "Question two"},
    {"role": "assistant", "content": "Answer two."},
    {"role": "user", "content": "Question three"},
    {"role": "assistant", "content": "Answer three."},
]


class TestTurnSelectionExamples:
    def runs(self, **policy):
        proc = processor("qwen2_5_vl")
        collator = vc.Qwen25VLCollator(processor=proc, label_policy=LabelPolicy(**policy))
        return decoded_label_runs(
            collator([{"conversation": CONVERSATION}])["labels"], proc.tokenizer
        )[0]

    def test_default_trains_every_turn(self):
        """The default policy trains every assistant turn with its end token, as the seed does."""
        assert [
            "Answer one.<|im_end|>",
            "Answer two.<|im_end|>",
            "Answer three.<|im_end|>",
        ] == self.runs()

    def test_last_turn_only(self):
        """turns='last' trains the final answer only."""
        assert ["Answer three.<|im_end|>"] == self.runs(turns="last")

    def test_first_two_turns(self):
        """turns=2 trains the first two answers."""
        assert ["Answer one.<|im_end|>", "Answer two.<|im_end|>"] == self.runs(turns=2)

    def test_callable_sees_sample_turn_and_message(self):
        """The callable gets the caller's sample index, the turn index and the message."""
        seen = []

        def choose(sample_index, turn_index, message):
            seen.append((sample_index, turn_index, message["content"]))
            return message["content"] == "Answer two."

        assert ["Answer two.<|im_end|>"] == self.runs(turns=choose)
        assert [(0, 0, "Answer one."), (0, 1, "Answer two."), (0, 2, "Answer three.")] == seen

    def test_end_of_turn_never_and_last(self):
        """train_on_end_of_turn='never' drops every <|im_end|>; 'last' keeps only the last trained one."""
        assert ["Answer one.", "Answer two.", "Answer three."] == self.runs(
            train_on_end_of_turn="never"
        )
        assert ["Answer one.", "Answer two.<|im_end|>"] == self.runs(
            turns=2, train_on_end_of_turn="last"
        )

    def test_roles_accepts_a_comma_separated_string(self):
        """roles='assistant' as a string equals the default set."""
        assert frozenset({"assistant"}) == LabelPolicy(roles="assistant").roles
        assert frozenset({"assistant", "tool"}) == LabelPolicy(roles="assistant, tool").roles


class TestMessageKeys:
    def test_train_false_and_true_override_the_policy(self):
        """'train': False drops a turn under 'all'; 'train': True adds one under 'last'."""
        proc = processor("qwen2_5_vl")
        sample = {
            "conversation": [
                {"role": "user", "content": "Q1"},
                {"role": "assistant", "content": "Kept by flag.", "train": True},
                {"role": "user", "content": "Q2"},
                {"role": "assistant", "content": "Dropped by flag.", "train": False},
                {"role": "user", "content": "Q3"},
                {"role": "assistant", "content": "Last one."},
            ]
        }
        for turns, want in (
            ("all", ["Kept by flag.<|im_end|>", "Last one.<|im_end|>"]),
            ("last", ["Kept by flag.<|im_end|>", "Last one.<|im_end|>"]),
        ):
            collator = vc.Qwen25VLCollator(processor=proc, label_policy=LabelPolicy(turns=turns))
            assert [want] == decoded_label_runs(collator([sample])["labels"], proc.tokenizer)

    def test_flags_work_with_the_default_policy(self):
        """A 'train': False flag is honoured even when the collator uses the default policy."""
        proc = processor("qwen2_5_vl")
        sample = text_sample("Not this one.")
        sample["conversation"][1]["train"] = False
        sample["conversation"] += [
            {"role": "user", "content": "Again"},
            {"role": "assistant", "content": "This one."},
        ]
        batch = vc.Qwen25VLCollator(processor=proc)([sample])
        assert [["This one.<|im_end|>"]] == decoded_label_runs(batch["labels"], proc.tokenizer)

    def test_weights_are_placed_per_turn_and_shifted_like_labels(self):
        """Message weights land on their turn's tokens; weights shift and pad exactly like labels."""
        proc = processor("qwen2_5_vl")
        samples = [
            {
                "conversation": [
                    {"role": "user", "content": "Q1"},
                    {"role": "assistant", "content": "Half.", "weight": 0.5},
                    {"role": "user", "content": "Q2"},
                    {"role": "assistant", "content": "Double weight.", "weight": 2},
                ]
            },
            text_sample("Plain."),
        ]
        for shift in (True, False):
            collator = vc.Qwen25VLCollator(
                processor=proc, label_policy={"loss_weights": True}, shift_labels=shift
            )
            batch = collator(samples)
            weights, labels = batch["loss_weights"], batch["labels"]
            runs = label_runs(labels)
            values = [
                sorted(set(weights[row][labels[row] != IGNORE_INDEX].tolist())) for row in range(2)
            ]
            assert 2 == len(runs[0])
            assert [[0.5, 2.0], [1.0]] == values
            first_run = len(runs[0][0])
            row_weights = weights[0][labels[0] != IGNORE_INDEX].tolist()
            assert [0.5] * first_run + [2.0] * len(runs[0][1]) == row_weights
            assert torch.equal(weights == 0, labels == IGNORE_INDEX)

    def test_weight_zero_means_untrained(self):
        """A weight of 0 leaves the turn untrained, so weights stay non-zero exactly on labels."""
        proc = processor("qwen2_5_vl")
        sample = {
            "conversation": [
                {"role": "user", "content": "Q1"},
                {"role": "assistant", "content": "Zero.", "weight": 0},
                {"role": "user", "content": "Q2"},
                {"role": "assistant", "content": "One."},
            ]
        }
        collator = vc.Qwen25VLCollator(processor=proc, label_policy={"loss_weights": True})
        assert [["One.<|im_end|>"]] == decoded_label_runs(
            collator([sample])["labels"], proc.tokenizer
        )

    def test_weight_callable(self):
        """A weight callable sets turn weights where messages carry none."""
        proc = processor("qwen2_5_vl")
        sample = {
            "conversation": [
                {"role": "user", "content": "Q1"},
                {"role": "assistant", "content": "A1."},
                {"role": "user", "content": "Q2"},
                {"role": "assistant", "content": "A2.", "weight": 3.0},
            ]
        }
        policy = LabelPolicy(loss_weights=True, weight=lambda s, t, m: 0.1 * (t + 1))
        batch = vc.Qwen25VLCollator(processor=proc, label_policy=policy, shift_labels=False)(
            [sample]
        )
        trained = batch["labels"][0] != IGNORE_INDEX
        values = batch["loss_weights"][0][trained].tolist()
        first = len(label_runs(batch["labels"])[0][0])
        assert pytest.approx([0.1] * first + [3.0] * (len(values) - first)) == values

    def test_ignored_weights_are_reported(self, caplog):
        """Weights without loss_weights=True log a warning rather than vanish silently."""
        from vlm_collate._report import reset_warnings

        reset_warnings()
        proc = processor("qwen2_5_vl")
        sample = text_sample("A.")
        sample["conversation"][1]["weight"] = 0.5
        with caplog.at_level("WARNING", logger="vlm_collate.labels"):
            vc.Qwen25VLCollator(processor=proc)([sample])
        assert any("loss_weights=False" in record.getMessage() for record in caplog.records)

    def test_no_weights_unless_asked(self):
        """loss_weights appears only when the policy asks for it."""
        proc = processor("qwen2_5_vl")
        sample = text_sample("A.")
        sample["conversation"][1]["weight"] = 0.5
        assert "loss_weights" not in vc.Qwen25VLCollator(processor=proc)([sample])

    @pytest.mark.parametrize(
        ("key", "value", "error"),
        [
            ("train", "yes", SampleTypeError),
            ("train", 1, SampleTypeError),
            ("weight", "0.5", SampleTypeError),
            ("weight", True, SampleTypeError),
            ("weight", -1.0, SampleError),
            ("weight", float("nan"), SampleError),
        ],
    )
    def test_bad_message_keys_name_sample_and_message(self, key, value, error):
        """A bad 'train' or 'weight' value is refused with the sample and message named."""
        proc = processor("qwen2_5_vl")
        bad = text_sample("A.")
        bad["conversation"][1][key] = value
        with pytest.raises(error) as caught:
            vc.Qwen25VLCollator(processor=proc)([text_sample(), bad])
        assert caught.value.sample_index == 1
        assert caught.value.message_index == 1
        assert key in str(caught.value)

    def test_samples_are_not_mutated(self):
        """Applying a policy leaves the caller's messages as they were."""
        proc = processor("qwen2_5_vl")
        sample = text_sample("A.")
        sample["conversation"][1].update(train=True, weight=0.5)
        before = repr(sample)
        collator = vc.Qwen25VLCollator(
            processor=proc, label_policy=LabelPolicy(turns="last", loss_weights=True)
        )
        collator([sample])
        assert before == repr(sample)


class TestReasoning:
    @staticmethod
    def conversation(reasoning: str, answer: str):
        return [
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "Early answer."},
            {"role": "user", "content": "Second question"},
            {"role": "assistant", "content": answer, "reasoning_content": reasoning},
        ]

    @given(
        reasoning=st.one_of(st.just(""), st.just("\n"), prompt_texts()),
        answer=answer_texts(allow_empty=False, leading_newline=False).map(str.strip).filter(bool),
        policy=st.sampled_from(["train", "answer_only", "skip_empty"]),
    )
    def test_qwen3_thinking_runs_show_what_the_policy_promises(self, reasoning, answer, policy):
        """Qwen3-VL Thinking: the final turn's run holds the reasoning block only when promised."""
        proc = processor("qwen3_vl_thinking")
        collator = vc.Qwen25VLCollator(processor=proc, label_policy={"reasoning": policy})
        batch = collator([{"conversation": self.conversation(reasoning, answer)}])
        runs = decoded_label_runs(batch["labels"], proc.tokenizer)[0]
        # The template writes the last turn as "<think>\n" + reasoning + "\n</think>\n\n" + answer.
        block = "<think>\n" + reasoning.strip("\n") + "\n</think>\n\n"
        empty = reasoning.strip() == ""
        keep_block = policy == "train" or (policy == "skip_empty" and not empty)
        expected_last = (block if keep_block else "") + answer + "<|im_end|>"
        assert ["Early answer.<|im_end|>", expected_last] == runs

    @pytest.mark.parametrize("policy", ["train", "answer_only", "skip_empty"])
    def test_qwen3_omni_follows_the_same_policy(self, policy):
        """Qwen3-Omni's collator applies the reasoning policy to its <think> blocks too."""
        proc = processor("qwen3_omni")
        batch = vc.Qwen3OmniCollator(processor=proc, label_policy={"reasoning": policy})(
            [{"conversation": self.conversation("Seven has no divisors.", "Prime.")}]
        )
        runs = decoded_label_runs(batch["labels"], proc.tokenizer)[0]
        block = "<think>\nSeven has no divisors.\n</think>\n\n"
        expected_last = ("" if policy == "answer_only" else block) + "Prime.<|im_end|>"
        assert ["Early answer.<|im_end|>", expected_last] == runs

    @pytest.mark.parametrize("policy", ["train", "answer_only", "skip_empty"])
    def test_gemma4_thinking_channel(self, policy):
        """Gemma 4's <|channel>thought ... <channel|> block is the reasoning the policy acts on."""
        proc = processor("gemma4")
        sample = tool_exchange("Weather?", "weather", {"city": "Paris"}, "Sunny", "It is sunny.")
        sample["conversation"][1]["reasoning_content"] = "I should call the tool."
        batch = vc.Gemma4Collator(processor=proc, label_policy={"reasoning": policy})([sample])
        runs = decoded_label_runs(batch["labels"], proc.tokenizer)[0]
        # The template writes reasoning as "<|channel>thought\n" + text + "\n<channel|>",
        # then the call, then the tool response (untrained), inside the same model turn.
        rendered = proc.apply_chat_template(sample["conversation"], tokenize=False)
        block = "<|channel>thought\nI should call the tool.\n<channel|>"
        call = rendered.split(block)[1].split("<|tool_response>")[0]
        assert call.startswith("<|tool_call>call:weather")
        first = call if policy == "answer_only" else block + call
        assert [first, "It is sunny.<turn|>"] == runs

    def test_markers_missing_from_the_vocabulary_are_refused(self):
        """A reasoning policy with delimiters the tokenizer lacks is a configuration error."""
        proc = processor("qwen2_5_vl")
        policy = LabelPolicy(
            reasoning="answer_only", reasoning_markers=ReasoningMarkers("<reason>", "</reason>")
        )
        collator = vc.Qwen25VLCollator(processor=proc, label_policy=policy)
        with pytest.raises(ConfigurationError, match="<reason>"):
            collator([text_sample()])


class TestConfiguration:
    @pytest.mark.parametrize(
        "options",
        [
            {"turns": 0},
            {"turns": "first"},
            {"turns": True},
            {"train_on_end_of_turn": "sometimes"},
            {"reasoning": "hide"},
            {"roles": ""},
            {"weight": 0.5},
            {"unknown": 1},
        ],
    )
    def test_bad_options_are_configuration_errors(self, options):
        """Each bad option is refused with a ConfigurationError naming it."""
        with pytest.raises(ConfigurationError):
            LabelPolicy.coerce(options)

    def test_mapping_becomes_a_policy(self):
        """A mapping (YAML / Hydra) is turned into the same policy."""
        collator = vc.Qwen25VLCollator(
            processor=processor("qwen2_5_vl"),
            label_policy={"turns": "last", "reasoning_markers": ["<think>", "</think>"]},
        )
        assert (
            LabelPolicy(turns="last", reasoning_markers=ReasoningMarkers()) == collator.label_policy
        )


def expected_role_turns(sample_index, conversation, *, roles, turns):
    """The oracle for roles: ``[(text, role)]`` in message order (ChatML writes texts verbatim)."""
    candidates = [m for m in conversation if m["role"] in roles]
    picked = []
    for message in conversation:
        if message["role"] in roles:
            position = candidates.index(message)
            if turns == "all":
                selected = True
            elif turns == "last":
                selected = position == len(candidates) - 1
            elif isinstance(turns, int):
                selected = position < turns
            else:
                selected = turns(sample_index, position, message)
        else:
            selected = False
        if "train" in message:
            selected = message["train"]
        if selected and message.get("weight", 1.0) != 0:
            picked.append((text_of(message), message["role"]))
    return picked


def tool_exchange(question, name, arguments, result, answer, *, preface=""):
    """A user question, an assistant tool call, the tool's result and the final answer."""
    call = {"type": "function", "function": {"name": name, "arguments": arguments}}
    return {
        "conversation": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": preface, "tool_calls": [call]},
            {"role": "tool", "content": result},
            {"role": "assistant", "content": answer},
        ]
    }


class TestRoles:
    @given(
        samples=examples(max_size=3, roles=("user", "tool"), with_system=True, label_keys=True),
        roles=st.sets(st.sampled_from(["assistant", "user", "system", "tool"]), min_size=1),
        turns=TURNS,
    )
    def test_qwen_runs_are_the_selected_messages_of_every_role(self, samples, roles, turns):
        """ChatML: runs are the texts of the selected messages of every asked role, in order."""
        proc = processor("qwen2_5_vl")
        collator = vc.Qwen25VLCollator(
            processor=proc,
            label_policy=LabelPolicy(roles=roles, turns=turns, loss_weights=True),
            empty_labels="drop",
        )
        expected = {
            index: expected_role_turns(index, sample["conversation"], roles=roles, turns=turns)
            for index, sample in enumerate(samples)
        }
        if not any(expected.values()):
            event("no sample trains a token: the batch must be refused")
            with pytest.raises(BatchError):
                collator(samples)
            return
        batch = collator(samples)
        kept = collator.last_report.kept
        assert sorted(index for index, want in expected.items() if want) == kept
        decoded = decoded_label_runs(batch["labels"], proc.tokenizer)
        for row, index in enumerate(kept):
            want = expected[index]
            assert len(want) == len(decoded[row]), (want, decoded[row])
            for run, (text, _) in zip(decoded[row], want, strict=True):
                assert chatml_run_matches(run, text + "<|im_end|>"), (run, text)
        assert torch.equal(batch["loss_weights"] == 0, batch["labels"] == IGNORE_INDEX)

    def test_tool_response_blocks_are_tool_turns_on_qwen3(self):
        """Qwen3-VL folds tool results into a user turn; each result is still its own tool turn."""
        proc = processor("qwen3_vl")
        call = {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
        sample = {
            "conversation": [
                {"role": "user", "content": "Call f twice."},
                {"role": "assistant", "content": "", "tool_calls": [call, call]},
                {"role": "tool", "content": "first result"},
                {"role": "tool", "content": "second result", "train": False},
                {"role": "assistant", "content": "Done."},
            ]
        }
        collator = vc.Qwen25VLCollator(processor=proc, label_policy={"roles": "tool"})
        runs = decoded_label_runs(collator([sample])["labels"], proc.tokenizer)[0]
        # The template writes each result as "<tool_response>\n" + text + "\n</tool_response>".
        assert ["first result\n</tool_response>"] == runs

    def test_tool_calls_are_assistant_content(self):
        """The template's <tool_call> block is labelled as part of the assistant turn."""
        proc = processor("qwen3_vl")
        sample = tool_exchange(
            "Look up cat.",
            "lookup",
            {"q": "cat"},
            "A small feline.",
            "A cat is a small feline.",
            preface="Looking.",
        )
        runs = decoded_label_runs(
            vc.Qwen25VLCollator(processor=proc)([sample])["labels"], proc.tokenizer
        )[0]
        rendered = proc.apply_chat_template(sample["conversation"], tokenize=False)
        first_turn = rendered.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
        assert (
            '<tool_call>\n{"name": "lookup", "arguments": {"q": "cat"}}\n</tool_call>' in first_turn
        )
        assert [first_turn + "<|im_end|>", "A cat is a small feline.<|im_end|>"] == runs

    def test_gemma4_tool_responses_follow_the_tool_role(self):
        """Gemma 4 writes tool responses inside the model turn: untrained unless 'tool' is a role."""
        proc = processor("gemma4")
        sample = tool_exchange("Weather?", "weather", {"city": "Paris"}, "Sunny", "It is sunny.")
        plain = vc.Gemma4Collator(processor=proc)([sample])
        with_tool = vc.Gemma4Collator(processor=proc, label_policy={"roles": "assistant,tool"})(
            [sample]
        )
        plain_text = "".join(decoded_label_runs(plain["labels"], proc.tokenizer)[0])
        tool_text = "".join(decoded_label_runs(with_tool["labels"], proc.tokenizer)[0])
        assert "Sunny" not in plain_text
        assert "<|tool_response>" not in plain_text
        assert "Sunny" in tool_text
        assert plain_text.endswith("It is sunny.<turn|>")

    def test_role_without_a_turn_of_its_own_is_refused(self):
        """Mistral folds the system prompt into a user turn: asking to train it says why."""
        proc = processor("llava_next_mistral")
        sample = {
            "conversation": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
            ]
        }
        collator = vc.DefaultCollator(processor=proc, label_policy={"roles": "assistant,system"})
        with pytest.raises(vc.LabelStrategyError, match="system"):
            collator([sample])

    def test_mistral_user_turns(self):
        """Mistral [INST] user turns are found from the template and trained with roles='user'."""
        proc = processor("llava_next_mistral")
        sample = {
            "conversation": [
                {"role": "user", "content": "First question"},
                {"role": "assistant", "content": "First answer."},
                {"role": "user", "content": "Second question"},
                {"role": "assistant", "content": "Second answer."},
            ]
        }
        collator = vc.DefaultCollator(processor=proc, label_policy={"roles": "user"})
        runs = decoded_label_runs(collator([sample])["labels"], proc.tokenizer)[0]
        assert ["First question", "Second question"] == [
            run.removesuffix("[/INST]").strip() for run in runs
        ]


REASONING_FAMILIES = {
    "gemma4",
    "kimi_k25",
    "kimi_k25_remote",
    "nemotron_omni",
    "qwen3_omni",
    "qwen3_vl_thinking",
}


class TestEveryFamily:
    @pytest.mark.parametrize("family", sorted(FAMILIES))
    def test_last_turn_without_end_token_and_reasoning(self, family):
        """Every family's collator applies the policy: only the last answer's text is trained."""
        from PIL import Image

        proc = processor(family)
        picture = Image.new("RGB", (64, 64), "red")
        conversation = [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": picture},
                    {"type": "text", "text": "Colour?"},
                ],
            },
            {"role": "assistant", "content": "Red square."},
            {"role": "user", "content": "Sure?"},
            {"role": "assistant", "content": "Yes, quite sure.", "weight": 0.5},
        ]
        if family == "nemotron_parse":  # a page parser: one image, one target
            conversation = conversation[:2]
        options = {"dropped_keys": ()} if family == "phi4_mm" else {}
        # Templates that write (possibly empty) reasoning blocks; the others' tokenizers
        # have no reasoning tokens, and asking them for a reasoning policy is an error.
        reasoning = "skip_empty" if family in REASONING_FAMILIES else "train"
        policy = LabelPolicy(
            turns="last", train_on_end_of_turn="never", reasoning=reasoning, loss_weights=True
        )
        collator = vc.collator_for(proc, label_policy=policy, **options)
        batch = collator([{"conversation": conversation}])
        runs = decoded_label_runs(batch["labels"], proc.tokenizer)
        assert [[text_of(conversation[-1])]] == [[run.strip() for run in row] for row in runs]
        trained = batch["labels"] != IGNORE_INDEX
        weight = conversation[-1].get("weight", 1.0)
        assert {weight} == set(batch["loss_weights"][trained].tolist())
        assert not bool((batch["loss_weights"][~trained] != 0).any())
