"""Bar charts for the ``--report`` page, drawn with matplotlib as inline SVG.

matplotlib is imported on first use (``import taskloom`` stays fast, and it is an optional
dependency: without it the report says how to get the charts). The charts are drawn on a bare
``matplotlib.figure.Figure``, never through ``pyplot``: pyplot picks a GUI backend, keeps global
figure state and may warn about both, while a bare Figure renders straight to SVG with no
backend and no display. Text stays text in the SVG (``svg.fonttype: none``): the page is
smaller, and its numbers can be searched and copied.
"""

from __future__ import annotations

import importlib.util
import io
from contextlib import AbstractContextManager
from typing import Any

from ._runner import ModeResult, SuiteResult, WorkloadResult

__all__ = ["charts_available", "summary_svg", "workload_svg"]

# Colour-blind-safe (Okabe-Ito): the winner green, the baseline grey, the other modes blue.
WINNER, BASELINE, OTHER = "#009E73", "#999999", "#0072B2"
_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def charts_available() -> str | None:
    """None when charts can be drawn, else what to install."""
    if importlib.util.find_spec("matplotlib") is None:
        return "charts need matplotlib: pip install 'taskloom[bench]'"
    return None


def _unit(seconds: float) -> tuple[float, str]:
    for scale, unit in ((1.0, "s"), (1e-3, "ms")):
        if seconds >= scale:
            return scale, unit
    return 1e-6, "us"


def _style() -> AbstractContextManager[None]:
    import matplotlib as mpl

    # A literal, so that mypy checks the keys against matplotlib's own list of settings.
    return mpl.rc_context({"svg.fonttype": "none", "font.size": 9.0, "axes.titlesize": 10.0})


def _render(fig: Any) -> str:
    buffer = io.StringIO()
    # No RDF metadata block (creator, date, format, type): it says nothing a reader needs, and
    # leaves the page free of any URL but the SVG namespace.
    fig.savefig(buffer, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    # Drop the XML declaration and DOCTYPE: inside an HTML page the <svg> element stands alone.
    return text[text.index("<svg"):]


def _colour(r: ModeResult) -> str:
    return WINNER if r.winner else BASELINE if r.mode == "sequential" else OTHER


def workload_svg(result: WorkloadResult) -> str | None:
    """One workload's modes as horizontal bars: median time, whiskers min-max, speedup at the end.

    Returns:
        An ``<svg>`` element, or None when no mode answered right (there is nothing to draw).
    """
    ok = [r for r in result.results if r.ok]
    if not ok:
        return None
    from matplotlib.figure import Figure

    scale, unit = _unit(max(r.high for r in ok))
    medians = [r.median / scale for r in ok]
    below = [(r.median - r.low) / scale for r in ok]
    above = [(r.high - r.median) / scale for r in ok]
    w = result.workload
    with _style():
        fig = Figure(figsize=(6.4, 0.9 + 0.36 * len(ok)), layout="constrained")
        ax = fig.add_subplot()
        rows = list(range(len(ok)))
        ax.barh(rows, medians, xerr=[below, above], color=[_colour(r) for r in ok], capsize=3,
                error_kw={"elinewidth": 1.0, "ecolor": "#333333"})
        ax.set_yticks(rows, [r.label for r in ok])
        ax.invert_yaxis()  # the table's order, top to bottom
        top = max(m + a for m, a in zip(medians, above, strict=True))
        for row, r, m, a in zip(rows, ok, medians, above, strict=True):
            if r.speedup is not None:
                ax.text(m + a + 0.01 * top, row, f" {r.speedup:.2f}x", va="center", fontsize=8.5)
        ax.set_xlim(0, top * 1.22)
        ax.set_xlabel(f"{unit} per run (bar: median; whiskers: min-max; label: speedup vs sequential)")
        ax.set_title(f"{w.name}: {w.description} ({result.tasks} tasks)", loc="left")
        ax.spines[["top", "right"]].set_visible(False)
        return _render(fig)


def summary_svg(suite: SuiteResult) -> str | None:
    """Speedup vs sequential of every mode on every workload, grouped by workload (log scale).

    Returns:
        An ``<svg>`` element, or None when no workload has a speedup to show.
    """
    workloads = [w for w in suite.workloads if any(r.speedup for r in w.results)]
    if not workloads:
        return None
    from matplotlib.figure import Figure

    names: list[str] = []
    for w in workloads:
        names.extend(r.mode for r in w.results if r.mode not in names and r.mode != "sequential")
    palette = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"]
    height = 1.0 / (len(names) + 1)
    with _style():
        fig = Figure(figsize=(6.4, 1.2 + 0.22 * len(workloads) * (len(names) + 1)), layout="constrained")
        ax = fig.add_subplot()
        for k, mode in enumerate(names):
            ys, xs = [], []
            for i, w in enumerate(workloads):
                r = next((r for r in w.results if r.mode == mode and r.speedup), None)
                if r is not None and r.speedup is not None:
                    ys.append(i + (k - (len(names) - 1) / 2) * height)
                    xs.append(r.speedup)
            ax.barh(ys, xs, height=height * 0.9, color=palette[k % len(palette)], label=mode)
        ax.axvline(1.0, color="#333333", linewidth=1.0, linestyle="--")
        ax.set_xscale("log")
        ax.set_yticks(list(range(len(workloads))), [w.workload.name for w in workloads])
        ax.invert_yaxis()
        speedups = [r.speedup for w in workloads for r in w.results if r.speedup]
        low, high = min(0.5, min(speedups) / 1.5), max(2.0, max(speedups) * 1.5)
        ax.set_xlim(low, high)
        # Readable ticks ("0.5x", "2x") instead of the log axis's powers of ten.
        ticks = [t for t in _TICKS if low <= t <= high]
        ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("speedup vs sequential (log scale; dashed line: 1x, as fast as sequential)")
        ax.set_title("Speedup by workload and mode", loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
        return _render(fig)
