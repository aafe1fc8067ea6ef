"""A long stream through a process pool: time and the parent's extra memory, taskloom against the stdlib.

Run by hand (not a test): ``python benchmarks/streaming.py [--items N] [--write]``.

2,000,000 ints from a generator (no length: nothing can be sized up front), squared in worker
processes, results consumed one by one. Each contender runs in a fresh interpreter, round-robin,
three times; the figure is the median. Memory is the peak resident size of the parent above its
size before the stream (sampled every 10 ms), so what the pool keeps in flight shows, not the
interpreter. ``--write`` puts the table in docs/benchmarks.md (section ``streaming``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, threading, time
import psutil
sys.path.insert(0, {src!r})

def square(x):
    return x * x

def stream(n):
    for i in range(n):
        yield i

def measure(consume):
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def watch():
        while not stop.wait(0.01):
            peak[0] = max(peak[0], proc.memory_info().rss)

    watcher = threading.Thread(target=watch)
    watcher.start()
    t0 = time.perf_counter()
    count = consume()
    seconds = time.perf_counter() - t0
    stop.set()
    watcher.join()
    assert count == N, count
    return seconds, (peak[0] - base) / 2**20

N = {n}
if __name__ == "__main__":
    which = sys.argv[1]
    if which == "taskloom":
        import taskloom as tl
        tl.map(square, range(100), mode="processes")  # the pool starts outside the clock
        out = measure(lambda: sum(1 for _ in tl.imap(square, stream(N), mode="processes")))
        tl.shutdown()
    else:
        import multiprocessing
        with multiprocessing.get_context("forkserver").Pool(2) as pool:
            pool.map(square, range(100))
            out = measure(lambda: sum(1 for _ in pool.imap(square, stream(N), chunksize=1000)))
    print(json.dumps(out))
"""

CONTENDERS = {"taskloom": "taskloom imap, mode=\"processes\"", "stdlib": "multiprocessing Pool.imap(chunksize=1000)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    script = Path("/tmp") / f"taskloom_streaming_{args.items}.py"
    script.write_text(CHILD.format(src=str(ROOT / "src"), n=args.items))
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CONTENDERS}
    for _ in range(args.repeats):
        for name in CONTENDERS:
            out = subprocess.run([sys.executable, str(script), name], capture_output=True, text=True, timeout=600,
                                 check=True)
            results[name].append(tuple(json.loads(out.stdout.strip().splitlines()[-1])))
    rows = ["| contender | time | per item | parent's extra memory (peak) |", "|---|---|---|---|"]
    for name, label in CONTENDERS.items():
        seconds = statistics.median(r[0] for r in results[name])
        memory = statistics.median(r[1] for r in results[name])
        rows.append(f"| {label} | {seconds:.2f} s | {seconds / args.items * 1e6:.2f} us | +{memory:.1f} MB |")
    ratio = statistics.median(r[0] for r in results["taskloom"]) / statistics.median(r[0] for r in results["stdlib"])
    text = "\n".join(rows) + (f"\n\n{args.items:,} ints from a generator, 2 workers, median of {args.repeats} "
                              f"fresh interpreters each, round-robin; taskloom / stdlib time: {ratio:.2f}")
    print(text)
    if args.write:
        from doc_sections import write_section

        write_section("streaming", "## A long stream through a process pool\n\n"
                      f"`python benchmarks/streaming.py --write`, {time.strftime('%Y-%m-%d')}.\n\n{text}")


if __name__ == "__main__":
    main()
