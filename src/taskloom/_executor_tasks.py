"""What ``taskloom.Executor`` sends to its workers: the call objects and the functions that run them.

Apart from ``_executor`` so that a worker process, which imports this module to run an Executor's
task, loads only this and ``_worker`` (not the scheduler, the pools or ``concurrent.futures.process``).
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures._base import CANCELLED, PENDING, RUNNING
from typing import Any

from ._backends._worker import dumps
from ._errors import short_repr

AnyFuture = Future[Any]


def call_repr(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``f(1, 'x', key=2)``, bounded: how a task is named in errors and statistics."""
    name = getattr(fn, "__qualname__", None) or short_repr(fn, 40)
    parts = [short_repr(a, 40) for a in args[:4]] + [f"{k}={short_repr(v, 30)}" for k, v in list(kwargs.items())[:3]]
    if len(args) > 4 or len(kwargs) > 3:
        parts.append("...")
    return f"{name}({', '.join(parts)})"


class Task:
    """A call run where the executor is (threads, asyncio, sequential, Dask), with its future.

    The future turns RUNNING when the call starts, not before (``start``).
    """

    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(self, future: AnyFuture | None, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return call_repr(self.fn, self.args, self.kwargs)

    def __reduce__(self) -> Any:  # to a Dask worker: without the future, which stays here
        return Task, (None, self.fn, self.args, self.kwargs)


class Pickled:
    """A call for a worker process: ``(fn, args, kwargs)`` pickled in ``submit``."""

    __slots__ = ("blob", "label")

    def __init__(self, blob: bytes, label: str = "") -> None:
        self.blob = blob
        self.label = label

    def __repr__(self) -> str:
        return self.label

    def __reduce__(self) -> Any:  # the label is for the parent's messages only
        return Pickled, (self.blob,)


#: what a thread task returns when its future was cancelled before it could start
SKIPPED: Any = type("_Skipped", (), {"__repr__": lambda self: "<cancelled before it started>"})()


def start(future: AnyFuture | None) -> bool:
    """Mark a local task's future RUNNING as it starts; False if it was cancelled meanwhile."""
    if future is None:
        return True
    with future._condition:
        if future._state == PENDING:
            return future.set_running_or_notify_cancel()
        if future._state == RUNNING:
            return True  # a retry: it was running already
    notify_cancelled(future)
    return False


def notify_cancelled(future: AnyFuture) -> None:
    """Tell ``wait()``/``as_completed()`` about a cancelled future (what the stdlib's worker does)."""
    with future._condition:
        if future._state == CANCELLED:
            future.set_running_or_notify_cancel()  # CANCELLED -> CANCELLED_AND_NOTIFIED; returns False


def call(task: Task) -> Any:
    if not start(task.future):
        return SKIPPED
    return task.fn(*task.args, **task.kwargs)


async def acall(task: Task) -> Any:
    if not start(task.future):
        return SKIPPED
    return await task.fn(*task.args, **task.kwargs)


def call_pickled(task: Pickled) -> bytes:
    """Runs in a worker process: unpickle the call, run it, pickle its result, all inside the task,
    so that an (un)pickling fault is this task's own error, of the type the stdlib gives."""
    try:
        fn, args, kwargs = pickle.loads(task.blob)
    except BaseException as exc:  # SystemExit too: a __reduce__ may call sys.exit()
        from concurrent.futures.process import BrokenProcessPool

        raise BrokenProcessPool(
            f"the task's function or arguments could not be unpickled in the worker process: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    result = fn(*args, **kwargs)
    del fn, args, kwargs
    try:
        return dumps(result)
    except BaseException as exc:
        add_note(exc, f"taskloom: the result ({type(result).__name__}) could not be pickled to send it back to "
                      "the parent process")
        raise


def process_chunk(fn: Callable[..., Any], chunk: tuple[tuple[Any, ...], ...]) -> list[Any]:
    """``Executor.map(chunksize=n)`` on processes: ``n`` calls as one task, as ProcessPoolExecutor does."""
    return [fn(*args) for args in chunk]


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)`` (Python 3.11+); on 3.10 the note is kept in ``__notes__`` all the same."""
    notes = getattr(exc, "__notes__", None)
    if notes is None:
        notes = []
        with contextlib.suppress(AttributeError, TypeError):  # a class that refuses new attributes
            exc.__notes__ = notes  # type: ignore[attr-defined]
    with contextlib.suppress(AttributeError):
        notes.append(note)
