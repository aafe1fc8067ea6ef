"""A griffe extension for the API reference (``mkdocs.yml``: mkdocstrings' ``extensions``).

taskloom's docstrings are Google style, read both by ``help()`` in a terminal and by mkdocstrings on
the site. Two things in them are plain-text conventions that Markdown does not know, so this
extension adapts them while griffe loads the package (the source is not changed):

* a reST literal block (a paragraph ending in ``::``, then an indented block) becomes the paragraph
  ending in ``:`` and a fenced code block: ``python`` when the block parses as Python, else ``text``
  (a diagram, a formula). Without this the page would show ``Example::`` and an unhighlighted block.
* parameters whose name starts with ``_`` are internal (``imap(..., _loop=None)`` is how ``aimap``
  calls it): they are left out of the signatures, as they are left out of the docs.
"""

from __future__ import annotations

import ast
import textwrap
from typing import Any

import griffe


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def literal_blocks_to_fences(text: str) -> str:
    """Every reST literal block of a docstring as a fenced Markdown code block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.rstrip()
        if not stripped.endswith("::"):
            out.append(line)
            i += 1
            continue
        level = _indent(line)
        first = i + 1
        while first < len(lines) and not lines[first].strip():
            first += 1
        if first == len(lines) or _indent(lines[first]) <= level:
            out.append(line)  # "::" with no indented block after it: not a literal block
            i += 1
            continue
        end = first
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > level):
            end += 1
        block = lines[first:end]
        while block and not block[-1].strip():
            block.pop()
        code = textwrap.dedent("\n".join(block))
        try:
            ast.parse(code)
            language = "python"
        except SyntaxError:
            language = "text"
        # reST: "text::" reads "text:", "text ::" reads "text", a lone "::" disappears.
        lead = stripped[:-2]
        lead = lead.rstrip() if lead.endswith(" ") else (lead + ":" if lead.strip() else "")
        pad = " " * level
        if lead.strip():
            out += [lead, ""]
        out += [f"{pad}```{language}", *(pad + c if c.strip() else "" for c in code.split("\n")), f"{pad}```"]
        if end < len(lines):
            out.append("")
        i = end
    return "\n".join(out)


class TaskloomDocstrings(griffe.Extension):
    """Literal blocks as fenced code, private parameters out of the signatures."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and "::" in obj.docstring.value:
            obj.docstring.value = literal_blocks_to_fences(obj.docstring.value)
        if isinstance(obj, griffe.Function):
            for name in [p.name for p in obj.parameters if p.name.startswith("_") and not p.name.startswith("__")]:
                del obj.parameters[name]
