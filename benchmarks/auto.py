"""Does mode="auto" pick well? Every fixed mode and auto, side by side, on six workloads.

Run by hand (not a test): ``python benchmarks/auto.py [--quick] [--markdown]``.

For each workload: the median time of sequential, threads, processes and auto (pools warm, repeats
interleaved across modes), and auto's time divided by the best fixed mode's. Targets: auto within
1.2x of the best on every workload; on tiny tasks, no slower than sequential by more than
10% + 50 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import taskloom as tl
from taskloom._system import usable_cpus


def pure_python(n: int) -> int:
    return sum(i * i for i in range(n))


def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def gil_releasing(data: bytes) -> str:
    h = hashlib.sha256()
    h.update(data)  # releases the GIL for large buffers (the constructor with data does not, on 3.11)
    return h.hexdigest()


def tiny(x: int) -> int:
    return x * x


def mixed(n: int) -> int:
    time.sleep(0.005)
    return sum(i * i for i in range(n))


def large_argument(block: bytes) -> int:
    return len(block) + block[-1]


def workloads(quick: bool) -> list[tuple[str, Callable[[Any], Any], list[Any]]]:
    scale = 1 if quick else 4
    return [
        ("pure-Python CPU", pure_python, [200_000] * (8 * scale)),
        ("sleep I/O (20 ms)", sleepy, [0.02] * (50 * scale)),
        ("GIL-releasing CPU (sha256)", gil_releasing, [os.urandom(4_000_000)] * (8 * scale)),
        ("tiny tasks (x*x)", tiny, list(range(50_000 * scale))),
        ("mixed I/O + CPU", mixed, [30_000] * (20 * scale)),
        ("large arguments (2 MB, trivial work)", large_argument, [bytes(2_000_000)] * (10 * scale)),
    ]


def timed(fn: Callable[[Any], Any], items: list[Any], mode: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    run = tl.imap(fn, items, mode=mode)
    list(run)
    chosen = run.advice.mode if run.advice is not None else mode
    return time.perf_counter() - t0, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    modes = ["sequential", "threads", "processes", "auto"]
    rows = []
    for name, fn, items in workloads(args.quick):
        for mode in modes:  # warm every pool (auto's first sample is then representative)
            timed(fn, items[:4], mode)
        times: dict[str, list[float]] = {m: [] for m in modes}
        chosen = ""
        for _ in range(repeats):
            for mode in modes:
                seconds, picked = timed(fn, items, mode)
                times[mode].append(seconds)
                if mode == "auto":
                    chosen = picked
        med = {m: statistics.median(t) for m, t in times.items()}
        best_mode = min((m for m in modes if m != "auto"), key=lambda m: med[m])
        ratio = med["auto"] / med[best_mode]
        target = med["auto"] <= med["sequential"] * 1.1 + 0.05 if name.startswith("tiny") else ratio <= 1.2
        rows.append((name, med, best_mode, chosen, ratio, target))
    tl.shutdown()

    head = ["workload", *modes, "auto chose", "auto / best", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, med, best, chosen, ratio, target in rows:
        cells = [name] + [f"{med[m] * 1000:.0f} ms" + (" *" if m == best else "") for m in modes]
        cells += [chosen, f"{ratio:.2f}", "met" if target else "MISSED"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"median of {repeats}, pools warm, {usable_cpus()} usable CPUs; * = best fixed mode")
    text = "\n".join(lines)
    print(text if args.markdown else text.replace("|---", "").replace("| ", "").replace(" |", "  "))


if __name__ == "__main__":
    main()
