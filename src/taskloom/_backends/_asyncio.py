"""The asyncio backend: coroutine functions on one event loop in a taskloom thread.

One loop ("taskloom-asyncio") serves every run, so synchronous code can map coroutines without
owning a loop. Each *item* of a batch is an asyncio task of its own, created straight into a copy
of the caller's context, so the items of a batch run side by side: a run's batches (several
coroutines each, see ``Async.batch_size``) cost the run's thread little per coroutine, while the
concurrency cap still counts coroutines. The cap is per run: at most ``workers`` of a run's
items hold a slot at once, the rest wait in order (no semaphore: a counter and a queue, in the
loop's thread), and an item frees its slot when it ends, so a slow one never holds its
siblings' slots. Items report as they end: what ended in a pass of the loop goes to the run
after that pass, as the batch's last ``Done`` or as a ``Done.part`` while its siblings run on
(a failure is acted on at once). ``cancel`` and ``abort`` cancel the batch's tasks and free
their slots.

Per coroutine, the loop pays one asyncio task and one coroutine frame around the user's: no
done-callback, no lock. Submissions from the run's thread are coalesced into one wake-up of the
loop per burst, and results into one put on a run's sink per pass of the loop. If the loop stops
(``taskloom.shutdown()``) under running or queued batches, each is reported ``Lost("broken")``
(for a batch reported in part: its items not reported yet), so no run waits for it forever; a
closed backend does not start a new loop for a run that still holds it (new runs get a new one).
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
from ._base import Backend, Batch, Done, Event, Events, ItemError, Job, Lost, Started, enter_depth

#: ``loop.create_task(coro, context=...)`` exists from Python 3.11.
_TASK_CONTEXT = sys.version_info >= (3, 11)


class AsyncBackend(Backend):
    name = "async"
    # A run keeps ``workers`` batches in flight: its cap counts coroutines (the slots below), and
    # a batch in flight holds at least one running or waiting coroutine, so a window of ``workers``
    # batches never leaves a slot idle, however many of them wait for a straggler.
    prefetch = 1

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
        # Touched only in the loop's thread (a batch's last item removes it when it ends).
        self._running: dict[int, _Running] = {}
        # Each run's cap, by its Job: at most ``workers`` of its items run at once, the rest wait
        # in order. Per run, not per backend: runs that share this backend (same settings) do not
        # queue behind each other, as their windows did not. Loop thread only.
        self._slots: dict[Job, _Slots] = {}
        # Submitted, not yet started on the loop. A deque and a flag, no lock: the run's thread
        # appends and the loop pops (each atomic), and a lock here was contended by two threads
        # that take turns on the GIL (a holder preempted mid-section stalls the other).
        self._incoming: collections.deque[Batch] = collections.deque()
        self._drain_scheduled = False
        self._stopped: asyncio.AbstractEventLoop | None = None  # our loop that stopped: no drain will come
        # Results to post, by sink: put once per pass of the loop, so a burst of tasks ending
        # together (2,000 sleeps) wakes the run's consumer a few times, not 2,000. Loop thread only.
        self._posts: dict[Any, list[Event]] = {}
        self._dirty: list[_Running] = []  # batches still running whose items ended in this pass
        self._flush_pending = False
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
                        lost = []
                        for state in self._running.values():
                            state.cancelled = True  # what its tasks raise now is the loop stopping
                            lost.append(state.batch)
                        self._running.clear()
                        self._slots.clear()
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
        running = self._running
        slots_by_job = self._slots
        while incoming:
            batch = incoming.popleft()
            if batch.cancelled:
                continue
            slots = slots_by_job.get(batch.job)
            if slots is None:
                slots = slots_by_job[batch.job] = _Slots(self.workers)
            state = _Running(batch, slots)
            running[batch.id] = state
            n = len(batch.items)
            if slots.queue or slots.free < n:
                slots.queue.extend([(state, pos) for pos in range(n)])
                self._pump(slots)
                continue
            slots.free -= n  # the usual case: a slot for every item now
            start = self._start
            for pos in range(n):
                start(state, pos)

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
            state = self._running.pop(batch_id, None)
            if state is not None:
                self._forget(state)

    def _forget(self, state: _Running) -> None:
        """Cancel what runs of a batch the run has forgotten; its slots are free for others at once
        (as the run's window is: a cancelled coroutine may still be unwinding)."""
        state.cancelled = True
        for task in state.tasks:
            task.cancel()  # no-op for those that ended; one cancelled before it starts never runs at all
        slots = state.slots
        slots.free += state.active
        state.active = 0
        if slots.queue:
            self._pump(slots)  # (also lets go of this batch's items that waited for a slot)
        if slots.free == self.workers and not slots.queue:
            self._slots.pop(state.batch.job, None)

    def _pump(self, slots: _Slots) -> None:
        """Start queued items while the run has free slots (first come, first started)."""
        if slots.pumping:
            return  # an item that ended inside create_task (an eager task factory): the loop below goes on
        slots.pumping = True
        try:
            queue = slots.queue
            while slots.free > 0 and queue:
                state, pos = queue.popleft()
                if state.cancelled or state.batch.cancelled:  # (the run marks it before the loop hears)
                    continue
                slots.free -= 1
                self._start(state, pos)
        finally:
            slots.pumping = False

    def _start(self, state: _Running, pos: int) -> None:
        """Run item ``pos`` of a batch as an asyncio task of its own (its slot is taken)."""
        state.active += 1
        create_task = asyncio.get_running_loop().create_task  # honours the loop's task factory
        ctx = state.batch.job.context
        # A task runs in a copy of the caller's context (what a thread task sees), one per
        # task so that one task's ContextVar.set() is not seen by the others.
        if ctx is None:
            task = create_task(self._item(state, pos))
        elif _TASK_CONTEXT:
            task = create_task(self._item(state, pos), context=ctx.copy())  # type: ignore[call-arg,unused-ignore]
        else:  # Python 3.10: the task copies the context current when it is created
            task = ctx.copy().run(create_task, self._item(state, pos))
        state.tasks.append(task)

    async def _item(self, state: _Running, pos: int) -> None:
        batch = state.batch
        if batch.timed:  # a timed batch holds one item: its deadline runs from here
            batch.sink.put(Started(batch.id, time.monotonic(), "asyncio"))
        clock = time.perf_counter
        t0 = clock()
        error = None
        try:
            value = await batch.job.fn(batch.items[pos])
        except asyncio.CancelledError as exc:
            if state.cancelled:
                raise  # cancelled by the run (or the loop stopping): it has forgotten this batch
            # The coroutine raised CancelledError of its own accord: its error, not a lost batch.
            value, error = None, ItemError(exc, traceback.format_exc(), False)
        except BaseException as exc:
            # SystemExit or KeyboardInterrupt raised by a task would otherwise stop the loop
            # that every run shares: it is that task's error, as on threads and processes.
            value, error = None, ItemError(exc, traceback.format_exc(), False)
        seconds = clock() - t0
        if state.cancelled:
            return  # it ignored its cancellation and ended anyway: the run no longer wants it
        state.values[pos] = value
        state.durations[pos] = seconds
        if error is not None:
            if state.errors is None:
                state.errors = {}
            state.errors[pos] = error
        state.active -= 1
        state.left -= 1
        if state.left == 0:
            del self._running[batch.id]
            if state.parted:
                state.ended.append(pos)
                self._post(batch, state.part())
            else:
                durations = state.durations
                # elapsed: the items' own times, summed (what a thread would have been busy), so
                # that elapsed / n stays the time of one task however many ran side by side.
                self._post(batch, Done(batch.id, state.values, state.errors, durations, sum(durations), "asyncio"))
        else:
            # Its siblings run on: what ended in this pass of the loop is reported after it (a
            # failure is acted on at once; a straggler holds back no result that ended before it).
            state.ended.append(pos)
            if not state.dirty:
                state.dirty = True
                self._dirty.append(state)
                self._flush_soon()
        slots = state.slots
        slots.free += 1
        if slots.queue:
            self._pump(slots)
        elif state.left == 0 and slots.free == self.workers:
            self._slots.pop(batch.job, None)  # the run has nothing here now

    def _post(self, batch: Batch, event: Event) -> None:
        """Queue ``event`` for the batch's run; the loop puts what is queued after this pass."""
        posts = self._posts
        pending = posts.get(batch.sink)
        if pending is not None:
            pending.append(event)
            return
        posts[batch.sink] = [event]
        self._flush_soon()

    def _flush_soon(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_posts)

    def _flush_posts(self) -> None:
        if self._dirty:  # items that ended in this pass, from batches still running: a part each
            self._flush_pending = True  # put below, by this flush
            dirty, self._dirty = self._dirty, []
            for state in dirty:
                state.dirty = False
                if state.ended and not state.cancelled and state.left:
                    self._post(state.batch, state.part())
        self._flush_pending = False
        posts, self._posts = self._posts, {}
        for sink, events in posts.items():
            sink.put(events[0] if len(events) == 1 else Events(events))


class _Slots:
    """One run's cap on this backend: free slots, and its items waiting for one, in order."""

    __slots__ = ("free", "pumping", "queue")

    def __init__(self, workers: int) -> None:
        self.free = workers
        self.queue: collections.deque[tuple[_Running, int]] = collections.deque()
        self.pumping = False


class _Running:
    """A batch on the loop: each item its own task; one ``Done`` when the last one ends."""

    __slots__ = ("active", "batch", "cancelled", "dirty", "durations", "ended", "errors", "left", "parted", "slots",
                 "tasks", "values")

    def __init__(self, batch: Batch, slots: _Slots) -> None:
        n = len(batch.items)
        self.batch = batch
        self.slots = slots
        self.values: list[Any] = [None] * n
        self.durations: list[float] = [0.0] * n
        self.errors: dict[int, ItemError] | None = None
        self.left = n  # items not ended
        self.active = 0  # items holding a slot
        self.tasks: list[asyncio.Task[None]] = []
        self.cancelled = False
        self.ended: list[int] = []  # positions that ended and are not reported yet
        self.dirty = False  # in the backend's list of batches to report a part of
        self.parted = False  # a part was reported: the rest go in parts too

    def part(self) -> Done:
        """The items that ended since the last part, as a ``Done`` part (see ``Done.part``)."""
        ended, self.ended = self.ended, []
        self.parted = True
        durations = [self.durations[p] for p in ended]
        errors = None
        if self.errors:
            errors = {i: self.errors[p] for i, p in enumerate(ended) if p in self.errors} or None
        values = self.values
        return Done(self.batch.id, [values[p] for p in ended], errors, durations, sum(durations), "asyncio",
                    ended)


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
