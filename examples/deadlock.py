"""The guide's deadlock (two locks taken in opposite orders) reported instead of hung, then fixed.

1. The guide's worker1/worker2 under taskloom.deadlock_watch: the moment the second thread blocks
   and closes the cycle, it gets DeadlockError with both stacks and the lock each holds; it unwinds,
   and the other thread finishes. Without the watch this program would hang forever.
2. The guide's fix, "always acquire locks in the same order", enforced: with taskloom.OrderedLock
   the thread that takes them backwards fails with LockOrderError at its second acquire, every
   time, even when no other thread is there to deadlock with it.
3. taskloom.acquire takes a set of ordered locks in the order, whatever order they are passed in.

Run: python examples/deadlock.py
"""

from __future__ import annotations

import threading

import taskloom as tl


def guide_pair() -> None:
    errors: list[BaseException] = []
    try:
        with tl.deadlock_watch(timeout=10):
            lock1 = threading.Lock()  # made inside the watch: tracked
            lock2 = threading.Lock()
            both_hold_one = threading.Barrier(2)  # the guide's time.sleep(0.1), made deterministic

            def worker1() -> None:
                try:
                    with lock1:
                        both_hold_one.wait(10)
                        with lock2:
                            pass
                except tl.DeadlockError as exc:
                    errors.append(exc)

            def worker2() -> None:
                try:
                    with lock2:
                        both_hold_one.wait(10)
                        with lock1:
                            pass
                except tl.DeadlockError as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=worker1, name="worker1"),
                       threading.Thread(target=worker2, name="worker2")]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    except tl.DeadlockError:
        pass  # the watch re-raises at the end of the block what a thread found; shown below
    print(f"DeadlockError in {len(errors)} thread, instead of a hang:")
    print("    " + "\n    ".join(str(errors[0]).splitlines()[:5]))


def ordered_fix() -> None:
    lock1 = tl.OrderedLock("lock1", rank=1)
    lock2 = tl.OrderedLock("lock2", rank=2)

    def worker2_backwards() -> None:
        with lock2, lock1:  # against the order: refused at once
            pass

    try:
        worker2_backwards()
    except tl.LockOrderError as exc:
        print(f"LockOrderError: {exc}")

    # The fix: take both through taskloom.acquire; any argument order gives lock1, then lock2.
    done = []

    def safe_worker(first: tl.OrderedLock, second: tl.OrderedLock) -> None:
        for _ in range(1_000):
            with tl.acquire(first, second):
                done.append(1)

    threads = [threading.Thread(target=safe_worker, args=(lock1, lock2)),
               threading.Thread(target=safe_worker, args=(lock2, lock1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"taskloom.acquire: {len(done)} critical sections in opposite argument orders, no deadlock")


if __name__ == "__main__":
    guide_pair()
    ordered_fix()
