"""Every example runs, test-sized (TASKLOOM_SMALL=1), and prints what it is there to show.

One example per example of the guide (``../shared/seed/concurrency-guide.md``); the user guide,
docs/guide.md, links each section to its script. A new script in examples/ must be added to
EXPECTED (``test_every_example_is_checked``), so an example can never rot unnoticed. Each runs in
a session of its own, and the test checks that no process of that session outlives it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.helpers import poll_until, run_in_own_session, session_members

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

#: modules in examples/ that are imported by the examples, not run on their own
HELPERS = {"local_server.py", "leftovers.py"}

#: example file -> fragments its output must contain (each proves the example's point, none a timing)
EXPECTED: dict[str, list[str]] = {
    # Sequential vs concurrent execution
    "sequential_vs_concurrent.py": ["results identical, in input order",
                                    "auto: The first task only waited, so 2 more started beside it",
                                    "speedup of threads over sequential"],
    # Threading fundamentals
    "basic_threads.py": ["join() returned normally, the caller saw no exception",
                         "the error only reached threading.excepthook",
                         "TaskError reached the caller: task 1, item ('Thread-2', -1.0), cause ValueError",
                         "outcome 1: TaskError: sleep length must be non-negative"],
    "counter_race.py": ["StressFailure: stress: repetition", "locked counter: stress:", "20,000 of 20,000"],
    "producer_consumer_threads.py": ["consumed item-0-0", "all 10 items consumed, in order"],
    # Multiprocessing fundamentals
    "process_pool.py": ["results identical to the sequential ones", "auto chose processes"],
    "shared_state.py": ["Final shared value: 15", "'Worker-3-Item-4'"],
    "producer_consumer_processes.py": ["processed data-0", "2 worker processes", "nothing left behind"],
    # When to use what
    "io_threads.py": ["all titles correct", "auto chose threads"],
    "fibonacci.py": ["tl.advise(fibonacci, [18, 19, 20]): processes",
                     "processes result equals the sequential result: [75025, 121393, 196418, 317811]",
                     "slowest tasks: #"],
    # Advanced concepts
    "thread_vs_process_pool.py": ["worker process(es), which import the main module",
                                  "results identical, in input order", "auto chose threads with"],
    "async_fetch.py": ["all titles correct", "with at most 100 at once"],
    "daemon_threads.py": [
        "daemon thread:", "killed before it finished",
        "taskloom.background:", "finished cleanly",
        "failed after 2 restarts and stop()/join() re-raised",
    ],
    # Best practices
    "context_managers.py": ["results is a lazy generator", "killed by terminate()",
                            "the second tl.map started no process", "still running a 60 s task: 0"],
    "exceptions.py": [".index=4 .item_repr=5 .attempts=1", "6 outcomes for 6 items: 5 results, 1 error",
                      "(its own ValueError, with the worker's traceback)", "item 3: -> 6 after 2 attempt(s)"],
    "worker_counts.py": ["Recommended I/O workers:", "taskloom uses 1 process(es) and 5 threads",
                         "I/O-bound (io_task): threads x", "auto chose threads"],
    "memory_management.py": ["each worker ran at most 5 tasks",
                             "every worker stayed within the limit plus one task's leak",
                             "the grown workers are gone"],
    "thread_safety.py": ["100 repetitions x 5 threads passed", "StressFailure: stress: repetition"],
    # Common pitfalls
    "race_condition.py": ["temp = counter; temp += 1; counter = temp: StressFailure: stress: repetition",
                          "lock around read, add and write: passes: stress:",
                          "taskloom.Counter.add(): passes: stress:",
                          "taskloom.Counter.update() on process workers: 800 of 800"],
    "deadlock.py": ["DeadlockError in 1 thread, instead of a hang", "LockOrderError: lock order violated",
                    "no deadlock"],
    "resource_cleanup.py": ["the real error survives only as its __context__", "queued tasks first",
                            "one KeyboardInterrupt, in the caller",
                            "WorkerCrashed for item 3 only; the other 7 finished"],
    # Performance comparison
    "performance_comparison.py": ["results identical across every engine", "auto chose threads for the I/O job",
                                  "taskloom processes (warm pool)"],
    # Beyond the guide: its use cases at scale
    "shared_array.py": ["what a task receives pickles to", "workers filled a shared (8, 1000) result array"],
    "download_parse_store.py": ["stored 20 pages", "download", "parse", "store"],
    "cluster.py": ["embedded cluster, second call", "5 results and 1 error", "all three agree"],
}


def test_every_example_is_checked() -> None:
    scripts = {path.name for path in EXAMPLES.glob("*.py")} - HELPERS
    assert scripts == set(EXPECTED), (
        f"examples without a check here: {sorted(scripts - set(EXPECTED))}; "
        f"checks without an example: {sorted(set(EXPECTED) - scripts)}")


def test_every_example_is_in_the_user_guide() -> None:
    guide = (ROOT / "docs" / "guide.md").read_text()
    missing = [name for name in sorted(EXPECTED) if f"examples/{name}" not in guide]
    assert not missing, f"docs/guide.md does not mention {missing}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_shows_its_point(name: str) -> None:
    env = {**os.environ, "TASKLOOM_SMALL": "1"}
    returncode, out, err, pid = run_in_own_session([sys.executable, str(EXAMPLES / name)], cwd=ROOT, env=env)
    assert returncode == 0, f"{name} failed:\n{out[-3000:]}\n{err[-3000:]}"
    for fragment in EXPECTED[name]:
        assert fragment in out, f"{name} did not print {fragment!r}:\n{out}"
    assert "leaked" not in err, f"{name} leaked a resource:\n{err}"
    assert poll_until(lambda: not session_members(pid), timeout=10), (
        f"{name} left processes behind: {session_members(pid)}")
