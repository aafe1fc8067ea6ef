"""``WorkerCrashed``, apart from ``_errors`` because it is also the stdlib's ``BrokenProcessPool``.

Importing ``concurrent.futures.process`` costs multiprocessing's connection and queue modules: a
program that never sees a crash (or never uses processes) does not pay for it. ``_errors`` hands
this class out on first use (``taskloom.WorkerCrashed`` and ``taskloom._errors.WorkerCrashed``).
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ._errors import TaskError

__all__ = ["WorkerCrashed"]


class WorkerCrashed(TaskError, BrokenProcessPool):
    """The worker process running the task died (a signal, ``os._exit``, the OOM killer...).

    The task was first run again on a fresh worker ``Processes(crash_retries=...)`` times (1 by
    default); the other tasks of the run are not affected. It is also a
    ``concurrent.futures.process.BrokenProcessPool`` (so a ``RuntimeError``), so code written for
    ``ProcessPoolExecutor`` catches it; unlike the stdlib's pool, taskloom's goes on: only this
    task failed, and an Executor stays usable.

    Attributes:
        history: one ``(pid, exitcode)`` per attempt; a negative exitcode is ``-signal``.
    """

    def __init__(
        self, message: str, *, history: list[tuple[int, int | None]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.history = list(history or [])

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "history": self.history}


WorkerCrashed.__module__ = "taskloom"
