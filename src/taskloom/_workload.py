"""Measuring a task, and choosing the engine for it: ``taskloom.advise`` and ``mode="auto"``.

Measurements (on sample items, within a time budget; in ``auto`` they are real tasks whose results
are kept):

* wall time and CPU time of the calling thread per task -> the share of time spent waiting;
* for CPU-bound tasks, two threads running two tasks at once -> does the function release the GIL
  (numpy, hashlib, zlib do)? ``thread_speedup`` is 1.0 when it does not, 2.0 when it fully does;
* on a free-threaded interpreter (no GIL), tasks on 2 and on N threads at once, against the
  single-thread time -> do threads *scale* on this work? ``scaling[k]`` is the measured speed-up
  of k threads (below 1 when they contend for shared objects: no GIL does not mean parallel);
* pickled size of items and results, and the parent's cost to pickle an item and unpickle a result
  (the parent is a serial stage on the process backend).

The cost model, per mode, for ``n`` remaining tasks of ``t`` seconds each on ``c`` usable CPUs::

    sequential   T = n·t
    threads      T = n·t / P_thr + n·o_thr           P_thr = min(workers, n) when waiting (I/O),
                                                     1 + f·(min(workers, c) - 1) when computing,
                                                     f = thread_speedup - 1 (GIL-release fraction);
                                                     without a GIL: the measured scaling[k]
    processes    T = S + max(n·(t + p_w) / min(c, n), n·(p_parent + b / B)) + n·o_proc / c
    async        coroutine functions only: n·t / min(workers, n)

``o_thr`` / ``o_proc`` are per-task dispatch costs after batching, ``p_w`` / ``p_parent`` the
pickling costs in a worker and in the parent, ``b`` the pickled bytes of an item and its result,
``B`` the pipe's bandwidth, ``S`` the pool start-up (0 when a warm pool exists). The parent's share
is serial: it pickles and moves every item, whatever the number of workers.
A concurrent mode must beat sequential by ``MIN_GAIN`` to be chosen: parallelism has costs the
model does not see (memory, debuggability), so a near-tie goes to the simpler engine. For the same
reason threads win over processes unless processes are ``THREADS_OVER_PROCESSES`` faster. Two
exceptions on a busy machine (``Sample.load`` at least ``BUSY_LOAD``), where the two-thread probe
errs low (threads beside busy loops run little at the same time): a near-tie no longer goes to
threads for work that only computes, and CPU work whose probe ran goes to threads rather than
staying sequential when processes would not beat sequential either (it pickles too much): threads
cost work that holds the GIL ~5%, and save up to half of work that does not.

Workers: CPU-bound work gets the usable CPUs. Blocking I/O gets enough threads to keep the CPU
busy while tasks wait (Little's law: concurrency = wait time / CPU time per task, times the CPUs),
at least the guide's ``min(32, cpus + 4)``, at most ``MAX_IO_THREADS``. On a free-threaded
interpreter (no GIL), CPU-bound work goes to threads only when the probe saw them scale: threads
that contend for shared objects (a shared dict, reference counts of shared objects) can run
slower together than one alone, and then processes win. Inside a taskloom worker process nothing
chooses processes (no pool of pools).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ._callables import function_pickles, is_coroutine_function
from ._modes import by_name
from ._run._intake import put_back
from ._run._run import Switch
from ._sampling import CPU_BOUND_RATIO, PROBE_MIN_TASK, Head, Sample, _littles_law, known_size, run_sample
from ._stats import _fmt as format_seconds
from ._system import ASYNC_DEFAULT_WORKERS, default_threads, gil_enabled, in_worker, runnable_load, usable_cpus

if TYPE_CHECKING:
    from ._backends._base import Backend, CpuTime
    from ._modes import Mode

__all__ = ["Advice", "advise"]

log = logging.getLogger("taskloom")

AUTO_BUDGET = 0.05  # seconds of sample tasks mode="auto" runs in the caller's thread
MIN_GAIN = 1.25  # a concurrent mode must be this much faster than sequential to be chosen
#: Load (``Sample.load``: run-queue wait per second computed) above which the machine counts as
#: busy: there a pool of GIL-releasing CPU work gets as many threads as the stdlib's default, not
#: one per CPU (the kernel shares busy CPUs per thread: 2 threads beside 2 busy loops hashed at
#: 0.65x of 6 and summed numpy arrays at 0.83x; idle, 2 and 6 threads were within 5%).
BUSY_LOAD = 0.25
WAITS_TOO = 0.9  # a task computing less than this share of its time also waits (for a near-tie)
THREADS_OVER_PROCESSES = 1.1  # threads win unless processes are modelled this much faster
ASSUMED_TASKS = 10_000  # remaining tasks assumed when the input has no length

# Priors measured on a 2-CPU Linux machine (benchmarks/overhead.py).
PRIORS = {
    "thread_task": 0.3e-6,  # per task after batching
    "process_task": 0.3e-6,  # per task after batching: scheduler bookkeeping in the parent
    "process_start": 0.1,  # cold pool start (forkserver + workers): 0.08 s measured
    "pipe_bytes_per_second": 0.75e9,  # parent <-> worker pipe, pickled bytes (4 MB items, measured)
    "thread_roundtrip": 20e-6,  # one single-item batch, submit to result
    "process_roundtrip": 80e-6,
}


@dataclass(frozen=True)
class Advice:
    """Which engine suits a function, and why.

    ``str(advice)`` is one line: mode, workers, chunksize and the reasons.

    Attributes:
        mode: "sequential", "threads", "processes" or "async".
        workers: the worker count (or concurrency cap) to use.
        chunksize: the batch size, or "auto" (adaptive).
        reasons: plain sentences explaining the choice.
        expected_speedup: per mode considered, the modelled speedup over sequential.
        measurements: the raw numbers the choice rests on (seconds per task, CPU ratio, pickled
            sizes, modelled seconds per mode...).
    """

    mode: str
    workers: int
    chunksize: int | str
    reasons: tuple[str, ...]
    expected_speedup: dict[str, float] = field(default_factory=dict)
    measurements: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        why = " ".join(self.reasons)
        return f"{self.mode} x{self.workers} (chunksize {self.chunksize}): {why}"


def io_workers(s: Sample, cpus: int) -> int:
    """Little's law: enough concurrent tasks to keep the CPUs busy while the tasks wait."""
    return _littles_law(s.per_task, (s.cpu if s.compute is None else s.compute) / max(s.timed, 1), cpus)


def decide(
    s: Sample,
    remaining: int | None,
    *,
    cpus: int | None = None,
    pool_warm: bool = False,
    function_pickles: Callable[[], str | None] = lambda: None,
    free_threaded: bool | None = None,
    nested: bool | None = None,
    overheads: dict[str, float] | None = None,
) -> Advice:
    """Apply the cost model (module docstring) to a sample. Pure: every input is an argument."""
    cpus = usable_cpus() if cpus is None else cpus
    free_threaded = (not gil_enabled()) if free_threaded is None else free_threaded
    nested = in_worker() if nested is None else nested
    o = {**PRIORS, **(overheads or {})}
    n = ASSUMED_TASKS if remaining is None else remaining
    t = s.per_task
    ratio = s.cpu_ratio
    measured: dict[str, float] = {
        "sampled_tasks": float(s.n), "seconds_per_task": t, "cpu_ratio": ratio,
        "remaining_tasks": float(n), "item_bytes": s.item_bytes, "result_bytes": s.result_bytes,
        "parent_pickle_seconds": s.parent_pickle, "usable_cpus": float(cpus),
    }
    if s.thread_speedup is not None:
        measured["thread_speedup"] = s.thread_speedup
    scaling = s.scaling if free_threaded else {}
    measured.update({f"thread_scaling_{k}": x for k, x in sorted(scaling.items())})
    lead = ((f"The first task only waited, so {s.overlapped} more started beside it on threads while it ran.",)
            if s.overlapped else ())
    if s.failed:
        return Advice("threads", default_threads(), "auto", (
            *lead, "A sampled task raised, so the work could not be measured; threads are the safe default.",
        ), {}, measured)

    io_bound = ratio < CPU_BOUND_RATIO
    thr_workers = io_workers(s, cpus) if io_bound else cpus
    if io_bound:
        par_thr = float(max(1, min(thr_workers, n)))
    elif scaling:  # no GIL, measured: threads may even be slower than one (contention)
        par_thr = scaled(scaling, min(thr_workers, cpus))
    else:  # with a GIL: what the two-thread probe saw of its release; unmeasured: serial
        gil_fraction = max(0.0, (s.thread_speedup or 1.0) - 1.0)
        par_thr = 1 + gil_fraction * (min(thr_workers, cpus) - 1)
    costs = {"sequential": n * t, "threads": n * t / par_thr + n * o["thread_task"]}
    proc_note = None
    if nested:
        proc_note = "already inside a taskloom worker process: a nested map does not start a pool of pools"
    elif cpus < 2:
        proc_note = "this process may use only one CPU"
    if proc_note is None:
        start = 0.0 if pool_warm else o["process_start"]
        work = n * (t + s.worker_pickle) / min(cpus, max(n, 1))
        transfer = (s.item_bytes + s.result_bytes) / o["pipe_bytes_per_second"]
        parent = n * (s.parent_pickle + transfer + o["process_task"])
        costs["processes"] = start + max(work, parent) + n * o["process_task"] / cpus
        # Only when processes could win: finding out pickles the function (and imports cloudpickle).
        if costs["processes"] < min(costs["sequential"], costs["threads"]) and (
                problem := function_pickles()) is not None:
            proc_note = f"the function cannot be sent to processes ({problem})"
            del costs["processes"]
    speedups = {m: (costs["sequential"] / c if c > 0 else 1.0) for m, c in costs.items()}
    measured.update({f"modelled_seconds_{m}": c for m, c in costs.items()})
    best = min(costs, key=lambda m: costs[m])
    # A near-tie: threads pickle nothing and share memory. Not on a busy machine for work that
    # only computes: there the two threads' reading also holds the larger share of the CPUs two
    # threads get (pure Python read up to 1.66x beside two busy loops), not only what the GIL lets
    # run in parallel. Work that also waits (a tenth of its time or more) keeps it: threads overlap
    # its waits beyond one per CPU, which the model does not count (5 ms waits and ~2 ms of
    # computing ran 1.38x slower on processes there). So does work on a free-threaded build, whose
    # threads the scaling probe measured, not the GIL probe (3.13t read 10 ms sleeps under load as
    # computing, and their near-tie went to processes once a snapshot also showed the load).
    if best == "processes" and costs["threads"] <= costs["processes"] * THREADS_OVER_PROCESSES and (
            s.load < BUSY_LOAD or ratio < WAITS_TOO or scaling):
        best = "threads"
    what = (f"{100 * (1 - ratio):.0f}% of each task's {_fmt(t)} is waiting (I/O or sleep)" if io_bound
            else f"tasks compute {100 * ratio:.0f}% of their {_fmt(t)}")
    reasons = [*lead, f"Measured {s.n} task(s): {what}."]
    too_little = best != "sequential" and speedups[best] < MIN_GAIN
    if too_little:
        reasons.append(f"{best} would be only {speedups[best]:.2f}x faster (model), under the "
                       f"{MIN_GAIN}x worth the extra machinery.")
        best = "sequential"
    probed = s.thread_speedup is not None or s.moot_probe  # (a moot probe: no reading could change this)
    if (best == "sequential" and not io_bound and s.load >= BUSY_LOAD and probed
            and n > 1 and cpus > 1 and costs.get("processes", math.inf) >= costs["sequential"]
            and s.parent_pickle + s.worker_pickle >= t):
        # (Only where pickling an item costs more than its task: tiny tasks under a lock, on a job
        # too short for a pool, went to 6 threads, and the heavy tasks after them stayed there.)
        # On a busy machine the probe's reading errs low only (two threads beside busy loops run
        # little at the same time): eight numpy sums read 1.0-1.1x there and ran sequentially,
        # 1.85x slower than on threads. Processes are out (pickling), and threads cost work that
        # holds the GIL ~5% over one thread: they get the benefit of the doubt.
        probe = ("no reading of two threads could have changed this, so none was taken" if s.thread_speedup is None
                 else f"the probe's {s.thread_speedup:.2f}x may fall short of what threads do")
        reasons.append(f"The machine is busy (a thread waits about {s.load:.2f} s for a CPU per second it "
                       f"computes): two threads run little at the same time beside busy loops, so {probe}; "
                       f"threads cost work that holds the GIL little, and processes would pickle too much.")
        return Advice("threads", max(cpus, default_threads()), "auto", tuple(reasons), speedups, measured)
    if best == "sequential":
        if scaling and not io_bound:
            reasons.append(f"This interpreter runs without the GIL: {_scaling_text(scaling)} (measured).")
        if n == 0 and s.overlapped:  # the whole job ran during the sample, on threads: say so
            reasons.append("The sample ran every task: nothing is left to run.")
            return Advice("threads", s.overlapped + 1, "auto", tuple(reasons), speedups, measured)
        if n == 0:
            reasons.append("The sample ran every task: nothing is left to run in parallel.")
        elif not too_little:
            reasons.append(f"The remaining ~{n} tasks add up to about {_fmt(n * t)} of work: starting or "
                           "feeding a pool would cost about as much as it saves.")
        return Advice("sequential", 1, "auto", tuple(reasons), speedups, measured)
    if best == "threads":
        if io_bound:
            reasons.append(f"Waiting releases the GIL, so threads overlap the waits without pickling anything; "
                           f"{thr_workers} threads keep {cpus} CPU(s) busy (wait/CPU ratio, Little's law).")
        elif scaling:
            reasons.append(f"This interpreter runs without the GIL, and {_scaling_text(scaling)} (measured), so "
                           "threads compute in parallel without pickling.")
        else:
            reasons.append(f"The function releases the GIL (two threads ran {s.thread_speedup or 1:.2f}x as fast "
                           "as one), so threads compute in parallel without pickling.")
            if s.load >= BUSY_LOAD and (busy := max(cpus, default_threads())) > thr_workers:
                thr_workers = busy
                reasons.append(f"The machine is busy (a thread waits about {s.load:.2f} s for a CPU per second it "
                               f"computes): {busy} threads, as many as the stdlib's default, take their share of "
                               f"its CPUs (the kernel shares them out per thread).")
        if proc_note and not io_bound:
            reasons.append(f"Processes were not considered: {proc_note}.")
        return Advice("threads", thr_workers, "auto", tuple(reasons), speedups, measured)
    if scaling:
        reasons.append(f"This interpreter runs without the GIL, but threads do not scale on this work: "
                       f"{_scaling_text(scaling)} (measured; threads that share objects contend for them), so "
                       f"{cpus} worker processes run it in parallel (model: {speedups['processes']:.1f}x).")
        return Advice("processes", cpus, "auto", tuple(reasons), speedups, measured)
    if free_threaded:
        measured_gil = "not measured on this interpreter without the GIL, so not counted on"
        reasons.append(f"Threads were not measured in parallel on this work ({measured_gil}), so {cpus} worker "
                       f"processes run it in parallel (model: {speedups['processes']:.1f}x).")
        return Advice("processes", cpus, "auto", tuple(reasons), speedups, measured)
    if s.thread_speedup is not None and s.thread_speedup >= MIN_GAIN:
        reasons.append(f"Threads help only in part (two threads ran it {s.thread_speedup:.2f}x as fast as one: it "
                       f"holds the GIL part of the time), and {cpus} worker processes run it faster "
                       f"(model: {speedups['processes']:.1f}x).")
        return Advice("processes", cpus, "auto", tuple(reasons), speedups, measured)
    if s.thread_speedup is not None:
        measured_gil = f"two threads ran {s.thread_speedup:.2f}x as fast as one"
    elif s.per_task < PROBE_MIN_TASK:
        measured_gil = f"not measured: tasks under {_fmt(PROBE_MIN_TASK)} are too short to time on two threads"
    else:
        measured_gil = "not measured: too few tasks to spare two for the probe"
    reasons.append(f"The GIL serialises threads on this work ({measured_gil}), so {cpus} worker processes "
                   f"run it in parallel (model: {speedups['processes']:.1f}x).")
    return Advice("processes", cpus, "auto", tuple(reasons), speedups, measured)


def scaled(scaling: dict[int, float], threads: int) -> float:
    """The speed-up of ``threads`` threads, from the measured ``scaling`` (threads -> speed-up).

    Between measured counts (and 1 thread = 1.0), linear. Beyond the largest, the same gain per
    extra thread when it helped; when threads slowed each other down, no better than measured.
    """
    points = sorted({1: 1.0, **scaling}.items())
    for (k0, x0), (k1, x1) in itertools.pairwise(points):
        if threads <= k1:
            return max(0.01, x0 + (x1 - x0) * (threads - k0) / (k1 - k0))
    top, x = points[-1]
    if threads <= top or x <= 1.0 or top <= 1:
        return max(0.01, x)
    return 1.0 + (x - 1.0) * (threads - 1) / (top - 1)


def _scaling_text(scaling: dict[int, float]) -> str:
    parts = [f"{k} threads ran it {x:.2f}x as fast as one" for k, x in sorted(scaling.items())]
    return ", ".join(parts)


def _reference_task(n: int) -> int:
    """Pure-Python computing that shares nothing between threads: what ``thread_scaling`` runs."""
    return sum(i * i for i in range(n))


def thread_scaling(budget: float = 0.3) -> dict[int, float]:
    """How much faster 2 threads (and one per CPU) run pure-Python CPU work here than one, measured.

    The probe ``mode="auto"`` runs without a GIL (``_measure_scaling``), run on a reference task
    whatever the interpreter: about 1.0 with the GIL, up to the thread count without it when the
    CPUs are free. Empty on a single usable CPU. ``taskloom info`` shows it.
    """
    if usable_cpus() < 2:
        return {}
    return dict(run_sample(_reference_task, itertools.repeat(20_000), budget, free_threaded=True).scaling)


def scaling_text(scaling: dict[int, float]) -> str:
    """``{2: 1.9}`` as words: "2 threads ran it 1.90x as fast as one"."""
    return _scaling_text(scaling)


def decide_coroutine(workers: int | None) -> Advice:
    cap = workers or ASYNC_DEFAULT_WORKERS
    return Advice("async", cap, 1, (
        f"The function is a coroutine function (async def): it runs on an asyncio event loop, at most "
        f"{cap} at once.",), {}, {})


def advise(fn: Callable[[Any], Any], sample: Iterable[Any], *, budget: float = 1.0,
           total: int | None = None) -> Advice:
    """Measure ``fn`` on ``sample`` items here and say which engine suits it, and why.

    Runs sample tasks in this thread (and two at once on two threads, for CPU-bound work) within
    ``budget`` seconds, measures pickling costs, then applies the cost model ``mode="auto"``
    uses. The tasks really run (their results are discarded), and a short sample may be run more
    than once. ``taskloom advise module:function SAMPLE`` does the same from the command line.

    Args:
        fn: the function to measure (a coroutine function is always advised "async", unrun).
        sample: representative items; the first few are run, the rest ignored.
        budget: seconds of sample tasks to run at most (default 1.0; the first task and the first
            two-thread probe run even past it).
        total: how many tasks the real job has (default: assume 10,000).

    Returns:
        An ``Advice`` with mode, workers, chunksize, expected speedups, reasons and measurements.

    Raises:
        TypeError: ``fn`` is not callable.
        ValueError: ``budget`` is not a positive number, or ``sample`` is empty.

    Example::

        >>> advice = taskloom.advise(parse, lines[:100])
        >>> print(advice.mode, advice.reasons)
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}")
    if isinstance(budget, bool) or not isinstance(budget, int | float) or budget <= 0:
        raise ValueError(f"budget must be a number of seconds > 0, got {budget!r}")
    if is_coroutine_function(fn):
        return decide_coroutine(None)
    items = list(sample) if not isinstance(sample, list) else sample
    if not items:
        raise ValueError("advise needs at least one sample item, got an empty sample")
    # Results are discarded here, so a short sample may be run again: the probe for parallel
    # threads needs items too.
    s = run_sample(fn, itertools.cycle(items), budget)
    return decide(s, total if total is not None else ASSUMED_TASKS, function_pickles=lambda: function_pickles(fn))



# -- mode="auto": the choice before the run, and the second look during it ----------------------------
#: Auto mode looks again once this many tasks have run, if their time differs from the sample's
#: by more than SWITCH_FACTOR either way.
RECONSIDER_AFTER = 64
SWITCH_FACTOR = 4.0


@dataclass(frozen=True)
class Choice:
    """What ``mode="auto"`` chose before the run: the engine, why, and the tasks it already ran."""

    engine: Mode
    advice: Advice
    head: Head | None  # the sample tasks, with their results (None for coroutines: nothing ran)
    workers: int | None
    sample: Sample | None
    source: Iterator[Any]  # the rest of the input (the run reads on from here)


#: How long what auto measured for a function is reused by later runs of it in this process.
REMEMBER_SECONDS = 300.0


class _Remembered(NamedTuple):
    kind: tuple[type, int]  # the first item's type and the magnitude of its size
    sample: Sample
    at: float


_remembered: weakref.WeakKeyDictionary[Any, _Remembered] = weakref.WeakKeyDictionary()
_remembered_lock = threading.Lock()


def _item_kind(item: Any) -> tuple[type, int]:
    size = known_size(item)
    return type(item), 0 if size is None else size.bit_length()


def _recall(fn: Any, kind: tuple[type, int]) -> Sample | None:
    """What an earlier run of ``fn`` on items of this kind measured, if recent."""
    try:
        with _remembered_lock:
            entry = _remembered.get(fn)
    except TypeError:  # not weak-referenceable (a builtin): never remembered
        return None
    if entry is None or entry.kind != kind or time.monotonic() - entry.at > REMEMBER_SECONDS:
        return None
    return entry.sample


def _remember(fn: Any, kind: tuple[type, int], s: Sample) -> None:
    if s.failed or not s.timed:
        return
    if s.thread_speedup is None and not s.scaling and not s.moot_probe and s.cpu_ratio >= CPU_BOUND_RATIO and (
            s.per_task >= PROBE_MIN_TASK or not gil_enabled()):
        return  # a short job skipped the probe of parallel threads: its choice was a guess, not worth repeating
    with contextlib.suppress(TypeError), _remembered_lock:
        # Without the items and results (a 40 MB array is not kept alive by a memo).
        head: Head = [(None, None, None, wall) for _, _, _, wall in s.head]
        _remembered[fn] = _Remembered(kind, dataclasses.replace(s, head=head, overlapped=0, exhausted=False,
                                                                in_flight=[]), time.monotonic())


def forget(fn: Any) -> None:
    """Measure ``fn`` afresh on its next auto run (its tasks changed: auto switched engines)."""
    with contextlib.suppress(TypeError), _remembered_lock:
        _remembered.pop(fn, None)


def choose(fn: Callable[..., Any], source: Iterator[Any], total: int | None, workers: int | None,
           coroutine: bool, overlap: int, hand_off: bool = False) -> Choice:
    """mode="auto": measure the first items here (results kept) and pick the engine.

    ``overlap``: how many more sample tasks may start beside a first one that waits. A function
    measured by an earlier run in this process, on items of the same type and size, within
    ``REMEMBER_SECONDS``, is not measured again: the run starts at once on the engine those
    numbers give, and the second look (``Reconsider``) still corrects it if its tasks now differ.
    ``hand_off``: the run can take over sample tasks still running (``Sample.in_flight``).
    """
    if coroutine:
        advice = decide_coroutine(workers)
        log.info("taskloom auto mode: %s", advice)
        return Choice(by_name("async"), advice, None, workers, None, source)
    try:
        first = next(source)
    except StopIteration:
        s = Sample(exhausted=True)
        advice = decide(s, 0)
        return Choice(by_name(advice.mode), advice, [], workers or advice.workers, None, source)
    kind = _item_kind(first)
    source = put_back(first, source)  # (a list's iterator, moved back: the run reads it a slice at a time)
    earlier = _recall(fn, kind)
    if earlier is not None:
        # How busy the machine is now, not when it was measured (the function's own numbers stand).
        now = runnable_load()
        earlier = earlier if now is None else dataclasses.replace(earlier, load=now)
        advice = decide(earlier, total, pool_warm=_processes_warm(), function_pickles=lambda: function_pickles(fn))
        advice = dataclasses.replace(advice, reasons=(
            f"Measured by an earlier run of this function in this process (its {earlier.n} sampled tasks "
            f"took {_fmt(earlier.per_task)} each).", *advice.reasons))
        log.info("taskloom auto mode: %s", advice)
        return Choice(by_name(advice.mode), advice, [], workers or advice.workers, earlier, source)
    s = run_sample(fn, source, AUTO_BUDGET, total, overlap, hand_off=hand_off, settled=_settled(total))
    _remember(fn, kind, s)
    remaining = 0 if s.exhausted else (None if total is None else max(0, total - s.taken))
    advice = decide(s, remaining, pool_warm=_processes_warm(), function_pickles=lambda: function_pickles(fn))
    log.info("taskloom auto mode: %s", advice)
    return Choice(by_name(advice.mode), advice, s.head, workers or advice.workers, s, source)


def _settled(total: int | None, *, cpus: int | None = None,
             free_threaded: bool | None = None) -> Callable[[Sample], bool]:
    """For ``run_sample``: could a two-thread reading (before the probe: any; after it: a higher
    one) still change the choice? If not, the GIL probe does not run (again): each probe runs on
    two threads what a pool would run on more, and on a busy machine a thread's share of the CPUs
    is per thread."""

    def settled(s: Sample) -> bool:
        remaining = None if total is None else max(0, total - s.taken)
        warm = _processes_warm()
        low, high = (decide(dataclasses.replace(s, thread_speedup=reading), remaining, cpus=cpus, pool_warm=warm,
                            free_threaded=free_threaded) for reading in (s.thread_speedup or 1.0, 2.0))
        return (low.mode, low.workers) == (high.mode, high.workers)

    return settled


def _processes_warm() -> bool:
    from ._pools import live_backends

    return any(b.name == "processes" and b.workers >= usable_cpus() for b in live_backends())


class Reconsider:
    """Auto's second look during a run: the same model, fed the per-task time measured there.

    If tasks take much longer or shorter than sampled (``SWITCH_FACTOR``, after
    ``RECONSIDER_AFTER`` tasks), the choice is made again. It takes two batches in a row
    that differ: the first one where the change shows is usually a mix of old and new tasks, and
    its average would understate the change. The run is then asked to switch, once: the rule
    lives here, with the measuring; the run only knows how to switch. A choice made again that
    keeps the engine does not end the look: the new task length becomes what later batches are
    compared with (tiny tasks of 3 us whose batches read 12 us, a page fault or an interrupt,
    used up the one look, and the heavy tasks after them stayed on it: a CI failure).
    """

    def __init__(self, fn: Callable[..., Any], sample: Sample, advice: Advice,
                 open_backend: Callable[[Mode, int], Backend]) -> None:
        self._fn = fn
        self._sample = sample
        self._advice = advice
        self._open = open_backend
        self._deviations = 0
        self._basis = sample.per_task  # what a batch's tasks are compared with
        self.finished = False
        # Batches measure themselves from here on (a reading costs two reads of /proc, which let
        # go of the GIL: GIL-releasing tasks on a busy machine ran 1.19x slower measured).
        self.measure_from = RECONSIDER_AFTER // 2

    def observe(self, per_task: float, cpu: CpuTime | None, tasks_done: int,
                remaining: int | None) -> Switch | None:
        """A batch finished; its tasks took ``per_task`` seconds each, ``tasks_done`` have ended so far.

        ``cpu``: where a task's time went, per task, as measured where they ran (None: not
        measured, the sample's share of computing is assumed).
        """
        basis = self._basis
        if remaining == 0:  # every item has gone to the engine: a switch would move nothing
            return None
        if tasks_done < RECONSIDER_AFTER or basis <= 0:  # before building a Sample for each batch
            self._deviations = 0
            return None
        later = self._later(per_task, cpu)
        if 1 / SWITCH_FACTOR < later.per_task / basis < SWITCH_FACTOR:
            self._deviations = 0
            return None
        self._deviations += 1
        if self._deviations < 2:
            return None
        s = self._sample
        per_task = later.per_task
        advice = decide(later, remaining, pool_warm=_processes_warm(),
                        function_pickles=lambda: function_pickles(self._fn))
        forget(self._fn)  # its tasks are not what was measured: the next run measures again
        if advice.mode == self._advice.mode:
            self._basis, self._deviations = per_task, 0
            return None
        self.finished = True
        switched = dataclasses.replace(advice, reasons=(
            f"Switched during the run: tasks now take {per_task:.3g} s each, not {s.per_task:.3g} s as sampled.",
            *advice.reasons))
        engine = by_name(advice.mode)
        return Switch(engine, self._open(engine, advice.workers), switched)

    def _later(self, wall: float, cpu: CpuTime | None) -> Sample:
        """The sample, as if its tasks had taken ``wall`` seconds each, spent as ``cpu`` says.

        The tasks that take much longer or shorter than sampled are other tasks: their own
        share of computing tells CPU work from waiting, not the sample's (tiny first tasks
        that read as waiting beside a busy thread, then heavy CPU ones, must not go to threads).
        A wait for the GIL is not the task's own: alone (in a process) it would not wait so.
        """
        s = self._sample
        if cpu is None:
            return dataclasses.replace(s, timed=1, wall=wall, cpu=wall * s.cpu_ratio, compute=None, exhausted=False)
        # The clocks were read around the batch, the wall time inside it: no share exceeds it.
        computed = min(cpu.computed, wall)
        queued = min(cpu.queued, wall - computed)
        own = wall - min(cpu.gil, wall - computed - queued)
        return dataclasses.replace(s, timed=1, wall=own, cpu=computed + queued, compute=computed, exhausted=False)


def _fmt(seconds: float) -> str:
    return format_seconds(seconds, 2)
