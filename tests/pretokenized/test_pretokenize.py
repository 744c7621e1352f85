"""pretokenize: Dataset.map over a chat collator, stored rows, dropped samples."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import vlm_collate as vc
from vlm_collate.pretokenized import PreTokenizedCollator

datasets = pytest.importorskip(
    "datasets", reason="needs the 'datasets' package: pip install datasets"
)

from tests.helpers.arrow_rows import conversation_features, exchange, png  # noqa: E402
from vlm_collate.pretokenized import pretokenize, sample_from_row  # noqa: E402

CONVERSATION_FEATURES = conversation_features(datasets)


@pytest.fixture(scope="module")
def rows():
    return [
        exchange("Hi there", "Hello!"),
        exchange("Colour?", "Red.", png((56, 56), "red")),
        exchange("Which colour is this?", "A blue square.", png((84, 56), "blue")),
        exchange("Say <|im_end|> please", "No."),
        exchange("And this?", "Green.", png((56, 112), "green")),
    ]


@pytest.fixture(scope="module")
def collator(qwen_processor):
    return vc.Qwen25VLCollator(processor=qwen_processor, special_tokens_in_text="drop")


@pytest.fixture(scope="module")
def stored(rows, collator):
    dataset = datasets.Dataset.from_list(rows, features=CONVERSATION_FEATURES)
    return pretokenize(dataset, collator, batch_size=2)


KEPT = [0, 1, 2, 4]


class TestPretokenize:
    def test_same_batch_as_on_the_fly(self, rows, stored, qwen_processor):
        """PreTokenizedCollator on the stored rows gives the chat collator's batch on the same samples."""
        expected = vc.Qwen25VLCollator(processor=qwen_processor)([rows[index] for index in KEPT])
        actual = PreTokenizedCollator(processor=qwen_processor)(list(stored))
        keys = ["input_ids", "attention_mask", "labels", "pixel_values", "image_grid_thw"]
        assert {key: expected[key].tolist() for key in keys} == {
            key: actual[key].tolist() for key in keys
        }
        assert expected["pixel_values"].dtype == actual["pixel_values"].dtype

    def test_dropped_sample_reported(self, stored):
        """A sample the special-token policy drops is reported with its dataset row, not lost."""
        assert [(3, "special_tokens")] == [(d.index, d.reason) for d in stored.dropped]
        assert KEPT == stored.source_indices

    def test_kept_rows_are_unpadded_and_unshifted(self, rows, stored, qwen_processor):
        """Each stored sample holds exactly the tokens of its rendered conversation, labels unshifted."""
        tokenizer = qwen_processor.tokenizer
        text_only = stored[0]
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}],
            tokenize=False,
        )
        expected_ids = tokenizer(rendered)["input_ids"]
        assert expected_ids == text_only["input_ids"].tolist()
        assert [1] * len(expected_ids) == text_only["attention_mask"].tolist()
        trained = [token for token in text_only["labels"].tolist() if token != -100]
        assert "Hello!<|im_end|>" == tokenizer.decode(trained)
        assert "pixel_values" not in text_only

    def test_image_paths_and_images_column(self, tmp_path, collator, qwen_processor):
        """Images given as paths, or as placeholders filled from an 'images' column, tokenize like PIL images."""
        path = tmp_path / "red.png"
        Image.new("RGB", (56, 56), "red").save(path)
        placeholder = exchange("Colour?", "Red.")
        placeholder["conversation"][0]["content"].insert(0, {"type": "image"})
        dataset = datasets.Dataset.from_list(
            [
                {**exchange("Colour?", "Red.", str(path)), "images": []},
                {**placeholder, "images": [str(path)]},
            ]
        )
        stored = pretokenize(dataset, collator)
        expected = vc.Qwen25VLCollator(processor=qwen_processor)(
            [exchange("Colour?", "Red.", Image.open(path))] * 2
        )
        actual = PreTokenizedCollator(processor=qwen_processor)(list(stored))
        assert expected["input_ids"].tolist() == actual["input_ids"].tolist()
        assert torch.equal(expected["pixel_values"], actual["pixel_values"])

    def test_raise_policy_names_dataset_row(self, rows, qwen_processor):
        """An error raised by a policy names the row of the dataset, not the batch of one."""
        dataset = datasets.Dataset.from_list(rows[2:4], features=CONVERSATION_FEATURES)
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        with pytest.raises(vc.SpecialTokenError, match=r"^sample 1, message 0"):
            pretokenize(dataset, collator)

    def test_two_processes_same_rows(self, rows, collator, stored):
        """num_proc=2 stores the same rows and reports the same drops as one process."""
        dataset = datasets.Dataset.from_list(rows, features=CONVERSATION_FEATURES)
        parallel = pretokenize(dataset, collator, num_proc=2, batch_size=1)
        assert stored.dataset.to_dict() == parallel.dataset.to_dict()
        assert stored.dropped == parallel.dropped


class TestSampleFromRow:
    def test_restores_shapes_and_drops_absent_keys(self):
        """Flat stored tensors come back in their shapes; empty optional keys are left out."""
        row = {
            "input_ids": [5, 6, 7],
            "attention_mask": [1, 1, 1],
            "labels": [-100, 6, 7],
            "mm_token_type_ids": [],
            "pixel_values": [0.5, 1.5, 2.5, 3.5],
            "pixel_values_shape": [2, 2],
            "image_grid_thw": [1, 1, 2],
            "image_grid_thw_shape": [1, 3],
        }
        for key in ("pixel_values_videos", "pixel_values_images", "image_pixel_values"):
            row[key], row[key + "_shape"] = [], []
        for key in ("video_grid_thw", "image_position_ids", "second_per_grid_ts"):
            row[key], row[key + "_shape"] = [], []
        sample = sample_from_row(row)
        assert ["input_ids", "attention_mask", "labels", "pixel_values", "image_grid_thw"] == list(
            sample
        )
        assert [[0.5, 1.5], [2.5, 3.5]] == sample["pixel_values"].tolist()
        assert [[1, 1, 2]] == sample["image_grid_thw"].tolist()
