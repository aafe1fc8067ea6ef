"""``map``, ``imap`` and ``starmap``: they check the arguments, pick the backend and build a ``Run``."""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Sized
from typing import Any, Literal, TypeVar, overload

from ._backends._base import Backend
from ._errors import SerializationError, short_repr
from ._modes import Async, Auto, Mode, ModeLike, Processes, Sequential, Threads, parse_mode
from ._outcome import Outcome
from ._pools import get_backend
from ._scheduler import OnError, Reconsider, Run
from ._system import usable_cpus
from ._workload import AUTO_BUDGET, MAX_IO_THREADS, Advice, Head, Sample, decide, decide_coroutine, run_sample

__all__ = ["imap", "map", "starmap"]

log = logging.getLogger("taskloom")
T = TypeVar("T")
R = TypeVar("R")

Chunksize = int | Literal["auto"]


def fn_name(fn: Callable[..., Any]) -> str:
    """A short name for messages: ``f``, ``Class.method``, ``partial(f)`` (never a long repr)."""
    inner = getattr(fn, "fn", None) if isinstance(fn, _Star | _AStar) else fn
    if isinstance(inner, functools.partial):
        return f"partial({fn_name(inner.func)})"
    name = getattr(inner, "__qualname__", None) or getattr(inner, "__name__", None)
    return name if isinstance(name, str) else short_repr(inner)


class _Star:
    """``fn(*args)`` for starmap; a module-level class so it pickles by reference."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, args: Iterable[Any]) -> Any:
        return self.fn(*args)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Star, (self.fn,))


class _AStar(_Star):
    __slots__ = ()

    async def __call__(self, args: Iterable[Any]) -> Any:
        return await self.fn(*args)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_AStar, (self.fn,))


def is_coroutine_function(fn: Callable[..., Any]) -> bool:
    if isinstance(fn, _AStar):
        return True
    if isinstance(fn, _Star):
        return False
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def _check_int(name: str, value: object, low: int, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an integer >= {low}{none}, got {value!r}")


_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(rate: object) -> float | None:
    """``"100/s"``, ``"30/min"``, ``"500/h"`` or a number (per second) -> starts per second."""
    if rate is None:
        return None
    if isinstance(rate, int | float) and not isinstance(rate, bool):
        if rate > 0:
            return float(rate)
    elif isinstance(rate, str):
        count, _, per = rate.replace(" ", "").partition("/")
        try:
            value = float(count)
        except ValueError:
            value = -1.0
        if value > 0 and per.lower() in _PER:
            return value / _PER[per.lower()]
    raise ValueError(f"rate must be a number of starts per second > 0 or a string like '100/s' or '30/min', "
                     f"got {rate!r}")


def validate(
    fn: object, *, workers: object, chunksize: object, timeout: object, retries: object,
    retry_on: object, on_error: object, prefetch: object, ordered: object, rate: object = None,
    backoff: object = 0.0, progress: object = False,
) -> tuple[int | None, tuple[type[BaseException], ...]]:
    """Check every option before any worker starts; return (fixed chunksize, retry_on tuple)."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}")
    _check_int("workers", workers, 1)
    if chunksize != "auto":
        _check_int("chunksize", chunksize, 1, allow_none=False)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        raise ValueError(f"timeout must be a number of seconds > 0 or None, got {timeout!r}")
    _check_int("retries", retries, 0, allow_none=False)
    _check_int("prefetch", prefetch, 1)
    if on_error not in ("raise", "collect"):
        raise ValueError(f"on_error must be 'raise' or 'collect', got {on_error!r}")
    if not isinstance(ordered, bool):
        raise TypeError(f"ordered must be True or False, got {ordered!r}")
    classes = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not classes or not all(isinstance(c, type) and issubclass(c, BaseException) for c in classes):
        raise TypeError(f"retry_on must be an exception class or a tuple of them, got {retry_on!r}")
    parse_rate(rate)
    if not (progress is None or isinstance(progress, bool) or callable(progress)
            or callable(getattr(progress, "update", None))):
        raise TypeError(f"progress must be True, False, a callable or an object with update(n) (like tqdm), "
                        f"got {progress!r}")
    if isinstance(backoff, bool) or not isinstance(backoff, int | float) or backoff < 0:
        raise ValueError(f"backoff must be a number of seconds >= 0, got {backoff!r}")
    fixed = None if chunksize == "auto" else chunksize
    for option, value in (("timeout", timeout), ("rate", rate)):
        if value is not None and fixed is not None and fixed > 1:  # type: ignore[operator]
            raise ValueError(
                f"{option} applies to each task, so tasks are sent one at a time: chunksize must be 1 or "
                f"'auto' with {option}=, got {chunksize!r}"
            )
    if fixed is None and (timeout is not None or rate is not None):
        fixed = 1
    return fixed, classes  # type: ignore[return-value]


@overload
def imap(fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, mode: ModeLike = ..., workers: int | None = ...,
         chunksize: Chunksize = ..., ordered: bool = ..., timeout: float | None = ..., retries: int = ...,
         retry_on: type[BaseException] | tuple[type[BaseException], ...] = ..., rate: float | str | None = ...,
         backoff: float = ...,
         on_error: Literal["raise"] = ..., prefetch: int | None = ..., progress: object = ...) -> Run[R]: ...
@overload
def imap(fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, mode: ModeLike = ..., workers: int | None = ...,
         chunksize: Chunksize = ..., ordered: bool = ..., timeout: float | None = ..., retries: int = ...,
         retry_on: type[BaseException] | tuple[type[BaseException], ...] = ..., rate: float | str | None = ...,
         backoff: float = ...,
         on_error: Literal["collect"], prefetch: int | None = ..., progress: object = ...) -> Run[Outcome[R]]: ...
@overload
def imap(fn: Callable[[T], R], items: Iterable[T], *, mode: ModeLike = ..., workers: int | None = ...,
         chunksize: Chunksize = ..., ordered: bool = ..., timeout: float | None = ..., retries: int = ...,
         retry_on: type[BaseException] | tuple[type[BaseException], ...] = ..., rate: float | str | None = ...,
         backoff: float = ...,
         on_error: Literal["raise"] = ..., prefetch: int | None = ..., progress: object = ...) -> Run[R]: ...
@overload
def imap(fn: Callable[[T], R], items: Iterable[T], *, mode: ModeLike = ..., workers: int | None = ...,
         chunksize: Chunksize = ..., ordered: bool = ..., timeout: float | None = ..., retries: int = ...,
         retry_on: type[BaseException] | tuple[type[BaseException], ...] = ..., rate: float | str | None = ...,
         backoff: float = ...,
         on_error: Literal["collect"], prefetch: int | None = ..., progress: object = ...) -> Run[Outcome[R]]: ...
def imap(
    fn: Callable[[T], Any],
    items: Iterable[T],
    *,
    mode: ModeLike = "auto",
    workers: int | None = None,
    chunksize: Chunksize = "auto",
    ordered: bool = True,
    timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    rate: float | str | None = None,
    backoff: float = 0.0,
    on_error: OnError = "raise",
    prefetch: int | None = None,
    progress: object = False,
    _loop: Any = None,
    _loop_thread: int | None = None,
    _pool_slot: Hashable = None,
) -> Run[Any]:
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
        on_error: "raise" (the default) - the first failure cancels the rest and raises
            ``TaskError``; "collect" - yield an ``Outcome`` for every item, failed or not.
        prefetch: batches per worker kept in flight (default: 2; 1 for async and sequential).
        progress: True for a progress bar (a log line every few seconds when not on a terminal);
            a callable, called with a ``ProgressUpdate`` after each finished batch; or an object
            with ``update(n)`` such as a ``tqdm`` bar, advanced by finished tasks.

    Returns:
        A ``Run``: iterate it; ``.statistics()``, ``.advice`` and ``.cancel()`` describe and control it.
        It yields ``fn``'s results, or one ``Outcome`` per item with ``on_error="collect"``.

    Raises:
        ValueError, TypeError: a bad argument, before anything runs (also an ``async def`` function
            with a mode other than "async"/"auto", or a plain function with mode="async").
        TaskError: while iterating, with on_error="raise": the first task that failed (the original
            exception is its ``__cause__``); ``TaskTimeout``, ``WorkerCrashed`` and
            ``SerializationError`` are its subclasses.
        SerializationError: the function cannot be sent to worker processes.
    """
    fixed, retry_classes = validate(
        fn, workers=workers, chunksize=chunksize, timeout=timeout, retries=retries, retry_on=retry_on,
        on_error=on_error, prefetch=prefetch, ordered=ordered, rate=rate, backoff=backoff, progress=progress,
    )
    per_second = parse_rate(rate)
    try:
        source = iter(items)
    except TypeError:
        raise TypeError(f"items must be iterable, got {type(items).__name__}") from None
    parsed = parse_mode(mode)
    total = len(items) if isinstance(items, Sized) else None
    coroutine = is_coroutine_function(fn)
    if coroutine and not isinstance(parsed, Async | Auto):
        raise ValueError(
            f"{fn_name(fn)} is an async def function: it needs mode='async' or 'auto', not {parsed.name!r}"
        )
    if isinstance(parsed, Async) and not coroutine:
        raise ValueError(
            f"mode='async' runs async def functions, and {fn_name(fn)} is a plain function: "
            "use mode='threads' for blocking I/O"
        )
    advice = None
    head = None
    sample_of: list[Sample] = []
    if isinstance(parsed, Auto):
        # While the first sample task waits, a few more may start beside it (never under a rate
        # limit or a timeout, which sample tasks would not respect).
        overlap = 0 if rate is not None or timeout is not None else (workers or MAX_IO_THREADS) - 1
        parsed, advice, head, workers = _choose(fn, source, total, workers, coroutine, sample_of, overlap)
        if total is not None and head:
            total -= len(head)
    if workers is None:
        workers = parsed.default_workers()
    if isinstance(parsed, Async) and fixed is None:
        fixed = 1  # coroutines interleave: one per batch keeps the concurrency cap exact
    if _loop is not None and isinstance(parsed, Async):
        # amap/aimap: coroutines run on the caller's own loop (its sessions and locks live there).
        from ._backends._asyncio import AsyncBackend

        backend: Backend = AsyncBackend(workers, loop=_loop, loop_thread=_loop_thread, debug=parsed.debugging)
    else:
        backend = get_backend(parsed, workers, _pool_slot)
    from ._progress import make_listener

    listener = make_listener(progress, fn_name(fn), parsed.name, backend.workers,
                             None if total is None else total + len(head or ()))
    run: Run[Any] = Run(
        fn,
        source,
        backend=backend,
        name=fn_name(fn),
        chunksize=fixed,
        ordered=ordered,
        timeout=timeout,
        retries=retries,
        retry_on=retry_classes,
        on_error=on_error,
        prefetch=prefetch,
        crash_retries=parsed.crash_retries if isinstance(parsed, Processes) else 0,
        rate=per_second,
        backoff=float(backoff),
        total=total,
        # Auto may switch to threads mid-run, so it keeps the caller's context too.
        context=contextvars.copy_context() if isinstance(parsed, Threads | Async) or advice else None,
        advice=advice,
        head=head,
        listener=listener,
        reconsider=_reconsider_for(fn, sample_of[0], advice.mode, _pool_slot) if sample_of and advice else None,
    )
    return run


def function_pickles(fn: Callable[..., Any]) -> str | None:
    """None when ``fn`` can be sent to worker processes, else why not."""
    from ._backends._base import Job
    from ._backends._processes import pickle_function

    try:
        pickle_function(Job(fn, fn_name(fn)))
    except SerializationError as exc:
        return str(exc.__cause__ or exc)
    return None


def _choose(fn: Callable[..., Any], source: Iterator[Any], total: int | None, workers: int | None,
            coroutine: bool, sample_of: list[Sample], overlap: int) -> tuple[Mode, Advice, Head | None, int | None]:
    """mode="auto": measure the first items here (results kept) and pick the engine."""
    if coroutine:
        advice = decide_coroutine(workers)
        log.info("taskloom auto mode: %s", advice)
        return Async(), advice, None, workers
    s = run_sample(fn, source, AUTO_BUDGET, total, overlap)
    sample_of.append(s)
    remaining = 0 if s.exhausted else (None if total is None else max(0, total - s.n))
    advice = decide(s, remaining, pool_warm=_processes_warm(), function_pickles=lambda: function_pickles(fn))
    log.info("taskloom auto mode: %s", advice)
    return _AUTO_MODES[advice.mode](), advice, s.head, workers or advice.workers


_AUTO_MODES: dict[str, Callable[[], Mode]] = {"sequential": Sequential, "threads": Threads, "processes": Processes}


def _processes_warm() -> bool:
    from ._pools import live_backends

    return any(b.name == "processes" and b.workers >= usable_cpus() for b in live_backends())


def _reconsider_for(fn: Callable[..., Any], s: Sample, mode: str, slot: Hashable) -> Reconsider:
    """Auto's second look: the same model, fed the per-task time measured on the real run."""

    def reconsider(per_task: float, remaining: int | None) -> tuple[Backend, Advice] | None:
        later = dataclasses.replace(s, timed=1, wall=per_task, cpu=per_task * s.cpu_ratio, exhausted=False)
        advice = decide(later, remaining, pool_warm=_processes_warm(), function_pickles=lambda: function_pickles(fn))
        if advice.mode == mode:
            return None
        switched = dataclasses.replace(advice, reasons=(
            f"Switched during the run: tasks now take {per_task:.3g} s each, not {s.per_task:.3g} s as sampled.",
            *advice.reasons))
        return get_backend(_AUTO_MODES[advice.mode](), advice.workers, slot), switched

    return reconsider


@overload
def map(fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, mode: ModeLike = ..., workers: int | None = ...,
        chunksize: Chunksize = ..., ordered: bool = ..., timeout: float | None = ..., retries: int = ...,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = ..., rate: float | str | None = ...,
        backoff: float = ...,
        on_error: Literal["raise"] = ..., prefetch: int | None = ..., progress: object = ...) -> list[R]: ...
@overload
def map(fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, mode: ModeLike = ..., workers: int | None = ...,
        chunksize: Chunksize = ..., ordered: bool = ..., timeout: float | None = ..., retries: int = ...,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = ..., rate: float | str | None = ...,
        backoff: float = ...,
        on_error: Literal["collect"], prefetch: int | None = ..., progress: object = ...) -> list[Outcome[R]]: ...
@overload
def map(fn: Callable[[T], R], items: Iterable[T], *, mode: ModeLike = ..., workers: int | None = ...,
        chunksize: Chunksize = ..., ordered: bool = ..., timeout: float | None = ..., retries: int = ...,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = ..., rate: float | str | None = ...,
        backoff: float = ...,
        on_error: Literal["raise"] = ..., prefetch: int | None = ..., progress: object = ...) -> list[R]: ...
@overload
def map(fn: Callable[[T], R], items: Iterable[T], *, mode: ModeLike = ..., workers: int | None = ...,
        chunksize: Chunksize = ..., ordered: bool = ..., timeout: float | None = ..., retries: int = ...,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = ..., rate: float | str | None = ...,
        backoff: float = ...,
        on_error: Literal["collect"], prefetch: int | None = ..., progress: object = ...) -> list[Outcome[R]]: ...
def map(fn: Callable[[T], Any], items: Iterable[T], **options: Any) -> list[Any]:
    """Apply ``fn`` to every item and return the results as a list: ``list(imap(...))``.

    Takes the same keyword options as ``imap`` (``mode``, ``workers``, ``timeout``, ``retries``,
    ``on_error``, ``progress``...). The list is in input order unless ``ordered=False``.

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
    run: Run[Any] = imap(fn, items, **options)
    return run.to_list()


def starmap(fn: Callable[..., R], items: Iterable[Iterable[Any]], **options: Any) -> list[Any]:
    """Like ``map``, with each item unpacked as the arguments: ``starmap(pow, [(2, 5), (3, 2)])`` is ``[32, 9]``.

    Takes the same keyword options as ``imap``; ``fn`` may be an ``async def`` function.

    Returns:
        ``fn(*item)`` for every item, as a list; with on_error="collect", one ``Outcome`` per item
        (its ``item`` is the argument tuple).

    Raises:
        ValueError, TypeError: a bad argument, before anything runs.
        TaskError: with on_error="raise" (the default), the first task that failed.
    """
    wrapped: Callable[[Any], Any] = _AStar(fn) if is_coroutine_function(fn) else _Star(fn)
    run: Run[Any] = imap(wrapped, items, **options)
    return run.to_list()
