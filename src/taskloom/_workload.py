"""Measuring a task, and ``mode="auto"``'s choice.

The first version of the decision: run the first items in the caller's thread within a small
time budget (their results are kept, never computed twice), measure wall time against the CPU
time of the calling thread, and apply the guide's decision matrix:

* estimated total work under ``SEQUENTIAL_BELOW`` seconds -> sequential: no pool pays for itself;
* mostly waiting (CPU time < half the wall time) -> threads: I/O releases the GIL;
* mostly computing -> processes, when there is more than one usable CPU and the function pickles;
* a coroutine function -> async.

Inside a taskloom worker process, auto never starts processes (no pool of pools).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._backends._base import ItemError
from ._system import default_threads, in_worker, usable_cpus

__all__ = ["Advice"]

SAMPLE_BUDGET = 0.02  # seconds of sample tasks run in the caller's thread at most
SAMPLE_MAX = 64  # sample tasks at most
SEQUENTIAL_BELOW = 0.1  # seconds of estimated total work under which sequential wins
CPU_BOUND_RATIO = 0.5  # CPU time / wall time above which a task is CPU-bound


@dataclass(frozen=True)
class Advice:
    """What ``mode="auto"`` chose, and why.

    Attributes:
        mode: "sequential", "threads", "processes" or "async".
        workers: the worker count chosen.
        chunksize: the batch size, or "auto" (adaptive).
        reasons: plain sentences explaining the choice.
        measurements: the raw numbers the choice rests on.
    """

    mode: str
    workers: int
    chunksize: int | str
    reasons: tuple[str, ...]
    measurements: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        why = "; ".join(self.reasons)
        return f"{self.mode} x{self.workers} (chunksize {self.chunksize}): {why}"


Head = list[tuple[Any, Any, ItemError | None, float]]


def sample(fn: Callable[[Any], Any], source: Iterator[Any]) -> tuple[Head, float, float]:
    """Run the first items in this thread within the budget: (results, wall, cpu) summed."""
    head: Head = []
    wall = cpu = 0.0
    while len(head) < SAMPLE_MAX and wall < SAMPLE_BUDGET:
        try:
            item = next(source)
        except StopIteration:
            break
        c0, t0 = time.thread_time(), time.perf_counter()
        try:
            value, error = fn(item), None
        except Exception as exc:
            value, error = None, ItemError(exc, traceback.format_exc(), False)
        dt, dc = time.perf_counter() - t0, time.thread_time() - c0
        wall += dt
        cpu += dc
        head.append((item, value, error, dt))
        if error is not None:
            break
    return head, wall, cpu


def decide(
    head: Head, wall: float, cpu: float, total: int | None, picklable: Callable[[], str | None]
) -> Advice:
    """Choose a mode from the sample's measurements (see the module docstring)."""
    n = len(head)
    per_task = wall / n if n else 0.0
    ratio = cpu / wall if wall > 0 else 1.0
    measured = {"sampled_tasks": float(n), "seconds_per_task": per_task, "cpu_ratio": ratio}
    remaining = None if total is None else max(0, total - n)
    cpus = usable_cpus()
    if remaining is not None:
        estimate = per_task * remaining
        measured["estimated_work_seconds"] = estimate
        if estimate < SEQUENTIAL_BELOW:
            return Advice("sequential", 1, "auto", (
                f"the remaining {remaining} tasks add up to about {estimate * 1000:.1f} ms of work "
                f"({per_task * 1e6:.1f} us each): starting or feeding a pool would cost more than it saves",
            ), measured)
    if any(h[2] is not None for h in head):
        return Advice("threads", default_threads(), "auto", (
            "the first task raised, so it could not be measured: threads are the safe default",
        ), measured)
    if ratio < CPU_BOUND_RATIO:
        return Advice("threads", default_threads(), "auto", (
            f"tasks spend {100 * (1 - ratio):.0f}% of their time waiting (I/O or sleep), which "
            "releases the GIL: threads overlap the waits without pickling anything",
        ), measured)
    if cpus < 2:
        return Advice("sequential", 1, "auto", (
            "tasks are CPU-bound and this process may use only one CPU: parallelism cannot help",
        ), measured)
    if in_worker():
        return Advice("threads", cpus, "auto", (
            "already inside a taskloom worker process: a nested map does not start a pool of pools",
        ), measured)
    problem = picklable()
    if problem is not None:
        return Advice("threads", cpus, "auto", (
            f"tasks are CPU-bound, but the function cannot be sent to processes ({problem})",
        ), measured)
    return Advice("processes", cpus, "auto", (
        f"tasks are CPU-bound ({100 * ratio:.0f}% of their time computing, {per_task * 1e3:.2f} ms "
        f"each): the GIL serialises threads, so {cpus} processes run them in parallel",
    ), measured)
