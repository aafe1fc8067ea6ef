"""The guide's "4. Memory Management": long-running workers grow; recycle them.

The guide says "process pools automatically manage memory", then advises ``del data`` in the task.
``del`` drops one name; it does nothing for what a task leaves behind in its *worker*: a module-level
cache that is never cleared, a library that leaks, fragmentation. A pool worker runs task after
task, so its memory only grows - until the OOM killer ends it. The stdlib's answer is to replace
a worker after N tasks (``Pool(maxtasksperchild=N)``, ``ProcessPoolExecutor(max_tasks_per_child=N)``
on 3.11+); it has no limit by memory. taskloom has both:

* ``tl.Processes(max_tasks_per_worker=N)``: a worker retires after its N-th task;
* ``tl.Processes(max_memory="2GiB")``: a worker retires after the task that takes its RSS over the limit;

the rest of its batch runs on another worker, and a fresh worker takes its place, so nothing is lost.
Here a task leaks a few MB per call into a module-level list, and reports its worker's pid and RSS.

For large *inputs*, the other half of memory management: a ``tl.SharedArray`` (numpy, ``pip install
'taskloom[shared]'``) is copied into shared memory once and every worker maps the same pages,
instead of each task receiving its own pickled copy: see ``examples/shared_array.py``.

Run: python examples/memory_management.py   (TASKLOOM_SMALL=1 for a test-sized run)
"""

from __future__ import annotations

import collections
import os
import pickle

import psutil

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
TASKS = 40 if SMALL else 200
LEAK = (2 if SMALL else 4) * 2**20  # bytes each task leaves behind in its worker
MiB = 2**20

_cache: list[bytes] = []  # "a cache": appended to by every task, never cleared


def leaky_task(i: int) -> tuple[int, int]:
    """Do the work, leave LEAK bytes behind; return (this worker's pid, its RSS after the task)."""
    _cache.append(b"x" * LEAK)  # written, so the pages are really resident
    return os.getpid(), psutil.Process().memory_info().rss


def idle_task(i: int) -> tuple[int, int]:
    return os.getpid(), psutil.Process().memory_info().rss


def report(title: str, results: list[tuple[int, int]]) -> dict[int, list[int]]:
    """Print, per worker process, how many tasks it ran and its largest RSS; return pid -> RSSes."""
    per_worker: dict[int, list[int]] = collections.defaultdict(list)
    for pid, rss in results:
        per_worker[pid].append(rss)
    largest = max(max(r) for r in per_worker.values())
    print(f"{title}: {len(results)} tasks on {len(per_worker)} worker process(es); "
          f"largest worker RSS {largest / MiB:.0f} MiB")
    shown = sorted(per_worker.items(), key=lambda kv: -max(kv[1]))[:4]
    for pid, rsses in shown:
        print(f"    pid {pid}: {len(rsses)} tasks, RSS {min(rsses) / MiB:.0f} -> {max(rsses) / MiB:.0f} MiB")
    if len(per_worker) > len(shown):
        print(f"    ... and {len(per_worker) - len(shown)} more")
    return per_worker


def main() -> None:
    base = max(rss for _, rss in tl.map(idle_task, range(4), mode="processes", workers=2))
    print(f"an idle worker's RSS: {base / MiB:.0f} MiB; each task leaks {LEAK / MiB:.0f} MiB")

    # 1. No recycling: two workers run every task and keep every leak.
    plain = report("no recycling (tl.Processes())",
                   tl.map(leaky_task, range(TASKS), mode=tl.Processes(), workers=2))
    assert len(plain) <= 2
    grown = max(max(r) for r in plain.values())
    assert grown > base + (TASKS // 4) * LEAK  # the busier worker ran at least half: it holds their leaks
    alive = [psutil.Process(pid) for pid in plain if psutil.pid_exists(pid)]
    print(f"    after the call those workers stay warm, and big: "
          f"{', '.join(f'{p.memory_info().rss / MiB:.0f} MiB' for p in alive)} - until tl.shutdown()")

    # 2. Recycle after N tasks: every worker ran at most N, and grew by at most N leaks.
    n = 5
    by_count = report(f"max_tasks_per_worker={n}",
                      tl.map(leaky_task, range(TASKS), mode=tl.Processes(max_tasks_per_worker=n), workers=2))
    assert max(len(r) for r in by_count.values()) <= n
    assert len(by_count) >= TASKS // n
    print(f"    each worker ran at most {n} tasks: recycled, {len(by_count)} worker processes in all")

    # 3. Recycle by memory: a worker retires after the task that takes it over the limit.
    limit = base + 6 * LEAK
    by_memory = report(f"max_memory={limit / MiB:.0f} MiB",
                       tl.map(leaky_task, range(TASKS), mode=tl.Processes(max_memory=limit), workers=2))
    largest = max(max(r) for r in by_memory.values())
    assert largest <= limit + 2 * LEAK  # the task that crosses the limit is the worker's last
    assert len(by_memory) > 2
    print(f"    every worker stayed within the limit plus one task's leak: "
          f"largest {largest / MiB:.0f} MiB, vs {grown / MiB:.0f} MiB without recycling")

    tl.shutdown()
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in plain)
    print("after tl.shutdown(): the grown workers are gone, and their memory with them")

    # Big inputs: pickled into every task, or shared once (examples/shared_array.py shows it in full).
    import numpy as np  # not at the top: the forkserver imports this module, and every worker would get numpy

    data = np.zeros(1_000_000)  # 8 MB
    with tl.SharedArray.from_numpy(data) as shared:
        print(f"an 8 MB numpy input: {len(pickle.dumps(data)):,} bytes pickled into each task, "
              f"{len(pickle.dumps(shared)):,} as a tl.SharedArray (see examples/shared_array.py)")


if __name__ == "__main__":
    main()
