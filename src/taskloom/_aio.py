"""``amap`` and ``aimap``: the same runs, awaited from inside a running event loop.

Coroutine functions run on the caller's loop (so the sessions, locks and queues they use, which
belong to that loop, just work). The run's consumer - which blocks while it waits for results -
lives in a helper thread of its own, and the loop awaits it, so the loop never blocks: not while
results arrive, and not while ``mode="auto"`` measures the first tasks of a plain function.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from ._options import OnError, Options, RunOptions
from ._outcome import Outcome
from ._run._open import CallerLoop, open_run
from ._run._run import Run
from ._stats import RunStatistics

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncRun", "aimap", "amap"]

T = TypeVar("T")
R = TypeVar("R")


class AsyncRun(AsyncIterator[Any]):
    """What ``aimap`` returns: ``async for`` over results; ``cancel()``, ``statistics()``, ``advice``.

    It yields what the underlying ``Run`` yields (values, or ``Outcome`` objects with
    ``on_error="collect"``); a failed task raises ``TaskError`` from the ``async for``.
    Leaving the loop early (``break``) and dropping the object cancels the run, as does
    ``async with``. Cancelling the task that iterates it cancels the run too.

    Example::

        async with taskloom.aimap(fetch, urls, workers=50) as results:
            async for page in results:
                ...
    """

    def __init__(self, fn: Callable[..., Any], items: Iterable[Any], options: Options) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="taskloom-aimap")
        # Built in a helper thread: auto mode runs its first tasks while it measures them.
        build = functools.partial(open_run, fn, items, options,
                                  caller_loop=CallerLoop(self._loop, threading.get_ident()))
        self._run_future: asyncio.Future[Run[Any]] = self._loop.run_in_executor(self._thread, build)
        self._run: Run[Any] | None = None
        self._block: list[Any] = []
        self._pos = 0
        self._closed = False

    def __aiter__(self) -> AsyncRun:
        return self

    async def __anext__(self) -> Any:
        if self._pos < len(self._block):
            self._pos += 1
            return self._block[self._pos - 1]
        if self._closed:
            raise StopAsyncIteration
        try:
            run = await self.run()
            block = await self._loop.run_in_executor(self._thread, run._next_block)
        except BaseException:
            self.cancel()  # a failure, or the awaiting task was cancelled
            raise
        if block is None:
            self._finish()
            raise StopAsyncIteration
        self._block, self._pos = block, 1
        return block[0]

    async def run(self) -> Run[Any]:
        """The underlying Run (built in the helper thread: auto mode measures there)."""
        if self._run is None:
            self._run = await self._run_future
        return self._run

    async def to_list(self) -> list[Any]:
        """Await every remaining result, as a list (what ``amap`` returns); the run is over after it."""
        run = await self.run()
        try:
            return await self._loop.run_in_executor(self._thread, run.to_list)
        finally:
            self._finish()

    @property
    def advice(self) -> Any:
        """The ``Advice`` of ``mode="auto"`` (None for an explicit mode, or before the run is built)."""
        return self._run.advice if self._run is not None else None

    def statistics(self) -> RunStatistics | None:
        """A snapshot of the run's ``RunStatistics``, or None before the run is built (see ``run()``)."""
        return self._run.statistics() if self._run is not None else None

    def cancel(self) -> None:
        """Stop the run now; safe to call more than once."""
        if self._run is not None:
            self._run.cancel()
        elif not self._run_future.done():
            self._run_future.add_done_callback(_cancel_when_built)
        self._finish()

    async def aclose(self) -> None:
        """Cancel the run (the async-generator spelling of ``cancel()``)."""
        self.cancel()

    async def __aenter__(self) -> AsyncRun:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    def _finish(self) -> None:
        if not self._closed:
            self._closed = True
            self._thread.shutdown(wait=False)

    def __del__(self) -> None:
        if not self._closed and self._run is not None:
            self._run.cancel()
            self._thread.shutdown(wait=False)


def _cancel_when_built(future: asyncio.Future[Run[Any]]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().cancel()


def aimap(fn: Callable[..., Any], items: Iterable[Any], *, on_error: OnError = "raise",
          **options: Unpack[RunOptions]) -> AsyncRun:
    """``imap`` for code inside a running event loop: ``async for r in taskloom.aimap(fn, items)``.

    Takes the same keyword options as ``imap``. Coroutine functions run on the caller's loop, at
    most ``workers`` at once; plain functions run on threads or processes as ``imap`` would run
    them. The loop is never blocked.

    Returns:
        An ``AsyncRun`` (iterate it with ``async for``; or ``await run.to_list()``).

    Raises:
        RuntimeError: no event loop is running in this thread.
        ValueError, TypeError: a bad option, at once; a function the engine cannot run, when the
            first result is awaited.
        TaskError: with on_error="raise", the first task that failed, from the ``async for``.
    """
    return AsyncRun(fn, items, Options.build(fn, "aimap", on_error=on_error, **options))


@overload
async def amap(fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, on_error: Literal["raise"] = ...,
               **options: Unpack[RunOptions]) -> list[R]: ...
@overload
async def amap(fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, on_error: Literal["collect"],
               **options: Unpack[RunOptions]) -> list[Outcome[R]]: ...
@overload
async def amap(fn: Callable[[T], R], items: Iterable[T], *, on_error: Literal["raise"] = ...,
               **options: Unpack[RunOptions]) -> list[R]: ...
@overload
async def amap(fn: Callable[[T], R], items: Iterable[T], *, on_error: Literal["collect"],
               **options: Unpack[RunOptions]) -> list[Outcome[R]]: ...
async def amap(fn: Callable[[T], Any], items: Iterable[T], *, on_error: OnError = "raise",
               **options: Unpack[RunOptions]) -> list[Any]:
    """``map`` for code inside a running event loop: ``results = await taskloom.amap(fn, items)``.

    Takes the same keyword options as ``imap`` and returns what ``map`` would: the results as a
    list (``Outcome`` objects with ``on_error="collect"``). Coroutine functions run on the caller's
    loop, so they may use its sessions and locks; the loop is never blocked. Example::

        async def main():
            async with aiohttp.ClientSession() as session:
                pages = await taskloom.amap(functools.partial(fetch, session), urls, workers=50)
    """
    return await AsyncRun(fn, items, Options.build(fn, "amap", on_error=on_error, **options)).to_list()
