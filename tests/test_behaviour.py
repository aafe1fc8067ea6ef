"""The shared behaviour suite: every test here runs on every engine (the ``backend`` fixture).

One feature, written once in the scheduler, must behave the same on sequential, threads,
processes and asyncio: results, errors, retries, streaming input, cancellation.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskloom as tl
from taskloom._pools import live_backends
from tests import helpers
from tests.helpers import counting, expected, task_for

HYPOTHESIS = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- results -------------------------------------------------------------------------------------
@pytest.mark.smoke
def test_results_equal_builtin_map(backend: str) -> None:
    items = list(range(-50, 250))
    assert tl.map(task_for(backend, helpers.square), items, mode=backend) == list(map(helpers.square, items))


@HYPOTHESIS
@given(
    items=st.lists(st.integers()),
    chunksize=st.one_of(st.integers(min_value=1, max_value=50), st.just("auto")),
    ordered=st.booleans(),
)
def test_any_input_any_chunksize_equals_builtin_map(
    backend: str, items: list[int], chunksize: int | str, ordered: bool
) -> None:
    got = tl.map(task_for(backend, helpers.square), items, mode=backend, chunksize=chunksize, ordered=ordered)
    want = list(map(helpers.square, items))
    if ordered:
        assert got == want
    else:
        assert sorted(got) == sorted(want)


@pytest.mark.smoke
def test_unordered_yields_every_result(backend: str) -> None:
    items = list(range(500))
    got = tl.map(task_for(backend, helpers.square), items, mode=backend, ordered=False, chunksize=7)
    assert sorted(got) == expected(helpers.square, items)


@pytest.mark.smoke
def test_empty_input(backend: str) -> None:
    fn = task_for(backend, helpers.square)
    assert tl.map(fn, [], mode=backend) == []
    assert list(tl.imap(fn, iter(()), mode=backend)) == []
    assert tl.map(fn, [], mode=backend, on_error="collect") == []


@pytest.mark.smoke
def test_generator_input(backend: str) -> None:
    source = (x for x in range(300))
    assert tl.map(task_for(backend, helpers.square), source, mode=backend) == expected(helpers.square, range(300))


@pytest.mark.smoke
def test_ten_thousand_items(backend: str) -> None:
    items = range(10_000)
    got = tl.map(task_for(backend, helpers.square), items, mode=backend)
    assert got == expected(helpers.square, items)


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_tiny_tasks_are_batched(mode: str) -> None:
    run = tl.imap(helpers.square, range(20_000), mode=mode)
    assert list(run) == [x * x for x in range(20_000)]
    assert run.statistics().batches < 2_000  # not one dispatch per item


@pytest.mark.smoke
def test_starmap(backend: str) -> None:
    pairs = [(i, 2 * i) for i in range(100)]
    assert tl.starmap(task_for(backend, helpers.add), pairs, mode=backend) == [a + b for a, b in pairs]
    assert tl.starmap(task_for(backend, helpers.add), iter([]), mode=backend) == []


@pytest.mark.smoke
def test_starmap_collect_gives_outcomes(backend: str) -> None:
    outcomes = tl.starmap(task_for(backend, helpers.add), [(1, 2), (3, 4)], mode=backend, on_error="collect")
    assert [o.value for o in outcomes] == [3, 7]
    assert [o.item for o in outcomes] == [(1, 2), (3, 4)]
    assert all(o.ok for o in outcomes)


def _consume_into(run: tl.Run, out: list) -> None:
    for value in run:
        out.append(value)


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.smoke
@pytest.mark.parametrize("chunksize", [1, 4, "auto"])
def test_on_error_raise(backend: str, chunksize: int | str) -> None:
    fn = task_for(backend, helpers.fail_on_seven)
    with pytest.raises(tl.TaskError) as info:
        tl.map(fn, range(20), mode=backend, chunksize=chunksize)
    err = info.value
    assert type(err) is tl.TaskError
    assert err.index == 7
    assert err.item_repr == "7"
    assert err.attempts == 1
    assert isinstance(err.__cause__, ValueError)
    assert "seven is right out" in str(err.__cause__)
    assert "seven is right out" in str(err)


@pytest.mark.smoke
def test_on_error_raise_yields_nothing_past_the_failure(backend: str, tmp_path) -> None:
    """Ordered: the values before the failed item, then TaskError - never a value after it."""
    run = tl.imap(task_for(backend, helpers.SevenFailsLate(tmp_path)), range(20), mode=backend, chunksize=1,
                  workers=2, retries=1)
    got: list[int] = []
    with pytest.raises(tl.TaskError) as info:
        _consume_into(run, got)
    assert info.value.index == 7
    assert info.value.attempts == 2
    assert got == list(range(len(got))), "values after the failed item were yielded, out of place"
    assert len(got) <= 7


def test_on_error_raise_yields_the_values_before_the_failure_in_its_own_batch(backend: str, tmp_path) -> None:
    """Items 5 and 6 ran in the batch that fails at 7, before it: an ordered consumer gets them
    (then TaskError at 7), as it would with batches of one. Item 7 fails only once the consumer
    has the batch before (a batch still running when another fails is cancelled: fail fast)."""
    told = threading.Event()

    async def seven_fails_when_told(item: int) -> int:  # mode="async": waits without blocking the loop
        if item == 7:
            await asyncio.to_thread(told.wait, 30)
            raise ValueError("seven is right out")
        return item

    def consume(run: Any, got: list[int]) -> None:
        for value in run:
            got.append(value)
            if len(got) == 5:
                (tmp_path / "go").touch()
                told.set()

    task = seven_fails_when_told if backend == "async" else helpers.SevenFailsWhenTold(tmp_path)
    got: list[int] = []
    with pytest.raises(tl.TaskError) as info:
        consume(tl.imap(task, range(20), mode=backend, chunksize=5, workers=2), got)
    assert info.value.index == 7
    assert got == list(range(7))


@pytest.mark.smoke
@pytest.mark.parametrize("chunksize", [1, 5, "auto"])
def test_on_error_collect(backend: str, chunksize: int | str) -> None:
    items = list(range(30))
    outcomes = tl.map(
        task_for(backend, helpers.fail_on_multiples_of_three), items, mode=backend, on_error="collect",
        chunksize=chunksize,
    )
    assert len(outcomes) == len(items)
    for i, outcome in enumerate(outcomes):
        assert isinstance(outcome, tl.Outcome)
        assert outcome.index == i
        assert outcome.item == i
        assert outcome.attempts == 1
        if i % 3 == 0:
            assert not outcome.ok
            assert outcome.value is None
            assert isinstance(outcome.error, tl.TaskError)
            assert outcome.error.index == i
            assert outcome.error.item_repr == repr(i)
            assert isinstance(outcome.error.__cause__, ValueError)
            with pytest.raises(tl.TaskError):
                outcome.result()
        else:
            assert outcome.ok
            assert outcome.error is None
            assert outcome.value == i * 10
            assert outcome.result() == i * 10


@HYPOTHESIS
@given(
    items=st.lists(st.integers(min_value=-1000, max_value=1000), max_size=80),
    chunksize=st.one_of(st.integers(min_value=1, max_value=20), st.just("auto")),
    ordered=st.booleans(),
)
def test_collect_any_input_one_outcome_per_item(
    backend: str, items: list[int], chunksize: int | str, ordered: bool
) -> None:
    outcomes = tl.map(task_for(backend, helpers.fail_on_multiples_of_three), items, mode=backend,
                      chunksize=chunksize, ordered=ordered, on_error="collect")
    if not ordered:
        outcomes = sorted(outcomes, key=lambda o: o.index)
    assert [o.index for o in outcomes] == list(range(len(items)))
    assert [o.item for o in outcomes] == items
    for o in outcomes:
        assert o.ok == (o.item % 3 != 0)
        assert o.value == (o.item * 10 if o.ok else None)
        assert o.ok or isinstance(o.error, tl.TaskError)


@pytest.mark.smoke
def test_collect_unordered_gives_one_outcome_per_item(backend: str) -> None:
    outcomes = tl.map(
        task_for(backend, helpers.fail_on_multiples_of_three), range(60), mode=backend, on_error="collect",
        ordered=False, chunksize=4,
    )
    assert sorted(o.index for o in outcomes) == list(range(60))
    assert all(o.ok == (o.index % 3 != 0) for o in outcomes)


# -- retries ---------------------------------------------------------------------------------------
@pytest.mark.smoke
@pytest.mark.parametrize(("failures", "chunksize"), [(1, "auto"), (2, "auto"), (2, 1), (2, 4)])
def test_retries_until_success(backend: str, tmp_path, failures: int, chunksize: int | str) -> None:
    flaky = helpers.FlakyTask(tmp_path, failures)
    items = list(range(6))
    outcomes = tl.map(task_for(backend, flaky), items, mode=backend, retries=failures, on_error="collect",
                      chunksize=chunksize)
    assert [o.value for o in outcomes] == [x * 2 for x in items]
    assert all(o.ok for o in outcomes)
    assert [o.attempts for o in outcomes] == [failures + 1] * len(items)
    assert [flaky.attempts(x) for x in items] == [failures + 1] * len(items)


@pytest.mark.smoke
def test_retries_in_raise_mode_return_values(backend: str, tmp_path) -> None:
    flaky = helpers.FlakyTask(tmp_path, 2)
    assert tl.map(task_for(backend, flaky), range(5), mode=backend, retries=2) == [0, 2, 4, 6, 8]


@pytest.mark.smoke
def test_too_few_retries_reports_every_attempt(backend: str, tmp_path) -> None:
    flaky = helpers.FlakyTask(tmp_path, 3)
    outcomes = tl.map(task_for(backend, flaky), [10, 11], mode=backend, retries=1, on_error="collect")
    for outcome in outcomes:
        assert not outcome.ok
        assert outcome.attempts == 2
        assert outcome.error is not None
        assert outcome.error.attempts == 2
        assert isinstance(outcome.error.__cause__, ValueError)
    assert [flaky.attempts(x) for x in (10, 11)] == [2, 2]
    (tmp_path / "raise").mkdir()
    with pytest.raises(tl.TaskError) as info:
        tl.map(task_for(backend, helpers.FlakyTask(tmp_path / "raise", 3)), [5], mode=backend, retries=1)
    assert info.value.attempts == 2


@pytest.mark.smoke
def test_retry_on_restricts_what_is_retried(backend: str, tmp_path) -> None:
    (tmp_path / "once").mkdir()
    not_retried = helpers.FlakyTask(tmp_path / "once", 1, KeyError)
    outcomes = tl.map(task_for(backend, not_retried), [1, 2], mode=backend, retries=3, retry_on=ValueError,
                      on_error="collect")
    for outcome in outcomes:
        assert not outcome.ok
        assert outcome.attempts == 1
        assert isinstance(outcome.error.__cause__, KeyError)
    assert [not_retried.attempts(x) for x in (1, 2)] == [1, 1]

    retried = helpers.FlakyTask(tmp_path, 1, KeyError)
    outcomes = tl.map(task_for(backend, retried), [1, 2], mode=backend, retries=3,
                      retry_on=(ValueError, LookupError), on_error="collect")
    assert [(o.ok, o.value, o.attempts) for o in outcomes] == [(True, 2, 2), (True, 4, 2)]


# -- several callers at once ---------------------------------------------------------------------------
@pytest.mark.smoke
def test_two_threads_map_at_once(backend: str) -> None:
    fn = task_for(backend, helpers.pid_and_square)
    barrier = threading.Barrier(2, timeout=10)
    results: dict[str, list[tuple[int, int]]] = {}
    errors: list[BaseException] = []

    def caller(name: str, items: range) -> None:
        try:
            barrier.wait()
            results[name] = tl.map(fn, items, mode=backend, workers=2, chunksize=1)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [
        threading.Thread(target=caller, args=("a", range(150)), name="caller-a"),
        threading.Thread(target=caller, args=("b", range(1000, 1150)), name="caller-b"),
    ]
    for t in threads:
        t.start()
    for t in threads:
        helpers.join(t, "two concurrent maps did not finish")
    assert not errors, errors
    assert [sq for _, sq in results["a"]] == expected(helpers.square, range(150))
    assert [sq for _, sq in results["b"]] == expected(helpers.square, range(1000, 1150))
    if backend != "sequential":
        pools = [b for b in live_backends() if b.name == backend]
        assert len(pools) == 1, f"two maps with the same mode made {len(pools)} pools"
    if backend == "processes":
        pids_a = {pid for pid, _ in results["a"]}
        pids_b = {pid for pid, _ in results["b"]}
        assert pids_a == pids_b, "the two maps ran on different worker processes"
        assert len(pids_a) <= 2
        assert pids_a <= set(pools[0].worker_pids())  # type: ignore[attr-defined]


# -- cancellation ------------------------------------------------------------------------------------
def _still_works(backend: str) -> None:
    assert tl.map(task_for(backend, helpers.square), range(50), mode=backend) == expected(helpers.square, range(50))


def _not_pulled_any_more(tally: helpers.Tally, run: tl.Run, chunksize: int) -> None:
    """After a cancel the input is not read any more; at most the finished window is handed out."""
    pulled = tally.pulled
    time.sleep(0.05)  # nothing may pull the input in the background
    assert tally.pulled == pulled
    leftover = list(itertools.islice(run, 100_000))
    assert leftover == [], "a cancelled run still hands out results"
    assert tally.pulled == pulled, "a cancelled run pulled more input"


@pytest.mark.smoke
def test_break_out_of_imap_cancels(backend: str) -> None:
    source, tally = counting(itertools.count())
    run = tl.imap(task_for(backend, helpers.square), source, mode=backend, chunksize=3, workers=2)
    got = []
    for value in run:
        got.append(value)
        if len(got) == 10:
            break
    assert got == expected(helpers.square, range(10))
    assert tally.pulled < 10_000
    _not_pulled_any_more(tally, run, 3)
    _still_works(backend)

    source, tally = counting(itertools.count())
    with tl.imap(task_for(backend, helpers.square), source, mode=backend, chunksize=3, workers=2) as run:
        for i, _value in enumerate(run):
            if i == 9:
                break
    _not_pulled_any_more(tally, run, 3)
    _still_works(backend)


@pytest.mark.smoke
def test_next_takes_a_few_results_and_resumes(backend: str) -> None:
    run = tl.imap(task_for(backend, helpers.square), range(50), mode=backend, chunksize=3, workers=2)
    first = [next(run) for _ in range(10)]
    rest = list(run)
    assert first + rest == expected(helpers.square, range(50))


@pytest.mark.smoke
def test_exception_in_the_consumer_cancels(backend: str) -> None:
    source, tally = counting(itertools.count())
    run = tl.imap(task_for(backend, helpers.square), source, mode=backend, chunksize=2, workers=2)
    def consumer() -> None:
        for i, _value in enumerate(run):
            if i == 5:
                raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError, match="consumer failed"):
        consumer()
    assert tally.pulled < 10_000
    _not_pulled_any_more(tally, run, 2)
    _still_works(backend)


@pytest.mark.smoke
def test_cancel_from_another_thread(backend: str) -> None:
    source, tally = counting(itertools.count())
    run = tl.imap(task_for(backend, helpers.square), source, mode=backend, chunksize=1, workers=2)
    five_in = threading.Event()
    cancelled = threading.Event()

    def canceller() -> None:
        if five_in.wait(10):
            run.cancel()
            cancelled.set()

    thread = threading.Thread(target=canceller, name="canceller")
    thread.start()
    after_cancel = 0
    try:
        for i, value in enumerate(run):
            assert value == i * i
            if i == 4:
                five_in.set()
                helpers.wait_for(cancelled, "run.cancel() from another thread did not return")
            elif i > 4:
                after_cancel += 1
                assert after_cancel <= run.workers * 2 + 1, "the run goes on after cancel()"
    finally:
        five_in.set()
        helpers.join(thread, "the canceller thread did not end")
    _not_pulled_any_more(tally, run, 1)
    run.cancel()  # again: harmless
    _still_works(backend)


@pytest.mark.smoke
@pytest.mark.parametrize("mode", ["threads", "processes", "async"])
def test_cancel_wakes_a_consumer_blocked_on_running_tasks(mode: str) -> None:
    """Tasks from item 5 on block for long; cancel() from another thread ends the loop at once."""
    gate = threading.Event()
    fn: object
    if mode == "threads":
        def fn(x: int) -> int:
            if x >= 5:
                gate.wait(30)
            return x
    elif mode == "async":
        import asyncio

        async def fn(x: int) -> int:
            if x >= 5:
                await asyncio.sleep(30)
            return x
    else:
        fn = helpers.sleep_from_five
    source, tally = counting(itertools.count())
    run = tl.imap(fn, source, mode=mode, chunksize=1, workers=2)
    got: list[int] = []
    five_in = threading.Event()

    def canceller() -> None:
        if five_in.wait(10):
            time.sleep(0.2)  # let the consumer block on the sleeping tasks
            run.cancel()

    thread = threading.Thread(target=canceller, name="canceller")
    thread.start()
    try:
        t0 = time.monotonic()
        for value in run:
            got.append(value)
            if len(got) == 5:
                five_in.set()
        elapsed = time.monotonic() - t0
    finally:
        five_in.set()
        gate.set()
        helpers.join(thread, "the canceller thread did not end")
    assert got == [0, 1, 2, 3, 4]
    assert elapsed < 10, f"the loop went on for {elapsed:.1f} s after cancel()"
    _not_pulled_any_more(tally, run, 1)
    _still_works(mode)


@pytest.mark.smoke
def test_with_block_cancels_on_exit(backend: str) -> None:
    source, tally = counting(itertools.count())
    with tl.imap(task_for(backend, helpers.square), source, mode=backend, chunksize=2, workers=2) as run:
        assert list(itertools.islice(run, 5)) == [0, 1, 4, 9, 16]
    _not_pulled_any_more(tally, run, 2)
    _still_works(backend)


@pytest.mark.smoke
def test_failure_in_raise_mode_stops_pulling_input(backend: str) -> None:
    source, tally = counting(itertools.count())
    with pytest.raises(tl.TaskError):
        tl.map(task_for(backend, helpers.fail_on_seven), source, mode=backend, chunksize=1, workers=2)
    assert tally.pulled < 1_000
    pulled = tally.pulled
    time.sleep(0.05)
    assert tally.pulled == pulled
    _still_works(backend)


@pytest.mark.smoke
def test_error_in_the_input_is_raised(backend: str) -> None:
    def broken_input():
        yield from range(5)
        raise OSError("input broke")

    fn = task_for(backend, helpers.square)
    with pytest.raises(OSError, match="input broke"):
        tl.map(fn, broken_input(), mode=backend, chunksize=1)
    _still_works(backend)


@pytest.mark.smoke
def test_nested_map_inside_a_thread_task_does_not_deadlock() -> None:
    """A thread task that itself maps on threads (same mode and size, so the same warm pool)."""

    def outer(x: int) -> int:
        return x + sum(tl.map(helpers.square, range(3), mode="threads", workers=2))

    result: list[list[int]] = []
    caller = threading.Thread(
        target=lambda: result.append(tl.map(outer, range(4), mode="threads", workers=2, chunksize=1)),
        name="nested-map-caller", daemon=True,
    )
    caller.start()
    helpers.join(caller, "a tl.map inside a thread task never finished", timeout=10)
    assert result == [[5, 6, 7, 8]]


def test_a_partial_is_named_by_its_function_in_errors() -> None:
    task = functools.partial(helpers.fail_on_seven)
    with pytest.raises(tl.TaskError) as info:
        tl.map(task, range(10), mode="threads")
    assert "(partial(fail_on_seven))" in str(info.value)
    assert info.value.stage == "partial(fail_on_seven)"
    assert "<function" not in str(info.value)


# -- journal= -------------------------------------------------------------------------------------
def _journal_task(backend: str, logdir: Any) -> Any:
    from tests.journal_tasks import Logged

    return task_for(backend, Logged(logdir))


@pytest.mark.smoke
def test_a_journal_resumes_a_cut_short_run_on_every_engine(backend: str, tmp_path: Any) -> None:
    from tests.journal_tasks import expected, outcomes_as_json, runs

    journal, logdir = tmp_path / "run.jsonl", tmp_path / "log"
    logdir.mkdir()
    first = tl.map(_journal_task(backend, logdir), range(40), mode=backend, journal=journal, on_error="collect")
    assert outcomes_as_json(first) == expected(40)
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(b"\n".join(lines[:15]) + b"\n" + lines[15][:9])  # as if killed while writing line 16
    kept = {json.loads(line)["index"] for line in lines[:15]}

    run = tl.imap(_journal_task(backend, logdir), range(50), mode=backend, journal=journal, on_error="collect",
                  ordered=False)
    again = sorted(run, key=lambda o: o.index)
    assert outcomes_as_json(again) == expected(50)
    assert [o.index for o in again] == list(range(50))
    counts = runs(logdir)
    assert all(counts[i] == 1 for i in kept)  # a recorded item never runs again
    assert all(counts[i] == 2 for i in range(40) if i not in kept)  # the rest ran again (at least once)
    recorded = [json.loads(line)["index"] for line in journal.read_text().splitlines()]
    assert sorted(recorded) == list(range(50))  # the torn line was cut off: each item once
    stats = run.statistics()
    assert (stats.skipped, stats.completed + stats.failed) == (15, 35)


def test_a_recorded_error_is_raised_where_it_stands_unless_rerun_failed(backend: str, tmp_path: Any) -> None:
    from tests.journal_tasks import runs

    journal, logdir = tmp_path / "run.jsonl", tmp_path / "log"
    logdir.mkdir()
    with pytest.raises(tl.TaskError) as first:
        tl.map(_journal_task(backend, logdir), range(10), mode=backend, journal=journal, chunksize=1)
    assert first.value.index == 3
    with pytest.raises(tl.TaskError) as again:  # the journal's error, raised again without running item 3
        tl.map(_journal_task(backend, logdir), range(4), mode=backend, journal=journal)
    assert again.value.index == 3
    assert isinstance(again.value.__cause__, ValueError)
    assert "item 3 is bad" in str(again.value.__cause__)
    assert runs(logdir)[3] == 1

    fixed = task_for(backend, helpers.square)
    assert tl.map(fixed, range(10), mode=backend, journal=journal, rerun_failed=True)[:5] == [0, 1, 4, 9, 16]
    assert tl.map(fixed, range(10), mode=backend, journal=journal)[3] == 9  # recorded now, not run again


@pytest.mark.parametrize("missing", [0, 2])
def test_a_recorded_error_behind_an_item_to_run_is_raised(backend: str, tmp_path: Any, missing: int) -> None:
    """The journal holds item 3's error and not item ``missing``: that item is started, then the
    recorded failure cancels it (fail fast). It once cancelled the flight and then waited for it (ci11)."""
    journal, logdir = tmp_path / "run.jsonl", tmp_path / "log"
    logdir.mkdir()
    tl.map(_journal_task(backend, logdir), range(4), mode=backend, journal=journal, on_error="collect")
    lines = [line for line in journal.read_text().splitlines() if json.loads(line)["index"] != missing]
    journal.write_text("\n".join(lines) + "\n")
    for chunksize in (1, 4):
        with pytest.raises(tl.TaskError) as again:
            tl.map(_journal_task(backend, logdir), range(4), mode=backend, journal=journal, chunksize=chunksize)
        assert again.value.index == 3
        assert "item 3 is bad" in str(again.value.__cause__)
