"""The backend contract: what every engine must do, and nothing more.

A backend moves a ``Batch`` to where it runs and reports back, through the batch's ``sink``
(a thread-safe queue owned by the scheduler), exactly one *final* event per batch:

* ``Done``  - the batch ran; per-item values, and per-item errors for the items that raised;
* ``Lost``  - the batch did not produce results: its worker died (``crash``), or it could not be
  (un)pickled as a whole (``split``). The scheduler decides what happens next (split the batch
  into single items, retry, or report ``WorkerCrashed`` / ``SerializationError``).

A ``Done`` may also come in parts (``Done.part``: these positions of the batch ended), the last
part ending the batch: an engine that runs a batch's items side by side (async) reports each as
it ends, so a failure is acted on at once and no item waits for a slow sibling to be counted.

When ``batch.timed`` is set it must also send ``Started`` when the batch begins to run, so the
scheduler can enforce per-task deadlines. Retries, ordering, error policy, deadlines, batching
and progress all live in the scheduler; a backend knows none of them.

After ``cancel`` or ``abort`` the scheduler has forgotten the batch: any later event for it is
ignored, so a backend need not race to suppress one. ``abort`` (a deadline passed) asks the
backend to really stop the batch where it can (kill the process, cancel the coroutine) and to
keep its capacity (replace what it killed or abandoned).
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import itertools
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .._system import gil_enabled

_batch_ids = itertools.count(1)
_local = threading.local()


def nesting_depth() -> int:
    """0 in user threads; n + 1 inside a thread of a depth-n taskloom pool or event loop.

    A map called from inside a pool thread must not queue behind the tasks that occupy that very
    pool (they wait for it: a deadlock), so pools are keyed by depth (see ``_pools``).
    """
    depth: int = getattr(_local, "depth", 0)
    return depth


def enter_depth(depth: int) -> None:
    """Mark the current (pool) thread as running tasks of a depth-``depth`` pool."""
    _local.depth = depth + 1


@dataclass(eq=False)
class Job:
    """What every batch of one run shares: the function, and how to run it."""

    fn: Callable[..., Any]
    name: str
    context: contextvars.Context | None = None  # the caller's context, for thread tasks
    id: int = field(default_factory=lambda: next(_batch_ids))
    # A backend that keeps state per run keys it by the Job in a WeakKeyDictionary of its own.


@dataclass(eq=False)
class Batch:
    """A list of items to run with one job's function, dispatched as one unit."""

    job: Job
    items: list[Any]
    sink: queue.SimpleQueue[Event]
    timed: bool = False  # send Started (a deadline applies)
    per_item_timing: bool = False  # measure each item's duration
    measure_cpu: bool = False  # report where the batch's time went (``Done.cpu``)
    id: int = field(default_factory=lambda: next(_batch_ids))
    cancelled: bool = False  # set by the scheduler; a backend skips a cancelled batch it has not started
    payload: Any = None  # backend-private (processes: the message, pickled once at submit)


class ItemError(NamedTuple):
    """One item's failure inside a batch, as it left the worker."""

    exception: BaseException
    traceback: str  # formatted traceback text where the task ran
    remote: bool  # True when it crossed a process boundary


class Done(NamedTuple):
    batch_id: int
    values: list[Any]  # one per item run; None where it failed. Shorter than the batch: the rest did not run
    errors: dict[int, ItemError] | None  # position in batch -> error
    durations: list[float] | None  # per item (when per_item_timing), else None
    elapsed: float  # seconds the whole batch ran
    worker: str
    #: None: the batch's one final event. A list: the positions in the batch that these values,
    #: errors (keyed by index in ``values``, as always) and durations are for; the batch stays in
    #: flight until each of its positions came back so, once (a ``Lost`` then stands for the rest).
    #: An engine whose items end apart (async: each coroutine a task of its own) reports them so.
    part: list[int] | None = None
    #: when ``batch.measure_cpu``: where the batch's time went in the thread that ran it
    #: (``cpu_since``); None when not measured. Auto's second look tells CPU work from waiting
    #: with it.
    cpu: CpuTime | None = None


class _Schedstat:
    """This thread's /proc schedstat file, kept open: reread with ``pread`` (~1 us), where an
    open and read took ~13 us, twice per batch in auto's runs. Closed when its thread ends."""

    def __init__(self) -> None:
        self.fd = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)

    def __del__(self) -> None:
        with contextlib.suppress(OSError):  # (closed under us: nothing left to do)
            os.close(self.fd)


_own_schedstat = threading.local()


def _forget_schedstat_in_child() -> None:
    # A forked child's thread has a new id: the file open in the parent is the parent's thread.
    _own_schedstat.__dict__.pop("file", None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_schedstat_in_child)


def runqueue_seconds(native_id: int | None = None) -> float:
    """Seconds a thread (this one by default) has waited for a CPU while runnable (Linux
    schedstat), else 0.

    On a busy machine a computing thread also waits - for a CPU, not for I/O. That time is
    counted as computing, or CPU-bound work would look like I/O and go to threads.
    """
    try:
        if native_id is None:
            own = getattr(_own_schedstat, "file", None)
            if own is None:
                own = _own_schedstat.file = _Schedstat()
            data = os.pread(own.fd, 128, 0)
        else:
            with open(f"/proc/self/task/{native_id}/schedstat", "rb") as f:
                data = f.read()
        return int(data.split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


class CpuMark(NamedTuple):
    """Clocks read at once, for ``cpu_since``."""

    wall: float
    cpu: float  # this thread's
    queued: float  # this thread's run-queue wait
    process: float  # every thread's CPU in this process


def cpu_mark() -> CpuMark:
    """This thread's clocks now (see ``cpu_since``)."""
    # /proc first: reading it lets go of the GIL, and the clocks are read together after it.
    queued = runqueue_seconds()
    return CpuMark(time.perf_counter(), time.thread_time(), queued, time.process_time())


class CpuTime(NamedTuple):
    """Where a thread's time went, besides waiting for I/O (``cpu_since``)."""

    computed: float
    queued: float  # runnable, waiting for a CPU: the machine is busy
    gil: float  # waiting for the GIL while other threads of this process computed (at most)


def cpu_since(mark: CpuMark, gil: bool = True) -> CpuTime:
    """How this thread spent its time since ``mark``, besides waiting for I/O.

    A wait for a CPU or for the GIL is no wait for I/O: a CPU-bound task counted so would read
    as I/O on a busy machine or beside a busy thread (a server's, Dask's event loop, the
    pool's own threads). Python has no clock for the GIL: the wait is estimated from what the
    other threads of this process computed meanwhile (holding the GIL). It is at most that;
    all of it when they held the GIL half the time or more (threads queue for it: k threads
    computing make each wait for the k-1 others), less in proportion when they held it less
    (their computing then mostly fell in this thread's waits for I/O). A task that only
    sleeps beside a thread that computes all the time reads as waiting for the GIL: there is
    no telling those apart from here; nor a GIL held by a thread that waits for a CPU (on a
    busy machine the estimate falls short). About 25 us (a read of /proc): measured per
    batch, only for auto's runs. ``gil=False``: no estimate (a pool's thread: the other
    threads computing are the pool's own, and 256 threads fetching read their whole sleep as a
    wait for the GIL, and went to processes).
    """
    # The clocks first, /proc after: the read is not the batch's computing (a tiny task's batch
    # of a few us would read as ~30 us of work).
    at, cpu, process = time.perf_counter(), time.thread_time(), time.process_time()
    computed = max(0.0, cpu - mark.cpu)
    queued = max(0.0, runqueue_seconds() - mark.queued)
    waited = 0.0
    wall = at - mark.wall
    if gil and gil_enabled() and wall > 0:
        others = max(0.0, process - mark.process - computed)
        waited = min(max(0.0, wall - computed - queued), others) * min(1.0, 2 * others / wall)
    return CpuTime(computed, queued, waited)


class Started(NamedTuple):
    batch_id: int
    at: float  # time.monotonic() in the parent
    worker: str


class Lost(NamedTuple):
    batch_id: int
    reason: str  # "crash" | "split"
    detail: str  # human-readable: the exit code or signal, or the pickling error
    pid: int | None = None
    exitcode: int | None = None


Event = Done | Started | Lost


class Events(list):  # type: ignore[type-arg]
    """Several events for one run's sink, put at once (one wake-up of its consumer for many)."""


class Backend(abc.ABC):
    """One engine (a warm pool, a loop, the caller's thread) that runs batches."""

    #: mode name ("threads", "processes", ...)
    name: str = ""
    #: how many batches may run at once
    workers: int = 1
    #: how many batches per worker the scheduler keeps in flight by default
    prefetch: int = 2

    @abc.abstractmethod
    def submit(self, batch: Batch) -> None:
        """Queue ``batch``; return at once (called under the run's lock: never run a task here)."""

    def cancel(self, batches: list[Batch]) -> None:
        """The run no longer wants these batches: drop queued ones, stop running ones if cheap.

        The default marks them cancelled, which every backend checks before starting one.
        """
        for batch in batches:
            batch.cancelled = True

    def abort(self, batch: Batch) -> None:
        """A deadline passed: stop this running batch for real where possible, keep capacity."""
        self.cancel([batch])

    def run_inline(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Run the batches that belong in the consumer's thread (sequential): called by the run
        outside its lock, before it waits for events."""

    def prepare(self, job: Job) -> None:  # noqa: B027 - optional hook, empty by default
        """Check a run's function once before any batch (processes: can it be pickled?)."""

    def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Stop the workers now (called by ``taskloom.shutdown``)."""


def run_items(
    fn: Callable[..., Any],
    items: list[Any],
    *,
    per_item_timing: bool,
    catch: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    stop: Callable[[int], bool] | None = None,
) -> tuple[list[Any], dict[int, ItemError] | None, list[float] | None, float]:
    """Run ``fn`` on each item; return (values, errors or None, durations or None, elapsed).

    Shared by every backend and by the process worker, so a task fails the same way everywhere.
    The loop without per-item timing is the hot path for tiny tasks: no per-item clock calls.
    ``stop(done)`` is asked after each item; True ends the batch early (a worker at its quota):
    ``values`` is then shorter than ``items``, and the rest did not run.
    """
    values: list[Any] = []
    append = values.append
    errors: dict[int, ItemError] | None = None
    clock = time.perf_counter
    start = clock()
    it = iter(items)
    if not per_item_timing and stop is None:
        # Hot path for tiny tasks: a loop in C (extend keeps what map produced before a failure),
        # no clock calls; a failure records the error and the loop resumes on the same iterator
        # with the next item.
        while True:
            try:
                values.extend(map(fn, it))
                break
            except catch as exc:
                if errors is None:
                    errors = {}
                errors[len(values)] = ItemError(exc, traceback.format_exc(), False)
                append(None)
        return values, errors, None, clock() - start
    durations: list[float] = []
    for pos, item in enumerate(it):
        t0 = clock()
        try:
            append(fn(item))
        except catch as exc:
            append(None)
            if errors is None:
                errors = {}
            errors[pos] = ItemError(exc, traceback.format_exc(), False)
        durations.append(clock() - t0)
        if stop is not None and stop(pos + 1):
            break
    return values, errors, durations if per_item_timing else None, clock() - start
