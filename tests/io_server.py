"""A real HTTP server on 127.0.0.1 for I/O tests: aiohttp, in a thread, with latency and failures.

``GET /item/{n}`` waits ``latency`` seconds and answers ``n * 2`` as text. It counts requests in
flight (and the peak), and fails a request with HTTP 503 when asked to: ``fail_rate`` of the
*first* attempts of each ``n`` fail (chosen deterministically from ``n``), so retries succeed.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web


class LocalServer:
    def __init__(self, latency: float, fail_rate: float) -> None:
        self.latency = latency
        self.fail_rate = fail_rate
        self.in_flight = 0
        self.peak = 0
        self.attempts: Counter[int] = Counter()
        self.failures = 0
        self.url = ""
        self._lock = threading.Lock()

    def should_fail(self, n: int) -> bool:
        # Deterministic: the same items fail on every run, each only on its first attempt.
        return self.attempts[n] == 1 and (n * 7919) % 100 < self.fail_rate * 100

    async def handle(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.attempts[n] += 1
            fail = self.should_fail(n)
            if fail:
                self.failures += 1
        try:
            await asyncio.sleep(self.latency)
        finally:
            with self._lock:
                self.in_flight -= 1
        if fail:
            return web.Response(status=503, text="try again")
        return web.Response(text=str(n * 2))


@contextmanager
def serve(latency: float = 0.0, fail_rate: float = 0.0) -> Iterator[LocalServer]:
    """Start the server in a thread; stop it (and its loop) on exit."""
    server = LocalServer(latency, fail_rate)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application()
        app.router.add_get("/item/{n}", server.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = runner.addresses[0][1]
        server.url = f"http://127.0.0.1:{port}"
        runner_box.append(runner)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner_box[0].cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="test-http-server", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("deadlock: the test HTTP server did not start within 10 s")
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
