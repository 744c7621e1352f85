"""The scaling benchmark's quick run: every figure is printed (speed is never asserted)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

pytest.importorskip("datasets", reason="needs the 'datasets' package: pip install datasets")
pytest.importorskip("pyarrow", reason="needs the 'pyarrow' package: pip install pyarrow")


class TestScaleBenchmark:
    def test_quick_run_prints_every_figure(self):
        """A quick run (no Ray, no worker processes) exits 0 and prints every rate and ratio."""
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "scale.py"),
                "--quick",
                "--no-ray",
                "--num-proc",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's package, not another
        )
        assert 0 == result.returncode, result.stderr
        rates = re.findall(r"^(.+?) +[\d.]+ (rows/s|samples/s)$", result.stdout, re.M)
        assert [
            ("datasets, 1 process", "rows/s"),
            ("datasets, 1 process (num_proc)", "rows/s"),
            ("on-the-fly (chat collator)", "samples/s"),
            ("Parquet shards, padded", "samples/s"),
            ("in-memory pre-tokenized, padded", "samples/s"),
        ] == rates
        assert 3 == len(re.findall(r"^.+ / .+ = [\d.]+x$", result.stdout, re.M))
        assert "shard batches identical to on-the-fly batches: yes" in result.stdout
