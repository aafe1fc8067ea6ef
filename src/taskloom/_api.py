"""``map``, ``imap`` and ``starmap``: the public front of ``open_run``.

They spell the options once (``RunOptions``, a ``TypedDict``), check them once (``Options``) and
open the run; no engine is named here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from ._callables import fn_name, star
from ._options import OnError, Options, RunOptions
from ._outcome import Outcome
from ._run._open import open_run
from ._run._run import Run

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["imap", "map", "starmap"]

T = TypeVar("T")
R = TypeVar("R")


@overload
def imap(fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, on_error: Literal["raise"] = ...,
         **options: Unpack[RunOptions]) -> Run[R]: ...
@overload
def imap(fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, on_error: Literal["collect"],
         **options: Unpack[RunOptions]) -> Run[Outcome[R]]: ...
@overload
def imap(fn: Callable[[T], R], items: Iterable[T], *, on_error: Literal["raise"] = ...,
         **options: Unpack[RunOptions]) -> Run[R]: ...
@overload
def imap(fn: Callable[[T], R], items: Iterable[T], *, on_error: Literal["collect"],
         **options: Unpack[RunOptions]) -> Run[Outcome[R]]: ...
def imap(fn: Callable[[T], Any], items: Iterable[T], *, on_error: OnError = "raise",
         **options: Unpack[RunOptions]) -> Run[Any]:
    """Apply ``fn`` to every item, lazily: a ``Run`` that yields results as they are ready.

    The input is consumed only as fast as workers take it (at most ``prefetch`` batches per
    worker in flight), so an endless generator is fine. Leaving the loop early cancels the rest.
    With ``mode="auto"`` and a plain function, the first tasks run here, in the caller's thread,
    while they are measured (their results are kept), so ``imap`` itself may take a moment to return.

    Example::

        run = taskloom.imap(parse, open("big.log"), ordered=False)
        for record in run:          # leaving the loop early stops the work
            ...
        print(run.statistics().summary(), run.advice)

    Args:
        fn: a function of one argument; an ``async def`` function runs on asyncio.
        items: any iterable; a sized one (list, range) lets batching plan ahead.
        on_error: "raise" (the default) - the first failure cancels the rest and raises
            ``TaskError``; "collect" - yield an ``Outcome`` for every item, failed or not.

    Keyword Args:
        mode: "auto" (measure and choose; the default), "sequential", "threads", "processes",
            "async", "dask", or a mode object such as ``taskloom.Processes(max_tasks_per_worker=100)``.
        workers: workers (threads, processes) or the concurrency cap (async). Default: the
            usable CPUs for processes, ``min(32, cpus + 4)`` for threads, 100 for async, the
            cluster's threads for dask, and what the measurement suggests for auto.
        chunksize: "auto" (the default) adapts batch sizes to measured task times; an int fixes
            them. With ``timeout`` or ``rate`` it must be 1 or "auto" (tasks then go one at a time).
        ordered: yield results in input order (True, the default) or as soon as each is ready.
        timeout: seconds one task may run (None, the default: no limit); past it the task fails
            with ``TaskTimeout``.
        retries: extra attempts for a task that raised one of ``retry_on`` (default 0).
        retry_on: the exception classes worth a retry (default: ``Exception``).
        rate: at most this many task starts per second (a number) or ``"100/s"``, ``"30/min"``,
            ``"500/h"``; retries count as starts. Tasks are then sent one at a time.
        backoff: seconds before the first retry; each further retry waits twice as long (capped
            at 30 s), times a random factor in [0.5, 1] so retries do not arrive in lockstep.
        prefetch: batches per worker kept in flight (default: 2; 1 for async and sequential).
        progress: True for a progress bar (a log line every few seconds when not on a terminal);
            a callable, called with a ``ProgressUpdate`` after each finished batch; or an object
            with ``update(n)`` such as a ``tqdm`` bar, advanced by finished tasks.
        journal: a file path: each item's outcome is appended to it as it ends (one JSON line),
            and a run started on an existing journal runs only the items it lacks, handing out
            the recorded ones in their place. A recorded result never runs again; an item that
            was running when the process died runs again. See the guide's "Long runs".
        key: a function of an item giving its identity in the journal (a JSON value unique to
            it), for an input whose order may change between runs; default: its position.
        rerun_failed: run again the items the journal records as failed (default: they come
            back as the errors they were).
        serializer: ``dumps(obj) -> bytes`` and ``loads(bytes) -> obj`` for journal values that
            are not plain JSON (default: ``pickle``; a journal is trusted input).

    Returns:
        A ``Run``: iterate it; ``.statistics()``, ``.advice`` and ``.cancel()`` describe and control it.
        It yields ``fn``'s results, or one ``Outcome`` per item with ``on_error="collect"``.

    Raises:
        ValueError, TypeError: a bad argument, before anything runs (also an ``async def`` function
            with a mode other than "async"/"auto", or a plain function with mode="async").
        TaskError: while iterating, with on_error="raise": the first task that failed (the original
            exception is its ``__cause__``), raised where it stands when ``ordered`` (every value
            before it is yielded first, none after it); ``TaskTimeout``, ``WorkerCrashed`` and
            ``SerializationError`` are its subclasses.
        SerializationError: the function cannot be sent to worker processes.
        JournalError: ``journal`` is in use by another run, or is not a journal (before anything
            runs); while iterating, an item whose ``key`` is not unique or not JSON.
    """
    return open_run(fn, items, Options.build(fn, "imap", on_error=on_error, **options))


@overload
def map(fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, on_error: Literal["raise"] = ...,
        **options: Unpack[RunOptions]) -> list[R]: ...
@overload
def map(fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, on_error: Literal["collect"],
        **options: Unpack[RunOptions]) -> list[Outcome[R]]: ...
@overload
def map(fn: Callable[[T], R], items: Iterable[T], *, on_error: Literal["raise"] = ...,
        **options: Unpack[RunOptions]) -> list[R]: ...
@overload
def map(fn: Callable[[T], R], items: Iterable[T], *, on_error: Literal["collect"],
        **options: Unpack[RunOptions]) -> list[Outcome[R]]: ...
def map(fn: Callable[[T], Any], items: Iterable[T], *, on_error: OnError = "raise",
        **options: Unpack[RunOptions]) -> list[Any]:
    """Apply ``fn`` to every item and return the results as a list: ``list(imap(...))``.

    Takes the same keyword options as ``imap`` (``mode``, ``workers``, ``timeout``, ``retries``,
    ``on_error``, ``progress``...; ``RunOptions`` lists them). The list is in input order unless ``ordered=False``.

    Example::

        squares = taskloom.map(square, range(10_000))
        pages = taskloom.map(fetch, urls, mode="threads", workers=64)
        outcomes = taskloom.map(risky, items, on_error="collect", retries=2, timeout=5.0)

    Returns:
        ``fn``'s results, or one ``Outcome`` per item with ``on_error="collect"``.

    Raises:
        ValueError, TypeError: a bad argument, before anything runs.
        TaskError: with on_error="raise" (the default), the first task that failed; the rest are
            cancelled and the original exception is its ``__cause__``.
    """
    return open_run(fn, items, Options.build(fn, "map", on_error=on_error, **options)).to_list()


@overload
def starmap(fn: Callable[..., Awaitable[R]], items: Iterable[Iterable[Any]], *, on_error: Literal["raise"] = ...,
            **options: Unpack[RunOptions]) -> list[R]: ...
@overload
def starmap(fn: Callable[..., Awaitable[R]], items: Iterable[Iterable[Any]], *, on_error: Literal["collect"],
            **options: Unpack[RunOptions]) -> list[Outcome[R]]: ...
@overload
def starmap(fn: Callable[..., R], items: Iterable[Iterable[Any]], *, on_error: Literal["raise"] = ...,
            **options: Unpack[RunOptions]) -> list[R]: ...
@overload
def starmap(fn: Callable[..., R], items: Iterable[Iterable[Any]], *, on_error: Literal["collect"],
            **options: Unpack[RunOptions]) -> list[Outcome[R]]: ...
def starmap(fn: Callable[..., Any], items: Iterable[Iterable[Any]], *, on_error: OnError = "raise",
            **options: Unpack[RunOptions]) -> list[Any]:
    """Like ``map``, with each item unpacked as the arguments: ``starmap(pow, [(2, 5), (3, 2)])`` is ``[32, 9]``.

    Takes the same keyword options as ``imap``; ``fn`` may be an ``async def`` function.

    Returns:
        ``fn(*item)`` for every item, as a list; with on_error="collect", one ``Outcome`` per item
        (its ``item`` is the argument tuple).

    Raises:
        ValueError, TypeError: a bad argument, before anything runs.
        TaskError: with on_error="raise" (the default), the first task that failed.
    """
    options_ = Options.build(fn, "starmap", on_error=on_error, **options)
    return open_run(star(fn), items, options_, name=fn_name(fn)).to_list()
