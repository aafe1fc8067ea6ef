"""I/O at scale: 2,000 tasks of 20 ms latency, taskloom against hand-written asyncio and the stdlib.

Run by hand (not a test): ``python benchmarks/io.py [--quick] [--markdown]``.

Two workloads: a 20 ms sleep, and a GET to a local aiohttp server on 127.0.0.1 that answers after
20 ms. Contenders, side by side in one run, repeats interleaved:

* taskloom async with workers=N (N = 100 and 2,000) vs ``asyncio`` + ``Semaphore(N)`` by hand
  (target: within 10%);
* taskloom ``mode="auto"`` on the blocking sleep vs ``ThreadPoolExecutor()`` with its default
  workers (target: at least 10x faster), and vs ``asyncio.gather`` of everything at once.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.io_server: the same local server

from tests.io_server import serve

import taskloom as tl

LATENCY = 0.02


def blocking_sleep(n: int) -> int:
    time.sleep(LATENCY)
    return n


async def async_sleep(n: int) -> int:
    await asyncio.sleep(LATENCY)
    return n


async def by_hand_semaphore(n_tasks: int, cap: int, job: Callable[[int], object]) -> list[object]:
    semaphore = asyncio.Semaphore(cap)

    async def one(n: int) -> object:
        async with semaphore:
            return await job(n)  # type: ignore[misc]

    return await asyncio.gather(*(one(n) for n in range(n_tasks)))


async def fetch(session: aiohttp.ClientSession, base: str, n: int) -> int:
    async with session.get(f"{base}/item/{n}") as response:
        return int(await response.text())


def time_it(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks and repeats")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    n_tasks = 500 if args.quick else 2000
    repeats = 2 if args.quick else 3
    rows: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        rows.setdefault(name, []).append(seconds)

    with serve(latency=LATENCY) as server:
        for _ in range(repeats):
            for cap in (100, 2000):
                record(f"sleep: taskloom async workers={cap}",
                       time_it(lambda cap=cap: tl.map(async_sleep, range(n_tasks), workers=cap)))
                record(f"sleep: asyncio + Semaphore({cap}) by hand",
                       time_it(lambda cap=cap: asyncio.run(by_hand_semaphore(n_tasks, cap, async_sleep))))
            record("sleep: asyncio.gather (no cap)",
                   time_it(lambda: asyncio.run(_gather(n_tasks))))
            record("blocking sleep: taskloom auto", time_it(lambda: tl.map(blocking_sleep, range(n_tasks))))
            record("blocking sleep: ThreadPoolExecutor() defaults",
                   time_it(lambda: list(ThreadPoolExecutor().map(blocking_sleep, range(n_tasks)))))
            for cap in (100, 2000):
                record(f"HTTP: taskloom amap workers={cap}",
                       time_it(lambda cap=cap: asyncio.run(_taskloom_http(server.url, n_tasks, cap))))
                record(f"HTTP: aiohttp + Semaphore({cap}) by hand",
                       time_it(lambda cap=cap: asyncio.run(_hand_http(server.url, n_tasks, cap))))
    tl.shutdown()

    med = {name: statistics.median(times) for name, times in rows.items()}
    ideal = n_tasks * LATENCY
    lines = [f"{n_tasks} tasks of {LATENCY * 1000:.0f} ms, median of {repeats}; sequential would take {ideal:.1f} s",
             "", "| contender | time | vs reference |", "|---|---|---|"]
    refs = {
        "sleep: taskloom async workers=100": "sleep: asyncio + Semaphore(100) by hand",
        "sleep: taskloom async workers=2000": "sleep: asyncio + Semaphore(2000) by hand",
        "HTTP: taskloom amap workers=100": "HTTP: aiohttp + Semaphore(100) by hand",
        "HTTP: taskloom amap workers=2000": "HTTP: aiohttp + Semaphore(2000) by hand",
        "blocking sleep: taskloom auto": "blocking sleep: ThreadPoolExecutor() defaults",
    }
    for name, seconds in med.items():
        ref = refs.get(name)
        versus = f"{seconds / med[ref]:.2f}x of {ref.split(': ', 1)[1]}" if ref else ""
        lines.append(f"| {name} | {seconds * 1000:.0f} ms | {versus} |")
    speedup = med["blocking sleep: ThreadPoolExecutor() defaults"] / med["blocking sleep: taskloom auto"]
    lines += ["", f"auto on a blocking sleep: {speedup:.1f}x faster than ThreadPoolExecutor() defaults (target >= 10x)"]
    for cap in (100, 2000):
        ratio = med[f"sleep: taskloom async workers={cap}"] / med[f"sleep: asyncio + Semaphore({cap}) by hand"]
        lines.append(f"taskloom async workers={cap} / asyncio+Semaphore({cap}): {ratio:.2f} (target <= 1.10)")
    text = "\n".join(lines)
    if not args.markdown:
        text = text.replace("|---|---|---|\n", "").replace("| ", "").replace(" |", "  ")
    print(text)


async def _gather(n_tasks: int) -> list[int]:
    return await asyncio.gather(*(async_sleep(n) for n in range(n_tasks)))


async def _taskloom_http(base: str, n_tasks: int, cap: int) -> list[int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        return await tl.amap(functools.partial(fetch, session, base), range(n_tasks), workers=cap)


async def _hand_http(base: str, n_tasks: int, cap: int) -> list[object]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        return await by_hand_semaphore(n_tasks, cap, lambda n: fetch(session, base, n))


if __name__ == "__main__":
    main()
