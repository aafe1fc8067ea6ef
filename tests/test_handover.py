"""Sample tasks auto's scaling probe left running: the probe hands them over, the run takes them.

Without a GIL, tasks that run far slower on a thread than in the caller's show it within a
millisecond but may take long to end. The probe does not wait for them (``hand_off``): they
become ``InFlight`` chunks, and the run takes each as a batch in flight on ``HandedOver`` while
the chosen engine starts. These tests drive both halves on any interpreter (the probe runs
threads whether or not there is a GIL); ``test_free_threaded.py`` runs the whole of it through
``mode="auto"`` where a free-threaded interpreter makes auto probe.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import taskloom as tl
from taskloom._backends._base import ItemError
from taskloom._backends._handover import InFlight
from taskloom._modes import by_name
from taskloom._options import Options
from taskloom._pools import get_backend
from taskloom._run._run import Run
from taskloom._sampling import SCALES, Sample, _scaling_probe
from tests.helpers import join, poll_until, wait_for


def test_the_probe_hands_over_first_tasks_that_show_threads_hopeless_and_loses_none() -> None:
    caller = threading.get_ident()
    release = threading.Event()

    def computes_until_released_elsewhere(x: int) -> int:
        if threading.get_ident() != caller:
            while not release.is_set():  # computing (its CPU clock runs), far past 16 x 1 ms
                pass
        return x * 10

    s = Sample(head=[(0, 0, None, 0.001)], timed=1, wall=0.001, cpu=0.001)
    source = iter(range(1, 1000))
    try:
        # A 60 s window: only the hand-off returns before the tasks end.
        speedup = _scaling_probe(computes_until_released_elsewhere, source, s, 2, 60.0, hand_off=True)
        assert speedup is not None
        assert speedup < SCALES, speedup
        assert s.head == [(0, 0, None, 0.001)], "a task that has not ended joined the head"
        assert [c.items for c in s.in_flight] == [[1], [2]], "each thread's first task, in input order"
        assert s.taken == 3
        assert next(source) == 3, "an item was taken from the input and not handed over"
        assert not any(c.ended for c in s.in_flight)
    finally:
        release.set()
    ended = [threading.Event() for _ in s.in_flight]
    for chunk, event in zip(s.in_flight, ended, strict=True):
        chunk.attach(lambda _chunk, _elapsed, _worker, event=event: event.set())
    for event in ended:
        wait_for(event, "a handed-over task to end once released")
    assert [[t[1] for t in c.out] for c in s.in_flight] == [[10], [20]]


def test_without_hand_off_the_probe_waits_for_its_tasks() -> None:
    # advise() keeps nothing of what it ran: it waits, and nothing is left in flight.
    caller = threading.get_ident()

    def slower_elsewhere(x: int) -> int:
        end = time.thread_time() + (0.001 if threading.get_ident() == caller else 0.03)
        while time.thread_time() < end:
            pass
        return x

    s = Sample(head=[(0, 0, None, 0.001)], timed=1, wall=0.001, cpu=0.001)
    assert _scaling_probe(slower_elsewhere, iter(range(1, 100)), s, 2, 10.0) is not None
    assert s.in_flight == []
    assert [h[0] for h in s.head] == list(range(len(s.head)))


def chunk(at: int, items: list[Any]) -> InFlight:
    return InFlight(at, items)


PROBE_SECONDS = 7.0  # what a handed-over chunk reports it ran: nothing the engine ran takes that long


def finish(c: InFlight, values: list[Any], errors: dict[int, BaseException] | None = None) -> None:
    for i, (item, value) in enumerate(zip(c.items, values, strict=True)):
        exc = (errors or {}).get(i)
        c.out.append((item, None if exc else value, ItemError(exc, "", False) if exc else None, PROBE_SECONDS))
    c.finish(PROBE_SECONDS * len(c.items), "taskloom-auto-scaling")


class SecondLook:
    """A watcher that only records the per-task times the run shows it."""

    finished = False
    measure_from = 0

    def __init__(self) -> None:
        self.seen: list[float] = []

    def observe(self, per_task: float, cpu: Any, tasks_done: int, remaining: int | None) -> None:
        self.seen.append(per_task)


def open_run(head: list[int], chunks: list[InFlight], rest: range, watcher: SecondLook | None = None,
             **options: Any) -> Run[Any]:
    """A run of x * 10 on threads that starts with ``head`` ended and ``chunks`` in flight."""

    def times_ten(x: int) -> int:
        return x * 10

    engine = by_name("threads")
    opts = Options.build(times_ten, "test", mode=engine, workers=2, **options)
    return Run(times_ten, iter(rest), engine=engine, backend=get_backend(engine, 2), options=opts, name="times_ten",
               total=len(rest), head=[(x, x * 10, None, 0.001) for x in head], in_flight=chunks,
               watcher=watcher)  # type: ignore[arg-type]


def consume(run: Run[Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.extend(run), name="consumer", daemon=True)
    thread.start()
    return thread, out


def test_a_run_takes_handed_over_tasks_in_their_places_whenever_they_end() -> None:
    early, late = chunk(0, [2]), chunk(1, [3, 4])
    finish(early, [20])  # ended before the run took it over
    second_look = SecondLook()
    run = open_run([0, 1], [early, late], range(5, 12), watcher=second_look)
    thread, out = consume(run)
    # The engine runs the rest meanwhile (as far as the window lets it read ahead of the late
    # chunk); in order, nothing after the late chunk is handed out.
    # (The consumer thread appends a result after the run counted it: wait for both.)
    assert poll_until(lambda: run.statistics().completed >= 2 + 1 + 2 and len(out) >= 3, timeout=30), (
        run.statistics(), out)
    assert out == [0, 10, 20]
    finish(late, [30, 40])
    join(thread, "the run to end once the handed-over tasks ended")
    assert out == [x * 10 for x in range(12)]
    stats = run.statistics()
    assert stats.completed == 12
    assert stats.per_worker.get("taskloom-auto-scaling") == 3
    # Auto's second look learns from the engine's own batches, not from the probe's tasks.
    assert second_look.seen
    assert max(second_look.seen) < PROBE_SECONDS


def test_a_handed_over_failure_is_retried_on_the_engine_then_reported_in_its_place() -> None:
    retried = chunk(0, [2, 3])
    finish(retried, [20, None], errors={1: ValueError("flaky on the probe's thread")})
    run = open_run([0, 1], [retried], range(4, 6), retries=1)
    assert list(run) == [0, 10, 20, 30, 40, 50]  # 3 ran again on threads, and succeeded
    assert run.statistics().retried == 1

    failed = chunk(0, [2])
    finish(failed, [None], errors={0: ValueError("two")})
    outcomes = list(open_run([0, 1], [failed], range(3, 5), on_error="collect"))
    assert [o.ok for o in outcomes] == [True, True, False, True, True]
    assert isinstance(outcomes[2].error, tl.TaskError)
    assert "two" in str(outcomes[2].error)


def test_a_cancelled_run_does_not_wait_for_handed_over_tasks() -> None:
    stuck = chunk(0, [2])
    run = open_run([0, 1], [stuck], range(3, 6))
    it = iter(run)
    assert [next(it), next(it)] == [0, 10]
    run.cancel()
    assert list(it) == []
    finish(stuck, [20])  # ends later: nothing reaches the cancelled run, nothing raises
    assert run.statistics().completed < 6


@pytest.mark.parametrize("ordered", [True, False])
def test_every_item_ends_once_with_chunks_ending_in_any_order(ordered: bool) -> None:
    chunks = [chunk(i, [10 + 2 * i, 11 + 2 * i]) for i in range(4)]
    for c in chunks[1::2]:
        finish(c, [x * 10 for x in c.items])
    run = open_run(list(range(10)), chunks, range(18, 30), ordered=ordered)
    thread, out = consume(run)
    for c in reversed(chunks[0::2]):
        finish(c, [x * 10 for x in c.items])
    join(thread, "the run to end")
    assert (out if ordered else sorted(out)) == [x * 10 for x in range(30)]
