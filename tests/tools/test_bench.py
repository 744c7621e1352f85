"""The benchmark command: it runs, prints every figure and checks its outputs.

No test here looks at a time: speed is measured by running the benchmark,
never asserted in unit tests.
"""

from __future__ import annotations

import contextlib
import io
import random
import re

import pytest
import torch
from PIL import Image

from vlm_collate.testing import build_processor
from vlm_collate.tools import bench


@pytest.fixture(scope="module")
def quick_run() -> tuple[int, str, int]:
    """Exit status and output of one in-process ``--quick`` run, and torch's threads after it."""
    threads_before = torch.get_num_threads()
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = bench.main(["--quick"])
    assert threads_before == torch.get_num_threads()
    return status, output.getvalue(), threads_before


def line_starting(output: str, prefix: str) -> str:
    found = [line for line in output.splitlines() if line.startswith(prefix)]
    assert 1 == len(found), f"expected one line starting with {prefix!r} in:\n{output}"
    return found[0]


class TestMainQuick:
    def test_exits_zero(self, quick_run):
        """A quick run whose output checks pass exits with status 0."""
        status, _, _ = quick_run
        assert 0 == status

    def test_labels_line_reports_identical_masks(self, quick_run):
        """The label figure names both times, the speed-up and an identical mask."""
        line = line_starting(quick_run[1], "labels:")
        assert re.search(r"vectorised [\d.]+ ms, naive [\d.]+ ms, speed-up \d+x", line)
        assert line.endswith("identical: yes")

    def test_label_rows_are_about_seq_len_tokens(self, quick_run):
        """The label batch has 8 rows of about 3000 real tokens each."""
        header = line_starting(quick_run[1], "[1] label building:")
        rows, shortest, longest = map(
            int, re.search(r"B=(\d+) rows of (\d+)-(\d+)", header).groups()
        )
        assert (8, True, True) == (rows, 2800 <= shortest, longest <= 3600)

    def test_every_assistant_turn_is_found(self, quick_run):
        """The vectorised scan finds as many turns as the conversations hold."""
        line = line_starting(quick_run[1], "    assistant turns found by the vectorised scan:")
        found, total = map(int, re.search(r"(\d+) of (\d+)", line).groups())
        assert total == found

    def test_collate_line_reports_overhead(self, quick_run):
        """The collate figure names collator and floor times and a signed overhead."""
        line = line_starting(quick_run[1], "collate:")
        assert re.search(r"collator [\d.]+ ms, floor [\d.]+ ms, overhead [+-][\d.]+%", line)

    def test_image_budget_is_named(self, quick_run):
        """Without --max-pixels the build_processor budget is reported."""
        line = line_starting(quick_run[1], "    image budget:")
        assert "max_pixels=50176 (= 28*28*64, build_processor's default)" in line

    def test_derived_markers_render_only_in_first_batch(self, quick_run):
        """DerivedTemplateMarker renders in the first batch and never in the two after it."""
        line = line_starting(quick_run[1], "derived markers:")
        first, later = map(
            int, re.search(r"(\d+) renders .* first batch, (\d+) in the next 2", line).groups()
        )
        assert (True, 0) == (first > 0, later)

    def test_seed_comparison_runs_or_says_why_not(self, quick_run):
        """The nemo_automodel line either compares outputs (and they agree) or says why not."""
        line = line_starting(quick_run[1], "nemo_automodel:")
        if line.startswith("nemo_automodel: skipped"):
            assert "nemo_automodel" in line
        else:
            assert line.endswith("same input_ids: yes, same labels: yes")

    def test_quick_run_does_not_profile(self, quick_run):
        """--quick never adds the profile, whatever the overhead."""
        assert "profile (cProfile" not in quick_run[1]

    def test_torch_threads_restored(self, quick_run):
        """The benchmark's thread setting does not leak into the caller's process."""
        assert quick_run[2] == torch.get_num_threads()


class TestSettingsFrom:
    def parse(self, *argv: str) -> bench.BenchSettings:
        return bench.settings_from(bench.build_parser().parse_args(list(argv)))

    def test_defaults(self):
        """Without options the documented defaults apply."""
        expected = bench.BenchSettings(
            repeat=30, warmup=2, label_rows=8, seq_len=3000, collate_batch=16,
            max_pixels=None, render_batches=5, profile="auto", seed=0, threads=1,
        )  # fmt: skip
        assert expected == self.parse()

    def test_quick_lowers_repeats_and_never_profiles(self):
        """--quick lowers repeats, warm-ups and batches, and turns automatic profiling off."""
        settings = self.parse("--quick")
        assert (3, 1, 2, "never") == (
            settings.repeat, settings.warmup, settings.render_batches, settings.profile,
        )  # fmt: skip

    def test_explicit_options_win_over_quick(self):
        """A number given on the command line is kept even with --quick."""
        settings = self.parse("--quick", "--repeat", "7", "--profile")
        assert (7, "always") == (settings.repeat, settings.profile)

    def test_zero_threads_keeps_torch_default(self):
        """--threads 0 means: leave torch's thread count alone."""
        assert None is self.parse("--threads", "0").threads

    def test_max_pixels_passed_through(self):
        """--max-pixels reaches the settings unchanged."""
        assert 200704 == self.parse("--max-pixels", "200704").max_pixels

    @pytest.mark.parametrize("argv", [["--repeat", "0"], ["--threads", "-1"], ["--seq-len", "x"]])
    def test_bad_numbers_rejected(self, argv, capsys):
        """Non-positive repeats, negative threads and non-numbers stop argparse with status 2."""
        with pytest.raises(SystemExit) as stopped:
            bench.build_parser().parse_args(argv)
        assert 2 == stopped.value.code


class TestMeasure:
    def test_runs_and_warmups_counted(self):
        """measure calls the function warm-up plus repeat times and keeps repeat timings."""
        calls = []
        timing = bench.measure(lambda: calls.append(1), repeat=4, warmup=2)
        assert (6, 4, 4) == (len(calls), len(timing.wall), len(timing.cpu))

    def test_interleaved_order_rotates(self):
        """Each round runs every candidate once, starting one further along each time."""
        order: list[str] = []
        candidates = {name: (lambda name=name: order.append(name)) for name in "abc"}
        bench.measure_interleaved(candidates, repeat=3, warmup=1)
        assert list("abc" + "abc" + "bca" + "cab") == order

    def test_timing_summaries(self):
        """median and best read the wall times; cpu_median reads the CPU times."""
        timing = bench.Timing(wall=[3.0, 1.0, 2.0], cpu=[0.5, 0.7, 0.6])
        assert (2.0, 1.0, 0.6) == (timing.median, timing.best, timing.cpu_median)


class TestPairedPercentAbove:
    def test_median_of_round_ratios(self):
        """Each round's candidate run is divided by the baseline run of that round."""
        candidate = bench.Timing(wall=[2.0, 3.3, 9.0], cpu=[0.0] * 3)
        baseline = bench.Timing(wall=[1.0, 3.0, 3.0], cpu=[0.0] * 3)
        # ratios 2.0, 1.1, 3.0 -> median 2.0 -> +100 %
        assert 100.0 == pytest.approx(bench._paired_percent_above(candidate, baseline))


class TestContentionWarning:
    def test_warns_when_wall_time_far_exceeds_cpu_time(self):
        """A floor whose wall time is twice its CPU time gets a warning naming the ratio."""
        lines = bench._contention_warning(bench.Timing(wall=[2.0, 2.0, 2.0], cpu=[1.0, 1.0, 1.0]))
        assert (1, True) == (len(lines), "2.0x its CPU time" in lines[0])

    def test_quiet_when_wall_matches_cpu(self):
        """An undisturbed single-threaded run adds no warning."""
        assert [] == bench._contention_warning(bench.Timing(wall=[1.02, 1.0], cpu=[1.0, 1.0]))


class TestProfileCollator:
    def test_lists_steps_and_leaves_out_floor_work(self):
        """The profile names every pipeline step and never lists the floor's functions."""
        import vlm_collate as vc

        processor = build_processor("qwen2_5_vl")
        samples = bench.collate_samples(bench.ConversationWriter(random.Random(0)), 2)
        collator = vc.Qwen25VLCollator(processor=processor)
        lines = bench.profile_collator(collator, samples, processor, runs=1)
        steps_line = next(line for line in lines if "pipeline steps:" in line)
        listed = [line.split()[1] for line in lines if line.startswith("        vlm_collate/")]
        floor_work = {"render", "call_processor", "template", "__call__"}
        assert (True, [], True) == (
            all(f"{step} " in steps_line for step in bench._STEPS),
            [name for name in listed if name in floor_work],
            len(listed) > 0,
        )


class TestRenderSpy:
    def test_counts_calls_by_phase_and_removes_itself(self):
        """Calls are counted under the phase in force, and remove() restores the class method."""
        processor = build_processor("llava_next_mistral")
        messages = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
        spy = bench.RenderSpy()
        spy.install(processor)
        processor.apply_chat_template(messages, tokenize=False)
        spy.phase = "labels"
        processor.apply_chat_template(messages, tokenize=False)
        processor.apply_chat_template(messages, tokenize=False)
        spy.remove()
        processor.apply_chat_template(messages, tokenize=False)
        assert ({"outside": 1, "labels": 2}, False) == (
            dict(spy.counts), "apply_chat_template" in vars(processor),
        )  # fmt: skip


class TestSpanCount:
    def test_counts_runs_of_true(self):
        """Runs of True are counted per row, including one at the start and one at the end."""
        spans = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
        assert 3 == bench._span_count(spans)


class TestGeneratedSamples:
    def test_collate_samples_shape(self):
        """Each collate sample has one image of 200-400 px and one to three assistant turns."""
        samples = bench.collate_samples(bench.ConversationWriter(random.Random(3)), 12)
        shapes = []
        for sample in samples:
            images = bench._images_of([sample["conversation"]])
            answers = [m for m in sample["conversation"] if m["role"] == "assistant"]
            in_range = all(
                isinstance(image, Image.Image) and 200 <= min(image.size) <= max(image.size) <= 400
                for image in images
            )
            shapes.append((len(images), in_range, 1 <= len(answers) <= 3))
        assert [(1, True, True)] * 12 == shapes

    def test_same_seed_same_text(self):
        """Two writers with the same seed write the same conversation text."""

        def texts(seed: int) -> list[str]:
            samples = bench.collate_samples(bench.ConversationWriter(random.Random(seed)), 3)
            return [
                item["text"]
                for sample in samples
                for message in sample["conversation"]
                if isinstance(message["content"], list)
                for item in message["content"]
                if item["type"] == "text"
            ]

        assert texts(5) == texts(5)
