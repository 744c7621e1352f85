"""The padding benchmark: it runs, and its figures are counted from the batches themselves."""

from __future__ import annotations

import contextlib
import io

from vlm_collate.testing import build_processor
from vlm_collate.tools import bench_padding


class TestLengthMix:
    def test_many_short_a_few_long(self):
        """Most answers are short; a few are long, as in chat fine-tuning data."""
        samples = bench_padding.length_mix(200, seed=1)
        words = [len(sample["conversation"][1]["content"].split()) for sample in samples]
        assert 0.7 < sum(count <= 120 for count in words) / len(words)
        assert any(count > 700 for count in words)


class TestMeasurePadding:
    def test_same_real_tokens_and_no_padding_when_padding_free(self):
        """All three batchings hold the same real tokens; padding-free has no padding at all."""
        samples = bench_padding.length_mix(6, seed=2)
        padded, packed, free = bench_padding.measure_padding(
            samples, build_processor("qwen2_5_vl"), batch_size=3, pack_size=4096
        )
        assert padded.real == packed.real == free.real
        assert 0.0 == free.padding_fraction
        assert padded.padding_fraction > packed.padding_fraction

    def test_main_prints_the_three_rows(self):
        """The command prints one row per batching with its padding fraction."""
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            status = bench_padding.main(["--samples", "4", "--batch-size", "2"])
        assert 0 == status
        names = [line.split()[0] for line in output.getvalue().splitlines()[2:]]
        assert ["padded", "packed", "padding-free"] == names
