"""``imap`` and ``Run``: lazy input, the in-flight bound, statistics, advice, contextvars."""

from __future__ import annotations

import itertools
import threading

import pytest

import taskloom as tl
from tests import helpers
from tests.helpers import counting, expected, join, task_for, wait_for

TAKE = 1_000


# -- the input is consumed lazily -------------------------------------------------------------------
@pytest.mark.smoke
@pytest.mark.parametrize("prefetch", [1, 2, 3])
def test_endless_input_fixed_chunksize_bounded_over_pull(backend: str, prefetch: int) -> None:
    """The window is workers * prefetch groups: past what was consumed, at most that many chunks."""
    chunksize, workers = 10, 2
    source, tally = counting(itertools.count())
    run = tl.imap(task_for(backend, helpers.square), source, mode=backend, workers=workers,
                  chunksize=chunksize, prefetch=prefetch)
    got = list(itertools.islice(run, TAKE))
    run.cancel()
    assert got == expected(helpers.square, range(TAKE))
    over_pull = tally.pulled - TAKE
    bound = run.workers * prefetch * chunksize + chunksize
    assert 0 <= over_pull <= bound, f"pulled {over_pull} items past the {TAKE} consumed (bound {bound})"
    assert run.statistics().submitted == tally.pulled


@pytest.mark.smoke
def test_endless_input_auto_chunksize_bounded_over_pull(backend: str) -> None:
    source, tally = counting(itertools.count())
    run = tl.imap(task_for(backend, helpers.square), source, mode=backend, workers=2)
    got = [value for _, value in zip(range(TAKE), run, strict=False)]
    run.cancel()
    assert got == expected(helpers.square, range(TAKE))
    assert 0 <= tally.pulled - TAKE < 200_000


@pytest.mark.smoke
def test_endless_input_unordered(backend: str) -> None:
    source, tally = counting(itertools.count())
    with tl.imap(task_for(backend, helpers.square), source, mode=backend, workers=2, chunksize=10,
                 ordered=False) as run:
        got = list(itertools.islice(run, TAKE))
    assert len(set(got)) == TAKE
    assert tally.pulled - TAKE <= run.workers * 2 * 10 + 10


@pytest.mark.smoke
def test_imap_does_not_read_input_before_iteration(backend: str) -> None:
    source, tally = counting(range(100))
    run = tl.imap(task_for(backend, helpers.square), source, mode=backend)
    assert tally.pulled == 0
    assert list(run) == expected(helpers.square, range(100))
    assert tally.pulled == 100


@pytest.mark.smoke
def test_ordered_false_yields_all_results(backend: str) -> None:
    items = list(range(1_000))
    run = tl.imap(task_for(backend, helpers.square), items, mode=backend, ordered=False, chunksize=3)
    got = list(run)
    assert sorted(got) == expected(helpers.square, items)
    assert run.statistics().completed == len(items)


# -- statistics ------------------------------------------------------------------------------------
@pytest.mark.smoke
def test_statistics_counters(backend: str, tmp_path) -> None:
    fn = _StatsTask(helpers.FlakyTask(tmp_path, 1))
    run = tl.imap(task_for(backend, fn), range(100), mode=backend, workers=2, chunksize=5,
                  retries=1, retry_on=ValueError, on_error="collect")
    outcomes = list(run)
    stats = run.statistics()
    assert isinstance(stats, tl.RunStatistics)
    assert stats.mode == backend
    assert stats.workers == (1 if backend == "sequential" else 2)
    assert stats.submitted == 100
    assert stats.completed == 99
    assert stats.failed == 1
    assert stats.retried == 3  # items 0, 1, 2 failed once each
    assert stats.batches >= 100 // 5 + 3
    assert stats.chunksize == 5
    assert stats.elapsed > 0
    assert stats.task_time >= 0
    assert stats.mean_task >= 0
    assert 0.0 <= stats.utilisation <= 1.0
    assert sum(stats.per_worker.values()) >= 100
    assert [o.index for o in outcomes if not o.ok] == [13]


class _StatsTask:
    """The statistics test's task, picklable for worker processes."""

    def __init__(self, flaky: helpers.FlakyTask) -> None:
        self.flaky = flaky

    def __call__(self, x: int) -> int:
        if x == 13:
            raise KeyError(x)
        return self.flaky(x) if x < 3 else x * 2


@pytest.mark.smoke
def test_statistics_while_running_and_before(backend: str) -> None:
    run = tl.imap(task_for(backend, helpers.square), range(50), mode=backend, chunksize=1)
    before = run.statistics()
    assert before.submitted == 0
    assert before.completed == 0
    assert before.mean_task == 0.0
    first = [next(run) for _ in range(10)]  # next(), not islice: leaving a for loop early cancels
    during = run.statistics()
    assert first == expected(helpers.square, range(10))
    assert 10 <= during.completed <= 50
    assert during.submitted >= during.completed
    assert list(run) == expected(helpers.square, range(10, 50))
    assert run.statistics().completed == 50


# -- advice ----------------------------------------------------------------------------------------
@pytest.mark.smoke
def test_advice_is_set_for_auto() -> None:
    run = tl.imap(helpers.square, range(200))
    assert list(run) == expected(helpers.square, range(200))
    assert isinstance(run.advice, tl.Advice)
    assert run.advice.mode in ("sequential", "threads", "processes")
    assert run.mode == run.advice.mode
    assert run.advice.reasons
    assert all(isinstance(r, str) and r for r in run.advice.reasons)
    stats = run.statistics()
    assert stats.submitted == 200
    assert stats.completed == 200


@pytest.mark.smoke
def test_advice_for_a_coroutine_function_is_async() -> None:
    run = tl.imap(helpers.asquare, range(20), mode="auto")
    assert list(run) == expected(helpers.square, range(20))
    assert isinstance(run.advice, tl.Advice)
    assert run.advice.mode == "async"
    assert run.mode == "async"


@pytest.mark.smoke
def test_advice_is_none_for_an_explicit_mode(backend: str) -> None:
    run = tl.imap(task_for(backend, helpers.square), range(10), mode=backend)
    assert list(run) == expected(helpers.square, range(10))
    assert run.advice is None
    assert run.mode == backend


# -- contextvars -----------------------------------------------------------------------------------
@pytest.mark.smoke
def test_thread_task_sees_the_callers_contextvars() -> None:
    token = helpers.REQUEST_ID.set("request-42")
    try:
        got = tl.map(helpers.read_request_id, range(20), mode="threads", workers=4, chunksize=1)
        with tl.Executor("threads", workers=2) as ex:
            from_executor = ex.submit(helpers.read_request_id).result(timeout=10)
    finally:
        helpers.REQUEST_ID.reset(token)
    assert got == ["request-42"] * 20
    assert from_executor == "request-42"
    # A later call from a caller that did not set it sees the default (the warm threads keep nothing).
    assert tl.map(helpers.read_request_id, range(4), mode="threads", workers=4) == ["unset"] * 4


@pytest.mark.smoke
def test_async_task_sees_the_callers_contextvars() -> None:
    token = helpers.REQUEST_ID.set("request-7")
    try:
        got = tl.map(helpers.aread_request_id, range(20), mode="async")
    finally:
        helpers.REQUEST_ID.reset(token)
    assert got == ["request-7"] * 20


def test_a_sequential_task_does_not_hold_the_run_for_other_threads() -> None:
    # The task runs in the consumer's thread; statistics() and cancel() from another thread must
    # not wait for it to finish.
    started, release = threading.Event(), threading.Event()
    results: list[object] = []

    def task(x: int) -> int:
        started.set()
        release.wait(30)
        return x

    run = tl.imap(task, [1, 2, 3], mode="sequential")
    consumer = threading.Thread(target=lambda: results.extend(run), daemon=True)
    consumer.start()
    try:
        wait_for(started, "the task to start")
        answered = threading.Event()
        asker = threading.Thread(target=lambda: (run.statistics(), run.cancel(), answered.set()), daemon=True)
        asker.start()
        assert answered.wait(10), "statistics()/cancel() waited for the running task"
    finally:
        release.set()
    join(consumer, "the consumer")
    assert results in ([], [1])  # cancelled while task 1 ran: nothing after it runs


def test_a_loop_yields_nothing_of_the_current_block_after_cancel_from_another_thread() -> None:
    # Sequential tiny tasks come back in blocks of thousands: the loop hands them out one by one,
    # and a cancel() between two of them ends the loop there, mid-block.
    run = tl.imap(helpers.square, range(100_000), mode="sequential")
    seen = []
    for value in run:
        seen.append(value)
        if len(seen) == 3:
            canceller = threading.Thread(target=run.cancel)
            canceller.start()
            join(canceller, "run.cancel()")
    assert seen == [0, 1, 4]
    assert list(run) == []


def test_next_and_a_loop_share_one_position() -> None:
    run = tl.imap(helpers.square, range(10_000), mode="sequential")
    assert [next(run), next(run)] == [0, 1]
    for value in run:
        assert value == 4
        break  # leaving the loop cancels the run
    assert list(run) == []
    again = tl.imap(helpers.square, range(1000), mode="sequential")
    assert next(again) == 0
    assert list(again) == [i * i for i in range(1, 1000)]
