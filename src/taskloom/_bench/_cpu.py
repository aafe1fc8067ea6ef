"""CPU time of this process and of every process below it, for the CPU-utilisation column.

Pool workers are long-lived and are not waited for between calls, so ``RUSAGE_CHILDREN`` never
sees their time (it counts only reaped children; and forkserver workers are grandchildren). So
the meter reads each descendant's CPU time with psutil before and after a call and adds the
differences: a worker that already existed counts only what it spent during the call, one that
started during the call counts all of its time. A descendant that exited during the call takes
its time with it (nothing can read it any more): utilisation is then a little low, never high.
The kernel counts a descendant's time in clock ticks (10 ms on most Linux systems), so on runs
of a few milliseconds (test sizes) the figure is noise; on the quick and full sizes it is not.
"""

from __future__ import annotations

import contextlib
import time

import psutil

__all__ = ["CpuSnapshot", "cpu_seconds", "snapshot"]

#: This process's CPU seconds (all threads), and per descendant ``(pid, start time)`` its CPU
#: seconds. Keyed by start time too, so a recycled pid is not taken for the old process.
CpuSnapshot = tuple[float, dict[tuple[int, float], float]]


def snapshot(*, own_first: bool = False) -> CpuSnapshot:
    """The CPU time used so far by this process and by each live descendant.

    Args:
        own_first: read this process's time before listing the descendants (for the snapshot
            that ends a measurement) rather than after (for the one that starts it), so the
            listing's own CPU cost, about a millisecond, stays out of the measurement.
    """
    own = time.process_time() if own_first else None
    children: dict[tuple[int, float], float] = {}
    for proc in psutil.Process().children(recursive=True):
        # A child may exit between the listing and the read: it is then simply not counted.
        with contextlib.suppress(psutil.Error), proc.oneshot():
            times = proc.cpu_times()
            children[(proc.pid, proc.create_time())] = times.user + times.system
    return (time.process_time() if own is None else own), children


def cpu_seconds(before: CpuSnapshot, after: CpuSnapshot) -> float:
    """CPU seconds spent between two snapshots by this process and its descendants together."""
    own = after[0] - before[0]
    children = sum(max(0.0, spent - before[1].get(key, 0.0)) for key, spent in after[1].items())
    return own + children
