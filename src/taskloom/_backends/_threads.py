"""The thread backend: a warm pool of threads shared by every run with the same size.

Threads start on demand (up to ``workers``), take batches from one queue, run each in a copy of
the submitting caller's ``contextvars`` context, and exit after ``idle_timeout`` idle seconds.
A thread cannot be killed: ``abort`` (a deadline passed) abandons the thread - it runs on, its
result is ignored by the scheduler - and starts a replacement so the pool keeps its capacity.
With ``Threads(initializer=)`` each thread calls it before its first batch; when it raises, the
thread reports every batch waiting in the queue as ``Lost(..., "broken", ...)`` (what the process
pool does when a worker's initializer fails) and exits. An idle thread holds no reference to the
last batch it ran, its function or its results (a long-lived pool must not keep them alive).

Pool threads are daemon threads, so a task that never returns cannot hang the interpreter's
exit. But a task still running then - abandoned by a failed or cancelled run - must not be
killed in the middle of a write either: at exit, ``finish_running`` waits for such tasks as the
stdlib's thread pool does (the exit hook in ``_pools`` runs it, as an ``at_exit_last`` hook), except tasks past their
``timeout`` and exits caused by Ctrl-C, which the user asked to stop.

Without a GIL (a free-threaded build), an object is freed by the thread that allocated it: a
result a pool thread made, dropped later by the consumer, waits in that thread's queue until the
thread runs Python code again. An idle pool thread therefore does not sleep through its whole
idle timeout in one wait: it wakes after 5 ms, then at doubling intervals up to once a second, so
that what it made is freed within about a second of being dropped, as it is at once with the GIL.

While a batch runs, BLAS is capped to the pool's share of the CPUs (``_blas``: threadpoolctl,
only when numpy or a kin is already imported), and set back when no pool runs a batch.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from itertools import count
from typing import Any

from .._system import EXIT_NOTICE, gil_enabled
from . import _blas, _registry
from ._base import Backend, Batch, Done, Lost, Started, cpu_mark, cpu_since, enter_depth, run_items

_names = count(1)

#: Without a GIL: an idle pool thread's first wake-up (seconds), and the longest it sleeps between
#: two (see the module's docstring: what it allocated is freed only when it runs).
IDLE_WAKE_FIRST = 0.005
IDLE_WAKE_MAX = 1.0

#: pool threads running a task now, across every pool (also pools already shut down), and
#: whether that task's deadline passed (abandoned by ``abort``): read by ``finish_running``
_running_anywhere: dict[threading.Thread, bool] = {}
_running_lock = threading.Lock()


def _forget_in_child() -> None:
    # A forked child has none of our threads, and the lock may have been held mid-fork.
    global _running_lock
    _running_lock = threading.Lock()
    _running_anywhere.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def finish_running(notice_after: float = EXIT_NOTICE) -> None:
    """At interpreter exit: wait for thread tasks still running, as ``ThreadPoolExecutor`` does.

    Unbounded, like the stdlib: a task that the program started is let finish its write rather than
    be cut short. Not for tasks past their deadline (``timeout=`` asked for them to be abandoned),
    and not when the program is ending on Ctrl-C; a Ctrl-C during this wait stops it. After
    ``notice_after`` seconds one line on stderr says what the exit is waiting for.
    """
    if isinstance(getattr(sys, "last_value", None), KeyboardInterrupt):
        return
    with _running_lock:
        waiting = [thread for thread, overdue in _running_anywhere.items() if not overdue]
    deadline = time.monotonic() + notice_after
    for thread in waiting:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [thread for thread in waiting if thread.is_alive() and not _running_anywhere.get(thread, True)]
    if not left:
        return
    names = ", ".join(thread.name for thread in left[:5])
    print(f"taskloom: the program waits for {len(left)} thread task(s) still running ({names}); "
          "press Ctrl-C to stop them", file=sys.stderr, flush=True)
    for thread in left:
        thread.join()


_registry.join("at_exit_last", finish_running)


class ThreadBackend(Backend):
    name = "threads"
    prefetch = 2

    def __init__(self, workers: int, idle_timeout: float = 60.0, depth: int = 0,
                 initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = ()) -> None:
        self.workers = workers
        self._depth = depth
        self._idle_timeout = idle_timeout
        self._initializer = initializer
        self._initargs = initargs
        self._queue: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._idle = 0
        self._extra = 0  # replacements owed for abandoned (timed-out) threads
        self._running: dict[int, threading.Thread] = {}  # batch id -> thread running it
        self._closed = False
        self._blas_limit = _blas.share(workers)  # BLAS threads per pool thread while a batch runs

    # -- contract ---------------------------------------------------------------------------
    def submit(self, batch: Batch) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the thread pool was shut down (taskloom.shutdown())")
            self._queue.put(batch)
            if self._idle > 0:
                self._idle -= 1  # that idle thread will take this batch
                return
            if len(self._threads) >= self.workers + self._extra:
                return
            thread = self._new_thread()
        # Started outside the lock: the new thread takes the batch at once instead of waiting
        # for this lock (so a task submitted now is running when submit returns, as with
        # ThreadPoolExecutor, and cancel() sees it running).
        thread.start()

    def abort(self, batch: Batch) -> None:
        batch.cancelled = True
        with self._lock:
            thread = self._running.get(batch.id)
            if thread is not None:
                with _running_lock:
                    if thread in _running_anywhere:
                        _running_anywhere[thread] = True  # past its deadline: not waited for at exit
            if thread is not None and not self._closed:
                # The thread runs on (Python cannot stop it); keep capacity with a replacement.
                self._extra += 1
                self._start_thread()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        # Threads running a task cannot be interrupted; they are daemon threads and exit when
        # their task returns. Wait a moment for the idle ones so shutdown is tidy.
        for thread in threads:
            with contextlib.suppress(RuntimeError):  # one that submit() has not started yet
                thread.join(timeout=0.1)

    # -- workers ----------------------------------------------------------------------------
    def _start_thread(self) -> None:
        self._new_thread().start()

    def _new_thread(self) -> threading.Thread:
        """A pool thread, counted in the pool (call with the lock held), not started yet."""
        thread = threading.Thread(target=self._work, name=f"taskloom-thread-{next(_names)}", daemon=True)
        self._threads.add(thread)
        return thread

    def _work(self) -> None:
        me = threading.current_thread()
        name = me.name
        enter_depth(self._depth)
        try:
            if self._initializer is not None and not self._initialize():
                return
            while True:
                try:
                    batch = self._next_batch()
                except queue.Empty:
                    with self._lock:
                        if self._idle > 0:
                            self._idle -= 1
                            return
                    continue
                if batch is None:
                    return
                if batch.cancelled:
                    del batch
                    self._mark_idle()
                    continue
                with self._lock:
                    self._running[batch.id] = me
                with _running_lock:
                    _running_anywhere[me] = False
                try:
                    if batch.timed:
                        from time import monotonic

                        batch.sink.put(Started(batch.id, monotonic(), name))
                    # A thread's SystemExit or KeyboardInterrupt would vanish with the thread:
                    # it is that task's error instead (catch=BaseException).
                    call = functools.partial(run_items, batch.job.fn, batch.items,
                                             per_item_timing=batch.per_item_timing, catch=BaseException)
                    ctx = batch.job.context
                    capped = _blas.acquire(self._blas_limit)
                    mark = cpu_mark() if batch.measure_cpu else None
                    try:
                        values, errors, durations, elapsed = ctx.copy().run(call) if ctx is not None else call()
                    finally:
                        if capped:  # before Done: the run's last result finds the limits set back
                            _blas.release(self._blas_limit)
                    # The other threads computing meanwhile are mostly this pool's: no GIL estimate.
                    cpu = None if mark is None else cpu_since(mark, gil=False)
                    batch.sink.put(Done(batch.id, values, errors, durations, elapsed, name, cpu=cpu))
                    # Nothing of this batch may stay referenced while the thread waits for the next:
                    # not its items or function (the caller's objects), not its results.
                    del call, ctx, values, errors, durations
                finally:
                    with _running_lock:
                        _running_anywhere.pop(me, None)
                    with self._lock:
                        self._running.pop(batch.id, None)
                        abandoned = _is_cancelled(batch) and self._extra > 0
                        if abandoned:
                            # This thread was replaced when its batch timed out: it leaves.
                            self._extra -= 1
                    del batch
                if abandoned:
                    return
                self._mark_idle()
        finally:
            with self._lock:
                self._threads.discard(me)

    def _next_batch(self) -> Batch | None:
        """The next batch (None: stop); raises ``queue.Empty`` after ``idle_timeout`` idle seconds."""
        if gil_enabled():
            return self._queue.get(timeout=self._idle_timeout)
        # No GIL: wake now and then, so that results this thread made and the consumer dropped
        # are freed (they wait for this thread to run Python code again).
        deadline = time.monotonic() + self._idle_timeout
        step = IDLE_WAKE_FIRST
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise queue.Empty
            try:
                return self._queue.get(timeout=min(step, left))
            except queue.Empty:
                step = min(2 * step, IDLE_WAKE_MAX)

    def _initialize(self) -> bool:
        """Run ``Threads(initializer=)`` in this new thread; on failure fail what waits, and say so."""
        assert self._initializer is not None
        try:
            self._initializer(*self._initargs)
            return True
        except BaseException:
            detail = traceback.format_exc()
            # Where ThreadPoolExecutor reports it, so handlers set up for the stdlib see it too.
            logging.getLogger("concurrent.futures").critical("Exception in initializer:", exc_info=True)
        stops = 0
        while True:
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                break
            if batch is None:
                stops += 1  # close() asked a thread to stop: leave that for the others
                continue
            batch.sink.put(Lost(batch.id, "broken",
                                "the thread pool's initializer raised, so no thread could start:\n" + detail))
        for _ in range(stops):
            self._queue.put(None)
        return False

    def _mark_idle(self) -> None:
        with self._lock:
            self._idle += 1


def _is_cancelled(batch: Batch) -> bool:
    # Re-read after the task ran: another thread may have cancelled it meanwhile.
    return batch.cancelled
