"""The result tables as rows of text, shared by the terminal, plain-text and HTML renderers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ._runner import ModeResult, SuiteResult, WorkloadResult

__all__ = [
    "HEADERS", "NUMERIC", "Row", "format_seconds", "format_spread", "notes", "plain_table", "rows", "skipped",
    "timing_note",
]

HEADERS = ("mode", "workers", "time: median (min-max)", "speedup", "efficiency", "CPU use", "")
#: Columns whose cells are numbers, right-aligned in text.
NUMERIC = (False, True, True, True, True, True, False)


@dataclass(frozen=True)
class Row:
    """One table row: the cells as text, and whether the mode won or failed."""

    cells: tuple[str, ...]
    winner: bool
    failed: bool


_UNITS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"))


def _unit(seconds: float) -> tuple[float, str]:
    for scale, unit in _UNITS:
        if seconds >= scale * 0.9995 or unit == "us":  # 0.9999 s reads "1.00 s", not "1000 ms"
            return scale, unit
    raise AssertionError("unreachable")  # pragma: no cover


def _number(value: float) -> str:
    # Three significant figures (two below 10 would lose the spread between close times).
    return f"{value:.{0 if value >= 99.95 else 1 if value >= 9.995 else 2}f}"


def format_seconds(seconds: float) -> str:
    """``0.0284`` -> ``"28.4 ms"``: in s, ms or us, with three significant figures."""
    if math.isnan(seconds):
        return "-"
    scale, unit = _unit(seconds)
    return f"{_number(seconds / scale)} {unit}"


def format_spread(median: float, low: float, high: float) -> str:
    """``"28.4 ms (27.9-31.0)"``: the median, then min-max in the median's unit (short enough for 80 columns)."""
    if math.isnan(median):
        return "-"
    scale, _ = _unit(median)
    return f"{format_seconds(median)} ({_number(low / scale)}-{_number(high / scale)})"


def _time_cell(r: ModeResult) -> str:
    if not r.ok:
        return "-"
    if len(r.times) == 1:
        return format_seconds(r.median)
    return format_spread(r.median, r.low, r.high)


#: Below this wall time, CPU use measured on worker processes is rough: the kernel counts their CPU
#: time in clock ticks (10 ms on most Linux systems), a large step next to a run this short.
ROUGH_BELOW = 0.1


def _rough(r: ModeResult) -> bool:
    return r.median < ROUGH_BELOW and r.ran_as in ("processes", "dask")


def _cpu_cell(r: ModeResult) -> str:
    if r.utilisation is None:
        return "-"
    # Over 100% cannot happen; it is the clock-tick rounding of the workers' CPU time (see above).
    text = f"{100 * min(r.utilisation, 1.0):.0f}%"
    return f"~{text}" if _rough(r) else text


def rows(result: WorkloadResult) -> list[Row]:
    """One row per mode: mode, workers, median (min-max), speedup, efficiency, CPU use, and a mark."""
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
                _cpu_cell(r),
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
    text = f"CPU use = CPU time of the bench process and its pool workers / (wall time x {cpus} CPUs)"
    if any(_rough(r) for r in result.results if r.utilisation is not None):
        text += (f"; ~ marks runs under {ROUGH_BELOW * 1000:.0f} ms, where worker CPU time, counted in 10 ms "
                 "clock ticks, makes the figure rough")
    out.append(text)
    return out


_SIZES = {
    "full": "full-size inputs",
    "quick": "quick-size inputs (--quick)",
    "test": "test-size inputs (TASKLOOM_SMALL=1): times say little",
}


def timing_note(suite: SuiteResult) -> str:
    """What the times are: warm pools, repeats, sizes, and the outside load."""
    s = suite.settings
    text = (
        f"Warm-pool times: each mode ran once untimed first (starting its pool), then {s['repeat']} "
        f"timed run{'s' if s['repeat'] != 1 else ''} taken in turn across the modes; median (min-max) of "
        f"those. {_SIZES.get(s['size'], s['size'])}."
    )
    load = suite.machine.get("load_average")
    cpus = suite.machine["usable_cpus"]
    if load and suite.load_after:
        text += f" Load average (1 min) {load[0]:.2f} before the run, {suite.load_after[0]:.2f} after."
    if load and load[0] >= 0.5 * cpus:
        text += (f" Note: the load average was {load[0]:.2f} on {cpus} CPUs when the run began: other work "
                 "was running, so the times are noisier than usual.")
    return text


def skipped(suite: SuiteResult) -> list[str]:
    """One line per mode and per workload that could not run here, saying why."""
    out = [f"mode {mode} not run: {why}" for mode, why in suite.skipped_modes.items()]
    out.extend(f"workload {name} not run: {why}" for name, why in suite.skipped_workloads.items())
    return out


def plain_table(headers: Sequence[str], body: Sequence[Sequence[str]],
                numeric: Sequence[bool] | None = None) -> str:
    """Aligned plain text: a header line, a rule, one line per row (numbers right-aligned)."""
    numeric = numeric if numeric is not None else [False] * len(headers)
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)])
