"""``timeout=``: processes kill and replace the worker; threads give up on the thread; asyncio cancels.

The spec: on processes the worker running the late task is terminated (SIGTERM, then SIGKILL after
a short grace) and replaced, and the task is reported as ``TaskTimeout`` (``retries`` may retry
it). On threads ``TaskTimeout`` comes at the deadline and the thread runs on. On asyncio the task
is cancelled.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import taskloom as tl
from tests.faults import tasks
from tests.faults.support import (
    GONE_WITHIN,
    Consumer,
    assert_gone,
    assert_one_outcome_per_item,
    consume,
    consume_ok,
    deadlock,
    process_backend,
    wait_marks,
)

TIMEOUT = 1.0
HEALTHY = list(range(1, 11))


def assert_timeout_error(error: object, index: int, how: str) -> None:
    assert isinstance(error, tl.TaskTimeout), repr(error)
    assert isinstance(error, TimeoutError)
    assert error.index == index
    assert error.timeout == TIMEOUT
    message = str(error)
    for words in (f"task {index}", "timeout of 1 s", how):
        assert words in message, f"{words!r} missing from: {message}"


def assert_pool_replaced(mode: tl.Processes, dead: list[int]) -> None:
    """The pool has its two workers again, none of them dead, and runs work."""
    pool = process_backend()
    pids = consume_ok(tl.imap(tasks.getpid, range(8), mode=mode, workers=2, chunksize=1), timeout=30)
    assert process_backend() is pool
    assert not set(pids) & set(dead), "a killed worker ran tasks"
    assert len(set(pool.worker_pids())) == 2, pool.worker_pids()


def test_process_task_sleeping_forever_times_out_and_its_worker_is_replaced(tmp_path: Path) -> None:
    mode = tl.Processes()
    items: list[Any] = [("hang", str(tmp_path), "late"), *HEALTHY]
    consumer = Consumer(tl.imap(tasks.dispatch, items, mode=mode, workers=2, timeout=TIMEOUT,
                                on_error="collect"))
    [pid] = wait_marks(tmp_path, "late")
    started = time.monotonic()
    outcomes, error = consumer.finish(60)
    assert error is None, repr(error)
    assert_one_outcome_per_item(outcomes, len(items))
    assert_timeout_error(outcomes[0].error, 0, "terminated")
    assert outcomes[0].attempts == 1
    assert consumer.arrivals[0] - started < TIMEOUT + GONE_WITHIN, "the deadline was not enforced promptly"
    assert [o.value for o in outcomes[1:]] == [x * x for x in HEALTHY]
    assert_gone([pid], "the worker that ran the late task")
    assert_pool_replaced(mode, [pid])


def test_process_task_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    mode = tl.Processes()
    items: list[Any] = [("hang_ignoring_sigterm", str(tmp_path), "late"), *HEALTHY]
    consumer = Consumer(tl.imap(tasks.dispatch, items, mode=mode, workers=2, timeout=TIMEOUT,
                                on_error="collect"))
    [pid] = wait_marks(tmp_path, "late")
    outcomes, error = consumer.finish(60)
    assert error is None, repr(error)
    assert_one_outcome_per_item(outcomes, len(items))
    assert_timeout_error(outcomes[0].error, 0, "terminated")
    assert [o.value for o in outcomes[1:]] == [x * x for x in HEALTHY]
    assert_gone([pid], "the worker that ignored SIGTERM")
    assert (tmp_path / f"sigterm-{pid}").exists(), "the worker was not sent SIGTERM before SIGKILL"
    assert_pool_replaced(mode, [pid])


def test_process_timeout_is_retried_with_retries(tmp_path: Path) -> None:
    mode = tl.Processes()
    items: list[Any] = [("hang", str(tmp_path), "late"), *HEALTHY]
    outcomes, error = consume(tl.imap(tasks.dispatch, items, mode=mode, workers=2, timeout=TIMEOUT,
                                      retries=1, retry_on=TimeoutError, on_error="collect"), timeout=60)
    assert error is None, repr(error)
    assert_one_outcome_per_item(outcomes, len(items))
    assert_timeout_error(outcomes[0].error, 0, "terminated")
    pids = tasks.marks(str(tmp_path), "late")
    assert len(pids) == 2, f"expected 2 attempts, got {pids}"
    assert pids[0] != pids[1], "the retry must run on a fresh worker"
    assert outcomes[0].attempts == 2
    assert outcomes[0].error.attempts == 2
    assert_gone(pids, "the workers that ran the late task")
    assert_pool_replaced(mode, pids)


def test_process_timeout_with_on_error_raise(tmp_path: Path) -> None:
    mode = tl.Processes()
    _, error = consume(tl.imap(tasks.dispatch, [1, ("hang", str(tmp_path), "late")], mode=mode, workers=2,
                               timeout=TIMEOUT), timeout=60)
    assert_timeout_error(error, 1, "terminated")
    assert_gone(tasks.marks(str(tmp_path), "late"), "the worker that ran the late task")


def test_thread_task_times_out_at_the_deadline_and_runs_on() -> None:
    started, release = threading.Event(), threading.Event()
    holder: list[threading.Thread] = []
    items: list[Any] = [("thread_wait", started, release, holder), *HEALTHY]
    consumer = Consumer(tl.imap(tasks.dispatch, items, mode="threads", workers=2, timeout=TIMEOUT,
                                on_error="collect"))
    try:
        if not started.wait(30):
            deadlock("the thread task never started")
        begun = time.monotonic()
        outcomes, error = consumer.finish(30)
        assert error is None, repr(error)
        assert not release.is_set()
        assert holder[0].is_alive(), "the thread should run on past its deadline"
    finally:
        release.set()  # let the abandoned thread finish: no thread outlives the test
    assert_one_outcome_per_item(outcomes, len(items))
    assert_timeout_error(outcomes[0].error, 0, "runs on")
    assert consumer.arrivals[0] - begun < TIMEOUT + GONE_WITHIN
    assert [o.value for o in outcomes[1:]] == [x * x for x in HEALTHY]
    holder[0].join(GONE_WITHIN)
    assert not holder[0].is_alive(), "the abandoned thread did not end after its task returned"
    again = consume_ok(tl.imap(tasks.square, range(20), mode="threads", workers=2), timeout=30)
    assert again == [x * x for x in range(20)]


def test_async_task_times_out_and_is_cancelled() -> None:
    cancelled = threading.Event()
    items: list[Any] = [("ahang_until_cancelled", cancelled), *HEALTHY]
    consumer = Consumer(tl.imap(tasks.adispatch, items, mode="async", workers=4, timeout=TIMEOUT,
                                on_error="collect"))
    begun = time.monotonic()
    outcomes, error = consumer.finish(30)
    assert error is None, repr(error)
    assert_one_outcome_per_item(outcomes, len(items))
    assert_timeout_error(outcomes[0].error, 0, "cancelled")
    assert consumer.arrivals[0] - begun < TIMEOUT + GONE_WITHIN
    assert [o.value for o in outcomes[1:]] == [x * x for x in HEALTHY]
    if not cancelled.wait(GONE_WITHIN):
        deadlock("the late coroutine was never cancelled")
    again = consume_ok(tl.imap(tasks.adispatch, list(range(20)), mode="async", workers=4), timeout=30)
    assert again == [x * x for x in range(20)]
