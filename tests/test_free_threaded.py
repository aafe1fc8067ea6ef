"""taskloom without a GIL: what the GIL used to hide, and auto's measured thread scaling.

Every test here runs on every interpreter: in ``make test`` (Python 3.11, GIL on) and in ``make
test-ft`` (a free-threaded 3.13t with ``PYTHON_GIL=0``), where ``TASKLOOM_EXPECT_GIL=0`` makes
the first test fail if the GIL came back on. The rest hold on both: a free-threaded build only
makes their races and their leaks likely instead of rare.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import sys
import sysconfig
import threading
import weakref
from typing import Any

import pytest

import taskloom as tl
from taskloom import _system
from taskloom._backends import _threads
from taskloom._sampling import SCALES, Sample, _measure_scaling, _scaling_probe, run_sample
from taskloom._workload import decide, forget, scaled
from taskloom.testing import stress
from tests import free_threaded_tasks as tasks
from tests.helpers import join, wait_for

TWO_CPUS = len(os.sched_getaffinity(0)) >= 2


# -- the interpreter ---------------------------------------------------------------------------------------
def test_the_gil_is_as_this_run_expects() -> None:
    # `make test-ft` sets TASKLOOM_EXPECT_GIL=0: an extension module without free-threading support
    # would have turned the GIL back on as it was imported (unless PYTHON_GIL=0), and the whole run
    # would then test nothing it claims to. Everywhere, taskloom must read the interpreter right.
    is_enabled = getattr(sys, "_is_gil_enabled", lambda: True)()
    assert _system.gil_enabled() is is_enabled
    free_build = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    assert free_build or is_enabled, "only a free-threaded build can run without the GIL"
    expected = os.environ.get("TASKLOOM_EXPECT_GIL")
    if expected is not None:
        assert is_enabled is (expected == "1"), f"TASKLOOM_EXPECT_GIL={expected}, but the GIL is {is_enabled=}"
        assert free_build, "TASKLOOM_EXPECT_GIL is set by `make test-ft`, which runs a free-threaded build"


def test_bounded_wait_caps_waits_only_without_the_gil(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_system, "gil_enabled", lambda: True)
    assert _system.bounded_wait(None) is None
    assert _system.bounded_wait(120.0) == 120.0
    monkeypatch.setattr(_system, "gil_enabled", lambda: False)
    assert _system.bounded_wait(None) == _system.FREE_THREADED_WAKE
    assert _system.bounded_wait(120.0) == _system.FREE_THREADED_WAKE
    assert _system.bounded_wait(0.01) == 0.01


# -- results are freed once dropped, whichever thread made them ------------------------------------------
#: Seconds a dropped result may outlive the consumer's last reference: the engines' threads wake
#: at least every FREE_THREADED_WAKE seconds without a GIL; with one it goes at once.
FREED_WITHIN = _system.FREE_THREADED_WAKE + 2.0


@pytest.mark.parametrize(("mode", "fn"), [("threads", tasks.make), ("processes", tasks.make),
                                          ("async", tasks.make_async)])
def test_a_result_is_freed_once_dropped_after_its_pool_went_idle(mode: str, fn: Any) -> None:
    # Without a GIL an object is freed by the thread that allocated it (biased reference counting):
    # dropped by the consumer, it waits until that thread runs Python code again. A pool thread
    # (or the process pool's manager, which unpickles results, or the event loop's thread) idle in
    # one long wait kept every result it made alive until its next task or its idle timeout (on
    # 3.13t: the thread pool's 60 s, the process pool's 120 s, the event loop's forever).
    results = tl.map(fn, range(4), mode=mode, workers=2)
    assert [r.value for r in results] == [0, 1, 2, 3]
    freed = threading.Event()
    refs = [weakref.ref(r, lambda _: freed.set() if all(w() is None for w in refs) else None) for r in results]
    del results
    # The consumer (this thread) neither made them nor runs anything while it waits: the engine's
    # own thread must free them.
    assert freed.wait(FREED_WITHIN) or all(w() is None for w in refs), (
        f"the {mode} engine kept results alive {FREED_WITHIN:g} s after they were dropped")


def test_an_idle_pool_thread_wakes_now_and_then_without_a_gil(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float | None] = []

    class Recording:
        """The pool's queue, empty throughout: records how long each wait of an idle thread is."""

        def get(self, timeout: float | None = None) -> Any:
            waits.append(timeout)
            threading.Event().wait(timeout)  # the wait a real, empty queue makes
            raise queue.Empty

    monkeypatch.setattr(_threads, "gil_enabled", lambda: False)
    pool = _threads.ThreadBackend(1, idle_timeout=0.3)
    monkeypatch.setattr(pool, "_queue", Recording())
    with pytest.raises(queue.Empty):
        pool._next_batch()
    assert waits[0] == _threads.IDLE_WAKE_FIRST
    assert all(b == min(2 * a, _threads.IDLE_WAKE_MAX) for a, b in itertools.pairwise(waits[:-1])), waits
    assert len(waits) >= 4, waits
    assert sum(w or 0 for w in waits) == pytest.approx(0.3, abs=0.05)
    monkeypatch.setattr(_threads, "gil_enabled", lambda: True)
    waits.clear()
    with pytest.raises(queue.Empty):
        pool._next_batch()
    assert waits == [0.3], "with a GIL one wait covers the whole idle timeout"


# -- taskloom's thread code under many threads at once -----------------------------------------------------
def test_many_threads_map_on_one_shared_thread_pool() -> None:
    mode = tl.Threads()
    errors: list[BaseException] = []

    def body() -> None:
        out = tl.map(tasks.make, range(50), mode=mode, workers=3)
        if [r.value for r in out] != list(range(50)):
            errors.append(AssertionError("wrong results"))

    def check() -> None:
        assert errors == []
        from taskloom._pools import live_backends

        pools = [b for b in live_backends() if isinstance(b, _threads.ThreadBackend) and b.workers == 3]
        for pool in pools:
            with pool._lock:
                assert len(pool._threads) <= pool.workers + pool._extra, "more threads than the pool's size"
                assert pool._idle >= 0

    stress(body, threads=6, repeat=10, check=check, preempt_every=256)


def test_executor_takes_submissions_from_many_threads_at_once() -> None:
    with tl.Executor("threads", workers=3) as ex:
        futures: list[Any] = []
        lock = threading.Lock()

        def body() -> None:
            mine = [ex.submit(tasks.make, i) for i in range(30)]
            with lock:
                futures.extend(mine)

        stress(body, threads=6, repeat=5, preempt_every=256)
        assert len(futures) == 6 * 5 * 30
        values = sorted(f.result(timeout=30).value for f in futures)
        assert values == sorted(list(range(30)) * 30)


def test_a_run_cancelled_from_another_thread_stops_and_loses_nothing_it_handed_out() -> None:
    for _ in range(20):
        run = tl.imap(tasks.make, range(10_000), mode="threads", workers=2)
        seen: list[int] = []
        first = threading.Event()

        def consume(run: Any = run, seen: list[int] = seen, first: threading.Event = first) -> None:
            for made in run:
                seen.append(made.value)
                first.set()

        consumer = threading.Thread(target=consume)
        consumer.start()
        wait_for(first, "the first result")
        run.cancel()
        join(consumer, "consumer")
        assert seen == list(range(len(seen))), "results out of order, lost or repeated"


# -- auto: threads only when they scale ----------------------------------------------------------------------
def test_scaled_interpolates_and_does_not_extrapolate_contention() -> None:
    assert scaled({2: 1.9}, 1) == 1.0
    assert scaled({2: 1.9}, 2) == pytest.approx(1.9)
    assert scaled({2: 1.9, 8: 4.0}, 4) == pytest.approx(1.9 + 2.1 * 2 / 6)
    assert scaled({2: 1.8}, 4) == pytest.approx(1 + 0.8 * 3)  # the same gain per thread beyond
    assert scaled({2: 0.5}, 8) == pytest.approx(0.5)  # contention: never better with more threads
    assert scaled({2: 0.0}, 2) > 0


def cpu_sample(per_task: float, scaling: dict[int, float] | None = None, n: int = 4) -> Sample:
    return Sample(head=[(i, i, None, per_task) for i in range(n)], timed=n, wall=per_task * n,
                  cpu=per_task * n, item_bytes=30, result_bytes=30, parent_pickle=1e-6, worker_pickle=1e-6,
                  scaling=scaling or {})


def test_without_a_gil_cpu_work_goes_to_threads_only_when_they_scale() -> None:
    scales = decide(cpu_sample(0.01, {2: 1.9}), 1000, cpus=2, free_threaded=True)
    assert scales.mode == "threads"
    assert scales.measurements["thread_scaling_2"] == 1.9
    assert any("2 threads ran it 1.90x as fast as one (measured)" in r for r in scales.reasons), scales

    contends = decide(cpu_sample(0.01, {2: 0.6}), 1000, cpus=2, free_threaded=True)
    assert contends.mode == "processes"
    assert any("do not scale" in r and "0.60x" in r for r in contends.reasons), contends

    halfway = decide(cpu_sample(0.01, {2: 1.3}), 1000, cpus=2, free_threaded=True)
    assert halfway.mode == "processes", "1.3x on threads against ~1.9x on processes"

    many = decide(cpu_sample(0.01, {2: 1.9, 8: 7.6}), 1000, cpus=8, free_threaded=True)
    assert many.mode == "threads"
    assert many.expected_speedup["threads"] == pytest.approx(7.6, rel=0.01)  # the 8-thread reading

    unmeasured = decide(cpu_sample(0.01), 1000, cpus=2, free_threaded=True)
    assert unmeasured.mode == "processes"
    assert any("not measured" in r for r in unmeasured.reasons)

    nowhere_else = decide(cpu_sample(0.01, {2: 0.6}), 1000, cpus=2, free_threaded=True, nested=True)
    assert nowhere_else.mode == "sequential", "threads slower than one, and no processes inside a worker"

    with_gil = decide(cpu_sample(0.01, {2: 1.9}), 1000, cpus=2, free_threaded=False)
    assert with_gil.mode == "processes", "a GIL build ignores a scaling reading (it has its own probe)"


def test_the_scaling_probe_keeps_every_task_in_input_order() -> None:
    # Tiny tasks, taken many at a time by two threads: every item runs once, in its place.
    s = Sample()
    source = iter(range(100_000))
    s.head = [(i, i * i, None, 1e-6) for i in (next(source), next(source))]
    s.timed, s.wall, s.cpu = 2, 2e-6, 2e-6
    speedup = _scaling_probe(lambda x: x * x, source, s, 2, 0.005)
    assert speedup is not None
    assert speedup > 0
    assert [h[0] for h in s.head] == list(range(len(s.head)))
    assert all(h[1] == h[0] * h[0] for h in s.head)
    assert len(s.head) > 2, "the probe ran nothing"
    rest = next(source)
    assert rest == len(s.head), "an item was taken from the input and lost"


def test_the_scaling_probe_reads_a_serialised_function_as_not_scaling() -> None:
    # Two tasks that can only take turns (one lock) take at least twice one task's time: the
    # reading cannot be above 1, on any machine (the single-thread time is given, not measured).
    per_task = 0.02
    s = Sample(head=[(per_task, per_task, None, per_task)], timed=1, wall=per_task, cpu=per_task)
    speedup = _scaling_probe(tasks.serialised_spin, iter([per_task] * 2), s, 2, 0.0)
    assert speedup is not None
    assert speedup <= 1.05, speedup
    assert [h[1] for h in s.head] == [per_task] * 3


def test_the_scaling_probe_runs_tasks_at_the_same_time() -> None:
    # Two tasks that can only end together (a barrier): the probe starts them at once, and
    # reports the two 50 ms tasks done in about 50 ms, not 100.
    meet = threading.Barrier(2, timeout=20)

    def together(x: float) -> float:
        meet.wait()
        ended = threading.Event()
        ended.wait(x)  # waits x seconds: a task of known length, without sleeping on the CPU
        return x

    s = Sample(head=[(0.05, 0.05, None, 0.05)], timed=1, wall=0.05, cpu=0.05)
    speedup = _scaling_probe(together, iter([0.05, 0.05]), s, 2, 0.0)
    assert speedup is not None
    assert speedup > SCALES, speedup
    assert len(s.head) == 3


def test_the_scaling_probe_passes_errors_on() -> None:
    s = Sample(head=[(1, 1, None, 0.001)], timed=1, wall=0.001, cpu=0.001)

    def fails_on_three(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    assert _scaling_probe(fails_on_three, iter([2, 3, 4]), s, 2, 0.0) is None, "no reading from a failed probe"
    assert sorted(h[0] for h in s.head) == [1, 2, 3, 4][: len(s.head)]
    assert any(h[2] is not None for h in s.head), "the task's error is kept with its item"

    def broken_input() -> Any:
        yield 2
        raise OSError("the input broke")

    with pytest.raises(OSError, match="the input broke"):
        _scaling_probe(lambda x: x, broken_input(), Sample(head=[(1, 1, None, 1e-3)], timed=1, wall=1e-3), 2, 0.0)


def test_the_scaling_probe_stops_at_once_when_threads_run_far_slower_than_one() -> None:
    # On 3.13t, tasks updating a dict another thread filled ran ~150x slower on a thread than in
    # the caller's: the probe must not spend its whole window (here 10 s) at that pace. These
    # tasks take 1 ms in the caller's thread and 30 ms on any other.
    caller = threading.get_ident()

    def slower_elsewhere(x: int) -> int:
        threading.Event().wait(0.001 if threading.get_ident() == caller else 0.03)
        return x

    s = Sample(head=[(0, 0, None, 0.001)], timed=1, wall=0.001, cpu=0.001)
    items = iter(range(1, 10**6))
    speedup = _scaling_probe(slower_elsewhere, items, s, 2, 10.0)
    assert speedup is not None
    assert speedup < 1, speedup
    assert len(s.head) <= 1 + 2 * 2, f"the probe ran {len(s.head) - 1} tasks at 30x the pace of one"
    assert [h[0] for h in s.head] == list(range(len(s.head)))
    assert next(items) == len(s.head), "an item was taken and lost"


@pytest.mark.skipif(not TWO_CPUS, reason="threads are probed only with two CPUs")
def test_a_short_job_is_not_probed_for_thread_scaling() -> None:
    # 500 tasks of a few us: the whole job is ~1 ms on one thread, and no reading of threads could
    # make a pool worth it; 100,000 of them may be.
    short = run_sample(lambda x: x * 2, iter(range(500)), 0.05, total=500, free_threaded=True)
    assert short.scaling == {}
    assert decide(short, 500 - short.n, cpus=2, free_threaded=True).mode == "sequential"
    long = run_sample(lambda x: x * 2, iter(range(10**6)), 0.05, total=10**6, free_threaded=True)
    assert 2 in long.scaling


def test_the_n_thread_probe_is_skipped_when_two_threads_do_not_scale() -> None:
    per_task = 0.01
    s = Sample(head=[(per_task, per_task, None, per_task)], timed=1, wall=per_task, cpu=per_task)
    _measure_scaling(tasks.serialised_spin, iter([per_task] * 50), s, budget=5.0, cpus=4)
    assert set(s.scaling) == {2}, "4 threads were probed though 2 did not scale"
    assert s.scaling[2] < SCALES  # ~1.0: they took turns (1.05 was too tight a bound: 1.053 seen)


@pytest.mark.skipif(not TWO_CPUS, reason="parallel CPU work needs two CPUs")
def test_auto_measures_threads_in_parallel_here_and_never_picks_them_for_serialised_work() -> None:
    # Whatever the interpreter: with a GIL, the probe reads the GIL (thread_speedup); without one,
    # how much faster threads ran the work (thread_scaling_2). Work that can only take turns on
    # threads (one lock) scales on processes, each with its own lock.
    # A busy machine can keep the first task off the CPU for its whole first window, which reads as
    # waiting (I/O), not computing: then nothing about threads in parallel was measured; try again.
    for _ in range(3):
        run = tl.imap(tasks.serialised_spin, [0.003] * 300)
        assert list(run) == [0.003] * 300
        advice = run.advice
        assert advice is not None
        if advice.measurements["cpu_ratio"] >= 0.5 and not advice.reasons[0].startswith("The first task only waited"):
            break
        forget(tasks.serialised_spin)  # or the next run would reuse this reading
    key = "thread_speedup" if _system.gil_enabled() else "thread_scaling_2"
    assert key in advice.measurements, advice
    assert advice.mode == "processes", advice


@pytest.mark.skipif(not TWO_CPUS, reason="parallel CPU work needs two CPUs")
def test_auto_does_not_wait_for_probe_tasks_that_show_threads_hopeless() -> None:
    # Tasks 100x slower on the caller's other threads than in it (or in a worker process). Without
    # a GIL the scaling probe runs two on threads, sees within a few ms that they cannot beat one
    # thread, and the run takes those two over as they end while processes run the rest; with a
    # GIL, the GIL probe reads them as not releasing it. Either way: processes, and every item
    # once, in its place.
    tasks.CALLER = (os.getpid(), threading.get_ident())
    try:
        run = tl.imap(tasks.slower_off_the_caller, range(600))
        assert list(run) == [2 * x for x in range(600)]
    finally:
        tasks.CALLER = None
    advice = run.advice
    assert advice is not None
    assert advice.mode == "processes", advice
    stats = run.statistics()
    assert stats.completed == 600
    if not _system.gil_enabled():
        assert advice.measurements["thread_scaling_2"] < SCALES, advice
        assert stats.per_worker.get("taskloom-auto-scaling") == 2, stats.per_worker


# -- what the command line says of this interpreter ----------------------------------------------------------
def test_taskloom_info_measures_thread_scaling(capsys: pytest.CaptureFixture[str]) -> None:
    from taskloom._cli import main

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    if not TWO_CPUS:
        assert info["thread_scaling"] == {}
        return
    assert "2" in info["thread_scaling"], info["thread_scaling"]
    assert set(info["thread_scaling"]) <= {"2", str(len(os.sched_getaffinity(0)))}
    assert main(["info"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Threads (measured):"))
    assert "2 threads ran pure-Python work" in row
    assert ("the GIL lets one run at a time" in row) is _system.gil_enabled()


def test_taskloom_advise_names_the_interpreter(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from taskloom._cli import main

    sample = tmp_path / "sample.txt"
    sample.write_text("\n".join(["1"] * 20) + "\n")
    assert main(["advise", "tests.cli_tasks:spin", str(sample), "--budget", "0.2"]) == 0
    out = capsys.readouterr().out
    expected = "GIL on" if _system.gil_enabled() else "free-threaded, GIL off"
    assert any(line.startswith("interpreter:") and expected in line for line in out.splitlines()), out


def test_the_bench_verdict_does_not_blame_a_gil_that_is_not_there(monkeypatch: pytest.MonkeyPatch) -> None:
    from taskloom._bench import _runner
    from taskloom._bench._runner import ModeResult, _score
    from taskloom._bench._workloads import get_workload

    def results(threads: float) -> list[ModeResult]:
        return [ModeResult("sequential", "sequential", 1, [1.0]), ModeResult("threads", "threads", 2, [threads]),
                ModeResult("processes", "processes", 2, [0.55])]

    monkeypatch.setattr(_runner, "gil_enabled", lambda: True)
    assert "threads 1.0x - the GIL" in _score(get_workload("cpu"), results(1.0), cpus=2)
    monkeypatch.setattr(_runner, "gil_enabled", lambda: False)
    scaled_up = _score(get_workload("cpu"), results(0.52), cpus=2)
    assert scaled_up.startswith("cpu (CPU-bound pure Python): threads, 1.9x on 2 CPUs - no GIL: 2 threads compute "
                                "in parallel;"), scaled_up
    contended = _score(get_workload("cpu"), results(1.4), cpus=2)
    assert "threads 0.7x - no GIL, yet 2 threads did not run faster than one" in contended
    assert "the GIL" not in contended
