"""The public surface: exported names, the registry, subclassing, DataLoader workers."""

from __future__ import annotations

import inspect
import logging

import attrs
import pytest
import torch

import vlm_collate as vc
from vlm_collate.testing import build_processor, decoded_label_runs

DESIGN_NAMES = {
    "BaseCollator",
    "LabelStrategy",
    "MediaStrategy",
    "ImStartMarker",
    "DerivedTemplateMarker",
    "LegacyBPEMatch",
    "FirstOf",
    "DefaultCollator",
    "Qwen25VLCollator",
    "collator_for",
    "register_collator",
    "IGNORE_INDEX",
    "VLMCollateError",
}


class TestExportedMembers:
    def test_all_is_sorted_and_importable(self):
        """__all__ is sorted and every name in it exists."""
        assert sorted(vc.__all__) == vc.__all__
        assert all(hasattr(vc, name) for name in vc.__all__)

    def test_design_names_are_public(self):
        """The names DESIGN.md fixes are exported."""
        assert DESIGN_NAMES <= set(vc.__all__)

    def test_ignore_index(self):
        """IGNORE_INDEX is PyTorch's cross-entropy default."""
        assert torch.nn.CrossEntropyLoss().ignore_index == vc.IGNORE_INDEX

    def test_errors_subclass_builtins(self):
        """Every error is a VLMCollateError and a fitting built-in."""
        assert issubclass(vc.SampleTypeError, TypeError) and issubclass(
            vc.SampleTypeError, vc.VLMCollateError
        )
        for error in (
            vc.SampleError,
            vc.MediaError,
            vc.EmptyLabelsError,
            vc.BatchError,
            vc.ConfigurationError,
        ):
            assert issubclass(error, ValueError) and issubclass(error, vc.VLMCollateError)
        assert issubclass(vc.MissingDependencyError, ImportError)


class TestRegistry:
    @pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl", "qwen3_vl"])
    def test_qwen_processors_get_the_qwen_collator(self, family):
        """Qwen2-VL, Qwen2.5-VL and Qwen3-VL processors map to Qwen25VLCollator."""
        assert isinstance(vc.collator_for(build_processor(family)), vc.Qwen25VLCollator)

    def test_unknown_processor_falls_back_with_one_log_line(self, mistral_processor, caplog):
        """An unregistered processor gets DefaultCollator and a log line naming it."""
        with caplog.at_level(logging.INFO, logger="vlm_collate.registry"):
            collator = vc.collator_for(mistral_processor)
        assert isinstance(collator, vc.DefaultCollator)
        assert 1 == sum("LlavaNextProcessor" in record.getMessage() for record in caplog.records)

    def test_options_are_passed_through(self, qwen_processor):
        """collator_for forwards keyword options."""
        assert 512 == vc.collator_for(qwen_processor, max_length=512).max_length

    def test_registering_a_subclass(self, qwen_processor):
        """A registered subclass is chosen for its processor class name, and so are subclasses of it."""

        class MyProcessor(type(qwen_processor)):
            pass

        @vc.register_collator("MyProcessor")
        @attrs.define(kw_only=True)
        class MyCollator(vc.Qwen25VLCollator):
            pass

        processor = build_processor("qwen2_5_vl")
        processor.__class__ = MyProcessor
        assert isinstance(vc.collator_for(processor), MyCollator)


class TestSubclassing:
    def test_base_is_abstract(self, qwen_processor):
        """BaseCollator is abstract, and instantiating it says what a family must implement."""
        assert inspect.isabstract(vc.BaseCollator)
        with pytest.raises(
            TypeError,
            match="BaseCollator is abstract: subclass it and implement "
            "default_label_strategy, default_media_strategy",
        ):
            vc.BaseCollator(processor=qwen_processor)

    def test_subclass_missing_a_strategy_is_abstract(self, qwen_processor):
        """A subclass that names only its label strategy cannot be instantiated."""

        @attrs.define(kw_only=True)
        class Half(vc.BaseCollator):
            def default_label_strategy(self):
                return vc.ImStartMarker()

        with pytest.raises(TypeError, match="Half is abstract.*default_media_strategy"):
            Half(processor=qwen_processor)

    def test_minimal_subclass_trains_the_answer(self, qwen_processor):
        """Two methods make a working family."""

        @attrs.define(kw_only=True)
        class Minimal(vc.BaseCollator):
            def default_label_strategy(self):
                return vc.ImStartMarker()

            def default_media_strategy(self):
                return vc.PlainMedia()

        batch = Minimal(processor=qwen_processor)([sample(0)])
        assert [["Answer 0<|im_end|>"]] == decoded_label_runs(
            batch["labels"], qwen_processor.tokenizer
        )

    def test_strategies_are_type_checked(self, qwen_processor):
        """A strategy of the wrong type is refused with its name."""
        with pytest.raises(vc.ConfigurationError, match="'label_strategy' must be a LabelStrategy"):
            vc.Qwen25VLCollator(processor=qwen_processor, label_strategy="ImStartMarker")

    def test_hook_override(self, qwen_processor):
        """A family overriding only the hook step changes the batch before labels are built."""

        @attrs.define(kw_only=True)
        class Tagged(vc.Qwen25VLCollator):
            def hook(self, batch, samples):
                batch["sample_ids"] = torch.tensor([sample.index for sample in samples])
                return batch

        samples = [
            {
                "conversation": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                ]
            }
        ] * 2
        assert [0, 1] == Tagged(processor=qwen_processor)(samples)["sample_ids"].tolist()


def sample(index: int) -> dict:
    return {
        "conversation": [
            {"role": "user", "content": f"Question {index}"},
            {"role": "assistant", "content": f"Answer {index}"},
        ]
    }


class TestDataLoader:
    @pytest.mark.parametrize("context", ["spawn", "fork"])
    def test_workers(self, qwen_processor, context):
        """The collator runs in two DataLoader workers (spawn and fork) with correct labels."""
        data = [sample(index) for index in range(8)]
        loader = torch.utils.data.DataLoader(
            data,
            batch_size=4,
            collate_fn=vc.Qwen25VLCollator(processor=qwen_processor),
            num_workers=2,
            multiprocessing_context=context,
        )
        runs = [
            run
            for batch in loader
            for run in decoded_label_runs(batch["labels"], qwen_processor.tokenizer)
        ]
        assert [[f"Answer {index}<|im_end|>"] for index in range(8)] == runs
