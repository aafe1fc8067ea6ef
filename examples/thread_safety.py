"""The guide's "Testing Concurrent Code", as a stress test.

The guide runs its check once: five threads append 20 numbers each, then it asserts the list is
complete. One run of a concurrent test proves little; taskloom.testing.stress runs the body on many
threads released together, many times over, switching threads at seeded random bytecodes, and
checks the invariant after each repetition. The same harness is a pytest marker:

    @pytest.mark.stress(threads=8, repeat=100)
    def test_append_numbers(shared): ...

Here the locked append passes, and a check-then-act version ("append if not already there",
unlocked) is caught.

Run: python examples/thread_safety.py
"""

from __future__ import annotations

import itertools
import threading

from taskloom.testing import StressFailure, stress

shared_resource: list[int] = []
lock = threading.Lock()
starts = itertools.count()


def reset() -> None:
    global starts
    shared_resource.clear()
    starts = itertools.count()


def append_numbers() -> None:
    """The guide's append_numbers: each thread appends its own range of 20, under the lock."""
    start = next(starts) * 20
    for i in range(start, start + 20):
        with lock:
            shared_resource.append(i)


def add_unique() -> None:
    """Check-then-act without the lock: two threads can both see a number missing and both add it."""
    for i in range(20):
        if i not in shared_resource:
            shared_resource.append(i)


def complete() -> None:
    assert len(shared_resource) == 100, len(shared_resource)
    assert set(shared_resource) == set(range(100))


def unique() -> None:
    assert sorted(shared_resource) == list(range(20)), f"duplicates: {len(shared_resource)} items for 20 numbers"


if __name__ == "__main__":
    print(stress(append_numbers, threads=5, repeat=100, setup=reset, check=complete))
    try:
        stress(add_unique, threads=5, repeat=100, setup=reset, check=unique)
        print("check-then-act race not found this time (rare: rerun)")
    except StressFailure as exc:
        print(f"StressFailure: {str(exc).splitlines()[0]}")
