"""The ``--report`` page: one self-contained HTML file (inline CSS and SVG, no scripts, no network).

The page is built from sections, each a function returning an HTML fragment, so a later section
(peers, say) is one more function in ``SECTIONS``. Every piece of text is escaped; the charts are
SVG that matplotlib wrote from our numbers and labels (it escapes the text it writes).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

from ._charts import charts_available, summary_svg, workload_svg
from ._machine import describe
from ._runner import SuiteResult, WorkloadResult
from ._tables import HEADERS, NUMERIC, notes, rows, skipped, timing_note

__all__ = ["SECTIONS", "render_html"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 60rem;
       color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 0.5rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.8rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.winner td { background: #e8f6e8; font-weight: 600; }
tr.failed td { background: #fbe9e9; color: #8a1f1f; }
p.verdict { font-weight: 600; } p.note, ul.notes { color: #555; font-size: 0.9rem; }
p.failed { color: #8a1f1f; font-weight: 600; }
figure.chart { margin: 0.8rem 0; } figure.chart svg { max-width: 100%; height: auto; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(headers: Sequence[str], body: Sequence[Sequence[str]], numeric: Sequence[bool],
           classes: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    lines = []
    for i, cells in enumerate(body):
        cls = classes[i] if i < len(classes) and classes[i] else ""
        tds = "".join(f'<td class="num">{_e(c)}</td>' if num else f"<td>{_e(c)}</td>"
                      for c, num in zip(cells, numeric, strict=True))
        lines.append(f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _header(suite: SuiteResult) -> str:
    status = "" if suite.ok else '<p class="failed">Some modes gave a wrong answer or failed: see below.</p>'
    return (
        "<h1>taskloom bench</h1>"
        f"<p>Run {_e(suite.started)}, {suite.seconds:.1f} s in all. {_e(timing_note(suite))}</p>{status}"
    )


def _machine(suite: SuiteResult) -> str:
    body = describe(suite.machine)
    if suite.load_after:
        body.append(("Load average after", ", ".join(f"{x:.2f}" for x in suite.load_after) + " (1, 5, 15 min)"))
    return "<h2>Machine</h2>" + _table(("", ""), body, (False, False))


def _chart(svg: str | None, caption: str) -> str:
    if svg is None:
        return ""
    return f'<figure class="chart">{svg}<figcaption class="note">{_e(caption)}</figcaption></figure>'


def _workload(result: WorkloadResult, cpus: int, charts: bool) -> str:
    w = result.workload
    table_rows = rows(result)
    classes = ["winner" if r.winner else "failed" if r.failed else "" for r in table_rows]
    table = _table(HEADERS, [r.cells for r in table_rows], NUMERIC, classes)
    items = "".join(f"<li>{_e(n)}</li>" for n in notes(result, cpus))
    chart = _chart(workload_svg(result), f"{w.name}: time per mode") if charts else ""
    return (
        f'<section id="workload-{_e(w.name)}"><h2>{_e(w.name)}: {_e(w.description)} '
        f"({result.tasks} tasks)</h2>{table}{chart}"
        f'<p class="verdict">{_e(result.verdict)}</p><ul class="notes">{items}</ul></section>'
    )


def _workloads(suite: SuiteResult) -> str:
    cpus = int(suite.machine["usable_cpus"])
    missing = charts_available()
    note = "" if missing is None else f'<p class="note">No charts: {_e(missing)}.</p>'
    return note + "".join(_workload(w, cpus, missing is None) for w in suite.workloads)


def _verdicts(suite: SuiteResult) -> str:
    items = "".join(f"<li>{_e(w.verdict)}</li>" for w in suite.workloads)
    chart = _chart(summary_svg(suite), "Speedup of each mode over sequential, per workload") \
        if charts_available() is None else ""
    skips = "".join(f"<li>{_e(line)}</li>" for line in skipped(suite))
    skips = f'<ul class="notes">{skips}</ul>' if skips else ""
    return f"<h2>Verdict</h2><ul>{items}</ul>{skips}{chart}"


#: The page's sections, in order. Each takes the suite and returns an HTML fragment.
SECTIONS: list[Callable[[SuiteResult], str]] = [_header, _verdicts, _workloads, _machine]


def render_html(suite: SuiteResult) -> str:
    """The whole report page for ``suite``, as a string.

    Args:
        suite: the finished run.

    Returns:
        A complete, self-contained HTML document.
    """
    body = "\n".join(section(suite) for section in SECTIONS)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>taskloom bench - {_e(suite.started)}</title><style>{_CSS}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )
