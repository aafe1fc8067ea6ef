"""How fast taskloom's process pool recovers from faults: measured, not asserted.

The fault tests (tests/faults/) assert generous bounds ("within 10 s"); this script measures the
real figures and compares them with the targets:

* Ctrl-C (SIGINT to the process group) -> parent exit, and -> every worker gone;
* SIGTERM to the parent -> every worker gone;  SIGKILL to the parent -> every worker gone;
* ``timeout=`` -> TaskTimeout reported, the late worker gone, a replacement worker serving tasks;
* a worker SIGKILLed mid-task -> WorkerCrashed seen by the caller, or the retry running.

Run it from the repository root::

    .venv/bin/python benchmarks/faults.py [--repeat 5]

Each figure is the median and the worst of ``--repeat`` runs; "pass" means the worst run met the
target. Times come from ``time.monotonic()``, which is one clock for every process on Linux.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REFERENCE = (
    "For reference (measured 2026-11-25, Python 3.11, idle workers): ProcessPoolExecutor's workers were "
    "still alive 40 s after their parent was SIGKILLed; loky's (joblib 1.6) were gone after ~40 s."
)

# -- the parent process that the stop measurements signal ---------------------------------------------
PARENT = """
import json
import os
import time

import taskloom as tl


def slow_square(x):
    time.sleep(0.2)
    return x * x


def main():
    run = tl.imap(slow_square, range(100_000), mode=tl.Processes(), workers=2)
    it = iter(run)
    while len(run.statistics().per_worker) < 2:
        next(it)
    pool = next(b for b in tl._pools.live_backends() if b.name == "processes")
    print("READY", json.dumps(pool.worker_pids()), flush=True)
    for _ in it:
        pass


if __name__ == "__main__":
    main()
"""


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _family(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_parent(how: str, workdir: Path) -> dict[str, float]:
    """Start a parent, signal it (``how``: "sigint-group", "sigterm", "sigkill"); return the times."""
    script = workdir / "parent.py"
    script.write_text(textwrap.dedent(PARENT))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(workdir))
    lines: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(raw) for raw in stdout], daemon=True).start()
    family: list[int] = []
    try:
        line = lines.get(timeout=60).decode()
        if not line.startswith("READY "):
            raise RuntimeError(f"the parent said {line!r} instead of READY")
        workers = json.loads(line.removeprefix("READY "))
        family = sorted(set(_family(proc.pid)) | set(workers))
        t0 = time.monotonic()
        if how == "sigint-group":
            os.killpg(proc.pid, signal.SIGINT)
        elif how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            proc.kill()
        seen: dict[str, float] = {}
        deadline = t0 + 60
        while time.monotonic() < deadline and len(seen) < 3:
            now = time.monotonic()
            if "exit" not in seen and proc.poll() is not None:
                seen["exit"] = now - t0
            if "workers" not in seen and all(_gone(p) for p in workers):
                seen["workers"] = now - t0
            if "family" not in seen and all(_gone(p) for p in family):
                seen["family"] = now - t0
            time.sleep(0.001)
        return {key: seen.get(key, math.nan) for key in ("exit", "workers", "family")}
    finally:
        for pid in [proc.pid, *family]:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)
        stdout.close()


# -- in-process measurements: timeouts and crashes -------------------------------------------------------
def _mark(directory: str) -> None:
    """Write (pid, monotonic start time) to a new file in ``directory``."""
    path = Path(directory, f"{os.getpid()}-{time.monotonic_ns()}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([os.getpid(), time.monotonic()]))
    tmp.rename(path.with_suffix(".mark"))


def _marks(directory: str) -> list[tuple[int, float]]:
    found = [json.loads(p.read_text()) for p in Path(directory).glob("*.mark")]
    return sorted(((int(pid), float(at)) for pid, at in found), key=lambda mark: mark[1])


def hang(directory: str) -> None:
    _mark(directory)
    time.sleep(300)


def hang_ignoring_sigterm(directory: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _mark(directory)
    time.sleep(300)


def first_attempt_hangs(directory: str) -> int:
    first = not list(Path(directory).glob("*.mark"))
    _mark(directory)
    if first:
        time.sleep(300)
    return os.getpid()


def getpid(_: object = None) -> int:
    return os.getpid()


def _wait_marks(directory: str, count: int, timeout: float = 30) -> list[tuple[int, float]]:
    deadline = time.monotonic() + timeout
    while len(found := _marks(directory)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no task started within {timeout} s")
        time.sleep(0.0005)
    return found


def _wait_gone(pid: int, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            return math.nan
        time.sleep(0.001)
    return time.monotonic()


def timeout_replacement(task: Callable[[str], Any], timeout: float = 0.5) -> dict[str, float]:
    """A task overruns ``timeout`` on a one-worker pool: when is it reported, killed, replaced?"""
    import taskloom as tl

    directory = tempfile.mkdtemp(prefix="taskloom-bench-")
    mode = tl.Processes(crash_retries=0)
    tl.map(getpid, [0], mode=mode, workers=1)  # a warm pool: start-up is not what we measure
    run = tl.imap(task, [directory], mode=mode, workers=1, timeout=timeout, on_error="collect")
    gone: list[float] = []

    def watch() -> None:
        [(pid, _)] = _wait_marks(directory, 1)
        gone.append(_wait_gone(pid))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    [outcome] = list(run)
    reported = time.monotonic()
    assert isinstance(outcome.error, tl.TaskTimeout), outcome
    [(late_pid, started)] = _marks(directory)
    deadline = started + timeout
    [new_pid] = tl.map(getpid, [0], mode=mode, workers=1)
    served = time.monotonic()
    assert new_pid != late_pid
    watcher.join(30)
    tl.shutdown()
    return {"reported": reported - deadline, "gone": gone[0] - deadline if gone else math.nan,
            "replaced": served - deadline}


def crash_detection(crash_retries: int) -> dict[str, float]:
    """SIGKILL a worker mid-task: when does the caller see WorkerCrashed, or the retry start?"""
    import taskloom as tl

    directory = tempfile.mkdtemp(prefix="taskloom-bench-")
    mode = tl.Processes(crash_retries=crash_retries)
    tl.map(getpid, range(4), mode=mode, workers=2, chunksize=1)  # warm pool
    killed: list[float] = []

    def killer() -> None:
        [(pid, _)] = _wait_marks(directory, 1)
        killed.append(time.monotonic())
        os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    task = first_attempt_hangs if crash_retries else hang
    [outcome] = list(tl.imap(task, [directory], mode=mode, workers=2, on_error="collect"))
    seen = time.monotonic()
    thread.join(10)
    result: dict[str, float] = {}
    if crash_retries:
        assert outcome.ok, outcome
        runs = _marks(directory)
        retry_started = runs[-1][1] if len(runs) == 2 else math.nan
        result["retry"] = retry_started - killed[0]
    else:
        assert isinstance(outcome.error, tl.WorkerCrashed), outcome
        result["crashed"] = seen - killed[0]
    tl.shutdown()
    return result


# -- the table -------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (default 5)")
    args = parser.parse_args()

    samples: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    with tempfile.TemporaryDirectory(prefix="taskloom-bench-") as tmp:
        for i in range(args.repeat):
            for how in ("sigint-group", "sigterm", "sigkill"):
                workdir = Path(tmp, f"{how}-{i}")
                workdir.mkdir()
                t = stop_parent(how, workdir)
                if how == "sigint-group":
                    add("Ctrl-C (SIGINT to group) -> parent exit", t["exit"])
                    add("Ctrl-C (SIGINT to group) -> all workers gone", t["workers"])
                    add("Ctrl-C -> every process it started gone", t["family"])
                elif how == "sigterm":
                    add("SIGTERM to parent -> all workers gone", t["workers"])
                else:
                    add("SIGKILL to parent -> all workers gone", t["workers"])
                    add("SIGKILL to parent -> every process it started gone", t["family"])
            t = timeout_replacement(hang)
            add("timeout= deadline -> TaskTimeout reported", t["reported"])
            add("timeout= deadline -> late worker gone", t["gone"])
            add("timeout= deadline -> replacement worker served a task", t["replaced"])
            t = timeout_replacement(hang_ignoring_sigterm)
            add("timeout=, task ignores SIGTERM -> worker gone", t["gone"])
            add("crash (SIGKILL mid-task) -> WorkerCrashed seen", crash_detection(0)["crashed"])
            add("crash (SIGKILL mid-task) -> retry running on fresh worker", crash_detection(1)["retry"])

    targets = {
        "Ctrl-C (SIGINT to group) -> parent exit": 1.0,
        "Ctrl-C (SIGINT to group) -> all workers gone": 1.0,
        "Ctrl-C -> every process it started gone": 1.0,
        "SIGTERM to parent -> all workers gone": 1.0,
        "SIGKILL to parent -> all workers gone": 2.0,
        "SIGKILL to parent -> every process it started gone": 2.0,
        # Our own targets (the issue sets only "stop within 1 s, parent-death cleanup within 2 s").
        "timeout= deadline -> TaskTimeout reported": 0.1,
        "timeout= deadline -> late worker gone": 1.0,
        "timeout= deadline -> replacement worker served a task": 1.0,
        "timeout=, task ignores SIGTERM -> worker gone": 1.0,
        "crash (SIGKILL mid-task) -> WorkerCrashed seen": 0.1,
        "crash (SIGKILL mid-task) -> retry running on fresh worker": 0.5,
    }
    width = max(len(name) for name in targets)
    print(f"taskloom fault latencies, {args.repeat} run(s) each, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs")
    print()
    print(f"{'fault':<{width}}  {'median':>9}  {'worst':>9}  {'target':>7}  result")
    print(f"{'-' * width}  {'-' * 9}  {'-' * 9}  {'-' * 7}  ------")
    for name, target in targets.items():
        values = samples.get(name, [])
        finite = [v for v in values if not math.isnan(v)]
        if len(finite) < len(values) or not values:
            print(f"{name:<{width}}  {'n/a':>9}  {'never':>9}  {target:>6.1f}s  MISS")
            continue
        median, worst = statistics.median(finite), max(finite)
        verdict = "pass" if worst <= target else "MISS"
        print(f"{name:<{width}}  {median * 1000:>7.1f}ms  {worst * 1000:>7.1f}ms  {target:>6.1f}s  {verdict}")
    print()
    print("Targets from the issue: stop within 1 s, parent-death cleanup within 2 s; the timeout and crash")
    print("targets are ours. 'every process it started' adds the forkserver and the resource tracker.")
    print(REFERENCE)


if __name__ == "__main__":
    main()
