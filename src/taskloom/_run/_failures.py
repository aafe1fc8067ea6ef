"""What a failure becomes, and how it is described: pure functions of what happened.

Two kinds, both taking plain data and importing nothing of the run:

* **Decisions** (``after_error``, ``after_lost``, ``lost_item``, ``ran_late``, ``worker_died``):
  what a task that raised, timed out or was lost with its batch becomes — ``Split`` (run each item
  alone), ``Retry``, ``Fail`` with its final error, or ``FailRun`` — and what it counts in the
  statistics. The run acts on the answer (submits, defers, records, halts).
* **Errors** (``task_error``, ``timeout_error``, ``crash_error``, ...): *what* a failure is, which
  task, which item, how often it ran, and why, in words a newcomer can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._backends._base import Done, ItemError, Lost
from .._errors import RemoteTraceback, SerializationError, TaskError, TaskTimeout, short_repr

if TYPE_CHECKING:
    from .._errors_process import WorkerCrashed
    from .._modes import Mode
    from ._policy import RetryPolicy


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


# -- decisions: what a failure becomes ----------------------------------------------------------------------
@dataclass(frozen=True)
class Retry:
    """Run the item again, as its attempt number ``attempt`` (counted in ``RunStatistics.retried``).

    ``wait``: it waits out the retry backoff (a task that raised or ran past its deadline); a task
    whose worker died goes again without backoff. Every retry takes a start under the rate limit.
    """

    attempt: int
    wait: bool = True


@dataclass(frozen=True)
class Fail:
    """The item ends with ``error``, for good (counted in ``RunStatistics.failed``)."""

    error: TaskError


@dataclass(frozen=True)
class Split:
    """Send each item of the lost batch again on its own, no attempt counted: the culprit is unknown."""


@dataclass(frozen=True)
class FailRun:
    """Nothing of the run can run (its function cannot be unpickled): the run fails with ``error``."""

    error: SerializationError


def after_error(at: At, error: ItemError | TaskError, policy: RetryPolicy) -> Retry | Fail:
    """A task raised (``ItemError``) or ran past its deadline (a ``TaskTimeout``) on run ``at.attempts``.

    It goes again while ``retries`` and ``retry_on`` allow (never for what could not be pickled);
    else it ends with a ``TaskError`` whose cause is the task's own exception.
    """
    original = error.exception if isinstance(error, ItemError) else error
    if policy.retries_error(original, at.attempts, never=SerializationError):
        return Retry(at.attempts + 1)
    return Fail(error if isinstance(error, TaskError) else task_error(at, error))


def ran_late(event: Done, timeout: float | None) -> bool:
    """A timed task's result came after its deadline, or the engine could not stop it (sequential).

    Only a batch of one item that ended without an error is judged: a timed batch holds one item.
    """
    return timeout is not None and len(event.values) == 1 and event.elapsed > timeout and not event.errors


def worker_died(event: Lost) -> bool:
    """Whether a lost batch counts in ``RunStatistics.crashed``: every worker death does, split or not."""
    return event.reason == "crash"


def after_lost(event: Lost, size: int, name: str) -> Split | FailRun | None:
    """A batch of ``size`` items produced no results: what becomes of it as a whole.

    Several items lost to a crash or a pickling failure of the whole batch: ``Split`` (one of them
    did it, no one knows which). The function could not be unpickled: ``FailRun``. Else None: each
    item is decided on its own by ``lost_item``.
    """
    if event.reason in ("split", "crash") and size > 1:
        return Split()
    if event.reason == "function":
        return FailRun(function_error(name, event.detail))
    return None


def lost_item(at: At, event: Lost, crashes: list[tuple[int, int | None]], policy: RetryPolicy,
              engine: Mode) -> Retry | Fail:
    """One item of a lost batch that ``after_lost`` did not split.

    ``crashes``: each death of a worker under this item, ``(pid, exit code)``, this one included.
    A crash goes again while the engine's crash retries allow, then ends as ``WorkerCrashed``; an
    argument or result that cannot be pickled ends as ``SerializationError``, never retried; a
    broken pool ends every item with a ``TaskError`` caused by the stdlib's broken-pool error.
    """
    if event.reason == "crash":
        if policy.retries_crash(len(crashes)):
            return Retry(at.attempts + 1, wait=False)
        return Fail(crash_error(at, event.detail, crashes))
    if event.reason in ("item", "result"):
        return Fail(pickling_error(at, event))
    return Fail(not_run_error(at, event.detail, engine))


# -- errors: what the user gets ----------------------------------------------------------------------------
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
