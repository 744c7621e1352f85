"""The batch contract (DESIGN.md) as invariants over generated conversations.

Expected values come from the generated inputs (the assistant texts that went
in), never from what the collator computed.
"""

from __future__ import annotations

import copy
import functools
import pickle

import torch
from hypothesis import event, given
from hypothesis import strategies as st

import vlm_collate as vc
from tests.helpers.chat import QWEN_VISION_TOKENS, chatml_run_matches, token_ids
from vlm_collate.labels import IGNORE_INDEX, assistant_spans, naive_assistant_spans
from vlm_collate.testing import build_processor, decoded_label_runs, label_runs
from vlm_collate.testing.strategies import examples

QWEN_FAMILIES = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl")


@functools.cache
def processor(family: str):
    return build_processor(family)


@functools.cache
def pickled_pair():
    """A collator and its pickled copy (pickling a tokenizer takes about a second)."""
    collator = vc.Qwen25VLCollator(processor=processor("qwen2_5_vl"))
    return collator, pickle.loads(pickle.dumps(collator))


def assistant_texts(conversation) -> list[str]:
    texts = []
    for message in conversation:
        if message["role"] != "assistant":
            continue
        content = message["content"]
        texts.append(
            content
            if isinstance(content, str)
            else "".join(i["text"] for i in content if i["type"] == "text")
        )
    return texts


def qwen_run_matches(run: str, text: str) -> bool:
    """Byte-level BPE: the run is the text plus <|im_end|> (see chatml_run_matches)."""
    return chatml_run_matches(run, text + "<|im_end|>")


def mistral_run_matches(run: str, text: str) -> bool:
    """SentencePiece: the template trims the answer and adds ' ' before it and </s> after."""
    return run.lstrip(" ") == text.strip() + "</s>"


def assert_runs_match(batch, samples, kept, tokenizer, matches):
    decoded = decoded_label_runs(batch["labels"], tokenizer)
    for row, index in enumerate(kept):
        texts = assistant_texts(samples[index]["conversation"])
        runs = decoded[row]
        assert len(texts) == len(runs), (texts, runs)
        for run, text in zip(runs, texts, strict=True):
            assert matches(run, text), (run, text)


def snapshot(value):
    """A deep, comparable copy of samples, with images as (mode, size, bytes)."""
    if isinstance(value, dict):
        return {key: snapshot(item) for key, item in value.items()}
    if isinstance(value, list):
        return [snapshot(item) for item in value]
    if hasattr(value, "tobytes") and hasattr(value, "mode"):
        return ("image", value.mode, value.size, value.tobytes(), dict(value.info))
    return copy.deepcopy(value)


qwen_batches = examples(max_size=3, roles=("user", "tool"))
mistral_batches = examples(max_size=3, with_system=False)


class TestLabelledRunsEqualAssistantTexts:
    @given(family=st.sampled_from(QWEN_FAMILIES), samples=qwen_batches)
    def test_qwen_collator(self, family, samples):
        """Qwen: each row's labelled runs are its assistant texts, each with <|im_end|>, in order."""
        proc = processor(family)
        collator = vc.Qwen25VLCollator(processor=proc)
        batch = collator(samples)
        assert_runs_match(
            batch, samples, collator.last_report.kept, proc.tokenizer, qwen_run_matches
        )

    @given(samples=mistral_batches)
    def test_default_collator_on_mistral_template(self, samples):
        """Mistral template (derived [/INST] marker): runs are the trimmed answers plus </s>."""
        proc = processor("llava_next_mistral")
        collator = vc.DefaultCollator(processor=proc)
        batch = collator(samples)
        assert_runs_match(
            batch, samples, collator.last_report.kept, proc.tokenizer, mistral_run_matches
        )

    @given(samples=qwen_batches)
    def test_default_collator_on_qwen(self, samples):
        """The default collator (one apply_chat_template call) labels Qwen batches the same way."""
        proc = processor("qwen2_5_vl")
        collator = vc.DefaultCollator(processor=proc)
        batch = collator(samples)
        assert_runs_match(
            batch, samples, collator.last_report.kept, proc.tokenizer, qwen_run_matches
        )


class TestShiftAndPadding:
    @given(samples=qwen_batches, left=st.booleans())
    def test_every_label_is_the_next_input_token(self, samples, left):
        """With the default shift, labels[:, t] (where trained) is the input token at t + 1."""
        proc = processor("qwen2_5_vl")
        side = "left" if left else "right"
        shifted = vc.Qwen25VLCollator(processor=proc, padding_side=side)(samples)
        full = vc.Qwen25VLCollator(processor=proc, padding_side=side, shift_labels=False)(samples)
        assert full["input_ids"][:, :-1].tolist() == shifted["input_ids"].tolist()
        trained = shifted["labels"] != IGNORE_INDEX
        next_tokens = full["input_ids"][:, 1:]
        assert next_tokens[trained].tolist() == shifted["labels"][trained].tolist()

    @given(samples=qwen_batches, shift=st.booleans(), left=st.booleans())
    def test_padding_is_never_trained(self, samples, shift, left):
        """No label ever targets a padding position, on either padding side."""
        proc = processor("qwen2_5_vl")
        side = "left" if left else "right"
        full = vc.Qwen25VLCollator(processor=proc, padding_side=side, shift_labels=False)(samples)
        batch = vc.Qwen25VLCollator(processor=proc, padding_side=side, shift_labels=shift)(samples)
        target_is_padding = (
            full["attention_mask"][:, 1:] == 0 if shift else full["attention_mask"] == 0
        )
        assert (batch["labels"][target_is_padding] == IGNORE_INDEX).all()

    @given(
        samples=qwen_batches,
        multiple=st.one_of(st.none(), st.integers(1, 16)),
        shift=st.booleans(),
        max_pad=st.booleans(),
    )
    def test_shapes_agree(self, samples, multiple, shift, max_pad):
        """input_ids, attention_mask and labels share [B, L]; L honours the padding options."""
        proc = processor("qwen2_5_vl")
        options = {"pad_to_multiple_of": multiple, "shift_labels": shift}
        if max_pad:
            options.update(max_length=2048, padding="max_length")
        collator = vc.Qwen25VLCollator(processor=proc, **options)
        batch = collator(samples)
        rows = len(collator.last_report.kept)
        shape = batch["input_ids"].shape
        assert rows == shape[0]
        assert shape == batch["attention_mask"].shape == batch["labels"].shape
        if max_pad:
            assert (2047 if shift else 2048) == shape[1] if multiple is None else shape[1] >= 2047
        if multiple:
            assert 0 == shape[1] % multiple
        images = [
            sum(
                1
                for m in s["conversation"]
                if isinstance(m["content"], list)
                for i in m["content"]
                if i["type"] == "image"
            )
            for s in samples
        ]
        if any(images):
            assert images == batch["n_images_per_sample"].tolist()
            grid = batch["image_grid_thw"]
            assert sum(images) == grid.shape[0]
            assert int((grid.prod(dim=1)).sum()) == batch["pixel_values"].shape[0]


class TestInputsAndDeterminism:
    @given(samples=examples(max_size=3))
    def test_input_is_not_mutated(self, samples):
        """The caller's samples, images included, are unchanged after collating."""
        before = snapshot(samples)
        vc.Qwen25VLCollator(processor=processor("qwen2_5_vl"))(samples)
        assert before == snapshot(samples)

    @given(samples=qwen_batches)
    def test_rows_do_not_depend_on_batch_mates(self, samples):
        """A sample's labelled tokens are the same alone as in a batch."""
        proc = processor("qwen2_5_vl")
        together = label_runs(vc.Qwen25VLCollator(processor=proc)(samples)["labels"])
        alone = [
            label_runs(vc.Qwen25VLCollator(processor=proc)([sample])["labels"])[0]
            for sample in samples
        ]
        assert alone == together

    @given(samples=qwen_batches)
    def test_collator_survives_pickling(self, samples):
        """A pickled collator (as sent to spawn workers) gives the same batch."""
        collator, clone = pickled_pair()
        assert collator(samples)["labels"].tolist() == clone(samples)["labels"].tolist()


class FailingStrategy(vc.LabelStrategy):
    def build(self, input_ids, conversations, processor):
        raise vc.LabelStrategyError("never applies")


class TestStrategiesAgree:
    @given(samples=qwen_batches)
    def test_first_of_equals_its_first_succeeding_member(self, samples):
        """FirstOf(failing, ImStart, Derived) labels exactly like ImStartMarker alone."""
        proc = processor("qwen2_5_vl")
        composed = vc.Qwen25VLCollator(
            processor=proc,
            label_strategy=vc.FirstOf(
                FailingStrategy(), vc.ImStartMarker(), vc.DerivedTemplateMarker()
            ),
        )(samples)
        alone = vc.Qwen25VLCollator(processor=proc, label_strategy=vc.ImStartMarker())(samples)
        assert alone["labels"].tolist() == composed["labels"].tolist()

    @given(samples=mistral_batches)
    def test_first_of_skips_inapplicable_chatml_on_mistral(self, samples):
        """On Mistral, ImStartMarker does not apply and FirstOf falls through to the derived marker."""
        proc = processor("llava_next_mistral")
        composed = vc.DefaultCollator(
            processor=proc,
            label_strategy=vc.FirstOf(vc.ImStartMarker(), vc.DerivedTemplateMarker()),
        )(samples)
        alone = vc.DefaultCollator(processor=proc, label_strategy=vc.DerivedTemplateMarker())(
            samples
        )
        assert alone["labels"].tolist() == composed["labels"].tolist()

    @given(samples=qwen_batches)
    def test_derived_marker_equals_chatml_marker_on_qwen(self, samples):
        """Deriving markers from the Qwen template labels exactly like reading ChatML ids."""
        proc = processor("qwen2_5_vl")
        derived = vc.Qwen25VLCollator(processor=proc, label_strategy=vc.DerivedTemplateMarker())(
            samples
        )
        chatml = vc.Qwen25VLCollator(processor=proc, label_strategy=vc.ImStartMarker())(samples)
        assert chatml["labels"].tolist() == derived["labels"].tolist()

    @given(samples=qwen_batches)
    def test_vectorised_scan_equals_naive_scan_on_real_batches(self, samples):
        """On real Qwen token ids the vectorised scan equals the per-token loop."""
        proc = processor("qwen2_5_vl")
        ids = vc.Qwen25VLCollator(processor=proc, shift_labels=False)(samples)["input_ids"]
        markers = vc.ImStartMarker().markers(proc)
        assert (
            naive_assistant_spans(ids, markers).tolist() == assistant_spans(ids, markers).tolist()
        )


class TestMaxLength:
    @given(samples=qwen_batches, max_length=st.integers(8, 160))
    def test_drop_keeps_only_whole_samples_that_fit(self, samples, max_length):
        """overlong='drop': kept rows fit and are complete; every other sample is reported."""
        proc = processor("qwen2_5_vl")
        collator = vc.Qwen25VLCollator(processor=proc, max_length=max_length, overlong="drop")
        try:
            batch = collator(samples)
        except vc.BatchError:
            event("every sample was dropped")
            return  # every sample was too long, and the error said so
        report = collator.last_report
        assert sorted(report.kept + [d.index for d in report.dropped]) == list(range(len(samples)))
        assert all(d.reason == "overlong" for d in report.dropped)
        assert (batch["attention_mask"].sum(dim=1) <= max_length).all()
        assert_runs_match(batch, samples, report.kept, proc.tokenizer, qwen_run_matches)

    @given(samples=examples(max_size=3, with_images=False), max_length=st.integers(24, 120))
    def test_truncate_keeps_a_prefix_of_each_sample(self, samples, max_length):
        """overlong='truncate': each row is the first max_length tokens of its sample, labels included."""
        proc = processor("qwen2_5_vl")
        collator = vc.Qwen25VLCollator(
            processor=proc,
            max_length=max_length,
            overlong="truncate",
            empty_labels="drop",
            shift_labels=False,
        )
        try:
            batch = collator(samples)
        except vc.BatchError:
            event("every sample was dropped")
            return
        assert batch["input_ids"].shape[1] <= max_length
        for row, index in enumerate(collator.last_report.kept):
            alone = vc.Qwen25VLCollator(processor=proc, shift_labels=False)([samples[index]])
            length = int(batch["attention_mask"][row].sum())
            assert (
                alone["input_ids"][0, :length].tolist() == batch["input_ids"][row, :length].tolist()
            )
            assert alone["labels"][0, :length].tolist() == batch["labels"][row, :length].tolist()

    @given(samples=qwen_batches)
    def test_media_placeholders_are_never_trained(self, samples):
        """No image placeholder token carries a label (labels are unshifted here)."""
        proc = processor("qwen2_5_vl")
        batch = vc.Qwen25VLCollator(processor=proc, shift_labels=False)(samples)
        placeholder = torch.isin(batch["input_ids"], token_ids(proc.tokenizer, QWEN_VISION_TOKENS))
        assert (batch["labels"][placeholder] == IGNORE_INDEX).all()
