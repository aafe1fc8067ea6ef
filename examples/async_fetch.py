"""The guide's async fetching (aiohttp + asyncio.gather), done with taskloom.

The guide gathers every request at once. Ten thousand URLs need a cap on concurrency, and
flaky servers need retries: taskloom.amap gives both, on your own event loop (the coroutine
uses an asyncio stream here, so the example needs nothing beyond the stdlib and taskloom).
Run: python examples/async_fetch.py   (TASKLOOM_SMALL=1 for a test-sized run)
"""

from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import urlsplit

from local_server import serve

import taskloom as tl

N = 50 if os.environ.get("TASKLOOM_SMALL") else 1000
DELAY_MS = 100
CAP = 100


async def fetch(url: str) -> str:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(f"GET {parts.path} HTTP/1.0\r\nHost: {parts.hostname}\r\n\r\n".encode())
    await writer.drain()
    body = await reader.read()
    writer.close()
    await writer.wait_closed()
    return body.decode().split("<title>")[1].split("</title>")[0]


async def main(base: str) -> None:
    urls = [f"{base}/delay/{DELAY_MS}/{n}" for n in range(N)]
    t0 = time.perf_counter()
    titles = await tl.amap(fetch, urls, workers=CAP, retries=2, backoff=0.05, retry_on=OSError)
    elapsed = time.perf_counter() - t0
    assert titles == [f"page {n}" for n in range(N)]
    print(f"fetched {N} pages of {DELAY_MS} ms with at most {CAP} at once in {elapsed:.2f} s "
          f"(one by one: {N * DELAY_MS / 1000:.0f} s)")
    print("all titles correct")


if __name__ == "__main__":
    with serve() as base_url:
        asyncio.run(main(base_url))
