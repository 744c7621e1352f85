"""Without an optional package, the scaling-out entry points name the extra to install."""

from __future__ import annotations

import sys

import pytest

import vlm_collate as vc
from vlm_collate.pretokenized import ParquetShards, pretokenize_ray, write_shards


class TestMissingExtras:
    def test_ray_missing(self, monkeypatch, qwen_processor):
        """pretokenize_ray without Ray raises MissingDependencyError naming the 'ray' extra."""
        monkeypatch.setitem(sys.modules, "ray", None)
        monkeypatch.setitem(sys.modules, "ray.data", None)
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        with pytest.raises(vc.MissingDependencyError, match=r"pip install 'vlm-collate\[ray\]'"):
            pretokenize_ray([], collator, index_column="row_id")

    def test_pyarrow_missing(self, monkeypatch, tmp_path, qwen_processor):
        """Writing or reading shards without pyarrow names the 'parquet' extra."""
        monkeypatch.setitem(sys.modules, "pyarrow", None)
        monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        extra = r"pip install 'vlm-collate\[parquet\]'"
        with pytest.raises(vc.MissingDependencyError, match=extra):
            write_shards([], tmp_path, collator=collator)
        (tmp_path / "manifest.json").write_text('{"format": "vlm_collate.pretokenized.shards"}')
        with pytest.raises(vc.MissingDependencyError, match=extra):
            ParquetShards.open(tmp_path, collator=collator)
