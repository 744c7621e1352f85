"""Options are validated at construction: the wrong type is a ConfigurationError, never later."""

from __future__ import annotations

import pytest
import torch

import vlm_collate as vc
from vlm_collate.families.nemotron_omni import NemotronOmniCollator
from vlm_collate.families.nemotron_parse import NemotronParseCollator
from vlm_collate.families.qwen_omni import Qwen3OmniCollator


def _refused(factory, match: str) -> None:
    with pytest.raises(vc.ConfigurationError, match=match):
        factory()


class TestBaseCollatorOptions:
    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("shift_labels", "False"),
            ("shift_labels", 0),
            ("shift_labels", None),
            ("drop_overlong", "no"),
            ("drop_overlong", 1),
            ("max_length", True),
            ("max_length", 12.0),
            ("max_length", "64"),
            ("pad_to_multiple_of", 0),
            ("pad_to_multiple_of", 2**40),
            ("max_length", 2**24 + 1),
            ("max_image_pixels", None),
            ("max_image_pixels", 2.5),
            ("padding", True),
            ("padding_side", "middle"),
            ("empty_labels", ["raise"]),
            ("overlong", None),
            ("processor_kwargs", "padding=True"),
            ("processor_kwargs", {1: 2}),
            ("trusted_keys", ["_anything"]),
            ("trusted_keys", 5),
        ],
    )
    def test_wrong_type_or_value(self, qwen_processor, option, value):
        """Each option refuses a value of the wrong type or range, naming the option and value."""
        _refused(lambda: vc.Qwen25VLCollator(processor=qwen_processor, **{option: value}), option)

    @pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.uint8, "int32", "long", 3])
    def test_pixel_dtype_must_be_floating(self, qwen_processor, dtype):
        """An integer or bool pixel dtype is refused (it would give integer pixels)."""
        _refused(lambda: vc.Qwen25VLCollator(processor=qwen_processor, pixel_dtype=dtype), "float")

    @pytest.mark.parametrize(
        ("dtype", "expected"),
        [
            (torch.float16, torch.float16),
            ("bfloat16", torch.bfloat16),
            ("torch.float32", torch.float32),
            ("auto", "auto"),
            (None, None),
        ],
    )
    def test_floating_pixel_dtypes_accepted(self, qwen_processor, dtype, expected):
        """Floating dtypes, their names, 'auto' and None are accepted."""
        assert (
            expected == vc.Qwen25VLCollator(processor=qwen_processor, pixel_dtype=dtype).pixel_dtype
        )

    def test_trusted_keys_accepts_one_name(self, qwen_processor):
        """trusted_keys takes a single name or a list of the known steering keys."""
        single = vc.Qwen25VLCollator(processor=qwen_processor, trusted_keys="_injected_fake")
        listed = vc.Qwen25VLCollator(processor=qwen_processor, trusted_keys=["_injected_fake"])
        assert ("_injected_fake",) == single.trusted_keys == listed.trusted_keys

    def test_message_names_field_expectation_and_value(self, qwen_processor):
        """The message reads as attrs would: field, expectation, the value given."""
        with pytest.raises(vc.ConfigurationError) as caught:
            vc.Qwen25VLCollator(processor=qwen_processor, shift_labels="False")
        assert "'shift_labels' must be True or False (got 'False')." == str(caught.value)


class TestFamilyOptions:
    def test_qwen_omni_use_audio_in_video_is_bool(self):
        """Qwen3-Omni's use_audio_in_video must be a bool."""
        from vlm_collate.testing import build_processor

        processor = build_processor("qwen3_omni")
        _refused(
            lambda: Qwen3OmniCollator(processor=processor, use_audio_in_video="yes"),
            "use_audio_in_video",
        )

    def test_nemotron_options(self):
        """Nemotron-Parse takes a str task prompt, an id >= 0, and only right padding."""
        from vlm_collate.testing import build_processor

        processor = build_processor("nemotron_parse")
        _refused(lambda: NemotronParseCollator(processor=processor, task_prompt=5), "task_prompt")
        _refused(
            lambda: NemotronParseCollator(processor=processor, decoder_start_token_id=-1),
            "decoder_start_token_id",
        )
        _refused(
            lambda: NemotronParseCollator(processor=processor, padding_side="left"),
            "Nemotron-Parse",
        )

    def test_nemotron_omni_frames(self):
        """Nemotron-Omni's max_video_frames is an int of at least 2."""
        from vlm_collate.testing import build_processor

        processor = build_processor("nemotron_omni")
        for value in (1, 4.0, True):
            _refused(
                lambda value=value: NemotronOmniCollator(
                    processor=processor, max_video_frames=value
                ),
                "max_video_frames",
            )


class TestPreTokenizedOptions:
    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("shift_labels", "False"),
            ("pad_token_id", -1),
            ("pad_token_id", True),
            ("vocab_size", 0),
            ("pixel_dtype", torch.int64),
            ("pixel_dtype", "auto"),
            ("max_length", False),
        ],
    )
    def test_pretokenized_collator(self, option, value):
        """PreTokenizedCollator refuses wrong option types at construction."""
        _refused(lambda: vc.PreTokenizedCollator(**{option: value}), option.split("_")[0])

    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("materialize_4d_mask", "no"),
            ("padding_idx", -1),
            ("padding_idx", 1.0),
            ("pixel_dtype", torch.bool),
            ("attn_implementation", "flash"),
        ],
    )
    def test_neat_packed_collator(self, option, value):
        """NeatPackedCollator refuses wrong option types at construction."""
        _refused(lambda: vc.NeatPackedCollator(**{option: value}), option.split("_")[0])


class TestLabelPolicyOptions:
    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("loss_weights", "yes"),
            ("weight", 0.5),
            ("roles", 5),
            ("turns", 0),
            ("turns", True),
            ("reasoning_markers", "<think>"),
        ],
    )
    def test_refused(self, option, value):
        """LabelPolicy refuses wrong option types, also when given as a mapping."""
        _refused(lambda: vc.LabelPolicy(**{option: value}), option)
        _refused(lambda: vc.LabelPolicy.coerce({option: value}), option)

    def test_marker_fields_are_strings(self):
        """ReasoningMarkers takes strings only."""
        _refused(lambda: vc.LabelPolicy.coerce({"reasoning_markers": [1, 2]}), "open_token")
