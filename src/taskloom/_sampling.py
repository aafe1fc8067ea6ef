"""Measuring a task by running it: what ``mode="auto"`` and ``taskloom.advise`` decide from.

``run_sample`` runs the first items here, within a time budget (in ``auto`` they are real tasks
whose results are kept, in input order, in ``Sample.head``), and measures:

* wall time and CPU time of the calling thread per task -> the share of time spent waiting, with
  run-queue wait (a busy machine) counted as neither (``runqueue_seconds``, Linux schedstat);
* while a first task only waits, more tasks start beside it on threads (``_Overlap``: a slow
  fetch is not sampled one at a time);
* for CPU-bound tasks, two threads running two tasks at once -> does the function release the GIL
  (numpy, hashlib, zlib do)? ``thread_speedup`` is 1.0 when it does not, 2.0 when it fully does;
* on a free-threaded interpreter (no GIL), tasks on 2 and on N threads at once, against the
  single-thread time -> do threads *scale* on this work? (``_measure_scaling``);
* pickled size of items and results, and what pickling them costs (``_measure_pickling``; sized
  by type, not pickled, when the type tells: bytes, str, buffers, numpy arrays).

What the numbers mean for the choice of engine is ``_workload.decide``'s business.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import math
import os
import pickle
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ._backends._base import CpuTime, ItemError, cpu_mark, cpu_since, runqueue_seconds
from ._backends._handover import InFlight, items_in
from ._system import default_threads, gil_enabled, runnable_load, usable_cpus

SAMPLE_MAX = 64  # sample tasks at most
CPU_BOUND_RATIO = 0.5  # CPU time / wall time above which a task is CPU-bound
OVERLAP_AFTER = 0.005  # seconds a first sample task must have waited before others start beside it
PROBE_MIN_TASK = 100e-6  # seconds: shorter tasks are not probed for parallel threads (with a GIL)
PAIR_SECONDS = 0.015  # the GIL probe's two threads each run tasks this long, if the job can spare them
PAIR_MAX_TASKS = 16  # tasks per thread at most
SCALING_TAKE = 0.5e-3  # seconds of work a scaling-probe thread takes from the input at once (tiny tasks)
SCALES = 1.2  # without a GIL, N threads must run this much faster than one to count as scaling
HOPELESS = 2  # the scaling probe stops when a thread's tasks run this many times slower than N x one alone
#: without a GIL, threads are probed only when the rest of a job of known length would take this many
#: seconds on one thread: below it they could save little more than measuring them costs (and two
#: threads on tasks of a few us read anywhere from 1.0 to 1.8x on 3.13t)
SCALING_WORTH = 0.02
MAX_IO_THREADS = 256  # ThreadPoolExecutor(200) is what users reach for on many slow fetches
PICKLE_BYTES_PER_SECOND = 0.8e9  # pickling (or unpickling) a large buffer: numpy, bytes, str (a prior)


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
    #: how busy the machine was: seconds a thread waits for a CPU per second computed (``load_ratio``
    #: of the tasks run alone, or ``runnable_load`` before and after the sample, whichever is larger)
    load: float = 0.0
    item_bytes: float = 0.0
    result_bytes: float = 0.0
    parent_pickle: float = 0.0  # seconds per task: pickle item + unpickle result
    worker_pickle: float = 0.0  # seconds per task: unpickle item + pickle result
    picklable: bool = True
    #: the GIL probe did not run because no reading could have changed the choice (see run_sample)
    moot_probe: bool = False
    exhausted: bool = False  # the sample read the whole input
    overlapped: int = 0  # tasks started beside a waiting first task (see _Overlap)
    #: sample tasks (of the scaling probe, or beside a first task that waited), in input order
    #: after ``head``, handed to the run unfinished (``InFlight``)
    in_flight: list[InFlight] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.head)

    @property
    def taken(self) -> int:
        """Items the sample took from the input: those in ``head`` and those still in flight."""
        return len(self.head) + items_in(self.in_flight)

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

    Each task started is an ``InFlight`` chunk of one item. A run (``finish(hand_off=True)``) does
    not wait for the waiting tasks still running when the caller's returns: the caller's task
    alone sizes the pool, and the run takes them over as batches in flight. Waiting for them
    left the CPU idle through a whole wait of theirs before the pool started (20 tasks of 5 ms
    sleeping then 1.3 ms computing: the sample took 15-23 ms instead of one task's 6.5 ms).
    """

    def __init__(self, fn: Callable[[Any], Any], source: Iterator[Any], extra: int, probe: bool) -> None:
        self._fn, self._source, self._extra, self._probe = fn, source, extra, probe
        self._clock = time.pthread_getcpuclockid(threading.get_ident())
        self._native_id = threading.get_native_id()
        self._context = contextvars.copy_context()
        self._stopped = False
        self._lock = threading.Lock()  # held while the watcher reads the source or starts a thread
        self._threads: list[threading.Thread] = []
        self._chunks: list[InFlight] = []  # per started task, in input order: its item and, once run, result
        self._busy: list[float] = []  # per started task: its busy seconds (computing or runnable)
        self._computed: list[float] = []  # per started task: its seconds computing
        self._ended: list[float] = []  # per started task: perf_counter() when it returned
        self.probe_started: float | None = None  # perf_counter() when the probe task started
        self._probe_clocks = (0.0, 0.0)  # the caller's CPU clock and run-queue wait then
        self.exhausted = False
        self.error: BaseException | None = None
        self.due = time.perf_counter() + OVERLAP_AFTER
        self._window0 = self._clocks()

    def _clocks(self) -> tuple[float, float, float]:
        """(wall, CPU time, run-queue wait) of the caller's thread, now."""
        return time.perf_counter(), time.clock_gettime(self._clock), runqueue_seconds(self._native_id)

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
                self._probe_clocks = (now[1], now[2])
                # (now's wall clock was read with the CPU clock: the /proc read after them lets the
                # caller take the GIL, and this thread may get it back only 5 ms later)
                self.probe_started = now[0]
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
                slot = len(self._chunks)
                chunk = InFlight(slot, [item])
                self._chunks.append(chunk)
                self._busy.append(0.0)
                self._computed.append(0.0)
                self._ended.append(0.0)
                # Daemon threads: after Ctrl-C in the caller, a sample task does not hold up the exit.
                thread = threading.Thread(target=self._context.copy().run, args=(self._run, self._fn, slot, chunk),
                                          name="taskloom-auto-sample", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _run(self, fn: Callable[[Any], Any], slot: int, chunk: InFlight) -> None:
        began, item = time.perf_counter(), chunk.items[0]
        try:
            done = _timed_call(fn, item)
        except BaseException as exc:  # SystemExit in a task: that item's error, as on a pool's thread
            done = _Timed(None, ItemError(exc, traceback.format_exc(), False), time.perf_counter() - began, 0.0, 0.0)
        chunk.out.append((item, done.value, done.error, done.wall))
        self._busy[slot], self._computed[slot], self._ended[slot] = done.busy, done.compute, time.perf_counter()
        chunk.finish(self._ended[slot] - began, threading.current_thread().name)

    def abandon(self) -> None:
        """The caller's task raised KeyboardInterrupt or SystemExit: start nothing more."""
        with self._lock:
            self._stopped = True

    def finish(self, hand_off: bool = False) -> tuple[list[tuple[Any, Any, ItemError | None, float]], list[InFlight]]:
        """Stop starting tasks, wait for those started, and return them in input order: the tasks
        ended, then (``hand_off``, tasks that wait: not the GIL probe) those still running.

        Called by the caller's thread as soon as its own task returned.
        """
        self.abandon()
        caller_ended = time.perf_counter()
        caller_cpu = time.clock_gettime(self._clock) - self._probe_clocks[0]
        caller_queued = runqueue_seconds(self._native_id) - self._probe_clocks[1]
        chunks, self._chunks = self._chunks, []
        if hand_off and self.probe_started is None:
            cut = next((i for i, c in enumerate(chunks) if not c.ended), len(chunks))
        else:
            for thread in self._threads:
                thread.join()
            cut = len(chunks)
        results = [chunk.out[0] for chunk in chunks[:cut]]
        if self.probe_started is not None and results and results[0][2] is None:
            together = max(caller_ended, *self._ended) - self.probe_started
            if together > 0:
                # Seconds of progress both threads made per second: ~1 when they took turns for the GIL.
                probe = results[0][3]  # the probe task's wall time
                made = (progress(caller_ended - self.probe_started, caller_cpu, caller_queued)
                        + progress(probe, self._computed[0], self._busy[0] - self._computed[0]))
                self.speedup = max(1.0, min(2.0, made / together))
        self._threads = []
        # The watcher may hold this object a while yet (until its check falls due): it keeps no
        # item, result, function or input of the caller's alive.
        self._fn, self._source, self._context = None, iter(()), contextvars.Context()  # type: ignore[assignment]
        return results, chunks[cut:]

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
            del watch  # not held while this thread waits for the next one (it holds the items)


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


def load_ratio(computed: float, queued: float) -> float:
    """Seconds a thread waited for a CPU per second it computed: how busy the machine is."""
    return queued / computed if computed > 0 else 0.0


def progress(span: float, computed: float, queued: float) -> float:
    """A probe thread's seconds of progress in ``span``: as if it had had a CPU whenever it was runnable.

    Of the time it did not wait for a CPU (``span - queued``), the share it computed, times the
    span: a thread that never blocked made ``span`` seconds of progress, however busy the machine
    kept it in the run queue; one that took turns for the GIL (or a lock) with its partner was
    blocked half the time and made half. Its run-queue wait counts for neither side, so no estimate
    of the machine's load is needed to tell the two apart. (Counting the wait as busy time, even
    only as far as the load measured on a task run alone explained it, made threads that take turns
    read up to 2.0x beside two busy loops: a thread woken at a hand-over, or every 5 ms to ask for
    the GIL, waits in the run queue there, and a load read on one 60 us task is mostly noise.)
    """
    active = max(span - queued, computed)
    return span * computed / active if active > 0 else 0.0


def _timed_call(fn: Callable[[Any], Any], item: Any, runqueue: bool = True) -> _Timed:
    """Call ``fn(item)`` here and time it.

    Run-queue wait (a busy machine) counts as busy when telling CPU work from I/O, or CPU work
    would look like waiting; it does not count when sizing a pool of I/O threads, which is
    what the task's own computing sets. ``runqueue=False``: the caller reads it around many
    calls at once (two reads of /proc per call would cost more than a tiny task).
    """
    q0 = runqueue_seconds() if runqueue else 0.0
    c0, t0 = time.thread_time(), time.perf_counter()
    try:
        value, error = fn(item), None
    except Exception as exc:
        value, error = None, ItemError(exc, traceback.format_exc(), False)
    wall, compute = time.perf_counter() - t0, min(time.perf_counter() - t0, time.thread_time() - c0)
    waited = runqueue_seconds() - q0 if runqueue else 0.0
    return _Timed(value, error, wall, min(wall, compute + waited), compute)


def run_sample(fn: Callable[[Any], Any], source: Iterator[Any], budget: float, total: int | None = None,
               overlap: int = 0, free_threaded: bool | None = None, hand_off: bool = False,
               settled: Callable[[Sample], bool] | None = None) -> Sample:
    """Run items from ``source`` here, within ``budget`` seconds, and measure them.

    Sample tasks run one at a time, so a short job is sampled lightly: at most a quarter of each
    CPU's share of ``total`` (the rest keeps its chance to run in parallel). With ``overlap``,
    up to that many more tasks start on threads while the first one runs, if it only waits
    (see ``_Overlap``). Without a GIL (``free_threaded``, default: this interpreter's state),
    CPU-bound work is then run on 2 and N threads at once to see whether threads scale
    (``_measure_scaling``) instead of the GIL probe; with ``hand_off``, tasks that show threads
    hopeless, or that wait beside a first task that waits, may still run when it returns
    (``Sample.in_flight``: the caller's run takes them).
    ``settled(sample)``: whether no two-thread reading, or no higher one than the sample's, could
    change the choice (its pickling costs are measured before it is asked): the GIL probe does
    not run (``Sample.moot_probe``), or not again.
    """
    free = (not gil_enabled()) if free_threaded is None else free_threaded
    s = Sample()
    load_before = runnable_load()
    mark = cpu_mark()
    alone_computed = alone_queued = 0.0  # the tasks run alone here: seconds computed, waited for a CPU
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
            done = _timed_call(fn, item, runqueue=watch is not None)
        except BaseException:
            if watch is not None:
                watch.abandon()
            raise
        error = done.error
        s.timed += 1
        s.wall += done.wall
        s.cpu += done.busy
        s.compute = (s.compute or 0.0) + done.compute
        alone_computed += done.compute
        alone_queued += done.busy - done.compute  # (read for the first task only; the loop reads the rest)
        s.head.append((item, done.value, error, done.wall))
        s.loop_wall += time.perf_counter() - called  # what a task costs the scaling probe's loop too
        if watch is not None:
            # Tasks started beside one that waited are handed to the run if it waited to the end;
            # one that then computed is measured further (probes), after them in input order.
            waited = Sample(timed=1, wall=done.wall, cpu=done.busy, compute=done.compute).cpu_ratio < CPU_BOUND_RATIO
            more, s.in_flight = watch.finish(hand_off and waited)
            # The first task read its own run-queue wait; the loop's reading starts after it. Around
            # it, the threads the watch started took turns with this one for the GIL and the CPUs:
            # on a busy machine that wait, counted as a task's, made tasks that only sleep read as
            # computing (all of the wall time: sent to processes).
            mark = cpu_mark()
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
            s.overlapped = len(more) + len(s.in_flight)
            if s.exhausted or s.overlapped or (waited and done.wall >= OVERLAP_AFTER):
                # It waits: more tasks one at a time would only delay the parallel run. (A wait
                # about as long as the watcher's window may end before the watcher starts any.)
                break
        if error is not None:
            break
        if free and done.wall >= OVERLAP_AFTER and done.busy >= CPU_BOUND_RATIO * done.wall:
            break  # no GIL: one computing task this long is the single-thread time; the probe runs them 2 at once
    # Time this thread waited for a CPU, or for the GIL while another thread computed, while it
    # ran the tasks above (after the first) is busy time, not waiting.
    kept = cpu_since(mark)
    s.cpu = min(s.wall, s.cpu + kept.queued + kept.gil)
    s.load = load_ratio(alone_computed, alone_queued + kept.queued)
    load_after = runnable_load()
    if load_before is not None and load_after is not None:  # the lower: one reading may catch a passing process
        s.load = max(s.load, min(load_before, load_after))
    if s.failed:
        return s
    if free:
        worth = total is None or (total - s.n) * s.per_task >= SCALING_WORTH
        if (s.timed and s.cpu_ratio >= CPU_BOUND_RATIO and not s.exhausted and usable_cpus() > 1 and worth
                and not s.in_flight):  # (its tasks would join the head before those in flight)
            _measure_scaling(fn, source, s, budget, total=total, hand_off=hand_off)
        _measure_pickling(s)
        return s
    # A busy machine can only make threads look less parallel than they are, so the largest
    # of a few readings is the best one; as many as the budget allows, up to four, while a
    # higher one could still change the choice (``settled``). Beside busy loops each probe
    # thread runs on its CPU in turn with them, and the two run side by side only part of the
    # time: a probe run longer there once (3x, for every job) read sha256 1.46x instead of 1.39x
    # and changed no choice, but ran a third of the job on two threads where the pool runs six
    # (a thread's share of a busy machine is per thread): first runs took 1.5x the fixed mode's time.
    priced = 0  # sample tasks whose pickling is measured (the first three tell it)

    def settled_now() -> bool:
        nonlocal priced
        if settled is None:
            return False
        if priced < min(3, s.n):
            _measure_pickling(s)
            priced = min(3, s.n)
        return settled(s)

    probes_started = time.perf_counter()
    for probe in range(1 if s.thread_speedup is not None else 0, 4):
        spent = s.wall + time.perf_counter() - probes_started
        # Each thread runs tasks for PAIR_SECONDS if the job can spare them (half of what is left):
        # two threads woken together often share one CPU for the first few ms, until the kernel
        # moves one (3 ms sha256 tasks read 1.0-1.4x one at a time, 1.9x seven at a time).
        # (Rounded down: a GIL-bound task of 8-15 ms, one per thread, is long enough, and the
        # probe's tasks run at one thread's speed there.)
        each = max(1, min(int(PAIR_SECONDS / max(s.per_task, 1e-9)), PAIR_MAX_TASKS))
        if total is not None:
            each = max(1, min(each, (total - s.n) // 4))
        # The first probe runs even past the budget: its tasks are real work, kept, run two at a
        # time; without it a GIL-releasing task too long for the budget would go to processes.
        within = spent + 2 * each * s.per_task < budget or probe == 0
        if not (s.timed and s.cpu_ratio >= CPU_BOUND_RATIO and within) or s.exhausted or s.in_flight:
            break
        if s.per_task < PROBE_MIN_TASK:  # starting two threads would outlast the tasks they time
            break
        # A short job keeps most of its tasks for the parallel run, unless a wrong guess would cost
        # more than the probe: with a few long tasks, at least two rounds of every CPU still to run.
        if s.n + 2 > 2 * limit and (total is None or total - s.n - 2 < 2 * usable_cpus()):
            break
        if (s.thread_speedup or 0) > 1.8:
            break
        if settled_now():
            s.moot_probe = s.thread_speedup is None  # (no reading: none could have changed the choice)
            break
        if not _measure_threads(fn, source, s, each):
            break
    if priced < min(3, s.n):
        _measure_pickling(s)
    return s


def _measure_threads(fn: Callable[[Any], Any], source: Iterator[Any], s: Sample, each: int = 1) -> bool:
    """Run ``each`` more tasks on each of two threads at once: does the function release the GIL?

    Every task taken runs (a failed one does not stop its thread): each is in ``s.head``.
    """
    items = []
    for _ in range(2 * each):
        try:
            items.append(next(source))
        except StopIteration:
            s.exhausted = True
            break
    if not items:
        return False
    # The first thread takes the first half: the results come back in input order.
    pair = [items[:(len(items) + 1) // 2], items[(len(items) + 1) // 2:]] if len(items) > 1 else [items]
    out: list[list[tuple[Any, Any, ItemError | None, float]]] = [[] for _ in pair]
    spent: list[CpuTime | None] = [None] * len(pair)
    ends = [0.0] * len(pair)
    begins = [0.0] * len(pair)
    start = threading.Barrier(len(pair))
    pin = sorted(os.sched_getaffinity(0))[:2] if hasattr(os, "sched_setaffinity") else []

    def run(i: int) -> None:
        # Each thread on a CPU of its own: woken together, two threads are often put on one CPU
        # and one is moved a few ms later (beside two busy loops, not within a task of 1.4 ms:
        # they ran one after the other). Their steady state in a pool is side by side; so is this.
        if len(pin) == len(pair):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, {pin[i]})  # (Linux: this thread only)
        start.wait()
        # The span holds both reads of /proc: each lets go of the GIL, and a wait to get it back
        # (and then for a CPU) between a read and the span's edge was run-queue time outside it.
        begins[i] = time.perf_counter()
        mark = cpu_mark()
        for item in pair[i]:
            done = _timed_call(fn, item, runqueue=False)
            out[i].append((item, done.value, done.error, done.wall))
        spent[i] = cpu_since(mark, gil=False)
        ends[i] = time.perf_counter()

    threads = [threading.Thread(target=run, args=(i,), name="taskloom-advise") for i in range(len(pair))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # From the first thread past the barrier to the last one done: starting and joining the
    # threads is not the tasks' time (on a busy machine each start waited for a CPU for
    # milliseconds, and 3 ms sha256 tasks that release the GIL read 1.0-1.15x).
    wall = max(ends) - min(begins)
    s.head.extend(o for part in out for o in part)
    if len(pair) == 2 and not any(o[2] is not None for part in out for o in part) and wall > 0:
        s.thread_speedup = max(s.thread_speedup or 1.0, _pair_reading(begins, ends, spent))
        return True
    return False


def _pair_reading(begins: list[float], ends: list[float], spent: list[CpuTime | None]) -> float:
    """How many times as fast as one thread two ran, from each one's span and clocks (1.0 to 2.0).

    Seconds of progress the two made per second of wall time (``progress``): a thread waiting
    for the GIL makes none, so this is ~1 when the function holds the GIL and ~2 when it releases
    it, and it does not care how long each task is. What it cannot see: beside more busy loops
    than CPUs, two threads run little at the same time (each waits for its CPU in turn, and for
    the GIL at each task's end while the other, holding it, waits for its CPU), and the reading
    falls towards 1 whatever the function does (sha256 read 1.0-1.4 beside four busy loops).
    It errs that way only: threads that take turns never read much above 1 (1.0-1.15 there).
    """
    clocks = [(end - b, t) for b, end, t in zip(begins, ends, spent, strict=True) if t is not None and end > b]
    wall = max(ends) - min(begins)
    if len(clocks) != 2 or wall <= 0:
        return 1.0
    return max(1.0, min(2.0, sum(progress(span, t.computed, t.queued) for span, t in clocks) / wall))


def _measure_scaling(fn: Callable[[Any], Any], source: Iterator[Any], s: Sample, budget: float,
                     cpus: int | None = None, total: int | None = None, hand_off: bool = False) -> None:
    """Without a GIL: run tasks on 2 threads at once, then on one per CPU, against the single-thread time.

    Each probe's threads take tasks from the input until about their share of the time left in
    ``budget`` has passed (each takes at least one, so the first probe runs even past the budget,
    as the GIL probe does: its tasks are real work, run in parallel, kept). ``s.scaling[k]`` is
    the work the k threads did, in single-thread seconds, per second: 1.9 when two threads ran
    it 1.9x as fast as one, 0.5 when they slowed each other down to half. The N-thread probe is
    skipped when two threads did not scale, or when its tasks would not fit in the budget. Of a
    job of known length, a probe runs at most a quarter of what is left (one task per thread at
    least): the rest keeps its chance to run on the engine chosen. ``hand_off``: see
    ``_scaling_probe``.
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
        speedup = _scaling_probe(fn, source, s, k, max(0.0, left / (len(counts) - counts.index(k))), most,
                                 hand_off=hand_off)
        if speedup is None:
            break
        s.scaling[k] = speedup
        if s.in_flight:
            break


def _scaling_probe(fn: Callable[[Any], Any], source: Iterator[Any], s: Sample, threads: int,
                   window: float, most: int | None = None, *, hand_off: bool = False) -> float | None:
    """Run tasks from ``source`` on ``threads`` threads at once for about ``window`` seconds.

    Returns the work done, in single-thread seconds (each task: what one took in the sequential
    sample's loop, its timing included, as here), over the time the threads took to do it, from
    their start together to the last one's end: 2.0 when two threads ran two tasks in the time
    one takes, 1.0 when they took turns (a lock, a GIL), 0.01 when they ran 200x slower. At most
    ``threads`` (more means uneven items, not faster threads). None when a task raised or none
    ran. The tasks join ``s.head`` in input order; at most ``most`` run.

    The probe ends early once a thread ran its tasks ``HOPELESS x threads`` times slower than one
    thread alone (on 3.13t, tasks updating a dict the caller's thread filled ran ~100x slower on
    any other thread): they cannot beat one thread, and more would run more of the job at that
    pace. Each thread takes one task, then twice as many each time while they take under
    ``SCALING_TAKE`` seconds (tiny tasks many at a time, and a task that turns out long is not
    taken by the thousand), and keeps its results to itself until the end: neither the shared
    input nor a shared list of results may become what is measured (without a GIL, objects that
    threads share are what slows them).

    ``hand_off`` (a run's sample, not ``advise``): the caller does not wait for first tasks that
    are already that slow. Once every thread has computed ``4 x HOPELESS x threads`` times a
    task's single-thread time on its first task without ending it, the reading is known (at most
    ``threads`` tasks in that time): the chunks from the first unfinished one on go to
    ``s.in_flight``, and the run takes them over as they end (``InFlight``).
    """
    # Run-queue wait (a busy machine) is not taken off either side: taken off the threads' time
    # it read 2.0x for tiny tasks that take turns on one lock (a thread's wait for a CPU while
    # its partner held the lock is contention, not load); the ratio's two sides see the same load.
    single = s.loop_wall / s.timed if s.loop_wall and s.timed else s.per_task
    if single <= 0:
        return None
    lock = threading.Lock()
    taken = [0]  # items handed out so far: the next chunk's place in input order
    hopeless = [False]  # a thread ran its tasks slower than one thread alone would run them all
    handed = [False]  # the caller went on: a task's SystemExit is that item's error, not the caller's
    chunks: list[list[InFlight]] = [[] for _ in range(threads)]
    clocks: list[int | None] = [None] * threads  # each thread's CPU clock (to tell slow from not running)
    first_cpu = [0.0] * threads  # a thread's CPU time when its first task started
    ends = [0.0] * threads
    errors: list[BaseException] = []
    exhausted = [False]
    barrier = threading.Barrier(threads)
    deadline = [0.0]  # set by the first thread past the barrier: the probe's start + window
    running = [threads]
    all_ended = threading.Event()

    def next_chunk(index: int, take: int) -> InFlight | None:
        with lock:
            first = not chunks[index]
            if exhausted[0] or errors or (not first and (hopeless[0] or time.perf_counter() >= deadline[0])):
                return None
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
            if not items:
                return None
            chunk = InFlight(taken[0], items)
            taken[0] += len(items)
            chunks[index].append(chunk)
            return chunk

    def call(item: Any) -> tuple[Any, Any, ItemError | None, float]:
        try:
            done = _timed_call(fn, item, runqueue=False)
        except BaseException as exc:  # SystemExit in a task: the caller raises it, as if it ran there
            with lock:
                if not handed[0]:
                    raise
            # ... unless the caller went on: then it is that item's error, as on a pool's thread
            return item, None, ItemError(exc, traceback.format_exc(), False), 0.0
        return item, done.value, done.error, done.wall

    def run(index: int) -> None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:  # pragma: no cover - another probe thread failed to start
            return
        with lock:
            if not deadline[0]:
                deadline[0] = time.perf_counter() + window
        if hasattr(time, "pthread_getcpuclockid"):
            clocks[index] = time.pthread_getcpuclockid(threading.get_ident())
        first_cpu[index] = time.thread_time()
        take = 1
        try:
            while (chunk := next_chunk(index, take)) is not None:
                started = time.perf_counter()
                try:
                    for item in chunk.items:
                        chunk.out.append(call(item))
                finally:
                    spent = time.perf_counter() - started
                    chunk.finish(spent, threading.current_thread().name)
                each = spent / len(chunk.items)
                if spent >= SCALING_TAKE / 2 and each > HOPELESS * threads * single:
                    # Far slower here than `threads` times a task alone (not just a busy machine):
                    # together they cannot beat one thread. Enough is known; more would only run
                    # more of the job at this pace.
                    hopeless[0] = True
                take = max(1, min(2 * take, 4096, int(SCALING_TAKE / each) if each > 0 else 2 * take))
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            ends[index] = time.perf_counter()
            with lock:
                running[0] -= 1
                if not running[0]:
                    all_ended.set()

    def hopeless_already() -> bool:
        """Every thread computed long on its first task, and none ended: the caller goes on."""
        bound = 4 * HOPELESS * threads * single
        with lock:
            if errors or any(len(mine) != 1 or mine[0].ended for mine in chunks):
                return False
            try:
                used = [time.clock_gettime(c) - c0 for c, c0 in zip(clocks, first_cpu, strict=True) if c is not None]
            except OSError:  # a thread ended meanwhile: its chunk ended too, so wait
                return False
            if len(used) < threads or min(used) < bound:
                return False
            hopeless[0] = handed[0] = True  # no thread takes more; those running are handed over
            return True

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
        for t in started:
            t.join()
        raise
    began = time.perf_counter()
    if hand_off and hasattr(time, "pthread_getcpuclockid"):
        # Short sleeps, not a timed wait: on 3.13t a timed lock wait overslept 4-10x (8 ms took
        # 35-115 ms) while other threads computed; time.sleep kept time.
        poll = max(SCALING_TAKE, HOPELESS * threads * single)
        check = began + poll
        while not all_ended.is_set():
            if time.perf_counter() >= check:
                if hopeless_already():
                    break
                check = time.perf_counter() + poll
            time.sleep(0.001)
    if not handed[0]:
        for t in started:
            t.join()
    if errors:
        raise errors[0]
    ordered = sorted((c for mine in chunks for c in mine), key=lambda c: c.at)
    if handed[0]:
        cut = next((i for i, c in enumerate(ordered) if not c.ended), len(ordered))
        ordered, s.in_flight = ordered[:cut], ordered[cut:]
    ran = [task for chunk in ordered for task in chunk.out]
    s.head.extend(ran)
    s.exhausted = s.exhausted or exhausted[0]
    if any(task[2] is not None for task in ran):
        return None
    if handed[0]:
        # Each thread has run longer than 4 x HOPELESS tasks' time on one task: at best they end now.
        return min(float(threads), (len(ran) + threads) * single / (time.perf_counter() - began))
    if not ran:
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
    rate = PICKLE_BYTES_PER_SECOND
    try:
        s.item_bytes, item_dump, item_load = _pickling_cost(items, rate)
        s.result_bytes, result_dump, result_load = _pickling_cost(results, rate)
    except Exception:
        s.picklable = False  # cloudpickle may still manage; the model charges it nothing extra
        s.item_bytes = s.result_bytes = 0.0
        return
    s.parent_pickle = item_dump + result_load
    s.worker_pickle = item_load + result_dump


def _littles_law(wall: float, busy: float, cpus: int) -> int:
    """Threads that keep ``cpus`` busy when a task computes ``busy`` of every ``wall`` seconds:
    at least the stdlib's ``min(32, cpus + 4)``, at most ``MAX_IO_THREADS``."""
    return max(default_threads(), min(MAX_IO_THREADS, math.ceil(wall / max(busy, 1e-5) * cpus)))
