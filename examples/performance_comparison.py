"""The guide's "Performance Comparison Example": its table with the stdlib, then with taskloom's modes.

The guide times 8 CPU-bound tasks (``cpu_task``: a sum of squares) sequentially, on
``ThreadPoolExecutor(4)`` and on ``multiprocessing.Pool(4)``, and 8 sleeps on threads. Three things
to know when reading its numbers:

* its ``n=100_000`` is ~3 ms of work a task: ``Pool(4)`` then mostly times its own start-up. We use
  a larger n (a smaller one under TASKLOOM_SMALL), so the parallel part shows;
* ``4`` is hard-coded: on 2 usable CPUs, 4 processes only take turns; threads hold the GIL on
  pure-Python work, so they gain nothing on the CPU job;
* the I/O job has no sequential baseline in the guide: we add one.

taskloom runs the same two jobs on each of its modes - ``sequential``, ``threads``, ``processes``
(one worker per usable CPU) and ``auto`` (the default), which measures the first tasks and says
which engine it chose and why (``run.advice``). On the sleeps, auto sizes the thread pool by the
measured wait, not ``cpus + 4``. Timings are printed, never asserted; results are checked.
For the full version, every mode on seven workloads with a report: ``make bench`` (or
``taskloom bench --quick --report bench.html``).

Run: python examples/performance_comparison.py   (TASKLOOM_SMALL=1 for a test-sized run)
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Callable
from typing import Any

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
CPU_N = 500_000 if SMALL else 5_000_000
SLEEP = 0.05 if SMALL else 0.5


def cpu_task(n: int) -> int:
    return sum(i * i for i in range(n))


def io_task(duration: float) -> str:
    time.sleep(duration)
    return f"Completed after {duration}s"


Row = tuple[str, int, float, list[Any]]  # engine, workers, seconds, results


def timed(fn: Callable[[], list[Any]]) -> tuple[float, list[Any]]:
    start = time.perf_counter()
    results = fn()
    return time.perf_counter() - start, results


def guide_rows(task: Callable[[Any], Any], items: list[Any], pool: bool) -> list[Row]:
    """The guide's measurements (plus a sequential baseline for the I/O job)."""
    rows: list[Row] = []
    seconds, results = timed(lambda: [task(x) for x in items])
    rows.append(("sequential (a list comprehension)", 1, seconds, results))

    def on_threads() -> list[Any]:
        with concurrent.futures.ThreadPoolExecutor(4) as executor:
            return list(executor.map(task, items))

    seconds, results = timed(on_threads)
    rows.append(("ThreadPoolExecutor(4)", 4, seconds, results))
    if pool:
        def on_processes() -> list[Any]:
            with multiprocessing.Pool(4) as p:
                return p.map(task, items)

        seconds, results = timed(on_processes)
        rows.append(("multiprocessing.Pool(4)", 4, seconds, results))
    return rows


def taskloom_rows(task: Callable[[Any], Any], items: list[Any], first: bool) -> tuple[list[Row], tl.Advice]:
    """Each mode once; on the first job, processes twice: a cold pool (started by the call), then warm."""
    rows: list[Row] = []
    advice = None
    modes = ["sequential", "threads", "processes", "processes", "auto"] if first else \
        ["sequential", "threads", "processes", "auto"]
    for i, mode in enumerate(modes):
        run = tl.imap(task, items, mode=mode)
        seconds, results = timed(lambda run=run: list(run))
        if run.advice is not None:
            advice = run.advice
        name = f"taskloom auto -> {run.mode}" if mode == "auto" else f"taskloom {mode}"
        if first and mode == "processes":
            name += " (cold pool)" if modes.index(mode) == i else " (warm pool)"
        rows.append((name, run.workers, seconds, results))
    assert advice is not None
    return rows, advice


def print_table(title: str, rows: list[Row]) -> None:
    baseline = rows[0][2]
    print(title)
    print(f"  {'engine':<36} {'workers':>7} {'time':>8} {'vs sequential':>14}")
    for name, workers, seconds, _ in rows:
        print(f"  {name:<36} {workers:>7} {seconds:>7.2f}s {baseline / seconds:>13.2f}x")


def main() -> None:
    numbers = [CPU_N] * 8
    durations = [SLEEP] * 8
    print(f"{tl.Processes().default_workers()} usable CPU(s); CPU job: 8 x cpu_task({CPU_N:,}); "
          f"I/O job: 8 x sleep({SLEEP} s)")

    # The stdlib first: multiprocessing.Pool forks, and taskloom's pools run threads in this process.
    cpu_rows = guide_rows(cpu_task, numbers, pool=True)
    io_rows = guide_rows(io_task, durations, pool=False)

    tl_cpu, cpu_advice = taskloom_rows(cpu_task, numbers, first=True)
    tl_io, io_advice = taskloom_rows(io_task, durations, first=False)
    cpu_rows += tl_cpu
    io_rows += tl_io

    expected_cpu = [cpu_task(CPU_N)] * 8
    assert all(results == expected_cpu for *_, results in cpu_rows)
    assert all(results == [f"Completed after {SLEEP}s"] * 8 for *_, results in io_rows)
    print("results identical across every engine")
    print()
    print_table("CPU Task Results:", cpu_rows)
    print(f"  auto chose {cpu_advice.mode} for the CPU job: {' '.join(cpu_advice.reasons)}")
    print()
    print_table("I/O Task Results:", io_rows)
    print(f"  auto chose {io_advice.mode} for the I/O job: {' '.join(io_advice.reasons)}")
    assert io_advice.mode == "threads"
    print()
    print("the full version, every mode on seven workloads with a report: make bench")
    tl.shutdown()


if __name__ == "__main__":
    main()
