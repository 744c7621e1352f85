"""Frameworks driving a collator for real: DataLoader workers, Trainer, TRL and Hydra.

Nothing is downloaded: the processor is built offline and the model is a tiny
Qwen2.5-VL with random weights, built from a config.
"""

from __future__ import annotations

import collections
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import vlm_collate as vc
from vlm_collate.testing import decoded_label_runs

ROOT = Path(__file__).resolve().parent.parent
IMAGE_TOKEN = "<|image_pad|>"


def answer(index: int) -> str:
    return f"Answer {index}."


def chat_sample(index: int) -> dict:
    """A one-turn sample whose only trained text is ``answer(index)``; every third has an image."""
    question: object = f"Question {index}?"
    if index % 3 == 0:
        picture = Image.new("RGB", (56 + 28 * (index % 2), 56), (index * 25 % 256, 80, 200))
        question = [{"type": "image", "image": picture}, {"type": "text", "text": question}]
    return {
        "conversation": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer(index)},
        ]
    }


def has_image(index: int) -> bool:
    return index % 3 == 0


class TestDistributedDataLoader:
    @pytest.mark.parametrize("context", ["fork", "spawn"])
    def test_two_ranks_collate_every_sample_once(self, qwen_processor, context):
        """Two simulated ranks with two workers each collate every sample exactly once."""
        data = [chat_sample(index) for index in range(10)]
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        runs: list[str] = []
        images = 0
        for rank in (0, 1):
            sampler = torch.utils.data.DistributedSampler(
                data, num_replicas=2, rank=rank, shuffle=True, seed=3
            )
            loader = torch.utils.data.DataLoader(
                data,
                batch_size=2,
                sampler=sampler,
                collate_fn=collator,
                num_workers=2,
                multiprocessing_context=context,
            )
            for batch in loader:
                for row in decoded_label_runs(batch["labels"], qwen_processor.tokenizer):
                    assert 1 == len(row)
                    runs.extend(row)
                images += int(batch.get("n_images_per_sample", torch.zeros(1)).sum())
        expected = collections.Counter(f"{answer(index)}<|im_end|>" for index in range(10))
        assert expected == collections.Counter(runs)
        assert sum(has_image(index) for index in range(10)) == images


# A tiny Qwen2.5-VL: 1 text layer of width 32, 1 vision block. The vocabulary
# must hold every id of the Qwen2 tokenizer. A wide initialisation spreads the
# per-token losses, so that a loss taken over the wrong positions shows.
def tiny_qwen_model(processor):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokens = processor.tokenizer
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokens),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 2048,
            "initializer_range": 0.5,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "fullatt_block_indexes": [0],
        },
        image_token_id=tokens.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_id=tokens.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokens.convert_tokens_to_ids("<|vision_start|>"),
    )
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(config)


def training_samples() -> list[dict]:
    """Four samples: an image question, a system prompt, two answer turns, plain text."""
    picture = Image.new("RGB", (84, 56), (200, 30, 30))
    return [
        {
            "conversation": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": picture},
                        {"type": "text", "text": "What colour is this?"},
                    ],
                },
                {"role": "assistant", "content": "It is red."},
            ]
        },
        {
            "conversation": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "Name a prime."},
                {"role": "assistant", "content": "Seven."},
            ]
        },
        {
            "conversation": [
                {"role": "user", "content": "Count to two."},
                {"role": "assistant", "content": "One, two."},
                {"role": "user", "content": "And three?"},
                {"role": "assistant", "content": "Three."},
            ]
        },
        {
            "conversation": [
                {"role": "user", "content": "Say hello."},
                {"role": "assistant", "content": "Hello there, friend!"},
            ]
        },
    ]


def assistant_texts(samples: list[dict]) -> list[str]:
    return [
        message["content"]
        for sample in samples
        for message in sample["conversation"]
        if message["role"] == "assistant"
    ]


def assistant_positions(input_ids: torch.Tensor, tokenizer) -> list[tuple[int, int]]:
    """(row, position) of every answer token and its <|im_end|>, read from the token ids alone."""
    header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    positions = []
    for row, ids in enumerate(input_ids.tolist()):
        for start in range(len(ids) - len(header) + 1):
            if ids[start : start + len(header)] != header:
                continue
            position = start + len(header)
            while ids[position] != end_id:
                positions.append((row, position))
                position += 1
            positions.append((row, position))
    return positions


class LossRecorder:
    """Keeps the inputs and outputs of every forward pass of a model."""

    def __init__(self, model) -> None:
        self.calls: list[tuple[dict, object]] = []
        model.register_forward_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs, output) -> None:
        self.calls.append((kwargs, output))


def check_one_step(train, processor, samples) -> None:
    """Run ``train(model)`` for one step and check its loss against one taken by hand."""
    model = tiny_qwen_model(processor)
    recorder = LossRecorder(model)
    reported = train(model)
    assert 1 == len(recorder.calls)
    inputs, output = recorder.calls[0]
    tokenizer = processor.tokenizer
    positions = assistant_positions(inputs["input_ids"], tokenizer)
    expected_count = sum(
        len(tokenizer.encode(text, add_special_tokens=False)) + 1
        for text in assistant_texts(samples)
    )
    assert expected_count == len(positions)
    assert expected_count == int((inputs["labels"] != vc.IGNORE_INDEX).sum())
    # TRL's fused loss returns no logits: a second model with the same seed, not yet
    # trained, gives the ones the step saw.
    batch = {key: value for key, value in inputs.items() if isinstance(value, torch.Tensor)}
    with torch.no_grad():
        logits = tiny_qwen_model(processor)(**batch).logits.float()
    rows = torch.tensor([row for row, _ in positions])
    columns = torch.tensor([column for _, column in positions])
    targets = inputs["input_ids"][rows, columns]
    by_hand = torch.nn.functional.cross_entropy(logits[rows, columns - 1], targets).item()
    every_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), inputs["input_ids"][:, 1:].flatten()
    ).item()
    assert math.isfinite(reported)
    assert by_hand == pytest.approx(reported, rel=1e-5)
    assert by_hand == pytest.approx(output.loss.item(), rel=1e-5)
    assert abs(every_token - by_hand) > 0.01  # the check can tell prompt tokens from answers


def trainer_arguments(tmp_path: Path, config_class=None, **options):
    from transformers import TrainingArguments

    settings = {
        "output_dir": str(tmp_path),
        "max_steps": 1,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-3,
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "logging_steps": 1,
        "remove_unused_columns": False,
        "disable_tqdm": True,
    }
    return (config_class or TrainingArguments)(**{**settings, **options})


class TestTrainer:
    def test_one_step_trains_only_answers(self, qwen_processor, tmp_path):
        """Trainer(data_collator=collator) runs a step whose loss covers exactly the answer tokens."""
        pytest.importorskip("accelerate", reason="Trainer needs accelerate: pip install accelerate")
        from transformers import Trainer

        samples = training_samples()
        collator = vc.hf_trainer_collator(qwen_processor)

        def train(model) -> float:
            trainer = Trainer(
                model=model,
                args=trainer_arguments(tmp_path),
                train_dataset=samples,
                data_collator=collator,
            )
            return trainer.train().training_loss

        check_one_step(train, qwen_processor, samples)

    def test_pre_shifted_collator_warns_once(self, qwen_processor, tmp_path):
        """A collator left at shift_labels=True warns once when Trainer calls it, twice over."""
        pytest.importorskip("accelerate", reason="Trainer needs accelerate: pip install accelerate")
        from transformers import Trainer

        samples = training_samples()
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        trainer = Trainer(
            model=tiny_qwen_model(qwen_processor),
            args=trainer_arguments(tmp_path, max_steps=2, per_device_train_batch_size=2),
            train_dataset=samples,
            data_collator=collator,
        )
        with pytest.warns(vc.PreShiftedLabelsWarning) as caught:
            trainer.train()
        shift_warnings = [w for w in caught if w.category is vc.PreShiftedLabelsWarning]
        assert 1 == len(shift_warnings)
        assert "hf_trainer_collator" in str(shift_warnings[0].message)


class TestHfTrainerCollator:
    def test_labels_line_up_with_input_ids(self, qwen_processor):
        """hf_trainer_collator labels each answer token at its own position (unshifted)."""
        samples = training_samples()
        batch = vc.hf_trainer_collator(qwen_processor)(samples)
        positions = assistant_positions(batch["input_ids"], qwen_processor.tokenizer)
        labelled = [tuple(p) for p in (batch["labels"] != vc.IGNORE_INDEX).nonzero().tolist()]
        assert sorted(positions) == sorted(labelled)
        assert "Qwen25VLCollator" == type(vc.hf_trainer_collator(qwen_processor)).__name__

    def test_refuses_pre_shifted_labels(self, qwen_processor):
        """Asking hf_trainer_collator for shift_labels=True is a configuration error."""
        with pytest.raises(vc.ConfigurationError, match="'shift_labels' must be False"):
            vc.hf_trainer_collator(qwen_processor, shift_labels=True)

    def test_no_warning_outside_a_trainer(self, qwen_processor, recwarn):
        """A pre-shifted collator called directly (a NeMo-style loop) does not warn."""
        vc.Qwen25VLCollator(processor=qwen_processor)(training_samples()[:1])
        assert [] == [w for w in recwarn if w.category is vc.PreShiftedLabelsWarning]


def hf_dataset(samples: list[dict]):
    """The samples as a ``datasets.Dataset`` with images decoded to PIL and no None fields."""
    import datasets

    item = {"type": datasets.Value("string"), "text": datasets.Value("string")}
    item["image"] = datasets.Image()
    message = {"role": datasets.Value("string"), "content": datasets.List(item)}
    features = datasets.Features({"conversation": datasets.List(message)})
    listed = [
        {
            "conversation": [
                {
                    "role": message["role"],
                    "content": (
                        [{"type": "text", "text": message["content"]}]
                        if isinstance(message["content"], str)
                        else message["content"]
                    ),
                }
                for message in sample["conversation"]
            ]
        }
        for sample in samples
    ]
    return datasets.Dataset.from_list(listed, features=features).with_transform(drop_empty_fields)


def drop_empty_fields(batch: dict) -> dict:
    """Arrow gives every content item every field; keep only those that hold a value."""
    return {
        "conversation": [
            [
                {
                    "role": message["role"],
                    "content": [
                        {key: value for key, value in item.items() if value is not None}
                        for item in message["content"]
                    ],
                }
                for message in conversation
            ]
            for conversation in batch["conversation"]
        ]
    }


class TestSFTTrainer:
    def test_one_step_trains_only_answers(self, qwen_processor, tmp_path):
        """TRL's SFTTrainer with the collator and skip_prepare_dataset trains exactly the answers."""
        pytest.importorskip("accelerate", reason="TRL needs accelerate: pip install accelerate")
        pytest.importorskip("datasets", reason="TRL needs datasets: pip install datasets")
        pytest.importorskip("trl", reason="needs TRL: pip install trl")
        from trl import SFTConfig, SFTTrainer

        samples = training_samples()
        collator = vc.hf_trainer_collator(qwen_processor)
        dataset = hf_dataset(samples)

        def train(model) -> float:
            arguments = trainer_arguments(
                tmp_path,
                SFTConfig,
                dataset_kwargs={"skip_prepare_dataset": True},
                bf16=False,  # SFTConfig's default; bf16 autocast would blur the comparison
            )
            trainer = SFTTrainer(
                model=model,
                args=arguments,
                train_dataset=dataset,
                data_collator=collator,
                processing_class=qwen_processor,
            )
            return trainer.train().training_loss

        check_one_step(train, qwen_processor, samples)

    def test_pre_shifted_collator_warns(self, qwen_processor, tmp_path):
        """SFTTrainer given a collator left at shift_labels=True warns with the fix."""
        pytest.importorskip("accelerate", reason="TRL needs accelerate: pip install accelerate")
        pytest.importorskip("datasets", reason="TRL needs datasets: pip install datasets")
        pytest.importorskip("trl", reason="needs TRL: pip install trl")
        from trl import SFTConfig, SFTTrainer

        samples = training_samples()
        arguments = trainer_arguments(
            tmp_path, SFTConfig, dataset_kwargs={"skip_prepare_dataset": True}, bf16=False
        )
        trainer = SFTTrainer(
            model=tiny_qwen_model(qwen_processor),
            args=arguments,
            train_dataset=hf_dataset(samples),
            data_collator=vc.Qwen25VLCollator(processor=qwen_processor),
            processing_class=qwen_processor,
        )
        with pytest.warns(vc.PreShiftedLabelsWarning, match="shift_labels=False"):
            trainer.train()

    def test_dataset_rows_collate_like_the_samples(self, qwen_processor):
        """Rows read back from the datasets.Dataset give the batch of the original samples."""
        pytest.importorskip("datasets", reason="needs datasets: pip install datasets")
        samples = training_samples()
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        dataset = hf_dataset(samples)
        expected = collator(samples)
        actual = collator([dataset[index] for index in range(len(samples))])
        assert sorted(expected) == sorted(actual)
        assert all(torch.equal(expected[key], actual[key]) for key in expected)


HYDRA_CONFIG = """
collate_fn:
  _target_: vlm_collate.Qwen25VLCollator
  _convert_: all
  max_length: 512
  shift_labels: false
  pixel_dtype: bfloat16
  empty_labels: drop
  processor_kwargs:
    max_pixels: 12544
  label_strategy:
    _target_: vlm_collate.FirstOf
    _args_:
      - _target_: vlm_collate.ImStartMarker
      - _target_: vlm_collate.LegacyBPEMatch
"""


class TestHydra:
    def test_instantiated_collator_matches_a_direct_one(self, qwen_processor):
        """hydra.utils.instantiate with the processor given at call time builds the same batch."""
        pytest.importorskip("hydra", reason="needs hydra-core: pip install hydra-core")
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        config = OmegaConf.create(HYDRA_CONFIG)
        built = instantiate(config.collate_fn, processor=qwen_processor)
        direct = vc.Qwen25VLCollator(
            processor=qwen_processor,
            max_length=512,
            shift_labels=False,
            pixel_dtype=torch.bfloat16,
            empty_labels="drop",
            processor_kwargs={"max_pixels": 12544},
            label_strategy=vc.FirstOf(vc.ImStartMarker(), vc.LegacyBPEMatch()),
        )
        samples = [chat_sample(index) for index in range(4)] + [training_samples()[0]]
        expected = direct(samples)
        actual = built(samples)
        assert qwen_processor is built.processor
        assert sorted(expected) == sorted(actual)
        assert all(torch.equal(expected[key], actual[key]) for key in expected)
        assert torch.bfloat16 == actual["pixel_values"].dtype

    def test_options_come_from_the_config(self, qwen_processor):
        """Each keyword of the config reaches the collator as a plain Python value."""
        pytest.importorskip("hydra", reason="needs hydra-core: pip install hydra-core")
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        built = instantiate(OmegaConf.create(HYDRA_CONFIG).collate_fn, processor=qwen_processor)
        expected = (512, False, torch.bfloat16, "drop", {"max_pixels": 12544})
        actual = (
            built.max_length,
            built.shift_labels,
            built.pixel_dtype,
            built.empty_labels,
            built.processor_kwargs,
        )
        assert expected == actual
        assert dict is type(built.processor_kwargs)
        assert [vc.ImStartMarker, vc.LegacyBPEMatch] == [
            type(strategy) for strategy in built.label_strategy.strategies
        ]


class TestHydraLabelPolicy:
    def test_label_policy_from_a_plain_mapping(self, qwen_processor):
        """A label_policy written as a YAML mapping (no _target_) becomes the same LabelPolicy."""
        pytest.importorskip("hydra", reason="needs hydra-core: pip install hydra-core")
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        config = OmegaConf.create(
            """
            _target_: vlm_collate.Qwen25VLCollator
            label_policy:
              turns: last
              roles: [assistant, tool]
              train_on_end_of_turn: never
              loss_weights: true
            """
        )
        built = instantiate(config, processor=qwen_processor)
        expected = vc.LabelPolicy(
            turns="last",
            roles={"assistant", "tool"},
            train_on_end_of_turn="never",
            loss_weights=True,
        )
        assert expected == built.label_policy
        batch = built([chat_sample(0)])
        assert torch.equal(batch["loss_weights"] == 0, batch["labels"] == vc.IGNORE_INDEX)


class TestLoaderBenchmark:
    def test_quick_run_prints_every_figure(self):
        """The DataLoader benchmark's quick run exits 0 and prints throughput and ratios."""
        result = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "dataloader.py"), "--quick"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's package, not another
        )
        assert 0 == result.returncode, result.stderr
        rows = re.findall(
            r"^(on-the-fly|pre-tokenized) +workers=(\d) +[\d.]+ samples/s", result.stdout, re.M
        )
        expected = [
            (mode, str(workers))
            for mode in ("on-the-fly", "pre-tokenized")
            for workers in (0, 1, 2)
        ]
        assert expected == rows
        ratios = re.findall(
            r"^workers=\d: pre-tokenized / on-the-fly = [\d.]+x$", result.stdout, re.M
        )
        assert 3 == len(ratios)
        assert "batches identical: yes" in result.stdout
