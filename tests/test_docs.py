"""The documentation: its code runs, its site builds, and the README keeps its promises.

Every fenced block whose info string is exactly ``python`` in ``docs/**/*.md``
and ``README.md`` is executed. The blocks of one page run in order in one
fresh namespace (named ``__main__``, so guarded script code runs too), inside
a temporary working directory. Blocks fenced with any other info string
(``py``, ``bash``, ``text``, ...) are shown, not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted([*DOCS.rglob("*.md"), ROOT / "README.md"])

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_DOCS_EXTRA = "needs the 'docs' extra: pip install -e '.[docs]'"


def _page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def fenced_blocks(markdown: str) -> list[tuple[int, str, str]]:
    """Return ``(first_line_number, info_string, code)`` of every fenced block."""
    blocks = []
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        body = []
        index += 1
        while index < len(lines):
            closing = _FENCE.match(lines[index])
            if closing and closing["fence"].startswith(fence) and not closing["info"].strip():
                break
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        start = index - len(body) + 1
        blocks.append((start, opening["info"].strip(), "\n".join(body) + "\n"))
        index += 1
    return blocks


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """The runnable blocks of ``page``: those fenced as exactly ``python``."""
    return [
        (line, code)
        for line, info, code in fenced_blocks(page.read_text("utf-8"))
        if info == "python"
    ]


class TestFencedBlocks:
    def test_finds_python_blocks_and_ignores_others(self) -> None:
        """Only blocks fenced as exactly 'python' are runnable, with their line numbers."""
        text = "intro\n```python\na = 1\n```\n\n```py\nb = 2\n```\n```bash\nls\n```\n```python\nc = 3\n```\n"
        expected = [
            (3, "python", "a = 1\n"),
            (7, "py", "b = 2\n"),
            (10, "bash", "ls\n"),
            (13, "python", "c = 3\n"),
        ]
        assert expected == fenced_blocks(text)

    def test_longer_fence_holds_a_shorter_one(self) -> None:
        """A four-backtick fence keeps a three-backtick fence inside it as text."""
        text = "````markdown\n```python\nx = 1\n```\n````\n"
        assert [(2, "markdown", "```python\nx = 1\n```\n")] == fenced_blocks(text)


class TestPageCode:
    @pytest.mark.parametrize("page", PAGES, ids=_page_id)
    def test_python_blocks_run(
        self, page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every 'python' block of the page runs, in order, in one fresh namespace."""
        monkeypatch.chdir(tmp_path)
        namespace: dict[str, object] = {"__name__": "__main__"}
        for line, code in python_blocks(page):
            compiled = compile(code, f"{_page_id(page)}:{line}", "exec")
            exec(compiled, namespace)

    def test_no_fence_mixes_python_with_words(self) -> None:
        """No block is fenced as 'python <word>': Python-Markdown would not render it as code."""
        expected: list[str] = []
        actual = [
            f"{_page_id(page)}:{line}"
            for page in PAGES
            for line, info, _ in fenced_blocks(page.read_text("utf-8"))
            if info.startswith("python ")
        ]
        assert expected == actual


class TestReadme:
    def test_quickstart_is_exactly_two_commands(self) -> None:
        """The README's Quickstart block holds the install-and-inspect and install-and-test commands."""
        readme = (ROOT / "README.md").read_text("utf-8")
        section = readme.split("## Quickstart", 1)[1]
        first_block = fenced_blocks(section)[0][2]
        expected = [
            "python -m pip install -e '.[test]' && vlm-collate inspect",
            "python -m pip install -e '.[test,docs]' && python -m pytest",
        ]
        assert expected == first_block.splitlines()

    def test_links_to_docs_pages_that_exist(self) -> None:
        """Every docs/ page the README links to exists."""
        readme = (ROOT / "README.md").read_text("utf-8")
        linked = re.findall(r"\]\((docs/[^)#]+)", readme)
        missing = [link for link in linked if not (ROOT / link).is_file()]
        assert linked
        assert [] == missing


class TestChangelog:
    def test_unreleased_section_lists_additions(self) -> None:
        """CHANGELOG.md follows Keep a Changelog, with an Unreleased section that has Added lines."""
        changelog = (ROOT / "CHANGELOG.md").read_text("utf-8")
        unreleased = changelog.split("## [Unreleased]", 1)[1].split("\n## ", 1)[0]
        added = unreleased.split("### Added", 1)[1].split("\n### ", 1)[0]
        entries = [line for line in added.splitlines() if line.startswith("- ")]
        assert changelog.startswith("# Changelog")
        assert len(entries) >= 5


class TestSite:
    def test_nav_pages_exist(self) -> None:
        """Every page named in mkdocs.yml's nav exists under docs/."""
        config = (ROOT / "mkdocs.yml").read_text("utf-8")
        named = re.findall(r":\s+(\S+\.md)\s*$", config, flags=re.MULTILINE)
        missing = [name for name in named if not (DOCS / name).is_file()]
        assert named
        assert [] == missing

    def test_public_names_are_documented(self) -> None:
        """Every name in vlm_collate.__all__ is mentioned somewhere in the docs."""
        import vlm_collate

        text = "\n".join(page.read_text("utf-8") for page in DOCS.rglob("*.md"))
        undocumented = [
            name for name in vlm_collate.__all__ if not re.search(rf"\b{re.escape(name)}\b", text)
        ]
        assert [] == undocumented

    def test_nav_is_grouped(self) -> None:
        """The nav is a few groups (the theme's tabs), not one long row of pages."""
        config = (ROOT / "mkdocs.yml").read_text("utf-8")
        nav = config.split("\nnav:\n", 1)[1].split("\n\n", 1)[0]
        groups = re.findall(r"^  - ([^:]+):\s*$", nav, flags=re.MULTILINE)
        loose = re.findall(r"^  - [^:]+:\s+\S+\.md\s*$", nav, flags=re.MULTILINE)
        assert [] == loose
        assert 3 <= len(groups) <= 8

    def test_mkdocs_build_strict(self, built_site: Path) -> None:
        """``mkdocs build --strict`` succeeds: no broken link, no missing page, no docstring error."""
        assert (built_site / "index.html").is_file()
        assert (built_site / "search" / "search_index.json").is_file()

    def test_no_sphinx_markup_or_unresolved_reference(self, built_site: Path) -> None:
        """No page shows a Sphinx role (``:class:`` ...) or a cross-reference left unresolved."""
        leftovers = {}
        for page in built_site.rglob("*.html"):
            text = page.read_text("utf-8")
            found = _SPHINX_ROLE.findall(text) + _UNRESOLVED.findall(text)
            if found:
                leftovers[page.relative_to(built_site).as_posix()] = found[:3]
        assert {} == leftovers

    def test_attrs_classes_show_signature_types_and_defaults(self, built_site: Path) -> None:
        """An attrs collator is rendered with its keyword-only signature, types and defaults."""
        text = _visible_text((built_site / "api" / "index.html").read_text("utf-8"))
        assert (
            "BaseCollator(\n    *,\n    processor: Processor,\n    max_length: int | None = None,"
            in text
        )
        assert "shift_labels: bool = True," in text
        assert "label_policy: LabelPolicy = LabelPolicy()," in text


_SPHINX_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):(?:`|<code>)")
# A Markdown reference mkdocstrings could not resolve is left as its source text.
_UNRESOLVED = re.compile(r"\[<code>[^<]*</code>\]\[[\w.]*\]|<autoref\b")


def _visible_text(page: str) -> str:
    import html

    return html.unescape(re.sub(r"<[^>]+>", "", page))


class TestDocstrings:
    def test_no_sphinx_roles(self) -> None:
        """Docstrings use mkdocstrings cross-references, not Sphinx roles."""
        offenders = [
            f"{path.relative_to(ROOT)}:{number}"
            for path in sorted((ROOT / "vlm_collate").rglob("*.py"))
            for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1)
            if re.search(r":(?:class|func|meth|mod|data|attr|exc|obj):`", line)
        ]
        assert [] == offenders


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once with ``mkdocs build --strict``."""
    pytest.importorskip("mkdocs", reason=_DOCS_EXTRA)
    pytest.importorskip("mkdocstrings", reason=_DOCS_EXTRA)
    pytest.importorskip("mkdocstrings_handlers.python", reason=_DOCS_EXTRA)
    pytest.importorskip("material", reason=_DOCS_EXTRA)
    site = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert 0 == result.returncode, result.stderr
    return site
