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
reason threads win over processes unless processes are ``THREADS_OVER_PROCESSES`` faster.

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
import contextvars
import dataclasses
import heapq
import itertools
import logging
import math
import os
import pickle
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ._backends._base import ItemError
from ._callables import function_pickles, is_coroutine_function
from ._modes import by_name
from ._run._run import Switch
from ._stats import _fmt as format_seconds
from ._system import ASYNC_DEFAULT_WORKERS, default_threads, gil_enabled, in_worker, usable_cpus

if TYPE_CHECKING:
    from ._backends._base import Backend
    from ._modes import Mode

__all__ = ["Advice", "advise"]

log = logging.getLogger("taskloom")

AUTO_BUDGET = 0.05  # seconds of sample tasks mode="auto" runs in the caller's thread
SAMPLE_MAX = 64  # sample tasks at most
CPU_BOUND_RATIO = 0.5  # CPU time / wall time above which a task is CPU-bound
OVERLAP_AFTER = 0.005  # seconds a first sample task must have waited before others start beside it
PROBE_MIN_TASK = 100e-6  # seconds: shorter tasks are not probed for parallel threads (with a GIL)
SCALING_TAKE = 0.5e-3  # seconds of work a scaling-probe thread takes from the input at once (tiny tasks)
SCALES = 1.2  # without a GIL, N threads must run this much faster than one to count as scaling
HOPELESS = 2  # the scaling probe stops when a thread's tasks run this many times slower than N x one alone
MIN_GAIN = 1.25  # a concurrent mode must be this much faster than sequential to be chosen
THREADS_OVER_PROCESSES = 1.1  # threads win unless processes are modelled this much faster
MAX_IO_THREADS = 256  # ThreadPoolExecutor(200) is what users reach for on many slow fetches
ASSUMED_TASKS = 10_000  # remaining tasks assumed when the input has no length

# Priors measured on a 2-CPU Linux machine (benchmarks/overhead.py); refined by measure_overheads().
PRIORS = {
    "thread_task": 0.3e-6,  # per task after batching
    "process_task": 0.3e-6,  # per task after batching: scheduler bookkeeping in the parent
    "process_start": 0.1,  # cold pool start (forkserver + workers): 0.08 s measured
    "pipe_bytes_per_second": 0.75e9,  # parent <-> worker pipe, pickled bytes (4 MB items, measured)
    "pickle_bytes_per_second": 0.8e9,  # pickling (or unpickling) a large buffer: numpy, bytes, str
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


Head = list[tuple[Any, Any, ItemError | None, float]]


@dataclass
class Sample:
    """What running some tasks here taught us."""

    head: Head = field(default_factory=list)  # every sampled task, with its result
    timed: int = 0  # tasks run one at a time: wall, cpu and compute are their sums
    wall: float = 0.0
    cpu: float = 0.0  # computing, or waiting for a CPU while runnable: what is not I/O
    compute: float | None = None  # computing only (None: as cpu): what sizes a pool of I/O threads
    thread_speedup: float | None = None
    #: without a GIL: threads -> how much faster that many threads ran the work than one (measured)
    scaling: dict[int, float] = field(default_factory=dict)
    loop_wall: float = 0.0  # the sequential tasks' wall time with the sampling loop's own costs
    loop_queued: float = 0.0  # of which the caller's thread spent waiting for a CPU (a busy machine)
    item_bytes: float = 0.0
    result_bytes: float = 0.0
    parent_pickle: float = 0.0  # seconds per task: pickle item + unpickle result
    worker_pickle: float = 0.0  # seconds per task: unpickle item + pickle result
    picklable: bool = True
    exhausted: bool = False  # the sample read the whole input
    overlapped: int = 0  # tasks started beside a waiting first task (see _Overlap)

    @property
    def n(self) -> int:
        return len(self.head)

    @property
    def per_task(self) -> float:
        return self.wall / self.timed if self.timed else 0.0

    @property
    def cpu_ratio(self) -> float:
        """The share of a task's time it computes, of the time it computes or waits for I/O.

        Run-queue wait (runnable, but the machine's CPUs are taken) counts on neither side: on a
        busy machine CPU work and I/O both wait for a CPU, and neither becomes the other.
        """
        if self.wall <= 0:
            return 1.0
        if self.compute is None:
            return min(1.0, self.cpu / self.wall)
        own = self.wall - max(0.0, self.cpu - self.compute)  # computing + waiting for I/O
        return min(1.0, self.compute / own) if own > 0 else 1.0

    @property
    def failed(self) -> bool:
        return any(h[2] is not None for h in self.head)


def _runqueue_seconds(native_id: int | None = None) -> float:
    """Seconds a thread (this one by default) has waited for a CPU while runnable (Linux
    schedstat), else 0.

    On a busy machine a computing thread also waits - for a CPU, not for I/O. That time is
    counted as computing, or CPU-bound work would look like I/O and go to threads.
    """
    path = "/proc/thread-self/schedstat" if native_id is None else f"/proc/self/task/{native_id}/schedstat"
    try:
        with open(path) as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


class _Overlap:
    """While the caller runs its first sample task, start a few more if that task only waits.

    Sampling runs tasks one at a time in the caller's thread, so a job of slow I/O tasks would
    wait a whole task before anything overlaps (three 2 s downloads: 4 s instead of 2 s). The
    shared ``_Watcher`` thread reads the caller thread's CPU clock: once the task has run
    ``OVERLAP_AFTER`` seconds while computing (or waiting for a CPU) under a tenth of the time,
    it takes up to ``extra`` more items and runs each on a thread of its own, in a copy of the
    caller's context. Their results join the sample, in input order. The caller stops it when its
    task returns. A window in which the task did not only wait (it computed, or a busy machine
    kept it waiting for a CPU as it started) is followed by another, until the task returns: on a
    loaded machine the first window can hold a few ms of run-queue wait, the next ones do not.

    A first task that computes through its first window instead gets one task beside it, on a
    thread, as the probe for parallel threads (``probe=True``): the two threads' busy time over
    the time they ran together says whether the function releases the GIL (``speedup``), and a
    long task is measured without a second, serial probe afterwards.
    """

    def __init__(self, fn: Callable[[Any], Any], source: Iterator[Any], extra: int, probe: bool) -> None:
        self._fn, self._source, self._extra, self._probe = fn, source, extra, probe
        self._clock = time.pthread_getcpuclockid(threading.get_ident())
        self._native_id = threading.get_native_id()
        self._context = contextvars.copy_context()
        self._stopped = False
        self._lock = threading.Lock()  # held while the watcher reads the source or starts a thread
        self._threads: list[threading.Thread] = []
        self._results: list[tuple[Any, Any, ItemError | None, float]] = []
        self._busy: list[float] = []  # per started task: its busy seconds (computing or runnable)
        self._ended: list[float] = []  # per started task: perf_counter() when it returned
        self.probe_started: float | None = None  # perf_counter() when the probe task started
        self._probe_busy0 = 0.0  # the caller's busy clock then
        self.exhausted = False
        self.error: BaseException | None = None
        self.due = time.perf_counter() + OVERLAP_AFTER
        self._window0 = self._clocks()

    def _clocks(self) -> tuple[float, float, float]:
        """(wall, CPU time, run-queue wait) of the caller's thread, now."""
        return time.perf_counter(), time.clock_gettime(self._clock), _runqueue_seconds(self._native_id)

    @classmethod
    def start(cls, fn: Callable[[Any], Any], source: Iterator[Any], extra: int, probe: bool) -> _Overlap | None:
        if extra < 1 or not hasattr(time, "pthread_getcpuclockid"):
            return None  # not on Windows (no CPU clock of another thread)
        watch = cls(fn, source, extra, probe)
        _watcher().add(watch)
        return watch

    def check(self) -> None:
        """Called by the watcher at ``due``: start more tasks if the first one only waited."""
        try:
            now = self._clocks()
        except OSError:  # the caller's thread is gone
            return
        wall, computed, queued = (a - b for a, b in zip(now, self._window0, strict=True))
        own = wall - queued  # computing or waiting for I/O; run-queue wait is neither
        if own >= 0.5 * OVERLAP_AFTER:  # else the window was mostly spent runnable: judge the next
            if computed < 0.1 * own:
                # As many as Little's law would keep busy so far (the task may wait longer yet).
                self._launch(min(self._extra, _littles_law(own, computed, usable_cpus()) - 1))
                return
            if self._probe and computed >= CPU_BOUND_RATIO * own:
                self._probe_busy0 = now[1] + now[2]
                self.probe_started = time.perf_counter()
                self._launch(1)
                return
        with self._lock:
            if self._stopped:
                return
            self._window0 = now  # judge the next window alone
            self.due = time.perf_counter() + OVERLAP_AFTER
        _watcher().add(self)

    def _launch(self, extra: int) -> None:
        for _ in range(extra):
            with self._lock:
                if self._stopped:
                    return
                try:
                    item = next(self._source)
                except StopIteration:
                    self.exhausted = True
                    return
                except BaseException as exc:  # the input raised: the caller re-raises it
                    self.error = exc
                    return
                slot = len(self._results)
                self._results.append((item, None, None, 0.0))
                self._busy.append(0.0)
                self._ended.append(0.0)
                # Daemon threads: after Ctrl-C in the caller, a sample task does not hold up the exit.
                thread = threading.Thread(target=self._context.copy().run, args=(self._run, slot, item),
                                          name="taskloom-auto-sample", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _run(self, slot: int, item: Any) -> None:
        done = _timed_call(self._fn, item)
        self._results[slot] = (item, done.value, done.error, done.wall)
        self._busy[slot], self._ended[slot] = done.busy, time.perf_counter()

    def abandon(self) -> None:
        """The caller's task raised KeyboardInterrupt or SystemExit: start nothing more."""
        with self._lock:
            self._stopped = True

    def finish(self) -> list[tuple[Any, Any, ItemError | None, float]]:
        """Stop starting tasks, wait for those started, and return them in input order.

        Called by the caller's thread as soon as its own task returned.
        """
        self.abandon()
        caller_ended = time.perf_counter()
        caller_busy = time.clock_gettime(self._clock) + _runqueue_seconds(self._native_id) - self._probe_busy0
        for thread in self._threads:
            thread.join()
        if self.probe_started is not None and self._results and self._results[0][2] is None:
            together = max(caller_ended, *self._ended) - self.probe_started
            if together > 0:
                # CPU seconds both threads got per second: ~1 when they took turns holding the GIL.
                self.speedup = max(1.0, min(2.0, (caller_busy + self._busy[0]) / together))
        return self._results

    speedup: float | None = None  # the probe's reading; None: no probe ran, or its task failed

    def task_busy(self, slot: int) -> float:
        """Busy seconds of the task started ``slot``-th (computing or waiting for a CPU)."""
        return self._busy[slot]


class _Watcher:
    """One daemon thread for every ``_Overlap``: checks each when it falls due (cheap to use)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, _Overlap]] = []
        self._seq = itertools.count()
        threading.Thread(target=self._loop, name="taskloom-auto-watch", daemon=True).start()

    def add(self, watch: _Overlap) -> None:
        with self._cond:
            heapq.heappush(self._due, (watch.due, next(self._seq), watch))
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > time.perf_counter():
                    self._cond.wait(None if not self._due else self._due[0][0] - time.perf_counter())
                _, _, watch = heapq.heappop(self._due)
            if not watch._stopped:
                watch.check()


_the_watcher: _Watcher | None = None
_watcher_lock = threading.Lock()


def _watcher() -> _Watcher:
    global _the_watcher
    with _watcher_lock:
        if _the_watcher is None:
            _the_watcher = _Watcher()
        return _the_watcher


def _forget_watcher_in_child() -> None:
    # A forked child has no watcher thread (and the lock may have been held mid-fork).
    global _the_watcher, _watcher_lock
    _the_watcher, _watcher_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_watcher_in_child)


class _Timed(NamedTuple):
    value: Any
    error: ItemError | None
    wall: float  # seconds, start to end
    busy: float  # seconds computing or waiting for a CPU (run-queue): not waiting for I/O
    compute: float  # seconds computing


def _timed_call(fn: Callable[[Any], Any], item: Any, runqueue: bool = True) -> _Timed:
    """Call ``fn(item)`` here and time it.

    Run-queue wait (a busy machine) counts as busy when telling CPU work from I/O, or CPU work
    would look like waiting; it does not count when sizing a pool of I/O threads, which is
    what the task's own computing sets. ``runqueue=False``: the caller reads it around many
    calls at once (two reads of /proc per call would cost more than a tiny task).
    """
    q0 = _runqueue_seconds() if runqueue else 0.0
    c0, t0 = time.thread_time(), time.perf_counter()
    try:
        value, error = fn(item), None
    except Exception as exc:
        value, error = None, ItemError(exc, traceback.format_exc(), False)
    wall, compute = time.perf_counter() - t0, min(time.perf_counter() - t0, time.thread_time() - c0)
    waited = _runqueue_seconds() - q0 if runqueue else 0.0
    return _Timed(value, error, wall, min(wall, compute + waited), compute)


def run_sample(fn: Callable[[Any], Any], source: Iterator[Any], budget: float, total: int | None = None,
               overlap: int = 0, free_threaded: bool | None = None) -> Sample:
    """Run items from ``source`` here, within ``budget`` seconds, and measure them.

    Sample tasks run one at a time, so a short job is sampled lightly: at most a quarter of each
    CPU's share of ``total`` (the rest keeps its chance to run in parallel). With ``overlap``,
    up to that many more tasks start on threads while the first one runs, if it only waits
    (see ``_Overlap``). Without a GIL (``free_threaded``, default: this interpreter's state),
    CPU-bound work is then run on 2 and N threads at once to see whether threads scale
    (``_measure_scaling``) instead of the GIL probe.
    """
    free = (not gil_enabled()) if free_threaded is None else free_threaded
    s = Sample()
    queued = _runqueue_seconds()
    limit = SAMPLE_MAX if total is None else min(SAMPLE_MAX, max(1, total // (4 * usable_cpus())))
    if total is not None:
        overlap = min(overlap, total - 1)
    while s.timed < limit and s.wall < budget * 0.5:
        try:
            item = next(source)
        except StopIteration:
            s.exhausted = True
            break
        # Without a GIL the first task runs alone: its time is the single-thread time that the
        # scaling probe compares with (two tasks beside each other would tell their CPU time, not
        # whether they slowed each other down).
        watch = (_Overlap.start(fn, source, overlap, probe=usable_cpus() > 1 and not free)
                 if s.timed == 0 else None)
        called = time.perf_counter()
        try:
            done = _timed_call(fn, item, runqueue=False)
        except BaseException:
            if watch is not None:
                watch.abandon()
            raise
        error = done.error
        s.timed += 1
        s.wall += done.wall
        s.cpu += done.busy
        s.compute = (s.compute or 0.0) + done.compute
        s.head.append((item, done.value, error, done.wall))
        s.loop_wall += time.perf_counter() - called  # what a task costs the scaling probe's loop too
        if watch is not None:
            more = watch.finish()
            s.head.extend(more)
            s.exhausted = watch.exhausted
            if watch.error is not None:
                raise watch.error
            if watch.probe_started is not None:
                # It computes, and one task ran beside it on a thread: while they shared the GIL
                # each took longer than it would alone, so a task's length is its busy time.
                s.thread_speedup = watch.speedup
                s.wall += done.busy - done.wall
                for slot in range(len(more)):
                    s.timed += 1
                    s.wall += watch.task_busy(slot)
                    s.cpu += watch.task_busy(slot)
                    s.compute += watch.task_busy(slot)
                break
            s.overlapped = len(more)
            if s.exhausted or s.overlapped:
                break  # it waits: more tasks one at a time would only delay the parallel run
        if error is not None:
            break
        if free and done.wall >= OVERLAP_AFTER and done.busy >= CPU_BOUND_RATIO * done.wall:
            break  # no GIL: one computing task this long is the single-thread time; the probe runs them 2 at once
    # Time this thread waited for a CPU while it ran the tasks above is busy time, not waiting.
    s.loop_queued = _runqueue_seconds() - queued
    s.cpu = min(s.wall, s.cpu + s.loop_queued)
    if s.failed:
        return s
    if free:
        if s.timed and s.cpu_ratio >= CPU_BOUND_RATIO and not s.exhausted and usable_cpus() > 1:
            _measure_scaling(fn, source, s, budget, total=total)
        _measure_pickling(s)
        return s
    # A busy machine can only make threads look less parallel than they are, so the largest
    # of a few readings is the best one; as many as the budget allows, up to four.
    probes_started = time.perf_counter()
    for probe in range(1 if s.thread_speedup is not None else 0, 4):
        spent = s.wall + time.perf_counter() - probes_started
        # The first probe runs even past the budget: its two tasks are real work, kept, run two at
        # a time; without it a GIL-releasing task too long for the budget would go to processes.
        within = spent + 2 * s.per_task < budget or probe == 0
        if not (s.timed and s.cpu_ratio >= CPU_BOUND_RATIO and within) or s.exhausted:
            break
        if s.per_task < PROBE_MIN_TASK:  # starting two threads would outlast the tasks they time
            break
        # A short job keeps most of its tasks for the parallel run, unless a wrong guess would cost
        # more than the probe: with a few long tasks, at least two rounds of every CPU still to run.
        if s.n + 2 > 2 * limit and (total is None or total - s.n - 2 < 2 * usable_cpus()):
            break
        if (s.thread_speedup or 0) > 1.8 or not _measure_threads(fn, source, s):
            break
    _measure_pickling(s)
    return s


def _measure_threads(fn: Callable[[Any], Any], source: Iterator[Any], s: Sample) -> bool:
    """Run two more tasks on two threads at once: does the function release the GIL?"""
    pair = []
    for _ in range(2):
        try:
            pair.append(next(source))
        except StopIteration:
            s.exhausted = True
            break
    if not pair:
        return False
    out: list[tuple[Any, Any, ItemError | None, float]] = [None] * len(pair)  # type: ignore[list-item]
    cpu = [0.0] * len(pair)
    start = threading.Barrier(len(pair))

    def run(i: int) -> None:
        start.wait()
        done = _timed_call(fn, pair[i])
        out[i] = (pair[i], done.value, done.error, done.wall)
        cpu[i] = done.busy

    threads = [threading.Thread(target=run, args=(i,), name="taskloom-advise") for i in range(len(pair))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    s.head.extend(out)
    if len(pair) == 2 and not any(o[2] is not None for o in out) and wall > 0:
        # CPU seconds the two threads got, per second of wall time: a thread waiting for the GIL
        # burns no CPU, so this is ~1 when the function holds the GIL and ~2 when it releases it.
        # Unlike comparing with the sequential tasks, it does not care how long each task is.
        s.thread_speedup = max(s.thread_speedup or 1.0, min(2.0, sum(cpu) / wall))
        return True
    return False


def _measure_scaling(fn: Callable[[Any], Any], source: Iterator[Any], s: Sample, budget: float,
                     cpus: int | None = None, total: int | None = None) -> None:
    """Without a GIL: run tasks on 2 threads at once, then on one per CPU, against the single-thread time.

    Each probe's threads take tasks from the input until about their share of the time left in
    ``budget`` has passed (each takes at least one, so the first probe runs even past the budget,
    as the GIL probe does: its tasks are real work, run in parallel, kept). ``s.scaling[k]`` is
    the work the k threads did, in single-thread seconds, per second: 1.9 when two threads ran
    it 1.9x as fast as one, 0.5 when they slowed each other down to half. The N-thread probe is
    skipped when two threads did not scale, or when its tasks would not fit in the budget. Of a
    job of known length, a probe runs at most a quarter of what is left (one task per thread at
    least): the rest keeps its chance to run on the engine chosen.
    """
    cpus = usable_cpus() if cpus is None else cpus
    counts = [2] if cpus <= 2 else [2, cpus]
    started = time.perf_counter()
    spent = s.wall
    for k in counts:
        left = budget - spent - (time.perf_counter() - started)
        if k != counts[0] and (left < 2 * s.per_task or s.scaling.get(counts[0], 0.0) < SCALES):
            break
        most = None if total is None else max(k, (total - s.n) // 4)
        speedup = _scaling_probe(fn, source, s, k, max(0.0, left / (len(counts) - counts.index(k))), most)
        if speedup is None:
            break
        s.scaling[k] = speedup


def _scaling_probe(fn: Callable[[Any], Any], source: Iterator[Any], s: Sample, threads: int,
                   window: float, most: int | None = None) -> float | None:
    """Run tasks from ``source`` on ``threads`` threads at once for about ``window`` seconds.

    Returns the work done, in single-thread seconds (each task: what one took in the sequential
    sample's loop, its timing included, as here), over the time the threads took to do it, from
    their start together to the last one's end, less the time each waited for a CPU (Linux
    schedstat: other processes' load is not the threads' contention): 2.0 when two threads ran two tasks in the time
    one takes, 1.0 when they took turns (a lock, a GIL), 0.01 when they ran 200x slower. At most
    ``threads`` (more means uneven items, not faster threads). None when a task raised or none
    ran. The tasks join ``s.head`` in input order; at most ``most`` run.

    The probe ends early once a thread ran its tasks ``HOPELESS x threads`` times slower than one
    thread alone (on 3.13t, tasks updating a dict shared between threads ran 150x slower on any thread
    but the one that filled it): they cannot beat one thread, and more would run more of the job
    at that pace. Each thread takes one task, then twice as many each time while they take under
    ``SCALING_TAKE`` seconds (tiny tasks many at a time, and a task that turns out long is not
    taken by the thousand), and keeps its results to itself until the end: neither the shared
    input nor a shared list of results may become what is measured (without a GIL, objects that
    threads share are what slows them).
    """
    # Time spent runnable but waiting for a CPU counts on neither side, here or in the threads
    # below: a busy machine slows threads and processes alike, while contention is what matters.
    single = (max(s.loop_wall - s.loop_queued, 0.5 * s.loop_wall) / s.timed if s.loop_wall and s.timed
              else s.per_task)
    if single <= 0:
        return None
    lock = threading.Lock()
    taken = [0]  # items handed out so far: the next chunk's place in input order
    hopeless = [False]  # a thread ran its tasks slower than one thread alone would run them all
    chunks: list[list[tuple[int, Head]]] = [[] for _ in range(threads)]
    ends = [0.0] * threads
    errors: list[BaseException] = []
    exhausted = [False]
    barrier = threading.Barrier(threads)
    deadline = [0.0]  # set by the first thread past the barrier: the probe's start + window

    def next_items(first: bool, take: int) -> tuple[int, list[Any]]:
        with lock:
            if exhausted[0] or errors or (not first and (hopeless[0] or time.perf_counter() >= deadline[0])):
                return 0, []
            if most is not None:
                take = min(take, max(0, most - taken[0]))
            items: list[Any] = []
            for _ in range(take):
                try:
                    items.append(next(source))
                except StopIteration:
                    exhausted[0] = True
                    break
                except BaseException as exc:  # the input raised: the caller re-raises it
                    errors.append(exc)
                    break
            at = taken[0]
            taken[0] += len(items)
            return at, items

    def run(index: int) -> None:
        queued = _runqueue_seconds()  # read outside the timed span: /proc costs ~70 us on 3.13t
        try:
            barrier.wait()
        except threading.BrokenBarrierError:  # pragma: no cover - another probe thread failed to start
            return
        with lock:
            if not deadline[0]:
                deadline[0] = time.perf_counter() + window
        mine = chunks[index]
        take = 1
        try:
            while True:
                at, items = next_items(not mine, take)
                if not items:
                    break
                out: Head = []
                mine.append((at, out))
                started = time.perf_counter()
                for item in items:
                    timed = _timed_call(fn, item, runqueue=False)
                    out.append((item, timed.value, timed.error, timed.wall))
                spent = time.perf_counter() - started
                each = spent / len(items)
                if spent >= SCALING_TAKE / 2 and each > HOPELESS * threads * single:
                    # Far slower here than `threads` times a task alone (not just a busy machine):
                    # together they cannot beat one thread. Enough is known; more would only run
                    # more of the job at this pace.
                    hopeless[0] = True
                take = max(1, min(2 * take, 4096, int(SCALING_TAKE / each) if each > 0 else 2 * take))
        except BaseException as exc:  # SystemExit in a task: the caller raises it, as if it ran there
            with lock:
                errors.append(exc)
        ended = time.perf_counter()
        ends[index] = ended - (_runqueue_seconds() - queued)

    # Daemon threads, as the sample's own: after Ctrl-C in the caller they do not hold up the exit.
    workers = [threading.Thread(target=run, args=(i,), name="taskloom-auto-scaling", daemon=True)
               for i in range(threads)]
    started: list[threading.Thread] = []
    try:
        for t in workers:
            t.start()
            started.append(t)
    except BaseException:
        barrier.abort()  # those started do not wait for the others
        raise
    finally:
        for t in started:
            t.join()
    if errors:
        raise errors[0]
    ran = [task for _, out in sorted((c for mine in chunks for c in mine), key=lambda c: c[0]) for task in out]
    s.head.extend(ran)
    s.exhausted = s.exhausted or exhausted[0]
    if not ran or any(task[2] is not None for task in ran):
        return None
    took = max(ends) - (deadline[0] - window)
    # No more than `threads` times faster: above it, the probe's items were shorter than those
    # that set the single-thread time (uneven tasks), not the threads faster than possible.
    return min(float(threads), len(ran) * single / took) if took > 0 else None


def known_size(x: Any) -> int | None:
    """Pickled bytes of ``x`` when its type says them without pickling: bytes, str, buffers, numpy
    arrays (not of objects), and tuples or lists of a few of those; else None."""
    if isinstance(x, bytes | bytearray | str):
        return len(x) + 16
    if isinstance(x, memoryview):
        return x.nbytes + 16
    nbytes, dtype = getattr(x, "nbytes", None), getattr(x, "dtype", None)
    if isinstance(nbytes, int) and dtype is not None and getattr(dtype, "hasobject", True) is False:
        return nbytes + 128  # a numpy array (or alike): its buffer, and a header
    if isinstance(x, tuple | list) and len(x) <= 8:
        sizes = [known_size(e) for e in x]
        if all(size is not None for size in sizes):
            return sum(size for size in sizes if size is not None) + 8
    return None


def _pickling_cost(values: list[Any], rate: float) -> tuple[float, float, float]:
    """(pickled bytes, seconds to pickle, seconds to unpickle) per value, on average.

    A value whose size its type tells (``known_size``: a 40 MB array) is charged at ``rate``
    bytes per second each way, not pickled: measuring must not cost what it measures.
    """
    size = dump = load = 0.0
    for value in values:
        known = known_size(value)
        if known is not None:
            size, dump, load = size + known, dump + known / rate, load + known / rate
            continue
        t0 = time.perf_counter()
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        t1 = time.perf_counter()
        pickle.loads(data)
        size, dump, load = size + len(data), dump + t1 - t0, load + time.perf_counter() - t1
    n = max(1, len(values))
    return size / n, dump / n, load / n


def _measure_pickling(s: Sample) -> None:
    # Three items tell the size and cost well enough; more would cost real time on large items.
    items = [h[0] for h in s.head[:3]]
    results = [h[1] for h in s.head[:3] if h[2] is None]
    if not items:
        return
    rate = PRIORS["pickle_bytes_per_second"]
    try:
        s.item_bytes, item_dump, item_load = _pickling_cost(items, rate)
        s.result_bytes, result_dump, result_load = _pickling_cost(results, rate)
    except Exception:
        s.picklable = False  # cloudpickle may still manage; the model charges it nothing extra
        s.item_bytes = s.result_bytes = 0.0
        return
    s.parent_pickle = item_dump + result_load
    s.worker_pickle = item_load + result_dump


def io_workers(s: Sample, cpus: int) -> int:
    """Little's law: enough concurrent tasks to keep the CPUs busy while the tasks wait."""
    return _littles_law(s.per_task, (s.cpu if s.compute is None else s.compute) / max(s.timed, 1), cpus)


def _littles_law(wall: float, busy: float, cpus: int) -> int:
    """Threads that keep ``cpus`` busy when a task computes ``busy`` of every ``wall`` seconds:
    at least the stdlib's ``min(32, cpus + 4)``, at most ``MAX_IO_THREADS``."""
    return max(default_threads(), min(MAX_IO_THREADS, math.ceil(wall / max(busy, 1e-5) * cpus)))


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
    if best == "processes" and costs["threads"] <= costs["processes"] * THREADS_OVER_PROCESSES:
        best = "threads"  # a near-tie: threads pickle nothing and share memory
    what = (f"{100 * (1 - ratio):.0f}% of each task's {_fmt(t)} is waiting (I/O or sleep)" if io_bound
            else f"tasks compute {100 * ratio:.0f}% of their {_fmt(t)}")
    reasons = [*lead, f"Measured {s.n} task(s): {what}."]
    too_little = best != "sequential" and speedups[best] < MIN_GAIN
    if too_little:
        reasons.append(f"{best} would be only {speedups[best]:.2f}x faster (model), under the "
                       f"{MIN_GAIN}x worth the extra machinery.")
        best = "sequential"
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
    if s.thread_speedup is None and not s.scaling and s.cpu_ratio >= CPU_BOUND_RATIO and (
            s.per_task >= PROBE_MIN_TASK or not gil_enabled()):
        return  # a short job skipped the probe of parallel threads: its choice was a guess, not worth repeating
    with contextlib.suppress(TypeError), _remembered_lock:
        # Without the items and results (a 40 MB array is not kept alive by a memo).
        head: Head = [(None, None, None, wall) for _, _, _, wall in s.head]
        _remembered[fn] = _Remembered(kind, dataclasses.replace(s, head=head, overlapped=0, exhausted=False),
                                      time.monotonic())


def forget(fn: Any) -> None:
    """Measure ``fn`` afresh on its next auto run (its tasks changed: auto switched engines)."""
    with contextlib.suppress(TypeError), _remembered_lock:
        _remembered.pop(fn, None)


def choose(fn: Callable[..., Any], source: Iterator[Any], total: int | None, workers: int | None,
           coroutine: bool, overlap: int) -> Choice:
    """mode="auto": measure the first items here (results kept) and pick the engine.

    ``overlap``: how many more sample tasks may start beside a first one that waits. A function
    measured by an earlier run in this process, on items of the same type and size, within
    ``REMEMBER_SECONDS``, is not measured again: the run starts at once on the engine those
    numbers give, and the second look (``Reconsider``) still corrects it if its tasks now differ.
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
    source = itertools.chain((first,), source)
    earlier = _recall(fn, kind)
    if earlier is not None:
        advice = decide(earlier, total, pool_warm=_processes_warm(), function_pickles=lambda: function_pickles(fn))
        advice = dataclasses.replace(advice, reasons=(
            f"Measured by an earlier run of this function in this process (its {earlier.n} sampled tasks "
            f"took {_fmt(earlier.per_task)} each).", *advice.reasons))
        log.info("taskloom auto mode: %s", advice)
        return Choice(by_name(advice.mode), advice, [], workers or advice.workers, earlier, source)
    s = run_sample(fn, source, AUTO_BUDGET, total, overlap)
    _remember(fn, kind, s)
    remaining = 0 if s.exhausted else (None if total is None else max(0, total - s.n))
    advice = decide(s, remaining, pool_warm=_processes_warm(), function_pickles=lambda: function_pickles(fn))
    log.info("taskloom auto mode: %s", advice)
    return Choice(by_name(advice.mode), advice, s.head, workers or advice.workers, s, source)


def _processes_warm() -> bool:
    from ._pools import live_backends

    return any(b.name == "processes" and b.workers >= usable_cpus() for b in live_backends())


class Reconsider:
    """Auto's second look during a run: the same model, fed the per-task time measured there.

    If tasks take much longer or shorter than sampled (``SWITCH_FACTOR``, after
    ``RECONSIDER_AFTER`` tasks), the choice is made again, once. It takes two batches in a row
    that differ: the first one where the change shows is usually a mix of old and new tasks, and
    its average would understate the change. The run is then asked to switch: the rule lives
    here, with the measuring; the run only knows how to switch.
    """

    def __init__(self, fn: Callable[..., Any], sample: Sample, advice: Advice,
                 open_backend: Callable[[Mode, int], Backend]) -> None:
        self._fn = fn
        self._sample = sample
        self._advice = advice
        self._open = open_backend
        self._deviations = 0
        self.finished = False

    def observe(self, per_task: float, tasks_done: int, remaining: int | None) -> Switch | None:
        """A batch finished; its tasks took ``per_task`` seconds each, ``tasks_done`` have ended so far."""
        sampled = self._sample.per_task
        if tasks_done < RECONSIDER_AFTER or sampled <= 0 or 1 / SWITCH_FACTOR < per_task / sampled < SWITCH_FACTOR:
            self._deviations = 0
            return None
        self._deviations += 1
        if self._deviations < 2:
            return None
        self.finished = True
        s = self._sample
        later = dataclasses.replace(s, timed=1, wall=per_task, cpu=per_task * s.cpu_ratio, exhausted=False)
        advice = decide(later, remaining, pool_warm=_processes_warm(),
                        function_pickles=lambda: function_pickles(self._fn))
        forget(self._fn)  # its tasks are not what was measured: the next run measures again
        if advice.mode == self._advice.mode:
            return None
        switched = dataclasses.replace(advice, reasons=(
            f"Switched during the run: tasks now take {per_task:.3g} s each, not {s.per_task:.3g} s as sampled.",
            *advice.reasons))
        engine = by_name(advice.mode)
        return Switch(engine, self._open(engine, advice.workers), switched)


def _fmt(seconds: float) -> str:
    return format_seconds(seconds, 2)
