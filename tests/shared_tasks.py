"""Task functions for the shared-state tests: module level, so worker processes import them by name.

Keep this module light (no pytest, no taskloom imports beyond what a task needs): every worker
process that runs one of these tasks imports it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

#: Keeps objects a task made alive for as long as its worker lives (see ``make_array_and_keep``).
_KEEP: list[Any] = []


def add_many(counter: Any, times: int) -> int:
    """``counter.add()`` ``times`` times; returns the worker's pid."""
    for _ in range(times):
        counter.add()
    return os.getpid()


def value_add(value: Any, amount: float) -> float:
    return float(value.add(amount))


def block_sum(arr: Any, lo: int, hi: int) -> float:
    """Sum of ``arr[lo:hi]``, read through the shared mapping."""
    import numpy as np

    return float(np.asarray(arr)[lo:hi].sum())


def fill_row(arr: Any, row: int) -> int:
    """Write ``row + 1`` into every cell of row ``row`` (the array must be writable)."""
    arr[row] = row + 1
    return os.getpid()


def try_write(arr: Any) -> str:
    arr[0] = 42
    return "written"


def describe(arr: Any) -> tuple[str, tuple[int, ...], str, bool, bool, int]:
    """What a worker sees: name, shape, dtype, writable, owner, pid."""
    return arr.name, arr.shape, str(arr.dtype), arr.writable, arr.owner, os.getpid()


def identity(obj: Any) -> int:
    return id(obj)


def getpid(_: object = None) -> int:
    return os.getpid()


def attach_then_die(arr: Any) -> None:
    """Touch the shared pages, then die by SIGKILL (no cleanup of any kind can run)."""
    float(arr[0])
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)  # pragma: no cover - dead already


def die_holding_lock(counter: Any) -> None:
    """Take the counter's cross-process lock and die by SIGKILL while holding it."""
    import fcntl

    fcntl.flock(counter._fd, fcntl.LOCK_EX)  # what every operation does first
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)  # pragma: no cover - dead already


def make_array_and_keep(size: int) -> tuple[str, int]:
    """Create a SharedArray *in the worker* and keep it alive there; returns (name, pid)."""
    import taskloom as tl

    arr = tl.SharedArray.zeros(size, "int64")
    _KEEP.append(arr)
    return arr.name, os.getpid()


def make_array_and_drop(size: int) -> str:
    """Create a SharedArray in the worker and drop it at once (it is removed then)."""
    import taskloom as tl

    arr = tl.SharedArray.zeros(size, "int64")
    name = arr.name
    del arr
    return name


def wait_then_read(arr: Any, release: Any) -> float:
    """Block until the Value ``release`` is set, then read the array (tests closing under a worker)."""
    deadline = time.monotonic() + 30
    while not release.get():
        if time.monotonic() > deadline:  # pragma: no cover - the test failed to release us
            raise TimeoutError("never released")
        time.sleep(0.005)
    return float(arr[0])


def threads_in_worker(counter: Any, threads: int, times: int) -> int:
    """Several threads inside one worker process, all adding to the same counter."""
    workers = [threading.Thread(target=add_many, args=(counter, times)) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    return os.getpid()


def segment_identity(arr: Any) -> tuple[int, int]:
    """The identity of the mapping this worker uses for ``arr``, and the worker's pid."""
    return id(arr._segment), os.getpid()


def cached_names(_: object = None) -> list[str]:
    """The segment names this worker keeps mapped in its attachment cache."""
    from taskloom import _shared

    with _shared._cache_lock:
        return [name for name, _writable in _shared._cache]
