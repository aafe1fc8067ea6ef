"""The async engine: every coroutine the cap allows runs at once, and nothing else changed.

Overlap is asserted by counting coroutines in flight, never by a wall-clock bound: each coroutine
waits on a gate that opens only when the expected number are in flight together, so an engine that
ran fewer at once would fail with a timeout, not merely be slow.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import taskloom as tl
from taskloom import TaskError
from taskloom._backends._asyncio import AsyncBackend
from taskloom._backends._base import Backend, Batch, Done, Job, Lost
from taskloom._run._delivery import Delivery
from taskloom._run._dispatch import Dispatch
from taskloom._run._tally import Tally

N = 2000
GATE_TIMEOUT = 30.0  # generous: a loaded machine is slow, but an engine that cannot overlap never opens the gate


class InFlight:
    """Counts coroutines in flight; each waits until ``target`` of them were in flight at once."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.now = 0
        self.most = 0
        self.gate: asyncio.Event | None = None  # made on the loop that runs the coroutines

    async def __call__(self, x: int) -> int:
        if self.gate is None:
            self.gate = asyncio.Event()
        self.now += 1
        self.most = max(self.most, self.now)
        if self.now >= self.target:
            self.gate.set()
        try:
            await asyncio.wait_for(self.gate.wait(), GATE_TIMEOUT)
            await asyncio.sleep(0)
        finally:
            self.now -= 1
        return x * 2


def test_map_runs_all_2000_coroutines_at_once_with_workers_2000() -> None:
    job = InFlight(N)
    assert tl.map(job, range(N), mode="async", workers=N) == [2 * x for x in range(N)]
    assert job.most == N


def test_amap_runs_all_2000_coroutines_at_once_on_the_callers_loop() -> None:
    job = InFlight(N)

    async def main() -> list[int]:
        return await tl.amap(job, range(N), workers=N)

    assert asyncio.run(main()) == [2 * x for x in range(N)]
    assert job.most == N


def test_the_default_cap_is_reached_and_never_passed() -> None:
    cap = tl.Async().default_workers()
    job = InFlight(cap)
    assert tl.map(job, range(3 * cap), mode="async") == [2 * x for x in range(3 * cap)]
    assert job.most == cap


def test_a_smaller_cap_is_reached_and_never_passed() -> None:
    job = InFlight(7)
    assert tl.map(job, range(50), mode="async", workers=7) == [2 * x for x in range(50)]
    assert job.most == 7


# -- behaviours the faster engine must keep -------------------------------------------------------


def test_a_timeout_cancels_the_coroutine() -> None:
    cancelled: list[int] = []

    async def hang(x: int) -> int:
        if x == 1:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.append(x)
                raise
        return x

    outcomes = tl.map(hang, range(3), mode="async", timeout=0.3, on_error="collect")
    assert [o.value for o in outcomes] == [0, None, 2]
    assert isinstance(outcomes[1].error, tl.TaskTimeout)
    deadline = time.monotonic() + 10
    while not cancelled and time.monotonic() < deadline:
        time.sleep(0.01)  # the cancellation is delivered on the loop's thread
    assert cancelled == [1]


def _flaky() -> tuple[Callable[[int], Awaitable[int]], dict[int, int]]:
    """A coroutine function (multiples of 3 fail their first try, 10 always fails) and its tries per item."""
    attempts: dict[int, int] = {}

    async def flaky(x: int) -> int:
        attempts[x] = attempts.get(x, 0) + 1
        await asyncio.sleep(0)
        if x % 3 == 0 and attempts[x] == 1:
            raise ValueError(f"first try of {x}")
        if x == 10:
            raise KeyError(x)
        return x

    return flaky, attempts


def test_retries_and_errors_per_item_in_order() -> None:
    flaky, attempts = _flaky()
    outcomes = tl.map(flaky, range(12), mode="async", retries=1, on_error="collect")
    assert [o.index for o in outcomes] == list(range(12))
    assert [o.value for o in outcomes if o.ok] == [x for x in range(12) if x != 10]
    assert isinstance(outcomes[10].error, TaskError)
    assert outcomes[10].attempts == 2
    assert all(attempts[x] == 2 for x in range(0, 12, 3))
    with pytest.raises(TaskError):
        tl.map(flaky, [10], mode="async")


def test_unordered_results_come_as_they_finish() -> None:
    async def wait(x: float) -> float:
        await asyncio.sleep(x)
        return x

    assert list(tl.imap(wait, [0.3, 0.0, 0.1], mode="async", ordered=False)) == [0.0, 0.1, 0.3]


request = contextvars.ContextVar("request", default="none")


def test_each_coroutine_sees_the_callers_context_in_a_copy_of_its_own() -> None:
    async def set_and_read(x: int) -> tuple[str, str]:
        seen = request.get()
        await asyncio.sleep(0)
        request.set(f"task {x}")
        await asyncio.sleep(0.01)
        return seen, request.get()

    token = request.set("caller")
    try:
        results = tl.map(set_and_read, range(20), mode="async", workers=20)
    finally:
        request.reset(token)
    assert results == [("caller", f"task {x}") for x in range(20)]


def test_progress_counts_every_task() -> None:
    updates: list[int] = []

    class Bar:  # what a tqdm bar offers
        total: int | None = None

        def update(self, n: int) -> None:
            updates.append(n)

    async def job(x: int) -> int:
        await asyncio.sleep(0)
        return x

    assert tl.map(job, range(300), mode="async", workers=300, progress=Bar()) == list(range(300))
    assert sum(updates) == 300


def test_a_run_fails_rather_than_waits_when_the_loop_is_shut_down_under_it() -> None:
    started = threading.Event()
    found: dict[str, Any] = {}

    async def forever(x: int) -> int:
        started.set()
        await asyncio.sleep(3600)
        return x

    def consume() -> None:
        try:
            found["outcomes"] = tl.map(forever, range(3), mode="async", on_error="collect")
        except BaseException as exc:  # reported below
            found["error"] = exc

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    assert started.wait(30), "no coroutine started"
    tl.shutdown()
    consumer.join(30)
    assert not consumer.is_alive(), "the run still waits for coroutines whose loop has stopped"
    assert "error" not in found, found
    outcomes = found["outcomes"]
    assert all(isinstance(o.error, TaskError) for o in outcomes)
    assert "event loop stopped" in str(outcomes[0].error)


# -- batches of coroutines: side by side, each on a slot of its own -----------------------------


def test_the_batch_size_is_a_share_of_what_runs_at_once() -> None:
    mode = tl.Async()
    assert mode.batch_size(100, None) == 1  # the default cap: one coroutine per batch, as before
    assert mode.batch_size(2000, 2000) == 31
    assert mode.batch_size(2000, 300) == 4  # a short input: batches sized by what it holds
    assert mode.batch_size(100_000, None) == 32  # at most 32: a straggler holds back few results


def test_batches_run_their_items_side_by_side_and_the_cap_holds() -> None:
    job = InFlight(7)  # batches of 5 and a cap of 7: the cap counts coroutines, not batches
    assert tl.map(job, range(50), mode="async", workers=7, chunksize=5) == [2 * x for x in range(50)]
    assert job.most == 7
    job = InFlight(256)  # automatic batches of 4
    with tl.imap(job, range(1000), mode="async", workers=256) as run:
        assert list(run) == [2 * x for x in range(1000)]
    assert job.most == 256
    stats = run.statistics()
    assert (stats.completed, stats.batches, stats.chunksize) == (1000, 250, 4)
    assert len(stats.slowest) == 5  # each coroutine is timed on its own


def test_a_straggler_holds_its_own_slot_only() -> None:
    # Item 0 waits until item 5 has started. A batch that kept all its slots until its last item
    # ended would hold both slots with item 0 and never start item 5.
    started: dict[int, asyncio.Event] = {}

    async def job(x: int) -> int:
        started.setdefault(x, asyncio.Event()).set()
        if x == 0:
            await asyncio.wait_for(started.setdefault(5, asyncio.Event()).wait(), GATE_TIMEOUT)
        return x

    assert tl.map(job, range(6), mode="async", workers=2, chunksize=2) == list(range(6))


def test_two_runs_on_one_backend_each_have_their_own_cap() -> None:
    job = InFlight(16)  # 8 of each run at once: neither queues behind the other

    def run() -> None:
        assert tl.map(job, range(16), mode="async", workers=8, chunksize=4) == [2 * x for x in range(16)]

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GATE_TIMEOUT + 10)
    assert job.most == 16


@pytest.mark.parametrize("chunksize", [1, 4])
def test_a_failure_cancels_the_rest_of_its_batch_and_the_run(chunksize: int) -> None:
    cancelled: set[int] = set()
    all_cancelled = threading.Event()
    waiting: set[int] = set()
    others_started: list[asyncio.Event] = []  # made on the loop that runs the coroutines

    async def job(x: int) -> int:
        if not others_started:
            others_started.append(asyncio.Event())
        if x == 0:
            await asyncio.wait_for(others_started[0].wait(), GATE_TIMEOUT)
            raise ValueError("boom")
        waiting.add(x)
        if len(waiting) == 7:
            others_started[0].set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.add(x)
            if len(cancelled) == 7:
                all_cancelled.set()
            raise
        return x

    with pytest.raises(TaskError, match="boom"):
        tl.map(job, range(8), mode="async", workers=8, chunksize=chunksize)
    assert all_cancelled.wait(GATE_TIMEOUT), cancelled
    assert cancelled == set(range(1, 8))


def test_retries_and_errors_inside_batches() -> None:
    flaky, attempts = _flaky()
    outcomes = tl.map(flaky, range(40), mode="async", workers=8, chunksize=4, retries=1, on_error="collect")
    assert [o.index for o in outcomes] == list(range(40))
    assert [o.value for o in outcomes if o.ok] == [x for x in range(40) if x != 10]
    assert outcomes[10].attempts == 2
    assert isinstance(outcomes[10].error, TaskError)
    assert all(attempts[x] == 2 for x in range(0, 40, 3))


def test_a_coroutine_raising_cancelled_error_itself_fails_its_item_and_the_run_goes_on() -> None:
    async def job(x: int) -> int:
        await asyncio.sleep(0)
        if x == 2:
            raise asyncio.CancelledError("not from the run")
        return x

    outcomes = tl.map(job, range(8), mode="async", workers=8, chunksize=4, on_error="collect")
    assert [o.value for o in outcomes] == [0, 1, None, 3, 4, 5, 6, 7]
    assert isinstance(outcomes[2].error, TaskError)
    assert isinstance(outcomes[2].error.__cause__, asyncio.CancelledError)


def test_cancelling_a_run_cancels_its_queued_and_running_coroutines() -> None:
    cancelled: set[int] = set()
    started: set[int] = set()
    four_started, all_cancelled = threading.Event(), threading.Event()

    async def job(x: int) -> int:
        started.add(x)
        if len(started) == 4:
            four_started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.add(x)
            if len(cancelled) == 4:
                all_cancelled.set()
            raise
        return x

    # A cap of 4 and batches of 4: items 0-3 run; 4 onwards wait for a slot and must never start.
    run = tl.imap(job, range(40), mode="async", workers=4, chunksize=4)
    consumer = threading.Thread(target=list, args=(run,), daemon=True)
    consumer.start()
    assert four_started.wait(GATE_TIMEOUT)
    run.cancel()
    assert all_cancelled.wait(GATE_TIMEOUT), cancelled
    consumer.join(GATE_TIMEOUT)
    assert not consumer.is_alive()
    assert cancelled == started == {0, 1, 2, 3}
    backend = run._dispatch.backend
    assert isinstance(backend, AsyncBackend)
    assert not backend._running, "a cancelled batch is still held"
    assert not backend._slots, "the cancelled run's queue of items waiting for a slot is still held"


# -- items of a batch report as they end (Done.part) -----------------------------------------------


class _Keep(Backend):
    name = "keep"

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def submit(self, batch: Batch) -> None:
        self.batches.append(batch)


def test_a_batch_in_parts_ends_once_each_position_came_back_and_a_loss_stands_for_the_rest() -> None:
    backend = _Keep()
    dispatch = Dispatch(Job(abs, "abs"), queue.SimpleQueue(), backend, timeout=None, per_item_timing=False,
                        tally=Tally(None))
    group = Delivery(ordered=True, collect=False).open_group(10, list(range(6)))
    dispatch.submit(group, [1, 2, 3, 4, 5])  # a batch of some of the group's positions
    batch = backend.batches[0]
    first = dispatch.arrived(Done(batch.id, [3, 1], None, [0.1, 0.1], 0.2, "w", [2, 0]))
    assert first is not None
    assert first.positions == [3, 1]  # the group's positions of the batch's items 2 and 0
    second = dispatch.arrived(Done(batch.id, [2], None, [0.1], 0.1, "w", [1]))
    assert second is not None
    assert second.positions == [2]
    rest = dispatch.arrived(Lost(batch.id, "broken", "the loop stopped"))  # the rest, not again what ended
    assert rest is not None
    assert rest.positions == [4, 5]
    assert dispatch.arrived(Done(batch.id, [4], None, [0.1], 0.1, "w", [3])) is None  # over: ignored


def test_progress_counts_each_coroutine_as_it_ends_not_when_its_batch_does() -> None:
    loop_event: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
    updates: list[int] = []

    class Bar:
        total: int | None = None

        def update(self, n: int) -> None:  # in the run's consumer thread
            updates.append(n)
            if sum(updates) == 3:  # items 0-2 counted while item 3 still runs: it may end now
                loop, event = loop_event[0]
                loop.call_soon_threadsafe(event.set)

    async def job(x: int) -> int:
        if not loop_event:
            loop_event.append((asyncio.get_running_loop(), asyncio.Event()))
        if x == 3:
            await asyncio.wait_for(loop_event[0][1].wait(), GATE_TIMEOUT)
        return x

    assert tl.map(job, range(4), mode="async", workers=4, chunksize=4, progress=Bar()) == [0, 1, 2, 3]
    assert sum(updates) == 4


def test_a_loop_shut_down_under_a_batch_in_parts_fails_only_what_had_not_ended() -> None:
    ended = threading.Event()
    found: dict[str, Any] = {}
    updates: list[int] = []

    class Bar:
        total: int | None = None

        def update(self, n: int) -> None:
            updates.append(n)
            if sum(updates) == 2:
                ended.set()

    async def job(x: int) -> int:
        if x >= 2:
            await asyncio.sleep(3600)
        return x

    def consume() -> None:
        try:
            found["outcomes"] = tl.map(job, range(4), mode="async", workers=4, chunksize=4, on_error="collect",
                                       progress=Bar())
        except BaseException as exc:  # reported below
            found["error"] = exc

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    assert ended.wait(GATE_TIMEOUT), "items 0 and 1 were not reported while 2 and 3 ran"
    tl.shutdown()
    consumer.join(GATE_TIMEOUT)
    assert not consumer.is_alive(), "the run still waits for coroutines whose loop has stopped"
    assert "error" not in found, found
    outcomes = found["outcomes"]
    assert [o.value for o in outcomes] == [0, 1, None, None]
    assert [o.index for o in outcomes] == [0, 1, 2, 3]  # each once
    assert all("event loop stopped" in str(o.error) for o in outcomes[2:])


def test_an_unordered_group_reported_in_parts_is_handed_out_as_its_items_end() -> None:
    delivery = Delivery(ordered=False, collect=False)
    group = delivery.open_group(0, ["a", "b", "c", "d"])
    group.slots()[:] = ["A", "B", "C", None]
    group.succeed(2)
    group.succeed(0)
    delivery.deliver(group, part=True)
    assert delivery.take() == ["C", "A"]
    assert delivery.in_window() == 1  # the group stays in the window until its last item ends
    group.succeed(1)
    delivery.deliver(group)  # not a part (a retried item's own batch): it waits for the group's end
    assert delivery.take() is None
    group.slots()[3] = "D"
    group.succeed(3)
    delivery.deliver(group, part=True)
    assert delivery.take() == ["B", "D"]  # the rest, each once
    assert delivery.in_window() == 0


def test_an_unordered_run_hands_each_coroutine_out_as_it_ends_not_when_its_batch_does() -> None:
    loop_event: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def job(x: int) -> int:
        if not loop_event:
            loop_event.append((asyncio.get_running_loop(), asyncio.Event()))
        if x == 0:  # ends only once the consumer holds items 1-3 of its batch
            await asyncio.wait_for(loop_event[0][1].wait(), GATE_TIMEOUT)
        return x

    got = []
    for x in tl.imap(job, range(4), mode="async", workers=4, chunksize=4, ordered=False):
        got.append(x)
        if sorted(got) == [1, 2, 3]:
            loop, event = loop_event[0]
            loop.call_soon_threadsafe(event.set)
    assert got[-1] == 0
    assert sorted(got) == [0, 1, 2, 3]


def test_an_unordered_run_in_parts_gives_each_outcome_once() -> None:
    attempts: dict[int, int] = {}

    async def flaky(x: int) -> int:
        attempts[x] = attempts.get(x, 0) + 1
        await asyncio.sleep(0.001 * (x % 7))  # ends apart: batches report in parts
        if x % 5 == 0 and attempts[x] == 1:
            raise ValueError(f"first try of {x}")
        if x == 13:
            raise KeyError(x)
        return x

    outcomes = list(tl.imap(flaky, range(200), mode="async", workers=200, ordered=False, retries=1,
                            on_error="collect"))
    assert sorted(o.index for o in outcomes) == list(range(200))
    assert all(o.value == o.index for o in outcomes if o.index != 13)
    failed = [o for o in outcomes if not o.ok]
    assert [o.index for o in failed] == [13]
    assert failed[0].attempts == 2
