"""The guide's "1. Always Use Context Managers": what its two snippets still get wrong, and taskloom's way.

The guide's first snippet, ``with ThreadPoolExecutor() as executor: results = executor.map(...)``,
keeps a *lazy* iterator: the ``with`` waits for the tasks, but a task's exception is raised only
when ``results`` is iterated - never iterated, never seen. The second, ``with multiprocessing.Pool()
as pool: results = pool.map(...)``, is right as written (``map`` blocks), but ``Pool.__exit__``
calls ``terminate()``, not ``close()`` + ``join()``: an ``apply_async``/``map_async``/``imap``
result not collected inside the block is killed with its worker, and its ``get()`` then waits
forever (here: bounded by a timeout). With taskloom:

* ``tl.map`` returns a list, and the first failure raises ``TaskError``: there is nothing to forget;
* ``with tl.imap(...) as run:`` - or leaving ``for x in run`` early - cancels what is left: tasks not
  started are dropped, and a worker still running one is stopped (SIGTERM, SIGKILL 0.5 s later);
* ``with tl.Executor(...)`` waits for its futures, as the stdlib's does (its ``map`` is the
  stdlib's lazy one too: use ``tl.map`` for a list);
* pools are warm: a second call with the same mode and worker count runs on the same worker
  processes, with no start-up. Idle workers exit after ``Processes(idle_timeout=120)`` seconds,
  and ``tl.shutdown()`` - also run at interpreter exit - stops them all.

Run: python examples/context_managers.py   (TASKLOOM_SMALL=1 for a test-sized run)
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

from leftovers import wait_gone, worker_processes

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
N = 20 if SMALL else 200
NUMBERS = [1, 2, 3, 4, 5, 6]


def risky_task(n: int) -> int:
    """The guide's task from "2. Handle Exceptions Properly"."""
    if n == 5:
        raise ValueError("Number 5 not allowed!")
    return n * 2


def slow_square(x: int) -> int:
    time.sleep(0.2)
    return x * x


def whose(x: int) -> int:
    """A short task that says which process ran it."""
    time.sleep(0.005)
    return os.getpid()


def first_quick_then_long(marks: str, i: int) -> int:
    """Item 0 returns at once; every other item notes its worker's pid in ``marks``, then runs 60 s."""
    if i == 0:
        return os.getpid()
    Path(marks, str(os.getpid())).write_text(str(i))
    time.sleep(60)
    return os.getpid()


def stdlib_way() -> None:
    # 1. The guide's ThreadPoolExecutor snippet: the block ends cleanly, the error waits unseen.
    with concurrent.futures.ThreadPoolExecutor() as executor:
        results = executor.map(risky_task, NUMBERS)
    print(f"ThreadPoolExecutor: the with block ended without an error; results is a lazy {type(results).__name__}")
    try:
        list(results)
        raise AssertionError("the failure should surface here")
    except ValueError as exc:
        print(f"  ...the task's ValueError surfaces only when results is iterated: {exc}")

    # 2. multiprocessing.Pool: __exit__ is terminate(), so a result collected after the block never comes.
    with multiprocessing.Pool(2) as pool:
        pending = pool.apply_async(slow_square, (3,))  # a 0.2 s task
    try:
        pending.get(timeout=1.0)
        raise AssertionError("the terminated pool should not deliver")
    except multiprocessing.TimeoutError:
        print("multiprocessing.Pool: an apply_async result not collected inside the block was killed by "
              "terminate(); get() would wait forever (TimeoutError after 1 s)")


def taskloom_way() -> None:
    # 1. tl.map: a list, in order; a failure raises at once, naming the item.
    print(f"tl.map returns a list: {tl.map(risky_task, [1, 2, 3])}")
    try:
        tl.map(risky_task, NUMBERS)
        raise AssertionError("tl.map should raise")
    except tl.TaskError as exc:
        print(f"tl.map raised TaskError: {exc}")

    # 2. Warm pools: a second call with the same mode and worker count reuses the same processes.
    mode = tl.Processes()
    first = set(tl.map(whose, range(N), mode=mode, workers=2))
    pool_after_first = worker_processes()
    second = set(tl.map(whose, range(N), mode=mode, workers=2))
    pool_after_second = worker_processes()
    assert pool_after_first == pool_after_second
    assert len(pool_after_first) == 2
    assert first | second <= pool_after_first
    print(f"warm pool: the second tl.map started no process, same 2 workers {sorted(pool_after_second)}")

    # 3. Leaving a `with tl.imap(...)` block (here by break) cancels the run and stops busy workers.
    with tempfile.TemporaryDirectory() as marks:
        started = time.perf_counter()
        with tl.imap(functools.partial(first_quick_then_long, marks), range(10), mode=mode, workers=2,
                     chunksize=1) as run:
            for _ in run:
                deadline = time.monotonic() + 10
                while len(os.listdir(marks)) < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)  # both workers are now inside a 60 s task
                break
        busy = {int(name) for name in os.listdir(marks)}
        left = wait_gone(busy)
        print(f"break out of `with tl.imap(...)`: {len(busy)} worker(s) busy with 60 s tasks were stopped; "
              f"still running a 60 s task: {len(left)} ({time.perf_counter() - started:.2f} s in all)")
        assert busy
        assert not left

    # 4. tl.Executor: the block waits for every future; a failure stays on its future.
    with tl.Executor("processes", workers=2) as ex:
        futures = [ex.submit(risky_task, n) for n in NUMBERS]
    assert all(f.done() for f in futures)
    errors = [f.exception() for f in futures if f.exception() is not None]
    values = [f.result() for f in futures if f.exception() is None]
    assert values == [2, 4, 6, 8, 12]
    assert len(errors) == 1
    print(f"tl.Executor: after the block all {len(futures)} futures are done: {len(values)} results, "
          f"1 error kept on its future ({errors[0]!r})")

    # 5. The warm workers live until tl.shutdown() (or interpreter exit).
    before = worker_processes()
    tl.shutdown()
    left = wait_gone(before)
    print(f"before tl.shutdown(): {len(before)} warm worker(s); after: {len(left)} - no worker process left")
    assert not left
    assert not worker_processes()


def main() -> None:
    stdlib_way()  # first: the stdlib pool forks, and taskloom's pools run threads in this process
    taskloom_way()


if __name__ == "__main__":
    main()
