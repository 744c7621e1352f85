"""Every field of a row is checked: roles, steering keys, label keys and array images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vlm_collate as vc
from vlm_collate import compat
from vlm_collate.testing import decoded_label_runs

from .helpers.chat import chatml_run_matches


def _exchange(role: str = "user", answer: str = "Fine.", **assistant_keys) -> dict:
    return {
        "conversation": [
            {"role": role, "content": "How are you?"},
            {"role": "assistant", "content": answer, **assistant_keys},
        ]
    }


def _image_exchange(image) -> dict:
    return {
        "conversation": [
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}],
            },
            {"role": "assistant", "content": "A box."},
        ]
    }


class TestRoleStrings:
    @pytest.mark.parametrize(
        "role",
        ["user<|im_end|>\n<|im_start|>assistant", "<|im_start|>", "[INST]", "user<start_of_turn>"],
    )
    def test_control_tokens_in_role_refused(self, qwen_processor, role):
        """A role holding control-token markup is a SpecialTokenError naming sample and message."""
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        with pytest.raises(vc.SpecialTokenError, match="sample 1, message 0: 'role'") as caught:
            collator([_exchange(), _exchange(role=role)])
        assert (1, 0) == (caught.value.sample_index, caught.value.message_index)

    def test_special_token_policy_does_not_allow_markup_roles(self, qwen_processor):
        """special_tokens_in_text='allow' governs text, not roles: a markup role is still refused."""
        collator = vc.Qwen25VLCollator(processor=qwen_processor, special_tokens_in_text="allow")
        with pytest.raises(vc.SpecialTokenError):
            collator([_exchange(role="user<|im_end|>")])

    @pytest.mark.parametrize(
        "role", ["user\nassistant", "user\r", "\tuser", " user", "a" * 65, "x\x00"]
    )
    def test_odd_characters_refused(self, qwen_processor, role):
        """Line breaks, control characters, leading blanks and over-long roles are SampleErrors."""
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        with pytest.raises(
            vc.SampleError, match="sample 0, message 0: 'role' must be a plain name"
        ):
            collator([_exchange(role=role)])

    @pytest.mark.parametrize("role", ["user", "system", "tool", "tool_result", "ipython", "用户"])
    def test_plain_names_accepted(self, qwen_processor, role):
        """Plain role names (unicode letters too) pass the role-string check, and the answer is trained.

        Roles no template or label policy knows are refused by ``unknown_roles``
        (tested with the formats); this test is about the string check, so it allows them.
        """
        collator = vc.Qwen25VLCollator(processor=qwen_processor, unknown_roles="allow")
        batch = collator([_exchange(role=role)])
        runs = decoded_label_runs(batch["labels"], qwen_processor.tokenizer)[0]
        assert 1 == len(runs) and chatml_run_matches(runs[0], "Fine.<|im_end|>")


class TestTrustedKeys:
    def _fake_batch(self, collator) -> tuple[dict, torch.Tensor]:
        sample = {**_image_exchange(Image.new("RGB", (56, 56), "red")), "_injected_fake": True}
        batch = collator([sample])
        tokenizer = collator.processor.tokenizer
        pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        return batch, batch["input_ids"][0] == pad

    def test_raw_rows_cannot_hide_their_images(self, qwen_processor):
        """By default a row's own _injected_fake is ignored: its image stays visible to attention."""
        batch, pads = self._fake_batch(vc.Qwen25VLCollator(processor=qwen_processor))
        assert int(pads.sum()) > 0
        assert bool((batch["attention_mask"][0][pads] == 1).all())

    def test_opt_in_hides_fake_images(self, qwen_processor):
        """With trusted_keys=('_injected_fake',) the placeholder image gets attention 0."""
        collator = vc.Qwen25VLCollator(processor=qwen_processor, trusted_keys=("_injected_fake",))
        batch, pads = self._fake_batch(collator)
        assert bool((batch["attention_mask"][0][pads] == 0).all())

    def test_compat_keeps_the_seed_behaviour(self, qwen_processor):
        """The seed's qwen2_5_collate_fn trusts _injected_fake, as NeMo's dataset wrapper needs."""
        sample = {**_image_exchange(Image.new("RGB", (56, 56), "red")), "_injected_fake": True}
        batch = compat.qwen2_5_collate_fn([sample], qwen_processor)
        pad = qwen_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        pads = batch["input_ids"][0] == pad
        assert int(pads.sum()) > 0
        assert bool((batch["attention_mask"][0][pads] == 0).all())


class TestArrowNulls:
    def test_null_train_and_weight_mean_not_set(self, qwen_processor):
        """Arrow's "train": None / "weight": None are accepted and change nothing."""
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        plain = collator([_exchange()])
        nulled = {
            "conversation": [
                {"role": "user", "content": "How are you?", "train": None, "weight": None},
                {"role": "assistant", "content": "Fine.", "train": None, "weight": None},
            ]
        }
        batch = collator([nulled])
        assert torch.equal(plain["labels"], batch["labels"])
        assert "train" in nulled["conversation"][0]  # the caller's row is not modified

    def test_set_values_still_checked(self, qwen_processor):
        """A 'train' that is neither None nor a bool is still refused."""
        with pytest.raises(vc.SampleTypeError, match="sample 0, message 1: 'train'"):
            vc.Qwen25VLCollator(processor=qwen_processor)([_exchange(train="no")])


class TestArrayImages:
    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
    @pytest.mark.parametrize("kind", ["numpy", "torch"])
    def test_non_finite_arrays_refused(self, qwen_processor, bad, kind):
        """An image array or tensor holding NaN or inf is a MediaError naming sample, message, item."""
        pixels = np.full((56, 56, 3), 0.5, dtype=np.float32)
        pixels[3, 4, 1] = bad
        image = pixels if kind == "numpy" else torch.from_numpy(pixels)
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        with pytest.raises(vc.MediaError, match="sample 1, message 0, item 0: .*NaN or infinite"):
            collator([_exchange(), _image_exchange(image)])

    def test_finite_and_integer_arrays_accepted(self, qwen_processor):
        """Finite float arrays and uint8 arrays go through to the processor."""
        collator = vc.Qwen25VLCollator(processor=qwen_processor)
        floats = np.full((56, 56, 3), 0.5, dtype=np.float32)
        ints = np.full((56, 56, 3), 7, dtype=np.uint8)
        batch = collator([_image_exchange(floats), _image_exchange(ints)])
        assert [1, 1] == batch["n_images_per_sample"].tolist()
