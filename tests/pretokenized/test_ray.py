"""pretokenize_ray: a real local Ray runtime stores the rows the datasets path stores."""

from __future__ import annotations

import functools
import os

import pytest

import vlm_collate as vc
from tests.helpers.arrow_rows import conversation_features, mixed_rows
from vlm_collate.pretokenized import (
    ParquetShards,
    PreTokenizedCollator,
    pretokenize_ray,
    sample_from_row,
    write_shards,
)

datasets = pytest.importorskip(
    "datasets", reason="needs the 'datasets' package: pip install datasets"
)
ray = pytest.importorskip("ray", reason="needs Ray Data: pip install 'vlm-collate[ray]'")
pa = pytest.importorskip("pyarrow", reason="needs the 'pyarrow' package: pip install pyarrow")

from vlm_collate.pretokenized import pretokenize  # noqa: E402

KEYS = ["input_ids", "attention_mask", "labels", "pixel_values", "image_grid_thw"]


@pytest.fixture(scope="module", autouse=True)
def runtime():
    """One small local Ray runtime for the module: two CPUs, no dashboard."""
    # Ray kills workers when the whole machine nears its memory limit, which other
    # jobs on a shared test machine can cause; the tokenizing itself needs little.
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        object_store_memory=80 * 1024 * 1024,
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    yield
    ray.shutdown()


def qwen_collator(special_tokens_in_text="drop"):
    """A factory: the actor builds the processor itself instead of receiving it."""
    from vlm_collate.testing import build_processor

    return vc.Qwen25VLCollator(
        processor=build_processor("qwen2_5_vl"), special_tokens_in_text=special_tokens_in_text
    )


@pytest.fixture(scope="module")
def hf_dataset():
    return datasets.Dataset.from_list(mixed_rows(), features=conversation_features(datasets))


@pytest.fixture(scope="module")
def collator(qwen_processor):
    return vc.Qwen25VLCollator(processor=qwen_processor, special_tokens_in_text="drop")


@pytest.fixture(scope="module")
def expected(hf_dataset, collator):
    return pretokenize(hf_dataset, collator, batch_size=2)


@pytest.fixture(scope="module")
def ray_rows(hf_dataset, collator):
    rows = pretokenize_ray(
        from_datasets(hf_dataset), collator, index_column="row_id", batch_size=2, num_actors=1
    )
    table = pa.concat_tables(list(rows.iter_batches(batch_format="pyarrow", batch_size=None)))
    return table.sort_by("source_index")


def from_datasets(dataset):
    """The same Arrow table as a Ray dataset, with a row id column (``from_huggingface`` would need aiohttp)."""
    return ray.data.from_arrow(dataset.add_column("row_id", list(range(len(dataset)))).data.table)


def kept_rows(table):
    """Rows of an Arrow table that no policy dropped, as Python dicts."""
    return [row for row in table.to_pylist() if not row["dropped_reason"]]


class TestPretokenizeRay:
    def test_same_stored_rows(self, ray_rows, expected):
        """The Ray path stores exactly the rows of the datasets path, column by column."""
        stored = expected.dataset.with_format("arrow")[:].to_pylist()
        assert stored == kept_rows(ray_rows)

    def test_dropped_rows_keep_row_ids(self, ray_rows, expected):
        """A dropped row comes back with its dataset row id and the datasets path's reason."""
        dropped = [
            (row["source_index"], row["dropped_reason"], row["dropped_detail"])
            for row in ray_rows.to_pylist()
            if row["dropped_reason"]
        ]
        assert [(d.index, d.reason, d.detail) for d in expected.dropped] == dropped

    def test_same_padded_batch(self, ray_rows, expected, qwen_processor):
        """Both paths pad into the same batch."""
        collate = PreTokenizedCollator(processor=qwen_processor)
        want = collate(list(expected))
        got = collate([sample_from_row(row) for row in kept_rows(ray_rows)])
        assert {key: want[key].tolist() for key in KEYS} == {key: got[key].tolist() for key in KEYS}

    def test_factory_and_options(self, tmp_path, hf_dataset, expected, qwen_processor):
        """A factory built on the actor, with options passed through, feeds the shards."""
        rows = pretokenize_ray(
            from_datasets(hf_dataset),
            functools.partial(qwen_collator, special_tokens_in_text="raise"),
            batch_size=5,
            num_actors=1,
            index_column="row_id",
            special_tokens_in_text="drop",
        )
        write_shards(rows, tmp_path, collator=qwen_collator(), rows_per_shard=5)
        shards = ParquetShards.open(
            tmp_path, collator=PreTokenizedCollator(processor=qwen_processor)
        )
        assert expected.source_indices == shards.source_indices
        assert [(3, "special_tokens")] == [(d.index, d.reason) for d in shards.dropped]

    def test_bad_option_fails_before_running(self, hf_dataset, collator):
        """An option the collator does not have fails at once, not on an actor."""
        with pytest.raises(TypeError, match="no_such_option"):
            pretokenize_ray(
                from_datasets(hf_dataset), collator, index_column="row_id", no_such_option=1
            )

    def test_bad_pool_size(self, hf_dataset, collator):
        """A pool size that is not a positive int is a ConfigurationError naming the option."""
        with pytest.raises(vc.ConfigurationError, match=r"'num_actors' must be a positive int"):
            pretokenize_ray(
                from_datasets(hf_dataset), collator, index_column="row_id", num_actors=0
            )
