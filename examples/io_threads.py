"""The guide's "threads for I/O" (fetch_url), done with taskloom.

The guide fetches on ThreadPoolExecutor(max_workers=5), a number picked by hand. taskloom sizes
the thread pool from the measured wait (mode="auto"), keeps exceptions, and stops the threads
when it is done.
Run: python examples/io_threads.py   (TASKLOOM_SMALL=1 for a test-sized run)
"""

from __future__ import annotations

import os
import re
import time
import urllib.request

from local_server import serve

import taskloom as tl

N = 20 if os.environ.get("TASKLOOM_SMALL") else 200
DELAY_MS = 50


def fetch_title(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        html = response.read().decode()
    match = re.search(r"<title>(.*?)</title>", html)
    return match.group(1) if match else ""


def main() -> None:
    with serve() as base:
        urls = [f"{base}/delay/{DELAY_MS}/{n}" for n in range(N)]
        t0 = time.perf_counter()
        first = fetch_title(urls[0])
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        run = tl.imap(fetch_title, urls)
        titles = list(run)
        elapsed = time.perf_counter() - t0
    assert first == "page 0"
    assert titles == [f"page {n}" for n in range(N)]
    print(f"fetched {N} pages of {DELAY_MS} ms each in {elapsed:.2f} s (one by one: ~{N * one:.1f} s)")
    print(f"auto chose {run.advice.mode} x{run.workers}: {run.advice.reasons[-1]}")
    print("all titles correct")


if __name__ == "__main__":
    main()
