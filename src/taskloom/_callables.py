"""What taskloom needs to know of a user's callable: its name in messages, its kind, its pickling.

The bottom floor of the front end: it imports nothing above ``_errors`` (the backends' pickling
is imported when asked for), so the measuring (``_workload``) and the front ends share it without
an import circle.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from ._errors import SerializationError, short_repr


def fn_name(fn: Callable[..., Any]) -> str:
    """A short name for messages: ``f``, ``Class.method``, ``partial(f)`` (never a long repr)."""
    inner = getattr(fn, "fn", None) if isinstance(fn, Star) else fn
    if isinstance(inner, functools.partial):
        return f"partial({fn_name(inner.func)})"
    name = getattr(inner, "__qualname__", None) or getattr(inner, "__name__", None)
    return name if isinstance(name, str) else short_repr(inner)


class Star:
    """``fn(*args)`` for starmap; a module-level class so it pickles by reference."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, args: Iterable[Any]) -> Any:
        return self.fn(*args)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Star, (self.fn,))


class AStar(Star):
    """``await fn(*args)``: starmap of an ``async def`` function."""

    __slots__ = ()

    async def __call__(self, args: Iterable[Any]) -> Any:
        return await self.fn(*args)

    def __reduce__(self) -> tuple[Any, ...]:
        return (AStar, (self.fn,))


def star(fn: Callable[..., Any]) -> Callable[[Any], Any]:
    """``fn`` taking its arguments as one tuple, keeping its kind (plain or ``async def``)."""
    return AStar(fn) if is_coroutine_function(fn) else Star(fn)


def is_coroutine_function(fn: Callable[..., Any]) -> bool:
    """True for an ``async def`` function (or a callable whose ``__call__`` is one)."""
    if isinstance(fn, AStar):
        return True
    if isinstance(fn, Star):
        return False
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def function_pickles(fn: Callable[..., Any]) -> str | None:
    """None when ``fn`` can be sent to worker processes, else why not."""
    from ._backends._base import Job
    from ._backends._processes import pickle_function

    try:
        pickle_function(Job(fn, fn_name(fn)))
    except SerializationError as exc:
        return str(exc.__cause__ or exc)
    return None
