"""``Run``: every run, on every engine, goes through it.

Batching, ordering, the in-flight bound, retries, timeouts, crash accounting, the error policy,
cancellation and statistics are written here once (with the help of ``_chunker``, ``_policy`` and
``_failures``). A backend only runs batches and reports events (see ``_backends/_base.py``)::

    input ──islice──> Group(start, items) ──Batch──> backend ──Done/Lost/Started──> sink
                        │    ▲                                                       │
                        │    └── retries / crash retries / splits: single-item Batches
                        ▼                                                            │
    caller <── values or Outcomes <── groups in input order (or as done) <──────────┘

The run is pulled by its consumer: ``next()`` tops up the window from the input, then blocks on
the sink for the next event (until the next timer, when one is pending). Nothing runs in a
scheduler thread of its own, so a run that nobody iterates costs nothing but its in-flight work.
A ``Group`` is the unit of ordering: one chunk of consecutive input items. A ``Batch`` is the unit
of dispatch: a whole group at first, single items for retries and for isolating a crash.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .._backends._base import Backend, Batch, Done, Event, ItemError, Job, Lost, Started
from .._errors import TaskError
from .._stats import Recorder, RunStatistics
from . import _failures as failures
from ._chunker import Chunker
from ._delivery import Delivery, Group
from ._policy import REAL_CLOCK, Clock, RetryPolicy, Timeline, TokenBucket, earliest

if TYPE_CHECKING:
    from .._modes import Mode
    from .._options import Options

__all__ = ["Listener", "PushSource", "Run", "Switch", "Watcher"]

log = logging.getLogger("taskloom")
T = TypeVar("T")

Head = list[tuple[Any, Any, ItemError | None, float]]  # (item, value, error, seconds) run before the start


class Listener(Protocol):
    """Told of each finished block (progress bars); ``close`` when the run ends."""

    def update(self, done: int, failed: int) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Switch:
    """Run the rest on another engine: ``Run._switch_to`` takes one."""

    engine: Mode
    backend: Backend
    advice: Any


class Watcher(Protocol):
    """Looks at a run's finished batches and may ask it to switch engines (auto mode)."""

    def observe(self, per_task: float, tasks_done: int, remaining: int | None) -> Switch | None:
        """A batch finished, its tasks took ``per_task`` s each; a ``Switch``, or None to stay."""
        ...

    @property
    def finished(self) -> bool:
        """True once it will never switch again (the run stops asking)."""
        ...


class _Wake:
    """Put in a run's sink to wake its consumer (cancel or submit from another thread)."""


class PushSource(Iterator[Any]):
    """Input that other threads push into (the Executor): ``take`` never blocks."""

    def take(self, n: int) -> list[Any] | None:
        """Up to ``n`` items; [] when none are waiting; None when closed and empty."""
        raise NotImplementedError

    def __next__(self) -> Any:  # pragma: no cover - the scheduler uses take()
        raise TypeError("a PushSource is read with take()")


@dataclass(eq=False)
class _Flight:
    batch: Batch
    group: Group
    positions: list[int] | None  # None: the whole group
    backend: Backend  # where it runs (auto mode may switch engines once during a run)


class Run(Generic[T]):
    """A running map: an iterator over results that also reports and controls the run.

    Iterating yields values in input order (``ordered=True``) or as they finish; with
    ``on_error="collect"`` it yields an ``Outcome`` per item instead. The run stops its work and
    frees the workers when it is cancelled: by leaving a ``for`` loop over it early (``break``, an
    exception in the loop body, ``islice`` taking what it needs), by ``cancel()`` from any thread,
    by leaving a ``with`` block, by Ctrl-C while it waits, or when it is dropped. A cancelled run
    yields nothing more. To take a few results and go on later, call ``next(run)``.

    Example::

        with taskloom.imap(fetch, urls, mode="threads") as run:
            first = next(run)                 # one result; the run goes on
            rest = run.to_list()
        print(run.statistics().summary())

    Attributes:
        advice: why ``mode="auto"`` chose this engine (None for an explicit mode).
        mode: the engine the tasks run on ("threads", "processes"...; ``mode="auto"`` may
            switch it once during the run).
        workers: the worker (or concurrency) count in use.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        items: Iterable[Any],
        *,
        engine: Mode,
        backend: Backend,
        options: Options,
        name: str,
        total: int | None = None,
        context: Any = None,
        advice: Any = None,
        head: Head | None = None,
        listener: Listener | None = None,
        watcher: Watcher | None = None,
        clock: Clock = REAL_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.advice = advice
        self.mode = backend.name
        self.workers = backend.workers
        self._engine = engine
        self._backend = backend
        self._job = Job(fn, name, context)
        self._timeout = options.timeout
        self._collect = options.collect
        self._policy = RetryPolicy(options.retries, options.retry_on, options.backoff, engine.crash_retries,
                                   rng or random.Random())
        self._clock = clock
        self._chunker = Chunker(options.chunksize, total, backend.workers)
        self._total = None if total is None else total + len(head or ())
        self._prefetch = options.prefetch
        self._window = self._window_for(backend)
        self._sink: queue.SimpleQueue[Event | _Wake] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._source: Iterator[Any] | None = items if isinstance(items, PushSource) else iter(items)
        self._next_index = 0
        self._delivery = Delivery(options.ordered, options.collect)  # the window's groups, blocks ready
        self._flights: dict[int, _Flight] = {}
        self._deadlines: Timeline[int] = Timeline()  # batch ids
        self._deferred: Timeline[tuple[Group, list[int]]] = Timeline()  # retries waiting out their backoff
        self._current: Iterator[Any] = iter(())
        self._input_error: BaseException | None = None
        self._failure: BaseException | None = None
        self._cancelled = False
        self._done = False
        self._listener = listener
        self._watcher = watcher
        self._bucket = None if options.rate is None else TokenBucket(options.rate, clock.now())
        self._stats = Recorder()
        self._reported = (0, 0)  # (done, failed) last told to the listener
        self._left_at = 0.0  # when the consumer last took a block (0: not yet)
        self._starved = False  # the window has room, but a PushSource had nothing to give
        backend.prepare(self._job)
        if head:
            self._add_head(head)

    def _window_for(self, backend: Backend) -> int:
        return backend.workers * (self._prefetch if self._prefetch is not None else backend.prefetch)

    # -- public ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[T]:
        return self._iterate()

    def __next__(self) -> T:
        try:
            return next(self._current)  # type: ignore[no-any-return]
        except StopIteration:
            pass
        block = self._next_block()
        if block is None:
            raise StopIteration
        self._current = iter(block)
        return next(self._current)  # type: ignore[no-any-return]

    def __enter__(self) -> Run[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def __del__(self) -> None:
        if not self._done and not self._cancelled:
            with contextlib.suppress(Exception):  # interpreter shutdown: modules half gone
                self.cancel()

    def cancel(self) -> None:
        """Stop the run: drop what has not started and free the workers. Safe from any thread."""
        with self._lock:
            if self._done:
                return
            self._cancelled = True
            self._done = True
            self._delivery.drop()  # a cancelled run yields nothing more, not even finished results
            self._current = iter(())
            self._cancel_flights()
        self._sink.put(_Wake())
        self._close_listener()

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()

    @property
    def window(self) -> int:
        """Groups of consecutive items (batches) this run keeps in flight at most: ``workers x prefetch``."""
        return self._window

    def statistics(self) -> RunStatistics:
        """A snapshot of the run's numbers, safe to call while it runs; ``.summary()`` prints them."""
        with self._lock:
            return self._stats.snapshot(mode=self.mode, workers=self.workers, submitted=self._next_index,
                                        chunksize=self._chunker.last)

    def to_list(self) -> list[T]:
        """Drain the run into a list, one block at a time (the fast path behind ``map``).

        Raises:
            TaskError: with on_error="raise", the first task that failed (the run is cancelled).
        """
        self._delivery.hold_finished = False
        out: list[T] = list(self._current)
        try:
            while (block := self._next_block()) is not None:
                out.extend(block)
        except BaseException:
            self.cancel()
            raise
        return out

    # -- plumbing for Executor and auto mode ---------------------------------------------------
    def _switch_to(self, switch: Switch) -> None:
        """Run what is not dispatched yet on another engine, with that engine's policies whole.

        Batches in flight finish where they are; new ones (first runs, retries) go to the new
        backend, and the new engine's crash retries, timeout words and window apply from here on.
        Called under the run's lock, from ``_on_done``, when the watcher asks for it.
        """
        engine, backend = switch.engine, switch.backend
        log.info("taskloom auto mode switches from %s to %s after %d tasks: %s",
                 self.mode, backend.name, self._stats.completed + self._stats.failed, switch.advice)
        backend.prepare(self._job)
        self._engine, self._backend, self.advice = engine, backend, switch.advice
        self._policy.crash_retries = engine.crash_retries
        self.mode, self.workers = backend.name, backend.workers
        self._window = self._window_for(backend)
        self._chunker.plan(self._remaining(), backend.workers)

    def _remaining(self) -> int | None:
        return None if self._total is None else max(0, self._total - self._next_index)

    def _cancel_task(self, index: int) -> bool:
        """Stop the task at input position ``index`` wherever it is; False if it already ended.

        Plumbing for ``Executor(cancel_running=True)``: the task's batch must hold that one item
        (the Executor's do). The backend is told as for a cancelled run (processes: the worker
        running it is killed and replaced); the item ends as failed, and nothing more of it is
        handed out than that Outcome.
        """
        with self._lock:
            if self._done:
                return False
            found: tuple[Group, int] | None = None
            for batch_id, flight in self._flights.items():
                group = flight.group
                positions = flight.positions if flight.positions is not None else range(len(group.items))
                if len(positions) == 1 and group.start + positions[0] == index:
                    del self._flights[batch_id]
                    flight.backend.cancel([flight.batch])
                    found = group, positions[0]
                    break
            else:
                entry = self._deferred.remove_where(  # waiting for a retry's backoff
                    lambda e: len(e[1]) == 1 and e[0].start + e[1][0] == index)
                if entry is not None:
                    found = entry[0], entry[1][0]
            if found is None:
                return False
            group, pos = found
            self._final_failure(group, pos, failures.cancelled_error(self._at(group, pos)))
            self._delivery.deliver(group)
        self._sink.put(_Wake())
        return True

    def _fill_now(self) -> None:
        """Hand out what a PushSource holds now, in the calling thread (``Executor.submit``).

        So a submitted task reaches a free worker before ``submit`` returns, instead of when the
        consumer next wakes. Call ``wake()`` after it: the consumer's timers may have changed.
        """
        with self._lock:
            if not self._done and isinstance(self._source, PushSource):
                self._fill()

    def wake(self) -> None:
        """Make the consumer look at its input again (a PushSource got items).

        Plumbing for ``Executor``, whose input is pushed from other threads; a run over an
        ordinary iterable never needs it.
        """
        self._sink.put(_Wake())

    # -- consumption ---------------------------------------------------------------------------
    def _iterate(self) -> Iterator[T]:
        """What ``for`` (and ``islice``) loop over: leaving that loop early cancels the run.

        CPython closes this generator when the loop is left by ``break``, by an exception in the
        loop body, or when ``islice`` is done with it; the ``finally`` then cancels the run. Plain
        ``next(run)`` calls do not go through here, so they can take a few results and resume.
        """
        try:
            while True:
                try:
                    value = self.__next__()
                except StopIteration:
                    return
                yield value
        finally:
            if not self._done:
                self.cancel()

    def _next_block(self) -> list[Any] | None:
        """The next list of results to hand out, or None at the end. Raises on failure."""
        if self._left_at:  # the caller was busy with its own work since the last block
            self._stats.consumer_time += time.perf_counter() - self._left_at
        try:
            block = self._next_block_inner()
        finally:
            self._left_at = time.perf_counter()
        return block

    def _next_block_inner(self) -> list[Any] | None:
        try:
            while True:
                with self._lock:
                    if (block := self._delivery.take()) is not None:
                        return block
                    if self._failure is not None:
                        failure, self._failure = self._failure, None
                        self._done = True
                        self._close_listener()
                        raise failure
                    if self._done:
                        return None
                    t_work = time.perf_counter()
                    waited = self._stats.input_wait
                    self._release_deferred()
                    self._starved = False
                    self._fill()
                    self._stats.dispatch_time += time.perf_counter() - t_work - (self._stats.input_wait - waited)
                    if self._delivery.open == 0 and self._source is None:
                        self._done = True
                        self._close_listener()
                        if self._input_error is not None:
                            error, self._input_error = self._input_error, None
                            raise error
                        continue
                    wait = self._wait_time()
                if self._delivery.has_ready:
                    continue
                self._backend.run_inline()  # sequential: the tasks run here, outside the lock
                t_wait = time.perf_counter()
                event = self._clock.wait(self._sink, wait)
                with self._lock:
                    t_work = time.perf_counter()
                    if self._starved:  # a pushed input (pipeline stage, Executor) kept us waiting
                        self._stats.input_wait += t_work - t_wait
                    if event is not None:
                        self._handle(event)
                        # Drain whatever else arrived, without blocking: fewer lock round trips.
                        while True:
                            try:
                                self._handle(self._sink.get_nowait())
                            except queue.Empty:
                                break
                    self._check_deadlines()
                    self._notify()
                    self._stats.dispatch_time += time.perf_counter() - t_work
        except BaseException:
            # KeyboardInterrupt, an error in the input, a task failure with on_error="raise":
            # nothing of this run may keep running.
            self.cancel()
            raise

    def _wait_time(self) -> float | None:
        """How long the consumer may block on the sink before a timer needs it."""
        bucket = None
        if self._bucket is not None and (len(self._deferred) or self._source is not None):
            bucket = self._bucket.next
        due = earliest(self._deadlines.next_due(), self._deferred.next_due(), bucket)
        return None if due is None else max(0.0, due - self._clock.now())

    def _release_deferred(self) -> None:
        """Submit retries whose backoff has passed (each takes a start token under ``rate``)."""
        now = self._clock.now()
        while not self._done and (due := self._deferred.next_due()) is not None and due <= now:
            if self._bucket is not None and not self._bucket.take(now):
                return
            entry = self._deferred.pop_due(now)
            assert entry is not None
            self._submit(*entry)

    # -- filling the window --------------------------------------------------------------------
    def _fill(self) -> None:
        while self._source is not None and self._delivery.in_window() < self._window and not self._done:
            if self._bucket is not None and not self._bucket.take(self._clock.now()):
                return  # rate limit: the consumer wakes when the next start is allowed
            size = self._chunker.next_size()
            items: list[Any] = []
            try:
                if isinstance(self._source, PushSource):
                    taken = self._source.take(size)
                    if taken is None:
                        self._source = None
                        return
                    if not taken:
                        self._starved = True
                        return  # nothing submitted yet: wait for events (submit wakes us)
                    items = taken
                else:
                    # extend() keeps what it appended before the input raised: those items were
                    # taken from the input, so they run (on_error="collect") and are not lost.
                    t_in = time.perf_counter()
                    try:
                        items.extend(itertools.islice(self._source, size))
                    finally:
                        self._stats.input_wait += time.perf_counter() - t_in
            except Exception as exc:
                # The input raised: no more input is pulled; what is in flight ends per on_error.
                self._source = None
                if self._collect:
                    self._input_error = exc
                    if items:
                        self._start_group(items)
                else:
                    self._failure = exc
                return
            if not items:
                self._source = None
                return
            self._start_group(items)

    def _start_group(self, items: list[Any]) -> None:
        group = self._delivery.open_group(self._next_index, items)
        self._next_index += len(items)
        self._submit(group, None)

    def _submit(self, group: Group, positions: list[int] | None) -> None:
        items = group.items if positions is None else [group.items[p] for p in positions]
        batch = Batch(
            self._job,
            items,
            self._sink,  # type: ignore[arg-type]
            timed=self._timeout is not None,
            per_item_timing=self._collect,
        )
        self._flights[batch.id] = _Flight(batch, group, positions, self._backend)
        self._stats.batches += 1
        self._backend.submit(batch)

    def _add_head(self, head: Head) -> None:
        """Results computed before the run started (auto mode's measured first tasks)."""
        items = [h[0] for h in head]
        group = self._delivery.open_group(0, items, [h[1] for h in head], [h[3] for h in head])
        self._next_index = len(items)
        for pos, (item, _value, error, duration) in enumerate(head):
            self._stats.batch("caller", 1, duration, None)
            self._stats.task(pos, item, duration)
            if error is None:
                self._resolve(group, pos)
            else:
                self._item_failed(group, pos, error)
        self._chunker.observe(len(head), sum(h[3] for h in head))
        self._delivery.deliver(group)
        self._notify()

    # -- events ------------------------------------------------------------------------------
    def _handle(self, event: Event | _Wake) -> None:
        if isinstance(event, _Wake):
            return
        flight = self._flights.get(event.batch_id)
        if flight is None:
            return  # cancelled or timed out already
        if isinstance(event, Started):
            if self._timeout is not None:
                self._deadlines.add(event.at + self._timeout, event.batch_id)
            return
        del self._flights[event.batch_id]
        if isinstance(event, Done):
            self._on_done(flight, event)
        else:
            self._on_lost(flight, event)
        self._delivery.deliver(flight.group)

    def _on_done(self, flight: _Flight, event: Done) -> None:
        group, positions = flight.group, flight.positions
        n = len(event.values)
        self._chunker.observe(n, event.elapsed)
        if self._watcher is not None:
            switch = self._watcher.observe(event.elapsed / max(n, 1), self._stats.completed + self._stats.failed,
                                           self._remaining())
            if self._watcher.finished:
                self._watcher = None
            if switch is not None:
                self._switch_to(switch)
        self._stats.batch(event.worker, n, event.elapsed, event.durations)
        if n == 1 or event.durations is not None:
            base = list(positions) if positions is not None else range(n)
            for i in range(n):
                self._stats.task(group.start + base[i], group.items[base[i]],
                                 event.durations[i] if event.durations is not None else event.elapsed)
        if failures.ran_late(event, self._timeout):
            pos = 0 if positions is None else positions[0]
            self._item_failed(group, pos, self._timeout_error(group, pos))
            return
        durations = event.durations
        all_positions = positions if positions is not None else range(len(group.items))
        if n < len(all_positions):
            # The worker stopped early (it reached its task or memory quota): the rest of the
            # batch did not run, so it goes out again as a new batch; no attempt is counted.
            self._submit(group, list(all_positions[n:]))
            positions = list(all_positions[:n])
        if positions is None and not event.errors:
            group.values = event.values  # fast path: the whole group succeeded
            if durations is not None:
                group.durations = durations
            group.remaining = 0
            self._stats.completed += n
            return
        if group.durations is None and self._collect:
            group.durations = [0.0] * len(group.items)
        errors = event.errors or {}
        for i, value in enumerate(event.values):
            pos = i if positions is None else positions[i]
            duration = durations[i] if durations is not None else event.elapsed / n
            if group.durations is not None:
                group.durations[pos] = duration
            item_error = errors.get(i)
            if item_error is None:
                group.values[pos] = value
                self._resolve(group, pos)
            else:
                self._item_failed(group, pos, item_error)

    def _on_lost(self, flight: _Flight, event: Lost) -> None:
        group = flight.group
        positions = flight.positions if flight.positions is not None else list(range(len(group.items)))
        died = failures.worker_died(event)
        if died:
            self._stats.crashed += 1  # whatever becomes of the batch
        whole = failures.after_lost(event, len(positions), self._job.name)
        if isinstance(whole, failures.Split):
            for pos in positions:
                self._submit(group, [pos])
        elif isinstance(whole, failures.FailRun):
            self._failure = whole.error
            self._cancel_flights()
        else:
            for pos in positions:
                if died:  # the item's record of deaths, which the decision reads
                    group.crashes.setdefault(pos, []).append((event.pid or 0, event.exitcode))
                decision = failures.lost_item(self._at(group, pos), event, group.crashes.get(pos, []), self._policy,
                                              self._engine)
                self._settle(group, pos, decision)

    def _check_deadlines(self) -> None:
        now = self._clock.now()
        while (batch_id := self._deadlines.pop_due(now)) is not None:
            flight = self._flights.pop(batch_id, None)
            if flight is None:
                continue
            flight.backend.abort(flight.batch)
            group = flight.group
            for pos in flight.positions if flight.positions is not None else range(len(group.items)):
                self._item_failed(group, pos, self._timeout_error(group, pos))
            self._delivery.deliver(group)

    # -- per-item accounting -----------------------------------------------------------------
    def _at(self, group: Group, pos: int) -> failures.At:
        return failures.At(self._job.name, group.start + pos, group.items[pos], group.attempts.get(pos, 1))

    def _timeout_error(self, group: Group, pos: int) -> TaskError:
        return failures.timeout_error(self._at(group, pos), self._timeout or 0.0, self._engine)

    def _resolve(self, group: Group, pos: int) -> None:
        group.succeed(pos)
        self._stats.completed += 1

    def _item_failed(self, group: Group, pos: int, error: ItemError | TaskError) -> None:
        """The item raised or ran past its deadline: it goes again, or it ends with its error."""
        self._settle(group, pos, failures.after_error(self._at(group, pos), error, self._policy))

    def _settle(self, group: Group, pos: int, decision: failures.Retry | failures.Fail) -> None:
        """Act on what ``_failures`` decided for the item at ``pos``."""
        if isinstance(decision, failures.Fail):
            self._final_failure(group, pos, decision.error)
            return
        group.attempts[pos] = decision.attempt
        self._stats.retried += 1
        if decision.wait and (self._policy.backoff > 0 or self._bucket is not None):
            self._deferred.add(self._clock.now() + self._policy.delay(decision.attempt - 1), (group, [pos]))
        else:
            self._submit(group, [pos])

    def _final_failure(self, group: Group, pos: int, error: TaskError) -> None:
        group.fail(pos, error)
        self._stats.failed += 1
        if not self._collect and self._failure is None:
            self._failure = error
            self._delivery.halt_at(group)
            self._cancel_flights()

    def _cancel_flights(self) -> None:
        by_backend: dict[int, tuple[Backend, list[Batch]]] = {}
        for f in self._flights.values():
            by_backend.setdefault(id(f.backend), (f.backend, []))[1].append(f.batch)
        self._flights.clear()
        self._deadlines.clear()
        self._deferred.clear()
        for backend, batches in by_backend.values():
            backend.cancel(batches)

    # -- progress ----------------------------------------------------------------------------------
    def _notify(self) -> None:
        """Tell the listener (a progress display) how many more tasks ended since last time."""
        if self._listener is None:
            return
        done, failed = self._stats.completed + self._stats.failed, self._stats.failed
        last_done, last_failed = self._reported
        if done != last_done:
            self._reported = (done, failed)
            self._listener.update(done - last_done, failed - last_failed)
