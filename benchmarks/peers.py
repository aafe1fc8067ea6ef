"""taskloom against its peers on the bench's workloads, side by side, in one run; writes docs/benchmarks.md.

Run by hand (not a test)::

    python benchmarks/peers.py                # full size, 5 repeats: a few minutes; writes docs/benchmarks.md
    python benchmarks/peers.py --quick        # quick size, 3 repeats, about a minute
    python benchmarks/peers.py --no-write     # print the Markdown instead of writing the file

It rewrites only its own section of the page (``<!-- begin: peers -->`` to ``<!-- end: peers -->``,
see ``doc_sections.py``): the sections of the other scripts (``joblib_backend.py``) stay.

The workloads are ``taskloom bench``'s own (``taskloom._bench.WORKLOADS``), every answer checked
by the workload's check. Each library gets the engine a competent user would pick for the work:

* CPU-bound workloads (cpu, fib, tiny, array, array-shared): process pools of ``usable CPUs`` workers. The
  stdlib pools, pebble and mpire use the forkserver start method, as taskloom does (fork against
  forkserver would compare start methods, not pools); joblib uses its own loky. Chunked APIs get
  the stdlib's ``multiprocessing.Pool`` default of about four chunks per worker
  (``ProcessPoolExecutor`` and pebble default to one item per message, which no one should use
  for 100,000 tiny tasks); mpire and joblib keep their own automatic batching.
* I/O-bound workloads (io, mixed): thread pools of 32 threads (joblib ``prefer="threads"``,
  mpire ``start_method="threading"``, ``multiprocessing.pool.ThreadPool``, ``ThreadPoolExecutor``,
  pebble ``ThreadPool``).
* ``array-shared`` hands every library the same ``(taskloom.SharedArray, lo, hi)`` items: it shows
  what sharing the array buys over ``array``, and that any pool can use a SharedArray.
* Dask: a ``distributed.LocalCluster(processes=True, n_workers=usable CPUs)`` on 127.0.0.1 (no
  dashboard), one thread per worker for CPU-bound work and 32 threads in all for I/O-bound work;
  ``client.map`` over chunks (the same chunking as the stdlib; numpy blocks scattered first, as
  Dask advises) with ``pure=False`` (Dask would otherwise compute identical inputs once and share
  the result).

Every pool is created and warmed with one untimed call before timing, and the timed calls go round
the methods in turn (the starting method rotating each round), so outside load slows all alike.
Reported: median (min-max) of the timed calls, and each method's ratio to the fastest method.
taskloom's like-for-like row (same engine, same workers) is the one held to the target: the
fastest, or within 10% of it. ``taskloom auto`` (taskloom chooses), ``taskloom async`` (the
workload's ``async def`` twin) and ``taskloom dask`` (taskloom's Dask mode, once taskloom has it:
its own embedded cluster) are extra rows, for information.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import logging
import math
import multiprocessing
import multiprocessing.pool
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doc_sections import DOC, write_section

import taskloom
from taskloom._bench import WORKLOADS, Size, Workload, describe, machine_info
from taskloom._modes import MODE_NAMES
from taskloom._system import usable_cpus

# Heavy imports (joblib, mpire, pebble, distributed) happen inside functions: forkserver workers
# import this module as their __main__, and a slow import here would be paid by every worker.

THREADS = 32  # workers of every thread pool (and of the I/O-bound Dask cluster, in all)
TARGET = 1.10  # taskloom's like-for-like row must be within 10% of the fastest


def _chunksize(n_items: int, workers: int) -> int:
    # multiprocessing.Pool.map's own default: about four chunks per worker.
    return max(1, math.ceil(n_items / (4 * workers)))


def _run_chunk(fn: Callable[[Any], Any], chunk: list[Any]) -> list[Any]:
    """Dask's task: one chunk of items (Dask has no chunked map of its own on futures)."""
    return [fn(x) for x in chunk]


# -- the methods ---------------------------------------------------------------------------------------


@dataclass
class Method:
    """One way of mapping a function over items: open a pool, run on it, close it."""

    library: str
    engine: str
    workers: int
    open: Callable[[], Any]
    run: Callable[[Any, Workload, list[Any]], list[Any]]
    close: Callable[[Any], None]
    role: str = "peer"  # "taskloom" (held to the target), "extra" (taskloom, for information), "baseline"


def _sequential() -> Method:
    return Method("sequential", "list(map)", 1, lambda: None, lambda _, w, items: [w.fn(x) for x in items],
                  lambda _: None, role="baseline")


def _taskloom(mode: str, workers: int, *, role: str = "taskloom", label: str | None = None) -> Method:
    def run(_: Any, w: Workload, items: list[Any]) -> list[Any]:
        fn = w.async_fn if mode == "async" else w.fn
        assert fn is not None
        return taskloom.map(fn, items, mode=mode, workers=None if mode == "auto" else workers)

    return Method(label or "taskloom", mode, workers, lambda: None, run, lambda _: taskloom.shutdown(), role=role)


def _dask(workers: int, threads_per_worker: int, chunked: bool) -> Method:
    def open_() -> Any:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                               host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR)
        return Client(cluster), cluster

    def run(handle: Any, w: Workload, items: list[Any]) -> list[Any]:
        client = handle[0]
        size = _chunksize(len(items), workers) if chunked else 1
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        # Large data (numpy blocks) is scattered first, as Dask advises (in the task graph it would
        # warn); small items go as arguments: scattering a list of ints is slower, not faster.
        data = client.scatter(chunks) if getattr(items[0], "nbytes", 0) > 1_000_000 else chunks
        futures = client.map(functools.partial(_run_chunk, w.fn), data, pure=False)
        return [x for chunk in client.gather(futures) for x in chunk]

    def close(handle: Any) -> None:
        client, cluster = handle
        client.close()
        cluster.close()

    engine = f"LocalCluster {workers}x{threads_per_worker} thread{'s' if threads_per_worker > 1 else ''}"
    return Method("dask", engine, workers * threads_per_worker, open_, run, close)


def process_methods(workers: int, start: str) -> list[Method]:
    """Every method for CPU-bound work, on process pools of ``workers``."""
    ctx = multiprocessing.get_context(start)

    def pool_close(pool: Any) -> None:
        pool.terminate()
        pool.join()

    def ppe_run(ex: Any, w: Workload, items: list[Any]) -> list[Any]:
        return list(ex.map(w.fn, items, chunksize=_chunksize(len(items), workers)))

    def pebble_open() -> Any:
        from pebble import ProcessPool

        return ProcessPool(max_workers=workers, context=ctx)

    def pebble_run(pool: Any, w: Workload, items: list[Any]) -> list[Any]:
        return list(pool.map(w.fn, items, chunksize=_chunksize(len(items), workers)).result())

    def pebble_close(pool: Any) -> None:
        pool.stop()
        pool.join()

    def mpire_open() -> Any:
        from mpire import WorkerPool

        return WorkerPool(n_jobs=workers, start_method=start, keep_alive=True)

    def joblib_open() -> Any:
        from joblib import Parallel

        parallel = Parallel(n_jobs=workers)
        parallel.__enter__()
        return parallel

    def joblib_close(parallel: Any) -> None:
        from joblib.externals.loky import get_reusable_executor

        parallel.__exit__(None, None, None)
        get_reusable_executor().shutdown(wait=True)  # loky keeps its workers for reuse: end them

    return [
        _taskloom("processes", workers),
        Method("multiprocessing", f"Pool.map, {start}", workers, lambda: ctx.Pool(workers),
               lambda p, w, items: p.map(w.fn, items), pool_close),
        Method("concurrent.futures", f"ProcessPoolExecutor.map, {start}, chunked", workers,
               lambda: ProcessPoolExecutor(workers, mp_context=ctx), ppe_run, lambda ex: ex.shutdown()),
        Method("joblib", "Parallel, loky", workers, joblib_open, _joblib_run, joblib_close),
        Method("mpire", f"WorkerPool, {start}", workers, mpire_open, _mpire_run, lambda p: p.terminate()),
        Method("pebble", f"ProcessPool, {start}, chunked", workers, pebble_open, pebble_run, pebble_close),
        _dask(workers, 1, chunked=True),
    ]


def thread_methods(workers: int, cpus: int) -> list[Method]:
    """Every method for I/O-bound work, on thread pools of ``workers``."""

    def pebble_open() -> Any:
        from pebble import ThreadPool

        return ThreadPool(max_workers=workers)

    def pebble_close(pool: Any) -> None:
        pool.stop()
        pool.join()

    def mpire_open() -> Any:
        from mpire import WorkerPool

        return WorkerPool(n_jobs=workers, start_method="threading", keep_alive=True)

    def joblib_open() -> Any:
        from joblib import Parallel

        parallel = Parallel(n_jobs=workers, prefer="threads")
        parallel.__enter__()
        return parallel

    def pool_close(pool: Any) -> None:
        pool.terminate()
        pool.join()

    return [
        _taskloom("threads", workers),
        Method("multiprocessing", "pool.ThreadPool.map", workers, lambda: multiprocessing.pool.ThreadPool(workers),
               lambda p, w, items: p.map(w.fn, items), pool_close),
        Method("concurrent.futures", "ThreadPoolExecutor.map", workers, lambda: ThreadPoolExecutor(workers),
               lambda ex, w, items: list(ex.map(w.fn, items)), lambda ex: ex.shutdown()),
        Method("joblib", "Parallel, threads", workers, joblib_open, _joblib_run,
               lambda p: p.__exit__(None, None, None)),
        Method("mpire", "WorkerPool, threading", workers, mpire_open, _mpire_run, lambda p: p.terminate()),
        Method("pebble", "ThreadPool", workers, pebble_open,
               lambda p, w, items: list(p.map(w.fn, items).result()), pebble_close),
        _dask(cpus, max(1, workers // cpus), chunked=False),
    ]


def _joblib_run(parallel: Any, w: Workload, items: list[Any]) -> list[Any]:
    from joblib import delayed

    return list(parallel(delayed(w.fn)(x) for x in items))


def _mpire_run(pool: Any, w: Workload, items: list[Any]) -> list[Any]:
    # 1-tuples: mpire unpacks an iterable item into arguments (a URL string would not be, but a
    # (shared, lo, hi) item would); its default numpy concatenation is off as results are floats.
    return list(pool.map(w.fn, [(x,) for x in items], concatenate_numpy_output=False))


def methods_for(workload: Workload, cpus: int, start: str) -> list[Method]:
    """The sequential baseline, taskloom like-for-like, the peers, then taskloom's extra rows."""
    if workload.io_bound:
        methods = thread_methods(THREADS, cpus)
        workers = THREADS
    else:
        methods = process_methods(cpus, start)
        workers = cpus
    extras = [_taskloom("auto", workers, role="extra", label="taskloom auto")]
    if workload.async_fn is not None:
        extras.append(_taskloom("async", workers, role="extra", label="taskloom async"))
    if "dask" in MODE_NAMES:  # once taskloom has mode="dask" (a later issue), it joins as an extra row
        extras.append(_taskloom("dask", workers, role="extra", label="taskloom dask"))
    return [_sequential(), *methods, *extras]


# -- timing --------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """One method on one workload."""

    method: Method
    times: list[float] = field(default_factory=list)
    error: str | None = None
    tasks: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times and self.error is None else math.inf


def _checked(method: Method, handle: Any, workload: Workload, items: list[Any]) -> float:
    t0 = time.perf_counter()
    results = method.run(handle, workload, items)
    elapsed = time.perf_counter() - t0
    workload.check(items, results)
    return elapsed


def measure(workload: Workload, methods: Sequence[Method], size: Size, repeat: int) -> list[Timing]:
    """Open and warm every method, then ``repeat`` rounds of one timed call each, in rotating order."""
    timings = [Timing(m) for m in methods]
    with workload.open(size) as items:
        for t in timings:
            t.tasks = len(items)
        handles: list[Any] = []
        try:
            for t in timings:
                print(f"  {workload.name}: starting {t.method.library} ({t.method.engine})", file=sys.stderr,
                      flush=True)
                try:
                    handle = t.method.open()
                except Exception as exc:
                    t.error = f"could not start: {type(exc).__name__}: {exc}"
                    handles.append(None)
                    continue
                handles.append(handle)
                try:
                    _checked(t.method, handle, workload, items)  # warm-up, untimed
                except Exception as exc:
                    t.error = f"{type(exc).__name__}: {exc}"
            for i in range(repeat):
                print(f"  {workload.name}: round {i + 1}/{repeat}", file=sys.stderr, flush=True)
                order = list(range(len(timings)))
                order = order[i % len(order):] + order[:i % len(order)]
                for k in order:
                    t = timings[k]
                    if t.error is not None:
                        continue
                    try:
                        t.times.append(_checked(t.method, handles[k], workload, items))
                    except Exception as exc:
                        t.error = f"{type(exc).__name__}: {exc}"
        finally:
            for t, handle in zip(timings, handles, strict=False):
                if handle is not None:
                    try:
                        t.method.close(handle)
                    except Exception as exc:  # a pool that will not close must not hide the others' results
                        print(f"  {t.method.library}: close failed: {exc!r}", file=sys.stderr)
    return timings


# -- the document -------------------------------------------------------------------------------------


def _fmt(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    for scale, unit in ((1.0, "s"), (1e-3, "ms")):
        if seconds >= scale * 0.9995:
            value = seconds / scale
            return f"{value:.{0 if value >= 100 else 1 if value >= 10 else 2}f} {unit}"
    return f"{seconds * 1e6:.0f} us"


def fastest(timings: Sequence[Timing]) -> Timing:
    """The fastest of the rows held to the comparison: taskloom like-for-like and the peers."""
    return min((t for t in timings if t.method.role in ("taskloom", "peer")), key=lambda t: t.median)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    """A Markdown table with aligned columns (numbers right-aligned)."""
    widths = [max(len(c) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True)]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if n else ("-" * (w + 2))
                          for w, n in zip(widths, numeric, strict=True)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def workload_table(timings: Sequence[Timing]) -> str:
    """One workload: each method's median (min-max) and its ratio to the fastest."""
    best = fastest(timings)
    rows = []
    for t in timings:
        name = f"**{t.method.library}**" if t.method.role == "taskloom" else t.method.library
        if t.error is not None:
            rows.append((name, t.method.engine, str(t.method.workers), f"FAILED: {t.error}"[:120], "-"))
            continue
        spread = f"{_fmt(t.median)} ({_fmt(min(t.times))}-{_fmt(max(t.times))})"
        ratio = f"{t.median / best.median:.2f}x" + (" (fastest)" if t is best else "")
        rows.append((name, t.method.engine, str(t.method.workers), spread, ratio))
    return markdown_table(("library", "engine", "workers", "median (min-max)", "vs fastest"), rows,
                          (False, False, True, True, True))


def summary_table(results: dict[str, list[Timing]]) -> str:
    """Workloads x libraries: each library's ratio to the fastest (1.00x = fastest)."""
    libraries: list[str] = []
    for timings in results.values():
        libraries.extend(t.method.library for t in timings
                         if t.method.role != "baseline" and t.method.library not in libraries)
    rows = []
    for name, timings in results.items():
        best = fastest(timings)
        cells = [name]
        for library in libraries:
            t = next((t for t in timings if t.method.library == library), None)
            cells.append("-" if t is None or t.error else f"{t.median / best.median:.2f}x")
        rows.append(cells)
    return markdown_table(("workload", *libraries), rows, (False, *([True] * len(libraries))))


_UNEVEN = (
    "Two scheduler behaviours make taskloom lose time on uneven tasks, both measured with sleeps standing "
    "in for the tasks (so the numbers are free of CPU noise; `sleep_for(s)` sleeps s seconds, 2 workers, "
    "chunksize=1). (1) The ordered window: `Run` takes at most workers x prefetch (= 4) groups from the "
    "input that are not yet handed out, and with `ordered=True` finished groups waiting behind a slow "
    "head count against it (`_scheduler.py`, the window in `_fill`), so while the head task runs, the "
    "other worker finishes what it has and then idles. On fib-like durations "
    "`[0.77, 0.04, 0.48, 0.07, 0.30, 0.11, 0.18, 0.03]`: taskloom 1.22 s, the same with `ordered=False` "
    "1.02 s, `multiprocessing.Pool.map(chunksize=1)` 1.06 s (it queues every task up front). (2) Fill "
    "order: the process pool sends each worker up to two batches (`DEPTH = 2` in "
    "`_backends/_processes.py`) and `_dispatch` fills the first ready worker to that depth before the "
    "next gets any, so two long tasks at the head of the input land on the same worker: "
    "`[0.3, 0.3, 0.01, 0.01, 0.01, 0.01]` takes 0.62 s on taskloom (ordered or not), 0.33 s on "
    "`multiprocessing.Pool`. Fixes (engine): `map`, which keeps every result anyway, should not count "
    "finished groups against the window (or run unordered and put results in place by index), and "
    "`imap` should allow more finished-but-undelivered groups than in-flight ones; `_dispatch` should go "
    "round-robin (one batch to every ready worker before a second to any) and send the look-ahead batch "
    "only while batches are short (a few ms, where it hides the round trip), or let an idle worker take "
    "back a batch still queued behind a busy one."
)

#: Why taskloom's like-for-like row trails the fastest, per workload, and what would fix it. Written
#: from the measurements and the code; printed only for a workload where the gap is there.
EXPLANATIONS: dict[str, str] = {
    "cpu": (
        "Equal tasks of 50-100 ms on 2 workers bound every pool by the CPUs, and neither of the scheduler "
        "behaviours found on fib applies to equal tasks, so a gap here is this shared machine's noise "
        "(compare the min-max spreads and the load average); rerun before reading anything into it."
    ),
    "fib": "Uneven tasks (fib(31) costs ~30x fib(24)). " + _UNEVEN,
    "tiny": (
        "Per-task overhead, where a few milliseconds of noise is a large share. In isolated reruns "
        "(500,000 items, 9 interleaved rounds) taskloom processes took 76 ms and `multiprocessing.Pool.map` "
        "90 ms, so a gap here is mostly noise; the one systematic cost found is taskloom's batch ramp-up: "
        "batches are sized by measurement, the first carrying one item and growing at most 10x per result "
        "up to n / (4 x workers), so the first round trips carry little work (fixed `chunksize=n/(4 x "
        "workers)` saved ~4 of 76 ms, 5%). Fix (engine): start from the cap when the length is known "
        "and the first batch shows sub-microsecond tasks."
    ),
    "io": (
        "Every thread pool here waits out the same sleeps, so this workload measures hand-off cost only; "
        "taskloom threads copies the caller's contextvars per batch and runs one item per batch at first. "
        "A gap over 10% has not been seen in our runs: treat one as noise first, then as a regression in "
        "`ThreadBackend`."
    ),
    "mixed": (
        "Each task waits ~20-50 ms for the server, then parses and computes for ~5 ms holding the GIL. A "
        "thread pool (taskloom's, or any other) overlaps the waits but runs the computing on one CPU at a "
        "time; Dask's workers are 2 processes x 16 threads, so they overlap the waits *and* compute on "
        "both CPUs. Against the other thread pools taskloom threads is on par (see the table). Fix: "
        "taskloom's pipelines (fetch on threads, parse on processes) or a processes-with-threads engine "
        "like Dask's workers; `mode='processes', workers=32` works too but costs 32 processes."
    ),
    "array": (
        "Each 8-16 MB numpy block is an argument: taskloom, like `multiprocessing.Pool`, pebble and mpire, "
        "pickles it into the worker's pipe (a copy on each side). joblib instead dumps large arrays once "
        "to a memory-mapped file in /dev/shm and sends only a reference (its automatic memmapping), so "
        "its workers read the blocks without copying. Fix: put the array in a `taskloom.SharedArray` "
        "(the `array-shared` workload: the same blocks, read in place by every pool), or have taskloom "
        "memmap numpy arguments above ~1 MB automatically, as joblib does."
    ),
    "array-shared": (
        "Every pool gets the same items, `(shared, lo, hi)` with the blocks in one `taskloom.SharedArray`, "
        "which pickles to a name and a shape: no pool copies data, and equal tasks of 20-40 ms leave only "
        "dispatch cost and noise between the pools. `taskloom auto` runs these tasks on the very same "
        "taskloom process pool (compare its row): where it is within 10% of the fastest and this row is "
        "not, the difference is noise, and a rerun is the test."
    ),
}

#: Notes on the "taskloom auto" row where it trails the fastest by more than 10% (information only:
#: auto is not held to the target, as it also pays for choosing). Keyed by workload.
AUTO_NOTES: dict[str, str] = {
    "io": (
        "auto runs the first task in the caller's thread; once it has waited 5 ms (`OVERLAP_AFTER`) "
        "more tasks start beside it on threads, as many as Little's law gives from the waiting measured "
        "so far, and the run goes on on a warm pool of that size. What is left is those 5 ms and the "
        "threads' start, on a job of a few hundred ms."
    ),
    "mixed": (
        "as for io (the first fetch waits 5 ms before others start beside it); the tasks also compute "
        "~5 ms holding the GIL, and auto sizes its threads from the measured waiting, so against the "
        "32-thread pools its row moves with how much of each task the sample saw waiting."
    ),
    "cpu": (
        "auto measures the first task in the caller's thread; after 5 ms of computing a second starts "
        "beside it on a thread (the GIL reading), so the job pays about one task at one thread's speed "
        "before the process pool takes the rest (its results are kept)."
    ),
    "fib": "as for cpu, with uneven tasks: the first one, fib(31), is the longest, and runs while auto "
           "measures it.",
    "array": "as for cpu: the sample runs here first (numpy releases the GIL, so auto picks threads, "
             "which copy nothing).",
    "array-shared": "as for array.",
}


def verdicts(results: dict[str, list[Timing]]) -> list[str]:
    """One line per workload: taskloom's ratio to the fastest, and whether it meets the target."""
    out = []
    for name, timings in results.items():
        mine = next(t for t in timings if t.method.role == "taskloom")
        best = fastest(timings)
        ratio = mine.median / best.median
        if mine.error is not None:
            out.append(f"- **{name}**: taskloom FAILED ({mine.error}).")
        elif mine is best:
            out.append(f"- **{name}**: taskloom is the fastest.")
        elif ratio <= TARGET:
            out.append(f"- **{name}**: taskloom is within 10% of the fastest ({best.method.library}): "
                       f"{ratio:.2f}x.")
        else:
            why = EXPLANATIONS.get(name, "Not yet explained.")
            out.append(f"- **{name}**: taskloom is {ratio:.2f}x the fastest ({best.method.library}), over the "
                       f"10% target. {why}")
    return out


#: Notes on the "taskloom dask" row (taskloom's own Dask mode, an extra row) where it trails the
#: fastest by more than 10%. Keyed by workload; "*" applies to every workload.
DASK_NOTES: dict[str, str] = {
    "*": (
        "every batch is a Dask task sent through the scheduler of taskloom's embedded cluster, a few "
        "milliseconds of round trips that process pools do not pay."
    ),
    "io": (
        "as for every workload: `workers=32` runs 32 batches at once on the embedded cluster's "
        "single-threaded workers (parcels: one Dask task per worker, each batch on a thread of its own), "
        "and each parcel is a round trip through the scheduler."
    ),
    "mixed": "as for io.",
    "array": (
        "as for every workload, plus: each numpy block is scattered to the cluster (taskloom does it for "
        "arrays of 1 MiB or more), a round trip per block that a process pool's pipe does not pay."
    ),
}


def _extra_notes(results: dict[str, list[Timing]], label: str, notes: dict[str, str]) -> list[str]:
    out = []
    for name, timings in results.items():
        row = next((t for t in timings if t.method.library == label), None)
        if row is None or row.error is not None:
            continue
        ratio = row.median / fastest(timings).median
        if ratio > TARGET:
            note = notes.get(name, notes.get("*", "not yet explained."))
            out.append(f"- **{name}**: {label} is {ratio:.2f}x the fastest; {note}")
    return out


def auto_notes(results: dict[str, list[Timing]]) -> list[str]:
    """One line per workload where ``taskloom auto`` trails the fastest by more than 10%."""
    return _extra_notes(results, "taskloom auto", AUTO_NOTES)


def dask_notes(results: dict[str, list[Timing]]) -> list[str]:
    """One line per workload where ``taskloom dask`` trails the fastest by more than 10%."""
    return _extra_notes(results, "taskloom dask", DASK_NOTES)


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on this platform
        return None


def _how_measured() -> str:
    doc = __doc__ or ""
    return doc[doc.index("The workloads are"):].strip()


def document(results: dict[str, list[Timing]], *, size: Size, repeat: int, seconds: float,
             machine: dict[str, Any], load_after: list[float] | None, command: str) -> str:
    """This script's section of docs/benchmarks.md (the top of the page)."""
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmarks: taskloom and its peers",
        "",
        f"Generated by `{command}` on {started}, in {seconds:.0f} s; regenerate it the same way "
        "(the script rewrites this part of the page, up to the sections other benchmark scripts "
        "write). For how each engine of taskloom does on *your* machine, run `taskloom bench` (or "
        "`make bench`).",
        "",
        "## How it was measured",
        "",
        _how_measured(),
        "",
        f"Size: `{size}` inputs (see `taskloom._bench`), {repeat} timed calls per method. "
        f"Load average (1, 5, 15 min) before: {', '.join(map(str, machine.get('load_average') or []))}; "
        f"after: {', '.join(map(str, load_after or []))}. The machine is shared: read differences "
        "under ~10% as noise.",
        "",
        "## Summary: each library's time / the fastest",
        "",
        summary_table(results),
        "",
        "## taskloom against the target (fastest, or within 10%)",
        "",
        *verdicts(results),
        "",
        "The extra rows (information, not held to the target): `taskloom auto` also pays for choosing, "
        "and `taskloom dask` runs on its own embedded cluster.",
        "",
        *(auto_notes(results) or ["- taskloom auto: within 10% of the fastest on every workload."]),
        *(dask_notes(results) if "dask" in MODE_NAMES else []),
        "",
        "## Per workload",
        "",
    ]
    for name, timings in results.items():
        w = WORKLOADS[name]
        parts += [f"### {name}: {w.description} ({timings[0].tasks:,} tasks)", "", workload_table(timings), ""]
    parts += ["## Machine", "", markdown_table(("", ""), describe(machine), (False, False)), ""]
    return "\n".join(parts)


class _DropPebbleNoise(logging.Filter):
    """pebble's ThreadPool.map marks one future running from several threads; concurrent.futures then
    logs "Future ... in unexpected state: RUNNING" at CRITICAL for each. The results are right (every
    answer is checked), so the lines are noise in the progress output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "in unexpected state" not in record.getMessage()


def main(argv: list[str] | None = None) -> int:
    """Run every workload on every method, print the tables, write this script's section of docs/benchmarks.md."""
    logging.getLogger("concurrent.futures").addFilter(_DropPebbleNoise())
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="quick-size inputs and 3 repeats (about a minute)")
    parser.add_argument("--repeat", type=int, default=None, help="timed calls per method (default 5; 3 with --quick)")
    parser.add_argument("--workloads", default=None, help=f"comma-separated, from: {', '.join(WORKLOADS)}")
    parser.add_argument("--output", type=Path, default=DOC,
                        help=f"the page whose 'peers' section to (re)write (default {DOC})")
    parser.add_argument("--no-write", action="store_true", help="print the Markdown, write nothing")
    args = parser.parse_args(argv)

    size: Size = "quick" if args.quick else "full"
    if os.environ.get("TASKLOOM_SMALL", "").strip() in ("1", "true", "yes", "on"):
        size = "test"
    repeat = args.repeat or (3 if args.quick or size == "test" else 5)
    names = args.workloads.split(",") if args.workloads else list(WORKLOADS)
    cpus = usable_cpus()
    start = taskloom.Processes().resolved_start_method
    machine = machine_info()  # before the run: its load average is the outside load
    t0 = time.perf_counter()
    results: dict[str, list[Timing]] = {}
    for name in names:
        workload = WORKLOADS[name]
        why = workload.unavailable()
        if why is not None:
            print(f"{name}: skipped - {why}", file=sys.stderr)
            continue
        print(f"{name}: {workload.description}", file=sys.stderr, flush=True)
        results[name] = measure(workload, methods_for(workload, cpus, start), size, repeat)
        best = fastest(results[name])
        for t in results[name]:
            mark = f"{t.median / best.median:.2f}x" if t.error is None else f"FAILED: {t.error}"
            print(f"    {t.method.library:<22} {_fmt(t.median):>9}  {mark}", file=sys.stderr, flush=True)
    taskloom.shutdown()
    command = "python benchmarks/peers.py" + (" --quick" if args.quick else "")
    text = document(results, size=size, repeat=repeat, seconds=time.perf_counter() - t0, machine=machine,
                    load_after=_load(), command=command)
    if args.no_write:
        print(text)
    else:
        write_section("peers", text, args.output)
        print(f"wrote the 'peers' section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
