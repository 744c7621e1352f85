"""MRopeIndex and padding-free mRoPE positions against the model's own get_rope_index."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import vlm_collate as vc
from tests.helpers.chat import image_sample, text_sample
from tests.helpers.media_files import quadrants, write_video
from vlm_collate.testing import build_processor

transformers = pytest.importorskip("transformers")

# family -> (config class, model class) of the model the test processor feeds.
MODELS = {
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLModel"),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLModel"),
    "qwen3_vl": ("Qwen3VLConfig", "Qwen3VLModel"),
}


def tiny_config(family: str, processor, **vision):
    """A small config of the family's model, with the processor's merge size and token ids."""
    config_class = getattr(transformers, MODELS[family][0])
    tokenizer = processor.tokenizer
    text = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
    text.update(num_attention_heads=2, num_key_value_heads=1)
    return config_class(
        text_config=text,
        vision_config={
            "depth": 1,
            "spatial_merge_size": processor.image_processor.merge_size,
            **vision,
        },
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
    )


def real_model(family: str, config):
    """The family's model class built from ``config``; on the meta device, since
    get_rope_index reads only the config, never a weight."""
    with torch.device("meta"):
        return getattr(transformers, MODELS[family][1])(config)


def model_positions(model, alone: dict) -> torch.Tensor:
    """What the model computes for one sample's padded batch of one: ``[3, n]``."""
    positions, _ = model.get_rope_index(
        alone["input_ids"],
        mm_token_type_ids=alone["mm_token_type_ids"],
        image_grid_thw=alone.get("image_grid_thw"),
        video_grid_thw=alone.get("video_grid_thw"),
        second_per_grid_ts=alone.get("second_per_grid_ts"),
        attention_mask=alone["attention_mask"],
    )
    return positions[:, 0]


def samples() -> list[dict]:
    return [
        image_sample("A red box.", Image.new("RGB", (56, 84), "red")),
        text_sample("Hello there."),
        image_sample(
            "Two.", Image.new("RGB", (84, 56)), Image.new("RGB", (56, 56)), prompt="Both?"
        ),
    ]


class TestPaddingFreeMRope:
    @pytest.mark.parametrize("family", sorted(MODELS))
    def test_positions_equal_the_model_on_each_sample_alone(self, family):
        """position_ids [3, 1, total] hold, per sample, what the model's get_rope_index gives it alone."""
        processor = build_processor(family)
        model = real_model(family, tiny_config(family, processor))
        batch = vc.Qwen25VLCollator(processor=processor, padding_free=True)(samples())
        cuts = batch["cu_seq_lens_q"].tolist()
        assert (3, 1, cuts[-1]) == tuple(batch["position_ids"].shape)
        for row, sample in enumerate(samples()):
            alone = vc.Qwen25VLCollator(processor=processor)([sample])
            expected = model_positions(model, alone)
            actual = batch["position_ids"][:, 0, cuts[row] : cuts[row + 1]]
            assert expected.tolist() == actual.tolist()

    def test_video_positions_with_the_checkpoint_config(self, tmp_path):
        """With MRopeIndex.from_config, video positions (temporal spacing) equal the model's."""
        processor = build_processor("qwen2_5_vl")
        config = tiny_config("qwen2_5_vl", processor, tokens_per_second=2)
        model = real_model("qwen2_5_vl", config)
        video = write_video(tmp_path / "clip.mp4", [quadrants(56, 56)] * 4, fps=2)
        clip = {
            "conversation": [
                {"role": "user", "content": [{"type": "video", "video": str(video)}]},
                {"role": "assistant", "content": "Squares."},
            ]
        }
        collator = vc.Qwen25VLCollator(
            processor=processor, padding_free=True, rope_index=vc.MRopeIndex.from_config(config)
        )
        batch = collator([text_sample(), clip])
        alone = vc.Qwen25VLCollator(processor=processor)([clip])
        start, end = batch["cu_seq_lens_q"][1:].tolist()
        assert (
            model_positions(model, alone).tolist()
            == batch["position_ids"][:, 0, start:end].tolist()
        )

    def test_videos_need_the_checkpoint_config(self, tmp_path):
        """A derived index refuses videos (tokens_per_second is not in the processor)."""
        processor = build_processor("qwen2_5_vl")
        video = write_video(tmp_path / "clip.mp4", [quadrants(56, 56)] * 4, fps=2)
        clip = {
            "conversation": [
                {"role": "user", "content": [{"type": "video", "video": str(video)}]},
                {"role": "assistant", "content": "Squares."},
            ]
        }
        with pytest.raises(vc.ConfigurationError, match="from_config"):
            vc.Qwen25VLCollator(processor=processor, padding_free=True)([clip])


class TestMRopeIndex:
    def test_refuses_a_config_without_rope_index(self):
        """A config of a 1-D RoPE model raises ConfigurationError naming its class."""
        with pytest.raises(vc.ConfigurationError, match="LlamaConfig"):
            vc.MRopeIndex.from_config(transformers.LlamaConfig())

    def test_omni_processors_ask_for_a_callable(self):
        """Qwen-Omni needs audio lengths for its positions, so a derived index is refused."""
        processor = build_processor("qwen3_omni")
        collator = vc.Qwen3OmniCollator(processor=processor, padding_free=True)
        with pytest.raises(vc.ConfigurationError, match="rope_index"):
            collator([image_sample("A.", Image.new("RGB", (64, 64)))])
