"""Parquet shards: writer, manifest, streaming reader, and the checks that refuse foreign shards."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

import vlm_collate as vc
from tests.helpers.arrow_rows import conversation_features, mixed_rows
from vlm_collate.pretokenized import ParquetShards, PreTokenizedCollator, pack, write_shards

datasets = pytest.importorskip(
    "datasets", reason="needs the 'datasets' package: pip install datasets"
)
pq = pytest.importorskip(
    "pyarrow.parquet", reason="needs the 'pyarrow' package: pip install pyarrow"
)

from vlm_collate.pretokenized import pretokenize  # noqa: E402

KEPT = [0, 1, 2, 4]
KEYS = ["input_ids", "attention_mask", "labels", "pixel_values", "image_grid_thw"]


def batch_lists(batch):
    """The compared entries of a batch as lists, pixel values included."""
    return {key: batch[key].tolist() for key in KEYS}


@pytest.fixture(scope="module")
def rows():
    return mixed_rows()


@pytest.fixture(scope="module")
def collator(qwen_processor):
    return vc.Qwen25VLCollator(processor=qwen_processor, special_tokens_in_text="drop")


@pytest.fixture(scope="module")
def stored(rows, collator):
    dataset = datasets.Dataset.from_list(rows, features=conversation_features(datasets))
    return pretokenize(dataset, collator, batch_size=2)


@pytest.fixture(scope="module")
def directory(tmp_path_factory, stored, collator):
    path = tmp_path_factory.mktemp("shards")
    write_shards(stored, path, collator=collator, rows_per_shard=2, row_group_size=1)
    return path


@pytest.fixture()
def reader_collator(qwen_processor):
    return PreTokenizedCollator(processor=qwen_processor)


class TestParquetShards:
    def test_same_batch_as_on_the_fly(self, rows, directory, qwen_processor, reader_collator):
        """Samples streamed from the shards pad into exactly the chat collator's batch."""
        expected = vc.Qwen25VLCollator(processor=qwen_processor)([rows[i] for i in KEPT])
        shards = ParquetShards.open(directory, collator=reader_collator)
        actual = reader_collator(list(shards))
        assert batch_lists(expected) == batch_lists(actual)
        assert expected["pixel_values"].dtype == actual["pixel_values"].dtype

    def test_from_parquet_with_chat_collator(self, directory, collator, stored):
        """PreTokenizedDataset.from_parquet accepts the chat collator that made the shards."""
        shards = vc.PreTokenizedDataset.from_parquet(directory, collator=collator)
        assert KEPT == shards.source_indices
        assert len(stored) == len(shards)

    def test_streams_into_pack(self, directory, stored, reader_collator):
        """pack() on the stream gives the packs it gives on the in-memory rows."""
        shards = ParquetShards.open(directory, collator=reader_collator)
        expected, actual = pack(list(stored), pack_size=300), pack(shards, pack_size=300)
        assert expected.documents == actual.documents
        for want, got in zip(expected.packs, actual.packs, strict=True):
            assert {k: v.tolist() for k, v in want.items() if isinstance(v, torch.Tensor)} == {
                k: v.tolist() for k, v in got.items() if isinstance(v, torch.Tensor)
            }

    def test_dataloader_batches(self, rows, directory, qwen_processor, reader_collator):
        """A DataLoader over the shards with the pre-tokenized collator gives on-the-fly batches."""
        shards = ParquetShards.open(directory, collator=reader_collator)
        loader = torch.utils.data.DataLoader(shards, batch_size=2, collate_fn=reader_collator)
        chat = vc.Qwen25VLCollator(processor=qwen_processor)
        for batch, chunk in zip(loader, [KEPT[:2], KEPT[2:]], strict=True):
            assert batch_lists(chat([rows[i] for i in chunk])) == batch_lists(batch)

    def test_ranks_split_the_shards(self, directory, reader_collator):
        """Two ranks read disjoint shards that together hold every kept sample."""
        first, second = (
            ParquetShards.open(directory, collator=reader_collator, rank=rank, world_size=2)
            for rank in (0, 1)
        )
        assert [0, 1, 4] == first.source_indices
        assert [2] == second.source_indices

    def test_never_unpickles(self, directory, reader_collator, monkeypatch):
        """Opening and reading the shards never calls pickle."""

        def refuse(*args, **kwargs):
            raise AssertionError("pickle was called while reading shards")

        for name in ("loads", "load", "Unpickler"):
            monkeypatch.setattr(pickle, name, refuse)
        samples = list(ParquetShards.open(directory, collator=reader_collator))
        assert len(KEPT) == len(samples)


class TestManifest:
    def test_counts_and_dropped_rows(self, directory, rows, qwen_processor):
        """The manifest counts the tokens the collator produces and names the dropped row."""
        unshifted = vc.Qwen25VLCollator(processor=qwen_processor, shift_labels=False)
        batch = unshifted([rows[i] for i in KEPT])
        manifest = json.loads((directory / "manifest.json").read_text())
        assert len(KEPT) == manifest["rows"]
        assert int(batch["attention_mask"].sum()) == manifest["tokens"]
        assert int((batch["labels"] != vc.IGNORE_INDEX).sum()) == manifest["trained_tokens"]
        assert [[3]] == [
            [item["index"] for item in shard["dropped"]]
            for shard in manifest["shards"]
            if shard["dropped"]
        ]
        assert [2, 1, 1] == [shard["rows"] for shard in manifest["shards"]]
        assert manifest["complete"]

    def test_describes_collator_and_processor(self, directory, qwen_processor):
        """The manifest names the collator, processor, vocabulary size and label policy."""
        manifest = json.loads((directory / "manifest.json").read_text())
        assert "vlm_collate.Qwen25VLCollator" == manifest["collator"]["class"]  # the public path
        assert "drop" == manifest["collator"]["options"]["special_tokens_in_text"]
        assert type(qwen_processor).__name__ == manifest["processor"]["class"]
        assert len(qwen_processor.tokenizer) == manifest["vocab_size"]
        assert manifest["tokenizer_hash"].startswith("sha256:")
        assert "all" == manifest["label_policy"]["turns"]
        assert vc.__version__ == manifest["library_version"]

    def test_dropped_samples(self, directory, reader_collator):
        """The reader reports the dropped row with its id and reason."""
        shards = ParquetShards.open(directory, collator=reader_collator)
        assert [(3, "special_tokens")] == [(item.index, item.reason) for item in shards.dropped]

    def test_pixels_stored_as_flat_float_bytes(self, directory, stored):
        """Pixel values are raw float32 bytes beside an int64 shape column, row groups as asked."""
        import numpy as np

        handle = pq.ParquetFile(directory / "shard-00000.parquet")
        assert "large_binary" == str(handle.schema_arrow.field("pixel_values").type)
        assert "list<element: int64>" == str(
            handle.schema_arrow.field("pixel_values_shape").type
        ).replace("item", "element")
        assert 2 == handle.metadata.num_row_groups
        manifest = json.loads((directory / "manifest.json").read_text())
        dtype = np.dtype(manifest["dtypes"]["pixel_values"])
        table = handle.read()
        raw = np.frombuffer(table["pixel_values"][1].as_py(), dtype=dtype)
        shape = table["pixel_values_shape"][1].as_py()
        assert stored[1]["pixel_values"].tolist() == raw.reshape(shape).tolist()


class TestRefusals:
    def test_other_tokenizer(self, directory, mistral_processor):
        """Shards made with another vocabulary are refused, naming what differs."""
        other = PreTokenizedCollator(processor=mistral_processor)
        with pytest.raises(vc.ConfigurationError, match=r"vocab_size: shards have \d+"):
            ParquetShards.open(directory, collator=other)

    def test_changed_chat_template(self, directory, qwen_processor):
        """The same vocabulary with another chat template gives another tokenizer hash."""
        from vlm_collate.testing import build_processor

        changed = build_processor("qwen2_5_vl")
        changed.chat_template = qwen_processor.chat_template + "{# changed #}"
        with pytest.raises(vc.ConfigurationError, match="tokenizer_hash"):
            ParquetShards.open(directory, collator=PreTokenizedCollator(processor=changed))

    def test_other_collator_class(self, directory, qwen_processor):
        """A chat collator of another class is refused."""
        other = vc.DefaultCollator(processor=qwen_processor, special_tokens_in_text="drop")
        with pytest.raises(vc.ConfigurationError, match="collator: shards have"):
            ParquetShards.open(directory, collator=other)

    def test_pretokenized_collator_needs_processor(self, directory):
        """Without a processor the shards cannot be checked, so they are refused."""
        with pytest.raises(vc.ConfigurationError, match="has no 'processor'"):
            ParquetShards.open(directory, collator=PreTokenizedCollator())

    def test_foreign_columns(self, tmp_path, stored, collator, reader_collator):
        """A shard whose columns are not the stored-row columns is refused before reading."""
        import pyarrow as pa

        write_shards(stored, tmp_path, collator=collator)
        pq.write_table(pa.table({"input_ids": pa.array([b"x"])}), tmp_path / "shard-00000.parquet")
        with pytest.raises(vc.ConfigurationError, match="does not have the stored-row columns"):
            ParquetShards.open(tmp_path, collator=reader_collator)

    def test_unfinished_run(self, tmp_path, stored, collator, reader_collator):
        """An unfinished run is refused unless allow_incomplete=True reads its complete shards."""
        write_shards(stored, tmp_path, collator=collator, rows_per_shard=2)
        manifest = json.loads((tmp_path / "manifest.json").read_text())
        manifest["complete"] = False
        (tmp_path / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(vc.ConfigurationError, match="unfinished run"):
            ParquetShards.open(tmp_path, collator=reader_collator)
        shards = ParquetShards.open(tmp_path, collator=reader_collator, allow_incomplete=True)
        assert KEPT == shards.source_indices
