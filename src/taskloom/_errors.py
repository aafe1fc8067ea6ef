"""The one exception hierarchy of taskloom.

Every class here pickles (each keeps the arguments it was built with in ``args`` and rebuilds
from them), so an error raised in a worker process or on a cluster arrives whole in the parent.

::

    TaskloomError(Exception)
    ├── TaskError                 a task failed; the original exception is the __cause__
    │   ├── TaskTimeout           ran past its timeout (also a TimeoutError)
    │   ├── WorkerCrashed         the worker running it died (also a concurrent.futures BrokenProcessPool)
    │   └── SerializationError    the function, an item or a result could not be (un)pickled
    ├── JournalError              a run's journal= file is in use by another run, or broken
    ├── LockOrderError            (also a RuntimeError)
    └── DeadlockError             (also a RuntimeError)
"""

from __future__ import annotations

import reprlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._errors_process import WorkerCrashed as WorkerCrashed

__all__ = [
    "DeadlockError",
    "JournalError",
    "LockOrderError",
    "RemoteTraceback",
    "SerializationError",
    "TaskError",
    "TaskTimeout",
    "TaskloomError",
    "WorkerCrashed",
]


class TaskloomError(Exception):
    """Base class of every error taskloom raises itself.

    Bad arguments are not among them: they raise ``ValueError`` or ``TypeError``, before any
    worker starts.
    """


class RemoteTraceback(Exception):
    """Carries the formatted traceback of an exception raised in another process.

    It is set as the ``__cause__`` of an exception that crossed a process boundary, so the
    worker's traceback is printed under the caller's, the way ``concurrent.futures`` does it.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class TaskError(TaskloomError):
    """A task failed.

    Raised by ``map``/``imap`` with ``on_error="raise"`` (the first failure), and found in
    ``Outcome.error`` with ``on_error="collect"``.

    Attributes:
        index: position of the item in the input (0-based).
        item_repr: a short ``repr`` of the item.
        attempts: how many times the task ran (1 + retries used).
        remote_traceback: the worker's formatted traceback, when the task ran elsewhere.
        stage: the pipeline stage or function name the task belonged to.

    The original exception, when there is one, is ``__cause__``.

    Example::

        try:
            taskloom.map(parse, lines)
        except taskloom.TaskError as exc:
            print(exc.index, exc.item_repr, repr(exc.__cause__))
    """

    #: set by the run on the error of a task whose pool could run nothing (its initializer raised,
    #: or it was shut down): an Executor becomes broken then. Not carried by pickling.
    _pool_broken = False

    def __init__(
        self,
        message: str,
        *,
        index: int | None = None,
        item_repr: str | None = None,
        attempts: int = 1,
        remote_traceback: str | None = None,
        stage: str | None = None,
    ) -> None:
        super().__init__(message)
        self.index = index
        self.item_repr = item_repr
        self.attempts = attempts
        self.remote_traceback = remote_traceback
        self.stage = stage

    def _kwargs(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "item_repr": self.item_repr,
            "attempts": self.attempts,
            "remote_traceback": self.remote_traceback,
            "stage": self.stage,
        }

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.args, self._kwargs(), self.__cause__))


class TaskTimeout(TaskError, TimeoutError):
    """A task ran past its ``timeout``.

    On processes the worker that ran it was terminated and replaced; on threads the thread could
    not be stopped and runs on (its result is dropped); on asyncio the task was cancelled; in
    sequential mode the task ran to its end first. It is also a ``TimeoutError``, and a retry
    (``retries=``) is tried for it when ``retry_on`` covers it (the default, ``Exception``, does).

    Attributes:
        timeout: the limit it ran past, in seconds.
    """

    def __init__(self, message: str, *, timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.timeout = timeout

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "timeout": self.timeout}


class SerializationError(TaskError):
    """The function, an item or a result could not be pickled or unpickled.

    For the function, it is raised before any task runs; for an item or a result, only that task
    fails. A result over ``Processes(max_result_size=...)`` fails the same way.

    Attributes:
        what: ``"function"``, ``"item"`` or ``"result"``.
    """

    def __init__(self, message: str, *, what: str = "item", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.what = what

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "what": self.what}


class JournalError(TaskloomError):
    """A run's ``journal=`` file cannot be used: another run holds it, or it is not a journal.

    Raised before anything runs (or, for an item whose ``key=`` is not unique or not JSON, by the
    run as an error of its input). The message names the file, the line or the item, and what to do.
    """


class LockOrderError(TaskloomError, RuntimeError):
    """Locks were taken against their declared order (see ``OrderedLock``).

    Raised in the thread that takes a lock while holding a later one, at that moment, whether or
    not another thread is there to deadlock with it. The message names both locks and where the
    held one was taken.
    """


class DeadlockError(TaskloomError, RuntimeError):
    """Threads wait on each other in a cycle, or a wait lasted too long (see ``deadlock_watch``).

    The message holds the stack of every thread in the cycle (or of every thread, after a
    timeout). Also raised when a thread takes a non-reentrant ``OrderedLock`` it already holds.
    """


def _rebuild(
    cls: type[TaskError], args: tuple[Any, ...], kwargs: dict[str, Any], cause: BaseException | None
) -> TaskError:
    err = cls(*args, **kwargs)
    err.__cause__ = cause
    return err


class _BoundedRepr(reprlib.Repr):
    """``reprlib`` with bytes-like objects sliced *before* their repr (reprlib has no handler
    for them and would ``repr()`` the whole buffer, then cut it)."""

    def _bytes(self, x: bytes | bytearray | memoryview, level: int) -> str:
        if len(x) <= self.maxstring:
            return repr(x)
        return f"{bytes(x[: self.maxstring])!r}...({len(x):,} bytes)"

    repr_bytes = repr_bytearray = repr_memoryview = _bytes

    def repr_ndarray(self, x: Any, level: int) -> str:
        """A numpy array by its first values, shape and dtype: numpy's own repr of a large array
        formats it whole first (~0.5 ms for 40 MB, taken for each of a run's slowest items)."""
        try:
            size, shape, dtype = int(x.size), tuple(x.shape), x.dtype
        except Exception:  # not numpy's, only named like it
            return reprlib.Repr.repr_instance(self, x, level)
        if size <= 6:
            return repr(x)
        head = ", ".join(f"{v:.4g}" if isinstance(v, float) else repr(v) for v in x.reshape(-1)[:3].tolist())
        return f"array([{head}, ...], shape={shape}, dtype={dtype})"


_REPR = _BoundedRepr()
_REPR.maxstring = _REPR.maxother = 120
_REPR.maxlong = 60


def short_repr(obj: object, limit: int = 80) -> str:
    """``repr(obj)`` cut to ``limit`` characters; never raises, and cheap for large items.

    ``reprlib`` bounds strings, bytes and containers while it builds the text: a plain ``repr``
    of a 4 MB bytes object is a 16 MB string and ~20 ms holding the GIL (measured: it made thread
    tasks of 2 ms take 25 ms while the scheduler noted the slowest items).
    """
    try:
        text = _REPR.repr(obj)
    except Exception as exc:  # a broken __repr__ must not hide the real error
        text = f"<{type(obj).__name__} object; repr() failed: {exc!r}>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def __getattr__(name: str) -> Any:
    # WorkerCrashed is also a concurrent.futures BrokenProcessPool: defined on first use, so that
    # `import taskloom` does not import concurrent.futures.process (and multiprocessing.connection).
    if name == "WorkerCrashed":
        from ._errors_process import WorkerCrashed

        return WorkerCrashed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Raised long before anyone looks them up on the package: they say taskloom.TaskError from the start
# (and pickle by that name, which the package resolves on first use).
for _cls in (TaskloomError, TaskError, TaskTimeout, SerializationError, JournalError, LockOrderError, DeadlockError):
    _cls.__module__ = "taskloom"
del _cls
