"""The command line on real dataset files: every reader, bad rows, safe output, convert."""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import re
import subprocess
import sys

import pytest

from tests.formats.rows import sharegpt
from vlm_collate.tools import cli, datafiles
from vlm_collate.tools import inspect as inspection
from vlm_collate.tools.cli import main

TRAINED = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)
END = "<|im_end|>"


def run(*argv: str) -> tuple[int, str, str]:
    """Run the command in-process; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def trained(output: str) -> list[str]:
    return TRAINED.findall(output[output.index("== batch") :])


def chat(question: str, answer: str, role: str = "user") -> dict:
    return {
        "conversation": [
            {"role": role, "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def write_jsonl(path: pathlib.Path, rows: list) -> pathlib.Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_directory(path: pathlib.Path) -> pathlib.Path:
    path.mkdir()
    return path


def make_binary(path: pathlib.Path) -> pathlib.Path:
    """The first bytes of a PNG file, under a data file's name."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    return path


class TestReaders:
    def test_pretty_printed_llava_json_array(self, tmp_path):
        """A pretty-printed LLaVA .json array is read with auto format and relative images."""
        rows = [sharegpt(tmp_path)[0], sharegpt(tmp_path)[0]]
        (tmp_path / "llava.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
        status, out, err = run("inspect", str(tmp_path / "llava.json"), "--no-color")
        assert (0, "") == (status, err)
        assert ["Red and blue." + END, "Green and yellow." + END] * 2 == trained(out)
        assert f"note: relative media paths are resolved against {tmp_path}" in out

    def test_broken_json_array_names_line_and_column(self, tmp_path):
        """A JSON array broken on line 3 gives that line and column, one line, exit 2."""
        (tmp_path / "bad.json").write_text('[\n  {"a": 1},\n  {"b": }\n]\n', encoding="utf-8")
        status, _, err = run("inspect", str(tmp_path / "bad.json"))
        assert 2 == status
        assert "invalid JSON (Expecting value at line 3, column 9)" in err
        assert 1 == len(err.strip().splitlines())

    def test_json_array_rows_know_their_lines(self, tmp_path):
        """Each element of a JSON array file carries the line it starts on."""
        text = '[\n  {"a": 1},\n  {\n    "b": 2\n  }\n]\n'
        (tmp_path / "rows.json").write_text(text, encoding="utf-8")
        assert [2, 3] == [row.line for row in datafiles.read_rows(tmp_path / "rows.json")]

    def test_parquet_with_datasets_images(self, tmp_path):
        """Parquet rows whose images are {"bytes", "path"} structs are inspected."""
        pa = pytest.importorskip("pyarrow", reason="needs pyarrow")
        import pyarrow.parquet as parquet

        row, answers, _ = sharegpt(tmp_path)
        row["images"] = [
            {"bytes": (tmp_path / name).read_bytes(), "path": None} for name in row["images"]
        ]
        parquet.write_table(pa.Table.from_pylist([row]), tmp_path / "rows.parquet")
        status, out, err = run("inspect", str(tmp_path / "rows.parquet"), "--no-color")
        assert (0, "") == (status, err)
        assert [answer + END for answer in answers] == trained(out)
        assert "(row 0)" in out

    def test_saved_dataset_folder(self, tmp_path):
        """A folder written by save_to_disk is read, relative images against that folder."""
        datasets = pytest.importorskip("datasets", reason="needs the 'datasets' package")
        folder = tmp_path / "saved"
        row, _, _ = sharegpt(tmp_path)
        datasets.Dataset.from_list([row]).save_to_disk(str(folder))
        for name in row["images"]:
            (folder / name).write_bytes((tmp_path / name).read_bytes())
        records = inspection.load_records(folder)
        assert [str(folder / name) for name in row["images"]] == [
            item["image"]
            for message in records[0].example["conversation"]
            if isinstance(message["content"], list)
            for item in message["content"]
            if item["type"] == "image"
        ]

    def test_loading_script(self, tmp_path):
        """A datasets loading script's builder is run and its rows converted."""
        pytest.importorskip("datasets", reason="needs the 'datasets' package")
        script = tmp_path / "tiny.py"
        script.write_text(
            "import datasets\n\n\n"
            "class Tiny(datasets.GeneratorBasedBuilder):\n"
            "    def _info(self):\n"
            "        turn = {'from': datasets.Value('string'), 'value': datasets.Value('string')}\n"
            "        return datasets.DatasetInfo(features=datasets.Features({'conversations': [turn]}))\n\n"
            "    def _split_generators(self, dl_manager):\n"
            "        return [datasets.SplitGenerator(name=datasets.Split.TRAIN)]\n\n"
            "    def _generate_examples(self):\n"
            "        for i in range(2):\n"
            "            turns = [{'from': 'human', 'value': f'Q{i}'}, {'from': 'gpt', 'value': f'A{i}'}]\n"
            "            yield i, {'conversations': turns}\n",
            encoding="utf-8",
        )
        records = inspection.load_records(script)
        assert ["A0", "A1"] == [record.example["conversation"][1]["content"] for record in records]

    @pytest.mark.parametrize(
        ("make", "expected"),
        [(make_directory, "is a directory, not a data file"), (make_binary, "is a binary file")],
        ids=["directory", "binary"],
    )
    def test_not_a_data_file_is_one_line(self, tmp_path, make, expected):
        """A directory or a binary file: one line on stderr, exit status 2."""
        path = make(tmp_path / "data")
        status, out, err = run("inspect", str(path))
        assert (2, "") == (status, out)
        assert expected in err
        assert 1 == len(err.strip().splitlines())

    def test_invalid_utf8_and_deep_nesting_are_one_line_each(self, tmp_path):
        """Invalid UTF-8 and deeply nested JSON: one error line each, the good row still shown."""
        path = tmp_path / "mixed.jsonl"
        good = json.dumps(chat("Hi", "Hello."))
        path.write_bytes(
            b"\xff\xfe{}\n"
            + ("[" * 100_000 + "]" * 100_000).encode()
            + b"\n"
            + good.encode()
            + b"\n"
        )
        status, out, err = run("inspect", str(path), "--no-color")
        lines = err.strip().splitlines()
        assert 2 == status
        assert 2 == len(lines)
        assert "line 1: not valid UTF-8 (byte 0xff at column 1)" in lines[0]
        assert "line 2: invalid JSON (nested too deeply to read)" in lines[1]
        assert ["Hello." + END] == trained(out)
        assert "Traceback" not in err


class TestKeepGoing:
    @pytest.fixture
    def data(self, tmp_path) -> pathlib.Path:
        missing = {
            "conversation": [
                {"role": "user", "content": [{"type": "image", "image": "missing.png"}]},
                {"role": "assistant", "content": "Nothing."},
            ]
        }
        rows = [chat("Hi", "Hello."), missing, chat("Yo", "Hey.", role="usr"), chat("Bye", "Ciao.")]
        return write_jsonl(tmp_path / "rows.jsonl", rows)

    def test_every_bad_row_is_reported(self, data):
        """Two bad rows: both on stderr with their lines, the good rows trained, exit 2."""
        status, out, err = run("inspect", str(data), "--no-color", "--unknown-roles", "raise")
        lines = err.strip().splitlines()
        assert 2 == status
        assert 2 == len(lines)
        assert lines[0].startswith("vlm-collate: error: sample 1, message 0, item 0:")
        assert "(line 2)" in lines[0]
        assert "role 'usr' is not a role" in lines[1] and "(line 3)" in lines[1]
        assert ["Hello." + END, "Ciao." + END] == trained(out)
        assert 2 == out.count("REFUSED:")

    def test_fail_fast_stops_at_the_first(self, data):
        """--fail-fast reports only the first bad row and shows no report."""
        status, out, err = run("inspect", str(data), "--fail-fast", "--unknown-roles", "raise")
        assert (2, "") == (status, out)
        assert 1 == len(err.strip().splitlines())
        assert "sample 1, message 0, item 0" in err

    def test_hints_are_worded_as_flags(self, data):
        """A hint in an error names the command-line flag, not the Python option."""
        _, _, err = run("inspect", str(data), "--unknown-roles", "raise")
        assert "--unknown-roles warn" in err
        assert "unknown_roles=" not in err


class TestTerminalSafety:
    def test_escape_sequences_from_the_data_are_escaped(self, tmp_path):
        """An answer that sets the title and clears the screen is printed as visible escapes."""
        answer = "Hi\x1b]0;owned\x07 there\x1b[2J\u202e."
        data = write_jsonl(tmp_path / "evil.jsonl", [chat("Q", answer)])
        status, out, _ = run("inspect", str(data), "--no-color")
        assert 0 == status
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
        assert "Hi\\x1b]0;owned\\x07 there\\x1b[2J\\u202e." + END in trained(out)

    def test_closed_pipe_stops_quietly(self, monkeypatch, capsys):
        """A reader that goes away (| head) ends the command quietly with status 0."""

        class ClosedPipe(io.StringIO):
            def write(self, text):
                raise BrokenPipeError

        monkeypatch.setattr(cli, "_inspect", lambda options: sys.stdout.write("x"))
        monkeypatch.setattr(sys, "stdout", ClosedPipe())
        assert 0 == main(["inspect"])
        assert "" == capsys.readouterr().err

    def test_html_folder_is_checked_before_any_work(self, tmp_path, monkeypatch):
        """--html into a missing folder fails at once, before a processor is built."""

        def never(name):
            raise AssertionError("the processor was loaded")

        monkeypatch.setattr(cli, "_load_processor", never)
        status, _, err = run("inspect", "--html", str(tmp_path / "nope" / "out.html"))
        assert 2 == status
        assert "does not exist" in err


class TestLightCommandLine:
    @pytest.mark.parametrize("argument", ["--help", "--version", "inspect --help"])
    def test_no_torch_or_transformers(self, argument):
        """--help and --version import neither torch nor transformers."""
        code = (
            "import sys\n"
            "from vlm_collate.tools.cli import main\n"
            "try:\n"
            f"    main({argument.split()!r})\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
        )
        completed = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
        )
        assert "[]" == completed.stdout.strip().splitlines()[-1]

    def test_version(self, capsys):
        """--version prints the package version."""
        import vlm_collate

        with pytest.raises(SystemExit):
            main(["--version"])
        assert f"vlm-collate {vlm_collate.__version__}" == capsys.readouterr().out.strip()

    def test_inspect_help_lists_the_families(self, capsys):
        """inspect --help names every vlm_collate.testing family, and the list is current."""
        from vlm_collate.testing import FAMILIES

        with pytest.raises(SystemExit):
            main(["inspect", "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert sorted(FAMILIES) == list(cli.FAMILY_NAMES)
        assert all(name in text for name in FAMILIES)


class TestLinearTime:
    def test_decoding_a_row_is_linear(self):
        """The tokens decoded to show a row grow linearly with its turns, not quadratically."""

        class CountingTokenizer:
            decoded = 0

            def decode(self, ids, **options):
                self.decoded += len(ids)
                return "".join(f"<{token}>" for token in ids)

            def convert_ids_to_tokens(self, token):
                return f"<{token}>"

        def decoded(turns: int) -> int:
            ids = list(range(turns * 4))
            kinds = (["prompt"] * 2 + ["trained"] * 2) * turns
            tokenizer = CountingTokenizer()
            segments = list(inspection._segments(ids, kinds, tokenizer))
            assert 2 * turns == len(segments)
            return tokenizer.decoded

        assert decoded(4000) <= 4.5 * decoded(1000)


class TestConvert:
    def test_sharegpt_to_own_jsonl(self, tmp_path):
        """convert writes own-format rows whose media paths still resolve; bad rows reported."""
        row, answers, _ = sharegpt(tmp_path)
        bad = {**row, "images": row["images"][:1]}
        data = write_jsonl(tmp_path / "in.jsonl", [row, bad])
        (tmp_path / "out").mkdir()
        out = tmp_path / "out" / "own.jsonl"
        status, _, err = run("convert", str(data), str(out), "--format", "sharegpt")
        lines = err.strip().splitlines()
        assert 2 == status
        assert "sample 1: the sharegpt row holds 2 <image> placeholder(s)" in lines[0]
        assert "(line 2)" in lines[0]
        assert "wrote 1 samples" in lines[-1]
        converted = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert "../image0.png" == converted[0]["conversation"][0]["content"][0]["image"]
        status, report, _ = run("inspect", str(out), "--no-color", "--format", "conversation")
        assert 0 == status
        assert [answer + END for answer in answers] == trained(report)

    def test_parquet_output(self, tmp_path):
        """OUT.parquet holds the converted rows, images as {"bytes", "path"} structs."""
        pytest.importorskip("pyarrow", reason="needs pyarrow")
        import pyarrow as pa
        import pyarrow.parquet as parquet

        from tests.formats.rows import cauldron

        row, _, _ = cauldron(tmp_path)
        sharegpt(tmp_path)  # writes image0.png
        images = [{"bytes": (tmp_path / "image0.png").read_bytes(), "path": None}]
        data = tmp_path / "in.parquet"
        parquet.write_table(pa.Table.from_pylist([{**row, "images": images}]), data)
        status, _, err = run(
            "convert", str(data), str(tmp_path / "own.parquet"), "--format", "cauldron"
        )
        assert 0 == status, err
        rows = [r.value for r in datafiles.read_rows(tmp_path / "own.parquet")]
        first = rows[0]["conversation"][0]["content"][0]
        assert ("image", images[0]["bytes"]) == (first["type"], first["image"]["bytes"])

    def test_existing_output_is_refused(self, tmp_path):
        """An existing OUT is not overwritten without --force."""
        data = write_jsonl(tmp_path / "in.jsonl", [chat("Hi", "Hello.")])
        status, _, err = run("convert", str(data), str(data))
        assert 2 == status
        assert "pass --force" in err
