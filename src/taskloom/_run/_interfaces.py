"""What a run takes from the rest of taskloom: its input, progress, and auto mode's second look.

* ``PushSource``: input that other threads push into (``Executor``, a pipeline stage's queue);
* ``Listener``: a progress display, told of finished tasks;
* ``Watcher`` and ``Switch``: auto mode watches the run and may move the rest to another engine
  (``_workload.Reconsider`` is the one watcher);
* ``Wake``: put in a run's sink to wake its consumer.

``_run.py`` re-exports the first four: import them from there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .._backends._base import Backend, CpuTime
    from .._modes import Mode


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

    def observe(self, per_task: float, cpu: CpuTime | None, tasks_done: int,
                remaining: int | None) -> Switch | None:
        """A batch finished, its tasks took ``per_task`` s each; a ``Switch``, or None to stay.

        ``cpu``: where a task's time went, per task, where the engine measured it (``Done.cpu``).
        """
        ...

    @property
    def finished(self) -> bool:
        """True once it will never switch again (the run stops asking)."""
        ...

    @property
    def measure_from(self) -> int:
        """Tasks ended after which the run's batches measure where their time went (``cpu``)."""
        ...


class Wake:
    """Put in a run's sink to wake its consumer (cancel or submit from another thread)."""


class PushSource(Iterator[Any]):
    """Input that other threads push into (the Executor): ``take`` never blocks."""

    def take(self, n: int) -> list[Any] | None:
        """Up to ``n`` items; [] when none are waiting; None when closed and empty."""
        raise NotImplementedError

    def __next__(self) -> Any:  # pragma: no cover - the scheduler uses take()
        raise TypeError("a PushSource is read with take()")
