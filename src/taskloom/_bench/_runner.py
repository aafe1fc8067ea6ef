"""Running the benchmark: every (workload, mode) pair warmed once, then timed ``repeat`` times.

::

    run_suite(workloads, modes)
      modes: those taskloom has (BENCH_MODES filtered by MODE_NAMES; the rest skipped, saying why)
      for each workload that can run here:
        with workload.open(size) as items:          (may start the loopback HTTP server)
          each mode (sequential first: it is the baseline): warm-up call, untimed -> check
          repeat x, round-robin over the modes: CPU snapshot, timed taskloom.imap(...), CPU
                                                  snapshot -> check every answer
        speedup = sequential median / mode median;  efficiency = speedup / usable CPUs
        CPU use = CPU seconds of this process and its descendants / (wall x usable CPUs)
        winner = the fastest mode that answered right;  verdict = one line about it

A wrong answer or an exception is recorded as that mode's failure, not as a time; the suite goes
on with the next mode, and ``SuiteResult.ok`` is False.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._api import imap
from .._modes import MODE_NAMES
from .._run._run import Run
from .._system import gil_enabled, usable_cpus
from ._cpu import cpu_seconds, snapshot
from ._machine import machine_info
from ._workloads import Size, Workload

__all__ = [
    "BENCH_MODES",
    "SMALL_ENV",
    "Listener",
    "ModeResult",
    "SuiteResult",
    "WorkloadResult",
    "available_modes",
    "bench_size",
    "default_repeat",
    "run_suite",
]

#: ``TASKLOOM_SMALL=1``: the one switch for test-sized runs, shared with the examples.
SMALL_ENV = "TASKLOOM_SMALL"

#: Every mode the bench knows how to time, in display order. A mode taskloom does not have yet
#: (``dask`` until the Dask backend lands) is skipped with a note, so the bench needs no change
#: when it arrives: ``available_modes`` reads ``taskloom._modes.MODE_NAMES``.
BENCH_MODES = ("sequential", "threads", "processes", "async", "dask", "auto")

#: Timed repeats when ``--repeat`` is not given. Quick and test runs take 3: their calls are short,
#: and the median of 3 already discards one outlier.
REPEAT: dict[Size, int] = {"full": 5, "quick": 3, "test": 3}

# Why a mode that taskloom has may still not run here: the package it needs.
_MODE_PACKAGES = {"dask": ("distributed", "pip install 'taskloom[dask]'")}


def bench_size(quick: bool = False) -> Size:
    """The size of this run: "test" with ``TASKLOOM_SMALL=1``, else "quick" with ``--quick``, else "full"."""
    if os.environ.get(SMALL_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return "test"
    return "quick" if quick else "full"


def default_repeat(size: Size) -> int:
    """Timed repeats per (workload, mode) when ``--repeat`` is not given."""
    return REPEAT[size]


def available_modes(modes: Sequence[str] = BENCH_MODES) -> tuple[list[str], dict[str, str]]:
    """Split ``modes`` into those that can run here and, for the others, why not.

    Raises:
        ValueError: a name that is not in ``BENCH_MODES``.
    """
    run: list[str] = []
    skipped: dict[str, str] = {}
    for mode in modes:
        if mode not in BENCH_MODES:
            raise ValueError(f"unknown mode {mode!r}: choose from {', '.join(BENCH_MODES)}")
        if mode not in MODE_NAMES:
            skipped[mode] = f"this version of taskloom has no mode {mode!r} yet"
        elif mode in _MODE_PACKAGES and importlib.util.find_spec(_MODE_PACKAGES[mode][0]) is None:
            package, fix = _MODE_PACKAGES[mode]
            skipped[mode] = f"needs the {package!r} package: {fix}"
        elif mode not in run:
            run.append(mode)
    return run, skipped


@dataclass
class ModeResult:
    """The timings of one mode on one workload.

    Attributes:
        mode: the mode asked for ("auto", "threads", ...).
        ran_as: the engine that ran the tasks (what "auto" chose), None if it never started.
        workers: the worker count (or async concurrency cap) it ran with.
        times: the warm timed runs, in seconds.
        cpu: per timed run, the CPU seconds this process and its descendants (pool workers)
            spent during it.
        cpus: the usable CPUs, the denominator of efficiency and CPU use.
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
    cpu: list[float] = field(default_factory=list)
    cpus: int = 1
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
    def utilisation(self) -> float | None:
        """Median CPU use of the timed runs: CPU seconds / (wall seconds x usable CPUs)."""
        shares = [c / (t * self.cpus) for c, t in zip(self.cpu, self.times, strict=False) if t > 0]
        return statistics.median(shares) if shares and self.ok else None

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
            "cpu_seconds": list(self.cpu),
            "cpu_utilisation": self.utilisation,
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
    """A whole benchmark run: the machine, the settings and every workload's results.

    Attributes:
        machine: ``machine_info()`` taken as the run began (its load average is the outside load).
        settings: workloads, modes, repeat, workers and size asked for.
        workloads: one result per workload that ran.
        started: when, ISO 8601 in UTC.
        seconds: how long the whole run took.
        skipped_modes: modes asked for that could not run here, and why (e.g. dask).
        skipped_workloads: workloads that could not run here, and why (e.g. no numpy).
        load_after: the load average (1, 5, 15 min) when the run ended, None where unknown.
    """

    machine: dict[str, Any]
    settings: dict[str, Any]
    workloads: list[WorkloadResult]
    started: str
    seconds: float
    skipped_modes: dict[str, str] = field(default_factory=dict)
    skipped_workloads: dict[str, str] = field(default_factory=dict)
    load_after: list[float] | None = None

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
            "cpu_utilisation": "CPU seconds of the bench process and all its descendants during a timed "
                               "run / (wall seconds x usable CPUs); median over the timed runs",
            "machine": self.machine,
            "settings": self.settings,
            "skipped_modes": dict(self.skipped_modes),
            "skipped_workloads": dict(self.skipped_workloads),
            "load_average_after": self.load_after,
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


def _timed_call(fn: Callable[[Any], Any], items: list[Any], mode: str, workers: int | None) -> tuple[
        list[Any], float, float]:
    # The snapshots list processes and read /proc (about a millisecond): outside the wall time.
    before = snapshot()
    values, elapsed, _ = _call(fn, items, mode, workers)
    return values, elapsed, cpu_seconds(before, snapshot(own_first=True))


def _fail(result: ModeResult, exc: Exception) -> None:
    result.error = f"{type(exc).__name__}: {exc}"
    result.times.clear()
    result.cpu.clear()


def _warm_up(workload: Workload, items: list[Any], mode: str, workers: int | None,
             listener: Listener | None) -> ModeResult:
    fn = workload.function_for(mode)
    assert fn is not None  # _modes_for skipped the others
    result = ModeResult(mode, cpus=usable_cpus())
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
        values, elapsed, cpu = _timed_call(fn, items, result.mode, workers)
        workload.check(items, values)
    except Exception as exc:
        _fail(result, exc)
    else:
        result.times.append(elapsed)
        result.cpu.append(cpu)


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


#: What a mode costs whatever the workload, for the verdict when the workload has no note of its own.
_MODE_NOTES = {"dask": "one Dask task per batch, through the scheduler"}


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
        if winner.mode == "threads" and "GIL" in workload.notes.get("threads", "") and not gil_enabled():
            text += f" - {_no_gil(winner)}"
    for r in results:
        if r is winner or not r.ok or r.mode == "sequential":
            continue
        if r.mode == "auto":
            note = f"chose {r.ran_as}"
        else:
            note = workload.notes.get(r.mode, _MODE_NOTES.get(r.mode, "")).replace("{workers}", str(r.workers))
            if r.mode == "threads" and "GIL" in note and not gil_enabled():
                note = _no_gil(r)  # a free-threaded interpreter: the note's GIL is not there
        text += f"; {r.mode} {_times(r.speedup)}" + (f" - {note}" if note else "")
    failed = [r.mode for r in results if r.error]
    if failed:
        text += f"; FAILED: {', '.join(failed)}"
    return text


def _no_gil(r: ModeResult) -> str:
    """The threads row's note without a GIL: whether its threads really ran in parallel."""
    threads = f"{r.workers} threads" if r.workers else "its threads"
    if r.speedup is not None and r.speedup >= 1.2:
        return f"no GIL: {threads} compute in parallel"
    return f"no GIL, yet {threads} did not run faster than one (they contend, or the CPUs are busy)"


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


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return None


def run_suite(
    workloads: Sequence[Workload],
    modes: Sequence[str] = BENCH_MODES,
    *,
    repeat: int | None = None,
    workers: int | None = None,
    size: Size = "full",
    listener: Listener | None = None,
) -> SuiteResult:
    """Time every workload in every mode and check every answer.

    Args:
        workloads: what to run (see ``WORKLOADS``); one that cannot run here is skipped, with why.
        modes: mode names from ``BENCH_MODES``; "sequential" always runs too, first, as the
            baseline for speedups. "async" runs only the workloads that have an ``async_fn``;
            a mode taskloom does not have (yet) is skipped, with why.
        repeat: timed runs per (workload, mode); default ``default_repeat(size)``.
        workers: workers for every parallel mode; default each mode's own default.
        size: "full", "quick" (``--quick``) or "test" (``TASKLOOM_SMALL=1``).
        listener: follows the progress.

    Returns:
        The ``SuiteResult``; its ``ok`` is False when any mode answered wrong or raised.

    Raises:
        ValueError: an unknown mode name or size, or a repeat or workers below 1.
    """
    run_modes, skipped_modes = available_modes(modes)
    if size not in REPEAT:
        raise ValueError(f"size must be one of {', '.join(REPEAT)}, got {size!r}")
    if repeat is None:
        repeat = default_repeat(size)
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1 or None, got {workers!r}")
    cpus = usable_cpus()
    machine = machine_info()  # before the run: its load average is the outside load
    skipped_workloads: dict[str, str] = {}
    plan = []
    for w in workloads:
        why = w.unavailable()
        if why is None:
            plan.append((w, *_modes_for(w, run_modes)))
        else:
            skipped_workloads[w.name] = why
    if listener is not None:
        listener.start(sum(len(run) for _, run, _ in plan) * (1 + repeat))
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    out: list[WorkloadResult] = []
    for workload, mode_list, skipped in plan:
        with workload.open(size) as items:
            wr = WorkloadResult(workload, len(items), skipped=skipped)
            wr.results = _run_workload(workload, items, mode_list, repeat, workers, listener)
        wr.verdict = _score(workload, wr.results, cpus)
        out.append(wr)
    settings = {
        "workloads": [w.name for w in workloads],
        "modes": list(modes),
        "repeat": repeat,
        "workers": workers,
        "size": size,
    }
    return SuiteResult(machine, settings, out, started, time.perf_counter() - t0,
                       skipped_modes=skipped_modes, skipped_workloads=skipped_workloads,
                       load_after=_load_average())
