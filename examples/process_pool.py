"""The guide's "Basic Multiprocessing Example": cpu_intensive_task, sequential vs multiprocessing.Pool.

The guide times four calls of a pure-Python loop one after the other, then the same four on a
multiprocessing.Pool(), and prints the speedup. That is sound (the work is pure Python, so only
processes run it in parallel under the GIL), with two things to know: Pool() starts
os.cpu_count() workers, the machine's CPUs, not the ones this process may use (a taskset
affinity or a container's CPU quota can allow far fewer; Python 3.13 counts the affinity, still
not the quota), and the `with` block terminates the pool, so every run pays the start-up again.

taskloom does the same with tl.map(cpu_intensive_task, numbers, mode="processes"): `workers`
defaults to the usable CPUs (affinity and cgroup aware), the pool stays warm for the next call
(and is stopped at exit, or by tl.shutdown()), and results come back in input order. With
mode="auto" (the default) it measures the first task in the caller's thread, sees that it
computes and that threads would not run it in parallel, and picks processes; run.advice says why.
(The model counts a cold pool's start-up: on a job this small without a warm pool, auto would
rightly stay sequential. Measuring one task of four alone also shows in its time here.)

Run: python examples/process_pool.py   (TASKLOOM_SMALL=1 for a test-sized run)
"""

from __future__ import annotations

import multiprocessing
import os
import time

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
N = 300_000 if SMALL else 3_000_000  # the guide's 1,000,000 takes ~35 ms on CPython 3.11: too short to time
TASKS = 4


def cpu_intensive_task(n: int) -> int:
    """Simulate CPU-intensive work (the guide's function)."""
    result = 0
    for i in range(n):
        result += i**2
    return result


def timed(label: str, fn: object, sequential_time: float | None = None) -> tuple[list[int], float]:
    assert callable(fn)
    start = time.perf_counter()
    results: list[int] = fn()
    elapsed = time.perf_counter() - start
    speedup = "" if sequential_time is None else f" (speedup {sequential_time / elapsed:.2f}x)"
    print(f"{label:<46} {elapsed:6.3f} s{speedup}")
    return results, elapsed


def main() -> None:
    numbers = [N] * TASKS
    print(f"os.cpu_count() = {os.cpu_count()} (multiprocessing.Pool's default), "
          f"usable CPUs = {tl.Processes().default_workers()} (taskloom's default workers)")

    sequential, sequential_time = timed("sequential", lambda: [cpu_intensive_task(n) for n in numbers])

    def stdlib_pool() -> list[int]:
        with multiprocessing.Pool() as pool:
            return pool.map(cpu_intensive_task, numbers)

    pooled, _ = timed("multiprocessing.Pool() (start-up included)", stdlib_pool, sequential_time)
    cold, _ = timed("tl.map(mode='processes'), first call", lambda: tl.map(cpu_intensive_task, numbers,
                                                                            mode="processes"), sequential_time)
    warm, _ = timed("tl.map(mode='processes'), warm pool", lambda: tl.map(cpu_intensive_task, numbers,
                                                                           mode="processes"), sequential_time)
    runs: list[tl.Run[int]] = []

    def auto_mode() -> list[int]:
        runs.append(tl.imap(cpu_intensive_task, numbers))  # mode="auto": runs the first task here to measure it
        return list(runs[0])

    auto, _ = timed("tl.imap(mode='auto'), measuring included", auto_mode, sequential_time)
    run = runs[0]

    assert pooled == cold == warm == auto == sequential
    print("results identical to the sequential ones, in input order")
    assert run.advice is not None
    print(f"auto chose {run.advice.mode} x{run.workers}: it ran the first of the {TASKS} tasks in this thread "
          "to measure it (its result is kept), then the others on the warm pool")
    for reason in run.advice.reasons:
        print(f"  because: {reason}")
    tl.shutdown()


if __name__ == "__main__":
    main()
