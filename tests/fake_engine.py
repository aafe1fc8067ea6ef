"""A scripted engine and a virtual clock: the scheduler tested with no thread, process or sleep.

``FakeBackend`` runs nothing: for every item it asks the test's ``script(item, attempt)`` what
happens (a value after some virtual seconds, an exception, a crash of the worker, a pickling
failure, a hang) and reports it when the ``FakeClock`` reaches that time. The clock only moves
when the run waits for an event, so every timer (deadline, backoff, rate limit) fires at an exact,
predictable virtual instant, and a whole run takes microseconds of real time.
"""

from __future__ import annotations

import queue
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from taskloom import Mode
from taskloom._backends._base import Backend, Batch, Done, ItemError, Job, Lost, Started
from taskloom._options import Options
from taskloom._run._run import Run, Watcher


class Ok(NamedTuple):
    """The task returns ``fn(item)`` after ``seconds``."""

    seconds: float = 1.0


class Raise(NamedTuple):
    """The task raises ``error`` after ``seconds``."""

    error: BaseException
    seconds: float = 1.0


class Crash(NamedTuple):
    """The task kills its worker after ``seconds``: the whole batch is lost."""

    seconds: float = 1.0


class Unpicklable(NamedTuple):
    """The item cannot be pickled: the whole batch is lost as a "split"."""


class Hang(NamedTuple):
    """The task never ends by itself (only a deadline or a cancel ends it)."""


Action = Ok | Raise | Crash | Unpicklable | Hang
Script = Callable[[Any, int], Action]


def always_ok(_item: Any, _attempt: int) -> Action:
    return Ok()


@dataclass
class _Running:
    batch: Batch
    ends_at: float | None  # None: hangs
    event: Done | Lost | None


class FakeClock:
    """Virtual time: ``wait`` advances it to the next scripted event or timer, never sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.backends: list[FakeBackend] = []

    def now(self) -> float:
        return self.t

    def wait(self, sink: queue.SimpleQueue[Any], timeout: float | None) -> Any:
        try:
            return sink.get_nowait()
        except queue.Empty:
            pass
        due = [d for b in self.backends if (d := b.next_due()) is not None]
        if timeout is not None:
            due.append(self.t + timeout)
        if not due:
            raise AssertionError("the run would wait forever: nothing is running and no timer is set")
        self.t = max(self.t, min(due))
        for backend in self.backends:
            backend.advance(self.t)
        try:
            return sink.get_nowait()
        except queue.Empty:
            return None


class FakeBackend(Backend):
    """Runs batches by script on ``workers`` virtual workers; records what the scheduler asked."""

    prefetch = 2

    def __init__(self, clock: FakeClock, script: Script = always_ok, workers: int = 2, name: str = "fake") -> None:
        self.clock = clock
        self.script = script
        self.workers = workers
        self.name = name
        self.queued: list[Batch] = []
        self.running: dict[int, _Running] = {}
        self.attempts: dict[Any, int] = {}
        self.submitted: list[tuple[float, list[Any]]] = []  # (virtual time, items) per batch
        self.measured: list[bool] = []  # per batch submitted: whether it was asked to measure its CPU time
        self.started_at: list[tuple[float, list[Any]]] = []
        self.aborted: list[list[Any]] = []
        self.cancelled: list[list[Any]] = []
        self.max_outstanding = 0
        clock.backends.append(self)

    # -- the backend contract ----------------------------------------------------------------
    def submit(self, batch: Batch) -> None:
        self.submitted.append((self.clock.t, list(batch.items)))
        self.measured.append(batch.measure_cpu)
        self.queued.append(batch)
        self.max_outstanding = max(self.max_outstanding, len(self.queued) + len(self.running))
        self._start_queued()

    def cancel(self, batches: list[Batch]) -> None:
        for batch in batches:
            batch.cancelled = True
            self.cancelled.append(list(batch.items))
            self.running.pop(batch.id, None)
        self.queued = [b for b in self.queued if not b.cancelled]
        self._start_queued()

    def abort(self, batch: Batch) -> None:
        self.aborted.append(list(batch.items))
        self.running.pop(batch.id, None)  # the worker is "killed" and replaced: capacity kept
        self._start_queued()

    # -- virtual time ----------------------------------------------------------------------------
    def next_due(self) -> float | None:
        ends = [r.ends_at for r in self.running.values() if r.ends_at is not None]
        return min(ends) if ends else None

    def advance(self, now: float) -> None:
        for batch_id, r in sorted(self.running.items(), key=lambda kv: (kv[1].ends_at or 0.0, kv[0])):
            if r.ends_at is not None and r.ends_at <= now:
                del self.running[batch_id]
                assert r.event is not None
                r.batch.sink.put(r.event)
        self._start_queued()

    def _start_queued(self) -> None:
        while self.queued and len(self.running) < self.workers:
            batch = self.queued.pop(0)
            self.started_at.append((self.clock.t, list(batch.items)))
            if batch.timed:
                batch.sink.put(Started(batch.id, self.clock.t, "fake-worker"))
            self.running[batch.id] = self._play(batch)

    def _play(self, batch: Batch) -> _Running:
        values: list[Any] = []
        errors: dict[int, ItemError] = {}
        durations: list[float] = []
        for pos, item in enumerate(batch.items):
            attempt = self.attempts[item] = self.attempts.get(item, 0) + 1
            action = self.script(item, attempt)
            if isinstance(action, Hang):
                return _Running(batch, None, None)
            if isinstance(action, Unpicklable):
                return _Running(batch, self.clock.t, Lost(batch.id, "split", f"cannot pickle {item!r}"))
            if isinstance(action, Crash):
                at = self.clock.t + sum(durations) + action.seconds
                return _Running(batch, at, Lost(batch.id, "crash", "the worker died", pid=4242, exitcode=-9))
            durations.append(action.seconds)
            if isinstance(action, Raise):
                values.append(None)
                errors[pos] = ItemError(action.error, f"Traceback: {action.error!r}\n", False)
            else:
                values.append(batch.job.fn(item))
        elapsed = sum(durations)
        done = Done(batch.id, values, errors or None, durations if batch.per_item_timing else None, elapsed,
                    "fake-worker")
        return _Running(batch, self.clock.t + elapsed, done)


@dataclass(frozen=True, eq=False)
class FakeEngine(Mode):
    """The engine facts of the fake (crash retries, the words for a timeout)."""

    crash_retries: int = 1
    name: str = "fake"
    timeout_text = "the fake worker was stopped"

    def default_workers(self) -> int:
        return 2


@dataclass
class Harness:
    clock: FakeClock
    backend: FakeBackend
    engine: FakeEngine
    run: Run[Any]
    pulled: list[Any] = field(default_factory=list)


def make_run(items: Iterable[Any], script: Script = always_ok, *, fn: Callable[[Any], Any] = lambda x: x * 10,
             workers: int = 2, crash_retries: int = 1, watcher: Watcher | None = None, seed: int = 7,
             **options: Any) -> Harness:
    """A run of ``fn`` over ``items`` on a fake engine, its clock and its backend."""
    clock = FakeClock()
    backend = FakeBackend(clock, script, workers)
    engine = FakeEngine(crash_retries=crash_retries)
    opts = Options.build(fn, "test", mode=engine, workers=workers, **options)
    pulled: list[Any] = []

    def source() -> Any:
        for item in items:
            pulled.append(item)
            yield item

    total = len(items) if isinstance(items, list | range) else None
    run: Run[Any] = Run(fn, source(), engine=engine, backend=backend, options=opts, name="fn", total=total,
                        watcher=watcher, clock=clock, rng=random.Random(seed))
    return Harness(clock, backend, engine, run, pulled)


def job_of(run: Run[Any]) -> Job:
    return run._job
