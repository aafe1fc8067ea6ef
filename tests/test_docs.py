"""The documentation stays true to the code and to itself.

* docs/api.md has a heading for every public name, and is exactly what ``scripts/gen_api_docs.py``
  generates from the docstrings now (run ``make docs`` after changing a docstring or the API);
* every public name and member has a docstring;
* in README.md and docs/*.md: every relative link points to an existing file (and a ``#anchor`` to
  an existing heading, by GitHub's rules), every ``examples/<name>.py`` mentioned exists, and every
  ``tests/<path>.py::<test>`` cited names an existing test function in that file.

The Markdown files are found when the tests are collected, so new pages are checked too. The last
tests run the checkers on small broken pages, to show that each of them can fail.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import re
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import taskloom
import taskloom.testing

ROOT = Path(__file__).resolve().parent.parent
API_MD = ROOT / "docs" / "api.md"
GENERATOR = ROOT / "scripts" / "gen_api_docs.py"


def _markdown_files() -> list[Path]:
    return [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if p.is_file()]


MARKDOWN = _markdown_files()
MARKDOWN_IDS = [str(p.relative_to(ROOT)) for p in MARKDOWN]


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    """scripts/gen_api_docs.py, imported in this process (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("gen_api_docs", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_api_docs", module)
    spec.loader.exec_module(module)
    return module


# -- Markdown, the GitHub way ------------------------------------------------------------------------------
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")


def outside_fences(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) for every line outside fenced code blocks (and not a fence itself)."""
    fence: str | None = None
    for number, line in enumerate(text.split("\n"), 1):
        match = _FENCE.match(line)
        if match:
            marker = match.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            continue
        if fence is None:
            yield number, line


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked out."""
    return [(number, re.sub(r"(`+)(.+?)\1", lambda m: " " * len(m.group(0)), line))
            for number, line in outside_fences(text)]


def _heading_text(raw: str) -> str:
    """The text GitHub makes a heading's anchor from: markup removed, link texts kept."""
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", raw)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    return text.replace("`", "").replace("*", "")


def slugs(text: str) -> set[str]:
    """Every anchor GitHub creates in a Markdown page: headings (de-duplicated with -1, -2...)
    and explicit ``<a name=...>``/``id=...`` anchors."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in outside_fences(text):
        heading = re.match(r"^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", _heading_text(heading.group(1)).strip().lower()).replace(" ", "-")
            n = seen.get(slug)
            seen[slug] = 0 if n is None else n + 1
            found.add(slug if n is None else f"{slug}-{n + 1}")
        found.update(re.findall(r"<a\s+[^>]*(?:name|id)=\"([^\"]+)\"", line))
    return found


_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[(?!\^)[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")  # not a footnote ([^x]: text)
_HTML_LINK = re.compile(r"\b(?:href|src)=\"([^\"]+)\"")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image outside code: inline, reference and HTML."""
    out = []
    for number, line in prose_lines(text):
        for pattern in (_INLINE_LINK, _HTML_LINK):
            out += [(number, target) for target in pattern.findall(line)]
        match = _REFERENCE_DEF.match(line)
        if match:
            out.append((number, match.group(1)))
    return out


def link_problems(page: Path, text: str, root: Path = ROOT) -> list[str]:
    """Relative links of ``page`` whose file, or whose ``#anchor`` in a Markdown file, does not exist."""
    problems = []
    for number, target in links(text):
        if not target or _SCHEME.match(target):
            continue  # a web address (or an empty link, which Markdown renders as text)
        path_part, _, anchor = target.partition("#")
        path_part = urllib.parse.unquote(path_part.split("?")[0])
        if path_part.startswith("/"):
            file = root / path_part.lstrip("/")  # GitHub: relative to the repository's root
        else:
            file = (page.parent / path_part) if path_part else page
        where = f"{page.relative_to(root)}:{number}: {target}"
        if path_part and not file.exists():
            problems.append(f"{where}: {file.relative_to(root) if file.is_relative_to(root) else file} "
                            "does not exist")
            continue
        if anchor and file.suffix.lower() == ".md" and (file == page or file.is_file()):
            anchors = slugs(text if file == page else file.read_text(encoding="utf-8"))
            wanted = urllib.parse.unquote(anchor).lower()
            if wanted not in {a.lower() for a in anchors}:
                problems.append(f"{where}: no heading with the anchor #{anchor} in {file.relative_to(root)}")
    return problems


def _repo_path(mention: str) -> str:
    """``../examples/x.py`` or ``./examples/x.py`` -> ``examples/x.py`` (paths are cited from the root)."""
    while mention.startswith(("./", "../")):
        mention = mention.split("/", 1)[1]
    return mention


def example_problems(page: Path, text: str, root: Path = ROOT) -> list[str]:
    """``examples/<name>.py`` mentions (anywhere, code included) whose file does not exist."""
    problems = []
    for number, line in enumerate(text.split("\n"), 1):
        for mention in re.findall(r"[\w./-]*examples/[\w./-]*?\.py\b", line):
            path = _repo_path(mention)
            if path.startswith("examples/") and not (root / path).is_file():
                problems.append(f"{page.relative_to(root)}:{number}: {mention} does not exist")
    return problems


_TEST_REFERENCE = re.compile(r"[\w./-]*tests/[\w./-]*?\.py((?:::[A-Za-z_]\w*)+)(\[[^\]\s]*\])?")


def _defines(body: list[ast.stmt], name: str) -> ast.stmt | None:
    """The last top-level definition of ``name`` in ``body`` (a later one replaces an earlier one)."""
    found = None
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            found = node
    return found


def cited_test_problems(page: Path, text: str, root: Path = ROOT) -> list[str]:
    """``tests/<path>.py::<name>[::<name>]`` citations that name no test function (or test class)."""
    problems = []
    for number, line in enumerate(text.split("\n"), 1):
        for match in _TEST_REFERENCE.finditer(line):
            cited = match.group(0)
            file = root / _repo_path(cited.split("::", 1)[0])
            where = f"{page.relative_to(root)}:{number}: {cited}"
            if not file.is_file():
                problems.append(f"{where}: {file.relative_to(root)} does not exist")
                continue
            body: list[ast.stmt] = ast.parse(file.read_text(encoding="utf-8"), str(file)).body
            node: ast.stmt | None = None
            names = match.group(1).split("::")[1:]
            for i, name in enumerate(names):
                node = _defines(body, name)
                if node is None:
                    problems.append(f"{where}: {file.relative_to(root)} defines no {'::'.join(names[:i + 1])}")
                    break
                body = node.body if isinstance(node, ast.ClassDef) else []
            else:
                if isinstance(node, ast.ClassDef) and not node.name.startswith("Test"):
                    problems.append(f"{where}: {node.name} is a class, not a test class (Test...)")
                elif not isinstance(node, ast.ClassDef) and node is not None and not names[-1].startswith("test"):
                    problems.append(f"{where}: {names[-1]} is not a test function (pytest collects test*)")
    return problems


# -- the API reference --------------------------------------------------------------------------------------
def _heading_names(text: str) -> set[str]:
    return {_heading_text(raw).strip() for raw in re.findall(r"^#{1,6}\s+(.*?)\s*$", text, re.MULTILINE)}


def test_every_public_name_has_a_heading_in_api_md() -> None:
    headings = _heading_names(API_MD.read_text(encoding="utf-8"))
    missing = [name for name in taskloom.__all__ if name not in headings]
    missing += [f"taskloom.testing.{name}" for name in taskloom.testing.__all__ if name not in headings]
    assert not missing, f"docs/api.md has no heading for {missing}: run `make docs`"


def test_api_md_is_what_the_generator_produces(generator: ModuleType) -> None:
    expected = generator.generate()
    actual = API_MD.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(list(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True),
                                                 "docs/api.md", "generated now"))[:60])
        pytest.fail(f"docs/api.md is stale: run `make docs` (python scripts/gen_api_docs.py)\n{diff}")


def test_every_public_name_and_member_has_a_docstring(generator: ModuleType) -> None:
    assert generator.undocumented() == []


def test_the_generator_fails_on_a_public_name_it_does_not_place(
    generator: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(taskloom, "__all__", (*taskloom.__all__, "brand_new_name"))
    with pytest.raises(generator.GeneratorError, match="brand_new_name"):
        generator.generate()


def test_generator_check_mode_reports_a_stale_file(generator: ModuleType, tmp_path: Path) -> None:
    stale = tmp_path / "api.md"
    stale.write_text("# an old reference\n", encoding="utf-8")
    assert generator.main(["--check", "--output", str(stale)]) == 1
    assert generator.main(["--output", str(stale)]) == 0
    assert generator.main(["--check", "--output", str(stale)]) == 0


# -- links, examples and cited tests in README.md and docs/*.md -------------------------------------------------
@pytest.mark.parametrize("page", MARKDOWN, ids=MARKDOWN_IDS)
def test_relative_links_resolve(page: Path) -> None:
    problems = link_problems(page, page.read_text(encoding="utf-8"))
    assert not problems, "broken links:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", MARKDOWN, ids=MARKDOWN_IDS)
def test_mentioned_examples_exist(page: Path) -> None:
    problems = example_problems(page, page.read_text(encoding="utf-8"))
    assert not problems, "missing examples:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", MARKDOWN, ids=MARKDOWN_IDS)
def test_cited_tests_exist(page: Path) -> None:
    problems = cited_test_problems(page, page.read_text(encoding="utf-8"))
    assert not problems, "cited tests that do not exist:\n" + "\n".join(problems)


# -- the checkers can fail ------------------------------------------------------------------------------------
def _site(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "examples").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "examples" / "real.py").write_text("", encoding="utf-8")
    (tmp_path / "tests" / "test_real.py").write_text(
        "def helper():\n    pass\n\n\ndef test_real():\n    pass\n\n\nclass TestGroup:\n"
        "    def test_inner(self):\n        pass\n", encoding="utf-8")
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Two words\n\n## `code` and *stars*\n\n## Two words\n",
                                                encoding="utf-8")
    return tmp_path


def test_link_checker_finds_broken_links_and_anchors(tmp_path: Path) -> None:
    root = _site(tmp_path)
    page = root / "README.md"
    text = (
        "[ok](docs/guide.md) [ok](docs/guide.md#two-words) [ok](docs/guide.md#two-words-1) "
        "[ok](docs/guide.md#code-and-stars) [ok](#intro) [web](https://example.com/x.md) [ok](docs/)\n"
        "# Intro\n"
        "[gone](docs/missing.md) [bad anchor](docs/guide.md#three-words) ![img](docs/pic.png)\n"
        "[ref]: docs/nowhere.md\n"
        "`[in code](docs/ignored.md)`\n"
        "```\n[in a block](docs/ignored.md)\n```\n"
    )
    problems = link_problems(page, text, root)
    assert len(problems) == 4, problems
    assert {p.split(": ", 2)[1] for p in problems} == {
        "docs/missing.md", "docs/guide.md#three-words", "docs/pic.png", "docs/nowhere.md"}


def test_example_checker_finds_missing_examples(tmp_path: Path) -> None:
    root = _site(tmp_path)
    text = "Run `python examples/real.py` or ../examples/real.py, then examples/nope.py.\n"
    problems = example_problems(root / "docs" / "guide.md", text, root)
    assert len(problems) == 1, problems
    assert "examples/nope.py" in problems[0]


def test_test_reference_checker_finds_missing_tests(tmp_path: Path) -> None:
    root = _site(tmp_path)
    text = (
        "| claim | tests/test_real.py::test_real |\n"
        "| claim | tests/test_real.py::TestGroup::test_inner and tests/test_real.py::test_real[a-b] |\n"
        "| claim | tests/test_real.py::test_gone |\n"
        "| claim | tests/test_real.py::helper |\n"
        "| claim | tests/test_nowhere.py::test_x |\n"
        "| claim | tests/test_real.py::TestGroup::test_missing |\n"
    )
    problems = cited_test_problems(root / "README.md", text, root)
    assert len(problems) == 4, problems
    joined = "\n".join(problems)
    for expected in ("defines no test_gone", "helper is not a test function", "test_nowhere.py does not exist",
                     "defines no TestGroup::test_missing"):
        assert expected in joined
