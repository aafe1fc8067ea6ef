"""The guide's "Basic Threading Example": threading.Thread + join, and the error nobody hears of.

The guide starts three threading.Thread(target=worker, args=(name, 2)), then joins them. That
works while every worker succeeds. When one raises, the exception ends that thread only:
threading.excepthook prints it to stderr, join() returns normally, and the code after the joins
carries on as if all had gone well (a thread cannot return a value either, so results go through
a shared list, which is then silently short). Here the second worker gets a negative duration,
and time.sleep raises ValueError.

With taskloom the same call is tl.starmap(worker, jobs, mode="threads"): the return values come
back as a list in input order, and a failure reaches the caller as a TaskError naming the item
(.index, .item_repr, the original exception as __cause__); on_error="collect" keeps going and
returns one Outcome per item instead.

Run: python examples/basic_threads.py   (TASKLOOM_SMALL=1 for a test-sized run)
"""

from __future__ import annotations

import os
import threading
import time

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
DURATION = 0.2 if SMALL else 2.0  # the guide's 2 s per worker


def worker(name: str, duration: float) -> str:
    """The guide's worker; it returns its name (a raw thread has nowhere to return it to)."""
    print(f"Worker {name} starting\n", end="", flush=True)  # one write per line: threads print at once
    time.sleep(duration)  # ValueError: sleep length must be non-negative
    print(f"Worker {name} finished\n", end="", flush=True)
    return name


def raw_threads(jobs: list[tuple[str, float]]) -> None:
    """The guide's code, with a shared list for the results and a hook that records lost exceptions."""
    results: list[str] = []
    lost: list[str] = []

    def record(args: threading.ExceptHookArgs) -> None:
        # Stands in for the default hook, which prints "Exception in thread ..." to stderr and moves on.
        thread = args.thread.name if args.thread is not None else "?"
        lost.append(f"{thread}: {args.exc_type.__name__}: {args.exc_value}")

    def target(name: str, duration: float) -> None:
        results.append(worker(name, duration))

    previous, threading.excepthook = threading.excepthook, record
    try:
        threads = []
        start_time = time.perf_counter()
        for name, duration in jobs:
            thread = threading.Thread(target=target, args=(name, duration), name=name)
            threads.append(thread)
            thread.start()
        for thread in threads:
            thread.join()  # returns normally whether the thread succeeded or raised
        print(f"All threads completed in: {time.perf_counter() - start_time:.2f} seconds")
    finally:
        threading.excepthook = previous
    print(f"raw threads: join() returned normally, the caller saw no exception; "
          f"results: {len(results)} of {len(jobs)} {sorted(results)}")
    print(f"raw threads: the error only reached threading.excepthook: {lost}")
    assert len(lost) == 1
    assert len(results) == len(jobs) - 1


def main() -> None:
    good = [(f"Thread-{i + 1}", DURATION) for i in range(3)]
    bad = [("Thread-1", DURATION), ("Thread-2", -1.0), ("Thread-3", DURATION)]

    # 1. The guide's raw threads, one of which fails.
    raw_threads(bad)

    # 2. taskloom: the results come back, in order.
    start_time = time.perf_counter()
    names = tl.starmap(worker, good, mode="threads")
    print(f"taskloom: all workers completed in {time.perf_counter() - start_time:.2f} seconds: {names}")
    assert names == ["Thread-1", "Thread-2", "Thread-3"]
    print("results in input order")

    # 3. taskloom: the failure reaches the caller, naming the item.
    error: tl.TaskError | None = None
    try:
        tl.starmap(worker, bad, mode="threads")
    except tl.TaskError as exc:
        error = exc
    assert error is not None, "the failure was lost"
    assert error.index == 1
    assert isinstance(error.__cause__, ValueError)
    print(f"TaskError reached the caller: task {error.index}, item {error.item_repr}, "
          f"cause {type(error.__cause__).__name__}: {error.__cause__}")
    print("(the workers already running go on until they return: a thread cannot be stopped; "
          "what had not started is cancelled)")

    # 4. Or collect every outcome: nothing stops, nothing is lost.
    for outcome in tl.starmap(worker, bad, mode="threads", on_error="collect"):
        shown = outcome.value if outcome.ok else f"{type(outcome.error).__name__}: {outcome.error.__cause__}"
        print(f"outcome {outcome.index}: {shown}")
    tl.shutdown()


if __name__ == "__main__":
    main()
