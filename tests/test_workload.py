"""mode="auto" and taskloom.advise: the cost model on synthetic numbers, then real workloads."""

from __future__ import annotations

import hashlib
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import taskloom as tl
from taskloom import _sampling
from taskloom._backends._base import Batch, CpuTime, Job
from taskloom._modes import by_name
from taskloom._pools import get_backend
from taskloom._sampling import MAX_IO_THREADS, Sample, _measure_threads, progress
from taskloom._system import default_threads, gil_enabled, runnable_load
from taskloom._workload import (
    ASSUMED_TASKS,
    Reconsider,
    _item_kind,
    _recall,
    _remember,
    _settled,
    choose,
    decide,
    forget,
    io_workers,
)


def synthetic(per_task: float, cpu_ratio: float, *, n: int = 4, thread_speedup: float | None = 1.0,
              item_bytes: float = 30, parent_pickle: float = 1e-6) -> Sample:
    return Sample(head=[(i, i, None, per_task) for i in range(n)], timed=n, wall=per_task * n,
               cpu=per_task * n * cpu_ratio, thread_speedup=thread_speedup, item_bytes=item_bytes,
               result_bytes=item_bytes, parent_pickle=parent_pickle, worker_pickle=parent_pickle)


def test_tiny_tasks_stay_sequential() -> None:
    advice = decide(synthetic(1e-7, 1.0), 200_000, cpus=8)
    assert advice.mode == "sequential"
    assert advice.expected_speedup["processes"] < 1
    assert any("would cost" in r or "as fast" in r for r in advice.reasons)


def test_cpu_bound_work_goes_to_processes() -> None:
    advice = decide(synthetic(0.05, 1.0), 1000, cpus=4)
    assert advice.mode == "processes"
    assert advice.workers == 4
    assert advice.expected_speedup["processes"] == pytest.approx(3.9, rel=0.1)
    assert any("GIL" in r for r in advice.reasons)


def test_waiting_work_goes_to_threads_sized_by_littles_law() -> None:
    s = synthetic(0.1, 0.01)  # 100 ms tasks, 1 ms of CPU each
    advice = decide(s, 1000, cpus=2)
    assert advice.mode == "threads"
    # 100x more waiting than computing, on 2 CPUs: 200 concurrent tasks (ThreadPoolExecutor(200)).
    assert advice.workers == 200 == io_workers(s, 2)
    assert decide(synthetic(0.1, 0.001), 1000, cpus=2).workers == MAX_IO_THREADS  # 2,000: capped


def test_run_queue_wait_is_not_io_but_does_not_size_io_threads() -> None:
    # On a busy machine a task computed 1 ms and waited 9 ms for a CPU, in 100 ms: it is still
    # I/O (90% waiting), and its pool is sized from its computing (1 ms), not from the 10 ms.
    s = synthetic(0.1, 0.1)
    s.compute = 0.001 * s.timed
    assert io_workers(s, 2) == 200
    # Computing that only looks like waiting because of the run-queue stays CPU work.
    busy = synthetic(0.1, 0.9)
    busy.compute = 0.05 * busy.timed
    assert decide(busy, 1000, cpus=2).mode == "processes"


class Sized:
    """Says its size as a numpy array does; pickling it would fail the test."""

    nbytes = 40_000_000
    dtype = type("dtype", (), {"hasobject": False})()

    def __reduce__(self) -> tuple[object, ...]:
        raise AssertionError("auto pickled an item whose type says its size")


def test_items_whose_type_says_their_size_are_not_pickled_to_measure() -> None:
    import numpy as np

    from taskloom._sampling import _measure_pickling, known_size

    assert known_size(b"x" * 10) == known_size("x" * 10) == 26
    assert known_size(np.zeros(1000)) == 8000 + 128
    assert known_size((np.zeros(10), b"ab")) == 80 + 128 + 2 + 16 + 8
    assert known_size(np.array([object()])) is None
    assert known_size({"a": 1}) is None
    s = Sample(head=[(Sized(), 1, None, 0.01) for _ in range(3)], timed=3, wall=0.03, cpu=0.03)
    _measure_pickling(s)
    assert s.picklable
    assert s.item_bytes == 40_000_000 + 128
    assert 0.01 < s.parent_pickle < 0.5  # charged from its size, as a 40 MB pickle would cost


def np_sums(array: Any) -> float:
    return float(sum(float(array.sum()) for _ in range(4)))


def test_few_long_gil_releasing_tasks_are_probed_and_go_to_threads() -> None:
    # Eight tasks of four 40 MB sums: too few tasks for the usual sample, but guessing processes
    # would pickle 320 MB. The probe runs some of them on two threads at once (numpy releases the
    # GIL) and leaves most for the parallel run. (One sum a task was 1.5 ms on this machine by
    # 2026-12: seven left were then under SCALING_WORTH, and 3.13t rightly did not probe them.)
    import numpy as np

    from taskloom._sampling import run_sample

    arrays = [np.ones(5_000_000) for _ in range(8)]
    s = run_sample(np_sums, iter(arrays), 0.05, total=8)
    assert s.thread_speedup is not None or 2 in s.scaling, "the probe of parallel threads did not run"
    assert 2 <= s.n <= 4, s.n


def test_tiny_tasks_are_not_probed_on_threads() -> None:
    from taskloom._sampling import run_sample

    s = run_sample(square, iter(range(1000)), 0.05, total=1000)
    assert s.thread_speedup is None
    if gil_enabled():
        assert s.n == 64
    else:  # without a GIL, a long job of them is, many at a time; this one is too short to be worth it
        assert s.scaling == {}


def test_gil_releasing_cpu_work_goes_to_threads() -> None:
    advice = decide(synthetic(0.01, 1.0, thread_speedup=1.95), 1000, cpus=2, free_threaded=False)
    assert advice.mode == "threads"
    assert advice.expected_speedup["threads"] > 1.8
    assert advice.workers == 2  # one per CPU


def test_gil_releasing_cpu_work_on_a_busy_machine_gets_the_stdlib_default_of_threads() -> None:
    # The kernel shares busy CPUs out per thread: beside two busy loops, 2 threads hashed at
    # 0.65x the speed of 6 (benchmarks/auto.py --busy). 4 MB items: processes lose outright.
    s = synthetic(0.01, 1.0, thread_speedup=1.95, item_bytes=4e6, parent_pickle=5e-3)
    s.load = 0.6  # the tasks run alone waited 0.6 s for a CPU per second they computed
    advice = decide(s, 1000, cpus=2, free_threaded=False)
    assert (advice.mode, advice.workers) == ("threads", max(2, default_threads()))
    assert any("The machine is busy" in r for r in advice.reasons), advice
    s.load = 0.1
    assert decide(s, 1000, cpus=2, free_threaded=False).workers == 2


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="Linux's /proc/loadavg")
def test_the_machine_reads_busy_beside_busy_loops(every_cpu_busy: None) -> None:
    # One busy loop per usable CPU: a thread there waits about a second for a CPU per second
    # it computes. The snapshot reads what a task of a few ms, never preempted, cannot.
    readings = []
    for _ in range(20):
        readings.append(runnable_load())
        time.sleep(0.005)
    assert all(r is not None for r in readings)
    assert sorted(r for r in readings if r is not None)[10] >= 0.5 * len(os.sched_getaffinity(0)) / (
        os.cpu_count() or 1), readings


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="Linux's /proc/loadavg")
def test_a_remembered_measurement_is_decided_for_how_busy_the_machine_is_now(every_cpu_busy: None) -> None:
    # Measured on an idle machine: GIL-releasing, one thread per CPU. Mapped again with every CPU
    # busy: the stdlib's default of threads, as a fresh measurement would give (the remembered
    # sample's load was stale, for up to REMEMBER_SECONDS).
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    data = b"x" * 4_000_000
    idle = synthetic(0.01, 1.0, thread_speedup=1.95, item_bytes=4e6, parent_pickle=5e-3)
    assert decide(idle, 8, free_threaded=False).workers == usable_cpus_here()
    _remember(digest, _item_kind(data), idle)
    choice = choose(digest, iter([data] * 8), 8, None, False, 0)
    assert "earlier run" in choice.advice.reasons[0]
    expected = ("threads", max(usable_cpus_here(), default_threads()))
    assert (choice.advice.mode, choice.workers) == expected, choice.advice


def usable_cpus_here() -> int:
    return len(os.sched_getaffinity(0))


def test_on_a_busy_machine_threads_get_the_benefit_of_the_doubt_over_sequential() -> None:
    # Eight numpy sums beside two busy loops: the probe read 1.0-1.1x (two threads there run little
    # at the same time), processes pickle 40 MB per task, and auto ran them sequentially, 1.85x
    # slower than threads. Busy, threads win over sequential when processes cannot.
    s = synthetic(0.0015, 1.0, thread_speedup=1.05, item_bytes=40e6, parent_pickle=0.05)
    assert decide(s, 5, cpus=2, free_threaded=False).mode == "sequential"  # idle: the reading stands
    s.load = 1.0
    advice = decide(s, 5, cpus=2, free_threaded=False)
    assert (advice.mode, advice.workers) == ("threads", max(2, default_threads())), advice
    assert any("benefit" in r or "may fall short" in r for r in advice.reasons), advice
    # Not for work processes run faster, not for tasks too short to probe, not for a last task.
    small = synthetic(0.01, 1.0, thread_speedup=1.0)
    small.load = 1.0
    assert decide(small, 1000, cpus=2, free_threaded=False).mode == "processes"
    tiny = synthetic(2e-6, 1.0, thread_speedup=None, item_bytes=40e6, parent_pickle=0.05)
    tiny.load = 1.0
    assert decide(tiny, 1000, cpus=2, free_threaded=False).mode == "sequential"
    assert decide(s, 1, cpus=2, free_threaded=False).mode == "sequential"
    assert decide(s, 5, cpus=1, free_threaded=False).mode == "sequential"


def test_the_gil_probe_does_not_run_where_no_reading_could_change_the_choice() -> None:
    # Busy, 4 MB items (processes pickle more than the work): threads whatever two threads read,
    # so the probe does not run; it ran 14 of 32 sha256 tasks on two threads where the pool runs
    # six (a busy machine's CPUs are shared per thread): first runs took 1.5x the fixed mode's time.
    s = synthetic(0.003, 1.0, thread_speedup=None, item_bytes=4e6, parent_pickle=0.005)
    s.load = 1.0
    assert _settled(28, cpus=2, free_threaded=False)(s)
    s.moot_probe = True
    advice = decide(s, 28, cpus=2, free_threaded=False)
    assert (advice.mode, advice.workers) == ("threads", max(2, default_threads())), advice
    assert any("none was taken" in r for r in advice.reasons), advice
    # Idle, a reading decides between threads and sequential; small items, threads and processes.
    s.load, s.moot_probe = 0.0, False
    assert not _settled(28, cpus=2, free_threaded=False)(s)
    small = synthetic(0.003, 1.0, thread_speedup=None)
    small.load = 1.0
    assert not _settled(1000, cpus=2, free_threaded=False)(small)
    # After a reading: settled when a higher one would change nothing.
    assert _settled(1000, cpus=2, free_threaded=False)(synthetic(0.003, 1.0, thread_speedup=1.9))
    assert not _settled(1000, cpus=2, free_threaded=False)(synthetic(0.003, 1.0, thread_speedup=1.2))


def test_run_sample_asks_whether_the_probe_is_worth_running() -> None:
    import numpy as np

    from taskloom._sampling import run_sample

    arrays = [np.ones(5_000_000) for _ in range(8)]
    asked: list[Sample] = []
    skipped = run_sample(np_sums, iter(arrays), 0.05, total=8, free_threaded=False,
                         settled=lambda s: asked.append(s) or True)
    assert asked
    assert asked[0].item_bytes > 40e6 * 0.9  # priced before it is asked
    assert (skipped.moot_probe, skipped.thread_speedup, skipped.n) == (True, None, 1), skipped
    probed = run_sample(np_sums, iter(arrays), 0.05, total=8, free_threaded=False, settled=lambda s: False)
    assert not probed.moot_probe
    assert probed.thread_speedup is not None
    assert probed.n >= 3, probed


def test_a_busy_machine_breaks_no_near_tie_for_threads() -> None:
    # Idle, threads modelled within 1.1x of processes win (nothing to pickle). Busy, two threads
    # also get a larger share of the CPUs than one, and a GIL-bound pair read up to 1.66x: the
    # reading cannot tell that from the GIL's release, so processes must lose outright.
    s = synthetic(0.01, 1.0, thread_speedup=1.85)
    assert decide(s, 1000, cpus=2, free_threaded=False).mode == "threads"
    s.load = 0.6
    assert decide(s, 1000, cpus=2, free_threaded=False).mode == "processes"
    # Work that also waits keeps the near-tie: threads overlap its waits, which the model does not count.
    waits = synthetic(0.01, 0.7, thread_speedup=1.85)
    waits.load = 0.6
    assert decide(waits, 1000, cpus=2, free_threaded=False).mode == "threads"


def test_free_threaded_interpreter_runs_cpu_work_on_threads_when_they_scale() -> None:
    s = synthetic(0.01, 1.0, thread_speedup=None)
    s.scaling = {2: 1.95, 4: 3.8}
    advice = decide(s, 1000, cpus=4, free_threaded=True)
    assert advice.mode == "threads"
    assert any("without the GIL" in r and "4 threads ran it 3.80x as fast as one" in r for r in advice.reasons)
    s.scaling = {2: 0.7}  # they contend: slower together than one alone (tests/test_free_threaded.py: more)
    assert decide(s, 1000, cpus=4, free_threaded=True).mode == "processes"
    # A near-tie goes to threads on a busy machine too: the scaling probe measured them, not the
    # GIL probe whose readings a busy machine blurs (make test-ft failed twice on sleeps that 3.13t
    # read as computing under load: threads 2.04 s modelled against processes 2.03 s).
    s.scaling = {2: 2.0}
    s.load = 1.0
    assert decide(s, 1000, cpus=2, free_threaded=True).mode == "threads"


def test_large_arguments_make_processes_lose() -> None:
    # 20 MB per item through a pipe costs more than the 10 ms of work it would save.
    advice = decide(synthetic(0.01, 1.0, item_bytes=20e6), 1000, cpus=2)
    assert advice.mode == "sequential"
    assert advice.expected_speedup["processes"] < 1


def test_one_cpu_unpicklable_and_nested_never_choose_processes() -> None:
    cpu_heavy = synthetic(0.05, 1.0)
    assert decide(cpu_heavy, 1000, cpus=1).mode == "sequential"
    assert "processes" not in decide(cpu_heavy, 1000, cpus=4, function_pickles=lambda: "a lock").expected_speedup
    assert decide(cpu_heavy, 1000, cpus=4, nested=True).mode != "processes"


def test_warm_pool_tips_a_short_job_to_processes() -> None:
    s = synthetic(0.02, 1.0)
    cold = decide(s, 10, cpus=2, pool_warm=False)
    warm = decide(s, 10, cpus=2, pool_warm=True)
    assert warm.expected_speedup["processes"] > cold.expected_speedup["processes"]


def test_unknown_length_assumes_a_large_job() -> None:
    advice = decide(synthetic(0.01, 1.0), None, cpus=2)
    assert advice.measurements["remaining_tasks"] == ASSUMED_TASKS
    assert advice.mode == "processes"


def test_a_failing_first_task_cannot_be_measured() -> None:
    s = synthetic(0.01, 1.0)
    s.head[0] = (0, None, object(), 0.01)  # type: ignore[arg-type]
    assert decide(s, 100, cpus=2).mode == "threads"


# -- real workloads ----------------------------------------------------------------------------

def square(x: int) -> int:
    return x * x


def sleepy(x: int) -> int:
    time.sleep(0.01)
    return x


def np_sum(array: object) -> float:
    return float(array.sum())  # type: ignore[attr-defined]


def pure_python(n: int) -> int:
    return sum(i * i for i in range(n))


def sha(data: bytes) -> str:
    # update() releases the GIL for large buffers; on Python 3.11 the constructor with data does
    # not (measured: two threads hashing via sha256(data) ran one after the other).
    h = hashlib.sha256()
    h.update(data)
    return h.hexdigest()


def test_advise_tiny_task_is_sequential() -> None:
    assert tl.advise(square, range(1000)).mode == "sequential"


def test_advise_sleeping_task_is_threads() -> None:
    advice = tl.advise(sleepy, range(20), budget=0.2)
    assert advice.mode == "threads"
    assert advice.workers > 6


@pytest.fixture
def every_cpu_busy() -> Iterator[None]:
    """One spinning process per usable CPU beside the test (killed after it)."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(len(os.sched_getaffinity(0)))]
    try:
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait(timeout=30)


def test_sleeping_tasks_are_not_taken_for_computing_on_a_busy_machine(every_cpu_busy: None) -> None:
    # The first task sleeps, so others start beside it on threads; they and it take turns for the
    # GIL and the busy CPUs. That run-queue wait belongs to no task: counted as the first task's
    # own, a 10 ms sleep read as 10 ms of computing and went to processes (4 runs in 10 did).
    for attempt in range(6):
        forget(sleepy)  # measure afresh each time
        run = tl.imap(sleepy, range(400))
        assert list(run) == list(range(400))
        assert run.advice is not None
        assert run.advice.mode == "threads", (attempt, run.advice)


def test_a_probe_threads_wait_for_a_cpu_counts_for_neither_progress_nor_blocking() -> None:
    # 10 ms: 4 computing, 2 runnable, 4 blocked (taking turns for the GIL): of the 8 ms it did
    # not wait for a CPU it computed half, so half of the span was progress.
    assert progress(0.010, 0.004, 0.002) == pytest.approx(0.005)
    # Never blocked: it only waited for a CPU (a busy machine's): the whole span was progress.
    assert progress(0.010, 0.006, 0.004) == pytest.approx(0.010)
    # Clocks read a little apart never make more progress than the span.
    assert progress(0.010, 0.011, 0.0) == pytest.approx(0.010)
    assert progress(0.0, 0.0, 0.0) == 0.0


def _pair_readings(fn: Any, item: Any, each: int, times: int) -> list[float]:
    readings = []
    for _ in range(times):
        s = Sample()
        assert _measure_threads(fn, iter([item] * (2 * each)), s, each)
        assert s.thread_speedup is not None
        assert len(s.head) == 2 * each
        readings.append(round(s.thread_speedup, 2))
    return readings


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or not gil_enabled(),
                    reason="the GIL probe on two CPUs (without a GIL the scaling probe decides: test_free_threaded)")
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_threads_that_take_turns_never_read_as_parallel(busy: bool, request: pytest.FixtureRequest) -> None:
    # make test's CI run failed on this: tiny tasks run one at a time under a lock (growing(1)
    # below) read up to 2.0x on two threads with every CPU busy (1.5x idle), and auto chose threads for
    # the heavy pure-Python tasks after them. A thread woken by its partner's release waits in
    # the run queue; that wait had counted as busy as far as the "load" read on one 60 us task
    # explained it. Now it counts for neither side.
    if busy:
        request.getfixturevalue("every_cpu_busy")
    assert max(_pair_readings(growing, 1, 16, 10)) < 1.3
    assert max(_pair_readings(pure_python, 20_000, 4, 10)) < 1.3


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or not gil_enabled(),
                    reason="the GIL probe on two CPUs (without a GIL the scaling probe decides: test_free_threaded)")
def test_a_busy_machine_does_not_take_pure_python_for_threads(every_cpu_busy: None) -> None:
    # Two threads taking turns for the GIL each wait in the run queue at every hand-over, and
    # on a busy machine for milliseconds: counted as busy, the pair read 1.4-1.55x and auto sent
    # this job to threads (4 runs in 4). Two threads also get a larger share of busy CPUs than
    # one, so a reading above 1 stays possible there: it must not win a near-tie with processes.
    for attempt in range(4):
        forget(pure_python)
        run = tl.imap(pure_python, [200_000] * 32)
        assert list(run) == [pure_python(200_000)] * 32
        assert run.advice is not None
        assert run.advice.mode != "threads", (attempt, run.advice)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or not gil_enabled(),
                    reason="the GIL probe on two CPUs (without a GIL the scaling probe decides: test_free_threaded)")
def test_a_busy_machine_still_sees_a_function_release_the_gil(every_cpu_busy: None) -> None:
    # Two threads woken together often share one CPU for a few ms: 3 ms sha256 tasks, one per
    # thread, read 1.0-1.3x and went sequential in most runs. The probe runs several per thread
    # and counts a wait for a CPU that was no wait for the GIL.
    data = os.urandom(4_000_000)
    modes = [tl.advise(sha, [data] * 32, total=32).mode for _ in range(5)]
    assert modes.count("threads") >= 3, modes


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="parallel CPU work needs two CPUs")
def test_advise_pure_python_loop_is_processes() -> None:
    # With the GIL: processes. Without it: threads when they scale here, processes when not, measured.
    advice = tl.advise(pure_python, [300_000] * 8, budget=1.0, total=200)
    if gil_enabled():
        assert advice.mode == "processes", advice
    else:  # threads when they scale here, processes when they do not: either way, measured
        assert "thread_scaling_2" in advice.measurements, advice
        assert advice.mode in ("threads", "processes"), advice
        assert any("threads ran it" in r for r in advice.reasons), advice


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="parallel CPU work needs two CPUs")
def test_advise_gil_releasing_hash_is_threads() -> None:
    # Parallelism is measured on a shared machine: a busy neighbour can hide it once, so a few
    # readings are taken; the function must be recognised as GIL-releasing in one of them.
    modes = set()
    for _ in range(5):
        modes.add(tl.advise(sha, [b"x" * 8_000_000] * 12, budget=1.0, total=500).mode)
        if "threads" in modes:
            break
    assert "threads" in modes


def test_advise_coroutine_is_async() -> None:
    async def fetch(x: int) -> int:
        return x

    assert tl.advise(fetch, [1]).mode == "async"


def test_advise_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="budget"):
        tl.advise(square, [1], budget=0)
    with pytest.raises(ValueError, match="sample"):
        tl.advise(square, [])
    with pytest.raises(TypeError, match="callable"):
        tl.advise(42, [1])  # type: ignore[arg-type]


def test_auto_keeps_the_sampled_results() -> None:
    calls: list[int] = []

    def counted(x: int) -> int:
        calls.append(x)
        return x * 2

    run = tl.imap(counted, range(500))
    assert list(run) == [x * 2 for x in range(500)]
    assert sorted(calls) == list(range(500))  # every item ran exactly once, samples included
    assert run.advice is not None
    assert run.advice.mode == "sequential"


def test_auto_advice_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="taskloom"):
        tl.map(square, range(10))
    assert any("auto mode" in r.message for r in caplog.records)


def nested_map(n: int) -> tuple[str, int]:
    run = tl.imap(pure_python, [20_000] * n)
    out = list(run)
    assert run.advice is not None
    return run.advice.mode, len(out)


def test_nested_map_in_a_worker_does_not_start_processes() -> None:
    import psutil

    results = tl.map(nested_map, [40, 40], mode="processes", workers=2)
    assert all(mode != "processes" for mode, _ in results)
    workers = psutil.Process().children(recursive=True)
    grandchildren = [c for w in workers for c in w.children() if "forkserver" not in " ".join(c.cmdline())]
    assert grandchildren == []


def blas_threads(_: int) -> int:
    import numpy  # noqa: F401 - loads the BLAS whose pool we inspect
    from threadpoolctl import threadpool_info

    return max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=0)


def test_blas_threads_capped_in_workers() -> None:
    counts = tl.map(blas_threads, [0, 1], mode="processes", workers=2)
    assert counts
    assert max(counts) <= max(1, len(os.sched_getaffinity(0)) // 2)


_ONE_AT_A_TIME = threading.Lock()


def growing(n: int) -> int:
    if n == 1:
        # The tiny first tasks run one at a time (a lock): without a GIL too, threads take turns
        # and do not scale, so auto starts them sequentially on every build, as with a GIL (tiny
        # tasks that did scale would start on threads, a fine choice for the heavy ones too). A
        # tiny task's work under the lock (~50 us) outweighs the probe's own costs per call
        # outside it: with 1-3 us there, those costs scaled, and two threads read 1.78x on 3.13t.
        with _ONE_AT_A_TIME:
            return sum(i * i for i in range(1000))
    return sum(i * i for i in range(n))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="parallel CPU work needs two CPUs")
def test_auto_switches_once_when_later_tasks_differ() -> None:
    # The first tasks are tiny (sequential is right for them); the rest are ~300x heavier.
    items = [1] * 100 + [300_000] * 100
    run = tl.imap(growing, items)
    assert list(run) == [growing(n) for n in items]
    assert run.advice is not None
    assert run.advice.mode == "processes", run.advice
    assert run.advice.reasons[0].startswith("Switched during the run")
    assert _recall(growing, _item_kind(1)) is None, "a switch must make the next run measure again"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="parallel CPU work needs two CPUs")
def test_the_second_look_switches_only_while_items_are_left_to_move() -> None:
    sampled = synthetic(1e-6, 1.0)  # tiny: sequential
    opened: list[str] = []

    def open_backend(engine: Any, workers: int) -> Any:
        opened.append(engine.name)

    def second_look() -> Reconsider:
        return Reconsider(pure_python, sampled, decide(sampled, 1000), open_backend)

    # Every item already went to the engine: there is nothing to move, and the advice stays (on a
    # busy machine, sleeping tasks that woke late once read as a "switch" to sequential at the end).
    done = second_look()
    assert [done.observe(0.05, None, 100 + i, 0) for i in range(4)] == [None] * 4
    assert opened == []
    assert not done.finished
    # The same readings with items left: one switch, after two deviating batches in a row.
    left = second_look()
    assert left.observe(0.05, None, 100, 500) is None
    switch = left.observe(0.05, None, 110, 490)
    assert switch is not None
    assert switch.advice.mode == "processes"
    assert opened == ["processes"]
    assert left.finished


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="parallel CPU work needs two CPUs")
def test_a_second_look_that_keeps_the_engine_goes_on_looking() -> None:
    # Tiny tasks (3 us) whose batches read 12 us twice (a page fault, an interrupt): the choice
    # is made again and stays sequential. That must not use up the look: the heavy tasks after
    # them still switch the run to processes (make test-ft failed so).
    sampled = synthetic(3e-6, 1.0)
    first = decide(sampled, 1000)
    assert first.mode == "sequential", first
    look = Reconsider(pure_python, sampled, first, lambda engine, workers: None)
    assert look.observe(12e-6, CpuTime(12e-6, 0.0, 0.0), 100, 900) is None
    assert look.observe(12e-6, CpuTime(12e-6, 0.0, 0.0), 101, 899) is None
    assert not look.finished
    assert look.observe(0.3, CpuTime(0.3, 0.0, 0.0), 102, 898) is None
    switch = look.observe(0.3, CpuTime(0.3, 0.0, 0.0), 103, 897)
    assert switch is not None
    assert switch.advice.mode == "processes", switch.advice
    assert look.finished


def test_the_second_look_reads_the_later_tasks_own_computing_not_the_samples() -> None:
    # Tiny first tasks that read as mostly waiting (a busy machine, a thread beside them holding
    # the GIL: CI saw it), then tasks 50 ms long that compute throughout. The sample's share of
    # computing is not theirs: read from the batches, they go to processes, not to threads.
    sampled = synthetic(1e-5, 0.1)
    first = decide(sampled, 1000)
    assert first.mode == "threads", first
    look = Reconsider(pure_python, sampled, first, lambda engine, workers: None)
    assert look.observe(0.05, CpuTime(0.05, 0.0, 0.0), 100, 500) is None
    switch = look.observe(0.05, CpuTime(0.045, 0.005, 0.0), 110, 490)  # 5 ms of it waiting for a busy CPU
    assert switch is not None
    assert switch.advice.mode == "processes", switch.advice
    assert switch.advice.measurements["cpu_ratio"] == pytest.approx(1.0)
    # Tiny tasks whose batch's clocks, read around it, show more than the batch's own wall time
    # (a read of the clocks costs ~10 us): their length is the wall time, not a deviation (it
    # was: the second look decided again on tiny tasks, found the same engine and was over
    # before the heavy tasks came).
    tiny = Reconsider(pure_python, sampled, first, lambda engine, workers: None)
    for done in range(100, 110):
        assert tiny.observe(1e-5, CpuTime(3e-5, 1e-5, 0.0), done, 500) is None
    assert not tiny.finished
    # Unmeasured (None), the sample's 10% computing is all there is to go on: it stays on threads.
    blind = Reconsider(pure_python, sampled, first, lambda engine, workers: None)
    blind.observe(0.05, None, 100, 500)
    assert blind.observe(0.05, None, 110, 490) is None


@pytest.mark.skipif(not gil_enabled(), reason="the GIL's wait is what is allowed for")
def test_the_second_look_takes_a_wait_for_the_gil_off_a_tasks_length() -> None:
    sampled = synthetic(0.01, 0.05)  # sampled: 10 ms tasks, mostly waiting -> threads
    first = decide(sampled, 1000)
    assert first.mode == "threads", first
    assert first.workers >= 8, first
    # Later tasks take 0.4 s, 50 ms of it computing and the rest waiting for the GIL while
    # other threads computed: alone they take 50 ms, all of it CPU -> processes.
    gil_bound = Reconsider(pure_python, sampled, first, lambda engine, workers: None)
    gil_bound.observe(0.4, CpuTime(0.05, 0.0, 0.35), 100, 500)
    switch = gil_bound.observe(0.4, CpuTime(0.05, 0.0, 0.35), 110, 490)
    assert switch is not None
    assert switch.advice.mode == "processes", switch
    assert switch.advice.reasons[0].startswith("Switched during the run: tasks now take 0.05 s each")
    # 0.4 s of which 1 ms computes and the rest is no one's computing: a wait for I/O, which
    # threads are right for (no switch).
    io_bound = Reconsider(pure_python, sampled, first, lambda engine, workers: None)
    io_bound.observe(0.4, CpuTime(0.001, 0.0, 0.0), 100, 500)
    assert io_bound.observe(0.4, CpuTime(0.001, 0.0, 0.0), 110, 490) is None


def burn_or_sleep(x: int) -> int:
    if x < 0:
        time.sleep(0.1)
        return x
    return pure_python(x)


@pytest.mark.parametrize("mode", ["sequential", "threads", "processes"])
def test_a_batch_asked_to_measure_reports_its_computing_and_waiting_where_it_ran(mode: str) -> None:
    backend = get_backend(by_name(mode), 1)
    job = Job(burn_or_sleep, "burn_or_sleep")
    backend.prepare(job)
    sink: queue.SimpleQueue[Any] = queue.SimpleQueue()
    burn, nap, plain = (Batch(job, [300_000, 300_000], sink, measure_cpu=True),
                        Batch(job, [-1], sink, measure_cpu=True), Batch(job, [1], sink))
    for batch in (burn, nap, plain):
        backend.submit(batch)
    backend.run_inline()
    done = {e.batch_id: e for e in (sink.get(timeout=120) for _ in range(3))}
    assert [done[b.id].values for b in (burn, nap, plain)] == [[burn_or_sleep(300_000)] * 2, [-1], [0]]
    computed, queued, gil = done[burn.id].cpu
    assert computed + queued + gil >= 0.5 * done[burn.id].elapsed, done[burn.id]  # on a busy machine too
    computed, queued, gil = done[nap.id].cpu
    assert computed + queued + gil < 0.5 * done[nap.id].elapsed, done[nap.id]  # a sleep is no computing
    assert done[plain.id].cpu is None  # not asked: not measured


@pytest.mark.skipif(not gil_enabled(), reason="a wait for the GIL needs a GIL")
def test_a_batch_beside_a_busy_thread_reads_its_wait_for_the_gil_as_no_wait_for_io() -> None:
    # What CI saw: a thread of the same process (Dask's event loop there) takes the GIL from
    # the caller's tasks. The time they wait for it is neither computing nor I/O.
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        backend = get_backend(by_name("sequential"), 1)
        sink: queue.SimpleQueue[Any] = queue.SimpleQueue()
        batch = Batch(Job(pure_python, "pure_python"), [300_000] * 4, sink, measure_cpu=True)
        backend.submit(batch)
        backend.run_inline()
        done = sink.get(timeout=120)
        get_backend(by_name("threads"), 1).submit(Batch(Job(burn_or_sleep, "burn_or_sleep"), [-1], sink,
                                                        measure_cpu=True))
        nap = sink.get(timeout=120)
    finally:
        stop.set()
        spinner.join(timeout=60)
    # A pool's thread reads no GIL wait: the threads computing beside it are mostly the pool's
    # own (256 threads fetching read their whole sleep as a wait for the GIL, and auto sent
    # them to processes: a CI failure).
    assert nap.cpu is not None
    assert nap.cpu.gil == 0.0, nap
    assert nap.cpu.computed + nap.cpu.queued < 0.5 * nap.elapsed, nap
    cpu = done.cpu
    # The two threads took turns for the GIL (~half the time each on an idle machine; on a busy
    # one the spinner, waiting for a CPU while it holds the GIL, computes less: the estimate
    # rests on what it computed, and most of the rest is a wait for a CPU, counted too).
    assert cpu.gil > 0.05 * done.elapsed, done
    assert cpu.computed + cpu.queued + cpu.gil >= 0.5 * done.elapsed, done


# -- what auto measured is reused by later runs of the same function ---------------------------------
def test_a_second_auto_run_of_a_function_reuses_its_measurement_and_runs_nothing_here() -> None:
    caller = threading.get_ident()
    ran_here: list[int] = []

    def fetch(x: int) -> int:
        if threading.get_ident() == caller:
            ran_here.append(x)
        time.sleep(0.01)
        return x

    # 400 items: more than the sample may start beside its first waiting task (MAX_IO_THREADS - 1),
    # so the first run's sample cannot swallow the whole input (its advice then reports the threads
    # that ran it all, not what the measurement gives).
    first = tl.imap(fetch, range(400))
    assert list(first) == list(range(400))
    assert ran_here, "the first run measured nothing in the caller's thread"
    assert first.advice is not None
    assert first.advice.mode == "threads"
    ran_here.clear()
    second = tl.imap(fetch, range(400))
    assert list(second) == list(range(400))
    assert second.advice is not None
    assert second.advice.mode == "threads"
    assert "earlier run" in second.advice.reasons[0]
    assert second.workers == first.workers
    assert ran_here == [], "the second run sampled again"
    # Items of another type (or size) are measured afresh.
    third = tl.imap(fetch, [1.0, 2.0, 3.0, 4.0])
    assert list(third) == [1.0, 2.0, 3.0, 4.0]
    assert third.advice is not None
    assert "earlier run" not in third.advice.reasons[0]


def test_a_guess_is_not_remembered_a_measurement_is() -> None:
    def spin(n: int) -> int:  # a function of this test alone: no other test's run is remembered for it
        return sum(i * i for i in range(n))

    # Four CPU tasks: too short a job to spare two tasks for the GIL probe, so auto guesses
    # (unless a busy machine stretched the first task past 5 ms: then the probe ran beside it).
    run = tl.imap(spin, [20_000] * 4)
    assert list(run) == [spin(20_000)] * 4
    assert run.advice is not None
    measured = "thread_speedup" if gil_enabled() else "thread_scaling_2"
    if run.advice.measurements.get(measured) is None:
        assert _recall(spin, _item_kind(20_000)) is None, "a guess was remembered"
    longer = tl.imap(spin, [20_000] * 40)
    assert list(longer) == [spin(20_000)] * 40
    assert longer.advice is not None
    assert measured in longer.advice.measurements
    remembered = _recall(spin, _item_kind(20_000))
    assert remembered is not None
    assert remembered.thread_speedup is not None or remembered.scaling


def test_the_memo_keeps_no_item_or_result_alive() -> None:
    import gc
    import weakref

    class Big:
        pass

    def keep(x: Big) -> Big:
        time.sleep(0.02)  # it waits: remembered on any build (CPU work unprobed is not, without a GIL)
        return x

    items = [Big() for _ in range(8)]
    refs = [weakref.ref(b) for b in items]
    run = tl.imap(keep, items)
    assert list(run) == items
    # The first task waited, so the sample started more beside it: nor does what did that keep
    # the items (the overlap's watcher thread once held its last one, and their results, for good).
    assert run.advice is not None
    assert "more started beside it" in run.advice.reasons[0], run.advice
    del run
    assert _recall(keep, _item_kind(Big())) is not None
    del items
    # A pool thread drops its last batch a moment after handing in the results (on a busy
    # machine, that moment can come after map returned): a memo that kept them would keep them
    # for good, so a bounded wait tells the two apart.
    deadline = time.monotonic() + 10
    while gc.collect() >= 0 and any(r() is not None for r in refs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(r() is None for r in refs)


def random_draws(_: int) -> tuple[int, float]:
    import random

    time.sleep(0.05)  # long enough that both workers get tasks
    return os.getpid(), random.random()


def test_workers_are_reseeded() -> None:
    import random

    random.seed(1234)  # forked or not, no two workers may repeat each other's sequence
    draws = tl.map(random_draws, range(8), mode=tl.Processes(start_method="fork"), workers=2, chunksize=1)
    by_pid: dict[int, list[float]] = {}
    for pid, value in draws:
        by_pid.setdefault(pid, []).append(value)
    assert len(by_pid) == 2
    first, second = by_pid.values()
    assert not set(first) & set(second)


# -- auto's first look: waiting tasks overlap while the first one runs ---------------------------------
def test_auto_starts_more_tasks_while_a_waiting_first_task_runs() -> None:
    # Three tasks that can only finish together: sampling them one at a time would break the barrier.
    together = threading.Barrier(3, timeout=20)

    def meet(x: int) -> int:
        together.wait()
        return x

    run = tl.imap(meet, [0, 1, 2])
    assert list(run) == [0, 1, 2]
    assert run.advice is not None


def test_a_run_does_not_wait_for_tasks_started_beside_a_waiting_first_task() -> None:
    # The tasks started beside the first one wait until a task has run on the pool: a sample that
    # waited for them before choosing would never start it (their wait times out).
    release = threading.Event()
    beside: list[int] = []
    released: list[bool] = []

    def task(x: int) -> int:
        if x == 0:
            time.sleep(0.05)  # the first task waits: the watcher starts more beside it
        elif threading.current_thread().name == "taskloom-auto-sample":
            beside.append(x)
            released.append(release.wait(10))
            if x == 1:
                raise SystemExit("an exit in a task is that item's error, as on a pool thread")
        else:
            release.set()
        return x

    outcomes = tl.map(task, range(40), workers=4, on_error="collect")  # (at most 3 beside the first)
    assert beside, "nothing started beside the first task"
    assert released == [True] * len(beside), "the sample waited for the tasks beside it"
    assert [o.index for o in outcomes] == list(range(40))
    assert [o.value for o in outcomes if o.index != 1] == [x for x in range(40) if x != 1]
    assert isinstance(outcomes[1].error, tl.TaskError)
    assert isinstance(outcomes[1].error.__cause__, SystemExit)


def test_a_sample_stops_after_a_first_task_that_waited_even_if_nothing_started_beside_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The watcher may look only after the first task's wait ended (a wait about its window's
    # length): more tasks one at a time would only delay the run.
    monkeypatch.setattr(_sampling._Overlap, "check", lambda self: None)  # it never starts any
    s = _sampling.run_sample(lambda x: time.sleep(0.01), iter(range(100)), budget=1.0, total=100, overlap=4,
                             hand_off=True)
    assert (s.timed, s.overlapped, s.in_flight) == (1, 0, [])
    assert s.cpu_ratio < 0.5


def test_auto_overlap_loses_and_duplicates_nothing() -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def slow(x: int) -> int:
        with lock:
            calls.append(x)
        time.sleep(0.05)
        if x == 0:
            raise ValueError("the first one fails")
        return x

    outcomes = tl.map(slow, range(40), on_error="collect")
    assert [o.index for o in outcomes] == list(range(40))
    assert [o.value for o in outcomes[1:]] == list(range(1, 40))
    assert isinstance(outcomes[0].error, tl.TaskError)
    assert sorted(calls) == list(range(40)), "a task ran twice or not at all"


def test_auto_starts_only_its_thread_probe_beside_a_computing_task_and_nothing_under_a_rate_limit() -> None:
    events: list[tuple[str, int]] = []

    def spin(x: int) -> int:
        events.append(("start", x))
        end = time.thread_time() + 0.1
        while time.thread_time() < end:
            pass
        events.append(("end", x))
        return x

    run = tl.imap(spin, range(6), mode="auto")
    assert list(run) == list(range(6))
    beside = [x for kind, x in events[:events.index(("end", 0))] if kind == "start" and x]
    probe_beside = ([], [1]) if gil_enabled() else ([],)
    assert beside in probe_beside, f"more than the probe started beside the first task: {events}"
    assert run.advice is not None
    # With the GIL, the probe beside the first task says whether the function releases it;
    # without, the first task runs alone and the scaling probe follows it.
    assert ("two threads ran" if gil_enabled() else "2 threads ran it") in str(run.advice), run.advice
    if not gil_enabled():
        assert "thread_scaling_2" in run.advice.measurements

    together = threading.Barrier(2, timeout=1)

    def meet(x: int) -> int:
        together.wait()
        return x

    outcomes = tl.map(meet, [0, 1], rate="1000/s", on_error="collect")
    assert isinstance(outcomes[0].error, tl.TaskError)  # sampled alone: no one came to meet it
    assert isinstance(outcomes[0].error.__cause__, threading.BrokenBarrierError)


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"), reason="Linux's schedstat")
def test_a_threads_run_queue_clock_is_its_own_and_its_file_goes_with_it() -> None:
    # Each thread keeps its schedstat file open (reread in ~1 us): the file must close when the
    # thread ends, and a forked child must read its own thread, not the parent's.
    import gc

    from taskloom._backends._base import _own_schedstat, runqueue_seconds

    def points_at(fd: int) -> str | None:
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None

    # Each thread's own file, by number and path (not a count of the process's files: other
    # threads of the test process, a Dask cluster's, open and close theirs meanwhile).
    opened: list[tuple[int, str | None]] = []

    def read() -> None:
        runqueue_seconds()
        fd = _own_schedstat.file.fd
        opened.append((fd, points_at(fd)))

    threads = [threading.Thread(target=read) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    assert len(opened) == 20
    assert all(path is not None and path.endswith("/schedstat") for _, path in opened), opened
    still_open = [(fd, path) for fd, path in opened if points_at(fd) == path]
    assert not still_open, f"a thread's schedstat file outlived its thread: {still_open}"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the file it reads is its own thread's
        os.close(read)
        runqueue_seconds()
        path = os.readlink(f"/proc/self/fd/{_own_schedstat.file.fd}")
        os.write(write, b"1" if path == f"/proc/{os.getpid()}/task/{threading.get_native_id()}/schedstat" else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
