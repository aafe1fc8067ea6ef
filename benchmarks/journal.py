"""What ``journal=`` costs: the same map with and without a journal, and a resume of a finished one.

Workloads (threads, 4 workers; processes, 2):

* 100,000 tiny tasks (``x * x``): the worst case, one JSON line per microsecond-task;
* 2,000 tasks of 1 ms (``time.sleep``): a typical I/O-bound job;
* 200 tasks returning a 100 KB numpy array (not JSON: stored as base64 pickles).

Each contender runs in turn, round-robin, median of ``--repeat`` (5); each run journals into a
fresh file. "resume" is the same map again on the finished journal: nothing runs, every result
comes from the file. Run by hand (not a test): ``python benchmarks/journal.py [--repeat N] [--write]``;
``--write`` puts the table in docs/benchmarks.md (section ``journal``).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import taskloom as tl


def square(x: int) -> int:
    return x * x


def nap(_: int) -> None:
    time.sleep(0.001)


def array_of(x: int) -> Any:
    return np.full(12_800, float(x))  # 100 KB


WORKLOADS: list[tuple[str, Callable[[int], Any], int, str, int]] = [
    ("100,000 tiny tasks, threads", square, 100_000, "threads", 4),
    ("100,000 tiny tasks, processes", square, 100_000, "processes", 2),
    ("2,000 x 1 ms sleeps, threads x16", nap, 2_000, "threads", 16),
    ("200 x 100 KB numpy results, processes", array_of, 200, "processes", 2),
]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn, n, mode, workers in WORKLOADS:
            items = range(n)
            tl.map(fn, items, mode=mode, workers=workers)  # warm pools, outside the clock
            plain, journaled, resumed = [], [], []
            run = functools.partial(tl.map, fn, items, mode=mode, workers=workers)
            for r in range(args.repeat):
                path = os.path.join(tmp, f"{fn.__name__}-{mode}-{r}.jsonl")
                plain.append(timed(run))
                journaled.append(timed(functools.partial(run, journal=path)))
                resumed.append(timed(functools.partial(run, journal=path)))  # everything is recorded now
                size = os.path.getsize(path)
            p, j, s = (statistics.median(x) for x in (plain, journaled, resumed))
            rows.append((name, p, j, s, size))
            print(f"  {name}: plain {p * 1e3:.1f} ms, journal {j * 1e3:.1f} ms ({j / p:.2f}x), "
                  f"resume {s * 1e3:.1f} ms, file {size / 1e6:.1f} MB", flush=True)
    tl.shutdown()
    lines = [
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {args.repeat}, round-robin.",
        "",
        "| workload | no journal | with a journal | ratio | resume (all recorded) | journal size |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, p, j, s, size in rows:
        lines.append(f"| {name} | {p * 1e3:.1f} ms | {j * 1e3:.1f} ms | {j / p:.2f}x | {s * 1e3:.1f} ms | "
                     f"{size / 1e6:.1f} MB |")
    text = "\n".join(lines)
    print("\n" + text)
    if args.write:
        sys.path.insert(0, os.path.dirname(__file__))
        from doc_sections import write_section

        write_section("journal", "## What a journal costs\n\n"
                      f"`python benchmarks/journal.py --write`, {time.strftime('%Y-%m-%d')}.\n\n{text}")


if __name__ == "__main__":
    main()
