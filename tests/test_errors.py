"""Errors find the sample: through pickling, DataLoader workers, and processor failures."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch._utils import ExceptionWrapper
from torch.utils.data import DataLoader

import vlm_collate as vc
from vlm_collate import errors

_SAMPLE_ERRORS = [
    errors.SampleError,
    errors.SampleTypeError,
    errors.MediaError,
    errors.SpecialTokenError,
    errors.EmptyLabelsError,
    errors.OverlongError,
    errors.TemplateError,
    errors.ProcessorError,
]
_OTHER_ERRORS = [
    errors.BatchError,
    errors.RetriesExhaustedError,
    errors.LabelStrategyError,
    errors.ConfigurationError,
    errors.MissingDependencyError,
]


def _pretokenized(ids: list[int], mask: list[int] | None = None) -> dict:
    return {
        "input_ids": torch.tensor(ids),
        "attention_mask": torch.tensor(mask if mask is not None else [1] * len(ids)),
        "labels": torch.tensor(ids),
    }


def _image_exchange(image) -> dict:
    return {
        "conversation": [
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}],
            },
            {"role": "assistant", "content": "A box."},
        ]
    }


class TestPickling:
    @pytest.mark.parametrize("cls", _SAMPLE_ERRORS)
    def test_sample_errors_keep_their_fields(self, cls):
        """A pickled SampleError keeps its class, detail, message and all three indices."""
        error = cls("bad thing", sample_index=3, message_index=2, item_index=1)
        restored = pickle.loads(pickle.dumps(error))
        assert (cls, "sample 3, message 2, item 1: bad thing", "bad thing", 3, 2, 1) == (
            type(restored),
            str(restored),
            restored.detail,
            restored.sample_index,
            restored.message_index,
            restored.item_index,
        )

    @pytest.mark.parametrize("cls", _OTHER_ERRORS)
    def test_other_errors_keep_their_message(self, cls):
        """The batch-level errors pickle with their class and message."""
        restored = pickle.loads(pickle.dumps(cls("the batch is empty")))
        assert (cls, "the batch is empty") == (type(restored), str(restored))


class TestRelocated:
    def test_places_the_error_on_the_callers_sample(self):
        """relocated keeps class, detail, message and item, and takes the caller's sample index."""
        inner = errors.MediaError("unreadable", sample_index=0, message_index=1, item_index=2)
        moved = errors.relocated(inner, 7)
        assert (errors.MediaError, "sample 7, message 1, item 2: unreadable") == (
            type(moved),
            str(moved),
        )

    def test_replaces_the_detail(self):
        """An explicit detail replaces the error's own."""
        moved = errors.relocated(errors.SampleError("bad", sample_index=0), 4, "bad (line 9)")
        assert ("sample 4: bad (line 9)", 4) == (str(moved), moved.sample_index)


class TestWorkerErrors:
    def test_reraised_worker_error_keeps_its_location(self):
        """PyTorch's worker re-raise (type plus traceback text) keeps sample, message and item."""
        try:
            try:
                raise OSError("disk says no")
            except OSError as cause:
                raise errors.MediaError("unreadable", sample_index=5, message_index=1) from cause
        except errors.MediaError:
            wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
        with pytest.raises(errors.MediaError) as caught:
            wrapper.reraise()
        assert (5, 1, None, "unreadable") == (
            caught.value.sample_index,
            caught.value.message_index,
            caught.value.item_index,
            caught.value.detail,
        )
        assert "DataLoader worker process 0" in str(caught.value)

    def test_text_that_merely_starts_alike_is_left_alone(self):
        """An ordinary message is never parsed for a location."""
        error = errors.SampleError("Caught up: sample 3: nothing")
        assert (None, "Caught up: sample 3: nothing") == (error.sample_index, str(error))

    @pytest.mark.parametrize("context", ["fork", "spawn"])
    def test_dataloader_worker_surfaces_the_typed_error(self, context):
        """A bad pre-tokenized row in a worker (fork and spawn) raises SampleError naming it."""
        rows = [_pretokenized([1, 2, 3]), _pretokenized([4, 5], mask=[1, 7])]
        loader = DataLoader(
            rows,
            batch_size=2,
            num_workers=1,
            multiprocessing_context=context,
            collate_fn=vc.PreTokenizedCollator(),
        )
        with pytest.raises(
            errors.SampleError, match="'attention_mask' must hold 0 and 1"
        ) as caught:
            next(iter(loader))
        assert 1 == caught.value.sample_index

    def test_dataloader_worker_processor_culprit(self, qwen_processor):
        """Under fork, a chat collator's processor failure reaches the main process with its sample."""
        good = Image.new("RGB", (56, 56), "red")
        rows = [_image_exchange(good), _image_exchange(np.zeros((3,), dtype=np.uint8))]
        loader = DataLoader(
            rows,
            batch_size=2,
            num_workers=1,
            multiprocessing_context="fork",
            collate_fn=vc.Qwen25VLCollator(processor=qwen_processor),
        )
        with pytest.raises(errors.ProcessorError) as caught:
            next(iter(loader))
        assert 1 == caught.value.sample_index


class TestProcessorCulprit:
    def test_failing_sample_is_named(self, qwen_processor):
        """A processor failure caused by one sample names that sample (found by re-running alone)."""
        good = Image.new("RGB", (56, 56), "red")
        bad = np.zeros((2, 2, 2, 2, 2), dtype=np.uint8)  # no image processor takes a 5-D array
        samples = [_image_exchange(good), _image_exchange(good), _image_exchange(bad)]
        with pytest.raises(
            errors.ProcessorError, match="^sample 2: the processor failed"
        ) as caught:
            vc.Qwen25VLCollator(processor=qwen_processor)(samples)
        assert 2 == caught.value.sample_index
        assert caught.value.__cause__ is not None  # the batch's own failure is chained

    def test_single_sample_batch_is_named(self, qwen_processor):
        """A one-sample batch that fails names its sample without re-running anything."""
        sample = _image_exchange(np.zeros((3,), dtype=np.uint8))
        with pytest.raises(errors.ProcessorError) as caught:
            vc.Qwen25VLCollator(processor=qwen_processor)([sample])
        assert 0 == caught.value.sample_index
