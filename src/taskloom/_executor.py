"""``taskloom.Executor``: a real ``concurrent.futures.Executor`` on taskloom's engine.

Submitted calls go into an ``_Inbox`` (a ``PushSource``); one driver thread iterates a ``Run`` over
it (unordered, ``on_error="collect"``, one task per batch) and settles each future from its Outcome.
So retries, timeouts, crash handling and rate limits are the scheduler's, as for ``map``; the
Executor adapts the shape, and keeps the ``concurrent.futures`` contract (checked by CPython's own
``test_concurrent_futures``, see ``tests/test_cpython_futures.py``):

* A thread (or coroutine, or sequential) task's future turns RUNNING when the task really starts,
  in the worker, as ``ThreadPoolExecutor`` does: until then it can be cancelled. A process task's
  future turns RUNNING when it is handed to the pool (at most ``workers x 2`` of them), as the
  stdlib's call queue does.
* Process tasks are pickled in ``submit`` (``(fn, args, kwargs)`` in one go) and their results in
  the worker, inside the task: a pickling fault is then the task's own exception, of the type
  pickle raised (``PicklingError``, ``TypeError``...), with a note saying what could not be
  pickled. An unpickling fault is a ``BrokenProcessPool``, as in the stdlib, whose cause is
  taskloom's ``SerializationError``; the executor goes on.
* A pool that can run nothing (its initializer raised, or ``taskloom.shutdown()`` closed it) makes
  the executor broken: the futures raise ``BrokenProcessPool`` / ``BrokenThreadPool``, and so does
  every later ``submit``.
* Nothing of a finished task stays referenced by the executor (future, function, arguments,
  result): the driver holds no executor, and an executor that is dropped ends its driver after the
  work already submitted.
* At interpreter exit, before taskloom's pools are stopped, every executor's pending work is
  finished (the stdlib waits for it too), and ``submit`` raises ``RuntimeError`` from then on.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import itertools
import pickle
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures._base import CANCELLED, RUNNING
from concurrent.futures.process import BrokenProcessPool
from typing import Any, ParamSpec, TypeVar

from ._backends import _registry
from ._backends._mainpickle import dumps as dumps_for_worker
from ._errors import SerializationError, TaskError, short_repr
from ._executor_tasks import (
    SKIPPED,
    AnyFuture,
    Pickled,
    Task,
    acall,
    add_note,
    call,
    call_pickled,
    call_repr,
    notify_cancelled,
    process_chunk,
    start,
)
from ._modes import ModeLike
from ._options import Options
from ._outcome import Outcome
from ._run._open import open_run
from ._run._run import PushSource, Run
from ._stats import RunStatistics
from ._system import EXIT_NOTICE

__all__ = ["Executor"]

P = ParamSpec("P")
R = TypeVar("R")


# -- the call, pickled for a worker process --------------------------------------------------------
def _pickle_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Pickled | BaseException:
    """The call pickled for a worker process, or the exception pickle raised (with a note).

    Returned, not raised: a future holding it would otherwise hold the caller's frame through the
    traceback, and the frame the future (a cycle that only the garbage collector frees).
    """
    try:
        # What __main__ defines travels by value: a worker may have no copy of the script.
        return Pickled(dumps_for_worker((fn, args, kwargs)), call_repr(fn, args, kwargs))
    except Exception as exc:
        add_note(exc, f"taskloom: {call_repr(fn, args, kwargs)} could not be pickled to send it to a worker "
                      "process")
        return exc


def _failed(future: _Future, error: BaseException) -> _Future:
    future.set_exception(error)
    return future


def _unpickle_result(data: bytes) -> tuple[Any, BaseException | None]:
    """(value, None), or (None, what unpickling raised): returned, not raised, as in ``_pickle_call``."""
    try:
        return pickle.loads(data), None
    except BaseException as exc:  # SystemExit too: a __reduce__ may call sys.exit()
        return None, exc


def _chunks(iterables: tuple[Iterable[Any], ...], size: int) -> Iterator[tuple[tuple[Any, ...], ...]]:
    it = zip(*iterables, strict=False)  # as map(): the shortest iterable ends it
    while chunk := tuple(itertools.islice(it, size)):
        yield chunk


def _flatten(results: Iterator[list[Any]]) -> Iterator[Any]:
    for block in results:
        block.reverse()
        while block:
            yield block.pop()  # popped: the caller's result is not held here once handed out


# -- the inbox: submitted, taken, settled ----------------------------------------------------------------
class _Inbox(PushSource):
    """What an executor shares with its driver thread (never the executor itself)."""

    def __init__(self, *, start_on_take: bool, broken_type: type[concurrent.futures.BrokenExecutor]) -> None:
        self.lock = threading.Lock()
        self.waiting: collections.deque[tuple[_Future, Any]] = collections.deque()
        self.futures: dict[int, _Future] = {}  # handed to the run, not yet settled
        self.next_index = 0
        self.closed = False
        self.start_on_take = start_on_take  # processes, Dask: RUNNING once handed to the pool
        self.broken: str | None = None  # why the pool can run nothing (then every submit fails)
        self.broken_type = broken_type
        self.run: Run[Outcome[Any]] | None = None

    def take(self, n: int) -> list[Any] | None:
        with self.lock:
            if not self.waiting:
                return None if self.closed else []
            out: list[Any] = []
            while self.waiting and len(out) < n:
                future, task = self.waiting.popleft()
                if self.start_on_take:
                    if not start(future):
                        continue  # cancelled before it was handed out
                elif future.cancelled():
                    notify_cancelled(future)
                    continue
                index = self.next_index
                self.next_index += 1
                self.futures[index] = future
                if isinstance(future, _KillableFuture):
                    future.where = (self, index)
                out.append(task)
            if not out and not self.waiting and self.closed:
                return None
            return out

    def close(self) -> None:
        """No more tasks: the run ends once those handed out have ended."""
        with self.lock:
            self.closed = True
            run = self.run
        if run is not None:
            run.wake()

    def break_(self, reason: str, error: BaseException) -> None:
        """The pool can run nothing: fail what waits, refuse what comes (``submit`` checks ``broken``)."""
        with self.lock:
            if self.broken is None:
                self.broken = reason
            waiting = [future for future, _ in self.waiting]
            self.waiting.clear()
            self.closed = True
        for future in waiting:
            _set(future, error=error)

    def fail_handed_out(self, error: BaseException) -> None:
        """The run failed: what it had taken will not be settled by it."""
        with self.lock:
            futures = list(self.futures.values())
            self.futures.clear()
        for future in futures:
            _set(future, error=error)


def _set(future: AnyFuture, *, value: Any = None, error: BaseException | None = None) -> None:
    """Settle a future unless it was cancelled meanwhile (``cancel_running``), then only notify."""
    if future.cancelled():
        notify_cancelled(future)
        return
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def _settle(inbox: _Inbox, outcome: Outcome[Any]) -> None:
    with inbox.lock:
        future = inbox.futures.pop(outcome.index)
    error = outcome.error
    if error is None:
        value: Any = outcome.value
        if value is SKIPPED:
            notify_cancelled(future)
            return
        if isinstance(outcome.item, Pickled):
            value, fault = _unpickle_result(value)  # the bytes call_pickled returned
            if fault is not None:
                try:
                    _set(future, error=_unpickling_fault(outcome, fault))
                finally:
                    del future, fault  # this frame is in the fault's traceback chain: no cycle
                return
        _set(future, value=value)
        return
    if error._pool_broken and isinstance(error.__cause__, concurrent.futures.BrokenExecutor):
        inbox.break_(str(error.__cause__), error.__cause__)
    _set(future, error=_own_exception(error))


def _unpickling_fault(outcome: Outcome[Any], exc: BaseException) -> BaseException:
    """A result that cannot be unpickled here: ``BrokenProcessPool`` (the stdlib's word for it),
    caused by taskloom's ``SerializationError`` (caused by what pickle raised)."""
    message = f"task {outcome.index} ({outcome.item!r}): the result could not be unpickled in the parent process: " \
              f"{type(exc).__name__}: {exc}"
    detail = SerializationError(message, what="result", index=outcome.index, item_repr=short_repr(outcome.item),
                                attempts=outcome.attempts, stage="Executor.submit")
    detail.__cause__ = exc
    broken = BrokenProcessPool(message)
    broken.__cause__ = detail
    return broken


def _own_exception(error: TaskError) -> BaseException:
    """The task's own exception (its cause), as concurrent.futures users expect; for a pool that
    could run nothing, the stdlib's ``BrokenProcessPool``/``BrokenThreadPool``."""
    cause = error.__cause__
    if cause is not None and type(error) is TaskError:
        return cause
    return error


def _break(run: Run[Outcome[Any]], inbox: _Inbox, exc: BaseException) -> None:
    """The run failed (its pool was shut down under it, say): the executor can run nothing more."""
    run.cancel()
    broken = inbox.broken_type(f"the executor's pool failed: {type(exc).__name__}: {exc}")
    broken.__cause__ = exc
    inbox.break_(str(broken), broken)
    inbox.fail_handed_out(broken)


def _drive(run: Run[Outcome[Any]], inbox: _Inbox) -> None:
    """The driver thread: settle each future as its outcome comes. It holds no executor."""
    try:
        while True:
            try:
                outcome = next(run)
            except StopIteration:
                break
            _settle(inbox, outcome)
            del outcome  # nothing of a settled task stays referenced while we wait for the next
    except BaseException as exc:  # the run itself failed: the executor can run nothing more
        _break(run, inbox, exc)
    finally:
        with _live_lock:
            _live.pop(inbox, None)


# -- futures ---------------------------------------------------------------------------------------------
class _Future(concurrent.futures.Future[Any]):
    """The stdlib's Future, except that ``wait()`` and ``as_completed()`` learn of a cancel at once.

    (The stdlib tells them only when a worker reaches the cancelled task, which may be long after.)
    """

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        notify_cancelled(self)
        return True


class _KillableFuture(_Future):
    """``Executor(cancel_running=True)``: ``cancel()`` also stops a running process task."""

    def __init__(self) -> None:
        super().__init__()
        self.where: tuple[_Inbox, int] | None = None  # set when the task is handed to the pool

    def cancel(self) -> bool:
        with self._condition:
            where = self.where
            running = self._state == RUNNING and where is not None
            if running:
                self._state = CANCELLED
                self._condition.notify_all()
        if not running or where is None:
            return super().cancel()
        inbox, index = where
        run = inbox.run
        if run is not None:
            run._cancel_task(index)  # the pool kills the worker running it, and replaces it
        notify_cancelled(self)
        self._invoke_callbacks()  # type: ignore[attr-defined]
        return True


# -- interpreter exit ------------------------------------------------------------------------------------
_live_lock = threading.Lock()
_live: dict[_Inbox, threading.Thread] = {}  # executors whose driver runs
_exiting = False


def finish_pending_at_exit() -> None:
    """Finish every executor's pending work before the pools stop, as the stdlib does.

    Joins the ``before_exit`` phase of the shutdown registry when this module is imported, so the
    exit hook of ``_pools`` runs it first, while the pools still work. From here on
    ``submit`` raises RuntimeError. Not waited for: an exit on Ctrl-C, and a Ctrl-C during the wait
    stops it. Safe to call twice.
    """
    global _exiting
    _exiting = True
    with _live_lock:
        entries = list(_live.items())
    for inbox, _ in entries:
        inbox.close()
    if isinstance(getattr(sys, "last_value", None), KeyboardInterrupt):
        return
    deadline = time.monotonic() + EXIT_NOTICE
    for _, thread in entries:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [thread for _, thread in entries if thread.is_alive()]
    if not left:
        return
    print(f"taskloom: the program waits for the tasks of {len(left)} executor(s) still pending; "
          "press Ctrl-C to stop them", file=sys.stderr, flush=True)
    for thread in left:
        thread.join()


_registry.join("before_exit", finish_pending_at_exit)


# -- the executor ----------------------------------------------------------------------------------------
class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` on any taskloom engine except "auto".

    Code written for ``ThreadPoolExecutor`` or ``ProcessPoolExecutor`` keeps working (CPython's own
    ``test_concurrent_futures`` runs against it); docs/executor.md lists the few deliberate
    differences. Futures raise the task's own exception, with the worker's traceback as its
    ``__cause__``, as the stdlib's do; a task that timed out or lost its worker raises
    ``TaskTimeout`` or ``WorkerCrashed`` (a ``BrokenProcessPool``: the executor goes on). On
    processes, an argument or result that cannot be pickled raises what pickle raised (with a note
    saying which), and one that cannot be unpickled raises ``BrokenProcessPool``. A pool whose
    initializer raises makes the executor broken: its futures and every later ``submit`` raise
    ``BrokenProcessPool`` / ``BrokenThreadPool``. Each ``submit`` is one task that starts as soon
    as a worker is free; a thread task's future can be cancelled until it starts.

    The pools underneath are taskloom's warm pools: creating and shutting down an Executor is cheap,
    and ``taskloom.shutdown()`` stops the workers (an executor that used them is broken then). At
    interpreter exit, pending work is finished first, as the stdlib does. ``with`` calls
    ``shutdown(wait=True)`` at the end.

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
        cancel_running: processes only. True: ``future.cancel()`` also stops a task that is
            running (its worker is killed, and the pool starts another) and returns True, so
            ``asyncio.wait_for(loop.run_in_executor(ex, fn), 5)`` really stops the work. False
            (the default, the stdlib's behaviour): a running task cannot be cancelled.

    Raises:
        ValueError, TypeError: a bad argument (``mode="auto"`` included, or ``cancel_running``
            on another mode than processes), at construction.

    Example::

        with taskloom.Executor("processes", workers=4) as ex:
            futures = [ex.submit(work, i) for i in range(100)]
            for f in taskloom.as_completed(futures):
                print(f.result())
    """

    def __init__(self, mode: ModeLike, *, workers: int | None = None, timeout: float | None = None,
                 retries: int = 0, retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
                 backoff: float = 0.0, rate: float | str | None = None, progress: object = False,
                 cancel_running: bool = False) -> None:
        # Each submit is one task, started as soon as a worker is free (chunksize 1, unordered);
        # every task ends as an Outcome, which the driver turns into its future's result.
        options = Options.build(call, "Executor", mode=mode, workers=workers, chunksize=1, ordered=False,
                                timeout=timeout, retries=retries, retry_on=retry_on, rate=rate, backoff=backoff,
                                progress=progress, on_error="collect", allow_auto=False)
        engine = options.mode
        if not isinstance(cancel_running, bool):
            raise TypeError(f"cancel_running must be True or False, got {cancel_running!r}")
        if cancel_running and not engine.stops_running_tasks:
            raise ValueError(f"cancel_running=True needs mode 'processes' (only a process task can be stopped "
                             f"while it runs), got mode {engine.name!r}")
        self._options = options.replace(workers=engine.default_workers() if workers is None else workers)
        self._mode = engine
        self._pickled = engine.pickles_calls
        self._future_type: type[_Future] = _KillableFuture if cancel_running else _Future
        self._inbox = _Inbox(start_on_take=engine.marks_running_when_taken, broken_type=engine.broken_error())
        self._run: Run[Outcome[Any]] | None = None
        self._driver: threading.Thread | None = None
        self._shutdown = False
        self._start_lock = threading.Lock()
        # Dropped without shutdown(): the driver ends after the work already submitted.
        finalizer = weakref.finalize(self, self._inbox.close)
        finalizer.atexit = False  # at exit, finish_pending_at_exit does it (and waits)

    @property
    def _broken(self) -> str | bool:
        """False, or why the pool can run nothing (the stdlib's executors have this attribute too)."""
        return self._inbox.broken or False

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[R]:
        """Schedule ``fn(*args, **kwargs)``; return its Future.

        Raises:
            TypeError: ``fn`` is not callable.
            BrokenExecutor: the pool could not start (its initializer raised); a
                ``BrokenProcessPool`` or ``BrokenThreadPool``.
            RuntimeError: the executor was shut down, or the interpreter is exiting.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        self._check_open()
        task: Any
        if self._pickled:
            task = _pickle_call(fn, args, kwargs)
            if isinstance(task, BaseException):  # what the stdlib's future raises too, not submit()
                try:
                    return _failed(self._future_type(), task)
                finally:
                    # This frame is in the traceback's chain (f_back): it must hold neither the
                    # exception nor the future, or they keep each other alive.
                    del task
            future = self._future_type()
        else:
            future = self._future_type()
            task = Task(future, fn, args, kwargs)
        with self._inbox.lock:
            self._check_open()
            self._inbox.waiting.append((future, task))
        run = self._ensure_running()
        try:
            run._fill_now()  # to a free worker now, as the stdlib's submit does
        except Exception as exc:  # the pool refused it (taskloom.shutdown() closed it)
            _break(run, self._inbox, exc)
            raise self._inbox.broken_type(self._inbox.broken or str(exc)) from exc
        run.wake()
        return future

    def _check_open(self) -> None:
        inbox = self._inbox
        if inbox.broken is not None:
            raise inbox.broken_type(inbox.broken)
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def map(self, fn: Callable[..., R], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[R]:
        """``fn(*args)`` for each args of ``zip(*iterables)``, submitted now; results in order.

        As ``concurrent.futures.Executor.map``: the iterator raises a task's exception when it
        reaches it, and ``TimeoutError`` when a result is not there ``timeout`` seconds after the
        call. On processes, ``chunksize`` calls travel as one task (as ``ProcessPoolExecutor``);
        other engines ignore it.

        Raises:
            ValueError: ``chunksize`` is less than 1.
        """
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be >= 1, got {chunksize!r}")
        if chunksize == 1 or not self._pickled:
            return super().map(fn, *iterables, timeout=timeout)
        blocks = super().map(functools.partial(process_chunk, fn), _chunks(iterables, chunksize), timeout=timeout)
        return _flatten(blocks)

    def statistics(self) -> RunStatistics | None:
        """The counters of the run behind this executor (None before the first submit)."""
        return self._run.statistics() if self._run is not None else None

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks; optionally cancel those not started; optionally wait for the rest.

        Args:
            wait: block until every task already started or queued has ended (default True).
            cancel_futures: cancel the futures of the tasks that have not started (default False),
                except those an idle worker would have taken already, as in ``ThreadPoolExecutor``.
        """
        inbox = self._inbox
        doomed: list[_Future] = []
        with inbox.lock:
            self._shutdown = True
            inbox.closed = True
            if cancel_futures:
                # As in ThreadPoolExecutor, whose idle workers have taken the first queued tasks by
                # the time shutdown() runs, a task an idle worker would start is not cancelled:
                # the first ``idle`` of the tasks not started go on (handed out first, then
                # waiting, in submission order). The driver may simply not have been scheduled
                # yet to hand them over (a busy machine): that must not cancel work that had a
                # free worker.
                handed_out = list(inbox.futures.values())
                idle = max(0, (self._options.workers or 1) - sum(1 for f in handed_out if f.running()))
                pending = [f for f in handed_out if not f.running()] + [f for f, _ in inbox.waiting]
                doomed = pending[idle:]
                kept = {id(f) for f in pending[:idle]}
                inbox.waiting = collections.deque(entry for entry in inbox.waiting if id(entry[0]) in kept)
        # Only what has not started (a running task goes on, even with cancel_running).
        for future in doomed:
            _Future.cancel(future)
        run = self._run
        if run is not None:
            run.wake()
        if wait and self._driver is not None:
            self._driver.join()

    # -- driver ---------------------------------------------------------------------------------
    def _ensure_running(self) -> Run[Outcome[Any]]:
        with self._start_lock:
            if self._run is None:
                runs_coroutines = self._mode.runs == "coroutines"
                fn = call_pickled if self._pickled else acall if runs_coroutines else call
                run: Run[Outcome[Any]] = open_run(fn, self._inbox, self._options, name="Executor.submit")
                with self._inbox.lock:
                    self._inbox.run = run
                driver = threading.Thread(target=_drive, args=(run, self._inbox), name="taskloom-executor",
                                          daemon=True)
                with _live_lock:
                    _live[self._inbox] = driver
                self._run, self._driver = run, driver
                driver.start()
            return self._run

