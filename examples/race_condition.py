"""The guide's pitfall "1. Race Conditions": temp = counter; temp += 1; counter = temp.

The guide's increment reads the counter, adds one, and writes it back in three statements; a
thread switched out between the read and the write writes back a stale value, and an update is
lost. Run a few times by hand it almost always looks right, so the bug survives ordinary tests.
taskloom.testing.stress runs it on 8 threads released together and switches threads at seeded
random bytecodes, so the lost update shows up at once (as a StressFailure naming a seed that
replays it). The guide's solution, "use locks or atomic operations", then holds up under the
same harness:

* a lock must cover the whole read-modify-write: locking only the read still loses updates;
* taskloom.Counter is the atomic operation: add() (and update(fn) for any read-modify-write)
  excludes other threads *and* other processes. A threading.Lock and a global counter do nothing
  across processes: under multiprocessing.Pool each worker silently counts in its own copy, and
  the parent's counter stays 0; taskloom, which sends a function of the main script by value with
  the globals it uses, refuses it at once (SerializationError: a lock cannot be pickled).

examples/counter_race.py does the same for the guide's one-statement ``counter += 1``.

Run: python examples/race_condition.py   (TASKLOOM_SMALL=1 for a test-sized run)
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable

import taskloom as tl
from taskloom.testing import StressFailure, stress

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
THREADS = 8
TIMES = 100  # increments per thread per repetition: the harness needs no big numbers
REPEAT = 20 if SMALL else 100
COUNTER_REPEAT = 5 if SMALL else 20  # taskloom.Counter's own code is traced too: slower under stress

# Problem: race condition (the guide's code, run TIMES times per thread)
counter = 0
lock = threading.Lock()
shared: tl.Counter | None = None  # a taskloom.Counter, made in main()


def increment() -> None:
    global counter
    temp = counter
    temp += 1
    counter = temp


def increment_many() -> None:
    for _ in range(TIMES):
        increment()


# Solution: use locks ...
def safe_increment() -> None:
    global counter
    with lock:
        temp = counter
        temp += 1
        counter = temp


def safe_increment_many() -> None:
    for _ in range(TIMES):
        safe_increment()


def half_locked_increment_many() -> None:
    """A lock that covers only the read: the write still races."""
    global counter
    for _ in range(TIMES):
        with lock:
            temp = counter
        temp += 1
        counter = temp


# ... or atomic operations
def atomic_increment_many() -> None:
    assert shared is not None
    for _ in range(TIMES):
        shared.add()  # the read, the +1 and the write, as one operation


def reset() -> None:
    global counter
    counter = 0
    if shared is not None:
        shared.set(0)


def invariant() -> None:
    assert counter == THREADS * TIMES, f"lost updates: counter is {counter}, not {THREADS * TIMES}"


def counter_invariant() -> None:
    assert shared is not None
    assert shared.get() == THREADS * TIMES, f"lost updates: Counter is {shared.get()}, not {THREADS * TIMES}"


def locked_in_a_worker(times: int) -> int:
    """safe_increment in a process worker: its lock and its counter are the worker's own copies."""
    for _ in range(times):
        safe_increment()
    return counter


def add_in_a_worker(total: tl.Counter, times: int) -> None:
    for _ in range(times):
        total.update(lambda value: value + 1)  # the guide's temp = v; temp += 1, done atomically


def check(label: str, fn: Callable[[], None], invariant_fn: Callable[[], None], repeat: int = REPEAT) -> None:
    """Stress fn and print one line: the StressFailure, or the report of the passing run."""
    try:
        report = stress(fn, threads=THREADS, repeat=repeat, setup=reset, check=invariant_fn)
    except StressFailure as exc:
        print(f"{label}: StressFailure: {str(exc).splitlines()[0]}")
        return
    print(f"{label}: passes: {report}")


def plain_threads(n: int) -> int:
    """The way the guide would test it: start threads, join them, look at the counter."""
    global counter
    counter = 0

    def run() -> None:
        for _ in range(n):
            increment()

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counter


def main() -> None:
    global shared
    # 0. Plain threads: usually no update is lost, so a test like this passes and proves nothing.
    n = 10_000 if SMALL else 100_000
    print(f"plain threads: counter is {plain_threads(n):,} of {THREADS * n:,} "
          "(usually right: CPython 3.10+ seldom switches threads between the read and the write)")

    # 1. The problem: lost updates, found on the first repetitions.
    check("temp = counter; temp += 1; counter = temp", increment_many, invariant)
    # 2. A lock around the read only is not a fix.
    check("lock around the read only", half_locked_increment_many, invariant)
    # 3. The guide's fix: the whole read-modify-write under the lock.
    check("lock around read, add and write", safe_increment_many, invariant)

    # 4. The atomic operation: a taskloom.Counter, under the same harness.
    with tl.Counter() as shared:
        check("taskloom.Counter.add()", atomic_increment_many, counter_invariant, COUNTER_REPEAT)
    shared = None

    # 5. Across processes a threading.Lock protects nothing: each worker has its own counter.
    reset()
    tasks = 8
    with multiprocessing.Pool(2) as pool:
        seen = pool.map(locked_in_a_worker, [TIMES] * tasks)
    print(f"multiprocessing.Pool, global counter + threading.Lock: the parent's counter is still {counter} "
          f"of {tasks * TIMES} (the workers counted in their own copies, up to {max(seen)})")
    assert counter == 0
    # taskloom sends a function defined in the main script by value (cloudpickle), with the globals
    # it uses: the lock cannot travel, and the run fails at once, before any task runs.
    refused: tl.SerializationError | None = None
    try:
        tl.map(locked_in_a_worker, [TIMES] * tasks, mode="processes")
    except tl.SerializationError as exc:
        refused = exc
    assert refused is not None, "the function with a lock in its globals was sent to the workers"
    print(f"taskloom processes, same function: SerializationError before any task ran: {refused.__cause__}")

    # 6. ... and a taskloom.Counter is one number for every process.
    with tl.Counter() as total:
        tl.starmap(add_in_a_worker, [(total, TIMES)] * tasks, mode="processes")
        print(f"taskloom.Counter.update() on process workers: {total.get()} of {tasks * TIMES}")
        assert total.get() == tasks * TIMES
    tl.shutdown()


if __name__ == "__main__":
    main()
