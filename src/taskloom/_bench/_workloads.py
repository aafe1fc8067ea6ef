"""The workloads of ``taskloom bench``: what is timed, with which inputs, and how the answer is checked.

A workload is declarative: a module-level function (so worker processes import it by reference
instead of unpickling its code), an optional ``async def`` twin for ``mode="async"``, the inputs
in three sizes, and the expected answer for each input. Adding one is one ``register(Workload(...))``
call; the runner, the tables, the JSON, the HTML report and ``benchmarks/peers.py`` pick it up.

This module holds the contract and the pure-Python workloads (cpu, io, fib, tiny); ``_mixed.py``
(a real HTTP fetch on the loopback) and ``_arrays.py`` (numpy blocks) register theirs on import.

Sizes: ``"full"`` (``taskloom bench``), ``"quick"`` (``--quick``, under a minute on 2 CPUs, what
``make bench`` runs) and ``"test"`` (``TASKLOOM_SMALL=1``: the test suite's tiny runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "SIZES",
    "WORKLOADS",
    "Size",
    "Workload",
    "WrongResult",
    "cpu_task",
    "fib",
    "get_workload",
    "io_task",
    "io_task_async",
    "register",
    "square",
]

#: How big a run is: the full bench, ``--quick``, or the test suite's ``TASKLOOM_SMALL=1``.
Size = Literal["full", "quick", "test"]
SIZES: tuple[Size, ...] = ("full", "quick", "test")


class WrongResult(AssertionError):
    """A benchmarked mode returned a wrong answer: that is a failure, never a time."""


@dataclass(frozen=True)
class Workload:
    """One benchmark workload.

    Attributes:
        name: short name used on the command line (``--workloads cpu,io``).
        description: what kind of work this is, e.g. "CPU-bound pure Python".
        fn: the task, a module-level function of one item.
        items: ``items(size)`` builds the inputs for a size (see ``SIZES``).
        expect: the right answer for one (ready) item.
        async_fn: an ``async def`` version for ``mode="async"``, or None (async is then skipped).
        io_bound: the task waits rather than computes, so parallel efficiency (speedup per CPU)
            can exceed 100%: more waits overlap than there are CPUs. ``benchmarks/peers.py``
            gives the peers thread pools for these and process pools for the others.
        notes: per mode, why it does as it does, for the verdict line. ``{workers}`` is replaced
            by the worker count that mode ran with.
        same: whether a result equals the expected one (default ``==``; floats need a tolerance).
        setup: turns the items into ready ones for the length of a run, e.g. starts the HTTP
            server the items then point at; None when the items are ready as they are.
        requires: returns why the workload cannot run here (a missing package or feature), or
            None when it can; the runner then skips it and says why.
    """

    name: str
    description: str
    fn: Callable[[Any], Any]
    items: Callable[[Size], list[Any]]
    expect: Callable[[Any], Any]
    async_fn: Callable[[Any], Awaitable[Any]] | None = None
    io_bound: bool = False
    notes: Mapping[str, str] = field(default_factory=dict)
    same: Callable[[Any, Any], bool] = operator.eq
    setup: Callable[[list[Any]], AbstractContextManager[list[Any]]] | None = None
    requires: Callable[[], str | None] | None = None

    def unavailable(self) -> str | None:
        """Why this workload cannot run here, or None when it can."""
        return None if self.requires is None else self.requires()

    @contextlib.contextmanager
    def open(self, size: Size) -> Iterator[list[Any]]:
        """The ready inputs for ``size``, valid inside the ``with`` block (a server may be running).

        Example::

            with workload.open("test") as items:
                workload.check(items, [workload.fn(x) for x in items])
        """
        items = self.items(size)
        if self.setup is None:
            yield items
        else:
            with self.setup(items) as ready:
                yield ready

    def function_for(self, mode: str) -> Callable[[Any], Any] | None:
        """The function to run in ``mode``, or None when the workload has none for it."""
        if mode == "async":
            return self.async_fn
        return self.fn

    def check(self, items: Sequence[Any], results: Sequence[Any]) -> None:
        """Raise ``WrongResult`` unless ``results`` are the right answers for ``items``, in order.

        Args:
            items: the inputs the mode was given.
            results: what it returned.

        Raises:
            WrongResult: a missing, extra or wrong result; the message names the first one.
        """
        if len(results) != len(items):
            raise WrongResult(
                f"workload {self.name!r}: expected {len(items)} results, got {len(results)}"
            )
        for index, (item, got) in enumerate(zip(items, results, strict=True)):
            want = self.expect(item)
            if not self.same(got, want):
                raise WrongResult(
                    f"workload {self.name!r}: result {index} for item {_short(item)} is {got!r}, expected {want!r}"
                )


def _short(item: Any) -> str:
    # A numpy block's repr is long even when numpy summarises it: keep messages to one line.
    text = repr(item).replace("\n", " ")
    return text if len(text) <= 120 else text[:117] + "..."


WORKLOADS: dict[str, Workload] = {}


def register(workload: Workload) -> Workload:
    """Add a workload to the registry (by its name) and return it.

    Raises:
        ValueError: a workload of that name is already registered.
    """
    if workload.name in WORKLOADS:
        raise ValueError(f"a workload named {workload.name!r} is already registered")
    WORKLOADS[workload.name] = workload
    return workload


def get_workload(name: str) -> Workload:
    """The registered workload called ``name``.

    Raises:
        KeyError: no such workload; the message lists the ones there are.
    """
    try:
        return WORKLOADS[name]
    except KeyError:
        raise KeyError(
            f"no workload named {name!r}: choose from {', '.join(WORKLOADS)}"
        ) from None


# -- cpu: the guide's cpu_task ------------------------------------------------------------------
# Tasks of 30-60 ms: big enough that a process pool's per-task cost (a few hundred
# microseconds) is noise, so the table shows the GIL, not the pool. Test size: just a smoke run.
CPU_SIZES: dict[Size, tuple[int, int]] = {  # (tasks, n)
    "full": (16, 2_000_000),
    "quick": (8, 1_000_000),
    "test": (4, 20_000),
}


def cpu_task(n: int) -> int:
    """The guide's CPU-bound task: ``sum(i*i for i in range(n))``, pure Python, holds the GIL."""
    return sum(i * i for i in range(n))


def _cpu_items(size: Size) -> list[int]:
    tasks, n = CPU_SIZES[size]
    return [n] * tasks


def _cpu_expect(n: int) -> int:
    # The closed form of the sum of squares 0..n-1: checks the answer without recomputing it.
    return (n - 1) * n * (2 * n - 1) // 6


register(Workload(
    name="cpu",
    description="CPU-bound pure Python",
    fn=cpu_task,
    items=_cpu_items,
    expect=_cpu_expect,
    notes={"threads": "the GIL"},
))


# -- io: the guide's io_task ----------------------------------------------------------------------
IO_SIZES: dict[Size, tuple[int, float]] = {  # (tasks, seconds each)
    "full": (32, 0.1),
    "quick": (16, 0.04),
    "test": (8, 0.01),
}


def io_task(duration: float) -> str:
    """The guide's I/O-bound task: ``time.sleep(duration)``, which releases the GIL while it waits."""
    time.sleep(duration)
    return f"Completed after {duration}s"


async def io_task_async(duration: float) -> str:
    """``io_task`` for asyncio: ``await asyncio.sleep(duration)``."""
    await asyncio.sleep(duration)
    return f"Completed after {duration}s"


def _io_items(size: Size) -> list[float]:
    tasks, seconds = IO_SIZES[size]
    return [seconds] * tasks


def _io_expect(duration: float) -> str:
    return f"Completed after {duration}s"


register(Workload(
    name="io",
    description="I/O-bound waits",
    fn=io_task,
    items=_io_items,
    expect=_io_expect,
    async_fn=io_task_async,
    io_bound=True,
    notes={
        "threads": "{workers} threads wait at once",
        "processes": "{workers} processes wait at once",
        "async": "up to {workers} coroutines wait at once",
    },
))


# -- fib: recursive Fibonacci, uneven tasks ---------------------------------------------------------
# Task sizes differ by a factor of ~30 (each n costs ~1.6x the one below), largest first and
# last mixed, so the table also shows load balancing: a pool that hands out work in big fixed
# chunks leaves a CPU idle while another finishes the big ones.
FIB_SIZES: dict[Size, list[int]] = {
    "full": [31, 24, 30, 25, 29, 26, 28, 27] * 2,
    "quick": [29, 23, 28, 24, 27, 25, 26, 22],
    "test": [16, 12, 15, 10],
}


def fib(n: int) -> int:
    """Recursive Fibonacci: a call-heavy pure-Python task (``fib(30)`` is ~1.3 million calls)."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def _fib_items(size: Size) -> list[int]:
    return list(FIB_SIZES[size])


def _fib_expect(n: int) -> int:
    # Iterative: O(n), so the check costs nothing next to the task.
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


register(Workload(
    name="fib",
    description="CPU-bound recursion, uneven tasks",
    fn=fib,
    items=_fib_items,
    expect=_fib_expect,
    notes={"threads": "the GIL"},
))


# -- tiny: x*x, the cost of dispatch -------------------------------------------------------------
TINY_SIZES: dict[Size, int] = {"full": 500_000, "quick": 100_000, "test": 2_000}


def square(x: int) -> int:
    """The tiny task: ``x * x``, a fraction of a microsecond. What a pool costs per task."""
    return x * x


def _tiny_items(size: Size) -> list[int]:
    return list(range(TINY_SIZES[size]))


def _tiny_expect(x: int) -> int:
    return x * x


register(Workload(
    name="tiny",
    description="tiny tasks, dispatch overhead",
    fn=square,
    items=_tiny_items,
    expect=_tiny_expect,
    notes={
        "threads": "the GIL, plus a hand-off per batch",
        "processes": "every item pickled both ways",
    },
))
