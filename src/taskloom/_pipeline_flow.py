"""The moving parts of a running pipeline: bounded channels, end-of-stream markers, the threads.

See ``_pipeline.py`` for the data-flow diagram and the public API. In short: one *feeder* thread
reads the source, one *pump* thread per stage iterates that stage's ``Run``, and bounded
``Channel`` objects connect them. Items travel as ``(origin, value)`` tuples, where ``origin`` is
the position in the source of the item they came from. Two kinds of marker travel in-band, in
order, behind the items: ``END`` (the stream is over) and ``Failure`` (the stream stopped on an
error). A stop from outside (the consumer left, ``cancel()``, Ctrl-C) does not travel: it
*aborts* every channel, which wakes every blocked ``put``/``get`` at once, and cancels every run.
No wait anywhere uses a timeout to notice the end.
"""

from __future__ import annotations

import collections
import contextvars
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ._backends._base import enter_depth, nesting_depth
from ._errors import TaskError, short_repr
from ._options import Options
from ._outcome import Outcome
from ._pipeline_report import PipelineStatistics, StageStatistics
from ._run._open import open_run
from ._run._policy import SIGNAL_SLICE
from ._run._run import PushSource, Run

if TYPE_CHECKING:
    from ._pipeline_journal import PipelineJournal

__all__ = [
    "DEFAULT_MAXSIZE",
    "Channel",
    "Execution",
    "StageFailure",
    "StageSpec",
    "StepSpec",
]

#: Items a stage's input queue holds when ``maxsize`` is not given.
DEFAULT_MAXSIZE = 64
#: The largest ``prefetch`` of any backend: a run keeps at most ``workers x 2`` groups in flight.
MAX_PREFETCH = 2

StageState: TypeAlias = Literal["pending", "running", "done", "failed", "cancelled"]


# -- markers ---------------------------------------------------------------------------------------
class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


#: The stream is over: every item before it was delivered.
END = _Marker("END")
#: Handed out by an aborted channel: the pipeline is stopping, nothing more will come.
ABORTED = _Marker("ABORTED")


@dataclass(frozen=True, eq=False)
class Failure:
    """The stream stopped on ``error``; the items before it were delivered."""

    error: BaseException


Marker: TypeAlias = "_Marker | Failure"
Entry: TypeAlias = "tuple[int, Any] | _Marker | Failure"


class Aborted(Exception):
    """``Channel.get`` on an aborted channel."""


class StepFailed(Exception):
    """A filter/flatten step raised: ``error`` names the step."""

    def __init__(self, error: TaskError) -> None:
        super().__init__(str(error))
        self.error = error


# -- what the user configured -----------------------------------------------------------------------
@dataclass(frozen=True)
class StageSpec:
    """One ``.then(...)``: everything ``imap`` needs, plus the stage's name and queue size."""

    fn: Callable[[Any], Any]
    name: str
    options: Options  # as given to then(); the stage's run always collects (see Stage._drain)
    maxsize: int

    @property
    def on_error(self) -> Literal["raise", "collect"]:
        return self.options.on_error


@dataclass(frozen=True)
class StepSpec:
    """One ``.filter``, ``.batch`` or ``.flatten``: runs in the thread that feeds the next queue."""

    kind: Literal["filter", "batch", "flatten"]
    name: str
    fn: Callable[[Any], object] | None = None
    n: int = 0


@dataclass(frozen=True, slots=True)
class StageFailure:
    """One item that failed in a stage with ``on_error="collect"`` (see ``Pipeline.errors``).

    Attributes:
        stage: the stage's name.
        index: position in the source of the item this input came from (for a batch, of its
            first item; for a flattened item, of the iterable it came from).
        outcome: the stage's ``Outcome`` for it: ``outcome.item`` is the stage's input,
            ``outcome.error`` the ``TaskError`` (its ``.stage`` is the stage's name; its
            ``.index`` is ``index``), ``outcome.attempts`` how often it ran.
    """

    stage: str
    index: int
    outcome: Outcome[Any]

    @property
    def item(self) -> Any:
        """What the stage was given."""
        return self.outcome.item

    @property
    def error(self) -> TaskError:
        """Why it failed (the original exception is its ``__cause__``)."""
        assert self.outcome.error is not None
        return self.outcome.error


# -- the bounded queue --------------------------------------------------------------------------------
class Channel:
    """A bounded FIFO from one producer thread to one consumer: back-pressure and depth statistics.

    ``put`` blocks while the channel is full, ``get`` while it is empty; ``abort`` wakes both for
    good (``put`` then returns False, ``get`` raises ``Aborted``, ``take`` hands out ``ABORTED``).
    ``take`` never blocks: it is how a stage's ``Run`` reads its input (as a ``PushSource``), and
    ``on_ready`` (the run's ``wake``) is called whenever the channel turns non-empty, so the run
    never sleeps on its own result queue while input waits here.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: collections.deque[Entry] = collections.deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._aborted = False
        self._on_ready: Callable[[], None] | None = None
        # Depth over time: the integral of depth dt, so the mean is time-weighted.
        self._t0 = self._last = time.perf_counter()
        self._area = 0.0
        self._max = 0
        self._blocked = 0.0  # seconds the producer waited for room

    def _tick(self) -> None:
        """Account for the depth since the last change (call before each change, under the lock)."""
        now = time.perf_counter()
        self._area += len(self._items) * (now - self._last)
        self._last = now

    def set_on_ready(self, callback: Callable[[], None] | None) -> None:
        with self._lock:
            self._on_ready = callback

    def put(self, entry: Entry) -> bool:
        """Append ``entry``, waiting for room; False if the channel was aborted (entry dropped)."""
        with self._lock:
            if len(self._items) >= self.maxsize and not self._aborted:
                t0 = time.perf_counter()
                while len(self._items) >= self.maxsize and not self._aborted:
                    self._not_full.wait()
                self._blocked += time.perf_counter() - t0
            if self._aborted:
                return False
            self._tick()
            self._items.append(entry)
            depth = len(self._items)
            self._max = max(self._max, depth)
            self._not_empty.notify()
            callback = self._on_ready if depth == 1 else None
        if callback is not None:
            # Only on empty -> non-empty: a run that found input waiting takes it at its next
            # fill, which follows its next event; one that found none is waiting for this wake.
            callback()
        return True

    def get(self) -> Entry:
        """The next entry, waiting for one; raises ``Aborted`` once the channel is aborted."""
        with self._lock:
            while not self._items and not self._aborted:
                self._not_empty.wait(SIGNAL_SLICE)  # in slices: a signal's handler runs here (RealClock)
            if self._aborted:
                raise Aborted
            self._tick()
            entry = self._items.popleft()
            self._not_full.notify()
            return entry

    def take(self, n: int) -> tuple[list[tuple[int, Any]], Marker | None]:
        """Up to ``n`` items without waiting, stopping at a marker; or ``([], marker)``.

        A marker is handed out (and removed) only when it is at the front, so the items before
        it are always taken first.
        """
        with self._lock:
            if self._aborted:
                return [], ABORTED
            items = self._items
            if not items:
                return [], None
            self._tick()
            front = items[0]
            if isinstance(front, _Marker | Failure):
                items.popleft()
                self._not_full.notify()
                return [], front
            out: list[tuple[int, Any]] = []
            while items and len(out) < n and type(items[0]) is tuple:
                out.append(items.popleft())  # type: ignore[arg-type]
            self._not_full.notify()
            return out, None

    def abort(self) -> None:
        """Stop for good: drop what is queued and wake every waiter (and the consuming run)."""
        with self._lock:
            if self._aborted:
                return
            self._tick()
            self._aborted = True
            self._items.clear()
            self._not_empty.notify_all()
            self._not_full.notify_all()
            callback = self._on_ready
        if callback is not None:
            callback()

    def snapshot(self) -> tuple[int, int, float, float]:
        """(depth now, max depth, time-weighted mean depth, seconds the producer was blocked)."""
        with self._lock:
            now = time.perf_counter()
            depth = len(self._items)
            area = self._area + depth * (now - self._last)
            span = now - self._t0
            return depth, self._max, (area / span if span > 0 else 0.0), self._blocked


# -- a stage's input, as its Run sees it ---------------------------------------------------------------
class StageInput(PushSource):
    """The upstream channel as a ``Run``'s input: ``take`` for the run, ``next`` for auto's sample.

    It numbers the items it hands out exactly as the run does (0, 1, 2, ... in hand-out order), so
    an ``Outcome.index`` maps back to the item's origin in the source. Batches are capped at
    ``maxsize // (workers x 2)`` items, so that a run holds at most about ``maxsize`` items (and
    at least one batch per slot of its window): see ``Pipeline`` for the bound this gives.
    """

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.origins: dict[int, int] = {}
        self.handed_out = 0
        self.marker: Marker | None = None
        self.run: Run[Any] | None = None

    def batch_cap(self) -> int:
        workers = self.run.workers if self.run is not None else 1
        return max(1, self.channel.maxsize // (max(1, workers) * MAX_PREFETCH))

    def take(self, n: int) -> list[Any] | None:
        if self.marker is not None:
            return None
        entries, marker = self.channel.take(min(n, self.batch_cap()))
        if marker is not None:
            self.marker = marker
            return None
        values = []
        for origin, value in entries:
            self.origins[self.handed_out] = origin
            self.handed_out += 1
            values.append(value)
        return values

    def __next__(self) -> Any:
        """Blocking read: only ``mode="auto"`` uses it, to sample the first items."""
        if self.marker is not None:
            raise StopIteration
        try:
            entry = self.channel.get()
        except Aborted:
            self.marker = ABORTED
            raise StopIteration from None
        if isinstance(entry, _Marker | Failure):
            self.marker = entry
            raise StopIteration
        origin, value = entry
        self.origins[self.handed_out] = origin
        self.handed_out += 1
        return value


# -- the steps after a producer ------------------------------------------------------------------------
class Outlet:
    """What a producer (the feeder or a pump) sends through: its steps, then the next channel."""

    def __init__(self, steps: list[StepSpec], channel: Channel) -> None:
        self.steps = steps
        self.channel = channel
        self._buffers: dict[int, list[Any]] = {i: [] for i, s in enumerate(steps) if s.kind == "batch"}
        self._batch_origin: dict[int, int] = {}

    def item(self, origin: int, value: Any) -> bool:
        """Send one item through the steps; False when the pipeline is stopping."""
        return self._push(0, origin, value)

    def _push(self, i: int, origin: int, value: Any) -> bool:
        steps = self.steps
        while i < len(steps):
            step = steps[i]
            if step.kind == "filter":
                assert step.fn is not None
                try:
                    keep = step.fn(value)
                except Exception as exc:
                    raise StepFailed(_step_error(step, origin, value, exc)) from None
                if not keep:
                    return True
            elif step.kind == "batch":
                buffer = self._buffers[i]
                if not buffer:
                    self._batch_origin[i] = origin
                buffer.append(value)
                if len(buffer) < step.n:
                    return True
                value, origin = list(buffer), self._batch_origin[i]
                buffer.clear()
            else:  # flatten
                try:
                    parts = iter(value)
                except TypeError as exc:
                    raise StepFailed(_step_error(step, origin, value, exc)) from None
                while True:
                    try:
                        part = next(parts)
                    except StopIteration:
                        return True
                    except Exception as exc:
                        raise StepFailed(_step_error(step, origin, value, exc)) from None
                    if not self._push(i + 1, origin, part):
                        return False
            i += 1
        return self.channel.put((origin, value))

    def end(self) -> bool:
        """The input is over: send the partial batches, then ``END``."""
        for i, step in enumerate(self.steps):
            buffer = self._buffers.get(i)
            if step.kind == "batch" and buffer:
                value, origin = list(buffer), self._batch_origin[i]
                buffer.clear()
                if not self._push(i + 1, origin, value):
                    return False
        return self.channel.put(END)

    def fail(self, error: BaseException) -> bool:
        return self.channel.put(Failure(error))


def _step_error(step: StepSpec, origin: int, value: Any, exc: Exception) -> TaskError:
    err = TaskError(
        f"pipeline step {step.name!r} failed on item {short_repr(value)} (source item {origin}): "
        f"{type(exc).__name__}: {exc}",
        index=origin, item_repr=short_repr(value), stage=step.name,
    )
    err.__cause__ = exc
    return err


def _stage_error(error: TaskError, stage: str, origin: int) -> TaskError:
    """A stage's task error, renamed after the stage and pointing at the source item."""
    message = error.args[0] if error.args else ""
    error.args = (f"pipeline stage {stage!r}, source item {origin}: {message}",)
    error.stage = stage
    error.index = origin
    return error


# -- the threads ----------------------------------------------------------------------------------------
def _enter(depth: int, context: contextvars.Context, main: Callable[[], None]) -> None:
    """A pipeline thread's body: the caller's nesting depth and contextvars, then ``main``."""
    if depth:
        enter_depth(depth - 1)
    context.run(main)


class Feeder:
    """The thread that reads the source (so a slow or blocking source never holds a run's lock)."""

    def __init__(self, execution: Execution, source: Iterator[Any], outlet: Outlet) -> None:
        self.execution = execution
        self.source = source
        self.outlet = outlet
        self.pulled = 0
        self.in_source = False  # inside next(source): close() does not wait for user code
        self.context = contextvars.Context()
        self.depth = 0
        self.thread = threading.Thread(target=lambda: _enter(self.depth, self.context, self.main),
                                       name="taskloom-pipeline-source", daemon=True)

    def main(self) -> None:
        ex = self.execution
        source, outlet = self.source, self.outlet
        try:
            while True:
                with ex.lock:
                    if ex.stopping:
                        return
                    self.in_source = True
                try:
                    value = next(source)
                except StopIteration:
                    outlet.end()
                    return
                except BaseException as exc:
                    # Raised to the consumer as is, after the items before it (as imap does).
                    outlet.fail(exc)
                    return
                finally:
                    with ex.lock:
                        self.in_source = False
                origin = self.pulled if ex.journal is None else ex.journal.last_index  # the source index
                self.pulled += 1
                if not outlet.item(origin, value):
                    return
        except StepFailed as exc:
            outlet.fail(exc.error)
        except BaseException as exc:  # pragma: no cover - a bug here must not leave the consumer waiting
            outlet.fail(exc)


class Pump:
    """The thread of one stage: builds the stage's ``Run`` over its input channel and drains it."""

    def __init__(self, execution: Execution, index: int, spec: StageSpec, inbox: Channel, outlet: Outlet) -> None:
        self.execution = execution
        self.index = index
        self.spec = spec
        self.inbox = inbox
        self.outlet = outlet
        self.input = StageInput(inbox)
        self.run: Run[Outcome[Any]] | None = None
        self.cancelled = False
        self.state: StageState = "pending"
        self.items_out = 0
        self.errors = 0
        self.started: float | None = None
        self.ended: float | None = None
        self.context = contextvars.Context()
        self.depth = 0
        self.thread = threading.Thread(target=lambda: _enter(self.depth, self.context, self.main),
                                       name=f"taskloom-pipeline-{spec.name}", daemon=True)

    def cancel(self) -> None:
        """Cancel the stage's run (from any thread); the pump then ends."""
        with self.execution.lock:
            self.cancelled = True
            run = self.run
        if run is not None:
            run.cancel()

    def main(self) -> None:
        self.started = time.perf_counter()
        self.state = "running"
        try:
            self._drain()
        except StepFailed as exc:
            self._fail(exc.error)
        except BaseException as exc:
            # The run could not start (the function cannot be pickled...) or broke: the consumer
            # must hear of it, never wait forever.
            if isinstance(exc, TaskError):
                exc.stage = self.spec.name
                error: BaseException = exc
            else:
                error = TaskError(f"pipeline stage {self.spec.name!r} stopped: {type(exc).__name__}: {exc}",
                                  stage=self.spec.name)
                error.__cause__ = exc
            self._fail(error)
        finally:
            self.ended = time.perf_counter()

    def _drain(self) -> None:
        spec, inp, ex = self.spec, self.input, self.execution
        # Always "collect": outcomes carry their index (so each maps back to its source item even
        # unordered), and with ordered=True the first failure seen is the first in source order,
        # as in a plain loop. on_error="raise" is applied here, on that first failure.
        # Each stage position has pools of its own (two thread stages of 32 workers would otherwise
        # share 32 threads), still warm for the next pipeline.
        options = spec.options.replace(ordered=ex.ordered, on_error="collect")
        run: Run[Outcome[Any]] = open_run(spec.fn, inp, options, slot=("stage", self.index))
        inp.run = run
        with ex.lock:
            self.run = run
            cancelled = self.cancelled
        if cancelled:
            run.cancel()
            self.state = "cancelled"
            return
        self.inbox.set_on_ready(run.wake)
        collect = spec.on_error == "collect"
        origins, outlet = inp.origins, self.outlet
        for outcome in run:
            origin = origins.pop(outcome.index)
            if outcome.error is None:
                self.items_out += 1
                if not outlet.item(origin, outcome.value):
                    self.state = "cancelled"
                    return
                continue
            self.errors += 1
            error = _stage_error(outcome.error, spec.name, origin)
            if collect:
                ex.add_error(StageFailure(spec.name, origin, outcome))
            else:
                self._fail(error)
                return
        marker = inp.marker
        if marker is END:
            self.state = "done" if outlet.end() else "cancelled"
        elif isinstance(marker, Failure):
            # Upstream stopped on an error: pass it on, behind what this stage made of the items before it.
            self.state = "cancelled"
            outlet.fail(marker.error)
        else:  # the run was cancelled, or its input aborted: the pipeline is stopping
            self.state = "cancelled"

    def statistics(self) -> StageStatistics:
        run = self.run
        rs = run.statistics() if run is not None else None
        depth, most, mean, _ = self.inbox.snapshot()
        blocked = self.outlet.channel.snapshot()[3]
        started = self.started
        elapsed = 0.0 if started is None else (self.ended if self.ended is not None else time.perf_counter()) - started
        return StageStatistics(
            name=self.spec.name, mode=rs.mode if rs else "", workers=rs.workers if rs else 0, state=self.state,
            items_in=self.input.handed_out, items_out=self.items_out, errors=self.errors,
            busy=rs.task_time if rs else 0.0, elapsed=elapsed, queue_maxsize=self.inbox.maxsize,
            queue_depth=depth, queue_max=most, queue_mean=mean, blocked=blocked,
        )

    def _fail(self, error: BaseException) -> None:
        self.state = "failed"
        self.execution.stop_upstream(self.index)
        self.outlet.fail(error)


# -- one run of a pipeline ---------------------------------------------------------------------------
class Execution:
    """The threads and channels of one iteration over a ``Pipeline``.

    ``close`` is the one way everything stops: abort every channel, cancel every run, then wait
    for the pump threads (which end at once: nothing they wait on survives an abort or a cancel).
    The feeder is waited for too, unless it is inside the user's source iterator, which cannot be
    interrupted: it is a daemon thread and ends as soon as that call returns.
    """

    def __init__(self, source: Iterable[Any], stages: list[StageSpec], segments: list[list[StepSpec]], *,
                 ordered: bool, journal: PipelineJournal | None = None) -> None:
        self.ordered = ordered
        self.journal = journal
        self.lock = threading.Lock()
        self.stopping = False
        self.closed = False
        self.delivered = 0
        self._errors: list[StageFailure] = []
        self.t0 = time.perf_counter()
        self.t_end: float | None = None
        self.inboxes = [Channel(spec.maxsize) for spec in stages]
        self.outbox = Channel(stages[-1].maxsize if stages else DEFAULT_MAXSIZE)
        channels = [*self.inboxes, self.outbox]
        self.feeder = Feeder(self, iter(source), Outlet(segments[0], channels[0]))
        self.pumps = [
            Pump(self, i, spec, channels[i], Outlet(segments[i + 1], channels[i + 1]))
            for i, spec in enumerate(stages)
        ]
        self.on_close: list[Callable[[], None]] = []

    @property
    def channels(self) -> list[Channel]:
        return [*self.inboxes, self.outbox]

    def start(self) -> None:
        # Threads start with an empty context: give each a copy of the caller's, so thread and
        # async stages see the caller's contextvars as they do under taskloom.map.
        context = contextvars.copy_context()
        # A pipeline run from inside a pool thread must not queue its stages' tasks behind the very
        # task that waits for them: the pumps keep the caller's nesting depth (see _pools).
        depth = nesting_depth()
        workers: list[Pump | Feeder] = [*self.pumps, self.feeder]
        for worker in workers:
            worker.context = context.copy()
            worker.depth = depth
            worker.thread.start()

    def add_error(self, error: StageFailure, recorded: bool = False) -> None:
        """A collecting stage's failure (``recorded``: one the pipeline's journal held, not a new one)."""
        with self.lock:
            self._errors.append(error)
        if self.journal is not None and not recorded:
            self.journal.failed(error)

    @property
    def errors(self) -> list[StageFailure]:
        with self.lock:
            return list(self._errors)

    def stop_upstream(self, index: int) -> None:
        """Stage ``index`` failed: stop it and everything before it (downstream drains in order)."""
        for channel in self.inboxes[: index + 1]:
            channel.abort()
        for pump in self.pumps[: index + 1]:
            pump.cancel()

    def close(self) -> None:
        """Stop every thread and free every worker; idempotent, safe from any thread."""
        with self.lock:
            if self.closed:
                return
            self.closed = self.stopping = True
            feeder_busy = self.feeder.in_source
        me = threading.current_thread()
        for channel in self.channels:
            channel.abort()
        for pump in self.pumps:
            if pump.thread is not me:  # a sequential task cancelling its own pipeline holds its run's lock
                pump.cancel()
        for pump in self.pumps:
            if pump.thread is not me and pump.thread.ident is not None:
                pump.thread.join()
        feeder = self.feeder.thread
        if not feeder_busy and feeder is not me and feeder.ident is not None:
            feeder.join()
        self.t_end = time.perf_counter()
        for callback in self.on_close:
            callback()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in (self.feeder.thread, *(p.thread for p in self.pumps)))

    def statistics(self) -> PipelineStatistics:
        stages = tuple(pump.statistics() for pump in self.pumps)
        with self.lock:
            errors = len(self._errors)
        return PipelineStatistics(stages, self.feeder.pulled, self.delivered, errors, self.elapsed(), self.running)

    def elapsed(self) -> float:
        return (self.t_end if self.t_end is not None else time.perf_counter()) - self.t0

