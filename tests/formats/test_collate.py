"""Rows of every format through real collators: trained text, pixels, roles, DataLoader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vlm_collate as vc
from tests.helpers.media_files import quadrants, write_video
from vlm_collate.formats import get_format
from vlm_collate.testing import build_processor, decoded_label_runs

from .rows import BUILDERS, wav_bytes

END = "<|im_end|>"


def grids(sizes) -> list[list[int]]:
    """Qwen2.5-VL's (t, h, w) patch grid of each image (14-pixel patches, no resize)."""
    return [[1, height // 14, width // 14] for width, height in sizes]


def gpt_row() -> dict:
    return {
        "conversation": [
            {"role": "human", "content": "Hi"},
            {"role": "gpt", "content": "Hello."},
        ]
    }


class TestEveryFormat:
    @pytest.mark.parametrize("name", sorted(BUILDERS))
    def test_trains_the_answers_and_carries_every_image(self, name, tmp_path, qwen_processor):
        """Each format's row trains exactly its answers and brings each image's pixels."""
        row, answers, sizes = BUILDERS[name](tmp_path)
        collator = vc.collator_for(qwen_processor, format=get_format(name, base=tmp_path))
        batch = collator([row])
        assert [[answer + END for answer in answers]] == decoded_label_runs(
            batch["labels"], collator.tokenizer
        )
        assert grids(sizes) == batch["image_grid_thw"].tolist()
        patches = sum(t * h * w for t, h, w in grids(sizes))
        assert patches == batch["pixel_values"].shape[0]

    @pytest.mark.parametrize("name", sorted(BUILDERS))
    def test_auto_reads_each_format(self, name, tmp_path, qwen_processor):
        """format='auto' finds each format and trains the same answers."""
        row, answers, _ = BUILDERS[name](tmp_path)
        collator = vc.collator_for(qwen_processor, format=get_format("auto", base=tmp_path))
        runs = decoded_label_runs(collator([row])["labels"], collator.tokenizer)
        assert [[answer + END for answer in answers]] == runs

    def test_rows_are_not_mutated(self, tmp_path, qwen_processor):
        """Converting and collating leaves the caller's row as it was."""
        row, _, _ = BUILDERS["sharegpt"](tmp_path)
        before = repr(row)
        vc.collator_for(qwen_processor, format=get_format("sharegpt", base=tmp_path))([row])
        assert before == repr(row)

    def test_video_placeholder(self, tmp_path, qwen_processor):
        """A ShareGPT '<video>' row brings a video grid for the PyAV-written clip."""
        frames = [quadrants(56, 56) for _ in range(4)]
        write_video(tmp_path / "clip.mp4", frames)
        row = {
            "video": "clip.mp4",
            "conversations": [
                {"from": "human", "value": "<video>\nWhat moves?"},
                {"from": "gpt", "value": "Nothing."},
            ],
        }
        collator = vc.collator_for(qwen_processor, format=get_format("sharegpt", base=tmp_path))
        batch = collator([row])
        assert [["Nothing." + END]] == decoded_label_runs(batch["labels"], collator.tokenizer)
        assert [4, 4] == batch["video_grid_thw"][0, 1:].tolist()
        assert 1 == batch["video_grid_thw"].shape[0]


class TestAudio:
    @pytest.fixture(scope="class")
    @classmethod
    def phi4(cls):
        return build_processor("phi4_mm")

    def test_openai_input_audio(self, phi4):
        """An OpenAI input_audio item reaches Phi-4's audio features; the answer is trained."""
        import base64

        data = base64.b64encode(wav_bytes()).decode()
        row = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
                        {"type": "text", "text": "Transcribe."},
                    ],
                },
                {"role": "assistant", "content": "A tone."},
            ]
        }
        collator = vc.collator_for(phi4, format="openai")
        batch = collator([row])
        assert [["A tone.<|end|>"]] == decoded_label_runs(batch["labels"], collator.tokenizer)
        assert 1 == batch["audio_embed_sizes"].shape[0]

    def test_sharegpt_audio_arrays(self, phi4):
        """Two '<audio>' placeholders take two arrays from 'audios', in order."""
        tone = np.sin(np.arange(8000, dtype=np.float32) / 10)
        row = {
            "audios": [
                {"array": tone, "sampling_rate": 16000},
                {"array": tone[:4000], "sampling_rate": 16000},
            ],
            "conversations": [
                {"from": "human", "value": "<audio><audio>Which is longer?"},
                {"from": "gpt", "value": "The first."},
            ],
        }
        collator = vc.collator_for(phi4, format="sharegpt")
        batch = collator([row])
        assert [["The first.<|end|>"]] == decoded_label_runs(batch["labels"], collator.tokenizer)
        sizes = batch["audio_embed_sizes"].tolist()
        assert 2 == len(sizes) and sizes[0] > sizes[1]


class TestRoleChecks:
    def test_sharegpt_roles_in_own_format_are_refused(self, qwen_processor):
        """human/gpt in the default format: refused, naming the roles found and expected."""
        collator = vc.collator_for(qwen_processor)
        with pytest.raises(vc.SampleError) as caught:
            collator([gpt_row()])
        message = str(caught.value)
        assert message.startswith("sample 0, message 0: role 'human' is not a role")
        assert "roles found: human, gpt; expected: system, user, assistant, tool" in message
        assert "pass format='sharegpt'" in message

    def test_misspelled_role_is_refused(self, qwen_processor):
        """A misspelled 'usr' is refused rather than rendered into the prompt."""
        row = {
            "conversation": [
                {"role": "usr", "content": "Hi"},
                {"role": "assistant", "content": "Yo"},
            ]
        }
        with pytest.raises(vc.SampleError, match="role 'usr' is not a role"):
            vc.collator_for(qwen_processor)([row])

    def test_capitalised_role_hint(self, qwen_processor):
        """'Assistant' gets a case-sensitivity hint."""
        row = {
            "conversation": [
                {"role": "user", "content": "Hi"},
                {"role": "Assistant", "content": "Yo"},
            ]
        }
        with pytest.raises(vc.SampleError, match="case-sensitive: use 'assistant'"):
            vc.collator_for(qwen_processor)([row])

    def test_warn_keeps_the_sample_and_reports_it(self, qwen_processor, text_row):
        """unknown_roles='warn' keeps training and puts the warning in the report."""
        collator = vc.collator_for(qwen_processor, unknown_roles="warn", empty_labels="warn")
        collator([text_row, gpt_row()])
        warnings = [(w.index, w.reason) for w in collator.last_report.warnings]
        assert (1, "unknown_role") in warnings

    def test_drop_reports_the_sample(self, qwen_processor, text_row):
        """unknown_roles='drop' drops the sample, with its reason in the report."""
        collator = vc.collator_for(qwen_processor, unknown_roles="drop")
        batch = collator([text_row, gpt_row()])
        assert 1 == batch["input_ids"].shape[0]
        assert [(1, "unknown_role")] == [(d.index, d.reason) for d in collator.last_report.dropped]

    def test_trained_roles_count_as_known(self, qwen_processor):
        """A role the label policy trains is known, and its text is trained."""
        row = {
            "conversation": [
                {"role": "user", "content": "Hi"},
                {"role": "critic", "content": "Fine."},
            ]
        }
        collator = vc.collator_for(qwen_processor, label_policy={"roles": ("assistant", "critic")})
        runs = decoded_label_runs(collator([row])["labels"], collator.tokenizer)
        assert [["Fine." + END]] == runs

    def test_empty_labels_say_why_in_data_terms(self, qwen_processor):
        """With the role check off, zero trained tokens name the roles and the format to pass."""
        collator = vc.collator_for(qwen_processor, unknown_roles="allow", empty_labels="raise")
        with pytest.raises(vc.EmptyLabelsError) as caught:
            collator([gpt_row()])
        assert "roles found: human, gpt; trained: assistant; pass format='sharegpt'" in str(
            caught.value
        )

    def test_bad_policy_value(self, qwen_processor):
        """An unknown unknown_roles value is a ConfigurationError."""
        with pytest.raises(vc.ConfigurationError, match="'unknown_roles' must be one of"):
            vc.collator_for(qwen_processor, unknown_roles="ignore")


@pytest.fixture
def text_row() -> dict:
    return {
        "conversation": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
        ]
    }


def arrow_ready(row: dict) -> dict:
    """The row with string content as text items, since Arrow cannot mix strings and lists."""
    for key in ("conversation", "messages"):
        messages = row.get(key)
        if messages and any(isinstance(m["content"], list) for m in messages):
            row = {
                **row,
                key: [
                    {**m, "content": [{"type": "text", "text": m["content"]}]}
                    if isinstance(m["content"], str)
                    else m
                    for m in messages
                ],
            }
    return row


class TestDatasetsDataLoader:
    @pytest.mark.parametrize("name", sorted(BUILDERS))
    def test_arrow_rows_through_a_dataloader(self, name, tmp_path, qwen_processor):
        """A datasets.Dataset of each format, fed through a DataLoader, trains every answer."""
        datasets = pytest.importorskip("datasets", reason="needs the 'datasets' package")
        row, answers, sizes = BUILDERS[name](tmp_path)
        dataset = datasets.Dataset.from_list([arrow_ready(row)] * 2)
        collator = vc.collator_for(qwen_processor, format=get_format(name, base=tmp_path))
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collator)
        batch = next(iter(loader))
        expected = [[answer + END for answer in answers]] * 2
        assert expected == decoded_label_runs(batch["labels"], collator.tokenizer)
        assert grids(sizes) * 2 == batch["image_grid_thw"].tolist()


class TestPretokenize:
    def test_format_option(self, tmp_path, qwen_processor):
        """pretokenize(format='sharegpt') stores the same labels the collator builds."""
        datasets = pytest.importorskip("datasets", reason="needs the 'datasets' package")
        row, answers, _ = BUILDERS["sharegpt"](tmp_path)
        collator = vc.collator_for(qwen_processor)
        stored = vc.pretokenize(
            datasets.Dataset.from_list([row]),
            collator,
            format=get_format("sharegpt", base=tmp_path),
        )
        labels = stored[0]["labels"][None]
        assert [[answer + END for answer in answers]] == decoded_label_runs(
            labels, collator.tokenizer
        )


class TestHalfConvertedRow:
    def test_default_format_refuses_it_in_the_collator(self, qwen_processor):
        """The half-converted ShareGPT row never reaches the tokenizer as '<image>' text."""
        row = {
            "image": "cat.jpg",
            "conversation": [
                {"role": "user", "content": "<image>\nWhat is this?"},
                {"role": "assistant", "content": "A cat."},
            ],
        }
        collator = vc.collator_for(qwen_processor, empty_labels="drop")
        with pytest.raises(vc.SampleError) as caught:
            collator([row])
        assert (0, 0) == (caught.value.sample_index, caught.value.message_index)
        assert "pass format='sharegpt'" in str(caught.value)
