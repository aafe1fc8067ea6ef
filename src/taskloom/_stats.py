"""Run statistics: what the scheduler records, the frozen snapshot users see, and its diagnosis.

The scheduler feeds a ``Recorder`` from its events (a batch finished on a worker, the input made
it wait, it spent time dispatching); ``Recorder.snapshot`` builds a ``RunStatistics``, whose
``diagnosis`` names the bottleneck in one line and whose ``summary()`` prints a table with it.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field

from ._errors import short_repr

__all__ = ["ProgressUpdate", "Recorder", "RunStatistics"]

MAX_SAMPLES = 4096  # duration samples kept for percentiles (thinned evenly past this)
SLOWEST = 5


@dataclass(frozen=True)
class RunStatistics:
    """A snapshot of a run: counts, where the time went, and why it was as fast as it was.

    ``print(run.statistics().summary())`` shows it as a table that ends with the ``diagnosis``.

    Attributes:
        mode: the engine that ran the tasks ("threads", "processes", ...).
        workers: the worker (or concurrency) count in use.
        submitted: items taken from the input so far.
        completed: items that ended with a value.
        failed: items that ended with an error.
        retried: extra runs caused by ``retries`` and crash retries.
        crashed: worker deaths seen while running this run's tasks.
        batches: batches dispatched (tiny tasks are batched to cut overhead).
        chunksize: the batch size used last.
        elapsed: seconds since the run started.
        task_time: seconds spent inside tasks, summed over workers.
        input_wait: seconds the run waited for its input (a slow generator shows here).
        dispatch_time: seconds the caller's thread spent dispatching and handling results.
        consumer_time: seconds the caller spent elsewhere between taking results (its own work).
        per_worker: tasks finished per worker (a pid, a thread name, "asyncio" or "caller").
        busy: seconds each worker spent running this run's tasks.
        percentiles: task duration percentiles in seconds ("p50", "p90", "p99", "max").
        slowest: up to five ``(index, item_repr, seconds)`` of the slowest tasks measured alone.
        skipped: items the run's ``journal=`` already held: handed out as recorded, not run (and
            not counted in ``completed`` or ``failed``).
    """

    mode: str
    workers: int
    submitted: int
    completed: int
    failed: int
    retried: int
    batches: int
    chunksize: int
    elapsed: float
    task_time: float
    crashed: int = 0
    input_wait: float = 0.0
    dispatch_time: float = 0.0
    consumer_time: float = 0.0
    per_worker: dict[str, int] = field(default_factory=dict)
    busy: dict[str, float] = field(default_factory=dict)
    percentiles: dict[str, float] = field(default_factory=dict)
    slowest: tuple[tuple[int, str, float], ...] = ()
    skipped: int = 0

    @property
    def mean_task(self) -> float:
        """Mean seconds per finished task (0.0 before the first one)."""
        done = self.completed + self.failed
        return self.task_time / done if done else 0.0

    @property
    def utilisation(self) -> float:
        """Busy fraction of the workers over the run: task time / (elapsed x workers)."""
        capacity = self.elapsed * max(1, self.workers)
        return min(1.0, self.task_time / capacity) if capacity > 0 else 0.0

    def idle(self, worker: str) -> float:
        """Seconds ``worker`` was not running this run's tasks (elapsed - busy)."""
        return max(0.0, self.elapsed - self.busy.get(worker, 0.0))

    @property
    def diagnosis(self) -> str:
        """One line naming the bottleneck, with the number behind it."""
        if self.completed + self.failed == 0:
            return "no task has finished yet"
        elapsed = max(self.elapsed, 1e-9)
        idle = 1.0 - self.utilisation
        if self.input_wait / elapsed > 0.3:
            return (f"workers idle {100 * idle:.0f}% of the time, and the run waited "
                    f"{100 * self.input_wait / elapsed:.0f}% of it for input: the producer is the bottleneck")
        if self.consumer_time / elapsed > 0.3:
            return (f"the caller spent {100 * self.consumer_time / elapsed:.0f}% of the run on its own work "
                    "between results: the consumer is the bottleneck")
        if idle > 0.5 and self.mean_task < 1e-3:
            return (f"dispatch overhead is {100 * idle:.0f}% of runtime for tasks of {self.mean_task * 1e6:.1f} us "
                    f"in batches of {max(1, self.completed // max(1, self.batches))}: raise chunksize or let auto "
                    "batch (or run sequentially)")
        if self.crashed:
            return f"{self.crashed} worker crash(es) cost restarts and retries: see the WorkerCrashed errors"
        if self.failed and self.retried > self.completed:
            return f"retries ({self.retried}) outnumber successes: the tasks or their service are failing"
        if idle > 0.5 and self.workers > 1 and self.submitted < self.workers * 2:
            return (f"workers idle {100 * idle:.0f}% of the time: too few tasks ({self.submitted}) "
                    f"to keep {self.workers} workers busy")
        if idle > 0.5 and self.workers > 1:
            return (f"workers idle {100 * idle:.0f}% of the time: the tasks wait on something they share "
                    "(a lock, one server), or there are more workers than work")
        return (f"workers busy {100 * self.utilisation:.0f}% of the time: the tasks themselves are the "
                "bottleneck (more workers or faster tasks would help)")

    def summary(self) -> str:
        """A plain-text table of the numbers, ending with the diagnosis."""
        rows = [
            ("mode", f"{self.mode} x{self.workers}"),
            ("tasks", f"{self.completed} ok, {self.failed} failed, {self.retried} retried, {self.crashed} crashed"
                      + (f", {self.skipped} from the journal" if self.skipped else "")),
            ("elapsed", _fmt(self.elapsed)),
            ("task time", f"{_fmt(self.task_time)} (workers busy {100 * self.utilisation:.0f}%)"),
            ("task durations", ", ".join(f"{k} {_fmt(v)}" for k, v in self.percentiles.items()) or "-"),
            ("waiting for input", _fmt(self.input_wait)),
            ("caller's own work", _fmt(self.consumer_time)),
            ("dispatching", f"{_fmt(self.dispatch_time)} in {self.batches} batches (last size {self.chunksize})"),
        ]
        for worker in sorted(self.per_worker, key=lambda w: -self.per_worker[w])[:8]:
            rows.append((f"worker {worker}", f"{self.per_worker[worker]} tasks, busy {_fmt(self.busy.get(worker, 0))}, "
                                             f"idle {_fmt(self.idle(worker))}"))
        for index, item, seconds in self.slowest:
            rows.append(("slow task", f"#{index} {item}: {_fmt(seconds)}"))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        lines.append(f"diagnosis: {self.diagnosis}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ProgressUpdate:
    """What a progress callback receives after each finished batch.

    Attributes:
        done: tasks finished so far (with a value or an error).
        failed: of those, tasks that failed.
        total: how many tasks the run has, when known.
        elapsed: seconds since the run started.
        mode: the engine ("threads", "processes"...).
        workers: its worker (or concurrency) count.

    Example::

        def show(update: taskloom.ProgressUpdate) -> None:
            print(f"{update.done}/{update.total or '?'} done, {update.failed} failed")

        taskloom.map(work, items, progress=show)
    """

    done: int
    failed: int
    total: int | None
    elapsed: float
    mode: str
    workers: int


class Recorder:
    """Accumulates a run's numbers cheaply; one per run, used under the run's lock."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.completed = self.failed = self.retried = self.crashed = self.batches = self.skipped = 0
        self.task_time = self.input_wait = self.dispatch_time = self.consumer_time = 0.0
        self.per_worker: dict[str, int] = {}
        self.busy: dict[str, float] = {}
        self._samples: list[tuple[float, int]] = []  # (seconds per task, how many tasks)
        self._stride = 1
        self._seen = 0
        self._slowest: list[tuple[float, int, str]] = []  # min-heap of (seconds, index, item repr)

    def batch(self, worker: str, n: int, elapsed: float, durations: list[float] | None) -> None:
        self.task_time += elapsed
        self.per_worker[worker] = self.per_worker.get(worker, 0) + n
        self.busy[worker] = self.busy.get(worker, 0.0) + elapsed
        if durations is not None:
            for d in durations:
                self._sample(d, 1)
        elif n:
            self._sample(elapsed / n, n)

    def _sample(self, seconds: float, weight: int) -> None:
        self._seen += 1
        if self._seen % self._stride:
            return
        self._samples.append((seconds, weight * self._stride))
        if len(self._samples) >= MAX_SAMPLES:  # keep every other one, and from now on sample half
            self._samples = self._samples[::2]
            self._stride *= 2

    def task(self, index: int, item: object, seconds: float) -> None:
        """A task measured on its own (a batch of one, or per-item timing): a slowest candidate."""
        if len(self._slowest) < SLOWEST:
            heapq.heappush(self._slowest, (seconds, index, short_repr(item, 60)))
        elif seconds > self._slowest[0][0]:
            heapq.heapreplace(self._slowest, (seconds, index, short_repr(item, 60)))

    def percentiles(self) -> dict[str, float]:
        if not self._samples:
            return {}
        ordered = sorted(self._samples)
        total = sum(w for _, w in ordered)
        out: dict[str, float] = {}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            target, acc = q * total, 0
            for seconds, weight in ordered:
                acc += weight
                if acc >= target:
                    out[name] = seconds
                    break
        out["max"] = ordered[-1][0]
        return out

    def snapshot(self, *, mode: str, workers: int, submitted: int, chunksize: int) -> RunStatistics:
        slowest = tuple((i, r, s) for s, i, r in sorted(self._slowest, reverse=True))
        return RunStatistics(
            mode=mode, workers=workers, submitted=submitted, completed=self.completed, failed=self.failed,
            retried=self.retried, batches=self.batches, chunksize=chunksize,
            elapsed=time.perf_counter() - self.t0, task_time=self.task_time, crashed=self.crashed,
            input_wait=self.input_wait, dispatch_time=self.dispatch_time, consumer_time=self.consumer_time,
            per_worker=dict(self.per_worker),
            busy=dict(self.busy), percentiles=self.percentiles(), slowest=slowest, skipped=self.skipped,
        )


def _fmt(seconds: float, digits: int = 1) -> str:
    """Seconds in s, ms or us; ``digits`` decimals below a second."""
    if not math.isfinite(seconds):
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.{digits}f} ms"
    return f"{seconds * 1e6:.{digits}f} us"
