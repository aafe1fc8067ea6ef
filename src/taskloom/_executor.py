"""``taskloom.Executor``: a real ``concurrent.futures.Executor`` on taskloom's engine.

Submitted calls go into a ``PushSource``; one driver thread iterates a ``Run`` over it (unordered,
``on_error="collect"``) and settles each future from its Outcome. So retries, timeouts, crash
handling and batching are the scheduler's, as for ``map``; the Executor only adapts the shape.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from ._api import parse_rate, validate
from ._errors import TaskError
from ._modes import Async, ModeLike, Processes, Threads, parse_mode
from ._outcome import Outcome
from ._pools import get_backend
from ._progress import make_listener
from ._scheduler import PushSource, Run
from ._stats import RunStatistics

__all__ = ["Executor"]

P = ParamSpec("P")
R = TypeVar("R")


def _call(task: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]) -> Any:
    fn, args, kwargs = task
    return fn(*args, **kwargs)


async def _acall(task: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]) -> Any:
    fn, args, kwargs = task
    return await fn(*args, **kwargs)


class _Inbox(PushSource):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: collections.deque[tuple[concurrent.futures.Future[Any], Any]] = collections.deque()
        self.futures: dict[int, concurrent.futures.Future[Any]] = {}
        self.next_index = 0
        self.closed = False

    def take(self, n: int) -> list[Any] | None:
        with self.lock:
            if not self.waiting:
                return None if self.closed else []
            out: list[Any] = []
            while self.waiting and len(out) < n:
                future, task = self.waiting.popleft()
                if not future.set_running_or_notify_cancel():
                    continue  # cancelled before it started
                self.futures[self.next_index] = future
                self.next_index += 1
                out.append(task)
            if not out and not self.waiting and self.closed:
                return None
            return out


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` on any taskloom engine except "auto".

    Futures raise the task's own exception, with the worker's traceback as its ``__cause__``,
    as the stdlib's do; a task that timed out, lost its worker or could not be pickled raises
    ``TaskTimeout``, ``WorkerCrashed`` or ``SerializationError``. The pools underneath are
    taskloom's warm pools: creating and shutting down an Executor is cheap, and
    ``taskloom.shutdown()`` stops the workers. ``map()`` and ``with`` come from
    ``concurrent.futures.Executor``; ``with`` calls ``shutdown(wait=True)`` at the end.

    Args:
        mode: "threads", "processes", "async" (``submit`` then takes ``async def`` functions),
            "sequential", "dask", or a mode object.
        workers: worker count (or concurrency cap for async). Default: the mode's own default,
            as for ``taskloom.map``.
        timeout: seconds one task may run (it then fails with ``TaskTimeout``); None: no limit.
        retries: extra attempts for a task that raised one of ``retry_on`` (default 0).
        retry_on: the exception classes worth a retry (default: any ``Exception``).
        backoff: seconds before the first retry, doubled for each next one (with jitter).
        rate: at most this many task starts per second (a number) or ``"100/s"``, ``"30/min"``.
        progress: as for ``map``: True for a bar of finished tasks, a callback, or a tqdm-like object.

    Raises:
        ValueError, TypeError: a bad argument (``mode="auto"`` included), at construction.

    Example::

        with taskloom.Executor("processes", workers=4) as ex:
            futures = [ex.submit(work, i) for i in range(100)]
            for f in taskloom.as_completed(futures):
                print(f.result())
    """

    def __init__(self, mode: ModeLike, *, workers: int | None = None, timeout: float | None = None,
                 retries: int = 0, retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
                 backoff: float = 0.0, rate: float | str | None = None, progress: object = False) -> None:
        parsed = parse_mode(mode, allow_auto=False)
        self._chunksize, self._retry_on = validate(
            _call, workers=workers, chunksize="auto", timeout=timeout, retries=retries, retry_on=retry_on,
            on_error="collect", prefetch=None, ordered=False, rate=rate, backoff=backoff, progress=progress)
        self._progress = progress
        self._mode = parsed
        self._workers = workers if workers is not None else parsed.default_workers()
        self._timeout = timeout
        self._retries = retries
        self._backoff = float(backoff)
        self._rate = parse_rate(rate)
        self._inbox = _Inbox()
        self._run: Run[Outcome[Any]] | None = None
        self._driver: threading.Thread | None = None
        self._shutdown = False
        self._start_lock = threading.Lock()

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[R]:
        """Schedule ``fn(*args, **kwargs)``; return its Future.

        Raises:
            TypeError: ``fn`` is not callable.
            RuntimeError: the executor was shut down.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        with self._inbox.lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._inbox.waiting.append((future, (fn, args, kwargs)))
        self._ensure_running().wake()
        return future

    def statistics(self) -> RunStatistics | None:
        """The counters of the run behind this executor (None before the first submit)."""
        return self._run.statistics() if self._run is not None else None

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks; optionally cancel those not started; optionally wait for the rest.

        Args:
            wait: block until every task already started or queued has ended (default True).
            cancel_futures: cancel the futures of tasks not yet handed to a worker (default False).
        """
        with self._inbox.lock:
            self._shutdown = True
            self._inbox.closed = True
            if cancel_futures:
                while self._inbox.waiting:
                    future, _ = self._inbox.waiting.popleft()
                    future.cancel()
        run = self._run
        if run is not None:
            run.wake()
        if wait and self._driver is not None:
            self._driver.join()

    # -- driver ---------------------------------------------------------------------------------
    def _ensure_running(self) -> Run[Outcome[Any]]:
        with self._start_lock:
            if self._run is None:
                is_async = isinstance(self._mode, Async)
                self._run = Run(
                    _acall if is_async else _call,
                    self._inbox,
                    backend=get_backend(self._mode, self._workers),
                    name="Executor.submit",
                    chunksize=1 if is_async else self._chunksize,  # validate(): 1 with a timeout
                    ordered=False,
                    timeout=self._timeout,
                    retries=self._retries,
                    retry_on=self._retry_on,
                    backoff=self._backoff,
                    rate=self._rate,
                    on_error="collect",
                    prefetch=None,
                    crash_retries=self._mode.crash_retries if isinstance(self._mode, Processes) else 0,
                    context=_context() if isinstance(self._mode, Threads | Async) else None,
                    listener=make_listener(self._progress, "Executor", self._mode.name, self._workers, None),
                )
                self._driver = threading.Thread(target=self._drive, name="taskloom-executor", daemon=True)
                self._driver.start()
            return self._run

    def _drive(self) -> None:
        run = self._run
        assert run is not None
        inbox = self._inbox
        try:
            for outcome in run:
                with inbox.lock:
                    future = inbox.futures.pop(outcome.index)
                if outcome.error is None:
                    future.set_result(outcome.value)
                else:
                    future.set_exception(_own_exception(outcome.error))
        except BaseException as exc:  # the run itself failed: no future may be left hanging
            with inbox.lock:
                pending = list(inbox.futures.values()) + [f for f, _ in inbox.waiting]
                inbox.futures.clear()
                inbox.waiting.clear()
            for future in pending:
                if not future.done():
                    future.set_exception(exc)


def _own_exception(error: TaskError) -> BaseException:
    """The task's own exception (its cause), as concurrent.futures users expect."""
    cause = error.__cause__
    if cause is not None and type(error) is TaskError:
        return cause
    return error


def _context() -> Any:
    import contextvars

    return contextvars.copy_context()
