"""Running the benchmark: every (workload, mode) pair warmed once, then timed ``repeat`` times.

::

    run_suite(workloads, modes)
      for each workload:  items = workload.make_items(small)
        for each mode (sequential first: it is the baseline):
          warm-up call (untimed: starts the pool)  -> check the answer
          repeat x timed taskloom.imap(...)         -> check every answer
        speedup = sequential median / mode median;  efficiency = speedup / usable CPUs
        winner = the fastest mode that answered right;  verdict = one line about it

A wrong answer or an exception is recorded as that mode's failure, not as a time; the suite goes
on with the next mode, and ``SuiteResult.ok`` is False.
"""

from __future__ import annotations

import datetime
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._api import imap
from .._modes import MODE_NAMES
from .._scheduler import Run
from .._system import usable_cpus
from ._machine import machine_info
from ._workloads import Workload

__all__ = [
    "SMALL_ENV",
    "Listener",
    "ModeResult",
    "SuiteResult",
    "WorkloadResult",
    "default_repeat",
    "run_suite",
    "small_requested",
]

#: ``TASKLOOM_SMALL=1``: the one switch for test-sized runs (small inputs, few repeats).
SMALL_ENV = "TASKLOOM_SMALL"

REPEAT = 5
# Small runs keep 5 repeats: their calls take milliseconds, so repeats are cheap, and short
# timings are the noisiest.
REPEAT_SMALL = 5


def small_requested(quick: bool = False) -> bool:
    """True when the run should be small: ``--quick`` or ``TASKLOOM_SMALL=1`` in the environment."""
    return quick or os.environ.get(SMALL_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def default_repeat(small: bool) -> int:
    """Timed repeats per (workload, mode) when ``--repeat`` is not given."""
    return REPEAT_SMALL if small else REPEAT


@dataclass
class ModeResult:
    """The timings of one mode on one workload.

    Attributes:
        mode: the mode asked for ("auto", "threads", ...).
        ran_as: the engine that ran the tasks (what "auto" chose), None if it never started.
        workers: the worker count (or async concurrency cap) it ran with.
        times: the warm timed runs, in seconds.
        first_call: the untimed warm-up call in seconds, pool start-up included.
        error: why the mode failed (wrong answer or exception), None if it did not.
        advice: for "auto", why it chose ``ran_as``.
        speedup: sequential median / this median.
        efficiency: speedup / usable CPUs.
        winner: the fastest mode of this workload.
    """

    mode: str
    ran_as: str | None = None
    workers: int | None = None
    times: list[float] = field(default_factory=list)
    first_call: float | None = None
    error: str | None = None
    advice: str | None = None
    speedup: float | None = None
    efficiency: float | None = None
    winner: bool = False

    @property
    def ok(self) -> bool:
        """True when every call answered right."""
        return self.error is None and bool(self.times)

    @property
    def median(self) -> float:
        """The median warm time in seconds (NaN when there is none)."""
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def low(self) -> float:
        """The fastest warm time in seconds."""
        return min(self.times) if self.times else float("nan")

    @property
    def high(self) -> float:
        """The slowest warm time in seconds."""
        return max(self.times) if self.times else float("nan")

    @property
    def label(self) -> str:
        """The mode's name, with the engine auto chose: "auto (threads)"."""
        if self.mode == "auto" and self.ran_as:
            return f"auto ({self.ran_as})"
        return self.mode

    def to_dict(self) -> dict[str, Any]:
        """The raw numbers, JSON-ready."""
        ok = self.ok
        return {
            "mode": self.mode,
            "ran_as": self.ran_as,
            "workers": self.workers,
            "ok": ok,
            "error": self.error,
            "times": list(self.times),
            "median": self.median if ok else None,
            "min": self.low if ok else None,
            "max": self.high if ok else None,
            "first_call": self.first_call,
            "speedup": self.speedup,
            "efficiency": self.efficiency,
            "winner": self.winner,
            "advice": self.advice,
        }


@dataclass
class WorkloadResult:
    """Every mode's result on one workload, the winner and the verdict."""

    workload: Workload
    tasks: int
    results: list[ModeResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    verdict: str = ""

    @property
    def ok(self) -> bool:
        """True when no mode failed."""
        return all(r.error is None for r in self.results)

    @property
    def winner(self) -> ModeResult | None:
        """The fastest mode that answered right."""
        return next((r for r in self.results if r.winner), None)

    def to_dict(self) -> dict[str, Any]:
        """The raw numbers, JSON-ready."""
        winner = self.winner
        return {
            "name": self.workload.name,
            "description": self.workload.description,
            "io_bound": self.workload.io_bound,
            "tasks": self.tasks,
            "ok": self.ok,
            "winner": None if winner is None else winner.mode,
            "verdict": self.verdict,
            "skipped": dict(self.skipped),
            "results": [r.to_dict() for r in self.results],
        }


@dataclass
class SuiteResult:
    """A whole benchmark run: the machine, the settings and every workload's results."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    workloads: list[WorkloadResult]
    started: str
    seconds: float

    @property
    def ok(self) -> bool:
        """True when every mode of every workload answered right."""
        return all(w.ok for w in self.workloads)

    @property
    def failures(self) -> list[str]:
        """One line per failed (workload, mode)."""
        return [f"{w.workload.name}/{r.mode}: {r.error}" for w in self.workloads for r in w.results if r.error]

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready: what ``--json`` writes."""
        return {
            "taskloom_bench": 1,
            "started": self.started,
            "seconds": self.seconds,
            "ok": self.ok,
            "timing": "warm pools: each (workload, mode) ran once untimed first, so pool start-up is "
                      "not in the times; first_call is that untimed call",
            "machine": self.machine,
            "settings": self.settings,
            "workloads": [w.to_dict() for w in self.workloads],
        }


class Listener(Protocol):
    """Follows a suite as it runs (the CLI's progress display)."""

    def start(self, total_steps: int) -> None:
        """Called once: how many calls (warm-ups and timed runs) are ahead."""

    def step(self, workload: str, mode: str, what: str) -> None:
        """Called before each call; ``what`` is "warm-up" or "run 2/5"."""

    def finished(self, workload: str, result: ModeResult) -> None:
        """Called when a mode is done with a workload (or failed)."""


def _modes_for(workload: Workload, modes: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    chosen = ["sequential"] + [m for m in modes if m != "sequential"]
    run: list[str] = []
    skipped: dict[str, str] = {}
    for mode in chosen:
        if workload.function_for(mode) is None:
            skipped[mode] = f"{workload.name!r} has no async def version"
        else:
            run.append(mode)
    return run, skipped


def _call(fn: Callable[[Any], Any], items: list[Any], mode: str, workers: int | None) -> tuple[
        list[Any], float, Run[Any]]:
    # taskloom.map(...) is list(imap(...)); imap also says which engine ran and, for auto, why.
    t0 = time.perf_counter()
    with imap(fn, items, mode=mode, workers=None if mode == "sequential" else workers) as run:
        results = run.to_list()
    return results, time.perf_counter() - t0, run


def _fail(result: ModeResult, exc: Exception) -> None:
    result.error = f"{type(exc).__name__}: {exc}"
    result.times.clear()


def _warm_up(workload: Workload, items: list[Any], mode: str, workers: int | None,
             listener: Listener | None) -> ModeResult:
    fn = workload.function_for(mode)
    assert fn is not None  # _modes_for skipped the others
    result = ModeResult(mode)
    if listener is not None:
        listener.step(workload.name, mode, "warm-up")
    try:
        values, result.first_call, run = _call(fn, items, mode, workers)
        result.ran_as, result.workers = run.mode, run.workers
        if run.advice is not None:
            result.advice = str(run.advice)
        workload.check(items, values)
    except Exception as exc:  # a failure of the mode is a result to report, not a crash
        _fail(result, exc)
    return result


def _time_once(workload: Workload, items: list[Any], result: ModeResult, workers: int | None) -> None:
    fn = workload.function_for(result.mode)
    assert fn is not None
    try:
        values, elapsed, _ = _call(fn, items, result.mode, workers)
        workload.check(items, values)
    except Exception as exc:
        _fail(result, exc)
    else:
        result.times.append(elapsed)


def _run_workload(workload: Workload, items: list[Any], modes: list[str], repeat: int, workers: int | None,
                  listener: Listener | None) -> list[ModeResult]:
    # Every mode is warmed first, then the timed runs go round the modes in turn rather than one
    # mode after another: on a shared or throttled machine a burst of outside load then slows every
    # mode a little instead of one mode a lot (`make bench` runs next to other work).
    results = [_warm_up(workload, items, mode, workers, listener) for mode in modes]
    for i in range(repeat):
        for result in results:
            if listener is not None:
                listener.step(workload.name, result.mode, f"run {i + 1}/{repeat}")
            if result.error is None:
                _time_once(workload, items, result, workers)
    if listener is not None:
        for result in results:
            listener.finished(workload.name, result)
    return results


def _times(speedup: float | None) -> str:
    return "?x" if speedup is None else f"{speedup:.1f}x"


def _verdict(workload: Workload, results: list[ModeResult], cpus: int) -> str:
    head = f"{workload.name} ({workload.description})"
    winner = next((r for r in results if r.winner), None)
    if winner is None:
        return f"{head}: no mode answered right"
    on = f"on {cpus} CPU{'' if cpus == 1 else 's'}"
    if winner.mode == "sequential":
        text = f"{head}: sequential - the tasks are too small for a pool to pay for itself {on}"
    else:
        text = f"{head}: {winner.label}, {_times(winner.speedup)} {on}"
    for r in results:
        if r is winner or not r.ok or r.mode == "sequential":
            continue
        if r.mode == "auto":
            note = f"chose {r.ran_as}"
        else:
            note = workload.notes.get(r.mode, "").replace("{workers}", str(r.workers))
        text += f"; {r.mode} {_times(r.speedup)}" + (f" - {note}" if note else "")
    failed = [r.mode for r in results if r.error]
    if failed:
        text += f"; FAILED: {', '.join(failed)}"
    return text


def _score(workload: Workload, results: list[ModeResult], cpus: int) -> str:
    baseline = next((r for r in results if r.mode == "sequential" and r.ok), None)
    ok = [r for r in results if r.ok]
    for r in ok:
        if baseline is not None and r.median > 0:
            r.speedup = baseline.median / r.median
            r.efficiency = r.speedup / cpus
    if ok:
        min(ok, key=lambda r: r.median).winner = True
    return _verdict(workload, results, cpus)


def run_suite(
    workloads: Sequence[Workload],
    modes: Sequence[str],
    *,
    repeat: int | None = None,
    workers: int | None = None,
    small: bool = False,
    listener: Listener | None = None,
) -> SuiteResult:
    """Time every workload in every mode and check every answer.

    Args:
        workloads: what to run (see ``WORKLOADS``).
        modes: mode names; "sequential" always runs too, first, as the baseline for speedups.
            "async" runs only the workloads that have an ``async_fn``.
        repeat: timed runs per (workload, mode); default 5.
        workers: workers for every parallel mode; default each mode's own default.
        small: small inputs (--quick, ``TASKLOOM_SMALL=1``).
        listener: follows the progress.

    Returns:
        The ``SuiteResult``; its ``ok`` is False when any mode answered wrong or raised.

    Raises:
        ValueError: an unknown mode name, or a repeat or workers below 1.
    """
    for mode in modes:
        if mode not in MODE_NAMES:
            raise ValueError(f"unknown mode {mode!r}: choose from {', '.join(MODE_NAMES)}")
    if repeat is None:
        repeat = default_repeat(small)
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1 or None, got {workers!r}")
    cpus = usable_cpus()
    machine = machine_info()  # before the run: its load average is the outside load
    plan = [(w, *_modes_for(w, modes)) for w in workloads]
    if listener is not None:
        listener.start(sum(len(run) for _, run, _ in plan) * (1 + repeat))
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    out: list[WorkloadResult] = []
    for workload, run_modes, skipped in plan:
        items = workload.make_items(small)
        wr = WorkloadResult(workload, len(items), skipped=skipped)
        wr.results = _run_workload(workload, items, run_modes, repeat, workers, listener)
        wr.verdict = _score(workload, wr.results, cpus)
        out.append(wr)
    settings = {
        "workloads": [w.name for w in workloads],
        "modes": list(modes),
        "repeat": repeat,
        "workers": workers,
        "small": small,
    }
    return SuiteResult(machine, settings, out, started, time.perf_counter() - t0)
