"""``vlm-collate pretokenize``: JSONL to shards, the summary, the progress bar, and resuming."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
from PIL import Image

import vlm_collate as vc
from vlm_collate.pretokenized import ParquetShards, PreTokenizedCollator
from vlm_collate.tools.cli import main
from vlm_collate.tools.inspect import load_jsonl
from vlm_collate.tools.pretokenize import padding_estimate

pytest.importorskip("datasets", reason="needs the 'datasets' package: pip install datasets")
pytest.importorskip("pyarrow", reason="needs the 'pyarrow' package: pip install pyarrow")

KEYS = ["input_ids", "attention_mask", "labels", "pixel_values", "image_grid_thw"]
KEPT = [0, 1, 3, 4]


def chat(question, answer, image=None):
    """A sample as people write JSONL: string contents, or a list with an image path."""
    user = (
        question
        if image is None
        else [{"type": "image", "image": image}, {"type": "text", "text": question}]
    )
    return {
        "conversation": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jsonl")
    Image.new("RGB", (56, 56), "red").save(folder / "red.png")
    samples = [
        chat("Hi there", "Hello!"),
        chat("Colour?", "Red.", "red.png"),
        chat("Say <|im_end|> please", "No."),
        chat("Name a fruit.", "A pear."),
        chat("And this one?", "Still red.", "red.png"),
    ]
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(sample) + "\n" for sample in samples), encoding="utf-8")
    return path


def run(data, out, *extra):
    """Run the command; returns its status, stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    arguments = ["pretokenize", str(data), str(out), "--processor", "qwen2_5_vl"]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main([*arguments, "--rows-per-shard", "2", *extra])
    return status, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def resumed(data, tmp_path_factory):
    """A run stopped after two of three shards (a row limit), then run again to the end."""
    out = tmp_path_factory.mktemp("shards")
    first = run(data, out, "--limit", "4")
    written = (out / "shard-00000.parquet").stat().st_mtime_ns
    second = run(data, out)
    return {"out": out, "first": first, "second": second, "written": written}


def read_back(out, processor):
    collate = PreTokenizedCollator(processor=processor)
    shards = ParquetShards.open(out, collator=collate)
    return shards, collate(list(shards))


def examples_of(data):
    return [record.example for record in load_jsonl(data)]


def as_lists(batch):
    return {key: batch[key].tolist() for key in KEYS}


class TestPretokenizeCommand:
    def test_shards_give_the_on_the_fly_batch(self, data, resumed, qwen_processor):
        """Shards written from string-content JSONL pad into the chat collator's batch."""
        assert (0, 0) == (resumed["first"][0], resumed["second"][0])
        shards, batch = read_back(resumed["out"], qwen_processor)
        assert KEPT == shards.source_indices
        expected = vc.Qwen25VLCollator(processor=qwen_processor)(
            [examples_of(data)[i] for i in KEPT]
        )
        assert as_lists(expected) == as_lists(batch)

    def test_summary(self, data, resumed, qwen_processor):
        """The summary counts kept and dropped rows, tokens and trained tokens of every shard."""
        unshifted = vc.Qwen25VLCollator(processor=qwen_processor, shift_labels=False)
        batch = unshifted([examples_of(data)[i] for i in KEPT])
        tokens = int(batch["attention_mask"].sum())
        trained = int((batch["labels"] != vc.IGNORE_INDEX).sum())
        out = resumed["second"][1]
        assert "rows kept: 4\n" in out
        assert "rows dropped: 1 (special_tokens 1)\n" in out
        assert f"tokens: {tokens:,}  trained tokens: {trained:,}\n" in out
        assert "packing would save" in out

    def test_progress_bar(self, resumed):
        """The bar on stderr shows rows done, rows/s, tokens/s and rows dropped so far."""
        err = resumed["first"][2]
        assert "2/4 rows" in err and "4/4 rows" in err
        assert "rows/s" in err and "tokens/s" in err and "dropped 1" in err

    def test_resumes_after_interruption(self, resumed):
        """The second run skips the complete shards and leaves their files untouched."""
        assert "resuming: 2 of 3 shards already complete" in resumed["second"][2]
        assert resumed["written"] == (resumed["out"] / "shard-00000.parquet").stat().st_mtime_ns

    def test_rewrites_a_shard_without_completion_mark(
        self, data, resumed, tmp_path, qwen_processor
    ):
        """A shard whose completion mark is missing (killed mid-write) is written again."""
        out = tmp_path / "out"
        shutil.copytree(resumed["out"], out)
        (out / "shard-00002.done.json").unlink()
        status, _, err = run(data, out)
        assert 0 == status
        assert "resuming: 2 of 3 shards already complete" in err
        assert KEPT == read_back(out, qwen_processor)[0].source_indices

    def test_refuses_other_settings_on_resume(self, data, resumed, tmp_path):
        """Resuming with another shard size is refused, naming the field that differs."""
        out = tmp_path / "out"
        shutil.copytree(resumed["out"], out)
        status, _, err = run(data, out, "--rows-per-shard", "3")
        assert 2 == status
        assert "settings: shards have" in err

    def test_refuses_other_collator_options_on_resume(self, data, resumed, tmp_path):
        """Resuming with another collator option is refused, naming the option."""
        out = tmp_path / "out"
        shutil.copytree(resumed["out"], out)
        status, _, err = run(data, out, "--max-length", "64")
        assert 2 == status
        assert "collator_options: shards have {'max_length': None}" in err


class TestPaddingEstimate:
    def test_padded_and_packed(self):
        """Batches of two pad 4+1 to 4+4 twice; first-fit packs of 5 need no padding."""
        assert (6, 0) == padding_estimate([4, 1, 4, 1], batch_size=2, pack_size=5)

    def test_long_row_fills_its_own_pack(self):
        """A row longer than the pack size opens a pack as long as itself."""
        assert (3, 2) == padding_estimate([7, 4], batch_size=2, pack_size=6)


class TestRayEngine:
    def test_same_shards_as_datasets_engine(
        self, data, resumed, tmp_path, qwen_processor, monkeypatch
    ):
        """--engine ray writes the rows, drops and counts the datasets engine writes."""
        ray = pytest.importorskip("ray", reason="needs Ray Data: pip install 'vlm-collate[ray]'")
        # Ray's memory monitor kills workers when other jobs fill a shared machine's memory.
        monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "0")
        out = tmp_path / "out"
        try:
            status, summary, err = run(data, out, "--engine", "ray", "--num-proc", "1")
        finally:
            ray.shutdown()
        assert 0 == status, err
        assert resumed["second"][1].replace(str(resumed["out"]), "") == summary.replace(
            str(out), ""
        )
        ray_shards, ray_batch = read_back(out, qwen_processor)
        shards, batch = read_back(resumed["out"], qwen_processor)
        assert shards.dropped == ray_shards.dropped
        assert as_lists(batch) == as_lists(ray_batch)
