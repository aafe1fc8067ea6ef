"""docs/benchmarks.md is written by several benchmark scripts: each rewrites only its own section.

The scripts take minutes and are run by hand; this checks, without running them, the helper they
write through (``benchmarks/doc_sections.py``) and that the page has one section per script.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "benchmarks.md"


def _doc_sections() -> Any:
    spec = importlib.util.spec_from_file_location("doc_sections", ROOT / "benchmarks" / "doc_sections.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("doc_sections", module)
    spec.loader.exec_module(module)
    return module


ds = _doc_sections()
PAGE_TEXT = "# Title\n\n" + "\n".join(f"{ds.markers(n)[0]}\n\n{n} old\n\n{ds.markers(n)[1]}\n" for n in ("a", "b", "c"))


def test_a_section_is_replaced_and_the_others_are_kept() -> None:
    text = ds.replace_section(PAGE_TEXT, "b", "## b\n\nnew table\n")
    assert "b old" not in text
    assert "## b\n\nnew table" in text
    assert text.replace("## b\n\nnew table", "b old") == PAGE_TEXT  # nothing else moved
    assert ds.replace_section(text, "b", "## b\n\nnew table\n") == text  # the same body: the same page


def test_a_new_section_goes_at_the_end() -> None:
    text = ds.replace_section(PAGE_TEXT, "d", "d body")
    assert text.startswith(PAGE_TEXT)
    assert text.endswith("\n\n<!-- begin: d -->\n\nd body\n\n<!-- end: d -->\n")
    assert ds.replace_section("", "d", "d body") == "<!-- begin: d -->\n\nd body\n\n<!-- end: d -->\n"


@pytest.mark.parametrize("page", ["<!-- begin: a -->\nno end\n", "<!-- end: a -->\n",
                                  "<!-- end: a -->\n<!-- begin: a -->\n", PAGE_TEXT + PAGE_TEXT])
def test_a_damaged_section_is_refused_not_guessed(page: str) -> None:
    with pytest.raises(ValueError, match="fix the page by hand"):
        ds.replace_section(page, "a", "x")


def test_write_section_writes_only_its_section(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE_TEXT, encoding="utf-8")
    ds.write_section("c", "c new", page)
    assert page.read_text(encoding="utf-8") == PAGE_TEXT.replace("c old", "c new")


def test_the_page_has_one_section_per_script_that_writes_it() -> None:
    text = PAGE.read_text(encoding="utf-8")
    writers = {}
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        source = script.read_text(encoding="utf-8")
        assert "benchmarks.md" not in source or script.name == "doc_sections.py" or "write_section" in source, (
            f"{script.name} mentions docs/benchmarks.md but does not write it through doc_sections.write_section")
        if "write_section(" in source and script.name != "doc_sections.py":
            writers[script.stem] = script
    assert set(writers) >= {"peers", "joblib_backend"}
    for name in writers:
        begin, end = ds.markers(name)
        assert text.count(begin) == 1, f"docs/benchmarks.md: {begin} missing or doubled"
        assert text.count(end) == 1, f"docs/benchmarks.md: {end} missing or doubled"
        assert text.index(begin) < text.index(end)
        assert ds.replace_section(text, name, text[text.index(begin) + len(begin):text.index(end)]) == text
    assert not re.search(r"<!-- \w+\.py: (begin|end) -->", text), "a marker of the old form"
