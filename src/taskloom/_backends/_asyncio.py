"""The asyncio backend: coroutine functions on one event loop in a taskloom thread.

One loop ("taskloom-asyncio") serves every run, so synchronous code can map coroutines without
owning a loop. Each batch becomes one asyncio task that awaits its items in turn (the scheduler
sends coroutine batches of one item, so concurrency is the number of batches in flight, capped
by ``workers``: a semaphore, not a pool). ``cancel`` and ``abort`` cancel the asyncio task.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from ._base import Backend, Batch, Done, ItemError, Lost, Started, enter_depth


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
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._batches: dict[int, Batch] = {}  # started and not finished: reported if the loop dies
        self._incoming: list[Batch] = []  # submitted, not yet started on the loop
        self._drain_scheduled = False

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                ready = threading.Event()
                loop = self._loop_factory()

                def run() -> None:
                    enter_depth(self._depth)
                    asyncio.set_event_loop(loop)
                    ready.set()
                    try:
                        loop.run_forever()
                    finally:
                        _cancel_all(loop)
                        loop.close()
                        # Runs must not wait forever for batches that died with the loop.
                        for batch in list(self._batches.values()):
                            batch.sink.put(Lost(batch.id, "broken", "the asyncio event loop stopped"))
                        self._batches.clear()

                self._thread = threading.Thread(target=run, name="taskloom-asyncio", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
                if self._debug and self._thread.ident is not None:
                    self._watchdog = LoopWatchdog(loop, self._thread.ident)
            return self._loop

    def submit(self, batch: Batch) -> None:
        loop = self._ensure_loop()
        # One wake-up of the loop for a burst of submissions, not one per batch: each
        # call_soon_threadsafe writes to the loop's self-pipe (a system call).
        with self._lock:
            self._incoming.append(batch)
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            batches, self._incoming = self._incoming, []
            self._drain_scheduled = False
        for batch in batches:
            self._start(batch)

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
        if loop is not None and thread is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)

    # -- in the loop thread ----------------------------------------------------------------
    def _start(self, batch: Batch) -> None:
        if batch.cancelled:
            return
        coro = self._run(batch)
        ctx = batch.job.context
        # The task copies the current context when created: create it inside the caller's.
        task = ctx.copy().run(asyncio.ensure_future, coro) if ctx is not None else asyncio.ensure_future(coro)
        self._tasks[batch.id] = task
        self._batches[batch.id] = batch

        def forget(_: object) -> None:
            self._tasks.pop(batch.id, None)
            self._batches.pop(batch.id, None)

        task.add_done_callback(forget)

    def _cancel_ids(self, ids: list[int]) -> None:
        for batch_id in ids:
            task = self._tasks.get(batch_id)
            if task is not None:
                task.cancel()

    async def _run(self, batch: Batch) -> None:
        if batch.timed:
            batch.sink.put(Started(batch.id, time.monotonic(), "asyncio"))
        fn = batch.job.fn
        values: list[Any] = []
        errors: dict[int, ItemError] | None = None
        durations: list[float] | None = [] if batch.per_item_timing else None
        start = time.perf_counter()
        for pos, item in enumerate(batch.items):
            t0 = time.perf_counter()
            try:
                values.append(await fn(item))
            except asyncio.CancelledError:
                raise  # cancelled by the scheduler: it has forgotten this batch already
            except BaseException as exc:
                # SystemExit or KeyboardInterrupt raised by a task would otherwise stop the loop
                # that every run shares: it is that task's error, as on threads and processes.
                values.append(None)
                if errors is None:
                    errors = {}
                errors[pos] = ItemError(exc, traceback.format_exc(), False)
            if durations is not None:
                durations.append(time.perf_counter() - t0)
        batch.sink.put(Done(batch.id, values, errors, durations, time.perf_counter() - start, "asyncio"))


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
