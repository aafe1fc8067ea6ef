"""The result tables as rows of text, shared by the terminal, plain-text and HTML renderers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ._runner import ModeResult, SuiteResult, WorkloadResult

__all__ = ["HEADERS", "NUMERIC", "Row", "format_seconds", "notes", "plain_table", "rows", "timing_note"]

HEADERS = ("mode", "workers", "time: median (min-max)", "speedup", "efficiency", "")
#: Columns whose cells are numbers, right-aligned in text.
NUMERIC = (False, True, True, True, True, False)


@dataclass(frozen=True)
class Row:
    """One table row: the cells as text, and whether the mode won or failed."""

    cells: tuple[str, ...]
    winner: bool
    failed: bool


def format_seconds(seconds: float) -> str:
    """``0.0284`` -> ``"28.4 ms"``: in s, ms or us, with three significant figures (two below 10)."""
    if math.isnan(seconds):
        return "-"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if seconds >= scale * 0.9995 or unit == "us":  # 0.9999 s reads "1.00 s", not "1000 ms"
            value = seconds / scale
            decimals = 0 if value >= 100 else 1 if value >= 10 else 2
            return f"{value:.{decimals}f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _time_cell(r: ModeResult) -> str:
    if not r.ok:
        return "-"
    if len(r.times) == 1:
        return format_seconds(r.median)
    return f"{format_seconds(r.median)} ({format_seconds(r.low)}-{format_seconds(r.high)})"


def rows(result: WorkloadResult) -> list[Row]:
    """One row per mode: mode, workers, median (min-max), speedup, efficiency, and a mark."""
    out = []
    for r in result.results:
        mark = f"FAILED: {r.error}" if r.error is not None else "fastest" if r.winner else ""
        out.append(Row(
            (
                r.label,
                "-" if r.workers is None else str(r.workers),
                _time_cell(r),
                "-" if r.speedup is None else f"{r.speedup:.2f}x",
                "-" if r.efficiency is None else f"{100 * r.efficiency:.0f}%",
                mark,
            ),
            r.winner,
            r.error is not None,
        ))
    return out


def notes(result: WorkloadResult, cpus: int) -> list[str]:
    """Footnotes for a workload's table: skipped modes, auto's reasons, what efficiency means."""
    out = [f"{mode} not run: {why}" for mode, why in result.skipped.items()]
    out.extend(f"auto chose {r.ran_as}: {r.advice}" for r in result.results if r.advice)
    text = f"efficiency = speedup / {cpus} usable CPUs"
    if any(r.efficiency is not None and r.efficiency > 1 for r in result.results):
        text += ("; above 100% means the tasks wait rather than compute, so more of them overlap than "
                 "there are CPUs")
    out.append(text)
    return out


def timing_note(suite: SuiteResult) -> str:
    """What the times are: warm pools, repeats, sizes."""
    s = suite.settings
    size = "small inputs (--quick / TASKLOOM_SMALL=1)" if s["small"] else "normal inputs"
    text = (
        f"Warm-pool times: each mode ran once untimed first (starting its pool), then {s['repeat']} "
        f"timed run{'s' if s['repeat'] != 1 else ''} taken in turn across the modes; median (min-max) of "
        f"those. {size}."
    )
    load = suite.machine.get("load_average")
    cpus = suite.machine["usable_cpus"]
    if load and load[0] >= 0.5 * cpus:
        text += (f" Note: the load average was {load[0]:.2f} on {cpus} CPUs when the run began: other work "
                 "was running, so the times are noisier than usual.")
    return text


def plain_table(headers: Sequence[str], body: Sequence[Sequence[str]],
                numeric: Sequence[bool] | None = None) -> str:
    """Aligned plain text: a header line, a rule, one line per row (numbers right-aligned)."""
    numeric = numeric if numeric is not None else [False] * len(headers)
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)])
