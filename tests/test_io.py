"""I/O at scale against a real local HTTP server: concurrency caps, rate limits, retries with
backoff, amap/aimap inside a running loop, uvloop, the blocking-loop detector, background services."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import urllib.request

import aiohttp
import pytest

import taskloom as tl
from tests.io_server import serve


async def fetch(session: aiohttp.ClientSession, base: str, n: int) -> int:
    async with session.get(f"{base}/item/{n}") as response:
        if response.status == 503:
            raise ConnectionError(f"item {n}: server busy")
        response.raise_for_status()
        return int(await response.text())


def fetch_blocking(base: str, n: int) -> int:
    with urllib.request.urlopen(f"{base}/item/{n}", timeout=10) as response:
        return int(response.read())


def test_5000_requests_with_a_concurrency_cap_of_200() -> None:
    with serve(latency=0.01) as server:

        async def main() -> list[int]:
            connector = aiohttp.TCPConnector(limit=0)  # taskloom's cap, not aiohttp's, is under test
            async with aiohttp.ClientSession(connector=connector) as session:
                return await tl.amap(functools.partial(fetch, session, server.url), range(5000), workers=200)

        results = asyncio.run(main())
    assert results == [n * 2 for n in range(5000)]
    assert server.peak <= 200
    assert server.peak > 20  # the cap was actually used, not a serial crawl


def test_rate_limit_counts_starts_per_window() -> None:
    starts: list[float] = []
    lock = threading.Lock()

    def task(n: int) -> int:
        with lock:
            starts.append(time.monotonic())
        return n

    assert tl.map(task, range(60), mode="threads", workers=16, rate="50/s") == list(range(60))
    starts.sort()
    # 50 per second, evenly spaced: no 0.2 s window may hold more than 10 starts (+1 for an
    # edge); the whole run spans at least 59 gaps of 20 ms, less a little scheduling slack.
    for i, t0 in enumerate(starts):
        in_window = sum(1 for t in starts[i:] if t < t0 + 0.2)
        assert in_window <= 11
    assert starts[-1] - starts[0] >= 59 * 0.02 * 0.9


def test_rate_accepts_per_minute_and_rejects_nonsense() -> None:
    assert tl.map(abs, [-1, -2], mode="threads", rate="600/min") == [1, 2]
    for bad in ("fast", "10/fortnight", 0, -5, "0/s"):
        with pytest.raises(ValueError, match="rate"):
            tl.map(abs, [1], rate=bad)
    with pytest.raises(ValueError, match="chunksize"):
        tl.map(abs, [1], rate=10, chunksize=5)


def test_retries_with_backoff_recover_from_30_percent_failures() -> None:
    with serve(latency=0.002, fail_rate=0.3) as server:
        outcomes = tl.map(functools.partial(fetch_blocking_retrying, server.url), range(200), mode="threads",
                          workers=32, retries=3, backoff=0.01, retry_on=ConnectionError, on_error="collect")
        failures = server.failures
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:3]
    assert [o.value for o in outcomes] == [n * 2 for n in range(200)]
    retried = [o for o in outcomes if o.attempts > 1]
    assert len(retried) == failures > 30  # ~30% of 200 failed once and were retried once


def fetch_blocking_retrying(base: str, n: int) -> int:
    try:
        return fetch_blocking(base, n)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response (and its socket) open
        if exc.code == 503:
            raise ConnectionError(f"item {n}: server busy") from None
        raise


def test_retry_on_limits_what_is_retried() -> None:
    calls: list[int] = []

    def task(n: int) -> int:
        calls.append(n)
        raise KeyError(n)

    outcomes = tl.map(task, [1, 2], mode="threads", retries=3, backoff=0.01, retry_on=ConnectionError,
                      on_error="collect")
    assert [o.attempts for o in outcomes] == [1, 1]
    assert sorted(calls) == [1, 2]


def test_backoff_grows_and_is_capped() -> None:
    from taskloom._run._policy import BACKOFF_MAX, backoff_delay

    assert backoff_delay(0, 3) == 0
    for attempt in range(1, 6):
        delay = backoff_delay(0.1, attempt)
        assert 0.05 * 2 ** (attempt - 1) <= delay <= 0.1 * 2 ** (attempt - 1)
    assert backoff_delay(10, 20) <= BACKOFF_MAX


def test_amap_and_aimap_inside_a_running_loop_keep_the_loop_free() -> None:
    async def double(n: int) -> int:
        await asyncio.sleep(0.001)
        return n * 2

    async def main() -> tuple[list[int], list[int], list[int], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        mapped = await tl.amap(double, range(100), workers=10)
        streamed = [x async for x in tl.aimap(double, range(20), ordered=True)]
        # A plain function: auto measures it in the helper thread, never on the loop.
        plain = await tl.amap(functools.partial(time_sleep_then, 0.02), range(10))
        tick_task.cancel()
        return mapped, streamed, plain, ticks

    mapped, streamed, plain, ticks = asyncio.run(main())
    assert mapped == [n * 2 for n in range(100)]
    assert streamed == [n * 2 for n in range(20)]
    assert plain == list(range(10))
    assert ticks > 0


def time_sleep_then(seconds: float, n: int) -> int:
    time.sleep(seconds)
    return n


def test_aimap_break_cancels_the_rest() -> None:
    started: list[int] = []

    async def slow(n: int) -> int:
        started.append(n)
        await asyncio.sleep(0.01 if n < 3 else 30)
        return n

    async def main() -> list[int]:
        got = []
        async with tl.aimap(slow, range(1000), workers=5) as run:
            async for value in run:
                got.append(value)
                if len(got) == 3:
                    break
        return got

    assert asyncio.run(main()) == [0, 1, 2]
    assert len(started) < 20  # the input was not read past the window


def test_aimap_errors_reach_the_awaiting_code() -> None:
    async def bad(n: int) -> int:
        if n == 3:
            raise ValueError("three")
        return n

    async def main() -> None:
        async for _ in tl.aimap(bad, range(10)):
            pass

    with pytest.raises(tl.TaskError, match="three") as info:
        asyncio.run(main())
    assert isinstance(info.value.__cause__, ValueError)


async def loop_type(_: int) -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_is_used_when_asked() -> None:
    assert tl.map(loop_type, [1], mode=tl.Async(loop="uvloop")) == ["uvloop"]
    assert tl.map(loop_type, [1], mode=tl.Async()) != ["uvloop"]
    with pytest.raises(ValueError, match="loop"):
        tl.Async(loop="trio")


async def blocks_the_loop(_: int) -> int:
    time.sleep(0.3)  # noqa: ASYNC251 - the mistake the detector exists for
    return 1


def test_blocking_call_in_a_coroutine_is_reported_with_its_stack(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="taskloom"):
        assert tl.map(blocks_the_loop, [1], mode=tl.Async(debug=True)) == [1]
    reports = [r.getMessage() for r in caplog.records if "blocked the event loop" in r.getMessage()]
    assert reports, "the detector did not fire"
    assert "blocks_the_loop" in reports[0]
    assert "time.sleep(0.3)" in reports[0]


def test_blocking_detector_is_off_by_default_and_on_with_the_env(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with caplog.at_level(logging.WARNING, logger="taskloom"):
        tl.map(blocks_the_loop, [1], mode="async")
    assert not [r for r in caplog.records if "blocked the event loop" in r.getMessage()]
    monkeypatch.setenv("TASKLOOM_DEBUG", "1")
    assert tl.Async().debugging


# -- background services ---------------------------------------------------------------------------

def test_background_runs_at_an_interval_and_stops_cleanly() -> None:
    ran = threading.Event()
    count = 0

    def poll() -> None:
        nonlocal count
        count += 1
        if count >= 3:
            ran.set()

    svc = tl.background(poll, interval=0.001, name="poller")
    assert ran.wait(10), "deadlock: the service did not run three times"
    assert svc.running
    svc.stop(timeout=10)
    assert not svc.running
    seen = count
    time.sleep(0.02)
    assert count == seen  # nothing runs after stop()


def test_background_long_running_fn_gets_the_stop_event() -> None:
    inside = threading.Event()
    finished: list[str] = []

    def worker(stop: threading.Event) -> None:
        inside.set()
        stop.wait()
        finished.append("clean")

    with tl.background(worker) as svc:
        assert inside.wait(10)
    assert finished == ["clean"]
    assert not svc.running


def test_background_surfaces_its_exception(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("disk full")

    with caplog.at_level(logging.ERROR, logger="taskloom"):
        svc = tl.background(broken)
        with pytest.raises(RuntimeError, match="disk full"):
            svc.join(10)
    assert isinstance(svc.exception, RuntimeError)
    assert any("raised" in r.getMessage() for r in caplog.records)
    with pytest.raises(RuntimeError, match="disk full"):
        svc.stop()


def test_background_restarts_on_failure_then_gives_up() -> None:
    runs: list[int] = []

    def flaky() -> None:
        runs.append(1)
        raise OSError("flaky")

    svc = tl.background(flaky, restart="on-failure", max_restarts=2)
    with pytest.raises(OSError, match="flaky"):
        svc.join(10)
    assert len(runs) == 3
    assert svc.restarts == 2


def test_background_recovers_after_a_restart() -> None:
    runs: list[int] = []
    done = threading.Event()

    def once_broken() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise OSError("first run fails")
        done.set()

    svc = tl.background(once_broken, restart="on-failure", max_restarts=3)
    assert done.wait(10)
    svc.join(10)  # it ended well: nothing is raised
    assert svc.restarts == 1
    assert svc.exception is None


def test_background_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="restart"):
        tl.background(print, restart="always")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval"):
        tl.background(print, interval=-1)
    with pytest.raises(TypeError, match="callable"):
        tl.background(42)  # type: ignore[arg-type]


def test_background_service_finishes_its_write_at_interpreter_exit(tmp_path: object) -> None:
    import subprocess
    import sys
    from pathlib import Path

    out = Path(str(tmp_path)) / "out.txt"
    script = Path(str(tmp_path)) / "svc.py"
    script.write_text(
        "import time, taskloom\n"
        f"out = open({str(out)!r}, 'w')\n"
        "def writer(stop):\n"
        "    while not stop.is_set():\n"
        "        out.write('x'); time.sleep(0.001)\n"
        "    out.write('END'); out.flush()\n"
        "taskloom.background(writer)\n"
        "time.sleep(0.05)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], timeout=60, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().endswith("END")
