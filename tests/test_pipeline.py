"""Pipelines: stages on mixed engines, bounded queues, order, errors, and stopping without timeouts.

Every wait here is on an event or a condition with a generous bound; no assertion is about time.
"""

from __future__ import annotations

import contextvars
import io
import itertools
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskloom as tl
from taskloom._pipeline_flow import Channel, StageFailure
from taskloom._pipeline_report import PipelineProgress
from taskloom._pools import live_backends
from tests import pipeline_tasks as pt
from tests.helpers import FlakyTask, counting, deadlock, poll_until, session_members, wait_for

ROOT = Path(__file__).resolve().parent.parent
HYPOTHESIS = settings(deadline=None, max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])


def pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("taskloom-pipeline-") and t.is_alive()]


def drain_into(results: list[object], iterable: Iterator[object] | tl.Pipeline[object]) -> None:
    for x in iterable:
        results.append(x)


def assert_stopped(pipe: tl.Pipeline[object]) -> None:
    """Every thread of the pipeline ended and no stage is still running (within a generous bound)."""
    if not poll_until(lambda: not pipe.statistics().running and not pipeline_threads(), timeout=10):
        deadlock(f"pipeline threads still running: {pipeline_threads()}")
    assert all(s.state in ("done", "failed", "cancelled") for s in pipe.statistics().stages)


# -- the surface -----------------------------------------------------------------------------------
@pytest.mark.smoke
def test_exported_and_lazy() -> None:
    assert tl.pipeline in (getattr(tl, n) for n in tl.__all__)
    assert tl.Pipeline.__module__ == "taskloom"
    source, tally = counting(range(10))
    pipe = tl.pipeline(source).then(pt.double, mode="threads", workers=2)
    it = iter(pipe)
    assert tally.pulled == 0, "nothing may run before the first next()"
    assert next(it) == 0
    del it
    assert_stopped(pipe)


@pytest.mark.smoke
def test_then_checks_arguments_before_anything_runs() -> None:
    pipe = tl.pipeline(range(3))
    with pytest.raises(ValueError, match="workers"):
        pipe.then(pt.double, workers=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        pipe.then(pt.double, mode="gpu")
    with pytest.raises(ValueError, match="async def"):
        pipe.then(pt.aneg, mode="threads")
    with pytest.raises(ValueError, match="mode='async'"):
        pipe.then(pt.double, mode="async")
    with pytest.raises(ValueError, match="maxsize"):
        pipe.then(pt.double, maxsize=0)
    with pytest.raises(ValueError, match="on_error"):
        pipe.then(pt.double, on_error="ignore")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="n must be"):
        pipe.batch(0)
    with pytest.raises(TypeError, match="pred must be callable"):
        pipe.filter(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="source must be iterable"):
        tl.pipeline(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ordered"):
        tl.pipeline([], ordered="yes")  # type: ignore[arg-type]


def test_same_function_twice_gets_distinct_stage_names() -> None:
    pipe = tl.pipeline(range(5)).then(pt.inc, mode="threads").then(pt.inc, mode="threads")
    assert pipe.collect() == [x + 2 for x in range(5)]
    assert [s.name for s in pipe.statistics().stages] == ["inc", "inc#2"]


# -- order --------------------------------------------------------------------------------------------
def test_order_preserved_through_a_process_stage_with_random_durations() -> None:
    items = list(range(300))
    pipe = (tl.pipeline(items)
            .then(pt.jitter_identity, mode="threads", workers=4, maxsize=8)
            .then(pt.jitter_square, mode="processes", workers=2, maxsize=8)
            .then(pt.inc, mode="threads", workers=3))
    assert pipe.collect() == [x * x + 1 for x in items]
    stats = pipe.statistics()
    assert [s.items_out for s in stats.stages] == [300, 300, 300]
    assert all(s.state == "done" for s in stats.stages)
    assert_stopped(pipe)


def test_order_preserved_across_retries(tmp_path: Path) -> None:
    flaky = FlakyTask(tmp_path, failures=1)  # every item fails once, then returns item * 2
    pipe = tl.pipeline(range(40)).then(flaky, mode="processes", workers=2, retries=1).then(pt.inc, mode="threads")
    assert pipe.collect() == [2 * x + 1 for x in range(40)]


def test_unordered_lets_results_out_as_soon_as_ready() -> None:
    first_held = threading.Event()
    release = threading.Event()

    def hold_zero(x: int) -> int:
        if x == 0:
            first_held.set()
            wait_for(release, "the consumer to release item 0")
        return x

    pipe = tl.pipeline(range(20), ordered=False).then(hold_zero, mode="threads", workers=4, maxsize=4)
    got = []
    for x in pipe:
        got.append(x)
        if len(got) == 5:  # five results overtook item 0, which is still held
            assert 0 not in got
            release.set()
    assert first_held.is_set()
    assert sorted(got) == list(range(20))
    assert got.index(0) >= 5


# -- stopping -----------------------------------------------------------------------------------------
def test_endless_source_with_islice_stops_every_stage_and_worker() -> None:
    source, tally = counting(itertools.count())
    pipe = (tl.pipeline(source)
            .then(pt.double, mode="threads", workers=4)
            .then(pt.square, mode="processes", workers=2)
            .then(pt.aneg))
    got = list(itertools.islice(pipe, 100))
    assert got == [-((2 * x) ** 2) for x in range(100)]
    assert_stopped(pipe)
    stats = pipe.statistics()
    assert [s.state for s in stats.stages] == ["cancelled"] * 3
    runs = [p.run for p in pipe._execution.pumps]  # type: ignore[union-attr]
    # Cancelled, or ended: a stage whose input was aborted before its run's cancel() came sees the
    # abort as the end of its input and ends by itself; either way nothing of it runs any more.
    assert all(run is not None and (run._cancelled or run._done) for run in runs), \
        f"a stage's run is still going: {[(r._cancelled, r._done) for r in runs if r is not None]}"
    pulled = tally.pulled
    assert pulled < 10_000, "the source is read only as far as the bounded queues allow"
    assert tally.pulled == pulled, "nothing reads the source any more"


def test_break_out_of_the_loop_and_exception_in_the_body_stop_it() -> None:
    pipe = tl.pipeline(itertools.count()).then(pt.double, mode="threads", workers=2)
    for x in pipe:
        if x >= 10:
            break
    assert_stopped(pipe)
    def body_fails() -> None:
        for x in pipe.then(pt.inc, mode="processes", workers=2):
            if x > 5:
                raise RuntimeError("the loop body failed")

    with pytest.raises(RuntimeError, match="body"):
        body_fails()
    assert not pipeline_threads() or poll_until(lambda: not pipeline_threads(), timeout=10)


def test_cancel_from_another_thread_ends_the_iteration() -> None:
    started = threading.Event()

    def mark(x: int) -> int:
        started.set()
        return x

    pipe = tl.pipeline(itertools.count()).then(mark, mode="threads", workers=2)
    got: list[int] = []

    def consume() -> None:
        got.extend(pipe)

    consumer = threading.Thread(target=consume)
    consumer.start()
    wait_for(started, "the first task")
    pipe.cancel()
    consumer.join(30)
    if consumer.is_alive():
        deadlock("the consumer did not see cancel()")
    assert got == list(range(len(got)))
    assert_stopped(pipe)


def test_slow_sink_keeps_the_buffered_items_under_the_bound() -> None:
    """Items read from the source and not yet delivered never exceed the documented bound.

    Bound (see ``Pipeline``): 1 (the feeder's item in hand)
      + stage 0: maxsize 4 + max(2 x 2 workers, 4) + 1 = 9
      + stage 1: maxsize 3 + max(2 x 1 worker, 3) + 1 = 7
      + the output queue: 3 (the last stage's maxsize)
      = 20.
    """
    bound = 1 + (4 + max(2 * 2, 4) + 1) + (3 + max(2 * 1, 3) + 1) + 3
    release = threading.Event()
    lock = threading.Lock()
    counts = {"pulled": 0, "delivered": 0, "most_buffered": 0}

    def source() -> Iterator[int]:
        for i in itertools.count():
            with lock:
                counts["pulled"] += 1
                counts["most_buffered"] = max(counts["most_buffered"], counts["pulled"] - counts["delivered"])
            yield i

    def sink(x: int) -> int:
        wait_for(release, "the test to release the sink", timeout=60)
        return x

    pipe = (tl.pipeline(source())
            .then(pt.identity, mode="threads", workers=2, maxsize=4)
            .then(sink, mode="threads", workers=1, maxsize=3))
    got: list[int] = []

    def consume() -> None:
        for x in pipe:
            with lock:
                counts["delivered"] += 1
            got.append(x)
            if len(got) == 300:
                break

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        # Saturated: both queues full while the sink is blocked (a condition, not a duration).
        def full() -> bool:
            stages = pipe.statistics().stages
            return len(stages) == 2 and stages[0].queue_depth == 4 and stages[1].queue_depth == 3

        if not poll_until(full, timeout=30):
            deadlock(f"the queues never filled up: {pipe.statistics()}")
        with lock:
            buffered = counts["pulled"] - counts["delivered"]
        assert 4 + 3 <= buffered <= bound
    finally:
        release.set()
    consumer.join(60)
    if consumer.is_alive():
        deadlock("the consumer did not finish")
    assert got == list(range(300))
    assert counts["most_buffered"] <= bound
    stats = pipe.statistics()
    assert stats.stages[0].queue_max <= 4
    assert stats.stages[1].queue_max <= 3
    assert_stopped(pipe)


# -- errors -----------------------------------------------------------------------------------------
def test_error_in_the_middle_stage_stops_upstream_and_downstream_and_names_the_stage() -> None:
    source, tally = counting(itertools.count())
    pipe = (tl.pipeline(source)
            .then(pt.identity, mode="threads", workers=2)
            .then(pt.fail_on_ten, mode="processes", workers=2, name="middle")
            .then(pt.double, mode="threads", workers=2))
    got: list[object] = []
    with pytest.raises(tl.TaskError) as info:
        drain_into(got, pipe)
    err = info.value
    assert err.stage == "middle"
    assert err.index == 10
    assert "middle" in str(err)
    assert "10" in str(err)
    assert isinstance(err.__cause__, ValueError)
    # Ordered: exactly what a plain loop would have produced before failing.
    assert got == [2 * x for x in range(10)]
    assert_stopped(pipe)
    assert [s.state for s in pipe.statistics().stages] == ["cancelled", "failed", "cancelled"]
    pulled = tally.pulled
    assert tally.pulled == pulled, "upstream stopped reading the source"
    assert pickle.loads(pickle.dumps(err)).stage == "middle"


def test_collect_mode_delivers_every_item_exactly_once() -> None:
    items = list(range(300))
    pipe = (tl.pipeline(items)
            .then(pt.tens_fail_on_threes, mode="processes", workers=2, on_error="collect", name="tens")
            .then(pt.plus_one_fails_on_fifties, mode="threads", workers=3, on_error="collect"))
    results = pipe.collect()
    errors = pipe.errors
    from_results = [(r - 1) // 10 for r in results]
    from_errors = [e.index for e in errors]
    assert sorted(from_results + from_errors) == items, "each item once, as a result or an error"
    assert from_results == sorted(from_results), "results stay in source order"
    assert {e.index for e in errors if e.stage == "tens"} == {x for x in items if x % 3 == 0}
    assert {e.index for e in errors if e.stage == "plus_one_fails_on_fifties"} == {
        x for x in items if x % 3 and (10 * x) % 50 == 0}
    for e in errors:
        assert isinstance(e, StageFailure)
        assert e.error.stage == e.stage
        assert e.error.index == e.index
        assert isinstance(e.error.__cause__, ValueError if e.stage == "tens" else KeyError)
    stats = pipe.statistics()
    assert stats.errors == len(errors)
    assert [s.errors for s in stats.stages] == [100, sum(1 for e in errors if e.stage != "tens")]


def test_source_error_is_raised_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield from range(5)
        raise OSError("the source broke")

    got: list[object] = []
    with pytest.raises(OSError, match="the source broke"):
        drain_into(got, tl.pipeline(source()).then(pt.double, mode="processes", workers=2))
    assert got == [0, 2, 4, 6, 8]


def test_a_failing_filter_names_the_step() -> None:
    def picky(x: int) -> bool:
        if x == 7:
            raise LookupError("no sevens")
        return True

    pipe = tl.pipeline(range(20)).then(pt.inc, mode="threads").filter(picky)
    with pytest.raises(tl.TaskError, match="no sevens") as info:
        pipe.collect()
    assert info.value.stage == "filter(test_a_failing_filter_names_the_step.<locals>.picky)"
    assert info.value.index == 6  # inc(6) == 7
    assert_stopped(pipe)


def test_unpicklable_function_fails_the_process_stage_by_name() -> None:
    lock = threading.Lock()

    def uses_a_lock(x: int) -> int:
        with lock:
            return x

    pipe = tl.pipeline(range(5)).then(uses_a_lock, mode="processes", workers=2, name="locked")
    with pytest.raises(tl.SerializationError) as info:
        pipe.collect()
    assert info.value.stage == "locked"
    assert_stopped(pipe)


def test_a_stage_timeout_raises_task_timeout_naming_the_stage() -> None:
    release = threading.Event()

    def stuck_on_three(x: int) -> int:
        if x == 3:
            release.wait(60)  # held until the test ends: the timeout must not wait for it
        return x

    pipe = tl.pipeline(range(10)).then(stuck_on_three, mode="threads", workers=2, timeout=0.2, name="stuck")
    try:
        with pytest.raises(tl.TaskTimeout) as info:
            pipe.collect()
    finally:
        release.set()
    assert info.value.stage == "stuck"
    assert info.value.index == 3


def test_auto_mode_stages_choose_an_engine() -> None:
    pipe = tl.pipeline(range(300)).then(pt.square).then(pt.aneg)
    assert pipe.collect() == [-(x * x) for x in range(300)]
    modes = [s.mode for s in pipe.statistics().stages]
    assert modes[0] in ("sequential", "threads", "processes")
    assert modes[1] == "async"


def test_a_pipeline_inside_a_pool_thread_does_not_wait_for_its_own_pool() -> None:
    def inner(k: int) -> list[int]:
        return tl.pipeline(range(k, k + 5)).then(pt.double, mode="threads", workers=2).collect()

    got: list[list[int]] = []
    outer = threading.Thread(target=lambda: got.extend(tl.map(inner, range(4), mode="threads", workers=2)))
    outer.start()
    outer.join(60)
    if outer.is_alive():
        deadlock("a pipeline inside a pool thread waited for its own pool")
    assert got == [[2 * x for x in range(k, k + 5)] for k in range(4)]


def test_flatten_of_a_non_iterable_and_a_failing_iterable_name_the_step() -> None:
    with pytest.raises(tl.TaskError, match="flatten") as info:
        tl.pipeline([[1], 2, [3]]).flatten().collect()  # type: ignore[misc]
    assert info.value.stage == "flatten"
    assert info.value.index == 1
    assert isinstance(info.value.__cause__, TypeError)

    def broken() -> Iterator[int]:
        yield 1
        raise ArithmeticError("half an iterable")

    with pytest.raises(tl.TaskError, match="half an iterable"):
        tl.pipeline([[0], broken()]).flatten().then(pt.inc, mode="threads").collect()


def test_a_failing_filter_before_the_first_stage_stops_the_source() -> None:
    source, tally = counting(itertools.count())
    with pytest.raises(tl.TaskError, match="ZeroDivisionError"):
        tl.pipeline(source).filter(lambda x: 1 / (x - 5)).then(pt.inc, mode="threads").collect()
    assert tally.pulled == 6


def test_a_stage_that_raises_a_base_exception_still_reaches_the_consumer() -> None:
    def leave(x: int) -> int:
        if x == 2:
            raise SystemExit(3)  # not an Exception: it escapes the run itself, in the stage's thread
        return x

    got: list[object] = []
    with pytest.raises(tl.TaskError, match="SystemExit") as info:
        drain_into(got, tl.pipeline(range(5)).then(leave, mode="sequential", name="leaver"))
    assert info.value.stage == "leaver"
    assert isinstance(info.value.__cause__, SystemExit)
    assert got in ([], [0], [0, 1])  # what came before it in its batch is lost with the batch


def test_an_auto_stage_whose_input_ends_while_it_samples() -> None:
    pipe = tl.pipeline(range(3)).then(pt.square)
    assert pipe.collect() == [0, 1, 4]
    assert pipe.statistics().stages[0].state == "done"


def test_context_manager_and_repr() -> None:
    with tl.pipeline(itertools.count()).then(pt.double, mode="threads", name="dbl").filter(pt.is_even) as pipe:
        assert next(iter(pipe)) == 0
    assert_stopped(pipe)
    assert repr(pipe) == "<Pipeline pipeline(count).then(dbl).filter(is_even)>"
    with pytest.raises(TypeError, match="name"):
        pipe.then(pt.inc, name="")



def test_stages_with_the_same_mode_and_workers_have_pools_of_their_own() -> None:
    # Stage "a" holds items 2 and 3 while stage "b" holds items 0 and 1: four tasks at once, which
    # two shared 2-thread pools could never run (the barrier would break after its timeout).
    together = threading.Barrier(4, timeout=20)

    def a(x: int) -> int:
        if x >= 2:
            together.wait()
        return x

    def b(x: int) -> int:
        if x < 2:
            together.wait()
        return x

    pipe = tl.pipeline(range(4)).then(a, mode="threads", workers=2).then(b, mode="threads", workers=2)
    assert pipe.collect() == [0, 1, 2, 3]
    pools = {id(backend) for backend in live_backends() if backend.name == "threads"}
    assert len(pools) == 2
    again = tl.pipeline(range(4)).then(a, mode="threads", workers=2).then(b, mode="threads", workers=2)
    together.reset()
    assert again.collect() == [0, 1, 2, 3]
    assert {id(backend) for backend in live_backends() if backend.name == "threads"} == pools, "pools not reused"

# -- composition --------------------------------------------------------------------------------------
@HYPOTHESIS
@given(items=st.lists(st.integers(-1000, 1000), max_size=60), ordered=st.booleans(), n=st.integers(1, 4))
def test_mixed_engines_equal_a_sequential_composition(items: list[int], ordered: bool, n: int) -> None:
    pipe = (tl.pipeline(items, ordered=ordered)
            .then(pt.inc, mode="threads", workers=3, maxsize=5)
            .then(pt.square, mode="processes", workers=2, maxsize=7)
            .filter(pt.is_even)
            .then(pt.aneg, workers=10)
            .then(pt.chunks_of_two, mode="threads", workers=2)
            .flatten()
            .batch(n))
    flat = [v for x in items if pt.is_even(pt.square(pt.inc(x))) for v in pt.chunks_of_two(-pt.square(pt.inc(x)))]
    want = [flat[i:i + n] for i in range(0, len(flat), n)]
    got = pipe.collect()
    if ordered:
        assert got == want
    else:
        # Unordered: batches are formed from items in arrival order.
        assert sorted(v for b in got for v in b) == sorted(flat)
        assert all(len(b) == n for b in got[:-1])


def test_steps_alone_and_around_stages() -> None:
    pipe = tl.pipeline(range(10)).filter(pt.is_even).batch(2)
    assert pipe.collect() == [[0, 2], [4, 6], [8]]
    pipe2 = tl.pipeline([[1, 2], [], [3]]).flatten().then(pt.double, mode="sequential").batch(5)
    assert pipe2.collect() == [[2, 4, 6]]
    assert tl.pipeline([]).then(pt.double, mode="threads").collect() == []


def test_a_pipeline_over_a_list_runs_again_but_not_twice_at_once() -> None:
    pipe = tl.pipeline(range(10)).then(pt.double, mode="threads", workers=2)
    assert pipe.collect() == pipe.collect() == [2 * x for x in range(10)]
    it = iter(pipe)
    next(it)
    with pytest.raises(RuntimeError, match="already running"):
        next(iter(pipe))
    del it
    assert_stopped(pipe)


def test_thread_and_async_stages_see_the_callers_contextvars() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    token = var.set("caller")
    try:
        async def aread(_: str) -> str:
            return var.get()

        got = tl.pipeline(range(4)).then(lambda _: var.get(), mode="threads", workers=2).then(aread).collect()
    finally:
        var.reset(token)
    assert got == ["caller"] * 4


# -- statistics and progress ------------------------------------------------------------------------
def test_statistics_count_items_and_show_the_bottleneck() -> None:
    def slow(x: int) -> int:
        time.sleep(0.02)  # the work of the slow stage (not a wait of the test)
        return x

    pipe = (tl.pipeline(range(30))
            .then(pt.inc, mode="threads", workers=2, name="fast")
            .then(slow, mode="threads", workers=1, name="slow", maxsize=4)
            .filter(pt.is_even))
    stats = pipe.run()
    fast, slow_stage = stats.stages
    assert (fast.items_in, fast.items_out, slow_stage.items_in, slow_stage.items_out) == (30, 30, 30, 30)
    assert stats.source_items == 30
    assert stats.delivered == 15
    assert stats.errors == 0
    assert slow_stage.busy > 0
    assert slow_stage.queue_max <= 4
    assert slow_stage.queue_maxsize == 4
    assert stats.bottleneck == "slow"
    assert slow_stage.mode == "threads"
    assert slow_stage.workers == 1
    assert slow_stage.idle >= 0
    assert 0 <= slow_stage.utilisation <= 1
    assert "slow" in stats.table()
    assert "bottleneck: slow" in stats.table()


def test_statistics_before_the_first_run() -> None:
    stats = tl.pipeline(range(3)).then(pt.inc, maxsize=9).statistics()
    assert [(s.name, s.state, s.queue_maxsize) for s in stats.stages] == [("inc", "pending", 9)]
    assert tl.pipeline(range(3)).errors == []


def test_progress_prints_one_line_per_stage_when_not_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    out = tl.pipeline(range(10), progress=True).then(pt.inc, mode="threads", name="first").then(
        pt.double, mode="threads", name="second").collect()
    assert out == [2 * (x + 1) for x in range(10)]
    err = capsys.readouterr().err
    assert "taskloom pipeline first [threads" in err
    assert "taskloom pipeline second [threads" in err


def test_progress_on_a_terminal_has_one_rich_line_per_stage() -> None:
    from rich.console import Console

    pipe = tl.pipeline(range(10)).then(pt.inc, mode="threads", name="alpha").then(pt.double, mode="threads")
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    pipe.collect()
    view = PipelineProgress(pipe.statistics, [10, 10], console=console)
    view.start()
    view.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())
    assert "alpha [threads" in text
    assert "double [threads" in text
    assert "10/10" in text


def test_channel_abort_wakes_a_blocked_put_and_get() -> None:
    full = Channel(1)
    assert full.put((0, "a"))
    empty = Channel(1)
    results: dict[str, object] = {}

    def put() -> None:
        results["put"] = full.put((1, "b"))

    def get() -> None:
        try:
            empty.get()
        except Exception as exc:
            results["get"] = type(exc).__name__

    threads = [threading.Thread(target=put), threading.Thread(target=get)]
    for t in threads:
        t.start()
    full.abort()
    empty.abort()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "deadlock: abort did not wake a waiter"
    assert results == {"put": False, "get": "Aborted"}


# -- Ctrl-C -----------------------------------------------------------------------------------------------
CTRL_C_SCRIPT = """
import itertools
import taskloom as tl
from tests import pipeline_tasks as pt

if __name__ == "__main__":
    pipe = (tl.pipeline(itertools.count())
            .then(pt.jitter_identity, mode="threads", workers=2)
            .then(pt.slow_pid, mode="processes", workers=2)
            .then(pt.identity, mode="threads", workers=2))
    for i, _ in enumerate(pipe):
        if i == 4:
            print("READY", flush=True)
"""


def test_ctrl_c_stops_a_running_pipeline_with_no_orphans(tmp_path: Path) -> None:
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env, start_new_session=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            _interrupt_and_check(proc)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            for pid in session_members(proc.pid):
                os.kill(pid, signal.SIGKILL)


def _interrupt_and_check(proc: subprocess.Popen[str]) -> None:
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "READY":
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(ready, "the pipeline script to print READY", timeout=60)
    family = psutil.Process(proc.pid).children(recursive=True)
    assert family, "the script has worker processes"
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        deadlock("the pipeline did not stop within 10 s of Ctrl-C")
    _, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, f"orphans left after Ctrl-C: {alive}"
    assert poll_until(lambda: not session_members(proc.pid), timeout=10), "a process of the session is left"
    assert proc.returncode != 0
    assert proc.stderr is not None
    assert "KeyboardInterrupt" in proc.stderr.read()
    reader.join(10)
