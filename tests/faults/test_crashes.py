"""Crashed workers: SIGKILL, segfault, os._exit; crash retries; many crashes; chaos.

The spec: a dead worker is noticed at once (sentinels), replaced, and the pool lives on; the task
it ran is retried on a fresh worker ``crash_retries`` times (apart from ``retries``), then reported
as ``WorkerCrashed`` naming the task, the signal or exit code and the likely causes, with one
``(pid, exitcode)`` per attempt in ``.history`` (a negative exitcode is ``-signal``).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from typing import Any

import pytest

import taskloom as tl
from tests.faults import tasks
from tests.faults.support import (
    GONE_WITHIN,
    Consumer,
    assert_gone,
    assert_one_outcome_per_item,
    consume,
    consume_ok,
    process_backend,
    record_thread_deaths,
    wait_marks,
)

HEALTHY = list(range(1, 21))


def warm_pool(mode: tl.Processes, workers: int = 2) -> set[int]:
    """Start the pool's workers; return their pids."""
    consume_ok(tl.imap(tasks.getpid, range(workers * 4), mode=mode, workers=workers, chunksize=1))
    pids = set(process_backend().worker_pids())
    assert len(pids) == workers, pids
    return pids


def assert_pool_usable(mode: tl.Processes, workers: int = 2, *,
                       not_pids: frozenset[int] | set[int] = frozenset()) -> None:
    """The same warm pool runs more work, on workers none of which is in ``not_pids``."""
    pool = process_backend()
    got = consume_ok(tl.imap(tasks.dispatch, list(range(50)), mode=mode, workers=workers))
    assert got == [x * x for x in range(50)]
    pids = consume_ok(tl.imap(tasks.getpid, range(8), mode=mode, workers=workers, chunksize=1))
    assert process_backend() is pool, "a new pool was made: the old one did not live on"
    assert not set(pids) & not_pids, f"dead worker(s) {set(pids) & not_pids} ran tasks"


# -- SIGKILL from outside, mid-task ----------------------------------------------------------------------
def test_sigkill_mid_task_is_retried_on_a_fresh_worker(tmp_path: Any) -> None:
    mode = tl.Processes()  # crash_retries=1 by default
    items: list[Any] = [("first_attempt_hangs", str(tmp_path), "victim"), *HEALTHY]
    consumer = Consumer(tl.imap(tasks.dispatch, items, mode=mode, workers=2, on_error="collect"))
    [victim] = wait_marks(tmp_path, "victim")
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    outcomes = consumer.finish_ok(60)

    assert_one_outcome_per_item(outcomes, len(items))
    first = outcomes[0]
    assert first.ok, f"the task was not retried after its worker was SIGKILLed: {first.error!r}"
    pids = tasks.marks(str(tmp_path), "victim")
    assert len(pids) == 2, f"expected exactly one retry, attempts ran in {pids}"
    assert pids[0] == victim
    assert first.value == pids[1] != victim, "the retry must run on a fresh worker"
    assert first.attempts == 2
    assert [o.value for o in outcomes[1:]] == [x * x for x in HEALTHY]
    assert consumer.arrivals[0] - killed_at < GONE_WITHIN, "the crash was not noticed promptly"
    assert_gone([victim], "the SIGKILLed worker")
    assert victim not in process_backend().worker_pids()
    assert_pool_usable(mode, not_pids={victim})


def test_sigkill_mid_task_without_crash_retries_is_reported(tmp_path: Any) -> None:
    mode = tl.Processes(crash_retries=0)
    items: list[Any] = [("hang", str(tmp_path), "victim"), *HEALTHY]
    consumer = Consumer(tl.imap(tasks.dispatch, items, mode=mode, workers=2, on_error="collect"))
    [victim] = wait_marks(tmp_path, "victim")
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    outcomes = consumer.finish_ok(60)

    assert_one_outcome_per_item(outcomes, len(items))
    error = outcomes[0].error
    assert isinstance(error, tl.WorkerCrashed), repr(error)
    assert error.history == [(victim, -signal.SIGKILL)]
    assert error.index == 0
    assert outcomes[0].attempts == 1
    message = str(error)
    for words in ("task 0", "dispatch", "SIGKILL", "out-of-memory"):
        assert words in message, f"{words!r} missing from: {message}"
    assert [o.value for o in outcomes[1:]] == [x * x for x in HEALTHY]
    assert consumer.arrivals[0] - killed_at < GONE_WITHIN
    assert_gone([victim], "the SIGKILLed worker")
    assert_pool_usable(mode, not_pids={victim})


def test_idle_worker_killed_is_replaced() -> None:
    mode = tl.Processes()
    before = warm_pool(mode)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    assert_gone([victim], "the SIGKILLed idle worker")
    pids = consume_ok(tl.imap(tasks.getpid, range(8), mode=mode, workers=2, chunksize=1), timeout=30)
    assert victim not in pids
    assert victim not in process_backend().worker_pids()
    assert_pool_usable(mode, not_pids={victim})


# -- the task kills its own worker -------------------------------------------------------------------------
CRASHES = {
    # name: (task and args before the handshake args, expected exitcode, words the message must hold)
    "sigkill": (("sigkill_self",), -signal.SIGKILL, ("SIGKILL", "out-of-memory")),
    "segfault": (("segfault",), -signal.SIGSEGV, ("SIGSEGV", "segmentation fault")),
    "os._exit(3)": (("exit_with", 3), 3, ("exit code 3", "os._exit(3)")),
    "os._exit(0)": (("exit_with", 0), 0, ("code 0", "os._exit(0)")),
}


@pytest.mark.parametrize("crash", list(CRASHES), ids=list(CRASHES))
def test_task_that_crashes_its_worker_is_retried_then_reported(tmp_path: Any, crash: str) -> None:
    call, exitcode, words = CRASHES[crash]
    mode = tl.Processes()  # crash_retries=1: two attempts
    items: list[Any] = [*HEALTHY[:5], (*call, str(tmp_path), "crash"), *HEALTHY[5:]]
    outcomes, error = consume(tl.imap(tasks.dispatch, items, mode=mode, workers=2, on_error="collect"))
    assert error is None, repr(error)

    assert_one_outcome_per_item(outcomes, len(items))
    bad = outcomes[5]
    assert isinstance(bad.error, tl.WorkerCrashed), repr(bad.error)
    runs = tasks.marks(str(tmp_path), "crash")
    # Item 5 may first run inside a batch of healthy items; that batch's crash is not charged to
    # anyone (the batch is split into single items to find the culprit), so the item runs 2 or 3
    # times and only its 2 charged attempts (1 + crash_retries) are in the history.
    assert len(runs) in (2, 3), f"attempts ran in {runs}"
    assert len(set(runs)) == len(runs), f"attempts ran in {runs}"
    assert bad.error.history == [(pid, exitcode) for pid in runs[-2:]]
    assert bad.attempts == 2
    assert bad.error.attempts == 2
    assert bad.error.index == 5
    message = str(bad.error)
    for word in ("task 5", "dispatch", *words):
        assert word in message, f"{word!r} missing from: {message}"
    assert [o.value for o in outcomes if o.index != 5] == [x * x for x in HEALTHY]
    assert_gone(runs, "the crashed workers")
    assert_pool_usable(mode, not_pids=set(runs))


def test_crash_with_on_error_raise_raises_worker_crashed(tmp_path: Any) -> None:
    mode = tl.Processes(crash_retries=0)
    items: list[Any] = [1, ("segfault", str(tmp_path), "crash"), 2]
    _, error = consume(tl.imap(tasks.dispatch, items, mode=mode, workers=2), timeout=30)
    assert isinstance(error, tl.WorkerCrashed), repr(error)
    [pid] = tasks.marks(str(tmp_path), "crash")
    assert error.history == [(pid, -signal.SIGSEGV)]
    assert "task 1" in str(error), str(error)
    assert "SIGSEGV" in str(error), str(error)
    assert_gone([pid], "the crashed worker")
    assert_pool_usable(mode, not_pids={pid})


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="parallel CPU work needs two CPUs")
def test_auto_switched_to_processes_retries_a_crash_as_processes_mode_does(tmp_path: Any) -> None:
    # The first tasks are tiny (auto runs them sequentially); the rest are ~100 000x heavier, so the
    # run switches to processes (a busy machine can stretch a tiny sample task to the 5 ms after
    # which the sample starts another beside it: 10 000x heavier tasks, ~20 ms, then read as
    # under 4x the sampled time, and the run did not switch). The first heavy task that runs in a
    # worker kills it: the switched run must retry it on a fresh worker, as mode="processes" does
    # (crash_retries=1), not fail.
    # One task per batch: a crash of a batch of several is split and rerun uncounted whatever the
    # crash retries, which would prove nothing here.
    items: list[Any] = [(1, None)] * 100 + [(3_000_000, str(tmp_path))] * 16
    run = tl.imap(tasks.grow_or_crash_once, items, chunksize=1)
    value = {n: sum(i * i for i in range(n)) for n in (1, 3_000_000)}
    assert list(run) == [value[n] for n, _ in items]
    assert run.advice is not None
    assert run.advice.mode == "processes", run.advice
    assert run.advice.reasons[0].startswith("Switched during the run"), run.advice
    assert (tmp_path / "crashed").exists(), "no task crashed a worker: the test tested nothing"
    stats = run.statistics()
    assert stats.crashed == 1, stats
    assert stats.retried == 1, stats


def test_always_crashing_task_runs_exactly_crash_retries_plus_one_times(tmp_path: Any) -> None:
    mode = tl.Processes(crash_retries=3)
    items: list[Any] = [("exit_with", 7, str(tmp_path), "crash"), *HEALTHY]
    outcomes, error = consume(tl.imap(tasks.dispatch, items, mode=mode, workers=2, on_error="collect",
                                      retries=2))  # retries are for exceptions: a crash does not use them
    assert error is None, repr(error)
    assert_one_outcome_per_item(outcomes, len(items))
    bad = outcomes[0].error
    assert isinstance(bad, tl.WorkerCrashed), repr(bad)
    pids = tasks.marks(str(tmp_path), "crash")
    assert len(pids) == 4, f"expected exactly 4 attempts (1 + crash_retries=3), got {len(pids)}: {pids}"
    assert len(set(pids)) == 4, "each attempt must run on a fresh worker"
    assert len(bad.history) == 4
    for (pid, code), marked in zip(bad.history, pids, strict=True):
        assert isinstance(pid, int)
        assert pid == marked
        assert code == 7
    assert outcomes[0].attempts == 4
    assert "4 time(s)" in str(bad) or "4 times" in str(bad), str(bad)
    assert [o.value for o in outcomes[1:]] == [x * x for x in HEALTHY]
    assert_gone(pids, "the crashed workers")
    assert_pool_usable(mode, not_pids=set(pids))


def test_thousand_tasks_every_tenth_crashes_its_worker() -> None:
    # chunksize="auto" batches the healthy tasks; a batch whose worker died is split into single
    # items to find the culprit (no attempt counted for that), so only the tenth items are charged.
    mode = tl.Processes()  # crash_retries=1
    run = tl.imap(tasks.crash_every_tenth, range(1000), mode=mode, workers=2, chunksize="auto",
                  on_error="collect")
    outcomes, error = consume(run, timeout=100)
    assert error is None, repr(error)
    assert_one_outcome_per_item(outcomes, 1000)
    failed = [o for o in outcomes if not o.ok]
    assert [o.index for o in failed] == list(range(0, 1000, 10))
    for o in failed:
        assert isinstance(o.error, tl.WorkerCrashed), repr(o.error)
        assert len(o.error.history) == 2, (o.index, o.error.history)
        assert o.attempts == 2, o.index
        assert all(code == -signal.SIGKILL and pid > 0 for pid, code in o.error.history)
    assert all(o.value == o.index * o.index for o in outcomes if o.ok)
    assert sum(o.ok for o in outcomes) == 900
    stats = run.statistics()
    assert (stats.completed, stats.failed, stats.retried) == (900, 100, 100), stats
    assert_pool_usable(mode)


# -- SystemExit and KeyboardInterrupt inside a task ------------------------------------------------------------
RAISERS = {
    "SystemExit": (("raise_system_exit", 3), SystemExit),
    "KeyboardInterrupt": (("raise_keyboard_interrupt", "pressed in a task"), KeyboardInterrupt),
}


@pytest.mark.parametrize("raiser", list(RAISERS), ids=list(RAISERS))
@pytest.mark.parametrize("engine", ["processes", "threads", "async"])
def test_system_exit_and_keyboard_interrupt_in_a_task_are_its_error(
    engine: str, raiser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    call, exc_type = RAISERS[raiser]
    deaths = record_thread_deaths(monkeypatch)  # an engine thread killed by it fails this test clearly
    fn: Any = tasks.adispatch if engine == "async" else tasks.dispatch
    mode: Any = tl.Processes() if engine == "processes" else engine
    before = warm_pool(mode) if engine == "processes" else set()
    items: list[Any] = [*HEALTHY[:3], call, *HEALTHY[3:]]
    outcomes, error = consume(tl.imap(fn, items, mode=mode, workers=2, on_error="collect"), timeout=10)
    assert error is None, f"{type(error).__name__} escaped the run: {error!r}"
    assert not deaths, f"engine thread(s) died: {deaths}"
    assert_one_outcome_per_item(outcomes, len(items))
    bad = outcomes[3].error
    assert type(bad) is tl.TaskError, repr(bad)
    assert isinstance(bad.__cause__, exc_type), repr(bad.__cause__)
    assert "task 3" in str(bad), str(bad)
    assert exc_type.__name__ in str(bad), str(bad)
    assert [o.value for o in outcomes if o.index != 3] == [x * x for x in HEALTHY]
    # The pool stays healthy: on processes no worker died; every engine runs the next map.
    if engine == "processes":
        assert set(process_backend().worker_pids()) == before, "a worker died or was replaced"
    again, error = consume(tl.imap(fn, list(range(10)), mode=mode, workers=2), timeout=15)
    assert error is None, repr(error)
    assert again == [x * x for x in range(10)]
    # with on_error="raise" it is a TaskError for the caller, never a SystemExit/KeyboardInterrupt
    _, error = consume(tl.imap(fn, [1, call], mode=mode, workers=2), timeout=15)
    assert type(error) is tl.TaskError, repr(error)
    assert isinstance(error.__cause__, exc_type), repr(error.__cause__)
    assert not deaths, f"engine thread(s) died: {deaths}"


# -- chaos ---------------------------------------------------------------------------------------------------
def test_chaos_random_worker_kills_lose_and_duplicate_nothing() -> None:
    n = 10_000
    mode = tl.Processes(crash_retries=5)
    run = tl.imap(tasks.short_square, range(n), mode=mode, workers=2, on_error="collect")
    consumer = Consumer(run)
    stop = threading.Event()
    killed: list[int] = []
    rng = random.Random(1234)

    def monkey() -> None:
        while not stop.wait(0.1) and len(killed) < 40:
            pools = [b for b in tl._pools.live_backends() if b.name == "processes"]
            pids = pools[0].worker_pids() if pools else []
            if pids:
                pid = rng.choice(pids)
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass

    chaos = threading.Thread(target=monkey, name="chaos-monkey", daemon=True)
    chaos.start()
    try:
        outcomes, error = consumer.finish(timeout=100)
    finally:
        stop.set()
        chaos.join(10)
    assert error is None, repr(error)
    assert killed, "the chaos thread killed nothing: the run ended too fast to test anything"
    assert_one_outcome_per_item(outcomes, n)
    for o in outcomes:
        if o.ok:
            assert o.value == o.index * o.index
        else:  # only a task that crashed its worker 6 times may fail, and only as WorkerCrashed
            assert isinstance(o.error, tl.WorkerCrashed), repr(o.error)
            assert len(o.error.history) == 6, o.error.history
    stats = run.statistics()
    assert stats.completed + stats.failed == n, stats
    assert stats.failed == sum(not o.ok for o in outcomes)
    print(f"chaos: {len(killed)} workers killed; {stats.retried} crash retries; {stats.failed} failed; {stats}")
    assert_gone(killed, "the killed workers")
    assert_pool_usable(mode, not_pids=set(killed))
