"""vlm_collate.compat: the seed's function names and signatures, working on real processors."""

from __future__ import annotations

import inspect

import pytest
from PIL import Image

from vlm_collate import compat
from vlm_collate.testing import build_processor, decoded_label_runs

# The public functions of the seed's API reference (shared/seeds), with their parameters.
SEED_SIGNATURES = {
    "build_labels": ["input_ids_batch", "conversations", "processor"],
    "build_labels_from_template": ["input_ids_batch", "conversations", "processor"],
    "default_collate_fn": [
        "examples",
        "processor",
        "max_length",
        "drop_overlong",
        "_post_tokenize_hook",
    ],
    "gemma4_inject_thinking_prefix": ["batch", "processor"],
    "gemma4_prefix_collate_fn": ["examples", "processor", "max_length"],
    "kimi_k25_vl_collate_fn": ["examples", "processor", "max_length", "drop_overlong"],
    "kimi_vl_collate_fn": ["examples", "processor", "max_length"],
    "llava_onevision_collate_fn": ["examples", "processor"],
    "make_robust_collate": ["dataset", "collate_fn", "max_retries"],
    "neat_packed_vlm_collater": ["batch", "padding_idx", "max_length", "attn_implementation"],
    "pad_collate_fn": ["examples", "processor", "max_length"],
    "nemotron_omni_collate_fn": ["examples", "processor", "max_length", "max_video_frames"],
    "nemotron_parse_collate_fn": ["examples", "processor", "task_prompt"],
    "phi4_mm_collate_fn": ["examples", "processor"],
    "qwen2_5_collate_fn": ["examples", "processor"],
    "qwen3_omni_collate_fn": ["examples", "processor", "use_audio_in_video"],
}
SEED_REGISTRY_KEYS = {
    "KimiK25Processor",
    "KimiVLProcessor",
    "LlavaOneVisionProcessor",
    "NemotronH_Nano_Omni_Reasoning_V3Processor",
    "NemotronParseProcessor",
    "Qwen2_5_VLProcessor",
    "Qwen3OmniMoeProcessor",
    "default",
}


def chat(answer: str = "A red box.", image: bool = True) -> dict:
    content = [{"type": "text", "text": "What is in the picture?"}]
    if image:
        content.insert(0, {"type": "image", "image": Image.new("RGB", (64, 48), "red")})
    return {
        "conversation": [
            {"role": "user", "content": content},
            {"role": "assistant", "content": answer},
        ]
    }


class TestSignatures:
    @pytest.mark.parametrize("name", sorted(SEED_SIGNATURES))
    def test_same_name_and_parameters(self, name):
        """Each seed function exists in compat with the seed's parameter names, in order."""
        assert SEED_SIGNATURES[name] == list(inspect.signature(getattr(compat, name)).parameters)

    def test_registry_keys_cover_the_seed(self):
        """COLLATE_FNS knows every processor name the seed's mapping knew."""
        assert SEED_REGISTRY_KEYS <= set(compat.COLLATE_FNS)


class TestFunctionsRun:
    @pytest.mark.parametrize(
        ("function", "family", "end"),
        [
            ("qwen2_5_collate_fn", "qwen2_5_vl", "<|im_end|>"),
            ("default_collate_fn", "llava_next_mistral", "</s>"),
            ("llava_onevision_collate_fn", "llava_onevision", "<|im_end|>"),
            ("qwen3_omni_collate_fn", "qwen3_omni", "<|im_end|>"),
            ("kimi_vl_collate_fn", "kimi_vl", "<|im_end|>"),
            ("gemma4_prefix_collate_fn", "gemma4", "<turn|>"),
        ],
    )
    def test_trains_the_answer(self, function, family, end):
        """Each family function trains exactly the answer and its end-of-turn token."""
        processor = build_processor(family)
        batch = getattr(compat, function)([chat()], processor)
        runs = decoded_label_runs(batch["labels"], processor.tokenizer)
        assert [["A red box." + end]] == [[run.lstrip(" ") for run in row] for row in runs]

    def test_kimi_k25_pads_to_max_length(self):
        """kimi_k25_vl_collate_fn gives fixed-length rows (max_length before the shift)."""
        processor = build_processor("kimi_k25")
        batch = compat.kimi_k25_vl_collate_fn(
            [chat(), chat(image=False)], processor, max_length=256
        )
        assert (2, 255) == tuple(batch["input_ids"].shape)
        assert [1, 0] == batch["n_images_per_sample"].tolist()

    def test_gemma4_injection_function(self):
        """gemma4_inject_thinking_prefix adds the channel after the model turn of a tokenized batch."""
        processor = build_processor("gemma4")
        conversation = chat(image=False)["conversation"]
        batch = dict(
            processor.apply_chat_template(
                [conversation],
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs={"padding": True},
            )
        )
        before = processor.tokenizer.decode(batch["input_ids"][0])
        after = processor.tokenizer.decode(
            compat.gemma4_inject_thinking_prefix(batch, processor)["input_ids"][0]
        )
        assert (
            before.replace("<|turn>model\n", "<|turn>model\n<|channel>thought\n<channel|>") == after
        )


class TestPreTokenizedAndRobust:
    def test_pad_collate_fn_matches_the_on_the_fly_batch(self):
        """pad_collate_fn on pre-tokenized samples gives the on-the-fly labels and ids."""
        import vlm_collate as vc

        processor = build_processor("qwen2_5_vl")
        collator = vc.Qwen25VLCollator(processor=processor)
        samples = [chat(), chat("Blue.", image=False)]
        pretokenized = [vc.pretokenize_sample(collator, sample) for sample in samples]
        expected = collator(samples)
        actual = compat.pad_collate_fn(pretokenized, processor)
        assert expected["input_ids"].tolist() == actual["input_ids"].tolist()
        assert expected["labels"].tolist() == actual["labels"].tolist()

    def test_make_robust_collate_recovers_from_a_bad_batch(self):
        """make_robust_collate re-samples a batch whose sample has no assistant turn."""
        import vlm_collate as vc

        processor = build_processor("qwen2_5_vl")
        good = [chat(f"Answer {index}.", image=False) for index in range(4)]
        robust = compat.make_robust_collate(good, vc.Qwen25VLCollator(processor=processor))
        broken = {"conversation": [{"role": "user", "content": "no answer"}]}
        batch = robust([broken, good[0]])
        runs = decoded_label_runs(batch["labels"], processor.tokenizer)
        assert all(row[0] in {f"Answer {index}.<|im_end|>" for index in range(4)} for row in runs)
