"""``Run``: every run, on every engine, goes through it.

Batching, ordering, the in-flight bound, retries, timeouts, crash accounting, the error policy,
cancellation and statistics are written once, in this package (its ``__init__`` lists the parts).
``Run`` is the scheduler: it owns one part per job (``Intake``, ``Delivery``, ``Dispatch``,
``Tally``), asks ``_failures`` what a failure becomes, and acts on the answer. A backend only
runs batches and reports events (see ``_backends/_base.py``)::

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
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._backends._base import Backend, CpuTime, Done, Event, Events, ItemError, Job, Lost
from .._backends._handover import HandedOver, InFlight, items_in
from .._errors import TaskError
from .._stats import RunStatistics
from . import _failures as failures
from ._chunker import Chunker
from ._delivery import Delivery, Group
from ._dispatch import Dispatch, Flight
from ._intake import Intake
from ._interfaces import Listener, PushSource, Switch, Wake, Watcher
from ._policy import REAL_CLOCK, Clock, RetryPolicy, TokenBucket, earliest
from ._tally import Tally

if TYPE_CHECKING:
    from .._modes import Mode
    from .._options import Options
    from ._journal import Journal, Record

__all__ = ["Listener", "PushSource", "Run", "Switch", "Watcher"]

log = logging.getLogger("taskloom")
T = TypeVar("T")
_SPENT: Iterator[Any] = iter(())  # the block iterator once its block is handed out

Head = list[tuple[Any, Any, ItemError | None, float]]  # (item, value, error, seconds) run before the start


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
        in_flight: list[InFlight] | None = None,
        listener: Listener | None = None,
        watcher: Watcher | None = None,
        clock: Clock = REAL_CLOCK,
        rng: random.Random | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.advice = advice
        self.mode = backend.name
        self.workers = backend.workers
        self._engine = engine
        self._job = Job(fn, name, context)
        self._timeout = options.timeout
        self._collect = options.collect
        self._policy = RetryPolicy(options.retries, options.retry_on, options.backoff, engine.crash_retries,
                                   rng or random.Random())
        self._clock = clock
        self._chunker = Chunker(options.chunksize, total, backend.workers)
        self._total = None if total is None else total + len(head or ()) + items_in(in_flight or [])
        self._prefetch = options.prefetch
        self._window = self._window_for(backend)
        self._sink: queue.SimpleQueue[Event | Events | Wake] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._tally = Tally(listener)  # statistics and progress
        self._intake = Intake(items, self._tally)
        self._next_index = 0
        self._delivery = Delivery(options.ordered, options.collect)  # the window's groups, blocks ready
        self._dispatch = Dispatch(self._job, self._sink, backend,  # type: ignore[arg-type]
                                  timeout=options.timeout, per_item_timing=options.collect, tally=self._tally)
        self._current: Iterator[Any] = iter(())
        self._input_error: BaseException | None = None
        self._failure: BaseException | None = None
        self._cancelled = False
        self._done = False
        self._watcher = watcher
        self._bucket = None if options.rate is None else TokenBucket(options.rate, clock.now())
        self._journal = journal  # items that end are recorded there; the items it held come in as ended
        backend.prepare(self._job)
        if head:
            self._add_head(head)
        if in_flight:
            self._hand_over(in_flight, backend)

    def _window_for(self, backend: Backend) -> int:
        return backend.workers * (self._prefetch if self._prefetch is not None else backend.prefetch)

    # -- public ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[T]:
        return self._iterate()

    def __next__(self) -> T:
        try:
            return next(self._current)  # type: ignore[no-any-return]
        except StopIteration:
            self._current = _SPENT  # not kept while the next block is awaited (see _iterate)
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
            self._dispatch.cancel_all()
            if self._journal is not None:
                self._journal.close()
        self._sink.put(Wake())
        self._tally.close()

    @property
    def window(self) -> int:
        """Groups of consecutive items (batches) this run keeps in flight at most: ``workers x prefetch``."""
        return self._window

    def statistics(self) -> RunStatistics:
        """A snapshot of the run's numbers, safe to call while it runs; ``.summary()`` prints them."""
        with self._lock:
            return self._tally.snapshot(mode=self.mode, workers=self.workers, submitted=self._next_index,
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
                 self.mode, backend.name, self._tally.ended, switch.advice)
        backend.prepare(self._job)
        self._engine, self._dispatch.backend, self.advice = engine, backend, switch.advice
        self._policy.crash_retries = engine.crash_retries
        self.mode, self.workers = backend.name, backend.workers
        self._window = self._window_for(backend)
        self._chunker.plan(self._remaining(), backend.workers)

    def _end(self) -> None:
        """The run is over (finished or failed, under the lock): the journal is written and let go, progress closed."""
        if self._journal is not None:
            self._journal.close()
        self._tally.close()

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
            found = self._dispatch.cancel_task(index)  # in flight, or waiting for a retry's backoff
            if found is None:
                return False
            group, pos = found
            self._final_failure(group, pos, failures.cancelled_error(self._at(group, pos)))
            self._delivery.deliver(group)
            if self._journal is not None:
                self._journal.flush()
        self._sink.put(Wake())
        return True

    def _fill_now(self) -> None:
        """Hand out what a PushSource holds now, in the calling thread (``Executor.submit``).

        So a submitted task reaches a free worker before ``submit`` returns, instead of when the
        consumer next wakes. Call ``wake()`` after it: the consumer's timers may have changed.
        """
        with self._lock:
            if not self._done and self._intake.pushed:
                self._fill()

    def wake(self) -> None:
        """Make the consumer look at its input again (a PushSource got items).

        Plumbing for ``Executor``, whose input is pushed from other threads; a run over an
        ordinary iterable never needs it.
        """
        self._sink.put(Wake())

    # -- consumption ---------------------------------------------------------------------------
    def _iterate(self) -> Iterator[T]:
        """What ``for`` (and ``islice``) loop over: leaving that loop early cancels the run.

        CPython closes this generator when the loop is left by ``break``, by an exception in the
        loop body, or when ``islice`` is done with it; the ``finally`` then cancels the run. Plain
        ``next(run)`` calls do not go through here, so they can take a few results and resume.
        """
        try:
            while True:
                current = self._current  # shared with __next__: next(run) and a loop can alternate
                for value in current:
                    yield value
                    if self._current is not current:  # cancelled (from any thread): nothing more
                        break
                else:
                    # Spent: let the block go before waiting for the next one. A free-threaded
                    # build's spent list iterator still holds its list (the GIL build's lets go),
                    # and so every outcome in it, long after it was handed out.
                    if self._current is current:
                        self._current = _SPENT
                current = _SPENT
                block = self._next_block()
                if block is None:
                    return
                self._current = iter(block)
        finally:
            if not self._done:
                self.cancel()

    def _next_block(self) -> list[Any] | None:
        """The next list of results to hand out, or None at the end. Raises on failure."""
        self._tally.consumer_returns()  # the caller was busy with its own work since the last block
        try:
            block = self._next_block_inner()
        finally:
            self._tally.consumer_leaves()
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
                        self._end()
                        raise failure
                    if self._done:
                        return None
                    work = self._tally.work_begins()
                    self._dispatch.release(self._clock.now(), self._bucket)
                    self._intake.starved = False
                    self._fill()
                    self._tally.work_ends(work)  # less the time the input made it wait
                    if self._failed():  # the input raised, or the journal held a failure
                        continue  # (its flights are cancelled: no event would come)
                    if self._delivery.open == 0 and not self._intake.open:
                        self._done = True
                        self._end()
                        if self._input_error is not None:
                            error, self._input_error = self._input_error, None
                            raise error
                        continue
                    wait = self._wait_time()
                if self._delivery.has_ready:
                    continue
                self._dispatch.backend.run_inline()  # sequential: the tasks run here, outside the lock
                t_wait = time.perf_counter()
                event = self._clock.wait(self._sink, wait)
                with self._lock:
                    t_work = time.perf_counter()
                    if self._intake.starved:  # a pushed input (pipeline stage, Executor) kept us waiting
                        self._tally.waited_for_input(t_work - t_wait)
                    work = self._tally.work_begins(t_work)
                    if event is not None:
                        self._handle(event)
                        # Drain whatever else arrived, without blocking: fewer lock round trips.
                        while True:
                            try:
                                self._handle(self._sink.get_nowait())
                            except queue.Empty:
                                break
                    self._check_deadlines()
                    if self._journal is not None:
                        self._journal.flush()  # what ended is on disk before its results are handed out
                    self._tally.notify()
                    self._tally.work_ends(work)
        except BaseException:
            # KeyboardInterrupt, an error in the input, a task failure with on_error="raise":
            # nothing of this run may keep running.
            self.cancel()
            raise

    def _look_again(self, flight: Flight, event: Done, n: int) -> None:
        """Show auto's second look a batch of the current engine; switch engines if it says so."""
        watcher, dispatch = self._watcher, self._dispatch
        assert watcher is not None
        if not dispatch.measure_cpu:  # batches measure themselves once the look wants readings
            dispatch.measure_cpu = self._tally.ended >= watcher.measure_from
        if dispatch.measure_cpu and not flight.batch.measure_cpu:
            return  # left unmeasured while others are measured: its kind of time is unknown
        ran = max(n, 1)
        cpu = None if event.cpu is None else CpuTime(*(t / ran for t in event.cpu))
        switch = watcher.observe(event.elapsed / ran, cpu, self._tally.ended, self._remaining())
        if watcher.finished:
            self._watcher = None
            dispatch.measure_cpu = False
        if switch is not None:
            self._switch_to(switch)

    def _failed(self) -> bool:
        """A failure waits to be raised (``_fill`` may set one: mypy's narrowing cannot tell)."""
        return self._failure is not None

    def _wait_time(self) -> float | None:
        """How long the consumer may block on the sink before a timer needs it."""
        bucket = None
        if self._bucket is not None and (self._dispatch.deferring or self._intake.open):
            bucket = self._bucket.next
        due = earliest(self._dispatch.next_due(), bucket)
        return None if due is None else max(0.0, due - self._clock.now())

    # -- filling the window --------------------------------------------------------------------
    def _fill(self) -> None:
        while self._intake.open and self._delivery.in_window() < self._window and not self._done:
            if self._bucket is not None and not self._bucket.take(self._clock.now()):
                return  # rate limit: the consumer wakes when the next start is allowed
            size = self._chunker.next_size()
            # A group per item (coroutines, timed tasks): the window's room in one take, from an
            # input that cannot keep the first task waiting (a sized one, or pushed: take never
            # blocks). A generator is read an item at a time, so a slow one starts each task as
            # soon as its item comes.
            singles = size == 1 and self._bucket is None and self._journal is None \
                and (self._total is not None or self._intake.pushed)
            if singles:
                size = self._window - self._delivery.in_window()
            items, error = self._intake.take(size)
            if error is not None:
                # The input raised: no more input is pulled; what is in flight ends per on_error.
                if not self._collect:
                    self._failure = error
                    return
                self._input_error = error  # raised once the rest has been handed out
            if self._journal is not None:  # the input is filtered: lay out what it held and what is to run
                ended = not items or error is not None
                for segment in self._journal.segments(None if ended else len(items)):
                    if segment.records is None:
                        self._start_group(segment.items, segment.start)
                    else:
                        self._add_recorded(segment.start, segment.items, segment.records)
            elif singles:
                for item in items:
                    self._start_group([item])
            elif items:  # with an error: taken from the input before it raised, so they run
                self._start_group(items)
            if not items or error is not None:
                return

    def _start_group(self, items: list[Any], start: int | None = None) -> None:
        group = self._delivery.open_group(self._next_index if start is None else start, items)
        self._next_index = group.start + len(items)
        self._dispatch.submit(group)

    def _add_head(self, head: Head) -> None:
        """Results computed before the run started (auto mode's measured first tasks)."""
        if self._journal is None:
            segments: list[tuple[int, list[Any], list[Record] | None]] = [(0, [h[0] for h in head], None)]
        else:  # the head came through the journal's filter: lay out what it held around it
            segments = [(s.start, s.items, s.records) for s in self._journal.segments(len(head))]
        taken = 0
        for start, items, records in segments:
            if records is not None:
                self._add_recorded(start, items, records)
                continue
            part = head[taken:taken + len(items)]
            taken += len(items)
            group = self._delivery.open_group(start, items, [h[1] for h in part], [h[3] for h in part])
            self._next_index = start + len(items)
            for pos, (item, value, error, duration) in enumerate(part):
                self._tally.ran_in_caller(start + pos, item, duration)
                if error is None:
                    group.succeed(pos)
                    self._tally.completed()
                    if self._journal is not None:
                        self._journal.ended(start + pos, item, value, seconds=duration)
                else:
                    self._item_failed(group, pos, error)
            self._delivery.deliver(group)
        self._chunker.observe(len(head), sum(h[3] for h in head))
        if self._journal is not None:
            self._journal.flush()
        self._tally.notify()

    def _hand_over(self, chunks: list[InFlight], backend: Backend) -> None:
        """Sample tasks still running where auto measured them: batches in flight on a backend of
        their own (``HandedOver``), in their places after the head; new batches go to ``backend``."""
        self._dispatch.backend = HandedOver(chunks)
        for chunk in chunks:
            self._start_group(chunk.items)
        self._dispatch.backend = backend

    def _add_recorded(self, start: int, items: list[Any], records: list[Record]) -> None:
        """Items the journal holds: they end as recorded, in their place, without running."""
        group = self._delivery.open_group(start, items, [r.value for r in records],
                                          [r.seconds for r in records] if self._collect else None)
        self._next_index = start + len(items)
        self._tally.skipped(len(items))
        failed = []
        for pos, record in enumerate(records):
            if record.attempts != 1:
                group.attempts[pos] = record.attempts
            if record.error is not None:
                failed.append(pos)
        group.remaining -= len(items) - len(failed)  # those that succeeded have ended
        for pos in failed:
            self._final_failure(group, pos, records[pos].error, recorded=True)  # type: ignore[arg-type]
        self._delivery.deliver(group)
        self._tally.notify()

    # -- events ------------------------------------------------------------------------------
    def _handle(self, event: Event | Events | Wake) -> None:
        if isinstance(event, Wake):
            return
        if isinstance(event, Events):
            for one in event:
                self._handle(one)
            return
        flight = self._dispatch.arrived(event)
        if flight is None:
            return  # started (its deadline is set), or cancelled or timed out already
        if isinstance(event, Done):
            self._on_done(flight, event)
        else:
            assert isinstance(event, Lost)
            self._on_lost(flight, event)
        self._delivery.deliver(flight.group, isinstance(event, Done) and event.part is not None)

    def _on_done(self, flight: Flight, event: Done) -> None:
        group, positions = flight.group, flight.positions
        n = len(event.values)
        # A batch that ran where new batches no longer go (before a switch, or a task auto's probe
        # handed over) says nothing of the engine now: chunk sizes and the second look learn
        # from the current engine's batches only.
        if flight.backend is self._dispatch.backend:
            self._chunker.observe(n, event.elapsed)
            if self._watcher is not None:
                self._look_again(flight, event, n)
        self._tally.batch_ran(event, group.start, group.items, positions)
        if failures.ran_late(event, self._timeout):
            pos = 0 if positions is None else positions[0]
            self._item_failed(group, pos, self._timeout_error(group, pos))
            return
        all_positions = flight.all_positions()
        if n < len(all_positions):
            # The worker stopped early (it reached its task or memory quota): the rest of the
            # batch did not run, so it goes out again as a new batch; no attempt is counted.
            self._dispatch.submit(group, list(all_positions[n:]))
            positions = list(all_positions[:n])
        failed: list[int] = []
        for pos, error in group.record(event, positions, self._collect):  # in order: a failure may halt
            failed.append(pos)
            self._item_failed(group, pos, error)
        self._tally.completed(n - len(failed))
        if self._journal is not None:
            self._record_values(group, positions if positions is not None else range(n), failed, event)

    def _record_values(self, group: Group, positions: Iterable[int], failed: list[int], event: Done) -> None:
        """Journal the items of a batch that ended with a value (those that raised end later, or retry)."""
        journal = self._journal
        assert journal is not None
        if failed:
            skip = set(failed)
            positions = [pos for pos in positions if pos not in skip]
        durations = group.durations
        if durations is None and len(event.values) == 1:  # a task timed alone
            durations = [0.0] * len(group.items)
            durations[next(iter(positions), 0)] = event.elapsed
        journal.ended_values(group.start, positions, group.items, group.values, group.attempts, durations)

    def _on_lost(self, flight: Flight, event: Lost) -> None:
        group = flight.group
        positions = list(flight.all_positions())
        died = failures.worker_died(event)
        if died:
            self._tally.crashed()  # whatever becomes of the batch
        whole = failures.after_lost(event, len(positions), self._job.name)
        if isinstance(whole, failures.Split):
            for pos in positions:
                self._dispatch.submit(group, [pos])
        elif isinstance(whole, failures.FailRun):
            self._failure = whole.error
            self._dispatch.cancel_all()
        else:
            for pos in positions:
                if died:  # the item's record of deaths, which the decision reads
                    group.crashes.setdefault(pos, []).append((event.pid or 0, event.exitcode))
                decision = failures.lost_item(self._at(group, pos), event, group.crashes.get(pos, []), self._policy,
                                              self._engine)
                self._settle(group, pos, decision)

    def _check_deadlines(self) -> None:
        for flight in self._dispatch.overdue(self._clock.now()):
            flight.backend.abort(flight.batch)
            group = flight.group
            for pos in flight.all_positions():
                self._item_failed(group, pos, self._timeout_error(group, pos))
            self._delivery.deliver(group)

    # -- per-item accounting: act on what _failures decides ------------------------------------
    def _at(self, group: Group, pos: int) -> failures.At:
        return failures.At(self._job.name, group.start + pos, group.items[pos], group.attempts.get(pos, 1))

    def _timeout_error(self, group: Group, pos: int) -> TaskError:
        return failures.timeout_error(self._at(group, pos), self._timeout or 0.0, self._engine)

    def _item_failed(self, group: Group, pos: int, error: ItemError | TaskError) -> None:
        """The item raised or ran past its deadline: it goes again, or it ends with its error."""
        self._settle(group, pos, failures.after_error(self._at(group, pos), error, self._policy))

    def _settle(self, group: Group, pos: int, decision: failures.Retry | failures.Fail) -> None:
        """Act on what ``_failures`` decided for the item at ``pos``."""
        if isinstance(decision, failures.Fail):
            self._final_failure(group, pos, decision.error)
            return
        group.attempts[pos] = decision.attempt
        self._tally.retried()
        if self._bucket is not None or (decision.wait and self._policy.backoff > 0):
            # Every start takes a token under ``rate``; only a failure the task caused waits out backoff.
            delay = self._policy.delay(decision.attempt - 1) if decision.wait else 0.0
            self._dispatch.defer(self._clock.now() + delay, group, pos)
        else:
            self._dispatch.submit(group, [pos])

    def _final_failure(self, group: Group, pos: int, error: TaskError, recorded: bool = False) -> None:
        """The item ends with ``error``; ``recorded``: the journal held it (it is neither counted nor written)."""
        group.fail(pos, error)
        if not recorded:
            self._tally.failed()
            if self._journal is not None:
                self._journal.ended(group.start + pos, group.items[pos], error=error,
                                    attempts=group.attempts.get(pos, 1))
        if not self._collect and self._failure is None:
            self._failure = error
            self._delivery.halt_at(group)
            self._dispatch.cancel_all()
