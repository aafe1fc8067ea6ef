"""``taskloom.Executor``: a drop-in ``concurrent.futures.Executor`` on taskloom's engines."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from pathlib import Path

import pytest

import taskloom as tl
from tests import helpers
from tests.helpers import expected

POOL_MODES = ["threads", "processes"]
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
def test_map_timeout_raises_timeout_error(mode: str) -> None:
    """As the stdlib: next() raises TimeoutError when a result is not there `timeout` s after map()."""
    ex = tl.Executor(mode, workers=1)
    try:
        t0 = time.monotonic()
        results = ex.map(helpers.sleep_then_return, [0.0, 1.0, 0.0], [1, 2, 3], timeout=0.3)
        assert next(results) == 1
        # concurrent.futures.TimeoutError: the builtin TimeoutError from Python 3.11 on, its own class before.
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)
        elapsed = time.monotonic() - t0
        assert 0.25 <= elapsed < 5
    finally:
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
