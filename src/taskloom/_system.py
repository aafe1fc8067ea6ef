"""Facts about this process and machine: usable CPUs, start methods, the GIL, default workers."""

from __future__ import annotations

import functools
import math
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

#: Set in worker processes started by taskloom; a nested ``map`` there does not start a pool.
IN_WORKER_ENV = "TASKLOOM_WORKER"

#: Default concurrency cap for coroutine functions (``mode="async"``). It is a semaphore, not a
#: pool: 100 matches aiohttp's default connection limit, enough to keep a typical HTTP service
#: busy without opening thousands of sockets at once.
ASYNC_DEFAULT_WORKERS = 100

#: Seconds taskloom lets work that cannot be stopped finish at interpreter exit: a one-shot
#: background service without a ``stop`` parameter.
EXIT_GRACE = 10.0

#: Seconds into the exit's wait for running thread tasks before it says on stderr what it waits for.
EXIT_NOTICE = 5.0


def in_worker() -> bool:
    """True inside a taskloom worker process."""
    return os.environ.get(IN_WORKER_ENV) == "1"


#: where the cgroup file systems are mounted (v2 unified, or v1's ``cpu`` controller below it)
CGROUP_ROOT: str | Path = "/sys/fs/cgroup"  # a str: pathlib costs a first map several ms to import


def _read(*parts: str | Path) -> str:
    with open(os.path.join(*parts)) as f:
        return f.read()


def cgroup_cpu_limit(root: str | Path | None = None) -> float | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), or None."""
    root = CGROUP_ROOT if root is None else root
    try:
        text = _read(root, "cpu.max").split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(_read(root, "cpu", "cpu.cfs_quota_us"))
        period = int(_read(root, "cpu", "cpu.cfs_period_us"))
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


@functools.cache
def usable_cpus() -> int:
    """CPUs this process may actually use: affinity and cgroup quota, not ``os.cpu_count()``."""
    # sched_getaffinity is missing on macOS and Windows.
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return max(1, count)


def gil_enabled() -> bool:
    """False on a free-threaded interpreter running without the GIL (3.13t and later)."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


#: Without a GIL, an object is freed by the thread that allocated it (biased reference counting):
#: one that another thread drops waits until its owner runs Python code again. A taskloom thread
#: that makes objects for other threads (the process pool's manager unpickles results, the event
#: loop's thread runs coroutines) never sleeps longer than this (seconds) while the GIL is off.
FREE_THREADED_WAKE = 1.0


def bounded_wait(timeout: float | None) -> float | None:
    """``timeout`` for a thread that hands objects it made to others: capped at
    ``FREE_THREADED_WAKE`` while the GIL is off, so that those objects are freed once dropped."""
    if gil_enabled():
        return timeout
    return FREE_THREADED_WAKE if timeout is None else min(timeout, FREE_THREADED_WAKE)


def runnable_load() -> float | None:
    """The machine's load now: threads runnable besides the caller's, per CPU; None where unknown.

    From ``/proc/loadavg``'s count of runnable threads (Linux; the whole machine's, counting the
    one reading it), per CPU of the machine (``os.cpu_count()``: the count covers them all). In
    the units of ``_sampling.load_ratio``: beside one busy loop per CPU a thread waits about a
    second for a CPU per second it computes, and this reads 1.0. A snapshot, unlike the run-queue
    wait of a task of a few ms (not once preempted beside two busy loops, it read 0).
    """
    try:
        with open("/proc/loadavg") as f:
            runnable = int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0, runnable - 1) / (os.cpu_count() or 1)


def default_threads() -> int:
    """The stdlib's thread-pool default, ``min(32, cpus + 4)``: I/O waits, so a few extra threads."""
    return min(32, usable_cpus() + 4)
