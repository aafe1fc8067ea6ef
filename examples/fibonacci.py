"""The guide's "Use Multiprocessing When": a recursive fibonacci of [35, 36, 37, 38] on a Pool.

Pure-Python recursion holds the GIL, so this is work for processes, as the guide says. Two
things it does not say. Its numbers are large: fibonacci(n) makes about 2·fib(n+1) calls, so
[35, 36, 37, 38] is ~280 million calls, about 8 s one after the other with CPython 3.11 on a
fast machine (older interpreters take longer), hence smaller numbers here. And the tasks are very
uneven: each takes 1.6 times as long as the one before, so the last is ~45% of all the work.
No pool finishes before its largest task: on 4 or more CPUs that caps the speedup at ~2.2x, and
on 2 the best split of the four tasks ({38, 35} and {37, 36}) gives ~1.8x.

What taskloom does about uneven tasks, and what it does not: tasks this long go out one at a
time (batches are sized to ~50 ms of work), each to a worker that is free, and none is queued
behind a long task on a busy worker while another worker idles; so the short tasks fill in
around the long ones. (Pool.map hands these four out one at a time too: its chunksize works out
to 1 for so few items.) taskloom does not reorder the input: starting the largest task first
(the "longest processing time first" rule) is yours to do, e.g. sorted(numbers, reverse=True);
on 2 workers it turns 1.6x into 1.8x here. run.statistics() shows the slowest tasks and each
worker's busy time, which is how you see that it matters.

tl.advise(fibonacci, sample) measures a few small cases and says which engine suits the
function, and why, before the real job runs.

Run: python examples/fibonacci.py   (TASKLOOM_SMALL=1 for a test-sized run)
"""

from __future__ import annotations

import heapq
import itertools
import multiprocessing
import os
import time

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
NUMBERS = [25, 26, 27, 28] if SMALL else [31, 32, 33, 34]  # the guide's [35, 36, 37, 38]: ~8 s sequentially


def fibonacci(n: int) -> int:
    if n <= 1:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)


def makespan(seconds: list[float], workers: int) -> float:
    """When the last task ends if each task, in this order, goes to the first worker that is free."""
    free = [0.0] * workers
    for secs in seconds:
        heapq.heapreplace(free, free[0] + secs)  # free is a heap: free[0] is the earliest free worker
    return max(free)


def best_makespan(seconds: list[float], workers: int) -> float:
    """The best any schedule can do: every split of these few tasks among the workers, tried."""
    if workers >= len(seconds):
        return max(seconds)
    best = sum(seconds)
    for owners in itertools.product(range(workers), repeat=len(seconds)):
        loads = [0.0] * workers
        for owner, secs in zip(owners, seconds, strict=True):
            loads[owner] += secs
        best = min(best, max(loads))
    return best


def main() -> None:
    # 1. Which engine? advise measures small cases here (for a job of many such tasks by default).
    advice = tl.advise(fibonacci, [18, 19, 20], budget=0.2)
    print(f"tl.advise(fibonacci, [18, 19, 20]): {advice.mode} x{advice.workers}")
    for reason in advice.reasons:
        print(f"  because: {reason}")
    assert advice.mode == "processes"

    # 2. Sequential, each task timed: how uneven are they?
    start = time.perf_counter()
    sequential: list[int] = []
    seconds: list[float] = []
    for n in NUMBERS:
        t0 = time.perf_counter()
        sequential.append(fibonacci(n))
        seconds.append(time.perf_counter() - t0)
    sequential_time = time.perf_counter() - start
    cpus = tl.Processes().default_workers()
    share = max(seconds) / sum(seconds)
    print(f"sequential: {sequential_time:.3f} s; fibonacci({NUMBERS[-1]}) alone is {100 * share:.0f}% of the work: "
          f"the best split on {cpus} CPUs gives {sum(seconds) / best_makespan(seconds, cpus):.2f}x, "
          f"not {min(cpus, len(NUMBERS))}x")

    # 3. The guide's Pool.
    start = time.perf_counter()
    with multiprocessing.Pool() as pool:
        pooled = pool.map(fibonacci, NUMBERS)
    pool_time = time.perf_counter() - start
    print(f"multiprocessing.Pool().map: {pool_time:.3f} s, {sequential_time / pool_time:.2f}x (start-up included)")

    # 4. taskloom processes, in the guide's order, then the largest first (on a warm pool: both
    #    pay the same dispatch costs, and a long-running program has its pool started already).
    tl.map(fibonacci, [1] * cpus, mode="processes")
    start = time.perf_counter()
    run = tl.imap(fibonacci, NUMBERS, mode="processes")
    results = list(run)
    in_order = time.perf_counter() - start
    largest_first = sorted(NUMBERS, reverse=True)
    start = time.perf_counter()
    reordered = tl.map(fibonacci, largest_first, mode="processes")
    reordered_time = time.perf_counter() - start
    by_n = dict(zip(NUMBERS, seconds, strict=True))
    expected = [sum(seconds) / makespan([by_n[n] for n in order], cpus) for order in (NUMBERS, largest_first)]
    print(f"tl.map(mode='processes') on {cpus} workers: {sequential_time / in_order:.2f}x in the guide's order, "
          f"{sequential_time / reordered_time:.2f}x largest first (expected from the task times: "
          f"{expected[0]:.2f}x and {expected[1]:.2f}x)")

    stats = run.statistics()
    slowest = ", ".join(f"#{index} fibonacci({item}) {secs * 1e3:.0f} ms" for index, item, secs in stats.slowest[:2])
    busy = ", ".join(f"{secs * 1e3:.0f} ms" for secs in stats.busy.values())
    print(f"slowest tasks: {slowest}; worker busy times: {busy}")

    assert results == pooled == sequential
    assert reordered == sequential[::-1]  # sorted(NUMBERS, reverse=True) is NUMBERS reversed
    print(f"processes result equals the sequential result: {results}")
    tl.shutdown()


if __name__ == "__main__":
    main()
