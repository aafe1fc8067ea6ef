"""Each benchmark script that writes docs/benchmarks.md owns one section of it and rewrites only that.

A section is everything between two HTML comments, invisible on the rendered page::

    <!-- begin: joblib_backend -->
    ## joblib backend: taskloom against loky
    ...
    <!-- end: joblib_backend -->

named after the script (``benchmarks/joblib_backend.py`` writes ``joblib_backend``). ``write_section``
replaces the section in place and keeps the rest of the page as it is: the other scripts' sections,
and anything written between them by hand (or by ``scripts/docs_charts.py``, outside a section). A
section the page does not have yet is added at its end. Not a benchmark: imported by the scripts.
"""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def markers(name: str) -> tuple[str, str]:
    """The comments that open and close the section ``name``."""
    return f"<!-- begin: {name} -->", f"<!-- end: {name} -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the section ``name`` holding ``body`` (added at the end if it has none)."""
    begin, end = markers(name)
    if begin in body or end in body:
        raise ValueError(f"the body of section {name!r} contains its own markers")
    # Blank lines around the body: a comment right under a table would be read as one more row.
    block = f"{begin}\n\n{body.strip(chr(10))}\n\n{end}\n"
    start, count = text.find(begin), text.count(begin)
    stop = text.find(end, start) if start >= 0 else -1
    if count > 1 or text.count(end) > 1 or (start >= 0) != (stop >= 0) or (start < 0 and end in text):
        raise ValueError(f"section {name!r}: expected one {begin!r} followed by one {end!r}; fix the page by hand")
    if start < 0:
        return (text.rstrip("\n") + "\n\n" + block) if text.strip() else block
    rest = text[stop + len(end):].lstrip("\n")
    return text[:start] + block + ("\n" + rest if rest else "")


def write_section(name: str, body: str, path: Path = DOC) -> None:
    """Replace the section ``name`` of ``path`` (docs/benchmarks.md) by ``body``, and nothing else."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    path.write_text(replace_section(text, name, body), encoding="utf-8")
