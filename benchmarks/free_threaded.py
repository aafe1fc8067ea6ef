"""Free-threaded Python: threads, processes and auto on 3.11 (GIL), 3.13t with the GIL and 3.13t without.

Run by hand (not a test), alone on the machine::

    make test-ft    # builds the free-threaded interpreter once (build/free-threaded/)
    flock /tmp/taskloom-bench.lock .venv/bin/python benchmarks/free_threaded.py [--quick] [--write]

Three workloads, each mapped with every mode on three interpreters: Python 3.11 (the GIL), the
free-threaded 3.13t with ``PYTHON_GIL=1`` (the GIL put back) and with ``PYTHON_GIL=0`` (none):

* pure-Python CPU: ``sum(i * i for i in range(n))``, sharing nothing between tasks;
* numpy (GIL-releasing): ``sqrt`` and ``sum`` over an array made in the task (ufuncs release the
  GIL on large arrays, so threads run them in parallel even on 3.11);
* shared dict updates: every task reads and rewrites entries of one module-level dict (a memo
  shared by all tasks: the result does not depend on which thread wrote an entry first).

Each interpreter runs in a child process of its own (``--child``, JSON on stdout). In each, the
modes take turns for ``--repeat`` rounds after one untimed warm-up each (pools warm; a mode 20x
slower than the fastest in the first round runs only once), and the table shows the median:
sequential, threads, processes, auto (a function auto measured before, the usual case), auto on a
function it has never seen (it measures first), what auto chose, the speed-up it measured for
threads (``thread_scaling_2`` without a GIL, the GIL probe's
``thread_speedup`` with one), and auto / best fixed mode. Target (issue 24): auto within 1.2x
of the best fixed mode on every workload on 3.13t without the GIL. ``--write`` puts the table
in docs/benchmarks.md (section ``free_threaded``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INTERPRETERS = [  # label, venv python (relative to the repository), PYTHON_GIL
    ("3.11 (GIL)", ".venv/bin/python", None),
    ("3.13t, PYTHON_GIL=1", "build/free-threaded/venv/bin/python", "1"),
    ("3.13t, PYTHON_GIL=0", "build/free-threaded/venv/bin/python", "0"),
]
MODES = ["sequential", "threads", "processes", "auto", "auto, first run"]
HOPELESS = 20  # a mode this many times slower than the fastest in the first round is not run again


# -- the workloads (run in the child) -------------------------------------------------------------------
def pure_python(n: int) -> int:
    return sum(i * i for i in range(n))


def numpy_work(n: int) -> float:
    import numpy as np

    x = np.arange(n, dtype=np.float64)
    np.sqrt(x, out=x)  # ufuncs release the GIL on large arrays
    return float(x.sum())


SHARED: dict[int, int] = {}


def shared_dict(n: int) -> int:
    """Reads and rewrites entries of one dict that every task (and thread) shares."""
    total = 0
    for i in range(n):
        key = i & 1023
        total += SHARED.get(key, key * key)
        SHARED[key] = key * key
    return total


def workloads(quick: bool) -> list[tuple[str, Callable[[Any], Any], list[Any]]]:
    scale = 1 if quick else 2
    return [
        ("pure-Python CPU", pure_python, [100_000] * (24 * scale)),
        ("numpy, GIL-releasing", numpy_work, [4_000_000] * (12 * scale)),
        ("shared dict updates", shared_dict, [200] * (1000 * scale)),
    ]


def _copies(fn: Callable[[Any], Any], count: int = 12) -> list[Callable[[Any], Any]]:
    """Copies of ``fn`` that auto has never measured (it remembers what it measured per function),
    made at import under names of their own, so that workers import them by name as well."""
    out = []
    for i in range(count):
        copy = types.FunctionType(fn.__code__, fn.__globals__, f"{fn.__name__}_copy{i}", fn.__defaults__)
        copy.__qualname__ = copy.__name__
        globals()[copy.__name__] = copy
        out.append(copy)
    return out


FRESH = {fn: _copies(fn) for fn in (pure_python, numpy_work, shared_dict)}


def fresh(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A copy of ``fn`` that auto has never measured."""
    return FRESH[fn].pop()


def timed(fn: Callable[[Any], Any], items: list[Any], mode: str) -> tuple[float, Any]:
    import taskloom as tl

    if mode == "auto, first run":
        mode, fn = "auto", fresh(fn)
    t0 = time.perf_counter()
    run = tl.imap(fn, items, mode=mode)
    list(run)
    return time.perf_counter() - t0, run.advice


def child(quick: bool, repeat: int) -> dict[str, Any]:
    """Every workload in every mode, here: medians, auto's choice and its thread reading."""
    import taskloom as tl

    out: dict[str, Any] = {"python": sys.version.split()[0],
                           "gil": getattr(sys, "_is_gil_enabled", lambda: True)(), "workloads": {}}
    for name, fn, items in workloads(quick):
        for mode in MODES:  # warm every pool (and auto's memo of fn)
            timed(fn, items[:8], mode)
        times: dict[str, list[float]] = {m: [] for m in MODES}
        chose, reading = "", None
        for round_ in range(repeat):
            for mode in MODES:
                if round_ and times[mode][0] > HOPELESS * min(t[0] for t in times.values()):
                    continue  # once is enough to show it (threads on shared dict updates, without a GIL)
                seconds, advice = timed(fn, items, mode)
                times[mode].append(seconds)
                if mode == "auto, first run" and advice is not None:
                    chose = f"{advice.mode} ({advice.workers})"
                    m = advice.measurements
                    reading = m.get("thread_scaling_2", m.get("thread_speedup"))
        out["workloads"][name] = {"median": {m: statistics.median(t) for m, t in times.items()},
                                  "runs": {m: len(t) for m, t in times.items()},
                                  "chose": chose, "threads_measured": reading}
        print(f"  {out['python']} gil={out['gil']} {name}: "
              + ", ".join(f"{m} {statistics.median(t) * 1000:.0f} ms" for m, t in times.items()), file=sys.stderr)
    tl.shutdown()
    return out


# -- the driver --------------------------------------------------------------------------------------------
def run_children(quick: bool, repeat: int) -> list[tuple[str, dict[str, Any]]]:
    results = []
    for label, python, gil in INTERPRETERS:
        exe = ROOT / python
        if not exe.exists():
            raise SystemExit(f"{label}: {exe} is missing (`make setup`, `make test-ft` build it)")
        env = dict(os.environ)
        env.pop("PYTHON_GIL", None)
        if gil is not None:
            env["PYTHON_GIL"] = gil
        # The child imports this file as the module `free_threaded`, so that the workers import the
        # tasks by name, as they would a project's own, instead of receiving them (and SHARED, a
        # global they use) pickled by value from a `__main__`.
        code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
                f"import free_threaded; free_threaded.main()")
        args = [str(exe), "-c", code, "--child", "--repeat", str(repeat)] + (["--quick"] * quick)
        print(f"{label}: {exe}", file=sys.stderr, flush=True)
        done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
        sys.stderr.write(done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"{label} failed (exit {done.returncode})")
        data = json.loads(done.stdout)
        if gil == "0" and data["gil"]:
            raise SystemExit(f"{label}: the GIL is on in the child; is this a free-threaded build?")
        results.append((label, data))
    return results


def table(results: list[tuple[str, dict[str, Any]]]) -> tuple[str, bool]:
    head = ["workload", "interpreter", "sequential", "threads", "processes", "auto", "auto, first run",
            "auto chose", "threads measured", "auto / best (first run)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    met = True
    names = list(results[0][1]["workloads"])
    for name in names:
        for label, data in results:
            w = data["workloads"][name]
            med = w["median"]
            best = min(("sequential", "threads", "processes"), key=lambda m: med[m])
            cells = [name, label]
            runs = w["runs"]
            cells += [_seconds(med[m]) + (" *" if m == best else "")
                      + (f" ({runs[m]} run)" if runs[m] < runs["sequential"] else "") for m in MODES]
            reading = w["threads_measured"]
            ratio, first = med["auto"] / med[best], med["auto, first run"] / med[best]
            if label.endswith("PYTHON_GIL=0"):
                met = met and max(ratio, first) <= 1.2
            cells += [w["chose"], "-" if reading is None else f"{reading:.2f}x", f"{ratio:.2f} ({first:.2f})"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), met


def _seconds(t: float) -> str:
    return f"{t:.1f} s" if t >= 10 else f"{t * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="half the tasks")
    parser.add_argument("--repeat", type=int, default=None, help="timed rounds (default 5, 3 with --quick)")
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeat = args.repeat or (3 if args.quick else 5)
    if args.child:
        json.dump(child(args.quick, repeat), sys.stdout)
        return
    started = time.perf_counter()
    results = run_children(args.quick, repeat)
    text, met = table(results)
    cpus = len(os.sched_getaffinity(0))
    versions = ", ".join(f"{label}: Python {data['python']}" for label, data in results)
    text += (f"\n\nmedian of {repeat}, pools warm, {cpus} usable CPUs ({versions}); * = best fixed mode; "
             "auto = a function auto measured before (the usual case of a function mapped again), auto, "
             "first run = one it has never seen; threads measured = 2 threads' speed-up over one that auto's "
             "probe read (without a GIL: `thread_scaling_2`; with one: the GIL probe's `thread_speedup`); "
             f"target: auto within 1.2x of the best on 3.13t without the GIL: {'met' if met else 'MISSED'}.")
    print(text)
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from doc_sections import write_section

        write_section("free_threaded", "## Free-threaded Python: 3.11, 3.13t with and without the GIL\n\n"
                      f"`python benchmarks/free_threaded.py --write`, {time.strftime('%Y-%m-%d')}.\n\n{text}")


if __name__ == "__main__":
    main()
