"""The guide's "Sequential vs Concurrent Execution": three sleeping tasks, one after the other, then together.

The guide runs task("Task 1", 2), task("Task 2", 2), task("Task 3", 2) one after the other and
gets 6 s: the sum of the durations, although the CPU does nothing while a task sleeps. Run
concurrently, the same tasks take as long as the longest one (the max, 2 s). taskloom does that
in one call, tl.starmap(task, [(name, duration), ...], mode="threads"), returns the results in
input order, and stops its threads when the program ends. With the default mode="auto" it
measures the first task in the caller's thread (its result is kept); as soon as that task has
only waited for 20 ms, the next ones start beside it on threads, so even this three-task job
takes about the time of the longest task.

Run: python examples/sequential_vs_concurrent.py   (TASKLOOM_SMALL=1 for a test-sized run)
"""

from __future__ import annotations

import os
import time

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
DURATION = 0.2 if SMALL else 1.0  # the guide sleeps 2 s per task
TASKS = [("Task 1", DURATION), ("Task 2", DURATION), ("Task 3", DURATION)]


def task(name: str, duration: float) -> str:
    """The guide's task: it waits (a sleep stands for I/O) and, here, returns its name."""
    print(f"Starting {name}\n", end="", flush=True)  # one write per line: threads print at the same time
    time.sleep(duration)
    print(f"Finished {name}\n", end="", flush=True)
    return name


def task_of(spec: tuple[str, float]) -> str:
    """task(*spec): tl.imap takes a function of one argument (tl.starmap unpacks by itself)."""
    return task(*spec)


def main() -> None:
    names = [name for name, _ in TASKS]
    total = sum(duration for _, duration in TASKS)
    longest = max(duration for _, duration in TASKS)

    # 1. The guide's sequential run: the time is the sum.
    start = time.perf_counter()
    sequential = [task(name, duration) for name, duration in TASKS]
    sequential_time = time.perf_counter() - start
    print(f"sequential: {sequential_time:.2f} s (the sum of the durations: {total:.2f} s)")

    # 2. The same tasks on threads: the time is the max.
    start = time.perf_counter()
    threaded = tl.starmap(task, TASKS, mode="threads")
    threads_time = time.perf_counter() - start
    print(f"tl.starmap(task, tasks, mode='threads'): {threads_time:.2f} s (the longest task: {longest:.2f} s)")
    assert threaded == sequential == names
    print("results identical, in input order:", threaded)

    # 3. mode="auto" (the default): measure first, then choose.
    start = time.perf_counter()
    run = tl.imap(task_of, TASKS)
    chosen = list(run)
    auto_time = time.perf_counter() - start
    assert run.advice is not None
    assert chosen == names
    print(f"mode='auto': {auto_time:.2f} s (the longest task: {longest:.2f} s)")
    print(f"auto: {' '.join(run.advice.reasons)}")
    assert run.advice.reasons[0].startswith("The first task only waited"), run.advice.reasons
    print(f"speedup of threads over sequential: {sequential_time / threads_time:.1f}x "
          f"(at most {len(TASKS)}x for {len(TASKS)} equal tasks)")
    tl.shutdown()


if __name__ == "__main__":
    main()
