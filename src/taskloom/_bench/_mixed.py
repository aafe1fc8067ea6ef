"""The ``mixed`` workload: fetch a page from a real HTTP server, then parse and compute on it.

::

    bench process                                         any mode's workers
    serve(items) -> ThreadingHTTPServer on 127.0.0.1:0     fetch_and_digest(url)
       handler thread per request:  <────── GET ────────     urllib (threads, processes, sequential)
         sleep(delay from the URL)                           asyncio.open_connection (async)
         body = make_body(index, count)  ──── 200 ──────>   digest(body): parse + CPU-bound checksum

The server is part of the bench, in a background thread of the bench process, and binds the
loopback address only; the fetch functions refuse any other host, and the sync one bypasses any
proxy configured in the environment, so the bench never contacts another machine. Everything a
request needs (page index, body length, latency) is in its URL, so the server keeps no state and
the expected answer is computed from the URL alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ._workloads import Size, Workload, register

__all__ = ["LOOPBACK", "digest", "fetch_and_digest", "fetch_and_digest_async", "make_body", "serve"]

LOOPBACK = "127.0.0.1"

#: (tasks, numbers per page, server latency in seconds). Each page costs ~5 ms of parsing and
#: computing (full and quick), a quarter of the quick latency: mostly waiting, yet enough
#: computing that the GIL shows.
MIXED_SIZES: dict[Size, tuple[int, int, float]] = {
    "full": (64, 4000, 0.05),
    "quick": (16, 4000, 0.02),
    "test": (6, 200, 0.005),
}
ROUNDS = 16  # passes of the checksum over the numbers: sets the compute share of a task


def make_body(index: int, count: int) -> bytes:
    """Page ``index``: ``count`` numbers, one per line, a deterministic function of both."""
    return ("\n".join(str((index * 7919 + k * 104729) % 1_000_003) for k in range(count)) + "\n").encode()


def digest(body: bytes) -> int:
    """The compute step: parse the numbers, then a pure-Python checksum over them (holds the GIL)."""
    values = [int(x) for x in body.split()]
    return sum(sum((v * v + r) % 9973 for v in values) for r in range(ROUNDS))


def _target(url: str) -> tuple[str, int, str]:
    """``(host, port, path?query)`` of a bench URL; refuses anything but the loopback address."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname != LOOPBACK or parts.port is None:
        raise ValueError(f"the bench fetches only http://{LOOPBACK}:<port>/ URLs, got {url!r}")
    return parts.hostname, parts.port, parts.path + (f"?{parts.query}" if parts.query else "")


def _page(target: str) -> tuple[int, int, float]:
    """``/data/<index>?n=<count>&delay=<seconds>`` -> (index, count, delay); ValueError otherwise."""
    parts = urllib.parse.urlsplit(target)
    head, _, index = parts.path.rpartition("/")
    query = urllib.parse.parse_qs(parts.query)
    if head != "/data":
        raise ValueError(f"not a bench page: {target!r}")
    return int(index), int(query["n"][0]), float(query["delay"][0])


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    # An empty ProxyHandler: with http_proxy set in the environment, urlopen would send even a
    # loopback request to the proxy, that is, to another machine.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch_and_digest(url: str) -> int:
    """Fetch ``url`` with urllib (blocking; the wait releases the GIL), then ``digest`` the body."""
    _target(url)
    with _opener().open(url, timeout=30) as response:
        body = response.read()
    return digest(body)


async def fetch_and_digest_async(url: str) -> int:
    """``fetch_and_digest`` on asyncio: a minimal HTTP/1.1 GET over ``asyncio.open_connection``.

    The digest then runs on the event loop, as it would in a naive async program: while it
    computes, no other coroutine advances.
    """
    host, port, target = _target(url)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode("ascii"))
        await writer.drain()
        raw = await reader.read()  # the server closes the connection after one response
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        raise ConnectionError(f"GET {url}: bad response {head[:80]!r}")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and int(value) != len(body):
            raise ConnectionError(f"GET {url}: {len(body)} bytes of {int(value)}")
    return digest(body)


class _Handler(BaseHTTPRequestHandler):
    """Sleeps the latency the URL asks for, then returns the page."""

    def do_GET(self) -> None:
        try:
            index, count, delay = _page(self.path)
        except (ValueError, KeyError, IndexError):
            self.send_error(404)
            return
        time.sleep(delay)
        body = make_body(index, count)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request on stderr would bury the bench's own output


class _Server(ThreadingHTTPServer):
    # The default backlog (5) drops connections when 100 coroutines connect at once, and a
    # dropped SYN is retried after a second: the async times would measure that, not the work.
    request_queue_size = 1024
    daemon_threads = True


@contextlib.contextmanager
def serve(pages: list[tuple[int, int, float]]) -> Iterator[list[str]]:
    """Start the loopback server; yield one URL per ``(index, count, delay)``; stop it after.

    Example::

        with serve([(0, 10, 0.01)]) as (url,):
            fetch_and_digest(url) == digest(make_body(0, 10))
    """
    server = _Server((LOOPBACK, 0), _Handler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="taskloom-bench-http", daemon=True)
    thread.start()
    try:
        yield [f"http://{LOOPBACK}:{port}/data/{i}?n={n}&delay={d}" for i, n, d in pages]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _items(size: Size) -> list[tuple[int, int, float]]:
    tasks, count, delay = MIXED_SIZES[size]
    return [(i, count, delay) for i in range(tasks)]


def _expect(url: str) -> int:
    # From the URL alone: the page the server should have sent, digested here.
    index, count, _ = _page(_target(url)[2])
    return digest(make_body(index, count))


register(Workload(
    name="mixed",
    description="HTTP fetch, then parse and compute",
    fn=fetch_and_digest,
    items=_items,
    expect=_expect,
    async_fn=fetch_and_digest_async,
    io_bound=True,
    setup=serve,
    notes={
        "threads": "{workers} threads overlap the waits; the parsing holds the GIL",
        "processes": "only {workers} requests wait at once",
        "async": "the waits overlap; the parsing blocks the event loop",
    },
))
