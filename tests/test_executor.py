"""``taskloom.Executor``: a drop-in ``concurrent.futures.Executor`` on taskloom's engines."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from concurrent.futures.process import BrokenProcessPool
from concurrent.futures.thread import BrokenThreadPool
from pathlib import Path
from typing import Any

import psutil
import pytest

import taskloom as tl
from tests import executor_tasks, helpers
from tests.helpers import expected

POOL_MODES = ["threads", "processes"]
START_METHODS = [m for m in ("fork", "forkserver", "spawn") if m in multiprocessing.get_all_start_methods()]
RESULT_TIMEOUT = 30


# -- asyncio ------------------------------------------------------------------------------------------
@pytest.mark.smoke
@pytest.mark.parametrize("mode", POOL_MODES)
def test_under_asyncio_run_in_executor(mode: str) -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        with tl.Executor(mode, workers=2) as ex:
            calls = [loop.run_in_executor(ex, helpers.square, i) for i in range(30)]
            return await asyncio.wait_for(asyncio.gather(*calls), RESULT_TIMEOUT)

    assert asyncio.run(main()) == expected(helpers.square, range(30))


@pytest.mark.smoke
@pytest.mark.parametrize("mode", POOL_MODES)
def test_run_in_executor_propagates_the_task_exception(mode: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with tl.Executor(mode, workers=2) as ex:
            await asyncio.wait_for(loop.run_in_executor(ex, helpers.raise_value_error, "async boom"), RESULT_TIMEOUT)

    with pytest.raises(ValueError, match="async boom"):
        asyncio.run(main())


# -- the concurrent.futures shape -------------------------------------------------------------------------
@pytest.mark.smoke
@pytest.mark.parametrize("mode", [*POOL_MODES, "sequential"])
def test_is_a_concurrent_futures_executor(mode: str) -> None:
    with tl.Executor(mode, workers=2) as ex:
        assert isinstance(ex, concurrent.futures.Executor)
        future = ex.submit(helpers.add, 2, b=3)
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(timeout=RESULT_TIMEOUT) == 5
        assert list(ex.map(helpers.square, range(20))) == expected(helpers.square, range(20))
        assert list(ex.map(helpers.add, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]
        assert list(ex.map(helpers.square, [])) == []


@pytest.mark.smoke
def test_async_executor_runs_coroutine_functions() -> None:
    with tl.Executor("async", workers=10) as ex:
        futures = [ex.submit(helpers.asquare, i) for i in range(20)]
        assert [f.result(timeout=RESULT_TIMEOUT) for f in futures] == expected(helpers.square, range(20))


@pytest.mark.smoke
@pytest.mark.parametrize("mode", POOL_MODES)
def test_context_manager_waits_for_every_future(mode: str) -> None:
    with tl.Executor(mode, workers=2) as ex:
        futures = [ex.submit(helpers.sleep_then_return, 0.01, i) for i in range(10)]
    assert all(f.done() for f in futures)
    assert [f.result(timeout=0) for f in futures] == list(range(10))


@pytest.mark.smoke
@pytest.mark.parametrize("mode", POOL_MODES)
def test_shutdown_wait_true_waits(mode: str) -> None:
    ex = tl.Executor(mode, workers=2)
    futures = [ex.submit(helpers.sleep_then_return, 0.05, i) for i in range(4)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result(timeout=0) for f in futures] == [0, 1, 2, 3]


@pytest.mark.smoke
def test_shutdown_cancel_futures_cancels_what_has_not_started() -> None:
    gate = threading.Event()
    started = threading.Event()

    def blocker() -> str:
        started.set()
        gate.wait(RESULT_TIMEOUT)
        return "released"

    ex = tl.Executor("threads", workers=1)
    try:
        first = ex.submit(blocker)
        helpers.wait_for(started, "the first task did not start")
        rest = [ex.submit(helpers.square, i) for i in range(8)]
        ex.shutdown(wait=False, cancel_futures=True)
        assert not first.cancelled()
        assert rest[-1].cancelled(), "a queued future was not cancelled by shutdown(cancel_futures=True)"
        assert sum(f.cancelled() for f in rest) >= 6
        with pytest.raises(RuntimeError):
            ex.submit(helpers.square, 1)
    finally:
        gate.set()
    assert first.result(timeout=RESULT_TIMEOUT) == "released"
    for i, f in enumerate(rest):
        if not f.cancelled():
            assert f.result(timeout=RESULT_TIMEOUT) == i * i
    ex.shutdown(wait=True)


@pytest.mark.smoke
def test_cancel_a_future_that_has_not_started() -> None:
    gate = threading.Event()
    started = threading.Event()

    def blocker() -> str:
        started.set()
        gate.wait(RESULT_TIMEOUT)
        return "released"

    with tl.Executor("threads", workers=1) as ex:
        try:
            first = ex.submit(blocker)
            helpers.wait_for(started, "the first task did not start")
            queued = [ex.submit(helpers.square, i) for i in range(6)]
            assert not first.cancel(), "a running future was cancelled"
            assert queued[-1].cancel()
            assert queued[-1].cancelled()
        finally:
            gate.set()
        assert first.result(timeout=RESULT_TIMEOUT) == "released"
        assert [f.result(timeout=RESULT_TIMEOUT) for f in queued[:-1]] == [0, 1, 4, 9, 16]
        assert ex.submit(helpers.square, 7).result(timeout=RESULT_TIMEOUT) == 49


@pytest.mark.smoke
@pytest.mark.parametrize("mode", POOL_MODES)
def test_map_timeout_raises_timeout_error(mode: str, tmp_path: Path) -> None:
    """As the stdlib: next() raises TimeoutError when a result is not there `timeout` s after map()."""
    go = str(tmp_path / "go")
    ex = tl.Executor(mode, workers=1)
    try:
        assert ex.submit(helpers.square, 1).result(timeout=RESULT_TIMEOUT) == 1  # the worker is up
        t0 = time.monotonic()
        # The second task waits for a file that is made only after the timeout was seen.
        results = ex.map(executor_tasks.wait_for_file, [str(tmp_path), go, str(tmp_path)],
                         [RESULT_TIMEOUT] * 3, timeout=1.0)
        assert next(results) is True
        # concurrent.futures.TimeoutError: the builtin TimeoutError from Python 3.11 on, its own class before.
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)
        assert time.monotonic() - t0 >= 0.95  # a lower bound only: the deadline runs from map()
    finally:
        executor_tasks.touch(go)
        ex.shutdown(wait=True, cancel_futures=True)


@pytest.mark.smoke
@pytest.mark.parametrize("mode", POOL_MODES)
def test_as_completed_and_wait(mode: str) -> None:
    assert tl.as_completed is concurrent.futures.as_completed
    assert tl.wait is concurrent.futures.wait
    with tl.Executor(mode, workers=2) as ex:
        futures = [ex.submit(helpers.square, i) for i in range(25)]
        got = sorted(f.result() for f in tl.as_completed(futures, timeout=RESULT_TIMEOUT))
        assert got == expected(helpers.square, range(25))
        more = [ex.submit(helpers.square, i) for i in range(10)]
        done, not_done = tl.wait(more, timeout=RESULT_TIMEOUT)
        assert len(done) == 10
        assert not not_done
        failing = [ex.submit(helpers.sleep_then_return, 0.5), ex.submit(helpers.raise_value_error, "first")]
        done, _ = tl.wait(failing, timeout=RESULT_TIMEOUT, return_when=concurrent.futures.FIRST_EXCEPTION)
        assert failing[1] in done
        assert isinstance(failing[1].exception(timeout=0), ValueError)


# -- exceptions -------------------------------------------------------------------------------------------
@pytest.mark.smoke
@pytest.mark.parametrize("mode", [*POOL_MODES, "sequential"])
def test_future_raises_the_tasks_own_exception(mode: str) -> None:
    with tl.Executor(mode, workers=2) as ex:
        future = ex.submit(helpers.raise_value_error, "its own message")
        with pytest.raises(ValueError, match="its own message") as info:
            future.result(timeout=RESULT_TIMEOUT)
        assert type(future.exception(timeout=0)) is ValueError
    if mode == "processes":
        cause = info.value.__cause__
        assert cause is not None, "no remote traceback under an exception from a worker process"
        text = str(cause)
        assert "Traceback" in text
        assert "raise_value_error" in text
        assert "its own message" in text


@pytest.mark.smoke
def test_executor_timeout_gives_task_timeout() -> None:
    gate = threading.Event()

    def hangs() -> None:
        gate.wait(RESULT_TIMEOUT)

    ex = tl.Executor("threads", workers=2, timeout=0.2)
    try:
        future = ex.submit(hangs)
        with pytest.raises(tl.TaskTimeout):
            future.result(timeout=RESULT_TIMEOUT)
        assert isinstance(future.exception(timeout=0), TimeoutError)
        assert ex.submit(helpers.square, 4).result(timeout=RESULT_TIMEOUT) == 16
    finally:
        gate.set()
        ex.shutdown(wait=True)


@pytest.mark.smoke
def test_executor_retries() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, tl.Executor("processes", workers=2, retries=2) as ex:
        flaky = helpers.FlakyTask(tmp, 2)
        assert ex.submit(flaky, 21).result(timeout=RESULT_TIMEOUT) == 42
        assert flaky.attempts(21) == 3



def test_executor_retries_only_what_retry_on_names(tmp_path: Path) -> None:
    (tmp_path / "conn").mkdir()
    (tmp_path / "value").mkdir()
    connection = helpers.FlakyTask(tmp_path / "conn", 1, ConnectionError)
    value = helpers.FlakyTask(tmp_path / "value", 1, ValueError)
    with tl.Executor("threads", workers=2, retries=3, retry_on=ConnectionError, backoff=0.01) as ex:
        assert ex.submit(connection, 1).result(timeout=RESULT_TIMEOUT) == 2
        with pytest.raises(ValueError, match="fails on purpose"):
            ex.submit(value, 1).result(timeout=RESULT_TIMEOUT)
    assert (connection.attempts(1), value.attempts(1)) == (2, 1)


def test_executor_rate_limits_starts() -> None:
    # 5 starts/s: the bucket holds one token, so 4 tasks need at least 3 more refills (0.6 s).
    with tl.Executor("threads", workers=4, rate="5/s") as ex:
        t0 = time.monotonic()
        futures = [ex.submit(helpers.square, i) for i in range(4)]
        assert [f.result(timeout=RESULT_TIMEOUT) for f in futures] == [0, 1, 4, 9]
        assert time.monotonic() - t0 >= 0.55  # a lower bound: a rate limit only ever slows down

# -- misuse ----------------------------------------------------------------------------------------------
@pytest.mark.smoke
def test_auto_is_rejected() -> None:
    with pytest.raises(ValueError, match="auto"):
        tl.Executor("auto")
    with pytest.raises(ValueError, match="auto"):
        tl.Executor(tl.Auto())


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"workers": 0}, "workers"), ({"timeout": 0}, "timeout"), ({"retries": -1}, "retries")],
)
def test_bad_options_are_rejected(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        tl.Executor("threads", **kwargs)


@pytest.mark.smoke
@pytest.mark.parametrize("mode", [*POOL_MODES, "sequential"])
def test_submit_after_shutdown_raises_runtime_error(mode: str) -> None:
    ex = tl.Executor(mode, workers=2)
    assert ex.submit(helpers.square, 3).result(timeout=RESULT_TIMEOUT) == 9
    ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(helpers.square, 3)
    never_used = tl.Executor(mode, workers=2)
    never_used.shutdown()
    with pytest.raises(RuntimeError):
        never_used.submit(helpers.square, 3)


def test_time_without_submissions_counts_as_input_wait() -> None:
    with tl.Executor("threads", workers=2) as ex:
        assert ex.submit(helpers.square, 2).result(timeout=30) == 4
        time.sleep(0.3)  # the executor has nothing to do: it waits for its input
        assert ex.submit(helpers.square, 3).result(timeout=30) == 9
        stats = ex.statistics()
    assert stats is not None
    assert stats.input_wait >= 0.25, stats.summary()


# -- the concurrent.futures contract (issue 16; CPython's own suite: tests/test_cpython_futures.py) --------
@pytest.mark.parametrize("mode", POOL_MODES)
def test_separate_submits_start_as_soon_as_a_worker_is_free(mode: str, tmp_path: Path) -> None:
    """Never two submits in one batch: after a quick first task, a task that waits for a second one
    would wait for ever if the second were queued behind it on the same worker."""
    flag = str(tmp_path / "second-ran")
    with tl.Executor(mode, workers=2) as ex:
        assert ex.submit(helpers.square, 3).result(timeout=RESULT_TIMEOUT) == 9  # teaches a batch size
        first = ex.submit(executor_tasks.wait_for_file, flag, RESULT_TIMEOUT)
        second = ex.submit(executor_tasks.touch, flag)
        assert second.result(timeout=RESULT_TIMEOUT) is True
        assert first.result(timeout=RESULT_TIMEOUT) is True, "the second task ran only after the first"


def test_a_queued_thread_future_stays_cancellable_until_it_starts() -> None:
    gate = threading.Event()
    started = threading.Event()
    ran: list[str] = []

    def blocker() -> str:
        started.set()
        gate.wait(RESULT_TIMEOUT)
        return "released"

    with tl.Executor("threads", workers=1) as ex:
        try:
            first = ex.submit(blocker)
            helpers.wait_for(started, "the first task did not start")
            queued = ex.submit(ran.append, "queued")  # handed to the pool, behind the busy thread
            assert not queued.running()
            assert queued.cancel()
            done, _ = tl.wait([queued], timeout=RESULT_TIMEOUT)  # waiters are told of the cancel
            assert done == {queued}
        finally:
            gate.set()
        assert first.result(timeout=RESULT_TIMEOUT) == "released"
        assert ex.submit(helpers.square, 5).result(timeout=RESULT_TIMEOUT) == 25
    assert ran == []


class _Tracked:
    def method(self) -> int:
        return 1


def _make_tracked(_: object = None) -> _Tracked:
    return _Tracked()


def _freed(collected: threading.Event) -> bool:
    """Wait for ``collected`` in short slices. Without a GIL an object released last by another
    thread is freed by the thread that made it (here, often this one: it made the future) when that
    thread next runs Python code; one long blocking wait would keep it alive to the end."""
    deadline = time.monotonic() + RESULT_TIMEOUT
    while not collected.wait(0.01):
        if time.monotonic() > deadline:
            return False
    return True


def _watch(obj: object) -> tuple[threading.Event, weakref.ref[Any]]:
    """An event set when ``obj`` is collected (so a test waits for it instead of sleeping)."""
    collected = threading.Event()
    return collected, weakref.ref(obj, lambda _: collected.set())


@pytest.mark.parametrize("mode", POOL_MODES)
def test_a_finished_task_leaves_no_reference_behind(mode: str) -> None:
    """Nor its function (a bound method here), nor its future, nor its result: a long-lived
    executor must not keep them alive (CPython's test_no_stale_references, test_free_reference)."""
    with tl.Executor(mode, workers=2) as ex:
        tracked = _Tracked()
        collected, _ = _watch(tracked)
        ex.submit(tracked.method)  # the future is dropped at once
        del tracked
        assert _freed(collected), "the executor keeps the submitted function alive"
        future = ex.submit(helpers.square, 4)
        assert future.result(timeout=RESULT_TIMEOUT) == 16
        future_collected, _ = _watch(future)
        del future
        assert _freed(future_collected), "the executor keeps a settled future alive"
        unpicklable = ex.submit(helpers.type_name, threading.Lock())  # fails in submit, for processes
        assert unpicklable.exception(timeout=RESULT_TIMEOUT) is not None if mode == "processes" else True
        failed_collected, _ = _watch(unpicklable)
        del unpicklable
        assert _freed(failed_collected), "a failed future is kept alive (a reference cycle?)"


def test_a_result_is_not_kept_once_handed_out() -> None:
    with tl.Executor("threads", workers=2) as ex:
        for value in ex.map(_make_tracked, range(5)):
            collected, _ = _watch(value)
            del value
            assert _freed(collected), "the executor keeps a result it handed out"


@pytest.mark.parametrize("mode", POOL_MODES)
def test_map_refuses_a_chunksize_below_one(mode: str) -> None:
    with tl.Executor(mode, workers=2) as ex:
        for bad in (0, -1):
            with pytest.raises(ValueError, match="chunksize"):
                ex.map(helpers.square, range(3), chunksize=bad)
        assert list(ex.map(pow, range(40), range(40), chunksize=6)) == [pow(i, i) for i in range(40)]


def test_map_chunks_travel_as_one_task_on_processes() -> None:
    with tl.Executor("processes", workers=2) as ex:
        pids = list(ex.map(executor_tasks.getpid_after, [0.0] * 12, chunksize=6))
    assert len(pids) == 12
    assert len(set(pids[:6])) == 1, "a chunk ran on more than one worker"


def test_pickling_faults_raise_the_stdlib_types() -> None:
    """What ProcessPoolExecutor's futures raise: what pickle raised for a fault pickling the call or
    its result; BrokenProcessPool for one unpickling them (the cause says which). The executor goes on."""
    with tl.Executor("processes", workers=2) as ex:
        lock_arg = ex.submit(helpers.type_name, threading.Lock())
        with pytest.raises(TypeError, match="pickle") as info:
            lock_arg.result(timeout=RESULT_TIMEOUT)
        assert any("could not be pickled" in note for note in getattr(info.value, "__notes__", []))

        with pytest.raises(pickle.PicklingError, match="Error in pickle"):
            ex.submit(id, executor_tasks.ErrorAtPickle()).result(timeout=RESULT_TIMEOUT)
        ex.shutdown(wait=False)  # a pickling error after shutdown still reaches its future
    with tl.Executor("processes", workers=2) as ex:
        with pytest.raises(pickle.PicklingError, match="Error in pickle") as info:
            ex.submit(executor_tasks.return_instance, executor_tasks.ErrorAtPickle).result(timeout=RESULT_TIMEOUT)
        assert any("result" in note for note in getattr(info.value, "__notes__", []))

        with pytest.raises(BrokenProcessPool, match="could not be unpickled in the worker"):
            ex.submit(id, executor_tasks.ErrorAtUnpickle()).result(timeout=RESULT_TIMEOUT)

        with pytest.raises(BrokenProcessPool, match="result could not be unpickled") as broken:
            ex.submit(executor_tasks.return_instance, executor_tasks.ErrorAtUnpickle).result(timeout=RESULT_TIMEOUT)
        detail = broken.value.__cause__
        assert isinstance(detail, tl.SerializationError)
        assert detail.what == "result"
        assert isinstance(detail.__cause__, pickle.UnpicklingError)

        assert ex.submit(helpers.square, 6).result(timeout=RESULT_TIMEOUT) == 36  # still usable


def test_a_crash_is_a_broken_process_pool_and_the_executor_goes_on() -> None:
    with tl.Executor(tl.Processes(crash_retries=0), workers=2) as ex:
        with pytest.raises(BrokenProcessPool) as info:
            ex.submit(os._exit, 3).result(timeout=RESULT_TIMEOUT)
        assert isinstance(info.value, tl.WorkerCrashed)
        assert "exit code 3" in str(info.value)
        assert not ex._broken
        assert ex.submit(helpers.square, 7).result(timeout=RESULT_TIMEOUT) == 49


def test_thread_initializer_runs_in_each_thread_with_its_arguments() -> None:
    mode = tl.Threads(initializer=executor_tasks.remember, initargs=("loaded",))
    with tl.Executor(mode, workers=3) as ex:
        assert list(ex.map(executor_tasks.remembered, range(20))) == ["loaded"] * 20


@pytest.mark.parametrize("mode", POOL_MODES)
def test_a_failing_initializer_breaks_the_executor(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    config = (tl.Threads(initializer=executor_tasks.fail_to_initialize) if mode == "threads"
              else tl.Processes(initializer=executor_tasks.fail_to_initialize))
    expected_type = BrokenThreadPool if mode == "threads" else BrokenProcessPool
    ex = tl.Executor(config, workers=2)
    try:
        with pytest.raises(expected_type, match="error in initializer"):
            ex.submit(helpers.square, 2).result(timeout=RESULT_TIMEOUT)
        assert ex._broken
        with pytest.raises(expected_type, match="error in initializer"):
            ex.submit(helpers.square, 2)  # refused at once, as by the stdlib
    finally:
        ex.shutdown(wait=True)
    if mode == "threads":  # where ThreadPoolExecutor logs it
        assert any(r.name == "concurrent.futures" and r.levelno == logging.CRITICAL for r in caplog.records)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_process_initializer_takes_a_queue_of_the_same_context(start_method: str) -> None:
    queue = multiprocessing.get_context(start_method).Queue()
    mode = tl.Processes(start_method=start_method, initializer=executor_tasks.put_pid, initargs=(queue,))
    with tl.Executor(mode, workers=1) as ex:
        pid = ex.submit(os.getpid).result(timeout=RESULT_TIMEOUT)
    assert queue.get(timeout=RESULT_TIMEOUT) == pid


def _run_script(code: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=root, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize("mode", POOL_MODES)
def test_work_submitted_just_before_exit_still_runs(mode: str) -> None:
    got = _run_script(f"""
        import taskloom as tl
        from tests.executor_tasks import sleep_and_print
        ex = tl.Executor({mode!r}, workers=2)
        ex.submit(sleep_and_print, 0.2, "ran at exit")
        """)
    assert got.stdout.strip() == "ran at exit", got.stderr
    assert got.stderr == ""


@pytest.mark.parametrize("mode", POOL_MODES)
def test_submit_while_the_interpreter_exits_raises_runtime_error(mode: str) -> None:
    got = _run_script(f"""
        import atexit

        def last():  # registered before taskloom: runs after its exit hook
            try:
                ex.submit(abs, -1)
            except RuntimeError as exc:
                print("refused:", exc)

        atexit.register(last)
        import taskloom as tl
        ex = tl.Executor({mode!r}, workers=2)
        assert ex.submit(abs, -1).result() == 1
        """)
    assert got.stdout.strip() == "refused: cannot schedule new futures after interpreter shutdown", got.stderr


@pytest.mark.parametrize("mode", POOL_MODES)
def test_an_executor_is_broken_once_taskloom_shutdown_stopped_its_pool(mode: str) -> None:
    """Its warm pool is gone (a deliberate difference: docs/executor.md): said at once, never a hang."""
    expected_type = BrokenThreadPool if mode == "threads" else BrokenProcessPool
    ex = tl.Executor(mode, workers=2)
    assert ex.submit(helpers.square, 2).result(timeout=RESULT_TIMEOUT) == 4
    tl.shutdown()
    with pytest.raises(expected_type, match="shut down"):
        ex.submit(helpers.square, 3).result(timeout=RESULT_TIMEOUT)  # raised by submit (threads) or result
    with pytest.raises(expected_type, match="shut down"):
        ex.submit(helpers.square, 3)
    ex.shutdown(wait=True)


def test_a_dropped_executor_finishes_its_work_and_ends_its_driver(tmp_path: Path) -> None:
    flag = str(tmp_path / "done")
    ex = tl.Executor("threads", workers=1)
    ex.submit(executor_tasks.touch, flag)
    driver = ex._driver
    assert driver is not None
    del ex
    gc.collect()
    helpers.join(driver, "the driver of a dropped executor")
    assert os.path.exists(flag)


# -- cancel_running ------------------------------------------------------------------------------------------
def _started_pid(path: Path) -> int:
    assert helpers.poll_until(path.exists, RESULT_TIMEOUT, interval=0.01), "the task did not start"
    return int(path.read_text())


def _gone(pid: int) -> bool:
    """Whether process ``pid`` ends (or is a zombie) within RESULT_TIMEOUT; polled, never waited
    for, so the pool still reaps its own child."""
    def dead() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    return helpers.poll_until(dead, RESULT_TIMEOUT, interval=0.01)


def test_by_default_a_running_process_task_cannot_be_cancelled(tmp_path: Path) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    with tl.Executor("processes", workers=1) as ex:
        future = ex.submit(executor_tasks.announce_then_wait, str(started), str(go), RESULT_TIMEOUT)
        pid = _started_pid(started)
        assert not future.cancel()
        go.touch()
        assert future.result(timeout=RESULT_TIMEOUT) == pid


def test_cancel_running_kills_a_running_process_task(tmp_path: Path) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    with tl.Executor("processes", workers=1, cancel_running=True) as ex:
        future = ex.submit(executor_tasks.announce_then_wait, str(started), str(go), 600)
        pid = _started_pid(started)
        assert future.running()
        assert future.cancel()
        assert future.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(timeout=RESULT_TIMEOUT)
        done, _ = tl.wait([future], timeout=RESULT_TIMEOUT)
        assert done == {future}
        assert _gone(pid), "the worker running the cancelled task is still alive"
        replacement = ex.submit(os.getpid).result(timeout=RESULT_TIMEOUT)  # the pool starts another
        assert replacement != pid


def test_cancel_running_stops_the_work_behind_an_asyncio_wait_for_timeout(tmp_path: Path) -> None:
    started, go = tmp_path / "started", tmp_path / "go"

    async def main(ex: tl.Executor) -> int:
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(ex, executor_tasks.announce_then_wait, str(started), str(go), 600)
        pid = await asyncio.wait_for(loop.run_in_executor(None, _started_pid, started), RESULT_TIMEOUT)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(work, 0.1)  # a lower bound: the task waits 600 s for a file nobody makes
        return pid

    with tl.Executor("processes", workers=1, cancel_running=True) as ex:
        pid = asyncio.run(main(ex))
        assert _gone(pid), "the work went on after asyncio.wait_for gave up on it"
        assert ex.submit(helpers.square, 8).result(timeout=RESULT_TIMEOUT) == 64


@pytest.mark.parametrize("mode", ["threads", "sequential", "async"])
def test_cancel_running_is_for_processes_only(mode: str) -> None:
    with pytest.raises(ValueError, match="cancel_running"):
        tl.Executor(mode, cancel_running=True)


def test_an_unpicklable_result_is_named_once_in_the_message() -> None:
    [outcome] = tl.map(executor_tasks.return_instance, [executor_tasks.ErrorAtUnpickle], mode="processes",
                       workers=1, on_error="collect")
    assert isinstance(outcome.error, tl.SerializationError)
    message = str(outcome.error)
    assert "the result could not be unpickled" in message
    assert "the result the result" not in message


def test_shutdown_cancel_futures_keeps_the_tasks_idle_workers_would_have_started() -> None:
    # ThreadPoolExecutor's idle workers have taken the first tasks by the time shutdown() runs;
    # here the driver may not have handed them over yet (a busy machine), which must not cancel
    # work that had a free worker: CPython's test_cancel_futures failed so under load.
    release = threading.Event()
    ex = tl.Executor("threads", workers=2)
    fs = [ex.submit(release.wait, 30) for _ in range(20)]
    ex.shutdown(wait=False, cancel_futures=True)
    try:
        others = [f for f in fs if not f.cancelled()]
        assert len(others) == 2, [f._state for f in fs]  # type: ignore[attr-defined]
        assert others == fs[:2]  # the first ones, in submission order
    finally:
        release.set()
    assert all(f.result(timeout=30) is True for f in others)
    ex.shutdown(wait=True)
