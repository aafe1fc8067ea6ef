"""The scheduler (``_run/_run.py``) and its parts on a scripted engine and a virtual clock: no sleep, no thread.

Every test here is deterministic: the fake backend (``tests/fake_engine.py``) decides what each
task does, and time only moves when the run waits, to the exact instant of the next event or timer.
"""

from __future__ import annotations

import itertools
import queue
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

import taskloom as tl
from taskloom._backends._base import Done
from taskloom._run._chunker import MAX_GROWTH
from taskloom._run._delivery import Group
from taskloom._run._dispatch import MEASURED_AT_ONCE, Dispatch
from taskloom._run._intake import Intake, put_back
from taskloom._run._policy import backoff_delay
from taskloom._run._run import PushSource, Switch
from taskloom._run._tally import Tally
from tests.fake_engine import Crash, FakeBackend, FakeEngine, Hang, Ok, Raise, Unpicklable, job_of, make_run


@pytest.fixture(autouse=True)
def _no_real_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler must read time from its clock: a real sleep here would be a bug."""

    def no_sleep(_seconds: float) -> None:
        raise AssertionError("time.sleep called in a scheduler test")

    monkeypatch.setattr(time, "sleep", no_sleep)


# -- ordering and delivery ---------------------------------------------------------------------------
def test_ordered_results_come_in_input_order_whatever_finishes_first() -> None:
    h = make_run(list(range(6)), lambda item, _: Ok(seconds=10 - item), chunksize=1)
    assert list(h.run) == [0, 10, 20, 30, 40, 50]


def test_unordered_results_come_as_they_finish() -> None:
    # Two workers; item 0 takes 10 s, the others 1 s: everything else overtakes it.
    h = make_run(list(range(5)), lambda item, _: Ok(seconds=10 if item == 0 else 1), chunksize=1, ordered=False)
    assert list(h.run) == [10, 20, 30, 40, 0]


def test_collect_yields_an_outcome_per_item_with_its_duration() -> None:
    h = make_run([1, 2, 3], lambda item, _: Raise(ValueError("bad"), seconds=2) if item == 2 else Ok(seconds=item),
                 chunksize=1, on_error="collect")
    outcomes = list(h.run)
    assert [o.index for o in outcomes] == [0, 1, 2]
    assert [o.ok for o in outcomes] == [True, False, True]
    assert [o.duration for o in outcomes] == [1, 2, 3]
    assert isinstance(outcomes[1].error, tl.TaskError)
    assert isinstance(outcomes[1].error.__cause__, ValueError)


def test_raise_hands_out_what_precedes_the_failure_then_raises_and_cancels() -> None:
    h = make_run(list(range(10)), lambda item, _: Raise(KeyError(item)) if item == 3 else Ok(), chunksize=1)
    got: list[int] = []
    with pytest.raises(tl.TaskError, match=r"task 3 \(fn\) failed on item 3: KeyError") as info:
        got.extend(h.run)
    assert got == [0, 10, 20]
    assert info.value.index == 3
    assert not h.backend.running
    assert not h.backend.queued


# -- the window and chunking ---------------------------------------------------------------------------
def test_the_window_bounds_batches_in_flight_and_input_read_ahead() -> None:
    h = make_run(list(range(100)), chunksize=1, workers=2, prefetch=3)
    it = iter(h.run)
    assert next(it) == 0
    assert h.backend.max_outstanding <= 2 * 3
    assert len(h.pulled) <= 1 + 2 * 3  # the input is read only as fast as the window allows
    assert list(it) == [i * 10 for i in range(1, 100)]
    assert h.backend.max_outstanding == 6


def test_adaptive_chunks_start_at_one_and_grow_at_most_tenfold() -> None:
    # 1 ms per item: the target (50 ms per batch) is 50 items, reached in steps of at most x10.
    h = make_run(list(range(2000)), lambda item, _: Ok(seconds=0.001))
    assert h.run.to_list() == [i * 10 for i in range(2000)]
    sizes = [len(items) for _, items in h.backend.submitted]
    assert sizes[0] == 1
    assert max(sizes) == 50
    for before, after in itertools.pairwise(sizes):
        assert after <= max(sizes[: sizes.index(before) + 1]) * MAX_GROWTH


def test_a_fixed_chunksize_is_kept() -> None:
    h = make_run(list(range(10)), chunksize=4)
    assert h.run.to_list() == [i * 10 for i in range(10)]
    assert [len(items) for _, items in h.backend.submitted] == [4, 4, 2]


# -- retries, backoff and deadlines ---------------------------------------------------------------------
def test_retries_run_a_failed_task_again_and_count_its_attempts() -> None:
    h = make_run([1, 2], lambda item, attempt: Raise(OSError("flaky")) if item == 2 and attempt < 3 else Ok(),
                 chunksize=1, retries=2, on_error="collect")
    outcomes = list(h.run)
    assert [o.value for o in outcomes] == [10, 20]
    assert outcomes[1].attempts == 3
    assert h.run.statistics().retried == 2


def test_a_task_that_keeps_failing_reports_its_last_error_and_attempts() -> None:
    h = make_run([5], lambda item, attempt: Raise(OSError(f"try {attempt}")), retries=1)
    with pytest.raises(tl.TaskError, match=r"failed after 2 attempts .*OSError: try 2") as info:
        h.run.to_list()
    assert info.value.attempts == 2


def test_only_retry_on_classes_are_retried() -> None:
    h = make_run([1], lambda item, attempt: Raise(ValueError("not transient")), retries=3, retry_on=OSError)
    with pytest.raises(tl.TaskError):
        h.run.to_list()
    assert h.backend.attempts[1] == 1


def test_backoff_waits_exponentially_with_seeded_jitter() -> None:
    h = make_run(["x"], lambda item, attempt: Raise(OSError()) if attempt < 4 else Ok(seconds=0),
                 fn=str.upper, retries=3, backoff=2.0, seed=11)
    assert h.run.to_list() == ["X"]
    starts = [t for t, _ in h.backend.started_at]
    rng = random.Random(11)
    expected = [backoff_delay(2.0, attempt, rng.uniform) for attempt in (1, 2, 3)]
    gaps = [b - a - 1.0 for a, b in itertools.pairwise(starts)]  # each failed run took 1 s
    assert gaps == pytest.approx(expected)
    assert 1.0 <= expected[0] <= 2.0
    assert 2.0 <= expected[1] <= 4.0
    assert 4.0 <= expected[2] <= 8.0


def test_a_task_past_its_deadline_is_aborted_and_fails_at_that_instant() -> None:
    h = make_run([1, 2, 3], lambda item, _: Hang() if item == 2 else Ok(), timeout=5.0, on_error="collect")
    start = h.clock.t
    outcomes = list(h.run)
    assert [o.ok for o in outcomes] == [True, False, True]
    error = outcomes[1].error
    assert isinstance(error, tl.TaskTimeout)
    assert "ran past its timeout of 5 s: the fake worker was stopped" in str(error)
    assert h.backend.aborted == [[2]]
    assert h.clock.t == start + 5.0  # the deadline fired exactly, not a poll later


def test_a_timed_out_task_is_retried_when_retries_allow() -> None:
    h = make_run([1], lambda item, attempt: Hang() if attempt == 1 else Ok(), timeout=2.0, retries=1)
    assert h.run.to_list() == [10]
    assert h.backend.aborted == [[1]]


def test_the_rate_limit_spaces_task_starts_evenly() -> None:
    h = make_run(list(range(5)), lambda item, _: Ok(seconds=0.01), rate="2/s", workers=4)
    start = h.clock.t
    assert h.run.to_list() == [0, 10, 20, 30, 40]
    starts = [t - start for t, _ in h.backend.started_at]
    assert starts == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])


def test_a_crash_retry_takes_a_start_under_the_rate_limit_too() -> None:
    # The rate limit bounds every start: a task whose worker died goes again without backoff, but
    # not before a token allows (an API called at 2/s is not called twice at once after a crash).
    h = make_run([0, 1, 2], lambda item, attempt: Crash() if (item, attempt) == (0, 1) else Ok(seconds=0.01),
                 rate="2/s", workers=4, crash_retries=1)
    start = h.clock.t
    assert h.run.to_list() == [0, 10, 20]
    starts = [t - start for t, _ in h.backend.started_at]
    assert starts == pytest.approx([0.0, 0.5, 1.0, 1.5])


# -- crashes and pickling failures ------------------------------------------------------------------------
def test_a_crashed_batch_is_split_and_only_the_culprit_is_retried_then_reported() -> None:
    h = make_run([0, 1, 2, 3], lambda item, _: Crash() if item == 2 else Ok(), chunksize=4, crash_retries=1,
                 on_error="collect")
    outcomes = list(h.run)
    assert [o.ok for o in outcomes] == [True, True, False, True]
    error = outcomes[2].error
    assert isinstance(error, tl.WorkerCrashed)
    assert "crashed its worker 2 time(s) (pid 4242: killed by SIGKILL; pid 4242: killed by SIGKILL)" in str(error)
    # The shared crash of the batch counts against no item; alone, the culprit ran twice (1 retry).
    assert h.backend.attempts == {0: 2, 1: 2, 2: 3, 3: 1}  # 3 never ran in the crashed batch
    assert outcomes[2].attempts == 2
    assert h.run.statistics().crashed == 3  # every worker death counts, the batch's included


def test_crash_retries_come_from_the_engine() -> None:
    h = make_run([7], lambda item, attempt: Crash() if attempt <= 3 else Ok(), crash_retries=3)
    assert h.run.to_list() == [70]
    h = make_run([7], lambda item, attempt: Crash(), crash_retries=0)
    with pytest.raises(tl.WorkerCrashed, match="1 time"):
        h.run.to_list()


def test_an_unpicklable_item_is_isolated_and_reported_without_retry() -> None:
    h = make_run(["a", "b", "c"], lambda item, _: Unpicklable() if item == "b" else Ok(), fn=str.upper,
                 chunksize=3, retries=5, on_error="collect")
    outcomes = list(h.run)
    assert [o.value for o in outcomes] == ["A", None, "C"]
    assert isinstance(outcomes[1].error, tl.TaskError)
    assert h.backend.attempts["b"] == 2  # with the batch, then alone: no retry for what cannot pickle


# -- cancel and the switch --------------------------------------------------------------------------------
def test_cancel_stops_everything_in_flight_and_yields_nothing_more() -> None:
    h = make_run(list(range(100)), lambda item, _: Ok(seconds=1), chunksize=1, workers=2)
    it = iter(h.run)
    assert next(it) == 0
    h.run.cancel()
    assert list(it) == []
    assert h.backend.cancelled  # the batches in flight were handed back
    assert not h.backend.running
    assert not h.backend.queued
    submitted = len(h.backend.submitted)
    h.run.cancel()  # twice is fine
    assert len(h.backend.submitted) == submitted


def test_leaving_a_for_loop_early_cancels_the_run() -> None:
    h = make_run(list(range(100)), chunksize=1)
    for value in h.run:
        if value == 20:
            break
    assert not h.backend.running
    assert not h.backend.queued
    assert len(h.pulled) < 100


class SwitchAfter:
    """A watcher that asks for one switch once ``n`` tasks have ended."""

    measure_from = 0

    def __init__(self, n: int, switch: Switch) -> None:
        self.n, self.switch, self.finished = n, switch, False

    def observe(self, per_task: float, cpu: object, tasks_done: int, remaining: int | None) -> Switch | None:
        if tasks_done >= self.n:
            self.finished = True
            return self.switch
        return None


def test_a_switched_run_takes_the_new_engines_policies_whole() -> None:
    # The first engine never retries a crash (like sequential); the second retries once (like
    # processes): a crash after the switch must be retried.
    h = make_run(list(range(20)), chunksize=1, crash_retries=0, workers=1, on_error="collect")
    second = FakeBackend(h.clock, lambda item, attempt: Crash() if item == 15 and attempt == 1 else Ok(),
                         workers=3, name="second")
    h.run._watcher = SwitchAfter(5, Switch(FakeEngine(crash_retries=1), second, "advice: switch"))
    outcomes = list(h.run)
    assert [o.value for o in outcomes] == [i * 10 for i in range(20)]
    assert h.run.mode == "second"
    assert h.run.workers == 3
    assert h.run.advice == "advice: switch"
    assert second.attempts[15] == 2
    assert h.run.window == 3 * 2
    assert {item for _, items in second.submitted for item in items} >= set(range(7, 20))


def test_a_watcher_that_finished_is_not_asked_again() -> None:
    class Once(SwitchAfter):
        calls = 0

        def observe(self, per_task: float, cpu: object, tasks_done: int, remaining: int | None) -> Switch | None:
            Once.calls += 1
            self.finished = True
            return None

    h = make_run(list(range(10)), chunksize=1)
    h.run._watcher = Once(0, None)  # type: ignore[arg-type]
    assert h.run.to_list() == [i * 10 for i in range(10)]
    assert Once.calls == 1


def test_batches_measure_themselves_only_once_the_watcher_wants_readings() -> None:
    # A reading costs two reads of /proc (each lets go of the GIL): auto's second look reads none
    # before 64 tasks, so measuring from the start cost GIL-releasing tasks 1.19x on a busy machine.
    class Recording(SwitchAfter):
        measure_from = 8

        def observe(self, per_task: float, cpu: object, tasks_done: int, remaining: int | None) -> Switch | None:
            return None  # never switches, never finishes: it keeps wanting readings

    h = make_run(list(range(30)), chunksize=1, workers=1)
    h.run._watcher = Recording(0, None)  # type: ignore[arg-type]
    assert h.run.to_list() == [i * 10 for i in range(30)]
    measured = h.backend.measured
    first = measured.index(True)
    assert not any(measured[:first])
    assert 8 <= first <= 8 + h.run.window  # those in flight when the 8th task ended were sent unmeasured
    assert all(measured[first:first + 4])


# -- input ---------------------------------------------------------------------------------------------------
def test_an_input_that_raises_with_collect_keeps_what_it_gave_then_raises() -> None:
    def items() -> object:
        yield 1
        yield 2
        raise RuntimeError("input broke")

    h = make_run(items(), chunksize=1, on_error="collect")  # type: ignore[arg-type]
    got: list[tl.Outcome[int]] = []
    with pytest.raises(RuntimeError, match="input broke"):
        got.extend(h.run)
    assert [o.value for o in got] == [10, 20]


# -- the parts the run owns: input, flights, statistics -------------------------------------------------------
class Pushed(PushSource):
    def __init__(self, *batches: list[int] | None) -> None:
        self.batches = list(batches)

    def take(self, n: int) -> list[int] | None:
        return self.batches.pop(0)


def state(intake: Intake) -> tuple[bool, bool, bool]:
    """(open, pushed, starved): read afresh each time (mypy would keep an asserted property narrowed)."""
    return intake.open, intake.pushed, intake.starved


def test_intake_reads_as_asked_and_closes_at_the_end() -> None:
    intake = Intake(iter(range(5)), Tally(None))
    assert intake.take(3) == ([0, 1, 2], None)
    assert intake.take(3) == ([3, 4], None)
    assert state(intake) == (True, False, False)
    assert intake.take(3) == ([], None)
    assert state(intake) == (False, False, False)


@pytest.mark.parametrize("kind", [list, tuple])
def test_intake_reads_a_list_or_tuple_a_slice_at_a_time_from_where_its_iterator_is(kind: type) -> None:
    # A slice of the sequence, not item by item; the iterator moves as if read, so whoever reads
    # it next (auto's sample, the caller) goes on from there; an item put back is read again.
    source = iter(kind(range(10)))
    assert next(source) == 0
    intake = Intake(source, Tally(None))
    taken, error = intake.take(4)
    assert (taken, error, type(taken)) == ([1, 2, 3, 4], None, list)
    assert next(source) == 5
    assert put_back(5, source) is source  # moved back one place, still sliceable
    assert intake.take(100) == ([5, 6, 7, 8, 9], None)
    assert state(intake) == (True, False, False)
    assert intake.take(3) == ([], None)
    assert state(intake) == (False, False, False)
    assert list(put_back(9, source)) == [9]  # exhausted: chained


def test_a_list_subclass_is_read_as_iterating_reads_it_not_sliced() -> None:
    class Shouting(list):  # type: ignore[type-arg]
        def __getitem__(self, index: Any) -> Any:  # iterating a list does not call it
            raise AssertionError("sliced")

    intake = Intake(iter(Shouting(["a", "b", "c"])), Tally(None))
    assert intake.take(2) == (["a", "b"], None)
    assert intake.take(2) == (["c"], None)
    assert tl.map(str.upper, Shouting(["a", "b"])) == ["A", "B"]


def test_a_map_of_a_list_iterator_already_read_from_runs_the_rest_once() -> None:
    items = list(range(1000))
    source = iter(items)
    assert [next(source) for _ in range(3)] == [0, 1, 2]
    assert tl.map(lambda x: -x, source, mode="sequential") == [-x for x in items[3:]]
    assert next(source, None) is None
    assert tl.map(lambda x: -x, tuple(items)) == [-x for x in items]  # auto: its sample, then the slices


def test_intake_keeps_what_the_input_gave_before_it_raised() -> None:
    error = RuntimeError("input broke")

    def items() -> Iterator[int]:
        yield 1
        raise error

    intake = Intake(items(), Tally(None))
    assert intake.take(5) == ([1], error)
    assert state(intake) == (False, False, False)


def test_intake_of_a_push_source_starves_without_closing() -> None:
    intake = Intake(Pushed([], [7], None), Tally(None))
    assert state(intake) == (True, True, False)
    assert intake.take(4) == ([], None)
    assert state(intake) == (True, True, True)
    assert intake.take(4) == ([7], None)
    assert intake.take(4) == ([], None)
    assert state(intake)[:2] == (False, False)


def test_dispatch_measures_a_few_batches_at_once() -> None:
    # Each measured batch reads /proc twice in the thread that runs it, letting go of the GIL:
    # 256 threads each measuring queued for the GIL (2,000 sleeps of 20 ms: 1.0 s, not 0.24 s).
    h = make_run([], workers=1)
    backend = FakeBackend(h.clock, lambda item, _: Hang(), workers=64)
    dispatch = Dispatch(job_of(h.run), queue.SimpleQueue(), backend, timeout=None, per_item_timing=False,
                        tally=Tally(None))
    measured = backend.measured
    group = Group(0, list(range(20)), [None] * 20, 20)
    dispatch.measure_cpu = True
    for pos in range(10):
        dispatch.submit(group, [pos])
    assert measured == [True] * MEASURED_AT_ONCE + [False] * (10 - MEASURED_AT_ONCE)
    first_measured = backend.queued[0] if backend.queued else next(iter(backend.running.values())).batch
    ended = dispatch.arrived(Done(first_measured.id, [None], None, None, 0.0, "w"))
    assert ended is not None
    assert ended.batch.measure_cpu
    dispatch.submit(group, [10])  # a measured one ended: the next is measured
    dispatch.submit(group, [11])
    assert measured[10:] == [True, False]
    dispatch.measure_cpu = False
    dispatch.submit(group, [12])
    assert measured[12:] == [False]


def test_dispatch_keeps_each_flight_on_its_backend_and_cancels_by_backend() -> None:
    h = make_run([], workers=1)
    tally = Tally(None)
    first, second = FakeBackend(h.clock, lambda item, _: Hang()), FakeBackend(h.clock, lambda item, _: Hang())
    dispatch = Dispatch(job_of(h.run), queue.SimpleQueue(), first, timeout=None, per_item_timing=False, tally=tally)
    group = Group(10, ["a", "b", "c"], [None] * 3, 3)
    dispatch.submit(group)
    dispatch.backend = second  # a switch: new batches go to the new backend
    dispatch.submit(group, [2])
    dispatch.defer(5.0, group, 1)
    assert dispatch.deferring
    assert dispatch.next_due() == 5.0
    assert [items for _, items in first.submitted] == [["a", "b", "c"]]
    assert [items for _, items in second.submitted] == [["c"]]
    assert dispatch.cancel_task(12) == (group, 2)  # the one-item batch of input position 12
    assert second.cancelled == [["c"]]
    assert dispatch.cancel_task(11) == (group, 1)  # a retry waiting out its backoff
    assert dispatch.next_due() is None
    assert dispatch.cancel_task(10) is None  # its batch holds three items: not one task's to cancel
    dispatch.cancel_all()
    assert first.cancelled == [["a", "b", "c"]]
    assert tally.numbers.batches == 2


def test_tally_tells_the_listener_only_what_changed() -> None:
    told: list[tuple[int, int]] = []

    class Listening:
        def update(self, done: int, failed: int) -> None:
            told.append((done, failed))

        def close(self) -> None:
            told.append((-1, -1))

    tally = Tally(Listening())
    tally.completed(3)
    tally.failed()
    tally.notify()
    tally.notify()  # nothing new
    tally.completed()
    tally.notify()
    tally.close()
    assert told == [(4, 1), (1, 0), (-1, -1)]
    assert tally.ended == 5
