"""The async engine: every coroutine the cap allows runs at once, and nothing else changed.

Overlap is asserted by counting coroutines in flight, never by a wall-clock bound: each coroutine
waits on a gate that opens only when the expected number are in flight together, so an engine that
ran fewer at once would fail with a timeout, not merely be slow.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

import pytest

import taskloom as tl
from taskloom import TaskError

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


def test_retries_and_errors_per_item_in_order() -> None:
    attempts: dict[int, int] = {}

    async def flaky(x: int) -> int:
        attempts[x] = attempts.get(x, 0) + 1
        await asyncio.sleep(0)
        if x % 3 == 0 and attempts[x] == 1:
            raise ValueError(f"first try of {x}")
        if x == 10:
            raise KeyError(x)
        return x

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
