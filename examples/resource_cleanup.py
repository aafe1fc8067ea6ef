"""The guide's pitfall "3. Resource Cleanup": its try/finally, what it gets wrong, and taskloom.

The guide's "always clean up" version has two bugs:

* ``pool = multiprocessing.Pool(4)`` is *inside* the ``try``: when it raises (``Pool(0)``, too many
  open files, no memory...), ``pool`` is unbound in ``finally`` and an ``UnboundLocalError`` (a
  ``NameError``) replaces the real error: an ``except ValueError`` around the call no longer
  catches it, and the real error survives only as its ``__context__``;
* ``close()`` + ``join()`` in ``finally`` *wait for all the queued work*: after an error - or Ctrl-C -
  in the caller, every task still runs to the end before the error is seen.

Its "better" version, ``with Pool(4)``, terminates instead - which kills uncollected results (see
examples/context_managers.py). A worker that dies is the third cleanup problem: ``ProcessPoolExecutor``
marks the whole pool broken and fails every pending future.

With taskloom there is no pool to hold: a failing task raises ``TaskError`` at once and the run's
busy workers are stopped; Ctrl-C gives one ``KeyboardInterrupt`` (workers ignore SIGINT; the parent
stops them); a worker killed mid-task costs only its own task (``WorkerCrashed``, after one retry
on a fresh worker), the other tasks finish. ``tl.shutdown()`` (also at exit) stops the warm workers.

Run: python examples/resource_cleanup.py   (TASKLOOM_SMALL=1 for a test-sized run)
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from leftovers import wait_gone, worker_processes

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
TASK_SECONDS = 0.1 if SMALL else 0.25
TASKS = 10


def square(x: int) -> int:
    return x * x


def logged_square(log: str, x: int) -> int:
    """A slow task that leaves a file behind, so we can count the tasks that really ran."""
    time.sleep(TASK_SECONDS)
    Path(log, str(x)).touch()
    return x * x


def long_but_one(marks: str, i: int) -> int:
    """Item 1 fails after a moment; every other item notes its worker's pid and runs for a minute."""
    if i == 1:
        time.sleep(0.2)
        raise ValueError(f"bad record {i}")
    Path(marks, str(os.getpid())).touch()
    time.sleep(60)
    return i


def fragile(i: int) -> int:
    """Item 3 kills its own worker process, as the OOM killer would."""
    if i == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.02)
    return i


def guide_main(workers: int) -> list[int]:
    """The guide's code, word for word."""
    try:
        pool = multiprocessing.Pool(workers)
        results = pool.map(square, range(4))
    finally:
        pool.close()
        pool.join()
    return results


def interrupt_main_thread_in(seconds: float, *, and_workers: bool = False) -> threading.Timer:
    """Simulate Ctrl-C: SIGINT to the main thread (and, as a terminal does, to the worker processes)."""

    def press() -> None:
        if and_workers:
            for pid in worker_processes():
                os.kill(pid, signal.SIGINT)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    timer = threading.Timer(seconds, press)
    timer.start()
    return timer


def stdlib_way() -> None:
    print("-- the guide's try/finally")
    # 1. The pool cannot be created: the real error is replaced by a NameError from `finally`.
    try:
        guide_main(0)
    except NameError as exc:
        print(f"Pool(0) raised, and the caller got {type(exc).__name__}: {exc}")
        print(f"    the real error survives only as its __context__: {exc.__context__!r}")

    # 2. Ctrl-C during pool.map: finally's close() + join() first runs every queued task.
    with tempfile.TemporaryDirectory() as log:
        pool = multiprocessing.Pool(2)  # created before the Ctrl-C timer starts, however slow the machine
        started = time.perf_counter()
        timer = interrupt_main_thread_in(TASK_SECONDS * 1.5)
        try:
            try:
                pool.map(functools.partial(logged_square, log), range(TASKS))
            finally:
                pool.close()
                pool.join()
        except KeyboardInterrupt:
            ran = len(os.listdir(log))
            print(f"Ctrl-C after {TASK_SECONDS * 1.5:.2f} s reached the caller after "
                  f"{time.perf_counter() - started:.2f} s: close()+join() ran {ran} of {TASKS} queued tasks first")
        timer.join()

    # 3. A worker dies: ProcessPoolExecutor fails every pending future and refuses new work.
    with concurrent.futures.ProcessPoolExecutor(2) as executor:
        futures = [executor.submit(fragile, i) for i in range(8)]
        broken = sum(isinstance(f.exception(), BrokenProcessPool) for f in futures)
        try:
            executor.submit(fragile, 0)
        except BrokenProcessPool:
            print(f"ProcessPoolExecutor: one worker killed -> {broken} of 8 futures failed with BrokenProcessPool, "
                  "and the pool is unusable")


def taskloom_way() -> None:
    print("-- taskloom")
    # 1. A failing task: TaskError at once, and the workers busy with this run's other tasks stop.
    with tempfile.TemporaryDirectory() as marks:
        started = time.perf_counter()
        try:
            tl.starmap(long_but_one, [(marks, i) for i in range(TASKS)], mode="processes", workers=2, chunksize=1)
            raise AssertionError("tl.starmap should raise")
        except tl.TaskError as exc:
            print(f"TaskError for item {exc.index} after {time.perf_counter() - started:.2f} s, while the other "
                  f"worker was in a 60 s task: {exc.__cause__!r}")
        busy = {int(name) for name in os.listdir(marks)}
        left = wait_gone(busy)
        print(f"    workers that had started a 60 s task: {len(busy)}; still running one: {len(left)}")
        assert busy
        assert not left

    # 2. Ctrl-C (SIGINT to the caller and to every worker): one KeyboardInterrupt, workers stopped.
    with tempfile.TemporaryDirectory() as log:
        started = time.perf_counter()
        timer = interrupt_main_thread_in(TASK_SECONDS * 1.5, and_workers=True)
        interrupts = 0
        try:
            tl.map(functools.partial(logged_square, log), range(TASKS), mode="processes", workers=2, chunksize=1)
        except KeyboardInterrupt:
            interrupts += 1
            elapsed = time.perf_counter() - started
        timer.join()
        assert interrupts == 1
        print(f"Ctrl-C after {TASK_SECONDS * 1.5:.2f} s: one KeyboardInterrupt, in the caller, after {elapsed:.2f} s; "
              f"{len(os.listdir(log))} of {TASKS} tasks had finished; those running were stopped, the rest never "
              "started")

    # 3. A worker killed mid-task: only its task fails, the others finish.
    outcomes = tl.map(fragile, range(8), mode="processes", workers=2, on_error="collect")
    failed = [o for o in outcomes if not o.ok]
    assert [o.value for o in outcomes if o.ok] == [0, 1, 2, 4, 5, 6, 7]
    assert len(failed) == 1
    crash = failed[0].error
    assert isinstance(crash, tl.WorkerCrashed)
    print(f"a worker killed by SIGKILL: WorkerCrashed for item {crash.item_repr} only; the other 7 finished")
    print(f"    attempts (pid, exit code): {crash.history}")

    # 4. The warm workers end with tl.shutdown() (or at exit): nothing is left behind.
    tl.shutdown()
    left = wait_gone(worker_processes())
    print(f"after tl.shutdown(): {len(left)} worker processes - no worker process left")
    assert not left


def main() -> None:
    stdlib_way()  # first: the stdlib pools fork, and taskloom's pools run threads in this process
    taskloom_way()


if __name__ == "__main__":
    main()
