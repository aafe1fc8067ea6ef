"""How a failed item is described: pure functions from what happened to the error the user gets.

The run decides *whether* an item failed (retries, crash retries, deadlines); these functions
only say *what* it is: which task, which item, how often it ran, and why, in words a newcomer
can act on. They import nothing of the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._backends._base import ItemError, Lost
from .._errors import RemoteTraceback, SerializationError, TaskError, TaskTimeout, short_repr

if TYPE_CHECKING:
    from .._errors_process import WorkerCrashed
    from .._modes import Mode


@dataclass(frozen=True)
class At:
    """Where a failure happened: the run's name (the function or stage), the input position, the item."""

    name: str
    index: int
    item: Any
    attempts: int

    @property
    def item_repr(self) -> str:
        return short_repr(self.item)

    def fields(self) -> dict[str, Any]:
        """The keyword arguments every ``TaskError`` takes."""
        return {"index": self.index, "item_repr": self.item_repr, "attempts": self.attempts, "stage": self.name}


def task_error(at: At, error: ItemError) -> TaskError:
    """The ``TaskError`` for a task that raised (the original exception is its ``__cause__``)."""
    exc = error.exception
    if isinstance(exc, TaskError):
        # Raised by taskloom itself where the task ran (a result that could not be pickled):
        # it is the error, with this run's coordinates filled in.
        exc.args = (f"task {at.index} ({at.name}) on item {at.item_repr}: {exc}",)
        exc.index, exc.item_repr, exc.attempts, exc.stage = at.index, at.item_repr, at.attempts, at.name
        return exc
    tries = f" after {at.attempts} attempts" if at.attempts > 1 else ""
    remote_tb = error.traceback if error.remote else None
    if remote_tb:
        # As concurrent.futures does: the worker's traceback hangs under the exception.
        exc.__cause__ = RemoteTraceback(remote_tb)
    err = TaskError(
        f"task {at.index} ({at.name}) failed{tries} on item {at.item_repr}: {type(exc).__name__}: {exc}",
        remote_traceback=remote_tb, **at.fields(),
    )
    err.__cause__ = exc
    return err


def timeout_error(at: At, timeout: float, engine: Mode) -> TaskTimeout:
    """A task ran past ``timeout``; the engine says what became of it."""
    return TaskTimeout(
        f"task {at.index} ({at.name}) on item {at.item_repr} ran past its timeout of {timeout:g} s: "
        f"{engine.timeout_text}",
        timeout=timeout, **at.fields(),
    )


def crash_error(at: At, detail: str, history: list[tuple[int, int | None]]) -> WorkerCrashed:
    """A task's worker died under it, ``len(history)`` times: (pid, exit code) for each."""
    from .._errors_process import WorkerCrashed  # also a BrokenProcessPool: imported when needed

    runs = "; ".join(f"pid {pid}: {exit_text(code)}" if pid else "a remote worker" for pid, code in history)
    return WorkerCrashed(
        f"task {at.index} ({at.name}) on item {at.item_repr} crashed its worker {len(history)} time(s) "
        f"({runs}). {detail}",
        history=history, **at.fields(),
    )


def pickling_error(at: At, event: Lost) -> SerializationError:
    """An item's argument (``event.reason == "item"``) or result could not cross to or from the worker."""
    what = "argument" if event.reason == "item" else "result"
    detail = event.detail.removeprefix(f"the {event.reason} ")  # not "the result the result"
    return SerializationError(f"task {at.index} of {at.name}: the {what} {detail}", what=event.reason,
                              **at.fields())


def function_error(name: str, detail: str) -> SerializationError:
    """The run's function could not be unpickled where it runs."""
    return SerializationError(
        f"the function {name} could not be unpickled in a worker process: {detail}. "
        "Is its module importable there (not defined in an interactive session or a notebook "
        "cell that the worker cannot import)?",
        what="function",
    )


def not_run_error(at: At, detail: str, engine: Mode) -> TaskError:
    """The engine could run nothing (its pool is broken); the cause is the stdlib's word for it."""
    err = TaskError(f"task {at.index} of {at.name} could not run: {detail}", **at.fields())
    err.__cause__ = engine.broken_error()(detail)  # what an Executor's future raises
    err._pool_broken = True
    return err


def cancelled_error(at: At) -> TaskError:
    """A running task stopped on request (``Executor(cancel_running=True)``)."""
    return TaskError(f"task {at.index} ({at.name}) was cancelled while it ran", **at.fields())


def exit_text(code: int | None) -> str:
    """``exit code 3``, ``killed by SIGKILL``: a worker's end in words."""
    if code is None:
        return "unknown exit"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
