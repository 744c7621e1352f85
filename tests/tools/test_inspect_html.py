"""The inspect HTML page and the counts it shares with the terminal view.

The browser tests open the page in a real headless Chromium (driven by
Playwright with the system's ``chromium``): in CI a missing browser fails the
test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil

import attrs
import pytest

import vlm_collate as vc
from vlm_collate.testing import build_processor
from vlm_collate.tools import html_view
from vlm_collate.tools import inspect as inspection
from vlm_collate.tools.media_view import MAX_FRAME_THUMBNAILS

from .test_cli import EXAMPLE, read_example, run, sample_block

TEXT_ONLY = 3  # the bundled sample "text_only": a question and an answer
LABEL_CONTROL = 10  # the bundled sample whose messages carry a "weight"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def page_data(text: str) -> dict:
    """The JSON the page's script draws from."""
    match = re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)
    assert match is not None
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def example_page(tmp_path_factory) -> pathlib.Path:
    page = tmp_path_factory.mktemp("html") / "view.html"
    status, _, _ = run("inspect", "--no-color", "--html", str(page))
    assert 0 == status
    return page


def answer_position(processor, conversation: list[dict]) -> tuple[int, int]:
    """(position, id) of the answer's first token, from the chat template alone."""
    tokenizer = processor.tokenizer
    text = processor.apply_chat_template(conversation, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    answer = conversation[-1]["content"]
    answer_ids = tokenizer.encode(answer, add_special_tokens=False)
    for start in range(len(ids)):
        if ids[start : start + len(answer_ids)] == answer_ids:
            return start, answer_ids[0]
    raise AssertionError("answer not found")


class TestPage:
    def test_self_contained(self, example_page):
        """The page loads nothing: no external script, style, link or image address."""
        text = example_page.read_text(encoding="utf-8")
        assert [] == re.findall(r"<(?:link|iframe)\b", text)
        assert [] == re.findall(r"<script\s+src=", text)
        assert [] == re.findall(r"(?:src|href)=\"(?!#|data:)", text)
        assert all(
            uri.startswith("data:image/jpeg;base64,") for uri in page_data(text)["thumbnails"]
        )

    def test_images_listed_with_original_and_resized_size(self, example_page):
        """Each image of the first sample is named with its file size and the processor's size."""
        from PIL import Image

        data = page_data(example_page.read_text(encoding="utf-8"))
        first = read_example()[0]["conversation"][0]["content"][0]["image"]
        with Image.open(EXAMPLE.parent / first) as image:
            original = list(image.size)
        (item,) = data["samples"][0]["media"]
        assert (pathlib.Path(first).name, original) == (item["name"], item["original"])
        # Qwen2.5-VL resizes to multiples of 28 pixels (14-pixel patches merged 2x2).
        assert [0, 0] == [side % 28 for side in item["resized"]]

    def test_video_frames_sampled(self, example_page):
        """The video sample shows its sampled frames as thumbnails and says how many were taken."""
        data = page_data(example_page.read_text(encoding="utf-8"))
        (video,) = [item for s in data["samples"] for item in s["media"] if item["kind"] == "video"]
        assert video["frames"] >= 2
        assert min(video["frames"], MAX_FRAME_THUMBNAILS) == len(video["thumbnails"])

    def test_weight_warning_sits_with_its_sample(self, tmp_path, monkeypatch):
        """The 'weight' keys warning is attached to the sample carrying weights, not its batch."""
        # The label policy says it once per process; let this process hear it again.
        from vlm_collate._report import reset_warnings

        reset_warnings()
        samples = [read_example()[0], read_example()[LABEL_CONTROL], read_example()[TEXT_ONLY]]
        image = samples[0]["conversation"][0]["content"][0]
        image["image"] = str(EXAMPLE.parent / image["image"])  # the copy is read from tmp_path
        data = tmp_path / "weights.jsonl"
        data.write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
        page = tmp_path / "view.html"
        status, output, _ = run("inspect", str(data), "--no-color", "--html", str(page))
        shown = page_data(page.read_text(encoding="utf-8"))["samples"]
        holders = [s["index"] for s in shown if any("'weight'" in w for w in s["warnings"])]
        assert 0 == status
        assert [1] == holders
        assert "'weight'" in sample_block(output, 1)
        assert "'weight'" not in output.split("-- sample 0")[0]

    def test_batch_notes_shown_in_the_summary(self, qwen_processor):
        """A note that names no sample is listed, escaped, with its batch in the summary."""
        records = inspection.load_jsonl(EXAMPLE, limit=2)
        result = inspection.inspect_samples(vc.collator_for(qwen_processor), records, batch_size=2)
        noted = attrs.evolve(result.batches[0], notes=("fell back to <LegacyBPEMatch>",))
        text = inspection.render_html(attrs.evolve(result, batches=(noted,)))
        summary = text.split('<section id="batches">', 1)[1].split("</section>", 1)[0]
        assert "batch 0: fell back to &lt;LegacyBPEMatch&gt;" in summary

    def test_answers_escaped(self, tmp_path):
        """An answer with markup reaches the page as data, never as markup."""
        sample = {
            "conversation": [
                {"role": "user", "content": "Say it."},
                {"role": "assistant", "content": "</script><b>bold</b> & more"},
            ]
        }
        data = tmp_path / "markup.jsonl"
        data.write_text(json.dumps(sample) + "\n", encoding="utf-8")
        page = tmp_path / "view.html"
        assert 0 == run("inspect", str(data), "--no-color", "--html", str(page))[0]
        text = page.read_text(encoding="utf-8")
        assert "<b>bold</b>" not in text
        assert 2 == text.lower().count("</script")  # only the page's own two scripts end
        pieces = "".join(page_data(text)["samples"][0]["pieces"])
        assert "</script><b>bold</b> & more" in pieces


@pytest.fixture(scope="module")
def example_text() -> str:
    status, output, _ = run("inspect", "--no-color")
    assert 0 == status
    return output


def counts_line(output: str, index: int) -> str:
    return sample_block(output, index).splitlines()[0].split(": ", 1)[1]


class TestCounts:
    def test_token_counts_do_not_depend_on_batch_or_shift(self):
        """The longest row of a batch counts as many tokens alone, in a batch, shifted or not."""
        seen = {
            counts_line(run("inspect", "--no-color", *options, "--limit", "2")[1], 1)
            for options in (("--shift", "--batch-size", "2"), ("--no-shift", "--batch-size", "1"))
        }
        assert 1 == len({line.split(", media")[0] for line in seen})

    def test_truncate_reports_max_length(self, qwen_processor, tmp_path):
        """--max-length 30 --overlong truncate reports 30 tokens for a 35-token sample."""
        sample = read_example()[TEXT_ONLY]
        text = qwen_processor.apply_chat_template(sample["conversation"], tokenize=False)
        assert len(qwen_processor.tokenizer(text)["input_ids"]) > 30
        data = tmp_path / "one.jsonl"
        data.write_text(json.dumps(sample) + "\n", encoding="utf-8")
        _, output, _ = run(
            "inspect", str(data), "--no-color", "--max-length", "30", "--overlong", "truncate"
        )
        assert counts_line(output, 0).startswith("30 tokens")

    def test_counts_the_template_length(self, qwen_processor, example_text):
        """A text-only sample counts exactly the tokens of its rendered chat template."""
        conversation = read_example()[TEXT_ONLY]["conversation"]
        text = qwen_processor.apply_chat_template(conversation, tokenize=False)
        expected = len(qwen_processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        assert counts_line(example_text, TEXT_ONLY).startswith(f"{expected} tokens")

    def test_html_and_text_agree(self, example_page, example_text):
        """The page's counts line for each sample is the terminal view's."""
        data = page_data(example_page.read_text(encoding="utf-8"))
        for sample in data["samples"]:
            assert counts_line(example_text, sample["index"]) == sample["counts"]


def _chromium() -> str:
    """The system Chromium's path; fails in CI and skips elsewhere when it is missing."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "needs playwright: pip install -e '.[test]'"
    if path is None:
        problem = "needs a Chromium browser: apt-get install chromium"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return str(path)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        yield context
        context.close()


def open_page(browser, path: pathlib.Path, fragment: str = ""):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.goto(path.as_uri() + fragment)
    page.wait_for_selector("section.sample")
    return page, errors


class TestInBrowser:
    def test_loads_without_errors_and_images_render(self, browser, example_page):
        """The page draws its samples with no script error, and every image decodes."""
        page, errors = open_page(browser, example_page)
        widths = page.eval_on_selector_all("img", "images => images.map(i => i.naturalWidth)")
        sections = page.locator("section.sample").count()
        page.close()
        assert [] == errors
        assert len(read_example()) == sections
        assert widths and all(width > 0 for width in widths)

    def test_tooltip_shows_the_ids_of_a_known_token(self, browser, example_page, qwen_processor):
        """Hovering the answer's first token shows its id, position and label, as the batch has them."""
        conversation = read_example()[TEXT_ONLY]["conversation"]
        position, token_id = answer_position(qwen_processor, conversation)
        batch = vc.Qwen25VLCollator(processor=qwen_processor)([read_example()[TEXT_ONLY]])
        assert token_id == int(batch["labels"][0, position - 1])  # pre-shifted
        page, errors = open_page(browser, example_page, f"#sample-{TEXT_ONLY}")
        page.hover(f'#sample-{TEXT_ONLY} .tok[data-a="{position}"]')
        tip = page.locator("#tip").inner_text()
        page.close()
        assert [] == errors
        assert f"id {token_id} \u00b7 position {position}" in tip
        assert f"label {token_id} (pre-shifted: stored at labels[{position - 1}])" in tip

    def test_two_thousand_samples_open_one_page_at_a_time(self, browser, tmp_path):
        """A 2,000-sample inspection opens quickly and draws only one page of samples."""
        records = inspection.load_jsonl(EXAMPLE, limit=4)
        collator = vc.collator_for(build_processor("qwen2_5_vl"))
        small = inspection.inspect_samples(collator, records, batch_size=4)
        views = [attrs.evolve(small.samples[n % 4], index=n) for n in range(2000)]
        batches = [
            attrs.evolve(small.batches[0], number=n, indices=tuple(range(4 * n, 4 * n + 4)))
            for n in range(500)
        ]
        big = attrs.evolve(small, samples=tuple(views), batches=tuple(batches))
        path = tmp_path / "big.html"
        path.write_text(inspection.render_html(big), encoding="utf-8")
        page, errors = open_page(browser, path)
        timing = page.evaluate(
            "performance.timing.loadEventEnd - performance.timing.navigationStart"
        )
        drawn = page.locator("section.sample").count()
        page.click("text=next \u2192")
        second = page.locator("section.sample").first.get_attribute("id")
        page.close()
        assert [] == errors
        assert html_view.PAGE_SIZE == drawn
        assert f"sample-{html_view.PAGE_SIZE}" == second
        assert timing < 5000, f"the page took {timing} ms to load"
