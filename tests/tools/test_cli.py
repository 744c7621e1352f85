"""The ``vlm-collate`` command line and the inspect renderers, on the bundled example."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

import vlm_collate
from vlm_collate.tools import inspect as inspection
from vlm_collate.tools.cli import main

EXAMPLE = pathlib.Path(vlm_collate.__file__).parent / "data" / "example.jsonl"
TRAINED_SPAN = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)


def read_example() -> list[dict]:
    """The bundled samples, read straight from the file."""
    return [json.loads(line) for line in EXAMPLE.read_text(encoding="utf-8").splitlines() if line]


def message_text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(item["text"] for item in content if item["type"] == "text")


def assistant_texts(samples: list[dict], *, last_only: bool = False) -> list[str]:
    """The answers the default policy trains: assistant texts not flagged "train": false."""
    texts = []
    for sample in samples:
        answers = [
            message_text(message)
            for message in sample["conversation"]
            if message["role"] == "assistant"
        ]
        flags = [
            message.get("train", True)
            for message in sample["conversation"]
            if message["role"] == "assistant"
        ]
        if last_only:
            answers, flags = answers[-1:], flags[-1:]
        texts += [text for text, train in zip(answers, flags, strict=True) if train]
    return texts


def run(*argv: str) -> tuple[int, str, str]:
    """Run the command in-process; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def sample_block(output: str, index: int) -> str:
    """The lines of one sample's section in the plain-text view."""
    start = output.index(f"-- sample {index} ")
    ends = [
        output.find(marker, start + 1) for marker in ("\n-- sample ", "\n== batch ", "\nsummary:")
    ]
    return output[start : min(end for end in ends if end != -1)]


def trained_spans(output: str) -> list[str]:
    """The [[...]] spans of the sample sections (the legend above them shows one too)."""
    return TRAINED_SPAN.findall(output[output.index("== batch") :])


def write_jsonl(path: pathlib.Path, lines: list[str]) -> pathlib.Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def text_sample(question: str, answer: str) -> str:
    conversation = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]
    return json.dumps({"conversation": conversation})


@pytest.fixture(scope="module")
def shifted_run() -> tuple[int, str, str]:
    return run("inspect", "--no-color")


@pytest.fixture(scope="module")
def unshifted_run() -> tuple[int, str, str]:
    return run("inspect", "--no-color", "--no-shift", "--batch-size", "3")


class TestBundledExample:
    def test_has_label_control_keys(self):
        """One sample shows per-message label control: a weight and a "train": false flag."""
        messages = [message for sample in read_example() for message in sample["conversation"]]
        assert any("weight" in message for message in messages)
        assert any(message.get("train") is False for message in messages)

    def test_covers_the_promised_cases(self):
        """The example has 8-12 samples: images, video, text only, multi-turn, system prompt."""
        samples = read_example()
        kinds = {
            item["type"]
            for sample in samples
            for message in sample["conversation"]
            if isinstance(message["content"], list)
            for item in message["content"]
        }
        roles = [[message["role"] for message in sample["conversation"]] for sample in samples]
        assert 8 <= len(samples) <= 12
        assert {"image", "video", "text"} == kinds
        assert any(role_list.count("assistant") >= 2 for role_list in roles)
        assert any("system" in role_list for role_list in roles)
        assert any("assistant" not in role_list for role_list in roles)

    def test_images_include_transparency_and_greyscale(self):
        """The bundled images include an RGBA and a greyscale picture."""
        modes = {Image.open(path).mode for path in (EXAMPLE.parent / "images").iterdir()}
        assert {"RGBA", "L"} <= modes

    def test_media_files_exist_beside_the_jsonl(self):
        """Every media path is relative and names a small file next to example.jsonl."""
        paths = [
            item[item["type"]]
            for sample in read_example()
            for message in sample["conversation"]
            if isinstance(message["content"], list)
            for item in message["content"]
            if item["type"] in ("image", "video")
        ]
        resolved = [EXAMPLE.parent / path for path in paths]
        assert [] == [path for path in paths if os.path.isabs(path)]
        assert [] == [str(path) for path in resolved if not path.is_file()]
        assert [] == [str(path) for path in resolved if path.stat().st_size > 20_000]


class TestInspectLabelPolicy:
    def test_last_turn_only(self):
        """--turns last trains only each sample's last answer (unless it is flagged off)."""
        status, output, _ = run("inspect", "--no-color", "--turns", "last")
        spans = trained_spans(output)
        answers = assistant_texts(read_example(), last_only=True)
        assert 0 == status
        assert [answer + "<|im_end|>" for answer in answers] == [
            span.lstrip("\n") for span in spans
        ]

    @pytest.mark.parametrize("option", ["--train-on-end-of-turn", "--end-of-turn"])
    def test_end_of_turn_never(self, option):
        """--train-on-end-of-turn never (or --end-of-turn) trains answers without <|im_end|>."""
        status, output, _ = run("inspect", "--no-color", option, "never")
        spans = trained_spans(output)
        assert 0 == status
        assert assistant_texts(read_example()) == [span.lstrip("\n") for span in spans]
        assert "train_on_end_of_turn='never'" in output

    def test_loss_weights_are_shown(self):
        """--loss-weights marks a run whose message weight is not 1 with {w=...}."""
        weighted = [
            (message_text(message), message["weight"])
            for sample in read_example()
            for message in sample["conversation"]
            if "weight" in message
        ]
        status, output, _ = run("inspect", "--no-color", "--loss-weights")
        assert 0 == status
        for text, weight in weighted:
            assert f"[[{text}<|im_end|>]]{{w={weight:g}}}" in output
        assert "loss_weights=True" in output

    def test_roles_and_reasoning_reach_the_policy(self):
        """--roles and --reasoning appear in the settings line the collator was built with."""
        status, output, _ = run(
            "inspect", "--no-color", "--roles", "assistant,user", "--reasoning", "skip_empty"
        )
        assert 0 == status
        assert "roles='assistant,user'" in output
        assert "reasoning='skip_empty'" in output

    @pytest.mark.parametrize("value", ["0", "first", "-1"])
    def test_bad_turns_is_a_usage_error(self, value, capsys):
        """--turns takes all, last or a positive integer."""
        with pytest.raises(SystemExit) as caught:
            main(["inspect", "--turns", value])
        assert 2 == caught.value.code
        assert "--turns" in capsys.readouterr().err


class TestInspectCommand:
    def test_exits_zero(self, shifted_run):
        """Inspecting the bundled example succeeds although one sample trains nothing."""
        status, _, stderr = shifted_run
        assert (0, "") == (status, stderr)

    def test_mentions_every_sample(self, shifted_run):
        """Every sample gets a header with its index and id."""
        output = shifted_run[1]
        expected = [
            f"-- sample {index} [{sample['id']}]" for index, sample in enumerate(read_example())
        ]
        assert expected == [header for header in expected if header in output]

    @pytest.mark.parametrize("which", ["shifted_run", "unshifted_run"])
    def test_trained_spans_are_the_assistant_turns(self, which, request):
        """Each assistant turn starts a [[trained]] span, and nothing else is trained."""
        output = request.getfixturevalue(which)[1]
        spans = trained_spans(output)
        answers = assistant_texts(read_example())
        assert len(answers) == len(spans)
        assert answers == [
            answer for answer, span in zip(answers, spans, strict=True) if span.startswith(answer)
        ]

    def test_trained_token_count(self, shifted_run, qwen_processor):
        """The summary counts each answer's tokens plus its <|im_end|>."""
        tokenizer = qwen_processor.tokenizer
        expected = sum(
            len(tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"])
            for answer in assistant_texts(read_example())
        )
        summary = shifted_run[1].strip().splitlines()[-1]
        assert f"{expected} trained tokens" in summary

    def test_summary_counts_samples(self, shifted_run):
        """The summary line names the sample count and that nothing was dropped."""
        count = len(read_example())
        summary = shifted_run[1].strip().splitlines()[-1]
        assert summary.startswith(
            f"summary: {count} samples, {count} rows kept, 0 dropped, 0 truncated"
        )

    def test_warns_about_the_sample_without_answer(self, shifted_run):
        """The sample with no assistant turn is shown with an empty-label warning."""
        output = shifted_run[1]
        index = next(
            position
            for position, sample in enumerate(read_example())
            if all(message["role"] != "assistant" for message in sample["conversation"])
        )
        block = sample_block(output, index)
        assert "warning: no token would be trained" in block
        assert "[[" not in block

    def test_media_placeholders_are_collapsed(self, shifted_run):
        """Runs of image and video placeholder tokens print as '<token> xN'."""
        output = shifted_run[1]
        assert re.search(r"<\|image_pad\|> x\d+", output)
        assert re.search(r"<\|video_pad\|> x\d+", output)
        assert "<|image_pad|><|image_pad|>" not in output

    def test_not_a_terminal_means_no_colour(self):
        """Without a TTY the output is plain text with [[...]] markers, even without --no-color."""
        status, output, _ = run("inspect", "--limit", "1")
        assert 0 == status
        assert "\x1b[" not in output
        assert f"[[{assistant_texts(read_example()[:1])[0]}" in output

    def test_small_max_length_drops_every_sample(self, qwen_processor):
        """With max_length below the default system prompt, every sample is reported dropped."""
        system_prompt = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        assert len(qwen_processor.tokenizer(system_prompt)["input_ids"]) > 10
        count = len(read_example())
        status, output, _ = run("inspect", "--no-color", "--max-length", "10")
        assert 0 == status
        assert count == output.count("DROPPED (overlong)")
        assert f"summary: {count} samples, 0 rows kept, {count} dropped" in output

    def test_max_length_drops_only_the_long_sample(self, tmp_path):
        """A sample far over max_length is dropped and its batch neighbour kept."""
        data = write_jsonl(
            tmp_path / "mixed.jsonl",
            [text_sample("Hi", "Hello."), text_sample("Talk", "word " * 200)],
        )
        status, output, _ = run("inspect", str(data), "--no-color", "--max-length", "60")
        assert 0 == status
        assert "DROPPED" not in sample_block(output, 0)
        assert "DROPPED (overlong)" in sample_block(output, 1)
        assert "summary: 2 samples, 1 row kept, 1 dropped" in output

    def test_html_page_holds_every_answer_as_data(self, tmp_path):
        """--html writes a standalone page whose trained tokens spell every answer, never as markup."""
        page = tmp_path / "view.html"
        status, _, _ = run("inspect", "--no-color", "--html", str(page))
        text = page.read_text(encoding="utf-8")
        data = re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)
        trained = [
            "".join(
                piece for piece, kind in zip(s["pieces"], s["kinds"], strict=True) if kind == "t"
            )
            for s in json.loads(data.group(1))["samples"]
        ]
        answers = assistant_texts(read_example())
        assert 0 == status
        assert answers == [answer for answer in answers if any(answer in t for t in trained)]
        assert "<b>3" not in text
        assert [] == re.findall(r"https?://|<link|<script src|src=", text)

    def test_local_processor_directory(self, tmp_path, qwen_processor):
        """--processor PATH loads a saved processor offline and inspects with it."""
        qwen_processor.save_pretrained(tmp_path / "processor")
        status, output, _ = run(
            "inspect", "--no-color", "--limit", "1", "--processor", str(tmp_path / "processor")
        )
        first_answer = assistant_texts(read_example()[:1])[0]
        assert 0 == status
        assert f"[[{first_answer}" in output

    def test_left_padding_sentencepiece_family(self):
        """LLaVA-NeXT (left padding, SentencePiece) marks the answers too."""
        status, output, _ = run(
            "inspect", "--no-color", "--limit", "2", "--processor", "llava_next_mistral"
        )
        answers = assistant_texts(read_example()[:2])
        spans = [span.strip() for span in trained_spans(output)]
        assert 0 == status
        assert answers == [
            answer for answer, span in zip(answers, spans, strict=True) if span.startswith(answer)
        ]


class TestInspectErrors:
    def test_broken_json_line(self, tmp_path, capsys):
        """A line that is not JSON exits with status 2 and names the line."""
        data = write_jsonl(tmp_path / "broken.jsonl", [text_sample("Hi", "Hello."), "{not json"])
        status = main(["inspect", str(data)])
        stderr = capsys.readouterr().err
        assert 2 == status
        assert "line 2: invalid JSON" in stderr
        assert "Traceback" not in stderr
        assert 1 == len(stderr.strip().splitlines())

    def test_missing_image_names_sample_and_line(self, tmp_path, capsys):
        """A missing image in the second batch is reported with its file index and line."""
        bad = {
            "conversation": [
                {"role": "user", "content": [{"type": "image", "image": "missing.png"}]},
                {"role": "assistant", "content": "Nothing."},
            ]
        }
        lines = [text_sample("Hi", "Hello.")] * 5 + ["", json.dumps(bad)]
        data = write_jsonl(tmp_path / "missing.jsonl", lines)
        status = main(["inspect", str(data), "--batch-size", "4"])
        stderr = capsys.readouterr().err
        assert 2 == status
        assert "sample 5, message 0, item 0" in stderr
        assert "line 7" in stderr
        assert str(tmp_path / "missing.png") in stderr

    def test_strict_policy_error_is_one_line(self, capsys):
        """--empty-labels raise turns the bad sample into a one-line error, exit status 2."""
        index = next(
            position
            for position, sample in enumerate(read_example())
            if all(message["role"] != "assistant" for message in sample["conversation"])
        )
        status = main(["inspect", "--empty-labels", "raise"])
        stderr = capsys.readouterr().err
        assert 2 == status
        assert stderr.startswith(f"vlm-collate: error: sample {index}:")
        assert 1 == len(stderr.strip().splitlines())

    def test_unknown_processor(self, capsys):
        """An unknown family that is no directory exits with status 2 and lists the families."""
        status = main(["inspect", "--processor", "no_such_family"])
        stderr = capsys.readouterr().err
        assert 2 == status
        assert "qwen2_5_vl" in stderr

    def test_missing_data_file(self, tmp_path, capsys):
        """A data path that does not exist exits with status 2."""
        status = main(["inspect", str(tmp_path / "nope.jsonl")])
        assert 2 == status
        assert "does not exist" in capsys.readouterr().err


class TestRenderText:
    @pytest.fixture(scope="class")
    @classmethod
    def result(cls, qwen_processor):
        records = inspection.load_jsonl(EXAMPLE, limit=2)
        collator = vlm_collate.collator_for(qwen_processor, empty_labels="warn")
        return inspection.inspect_samples(collator, records, batch_size=2)

    def test_colour_marks_trained_tokens(self, result):
        """With colour on, the first answer sits inside a green-background escape sequence."""
        output = inspection.render_text(result, color=True)
        answer = assistant_texts(read_example()[:1])[0]
        assert "[[" not in output
        assert re.search(r"\x1b\[[0-9;]*42m" + re.escape(answer), output)

    def test_plain_and_colour_show_the_same_text(self, result):
        """Removing the colour codes and the markers leaves the same text."""
        plain = inspection.render_text(result, color=False)
        coloured = inspection.render_text(result, color=True)
        unmarked = re.sub(r"\[\[|\]\]|\{pad |\}", "", plain)
        uncoloured = re.sub(r"\x1b\[[0-9;]*m", "", coloured)
        assert unmarked[unmarked.index("== batch") :] == uncoloured[uncoloured.index("== batch") :]


class TestBenchCommand:
    def test_forwards_arguments(self, monkeypatch):
        """'vlm-collate bench ARGS' calls vlm_collate.tools.bench.main with ARGS."""
        from vlm_collate.tools import bench

        received = []

        def fake_main(argv=None):
            received.append(argv)
            return 7

        monkeypatch.setattr(bench, "main", fake_main)
        assert 7 == main(["bench", "--quick", "--batch-size", "2"])
        assert [["--quick", "--batch-size", "2"]] == received


class TestConsoleScript:
    def test_runs_installed_command(self):
        """The installed console script (or python -m vlm_collate) inspects the example."""
        script = shutil.which("vlm-collate")
        command = [script] if script else [sys.executable, "-m", "vlm_collate"]
        completed = subprocess.run(
            [*command, "inspect", "--no-color", "--limit", "2"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert 0 == completed.returncode, completed.stderr
        assert "summary: 2 samples, 2 rows kept" in completed.stdout
