"""The documentation stays true to the code and to itself.

The site is built by MkDocs with mkdocstrings (``make docs``, part of ``make test``), in strict mode:
the build itself fails on a broken link or ``#anchor``, a cross-reference to a name that does not
exist, a page left out of the navigation, or a ``:::`` entry whose object is gone. These tests check
what the build does not:

* every public name (``taskloom.__all__``, ``taskloom.testing.__all__``, ``taskloom.joblib.__all__``)
  has exactly one entry in docs/reference/ and is listed in the reference's index; every object the
  reference renders, and each of its public members, has a docstring (mkdocstrings silently leaves
  out a member without one); the pytest plugin's option and marker are on the testing page;
* every ``python`` code block of README.md and docs/ runs: the blocks of a page, in order, as one
  script, with the page's line numbers. A block that is not meant to run is marked
  ``<!-- fragment -->`` on the line before it (see DEVELOPERS.md);
* the charts were drawn from the tables now on their pages (``scripts/docs_charts.py``);
* README.md, which is not part of the site, links only to files that exist;
* every ``examples/<name>.py`` mentioned exists, and every ``tests/<path>.py::<test>`` cited names an
  existing test function.

The Markdown files are found when the tests are collected, so new pages are checked too. The last
tests run the checkers on small broken pages, to show that each of them can fail.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import taskloom
import taskloom.joblib
import taskloom.testing
from tests.helpers import poll_until, run_in_own_session, session_members

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"


def _markdown_files() -> list[Path]:
    return [p for p in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))] if p.is_file()]


MARKDOWN = _markdown_files()
MARKDOWN_IDS = [str(p.relative_to(ROOT)) for p in MARKDOWN]


# -- the API reference ----------------------------------------------------------------------------------------
def public_names() -> dict[str, Any]:
    """Dotted public path -> object, for every name users may import."""
    names = {f"taskloom.{n}": getattr(taskloom, n) for n in taskloom.__all__}
    names |= {f"taskloom.testing.{n}": getattr(taskloom.testing, n) for n in taskloom.testing.__all__}
    names |= {f"taskloom.joblib.{n}": getattr(taskloom.joblib, n) for n in taskloom.joblib.__all__}
    return names


_DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)
_HEADING_ID = re.compile(r"^#{1,6}\s.*\{\s*#(taskloom\.[\w.]+)\s*\}\s*$", re.MULTILINE)


def reference_entries(pages: list[Path] | None = None) -> dict[str, list[str]]:
    """Identifier -> the reference pages with an entry for it: a ``::: path`` directive (rendered by
    mkdocstrings) or a heading with that id (written by hand, for names re-exported from the stdlib)."""
    entries: dict[str, list[str]] = {}
    for page in pages if pages is not None else sorted(REFERENCE.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for identifier in _DIRECTIVE.findall(text) + _HEADING_ID.findall(text):
            entries.setdefault(identifier, []).append(page.name)
    return entries


def resolve(path: str) -> Any:
    """The object at a dotted path (``taskloom._sync.Acquired``): the longest importable module, then
    attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def entry_problems(entries: dict[str, list[str]], public: dict[str, Any]) -> list[str]:
    problems = []
    for name in public:
        pages = entries.get(name, [])
        if len(pages) != 1:
            problems.append(f"{name}: {len(pages)} entries in docs/reference/ ({pages}); it needs exactly one, "
                            f"a line `::: {name}` on the page of its topic")
    for identifier, pages in entries.items():
        head, _, last = identifier.rpartition(".")
        if head in ("taskloom", "taskloom.testing", "taskloom.joblib") and not last.startswith("_") \
                and identifier not in public and last != "joblib":
            problems.append(f"{identifier} ({pages}) is not a public name (any more): remove or rename its entry")
    return problems


def test_every_public_name_has_one_reference_entry() -> None:
    problems = entry_problems(reference_entries(), public_names())
    assert not problems, "\n".join(problems)


def test_hand_written_entries_are_only_for_names_from_the_stdlib() -> None:
    """``as_completed`` and ``wait`` are ``concurrent.futures``' own: their docstrings vary with the
    Python version, so their entries are written by hand. Anything of taskloom's is rendered."""
    hand_written = {i for page in REFERENCE.glob("*.md") for i in _HEADING_ID.findall(page.read_text("utf-8"))}
    ours = sorted(i for i in hand_written if getattr(resolve(i), "__module__", "").startswith("taskloom"))
    assert not ours, f"render these from their docstrings (`::: name`), not by hand: {ours}"


def test_the_reference_index_lists_every_public_name() -> None:
    index = (REFERENCE / "index.md").read_text(encoding="utf-8")
    missing = [name for name in public_names() if f"][{name}]" not in index and name != "taskloom.__version__"]
    assert not missing, f"docs/reference/index.md does not list {missing} (as [`name`][{missing[0]}])"


def _own_members(cls: type, package: str) -> Iterator[tuple[str, Any]]:
    """(name, attribute) of the public methods and properties that the package's classes in the MRO
    define (those of a base from elsewhere, ``concurrent.futures.Executor``, are that library's)."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith(package):
            continue
        for name, raw in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            if isinstance(raw, property | classmethod | staticmethod) or inspect.isfunction(raw):
                seen.add(name)
                yield name, raw


def _has_doc(cls: type, name: str, raw: Any) -> bool:
    if isinstance(raw, property):  # a property overriding one keeps the base's docstring
        return any(isinstance(p := vars(k).get(name), property) and p.__doc__ for k in cls.__mro__)
    return bool((inspect.getdoc(getattr(cls, name)) or "").strip())


def undocumented(paths: list[str], package: str = "taskloom") -> list[str]:
    """The objects (and public members of classes) among ``paths`` that have no docstring."""
    missing = []
    for path in paths:
        obj = resolve(path)
        if not (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)):
            continue  # a constant (__version__, NAME): described on its page
        if not (inspect.getdoc(obj) or "").strip():
            missing.append(path)
        if inspect.isclass(obj) and obj.__module__.startswith(package):
            missing += [f"{path}.{name}" for name, raw in _own_members(obj, package) if not _has_doc(obj, name, raw)]
    return missing


def test_every_rendered_object_and_member_has_a_docstring() -> None:
    paths = sorted(set(reference_entries()) | set(public_names()))
    assert undocumented(paths) == []


def test_the_pytest_plugin_is_on_the_testing_page() -> None:
    page = (REFERENCE / "testing.md").read_text(encoding="utf-8")
    options: list[str] = []
    markers: list[str] = []

    class Parser:
        def addoption(self, *names: str, **kwargs: Any) -> None:
            options.extend(names)

    class Config:
        def addinivalue_line(self, name: str, line: str) -> None:
            markers.append(line.split("(")[0].split(":")[0])

    taskloom.testing.pytest_addoption(Parser())  # type: ignore[arg-type]
    taskloom.testing.pytest_configure(Config())  # type: ignore[arg-type]
    missing = [o for o in options if f"`{o}" not in page] + [m for m in markers if f"@pytest.mark.{m}" not in page]
    assert options
    assert markers
    assert not missing, f"docs/reference/testing.md does not describe {missing}"


# -- Markdown code blocks -------------------------------------------------------------------------------------
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
FRAGMENT = re.compile(r"^\s*<!--\s*fragment\b[^>]*-->\s*$")
#: Python under another name: say ```python (and mark it a fragment if it does not run).
_OTHER_PYTHON = {"py", "python3", "py3", "pycon", "pyi"}


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the block's first code line
    info: str  # the fence's language
    code: str  # without the fence's indentation
    fragment: bool  # marked <!-- fragment -->: not run

    @property
    def runs(self) -> bool:
        return self.info == "python" and not self.fragment


def code_blocks(text: str) -> list[Block]:
    """Every fenced code block of a Markdown page, in order."""
    lines = text.split("\n")
    blocks = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence = len(match.group("indent")), match.group("fence")
        info = match.group("info").strip().split(" ")[0].lstrip("{.").rstrip("}")
        end = i + 1
        while end < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[end]):
            end += 1
        body = [line[indent:] if line[:indent].strip() == "" else line for line in lines[i + 1:end]]
        blocks.append(Block(i + 2, info, "\n".join(body), i > 0 and bool(FRAGMENT.match(lines[i - 1]))))
        i = end + 1
    return blocks


def page_script(text: str) -> str | None:
    """The page's runnable blocks as one script, each block at its own line numbers (a traceback's
    line is the page's line); None when the page has no runnable block."""
    blocks = [b for b in code_blocks(text) if b.runs]
    if not blocks:
        return None
    lines = [""] * (text.count("\n") + 1)
    for block in blocks:
        for offset, line in enumerate(block.code.split("\n")):
            lines[block.line - 1 + offset] = line
    return "\n".join(lines).rstrip("\n") + "\n"


def block_problems(page: Path, text: str, root: Path = ROOT) -> list[str]:
    """Blocks that break the convention: Python under another name, a fragment mark on a block that is
    not Python, and Python that does not even parse (a fragment must parse too, so it stays Python)."""
    problems = []
    where = page.relative_to(root)
    for block in code_blocks(text):
        if block.info in _OTHER_PYTHON:
            problems.append(f"{where}:{block.line - 1}: ```{block.info}: write ```python (run by the tests), "
                            "or ```python after a line <!-- fragment --> (not run)")
        elif block.fragment and block.info != "python":
            problems.append(f"{where}:{block.line - 1}: <!-- fragment --> marks only ```python blocks "
                            f"(a ```{block.info or 'text'} block is never run)")
        elif block.info == "python":
            try:
                ast.parse(block.code)
            except SyntaxError as exc:
                problems.append(f"{where}:{block.line - 1 + (exc.lineno or 1)}: not Python: {exc.msg}")
    return problems


@pytest.mark.parametrize("page", MARKDOWN, ids=MARKDOWN_IDS)
def test_code_blocks_follow_the_convention(page: Path) -> None:
    problems = block_problems(page, page.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


RUNNABLE = [p for p in MARKDOWN if page_script(p.read_text(encoding="utf-8")) is not None]


@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE])
def test_code_blocks_run(page: Path, tmp_path: Path) -> None:
    """The page's ``python`` blocks, in order, as one script in a fresh interpreter (in an empty folder,
    in a session of its own: nothing it starts may outlive it)."""
    script = tmp_path / f"{page.stem.replace('-', '_')}_md.py"
    script.write_text(page_script(page.read_text(encoding="utf-8")) or "", encoding="utf-8")
    returncode, out, err, pid = run_in_own_session([sys.executable, str(script)], cwd=tmp_path)
    where = page.relative_to(ROOT)
    assert returncode == 0, (f"the code blocks of {where} failed (line numbers are the page's; mark a "
                                  f"block that is not meant to run <!-- fragment -->):\n{out[-2000:]}\n{err[-3000:]}")
    assert poll_until(lambda: not session_members(pid), timeout=10), f"{where} left processes behind"


# -- charts ---------------------------------------------------------------------------------------------------
def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_charts_are_drawn_from_the_tables_on_their_pages() -> None:
    charts = _script("docs_charts")
    problems = [p for chart in charts.CHARTS for p in charts.problems(chart)]
    assert not problems, "\n".join(problems) + "\nrun: python scripts/docs_charts.py"


# -- README.md's links (the site checks its own pages; README is not one of them) ------------------------------
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[(?!\^)[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked out."""
    in_code = {b.line + k for b in code_blocks(text) for k in range(-1, b.code.count("\n") + 2)}
    for number, line in enumerate(text.split("\n"), 1):
        if number not in in_code:
            yield number, re.sub(r"(`+)(.+?)\1", lambda m: " " * len(m.group(0)), line)


def readme_link_problems(page: Path, text: str, root: Path = ROOT) -> list[str]:
    """Relative links (inline and reference-style) whose file or folder does not exist."""
    problems = []
    for number, line in prose_lines(text):
        targets = _INLINE_LINK.findall(line)
        if match := _REFERENCE_DEF.match(line):
            targets.append(match.group(1))
        for target in targets:
            path = urllib.parse.unquote(target.split("#")[0].split("?")[0])
            if target and not _SCHEME.match(target) and path and not (page.parent / path).exists():
                problems.append(f"{page.relative_to(root)}:{number}: {target} does not exist")
    return problems


def test_readme_links_resolve() -> None:
    readme = ROOT / "README.md"
    problems = readme_link_problems(readme, readme.read_text(encoding="utf-8"))
    assert not problems, "broken links:\n" + "\n".join(problems)


# -- examples and cited tests ---------------------------------------------------------------------------------
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
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n", encoding="utf-8")
    return tmp_path


def test_entry_checker_finds_missing_doubled_and_stale_entries(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\n::: taskloom.map\n\n::: taskloom.gone\n\n::: taskloom._sync.Acquired\n"
                                   "\n## `taskloom.wait` { #taskloom.wait }\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("# B\n\n::: taskloom.map\n", encoding="utf-8")
    entries = reference_entries([tmp_path / "a.md", tmp_path / "b.md"])
    assert entries["taskloom.wait"] == ["a.md"]
    public = {"taskloom.map": None, "taskloom.wait": None, "taskloom.imap": None}
    problems = "\n".join(entry_problems(entries, public))
    assert "taskloom.map: 2 entries" in problems
    assert "taskloom.imap: 0 entries" in problems
    assert "taskloom.gone (['a.md']) is not a public name" in problems
    assert "wait" not in problems
    assert "Acquired" not in problems


def test_docstring_checker_finds_an_undocumented_member() -> None:
    assert undocumented(["taskloom.map", "taskloom.Run", "taskloom.__version__"]) == []
    assert undocumented(["tests.test_docs._Undocumented"], package="tests") == ["tests.test_docs._Undocumented.method"]


class _Undocumented:
    """A class with a public method that has no docstring (the checker's test)."""

    def method(self) -> None:
        pass

    def _private(self) -> None:
        pass


_PAGE = """# Page

```python
import taskloom as tl
x = 1
```

Text.

<!-- fragment -->
```python
undefined_name()
```

- a list item with a block:

    ```python
    assert x == 1
    ```

```sh
echo not run
```
"""


def test_code_blocks_are_extracted_with_their_line_numbers() -> None:
    blocks = code_blocks(_PAGE)
    assert [(b.line, b.info, b.runs) for b in blocks] == [
        (4, "python", True), (12, "python", False), (18, "python", True), (22, "sh", False)]
    script = page_script(_PAGE)
    assert script is not None
    lines = script.split("\n")
    assert (lines[3], lines[4], lines[17]) == ("import taskloom as tl", "x = 1", "assert x == 1")
    assert "undefined_name" not in script
    assert "echo" not in script


def test_code_block_checker_finds_what_breaks_the_convention(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    text = "```py\nx = 1\n```\n\n<!-- fragment -->\n```sh\nls\n```\n\n<!-- fragment -->\n```python\nx = (\n```\n"
    problems = "\n".join(block_problems(page, text, tmp_path))
    assert "page.md:1: ```py: write ```python" in problems
    assert "page.md:6: <!-- fragment --> marks only ```python blocks" in problems
    assert "page.md:12: not Python" in problems


def test_readme_link_checker_finds_broken_links(tmp_path: Path) -> None:
    root = _site(tmp_path)
    text = (
        "[ok](docs/guide.md) [ok](docs/guide.md#intro) [web](https://example.com/x.md) [ok](docs/) [ok](#intro)\n"
        "[gone](docs/missing.md) ![img](docs/pic.png)\n"
        "[ref]: docs/nowhere.md\n"
        "`[in code](docs/ignored.md)`\n"
        "```\n[in a block](docs/ignored.md)\n```\n"
    )
    problems = readme_link_problems(root / "README.md", text, root)
    assert [p.split(": ")[1] for p in problems] == ["docs/missing.md does not exist", "docs/pic.png does not exist",
                                                    "docs/nowhere.md does not exist"], problems


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


def test_chart_checker_finds_a_stale_chart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    charts = _script("docs_charts")
    monkeypatch.setattr(charts, "DOCS", tmp_path)
    (tmp_path / "img").mkdir()
    page = "# P\n\n## Numbers\n\n| a | b |\n|---|---|\n| x | 1 |\n\n![chart](img/c.svg)\n"
    (tmp_path / "p.md").write_text(page, encoding="utf-8")
    chart = charts.Chart("p.md", "img/c.svg", "chart", lambda rows: None, heading="Numbers")
    stamp = charts.fingerprint(charts.table_text(page, chart))
    (tmp_path / "img" / "c.svg").write_text(f"<!-- docs_charts: table sha256 {stamp} -->\n<svg/>", encoding="utf-8")
    assert charts.problems(chart) == []
    (tmp_path / "p.md").write_text(page.replace("| x | 1 |", "| x | 2 |").replace("![chart](img/c.svg)", ""),
                                   encoding="utf-8")
    assert charts.problems(chart) == ["docs/p.md does not show img/c.svg",
                                      "img/c.svg was not drawn from the table now in docs/p.md"]
