"""What a run gives back: one ``Outcome`` per item, and the run's ``RunStatistics``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ._errors import TaskError

__all__ = ["Outcome", "RunStatistics"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """How one item ended: its value, or the error that stopped it.

    Attributes:
        index: position of the item in the input.
        item: the item itself.
        value: what the function returned (None when it failed).
        error: a ``TaskError`` (or subclass) when it failed, else None.
        attempts: how many times it ran.
        duration: seconds the last attempt ran, measured where it ran.
    """

    index: int
    item: Any
    value: T | None
    error: TaskError | None
    attempts: int
    duration: float

    @property
    def ok(self) -> bool:
        """True when the task returned a value."""
        return self.error is None

    def result(self) -> T:
        """The value, or raise the error (with the original exception as its cause)."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


@dataclass(frozen=True)
class RunStatistics:
    """A snapshot of a run's counters.

    Attributes:
        mode: the engine that ran the tasks ("threads", "processes", ...).
        workers: the worker (or concurrency) count in use.
        submitted: items taken from the input so far.
        completed: items that ended with a value.
        failed: items that ended with an error.
        retried: extra runs caused by ``retries`` and crash retries.
        batches: batches dispatched (tiny tasks are batched to cut overhead).
        chunksize: the batch size used last.
        elapsed: seconds since the run started.
        task_time: seconds spent inside tasks, summed over workers.
        mean_task: mean seconds per task (0.0 before the first result).
        per_worker: tasks finished per worker (a pid, thread name or "caller").
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
    per_worker: dict[str, int] = field(default_factory=dict)

    @property
    def mean_task(self) -> float:
        done = self.completed + self.failed
        return self.task_time / done if done else 0.0

    @property
    def utilisation(self) -> float:
        """Busy fraction of the workers over the run (task time / (elapsed x workers))."""
        capacity = self.elapsed * max(1, self.workers)
        return min(1.0, self.task_time / capacity) if capacity > 0 else 0.0
