"""The asyncio backend: coroutine functions on one event loop in a taskloom thread.

One loop ("taskloom-asyncio") serves every run, so synchronous code can map coroutines without
owning a loop. Each batch becomes one asyncio task that awaits its items in turn (the scheduler
sends coroutine batches of one item, so concurrency is the number of batches in flight, capped
by ``workers``: a semaphore, not a pool). ``cancel`` and ``abort`` cancel the asyncio task.

Per task, the loop pays one asyncio task (created straight into a copy of the caller's context),
one coroutine frame around the user's and one ``Done`` on the run's sink: no done-callback, no
per-batch lock, no second context copy. Submissions from the run's thread are coalesced into one
wake-up of the loop per burst. If the loop stops (``taskloom.shutdown()``) under running or
queued batches, each is reported ``Lost("broken")``, so no run waits for it forever; a closed
backend does not start a new loop for a run that still holds it (new runs get a new backend).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from .._system import FREE_THREADED_WAKE, gil_enabled
from ._base import Backend, Batch, Done, Event, Events, ItemError, Lost, Started, enter_depth

#: ``loop.create_task(coro, context=...)`` exists from Python 3.11.
_TASK_CONTEXT = sys.version_info >= (3, 11)


class AsyncBackend(Backend):
    name = "async"
    prefetch = 1  # every batch in flight is running: the window *is* the concurrency cap

    def __init__(self, workers: int, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
                 depth: int = 0, *, loop: asyncio.AbstractEventLoop | None = None, loop_thread: int | None = None,
                 debug: bool = False) -> None:
        self.workers = workers
        self._depth = depth
        self._loop_factory = loop_factory or asyncio.new_event_loop
        self._debug = debug
        # loop given: the caller's running loop (amap/aimap); we neither run nor close it.
        self._loop: asyncio.AbstractEventLoop | None = loop
        self._own_loop = loop is None
        self._thread: threading.Thread | None = None
        self._watchdog: LoopWatchdog | None = None
        if loop is not None and debug:
            self._watchdog = LoopWatchdog(loop, loop_thread or threading.get_ident())
        self._lock = threading.Lock()
        # Started and not finished, by batch id: cancelled by id, reported Lost if the loop dies.
        # Touched only in the loop's thread (each task removes itself when it ends).
        self._running: dict[int, tuple[asyncio.Task[None], Batch]] = {}
        # Submitted, not yet started on the loop. A deque and a flag, no lock: the run's thread
        # appends and the loop pops (each atomic), and a lock here was contended by two threads
        # that take turns on the GIL (a holder preempted mid-section stalls the other).
        self._incoming: collections.deque[Batch] = collections.deque()
        self._drain_scheduled = False
        self._stopped: asyncio.AbstractEventLoop | None = None  # our loop that stopped: no drain will come
        # Results to post, by sink: put once per pass of the loop, so a burst of tasks ending
        # together (2,000 sleeps) wakes the run's consumer a few times, not 2,000. Loop thread only.
        self._posts: dict[Any, list[Event]] = {}
        # Shut down (taskloom.shutdown()): a run still holding this backend gets Lost("broken") for
        # what it submits, as the thread pool refuses it; new runs get a new backend from _pools.
        self._closed = False

    def _ensure_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop, started on first use; None once ``close()`` has stopped it (no restart)."""
        with self._lock:
            if self._loop is None:
                if self._closed:
                    return None
                ready = threading.Event()
                loop = self._loop_factory()

                def run() -> None:
                    enter_depth(self._depth)
                    asyncio.set_event_loop(loop)
                    _keep_waking(loop)
                    ready.set()
                    try:
                        loop.run_forever()
                    finally:
                        # Runs must not wait forever for batches that die with the loop: those
                        # running (taken before their tasks are cancelled, which removes them)
                        # and those submitted but never started.
                        # A submit that still holds this loop sees it stopped (it looks after
                        # its append) or its batch is taken here (appended before we look).
                        self._stopped = loop
                        self._flush_posts()  # results already in hand are delivered, not lost
                        lost = [batch for _, batch in self._running.values()]
                        self._running.clear()
                        _cancel_all(loop)
                        loop.close()
                        _report_lost(lost)
                        self._fail_incoming()

                self._thread = threading.Thread(target=run, name="taskloom-asyncio", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
                if self._debug and self._thread.ident is not None:
                    self._watchdog = LoopWatchdog(loop, self._thread.ident)
            return self._loop

    def submit(self, batch: Batch) -> None:
        loop = self._loop or self._ensure_loop()  # the lock only to start the loop
        if loop is None:
            _report_lost([batch])
            return
        # One wake-up of the loop for a burst of submissions, not one per batch: each
        # call_soon_threadsafe writes to the loop's self-pipe (a system call). The flag is read
        # after the append and cleared by _drain before it pops: a batch appended while a drain
        # is pending is taken by that drain, and at worst two threads schedule one drain each.
        self._incoming.append(batch)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            try:
                loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # closed
                if self._stopped is not loop:
                    raise  # the caller's loop (amap): the caller closed it
        if self._stopped is loop:  # taskloom.shutdown() stopped it meanwhile
            self._fail_incoming()

    def _fail_incoming(self) -> None:
        """The loop stopped: batches waiting for it will not run (report each once)."""
        lost = []
        with contextlib.suppress(IndexError):  # another thread took the last one
            while True:
                lost.append(self._incoming.popleft())
        self._drain_scheduled = False
        _report_lost(lost)

    def _drain(self) -> None:
        self._drain_scheduled = False
        incoming = self._incoming
        create_task = asyncio.get_running_loop().create_task  # honours the loop's task factory
        running = self._running
        run = self._run
        while incoming:
            batch = incoming.popleft()
            if batch.cancelled:
                continue
            ctx = batch.job.context
            # A task runs in a copy of the caller's context (what a thread task sees), one per
            # task so that one task's ContextVar.set() is not seen by the others.
            if ctx is None:
                task = create_task(run(batch))
            elif _TASK_CONTEXT:
                task = create_task(run(batch), context=ctx.copy())  # type: ignore[call-arg,unused-ignore]
            else:  # Python 3.10: the task copies the context current when it is created
                task = ctx.copy().run(create_task, run(batch))
            if not task.done():  # an eager task factory may have run it to the end already
                running[batch.id] = (task, batch)

    def cancel(self, batches: list[Batch]) -> None:
        super().cancel(batches)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            ids = [b.id for b in batches]
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._cancel_ids, ids)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
        if not self._own_loop:
            return  # the caller's loop: not ours to stop
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            self._closed = True
        if loop is not None and thread is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)

    # -- in the loop thread ----------------------------------------------------------------
    def _cancel_ids(self, ids: list[int]) -> None:
        for batch_id in ids:
            entry = self._running.pop(batch_id, None)  # a task cancelled before it starts never runs its finally
            if entry is not None:
                entry[0].cancel()

    async def _run(self, batch: Batch) -> None:
        try:
            if batch.timed:
                batch.sink.put(Started(batch.id, time.monotonic(), "asyncio"))
            fn = batch.job.fn
            items = batch.items
            clock = time.perf_counter
            start = clock()
            values: list[Any]
            errors: dict[int, ItemError] | None = None
            if len(items) == 1 and not batch.per_item_timing:
                # The usual batch (the scheduler sends coroutines one per batch): no list walk.
                try:
                    values = [await fn(items[0])]
                except asyncio.CancelledError:
                    raise  # cancelled by the scheduler: it has forgotten this batch already
                except BaseException as exc:  # see below
                    values = [None]
                    errors = {0: ItemError(exc, traceback.format_exc(), False)}
                self._post(batch, Done(batch.id, values, errors, None, clock() - start, "asyncio"))
                return
            values = []
            durations: list[float] | None = [] if batch.per_item_timing else None
            for pos, item in enumerate(items):
                t0 = clock()
                try:
                    values.append(await fn(item))
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:
                    # SystemExit or KeyboardInterrupt raised by a task would otherwise stop the loop
                    # that every run shares: it is that task's error, as on threads and processes.
                    values.append(None)
                    if errors is None:
                        errors = {}
                    errors[pos] = ItemError(exc, traceback.format_exc(), False)
                if durations is not None:
                    durations.append(clock() - t0)
            self._post(batch, Done(batch.id, values, errors, durations, clock() - start, "asyncio"))
        finally:
            self._running.pop(batch.id, None)

    def _post(self, batch: Batch, event: Event) -> None:
        """Queue ``event`` for the batch's run; the loop puts what is queued after this pass."""
        posts = self._posts
        pending = posts.get(batch.sink)
        if pending is not None:
            pending.append(event)
            return
        if not posts:
            asyncio.get_running_loop().call_soon(self._flush_posts)
        posts[batch.sink] = [event]

    def _flush_posts(self) -> None:
        posts, self._posts = self._posts, {}
        for sink, events in posts.items():
            sink.put(events[0] if len(events) == 1 else Events(events))


def _report_lost(batches: list[Batch]) -> None:
    for batch in batches:
        if not batch.cancelled:
            batch.sink.put(Lost(batch.id, "broken", "the asyncio event loop stopped"))


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


#: A coroutine that keeps the loop from running other callbacks longer than this is reported.
BLOCKING_THRESHOLD = 0.1


class LoopWatchdog:
    """Reports, with its stack, a coroutine that blocks the event loop (``Async(debug=True)``).

    A thread posts a heartbeat callback to the loop every ``threshold / 4`` seconds; if the loop
    has not run it within ``threshold``, something is running without yielding, and the loop
    thread's current stack (``sys._current_frames``) shows what. asyncio's own debug mode only
    names a slow callback after it returns; this names the blocking line while it blocks.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, loop_thread: int,
                 threshold: float = BLOCKING_THRESHOLD) -> None:
        self.loop, self.loop_thread, self.threshold = loop, loop_thread, threshold
        self.reports: list[str] = []
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="taskloom-loop-watchdog", daemon=True)
        self._thread.start()

    def _ack(self) -> None:
        self._beat = time.monotonic()

    def _watch(self) -> None:
        import logging
        import sys

        log = logging.getLogger("taskloom")
        reported = False
        while not self._stop.wait(self.threshold / 4):
            if self.loop.is_closed():
                return
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._ack)
            late = time.monotonic() - self._beat
            if late <= self.threshold:
                reported = False
                continue
            if reported:
                continue  # one report per blocking episode
            frame = sys._current_frames().get(self.loop_thread)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(stack unavailable)"
            report = (f"a coroutine has blocked the event loop for {late * 1000:.0f} ms (over "
                      f"{self.threshold * 1000:.0f} ms): use `await` for I/O and sleeps, or run blocking "
                      f"code with `await asyncio.to_thread(...)`. Where it is now:\n{stack}")
            self.reports.append(report)
            log.warning("taskloom: %s", report)
            reported = True

    def stop(self) -> None:
        self._stop.set()


def _keep_waking(loop: asyncio.AbstractEventLoop) -> None:
    """Without a GIL: run a no-op on our loop at least every ``FREE_THREADED_WAKE`` seconds, so
    that results its coroutines made are freed once the consumer drops them (see ``_system``)."""
    if gil_enabled():
        return

    def tick() -> None:
        loop.call_later(FREE_THREADED_WAKE, tick)

    loop.call_soon(tick)
