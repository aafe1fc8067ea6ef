"""The guide's "ThreadPoolExecutor vs ProcessPoolExecutor": a 0.1 s sleep, 20 numbers, 4 workers each.

The guide's code has a bug: its ThreadPoolExecutor timing sits at module level, outside the
`if __name__ == "__main__":` guard. With the spawn start method (the default on macOS and
Windows; Linux moves to forkserver in Python 3.14, which behaves the same here) every worker
process imports the main module, so each of the ProcessPoolExecutor's workers runs the whole
thread benchmark again before it takes its first task. Below, the guide's code runs as written
in a child process under spawn, and the child counts how often the thread section ran.

Done properly (everything inside main()), the comparison says what the guide meant: a sleep
waits, it does not compute, so 4 threads and 4 processes both take 20 x 0.1 s / 4 = 0.5 s;
processes only add start-up and pickling. taskloom runs the same with mode="threads" or
mode="processes"; with mode="auto" (the default) it measures the first task, sees that it waits
almost all of its time, and picks threads, as many as keep the CPUs busy while tasks wait
(Little's law: wait time / CPU time per task, times the CPUs, at most 128), not 4, so the 20
sleeps overlap.

Run: python examples/thread_vs_process_pool.py   (TASKLOOM_SMALL=1 for a test-sized run)
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
COUNT = 12 if SMALL else 20
SLEEP = 0.05 if SMALL else 0.1
WORKERS = 4

#: The guide's code as written (sizes from above), plus two lines: spawn, and a note each time the
#: module-level thread benchmark runs (with the pid, so the child can tell itself from its workers).
GUIDE = textwrap.dedent("""
    import multiprocessing, os, sys
    multiprocessing.set_start_method("spawn", force=True)   # added: macOS / Windows default
    import concurrent.futures
    import time

    def task(n):
        # Simulate work
        time.sleep({sleep})
        return n * n

    numbers = list(range({count}))

    # ThreadPoolExecutor
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as executor:
        start_time = time.time()
        thread_results = list(executor.map(task, numbers))
        thread_time = time.time() - start_time
    print(f"thread section ran in pid {{os.getpid()}}", file=sys.stderr, flush=True)   # added

    # ProcessPoolExecutor
    if __name__ == "__main__":
        with concurrent.futures.ProcessPoolExecutor(max_workers=4) as executor:
            start_time = time.time()
            process_results = list(executor.map(task, numbers))
            process_time = time.time() - start_time

        print(f"Thread time: {{thread_time:.2f}}s")
        print(f"Process time: {{process_time:.2f}}s")
""")


def task(n: int) -> int:
    # Simulate work
    time.sleep(SLEEP)
    return n * n


def guide_as_written() -> tuple[int, str]:
    """Run the guide's code in a child process; (how often the thread section ran, the child's output)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "guide.py"
        script.write_text(GUIDE.format(sleep=SLEEP, count=COUNT))
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    ran = [line for line in done.stderr.splitlines() if line.startswith("thread section ran")]
    return len(ran), done.stdout


def timed(label: str, fn: Callable[[], list[int]]) -> list[int]:
    start = time.perf_counter()
    results = fn()
    print(f"{label:<42} {time.perf_counter() - start:.2f} s")
    return results


def main() -> None:
    numbers = list(range(COUNT))
    expected = [n * n for n in numbers]

    # 1. The guide's code as written, under spawn.
    runs, output = guide_as_written()
    print(f"the guide's code under spawn prints: {' / '.join(output.splitlines()[:2])} (its process time "
          "includes the workers re-running the thread benchmark first)")
    print(f"the guide's thread benchmark ran {runs} times: once in the main process and once more in each of "
          f"{runs - 1} worker process(es), which import the main module")
    assert runs > 1

    # 2. Done properly: inside main(), under the guard.
    print(f"{COUNT} tasks of {SLEEP} s, {WORKERS} workers each (one after the other: {COUNT * SLEEP:.1f} s):")

    def stdlib_threads() -> list[int]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as executor:
            return list(executor.map(task, numbers))

    def stdlib_processes() -> list[int]:
        with concurrent.futures.ProcessPoolExecutor(max_workers=WORKERS) as executor:
            return list(executor.map(task, numbers))

    results = [
        timed("ThreadPoolExecutor(max_workers=4)", stdlib_threads),
        timed("ProcessPoolExecutor(max_workers=4)", stdlib_processes),
        timed("tl.map(mode='threads', workers=4)", lambda: tl.map(task, numbers, mode="threads", workers=WORKERS)),
        timed("tl.map(mode='processes', workers=4)",
              lambda: tl.map(task, numbers, mode="processes", workers=WORKERS)),
    ]
    runs_of_auto: list[tl.Run[int]] = []

    def auto() -> list[int]:
        runs_of_auto.append(tl.imap(task, numbers))  # mode="auto": measures the first task here
        return list(runs_of_auto[0])

    results.append(timed("tl.imap(mode='auto'), measuring included", auto))
    assert all(r == expected for r in results)
    print("results identical, in input order")

    run = runs_of_auto[0]
    assert run.advice is not None
    assert run.mode == "threads"
    print(f"auto chose {run.mode} with {run.workers} workers")
    for reason in run.advice.reasons:
        print(f"  because: {reason}")
    tl.shutdown()


if __name__ == "__main__":
    main()
