#!/usr/bin/env python3
"""Draw the charts of docs/benchmarks.md and docs/performance.md from the tables on those pages.

    python scripts/docs_charts.py           # (re)draw every chart into docs/img/, and put the image
                                            # after its table where the page does not show it yet

The numbers stay in the tables, which are the source: each chart is drawn from one table and
records that table's fingerprint in its SVG, so ``tests/test_docs.py`` (which needs no matplotlib)
fails when a table changed and its chart was not redrawn, or when a page lost its image line
(``benchmarks/peers.py`` writes docs/benchmarks.md whole: run this script after it).

The SVGs are drawn on a bare ``matplotlib.figure.Figure`` (no pyplot, no display), with text kept as
text and a fixed hash salt, so that drawing the same table again gives the same file.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FINGERPRINT = re.compile(r"<!-- docs_charts: table sha256 ([0-9a-f]{16}) -->")

# Okabe-Ito, colour-blind safe: taskloom in vermillion, its peers in the other colours.
TASKLOOM = "#D55E00"
PEERS = ("#0072B2", "#56B4E9", "#009E73", "#E69F00", "#CC79A7", "#999999", "#000000")

Table = list[list[str]]


# -- tables ---------------------------------------------------------------------------------------------
def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def find_table(text: str, *, heading: str | None = None, first_cell: str | None = None) -> tuple[int, int]:
    """(first, end) line indices of a Markdown table: the first one after ``heading``, or the one whose
    header row starts with the cell ``first_cell``."""
    lines = text.split("\n")
    start = 0
    if heading is not None:
        start = next(i for i, line in enumerate(lines) if re.match(r"^#+\s+" + re.escape(heading) + r"\s*$", line))
    for i in range(start, len(lines) - 1):
        if not (lines[i].lstrip().startswith("|") and re.match(r"^\s*\|[\s:|-]+\|\s*$", lines[i + 1])):
            continue
        if first_cell is not None and _cells(lines[i])[0] != first_cell:
            continue
        end = i
        while end < len(lines) and lines[end].lstrip().startswith("|"):
            end += 1
        return i, end
    raise LookupError(f"no table {'after ' + repr(heading) if heading else 'starting with ' + repr(first_cell)}")


def table_text(text: str, chart: Chart) -> str:
    first, end = find_table(text, heading=chart.heading, first_cell=chart.first_cell)
    return "\n".join(line.strip() for line in text.split("\n")[first:end])


def fingerprint(table: str) -> str:
    return hashlib.sha256(table.encode("utf-8")).hexdigest()[:16]


def parse(table: str) -> Table:
    """Header and body rows (the separator row dropped), cells without bold and code markup."""
    rows = [_cells(line) for line in table.split("\n")]
    del rows[1]
    return [[re.sub(r"\*\*|`", "", c) for c in row] for row in rows]


def _number(cell: str) -> float:
    return float(re.match(r"\s*([\d.,]+)", cell).group(1).replace(",", ""))  # type: ignore[union-attr]


# -- drawing ---------------------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Any, stamp: str) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    svg = text.index("<svg")
    return text[:svg] + f"<!-- docs_charts: table sha256 {stamp} -->\n" + text[svg:]


def draw_peers_summary(rows: Table) -> Any:
    """docs/benchmarks.md: each library's time / the fastest, grouped by workload (log scale)."""
    header, body = rows[0], rows[1:]
    libraries = [h for h in header[1:] if not h.startswith("taskloom ")]  # like for like: the extra rows left out
    workloads = [row[0] for row in body]
    height = 1.0 / (len(libraries) + 1)
    fig = _figure(7.0, 1.0 + 0.085 * len(workloads) * (len(libraries) + 1))
    ax = fig.add_subplot()
    peers = iter(PEERS)
    for k, library in enumerate(libraries):
        column = header.index(library)
        ys = [i + (k - (len(libraries) - 1) / 2) * height for i in range(len(workloads))]
        xs = [_number(row[column]) for row in body]
        colour = TASKLOOM if library == "taskloom" else next(peers)
        ax.barh(ys, xs, height=height * 0.9, color=colour, label=library)
    ax.set_xscale("log")
    ticks = [t for t in (1, 1.5, 2, 5, 10, 20, 50, 100, 200) if t <= max(_number(c) for r in body for c in r[1:]
                                                                     if c[:1].isdigit()) * 1.5]
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.minorticks_off()
    ax.set_xlim(0.9, ticks[-1] * 1.3)
    ax.set_yticks(range(len(workloads)), workloads)
    ax.invert_yaxis()
    ax.set_xlabel("time / the fastest library on that workload (log scale; 1x = the fastest; shorter is better)")
    fig.suptitle("taskloom and its peers, like for like: time / the fastest", x=0.01, ha="left", fontsize=10)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _bars(rows: Table, *, value: Callable[[list[str]], float], unit: str, title: str, xlabel: str,
          log: bool = False) -> Any:
    body = rows[1:]
    labels = [row[0] for row in body]
    values = [value(row) for row in body]
    fig = _figure(7.0, 0.9 + 0.34 * len(body))
    ax = fig.add_subplot()
    colours = [TASKLOOM if label.startswith(("taskloom", "tl.")) else PEERS[0] for label in labels]
    ax.barh(range(len(body)), values, color=colours)
    for i, v in enumerate(values):
        ax.text(v * (1.08 if log else 1.0) + (0 if log else max(values) * 0.01), i, f" {v:g} {unit}",
                va="center", fontsize=8.5)
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(values) / 1.5, max(values) * 8)
        ticks = [t for t in (0.01, 0.1, 1, 10, 100, 1000) if min(values) / 1.5 <= t <= max(values) * 8]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    else:
        ax.set_xlim(0, max(values) * 1.2)
    ax.set_yticks(range(len(body)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def draw_startup(rows: Table) -> Any:
    """docs/performance.md: the first processes call of one task, median ms."""
    return _bars(rows, value=lambda row: _number(row[1]), unit="ms",
                 title="The first processes call of one task, from a fresh interpreter",
                 xlabel="milliseconds, median of 10 (shorter is better)")


def draw_overhead(rows: Table) -> Any:
    """docs/performance.md: per-task cost of 200,000 tiny tasks on warm pools (log scale)."""
    return _bars(rows, value=lambda row: _number(row[1]), unit="µs", log=True,
                 title="200,000 tiny tasks on 2 warm worker processes",
                 xlabel="microseconds per task (log scale; shorter is better)")


# -- the charts ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chart:
    page: str  # under docs/
    image: str  # relative to the page
    alt: str
    draw: Callable[[Table], Any]
    heading: str | None = None
    first_cell: str | None = None

    @property
    def image_path(self) -> Path:
        return (DOCS / self.page).parent / self.image

    @property
    def image_line(self) -> str:
        return f"![{self.alt}]({self.image})"


CHARTS: tuple[Chart, ...] = (
    Chart("benchmarks.md", "img/peers-summary.svg",
          "Bar chart of each library's time divided by the fastest, per workload", draw_peers_summary,
          heading="Summary: each library's time / the fastest"),
    Chart("performance.md", "img/startup-first-call.svg",
          "Bar chart of the first processes call of one task, in milliseconds, per library", draw_startup,
          first_cell="first processes call of one task"),
    Chart("performance.md", "img/overhead-tiny-tasks.svg",
          "Bar chart of the cost per tiny task, in microseconds, per library (log scale)", draw_overhead,
          first_cell="(a) 200,000 tiny tasks (`x*x`)"),
)


def problems(chart: Chart) -> list[str]:
    """Why ``chart`` is not what this script would write now (empty when it is). Needs no matplotlib."""
    text = (DOCS / chart.page).read_text(encoding="utf-8")
    found = []
    if f"]({chart.image})" not in text:
        found.append(f"docs/{chart.page} does not show {chart.image}")
    if not chart.image_path.is_file():
        return [*found, f"docs/{chart.page}: {chart.image} does not exist"]
    match = FINGERPRINT.search(chart.image_path.read_text(encoding="utf-8"))
    if match is None or match.group(1) != fingerprint(table_text(text, chart)):
        found.append(f"{chart.image} was not drawn from the table now in docs/{chart.page}")
    return found


def write(chart: Chart) -> None:
    import matplotlib as mpl

    page = DOCS / chart.page
    text = page.read_text(encoding="utf-8")
    table = table_text(text, chart)
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": "taskloom-docs", "font.size": 9.0,
                         "axes.titlesize": 10.0}):
        svg = _svg(chart.draw(parse(table)), fingerprint(table))
    chart.image_path.parent.mkdir(parents=True, exist_ok=True)
    chart.image_path.write_text(svg, encoding="utf-8")
    if f"]({chart.image})" not in text:
        _, end = find_table(text, heading=chart.heading, first_cell=chart.first_cell)
        lines = text.split("\n")
        lines[end:end] = ["", chart.image_line]
        page.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote docs/{Path(chart.page).parent / chart.image}")


def main() -> int:
    for chart in CHARTS:
        write(chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
