"""The guide's shared counter: the race, proved by a test that fails, and two fixes.

The guide warns that two threads doing ``counter += 1`` "may not give 200000". On CPython 3.10+
they almost always do, which is exactly why the bug survives ordinary tests: a thread is never
switched between the read and the write of ``counter += 1``. taskloom.testing.stress switches
threads at seeded random bytecodes, so the lost updates show up at once; the locked version
passes; and taskloom.Counter does the same job across threads *and* process workers.

Run: python examples/counter_race.py      (TASKLOOM_SMALL=1 for a quick run)
"""

from __future__ import annotations

import os
import threading

import taskloom as tl
from taskloom.testing import StressFailure, stress

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
TIMES = 100  # per thread, per stress repetition: the harness does not need big numbers

counter = 0
lock = threading.Lock()


def increment() -> None:
    """The guide's unsynchronised increment ("may give incorrect results")."""
    global counter
    for _ in range(TIMES):
        counter += 1


def safe_increment() -> None:
    """The guide's fix: the read-modify-write under a lock."""
    global counter
    for _ in range(TIMES):
        with lock:
            counter += 1


def reset() -> None:
    global counter
    counter = 0


def invariant() -> None:
    assert counter == 8 * TIMES, f"lost updates: counter is {counter}, not {8 * TIMES}"


def add_many(shared: tl.Counter, times: int) -> None:
    for _ in range(times):
        shared.add()


def main() -> None:
    # 1. The race, found: each repetition runs `increment` on 8 threads released together.
    try:
        stress(increment, threads=8, repeat=100, setup=reset, check=invariant)
        print("the race was not found this time (rare: rerun)")
    except StressFailure as exc:
        print(f"StressFailure: {str(exc).splitlines()[0]}")

    # 2. The locked version passes the same harness.
    report = stress(safe_increment, threads=8, repeat=20 if SMALL else 100, setup=reset, check=invariant)
    print(f"locked counter: {report}")

    # 3. One counter for threads and processes alike, even warm pool workers: no lock to pass around.
    total = 20_000 if SMALL else 100_000
    with tl.Counter() as shared:
        tl.starmap(add_many, [(shared, 1_000)] * (total // 1_000), mode="processes")
        print(f"taskloom.Counter across process workers: {shared.get():,} of {total:,}")
        assert shared.get() == total
    tl.shutdown()


if __name__ == "__main__":
    main()
