"""The guide's "3. Choose Appropriate Number of Workers", and what taskloom counts instead.

The guide sizes CPU-bound pools with ``multiprocessing.cpu_count()`` and I/O pools with
``min(32, cpu_count() + 4)``. ``cpu_count()`` is the machine's CPUs, not this process's: it
ignores the CPU affinity mask (``taskset``, ``os.sched_getaffinity``) and a container's cgroup
CPU quota (``docker run --cpus=2`` on a 64-CPU host still says 64), so the pool oversubscribes
what the process may really use. (Python 3.13's ``os.process_cpu_count()`` sees affinity, not
quotas.) And ``cpus + 4`` threads is a guess: an I/O task that waits 99% of its time keeps 100
threads busy per CPU.

taskloom counts the *usable* CPUs (affinity and cgroup quota: ``Processes().default_workers()``,
shown by ``taskloom info``), and ``tl.advise`` / ``mode="auto"`` measure the task: CPU-bound work
gets one process per usable CPU; blocking I/O gets enough threads to keep the CPUs busy while the
tasks wait, by Little's law (wait time / CPU time per task, times the CPUs; at least
``min(32, cpus + 4)``, at most 128).

Run: python examples/worker_counts.py   (TASKLOOM_SMALL=1 for a test-sized run)
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
IO_TASKS = 100 if SMALL else 400
TASKS = 100  # the size of the job tl.advise is asked about
IO_SECONDS = 0.02

#: A child process pinned to one CPU (as `taskset -c 0 python ...` would): what does each count say?
PINNED_CHILD = textwrap.dedent("""
    import json, multiprocessing, os
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import taskloom as tl
    print(json.dumps({"cpu_count": multiprocessing.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                      "processes": tl.Processes().default_workers(), "threads": tl.Threads().default_workers()}))
""")


def cpu_task(n: int) -> int:
    return sum(i * i for i in range(n))


def io_task(seconds: float) -> float:
    time.sleep(seconds)  # a network call, a database query...
    return seconds


def show_counts() -> None:
    print("-- what the guide counts")
    cpu_workers = multiprocessing.cpu_count()
    io_workers = min(32, (multiprocessing.cpu_count() or 1) + 4)
    print(f"CPU cores: {cpu_workers}")
    print(f"Recommended I/O workers: {io_workers}")

    print("-- what this process may use (taskloom info --json)")
    info = json.loads(subprocess.run([sys.executable, "-m", "taskloom._cli", "info", "--json"],
                                     capture_output=True, text=True, check=True, timeout=60).stdout)
    affinity, quota = info["cpu_affinity"], info["cgroup_cpu_quota"]
    print(f"os.sched_getaffinity(0): {affinity if affinity is not None else 'n/a on this OS'} CPU(s)")
    print(f"cgroup CPU quota: {'none' if quota is None else f'{quota:g} CPU(s)'}")
    print(f"taskloom info: CPUs usable {info['usable_cpus']}, os.cpu_count() {info['os_cpu_count']}, "
          f"default workers {info['default_workers']}")
    assert info["usable_cpus"] == tl.Processes().default_workers()

    if hasattr(os, "sched_setaffinity"):
        pinned = json.loads(subprocess.run([sys.executable, "-c", PINNED_CHILD], capture_output=True, text=True,
                                           check=True, timeout=60).stdout)
        print(f"pinned to 1 CPU: multiprocessing.cpu_count() says {pinned['cpu_count']}, "
              f"taskloom uses {pinned['processes']} process(es) and {pinned['threads']} threads")
        assert pinned["processes"] == 1
        assert pinned["threads"] == 5  # min(32, 1 + 4)


def show_advice() -> None:
    budget = 0.2 if SMALL else 1.0
    print("-- tl.advise: measure the task, then size the pool")
    advice = {}
    for name, fn, sample in (("CPU-bound", cpu_task, [300_000] * 8), ("I/O-bound", io_task, [IO_SECONDS] * 8)):
        advice[name] = tl.advise(fn, sample, budget=budget, total=TASKS)
        m = advice[name].measurements
        print(f"{name} ({fn.__name__}): {advice[name].mode} x{advice[name].workers}  "
              f"[{m['seconds_per_task'] * 1e3:.1f} ms a task, {100 * m['cpu_ratio']:.0f}% of it computing]")
        for reason in advice[name].reasons:
            print(f"    {reason}")
    # Which engine the CPU-bound task gets rests on measurements (processes here on 2+ idle CPUs);
    # the sleeping task's wait/CPU ratio is in the thousands whatever the machine.
    assert advice["I/O-bound"].mode == "threads"
    assert advice["I/O-bound"].workers > tl.Threads().default_workers()  # Little's law: far more than cpus + 4

    print(f"-- the I/O job: {IO_TASKS} tasks of {IO_SECONDS * 1e3:.0f} ms")
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor() as executor:  # the stdlib default: min(32, cpus + 4)
        stdlib = list(executor.map(io_task, [IO_SECONDS] * IO_TASKS))
    stdlib_time = time.perf_counter() - start
    start = time.perf_counter()
    run = tl.imap(io_task, [IO_SECONDS] * IO_TASKS)  # mode="auto"
    auto = list(run)
    auto_time = time.perf_counter() - start
    assert stdlib == auto == [IO_SECONDS] * IO_TASKS
    threads = min(32, (getattr(os, "process_cpu_count", os.cpu_count)() or 1) + 4)  # 3.13+: process_cpu_count
    print(f"ThreadPoolExecutor() ({threads} threads): {stdlib_time:.2f} s")
    print(f"taskloom auto ({run.advice.mode} x{run.workers}): {auto_time:.2f} s")
    print(f"auto chose {run.advice.mode}")
    tl.shutdown()


def main() -> None:
    show_counts()
    show_advice()


if __name__ == "__main__":
    main()
