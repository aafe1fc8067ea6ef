"""taskloom's process mode against the stdlib pools and joblib, side by side, in one run.

Run by hand (not a test)::

    python benchmarks/overhead.py              # the full run, a few minutes
    python benchmarks/overhead.py --quick      # fewer repeats and items
    python benchmarks/overhead.py --markdown   # the tables as Markdown, for docs/performance.md

Two workloads, the same for every method, every answer checked:

(a) 200,000 tiny tasks (``x * x``): what a pool costs per task when the work is nothing;
(b) 16 CPU-bound tasks of about 0.1 s each (the loop count is calibrated at start): how close each
    method gets to a perfect speedup on the usable CPUs.

Each method is timed two ways, reported apart:

* warm: the pool is created before timing and reused; median (min-max) of 5 timed calls, taken in
  turn across the methods so that outside load slows all of them alike;
* cold: pool start-up plus the first call (the pool is shut down afterwards, untimed).

Workers = usable CPUs for every method. The stdlib pools are given the same start method as
taskloom (forkserver on Linux, Python 3.14's default there), so that the pools' own machinery is
compared rather than fork against forkserver; joblib uses its own (loky). ProcessPoolExecutor's
default chunksize=1 sends one task per message, so on (a) it runs on fewer items (labelled).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import taskloom
from taskloom._system import usable_cpus

# Module level, so every pool's worker processes can import them by reference. Heavy imports
# (joblib) happen inside functions: forkserver/spawn workers re-import this module, and a slow
# import would be charged to the stdlib pools' cold start.


def square(x: int) -> int:
    """The tiny task of workload (a)."""
    return x * x


def spin(n: int) -> int:
    """The CPU-bound task of workload (b): the guide's ``cpu_task``, pure Python, holds the GIL."""
    return sum(i * i for i in range(n))


TARGET_SECONDS = 0.1  # one CPU-bound task, run sequentially


def calibrate() -> tuple[int, float]:
    """The loop count that makes one ``spin`` take about ``TARGET_SECONDS``, and its measured time."""
    n = 20_000
    while True:
        t0 = time.perf_counter()
        spin(n)
        elapsed = time.perf_counter() - t0
        if elapsed > 0.02:
            break
        n *= 2
    n = int(n * TARGET_SECONDS / elapsed)
    # One refinement at full size: a short first measurement on a busy machine is often off by 20%.
    for refine in (True, False):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            spin(n)
            times.append(time.perf_counter() - t0)
        if refine:
            n = int(n * TARGET_SECONDS / statistics.median(times))
    return n, statistics.median(times)


# -- the methods ---------------------------------------------------------------------------------------


@dataclass
class Method:
    """One way of mapping a function over items on worker processes."""

    name: str
    start: str
    open: Callable[[], Any]
    run: Callable[[Any, Callable[[Any], Any], list[Any]], list[Any]]
    close: Callable[[Any], None]
    max_items: int | None = None  # run on at most this many items (slow methods on tiny tasks)
    role: str = "peer"  # "baseline" (sequential), "taskloom", or "peer"


def _chunksize(n_items: int, workers: int) -> int:
    # multiprocessing.Pool.map's own default: about four chunks per worker.
    return max(1, math.ceil(n_items / (4 * workers)))


def make_methods(workers: int, start: str, ppe_chunk1_items: int) -> list[Method]:
    """Every method, the sequential baseline first."""
    ctx = multiprocessing.get_context(start)

    def tl_run(_: Any, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return taskloom.map(fn, items, mode=taskloom.Processes(start_method=start), workers=workers)

    def pool_open() -> Any:
        return ctx.Pool(workers)

    def pool_close(pool: Any) -> None:
        pool.terminate()
        pool.join()

    def ppe_open() -> Any:
        return ProcessPoolExecutor(workers, mp_context=ctx)

    def ppe_run(chunk1: bool) -> Callable[[Any, Callable[[Any], Any], list[Any]], list[Any]]:
        def run(ex: Any, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
            size = 1 if chunk1 else _chunksize(len(items), workers)
            return list(ex.map(fn, items, chunksize=size))

        return run

    def joblib_open() -> Any:
        from joblib import Parallel

        parallel = Parallel(n_jobs=workers)
        parallel.__enter__()
        return parallel

    def joblib_run(parallel: Any, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        from joblib import delayed

        return list(parallel(delayed(fn)(x) for x in items))

    def joblib_close(parallel: Any) -> None:
        from joblib.externals.loky import get_reusable_executor

        parallel.__exit__(None, None, None)
        # joblib keeps its loky workers for reuse across Parallel calls: end them, so that the
        # next cold start is really cold.
        get_reusable_executor().shutdown(wait=True)

    return [
        Method("sequential (list(map))", "-", lambda: None, lambda _, fn, items: list(map(fn, items)),
               lambda _: None, role="baseline"),
        Method("taskloom processes", start, lambda: None, tl_run, lambda _: taskloom.shutdown(), role="taskloom"),
        Method("multiprocessing.Pool.map", start, pool_open, lambda p, fn, items: p.map(fn, items), pool_close),
        Method("ProcessPoolExecutor.map (chunksize ~n/4w)", start, ppe_open, ppe_run(False),
               lambda ex: ex.shutdown()),
        Method("ProcessPoolExecutor.map (chunksize=1)", start, ppe_open, ppe_run(True), lambda ex: ex.shutdown(),
               max_items=ppe_chunk1_items),
        Method("joblib Parallel/delayed", "loky", joblib_open, joblib_run, joblib_close),
    ]


# -- timing --------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """One method on one workload."""

    method: Method
    items: int
    warm: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)

    @property
    def warm_median(self) -> float:
        return statistics.median(self.warm)

    @property
    def cold_median(self) -> float:
        return statistics.median(self.cold)

    def per_task(self, seconds: float) -> float:
        return seconds / self.items


def _checked(method: Method, handle: Any, fn: Callable[[Any], Any], items: list[Any],
             expected: list[Any]) -> float:
    t0 = time.perf_counter()
    results = method.run(handle, fn, items)
    elapsed = time.perf_counter() - t0
    if results != expected:
        raise AssertionError(f"{method.name!r} returned wrong results for {fn.__name__!r}")
    return elapsed


def measure(methods: Sequence[Method], fn: Callable[[Any], Any], items: list[Any], *, repeat: int,
            cold_repeat: int, label: str) -> list[Timing]:
    """Cold runs first (each method started, run once, shut down), then warm runs in turn."""
    expected_full = [fn(x) for x in items]
    timings = [Timing(m, min(len(items), m.max_items or len(items))) for m in methods]

    def inputs(t: Timing) -> tuple[list[Any], list[Any]]:
        return items[:t.items], expected_full[:t.items]

    for i in range(cold_repeat):
        for t in timings:
            print(f"  {label}: cold {i + 1}/{cold_repeat} {t.method.name}", file=sys.stderr, flush=True)
            some, want = inputs(t)
            t0 = time.perf_counter()
            handle = t.method.open()
            _checked(t.method, handle, fn, some, want)
            t.cold.append(time.perf_counter() - t0)
            t.method.close(handle)
    handles = []
    for t in timings:  # open every pool and warm it with one untimed call
        handle = t.method.open()
        some, want = inputs(t)
        _checked(t.method, handle, fn, some, want)
        handles.append(handle)
    try:
        for i in range(repeat):
            print(f"  {label}: warm {i + 1}/{repeat}", file=sys.stderr, flush=True)
            for t, handle in zip(timings, handles, strict=True):
                some, want = inputs(t)
                t.warm.append(_checked(t.method, handle, fn, some, want))
    finally:
        for t, handle in zip(timings, handles, strict=True):
            t.method.close(handle)
    return timings


# -- tables --------------------------------------------------------------------------------------------


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    """A table as aligned text or as Markdown (numbers right-aligned in both)."""
    numeric = [i > 1 for i in range(len(headers))]
    widths = [max(len(c) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)]
        return ("| " + " | ".join(parts) + " |") if markdown else "  ".join(parts).rstrip()

    if markdown:
        rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                              for w, num in zip(widths, numeric, strict=True)) + "|"
    else:
        rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _spread(values: list[float], scale: float, fmt: str) -> str:
    med, lo, hi = (statistics.median(values) * scale, min(values) * scale, max(values) * scale)
    return f"{med:{fmt}} ({lo:{fmt}}-{hi:{fmt}})"


def _role(timings: list[Timing], role: str) -> Timing:
    return next(t for t in timings if t.method.role == role)


def _ratio_line(timings: list[Timing], key: Callable[[Timing], float], what: str) -> str:
    mine = _role(timings, "taskloom")
    peers = [t for t in timings if t.method.role == "peer"]
    best = min(peers, key=key)
    return (f"taskloom / fastest peer ({best.method.name}), {what}: {key(mine) / key(best):.2f}"
            " (below 1: taskloom is faster)")


def tiny_table(timings: list[Timing], markdown: bool) -> str:
    """Workload (a): microseconds per task, warm and cold."""
    headers = ("method", "start", "items", "warm us/task, median (min-max)", "warm total", "cold total",
               "vs taskloom (warm)")
    mine = _role(timings, "taskloom")
    rows = []
    for t in timings:
        per = [x / t.items for x in t.warm]
        rows.append((
            t.method.name, t.method.start, f"{t.items:,}", _spread(per, 1e6, ".3f"),
            f"{t.warm_median * 1e3:.1f} ms", f"{t.cold_median * 1e3:.0f} ms",
            f"{t.per_task(t.warm_median) / mine.per_task(mine.warm_median):.2f}x",
        ))

    def per_task(t: Timing) -> float:
        return t.per_task(t.warm_median)

    def cold_per_task(t: Timing) -> float:
        return t.per_task(t.cold_median)

    return "\n".join([
        render(headers, rows, markdown), "",
        _ratio_line(timings, per_task, "warm, per task"),
        _ratio_line(timings, cold_per_task, "cold, per task"),
    ])


def cpu_table(timings: list[Timing], cpus: int, markdown: bool) -> str:
    """Workload (b): speedup over sequential and efficiency against the usable CPUs."""
    headers = ("method", "start", "warm s, median (min-max)", "speedup", "efficiency", "cold s",
               "cold speedup")
    base = _role(timings, "baseline")
    rows = []
    for t in timings:
        speedup = base.warm_median / t.warm_median
        rows.append((
            t.method.name, t.method.start, _spread(t.warm, 1.0, ".3f"), f"{speedup:.2f}x",
            f"{100 * speedup / cpus:.0f}%", f"{t.cold_median:.3f}", f"{base.warm_median / t.cold_median:.2f}x",
        ))
    return "\n".join([
        render(headers, rows, markdown), "",
        _ratio_line(timings, lambda t: t.warm_median, "warm"),
        _ratio_line(timings, lambda t: t.cold_median, "cold"),
    ])


def start_forkserver(start: str) -> None:
    """Start the forkserver before any timing: it is started once per Python process and shared
    by every pool that uses it, so whichever method ran first would otherwise pay for it alone.

    It is started through taskloom, which asks it to preload ``__main__`` and taskloom's worker
    module; the stdlib pools' workers, forked from the same server, benefit from that too.
    """
    if start == "forkserver":
        taskloom.map(square, range(4), mode=taskloom.Processes(start_method=start), workers=1)
        taskloom.shutdown()


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on this platform
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Run both workloads on every method and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and items")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = parser.parse_args(argv)

    workers = usable_cpus()
    start = taskloom.Processes().resolved_start_method
    repeat, cold_repeat = (3, 1) if args.quick else (5, 3)
    n_tiny, n_chunk1, n_cpu = (50_000, 2_000, 8) if args.quick else (200_000, 10_000, 16)
    load_before = _load()
    start_forkserver(start)
    loops, one_task = calibrate()
    methods = make_methods(workers, start, n_chunk1)

    print(f"(a) {n_tiny:,} tiny tasks", file=sys.stderr)
    tiny = measure(methods, square, list(range(n_tiny)), repeat=repeat, cold_repeat=cold_repeat, label="(a)")
    print(f"(b) {n_cpu} CPU-bound tasks", file=sys.stderr)
    cpu = measure(methods, spin, [loops] * n_cpu, repeat=repeat, cold_repeat=cold_repeat, label="(b)")

    h = "### " if args.markdown else ""
    print(f"{h}taskloom {taskloom.__version__} overhead benchmark")
    print()
    print(f"Python {sys.version.split()[0]} on {sys.platform}, {workers} usable CPUs, workers = {workers} "
          f"for every method; stdlib pools on start method {start!r}, joblib on loky. Warm: pool created "
          f"first and reused, median (min-max) of {repeat} runs taken in turn across the methods. Cold: "
          f"pool start-up + first call (the shared forkserver already running), median of {cold_repeat}. "
          f"Load average (1, 5, 15 min) before: {load_before}; after: {_load()}.")
    print()
    print(f"{h}(a) {n_tiny:,} tiny tasks (x * x): cost per task")
    print()
    print(tiny_table(tiny, args.markdown))
    print()
    print(f"{h}(b) {n_cpu} CPU-bound tasks of {one_task * 1e3:.0f} ms each (spin({loops:,}), "
          f"{n_cpu * one_task:.2f} s sequentially): speedup on {workers} CPUs")
    print()
    print(cpu_table(cpu, workers, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
