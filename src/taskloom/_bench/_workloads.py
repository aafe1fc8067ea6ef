"""The workloads of ``taskloom bench``: what is timed, with which inputs, and how the answer is checked.

A workload is declarative: a module-level function (so worker processes import it by reference
instead of unpickling its code), an optional ``async def`` twin for ``mode="async"``, the inputs
in a normal and a small size, and the expected answer for each input. Adding one is one
``register(Workload(...))`` call; the runner, the tables, the JSON and the HTML report pick it up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "WORKLOADS",
    "Workload",
    "WrongResult",
    "cpu_task",
    "get_workload",
    "io_task",
    "io_task_async",
    "register",
]


class WrongResult(AssertionError):
    """A benchmarked mode returned a wrong answer: that is a failure, never a time."""


@dataclass(frozen=True)
class Workload:
    """One benchmark workload.

    Attributes:
        name: short name used on the command line (``--workloads cpu,io``).
        description: what kind of work this is, e.g. "CPU-bound pure Python".
        fn: the task, a module-level function of one item.
        items: ``items(small)`` builds the inputs; ``small`` is for --quick and test runs.
        expect: the right answer for one item.
        async_fn: an ``async def`` version for ``mode="async"``, or None (async is then skipped).
        io_bound: the task waits rather than computes, so parallel efficiency (speedup per CPU)
            can exceed 100%: more waits overlap than there are CPUs.
        notes: per mode, why it does as it does, for the verdict line. ``{workers}`` is replaced
            by the worker count that mode ran with.
    """

    name: str
    description: str
    fn: Callable[[Any], Any]
    items: Callable[[bool], list[Any]]
    expect: Callable[[Any], Any]
    async_fn: Callable[[Any], Awaitable[Any]] | None = None
    io_bound: bool = False
    notes: Mapping[str, str] = field(default_factory=dict)

    def make_items(self, small: bool) -> list[Any]:
        """The inputs, in the normal or the small (--quick, ``TASKLOOM_SMALL=1``) size."""
        return self.items(small)

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
            if got != want:
                raise WrongResult(
                    f"workload {self.name!r}: result {index} for item {item!r} is {got!r}, expected {want!r}"
                )


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

CPU_TASKS = 8
CPU_N = 200_000
# A quarter of the normal size, not less: smaller tasks would measure the pool's overhead instead
# of the GIL, and `make bench` (which runs --quick) would then tell a misleading story.
CPU_N_SMALL = 50_000


def cpu_task(n: int) -> int:
    """The guide's CPU-bound task: ``sum(i*i for i in range(n))``, pure Python, holds the GIL."""
    return sum(i * i for i in range(n))


def _cpu_items(small: bool) -> list[int]:
    return [CPU_N_SMALL if small else CPU_N] * CPU_TASKS


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

IO_TASKS = 16
IO_SECONDS = 0.1
IO_SECONDS_SMALL = 0.02


def io_task(duration: float) -> str:
    """The guide's I/O-bound task: ``time.sleep(duration)``, which releases the GIL while it waits."""
    time.sleep(duration)
    return f"Completed after {duration}s"


async def io_task_async(duration: float) -> str:
    """``io_task`` for asyncio: ``await asyncio.sleep(duration)``."""
    await asyncio.sleep(duration)
    return f"Completed after {duration}s"


def _io_items(small: bool) -> list[float]:
    return [IO_SECONDS_SMALL if small else IO_SECONDS] * IO_TASKS


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
