"""Benchmark: the padding fraction of padded, packed and padding-free batches.

Run it with ``python -m vlm_collate.tools.bench_padding`` (``--help`` for
the options). Samples follow a realistic length mix for chat fine-tuning,
many short exchanges and a few long ones, some with an image, generated from
a seeded random source and collated by the real
[`Qwen25VLCollator`][vlm_collate.Qwen25VLCollator] on the offline Qwen2.5-VL processor of
[`vlm_collate.testing`][vlm_collate.testing]:

1. ``padded``: batches of ``--batch-size`` samples in a shuffled order,
   padded to their longest row (the default collator).
2. ``packed``: [`pack`][vlm_collate.pack] into ``--pack-size`` positions,
   ``--packs-per-batch`` packs per [`NeatPackedCollator`][vlm_collate.NeatPackedCollator]
   batch, padded to the longest pack.
3. ``padding-free``: the same batches as ``padded`` with ``padding_free=True``.

The padding fraction is the share of token positions in the batches that
hold no real token. The benchmark needs the ``test`` extra.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from typing import Any

import attrs
from PIL import Image

from ..families.qwen_vl import Qwen25VLCollator
from ..pretokenized import NeatPackedCollator, pack, pretokenize_sample

__all__ = ["PaddingFigures", "length_mix", "main", "measure_padding"]

WORDS = "the a red blue box image shows small large two three near far left right top".split()
# (share of samples, fewest words, most words): many short, some medium, a few long.
LENGTH_MIX = ((0.80, 5, 120), (0.16, 120, 700), (0.04, 700, 2500))


@attrs.frozen
class PaddingFigures:
    """Real tokens and token positions of one way of batching."""

    name: str
    batches: int
    real: int
    positions: int

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real / self.positions if self.positions else 0.0


def _sample(rng: random.Random, words: int, image: bool) -> dict[str, Any]:
    answer = " ".join(rng.choice(WORDS) for _ in range(words)) + "."
    content: list[dict[str, Any]] = [{"type": "text", "text": "Describe it."}]
    if image:
        colour = tuple(rng.randrange(256) for _ in range(3))
        content.insert(0, {"type": "image", "image": Image.new("RGB", (112, 84), colour)})
    return {
        "conversation": [
            {"role": "user", "content": content},
            {"role": "assistant", "content": answer},
        ]
    }


def length_mix(count: int, seed: int = 0, image_share: float = 0.25) -> list[dict[str, Any]]:
    """``count`` chat samples whose answer lengths follow `LENGTH_MIX`."""
    rng = random.Random(seed)
    shares = [share for share, _, _ in LENGTH_MIX]
    samples = []
    for _ in range(count):
        _, fewest, most = rng.choices(LENGTH_MIX, weights=shares)[0]
        samples.append(_sample(rng, rng.randint(fewest, most), rng.random() < image_share))
    return samples


def _batches(samples: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [samples[start : start + size] for start in range(0, len(samples), size)]


def _batched(
    padded: Qwen25VLCollator, free: Qwen25VLCollator, samples: Sequence[Any], size: int
) -> list[PaddingFigures]:
    """Padded and padding-free figures of the same batches.

    Both count as real the tokens of the padding-free row (each sample's
    tokens after the shift), so the figures compare like with like.
    """
    real = padded_positions = free_positions = 0
    batches = _batches(samples, size)
    for batch_samples in batches:
        row = free(batch_samples)
        real += int(row["cu_seq_lens_q"][-1])
        free_positions += row["input_ids"].numel()
        padded_positions += padded(batch_samples)["input_ids"].numel()
    return [
        PaddingFigures("padded", len(batches), real, padded_positions),
        PaddingFigures("padding-free", len(batches), real, free_positions),
    ]


def _packed(
    collator: Qwen25VLCollator, samples: Sequence[Any], pack_size: int, per_batch: int
) -> PaddingFigures:
    pretokenized = [pretokenize_sample(collator, sample) for sample in samples]
    packs = pack(pretokenized, pack_size, overlong="drop").packs
    real = positions = 0
    batches = _batches(packs, per_batch)
    for batch_packs in batches:
        batch = NeatPackedCollator(materialize_4d_mask=False)(batch_packs)
        real += int((batch["attention_mask"] > 0).sum())
        positions += batch["attention_mask"].numel()
    return PaddingFigures("packed", len(batches), real, positions)


def measure_padding(
    samples: Sequence[Any],
    processor: Any,
    *,
    batch_size: int = 8,
    pack_size: int = 4096,
    packs_per_batch: int = 2,
) -> list[PaddingFigures]:
    """Padding figures of the three ways of batching ``samples``."""
    padded = Qwen25VLCollator(processor=processor)
    free = Qwen25VLCollator(processor=processor, padding_free=True)
    batched = _batched(padded, free, samples, batch_size)
    return [batched[0], _packed(padded, samples, pack_size, packs_per_batch), batched[1]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vlm_collate.tools.bench_padding")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--pack-size", type=int, default=4096)
    parser.add_argument("--packs-per-batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Print the padding fraction of padded, packed and padding-free batches."""
    from ..testing import build_processor

    options = _parser().parse_args(argv)
    samples = length_mix(options.samples, seed=options.seed)
    figures = measure_padding(
        samples,
        build_processor("qwen2_5_vl"),
        batch_size=options.batch_size,
        pack_size=options.pack_size,
        packs_per_batch=options.packs_per_batch,
    )
    print(
        f"{options.samples} samples (80% 5-120 words, 16% 120-700, 4% 700-2500; 25% with an "
        f"image), batch size {options.batch_size}, packs of {options.pack_size} x "
        f"{options.packs_per_batch}"
    )
    print(f"{'batching':<14}{'batches':>9}{'real tokens':>13}{'positions':>11}{'padding':>9}")
    for row in figures:
        print(
            f"{row.name:<14}{row.batches:>9}{row.real:>13}{row.positions:>11}"
            f"{row.padding_fraction:>9.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
