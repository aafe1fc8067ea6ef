"""Does mode="auto" pick well? Every fixed mode and auto, side by side, on eight workloads.

Run by hand (not a test): ``python benchmarks/auto.py [--quick] [--markdown] [--busy] [--write]``.

For each workload: the median time of sequential, threads, processes and auto (pools warm, repeats
interleaved across modes), and auto's time divided by the best fixed mode's, for a function mapped
again (auto reuses what it measured) and for one it has never seen (it measures first). The sleep workload
also has ``threads x200`` (what a user reaches for: ``ThreadPoolExecutor(200)``). Targets: auto
within 1.2x of the best (or 2 ms) on every workload; on tiny tasks, no slower than sequential by
more than 10% + 50 ms. ``--busy`` runs the same with one busy-looping process per usable CPU beside it (a
busy machine must not flip CPU work to threads); ``--write`` puts the table in
docs/benchmarks.md (section ``auto`` or ``auto_busy``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import multiprocessing
import os
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
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


def array_sum(array: Any) -> float:
    return float(array.sum())  # numpy releases the GIL in the reduction


def workloads(quick: bool) -> list[tuple[str, Callable[[Any], Any], list[Any]]]:
    import numpy as np

    scale = 1 if quick else 4
    return [
        ("pure-Python CPU", pure_python, [200_000] * (8 * scale)),
        ("16 CPU tasks of ~50 ms", pure_python, [500_000] * 16),
        ("sleep I/O (20 ms)", sleepy, [0.02] * (500 * scale)),
        ("GIL-releasing CPU (sha256)", gil_releasing, [os.urandom(4_000_000)] * (8 * scale)),
        ("numpy sum, 8 x 40 MB", array_sum, [np.random.default_rng(i).random(5_000_000) for i in range(8)]),
        ("tiny tasks (x*x)", tiny, list(range(50_000 * scale))),
        ("mixed I/O + CPU", mixed, [30_000] * (20 * scale)),
        ("large arguments (2 MB, trivial work)", large_argument, [bytes(2_000_000)] * (10 * scale)),
    ]


def fresh(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A copy of ``fn`` that auto has never measured (it remembers what it measured per function)."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = fn.__qualname__
    return copy


def timed(fn: Callable[[Any], Any], items: list[Any], mode: str) -> tuple[float, str]:
    workers = None
    if mode == "auto, first run":
        mode, fn = "auto", fresh(fn)
    if mode.startswith("threads x"):
        mode, workers = "threads", int(mode.removeprefix("threads x"))
    t0 = time.perf_counter()
    run = tl.imap(fn, items, mode=mode, workers=workers)
    list(run)
    chosen = f"{run.advice.mode} ({run.workers})" if run.advice is not None else mode
    return time.perf_counter() - t0, chosen


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def busy_cpus(n: int) -> Iterator[None]:
    """``n`` processes looping on a CPU each, for the duration."""
    spinners = [multiprocessing.get_context("spawn").Process(target=_spin, daemon=True) for _ in range(n)]
    for p in spinners:
        p.start()
    try:
        yield
    finally:
        for p in spinners:
            p.kill()
            p.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--busy", action="store_true", help="one busy-looping process per usable CPU beside")
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    with busy_cpus(usable_cpus() if args.busy else 0):
        rows = measure(args.quick, repeats)
    tl.shutdown()

    head = ["workload", "sequential", "threads", "processes", "auto", "auto, first run", "auto chose",
            "auto / best (first run)", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, med, best, chosen, ratio, target in rows:
        shown = ("sequential", "threads", "processes", "auto", "auto, first run")
        cells = [name] + [_cell(med, m, best) for m in shown]
        first = med["auto, first run"] / med[best]
        cells += [chosen, f"{ratio:.2f} ({first:.2f})", "met" if target else "MISSED"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    machine = f"{usable_cpus()} usable CPUs" + (f", {usable_cpus()} busy-looping processes beside" if args.busy else "")
    lines.append(f"median of {repeats}, pools warm, {machine}; * = best fixed mode; "
                 "threads x200 (sleep row) = a pool of 200 threads, as `ThreadPoolExecutor(200)`; "
                 "auto = the usual case of a function mapped again (auto reuses what it measured on the "
                 "function's first run); auto, first run = a function auto has never seen, so it measures first; "
                 "the target holds for both")
    text = "\n".join(lines)
    print(text if args.markdown or args.write else text.replace("|---", "").replace("| ", "").replace(" |", "  "))
    if args.write:
        from doc_sections import write_section

        title = "## mode=\"auto\" against every fixed mode" + (" (every CPU busy)" if args.busy else "")
        write_section("auto_busy" if args.busy else "auto",
                      f"{title}\n\n`python benchmarks/auto.py{' --busy' if args.busy else ''} --write`, "
                      f"{time.strftime('%Y-%m-%d')}.\n\n{text}")


def measure(quick: bool, repeats: int) -> list[tuple[str, dict[str, float], str, str, float, bool]]:
    rows = []
    for name, fn, items in workloads(quick):
        modes = ["sequential", "threads", "processes", "auto", "auto, first run"]
        if fn is sleepy:
            modes.insert(2, "threads x200")
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
        best_mode = min((m for m in modes if not m.startswith("auto")), key=lambda m: med[m])
        ratio = med["auto"] / med[best_mode]
        worst = max(med["auto"], med["auto, first run"])
        # A job over in a few ms cannot carry a decision's fixed cost (a thread start, a clock read) at 1.2x.
        target = (worst <= med["sequential"] * 1.1 + 0.05 if name.startswith("tiny")
                  else worst <= med[best_mode] * 1.2 or worst - med[best_mode] < 0.002)
        rows.append((name, med, best_mode, chosen, ratio, target))
        print(f"  {name}: auto / best {ratio:.2f}, first run {med['auto, first run'] / med[best_mode]:.2f}",
              file=sys.stderr, flush=True)
    return rows


def _cell(med: dict[str, float], mode: str, best: str) -> str:
    text = f"{med[mode] * 1000:.0f} ms" + (" *" if mode == best else "")
    if mode == "threads" and "threads x200" in med:
        star = " *" if best == "threads x200" else ""
        text += f" (x200: {med['threads x200'] * 1000:.0f} ms{star})"
    return text


if __name__ == "__main__":
    main()
