"""Sharing big arrays with process workers, and shared counters: taskloom against the alternatives.

Part 1 — 8 arrays of 40 MB (float64), each summed on a process worker (2 workers):

* taskloom SharedArray, data already in place (the arrays were made as SharedArrays);
* taskloom SharedArray with the copy-in counted (``from_numpy`` inside the timing);
* taskloom processes with the arrays pickled (no sharing);
* ``multiprocessing.shared_memory`` by hand, data in place: the arrays live in ``SharedMemory``
  blocks made beforehand, each task gets (name, shape, dtype), attaches, sums and detaches, on a
  forkserver ``Pool`` (what the stdlib docs show); and the careful variant, where each worker
  keeps its attachments for later tasks (what SharedArray does);
* ``multiprocessing.Pool.map`` (pickling);
* fork copy-on-write (a fork-context Pool started after the arrays exist; tasks get an index);
* joblib's automatic memmapping (loky backend);
* threads (numpy's sum releases the GIL).

Time is the first call (cold: workers map the data for the first time) and the best of 5 more
(warm: a warm pool reuses its mappings, as fork's children reuse inherited pages); pools are
started beforehand, so start-up is not counted. Memory is the peak PSS of the parent plus every
process below it, sampled every few milliseconds. PSS, not RSS: RSS counts a shared page once in
every process that maps it.

Part 2 — counters: increments from 2 worker processes (per-increment cost, contended), and one
process alone (uncontended): taskloom.Counter vs multiprocessing.Value with its lock vs a Manager.

Run: .venv/bin/python benchmarks/shared.py [--quick]. Prints Markdown tables (docs/performance.md's).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import psutil

import taskloom as tl

ARRAYS = 8
WORKERS = 2
_GLOBAL: list[np.ndarray[Any, Any]] = []  # for the fork copy-on-write variant


# -- tasks (module level: workers import them) -----------------------------------------------------------
def np_sum(a: Any) -> float:
    return float(np.asarray(a).sum())


def global_sum(i: int) -> float:
    return float(_GLOBAL[i].sum())


def shm_sum(spec: tuple[str, tuple[int, ...], str]) -> float:
    """Attach a ``SharedMemory`` block by name, sum it as an array, detach (by hand, as the docs show)."""
    from multiprocessing import shared_memory

    name, shape, dtype = spec
    block = shared_memory.SharedMemory(name=name)
    try:
        view: Any = np.ndarray(shape, dtype=dtype, buffer=block.buf)
        total = float(view.sum())
        del view  # the buffer must have no exports before close()
        return total
    finally:
        block.close()


_ATTACHED: dict[str, Any] = {}  # a worker's blocks, attached once (by hand, the careful way)


def shm_sum_cached(spec: tuple[str, tuple[int, ...], str]) -> float:
    """As ``shm_sum``, but each worker keeps its attachments for the next task (what SharedArray does)."""
    from multiprocessing import shared_memory

    name, shape, dtype = spec
    block = _ATTACHED.get(name)
    if block is None:
        block = _ATTACHED[name] = shared_memory.SharedMemory(name=name)
    return float(np.ndarray(shape, dtype=dtype, buffer=block.buf).sum())


def add_many(counter: tl.Counter, times: int) -> None:
    for _ in range(times):
        counter.add()


_MP_VALUE: Any = None


def _init_mp_value(value: Any) -> None:
    global _MP_VALUE
    _MP_VALUE = value


def mp_value_add_many(times: int) -> None:
    value = _MP_VALUE
    for _ in range(times):
        with value.get_lock():
            value.value += 1


def manager_add_many(args: tuple[Any, Any, int]) -> None:
    value, lock, times = args
    for _ in range(times):
        with lock:
            value.value += 1


# -- measuring --------------------------------------------------------------------------------------------
def tree_pss() -> int:
    total = 0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        with suppress(psutil.Error):  # a process that ended meanwhile
            total += proc.memory_full_info().pss
    return total


@contextmanager
def peak_pss(interval: float = 0.005) -> Iterator[list[int]]:
    """Yields a one-item list that holds the peak PSS of the process tree once the block ends."""
    peak = [tree_pss()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], tree_pss())
            stop.wait(interval)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield peak
    finally:
        stop.set()
        t.join()
        peak[0] = max(peak[0], tree_pss())


def best_of(rounds: int, fn: Callable[[], object]) -> tuple[float, int]:
    """Best wall time over ``rounds`` calls of ``fn``, and the peak tree PSS over all of them."""
    times = []
    with peak_pss() as peak:
        for _ in range(rounds):
            gc.collect()
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return min(times), peak[0]


# -- part 1 -----------------------------------------------------------------------------------------------
Row = tuple[str, float, float, int, int]


def bench_arrays(n: int, rounds: int) -> tuple[list[Row], int]:
    """Rows of (name, first call, best time, peak PSS, data bytes), and the idle PSS of parent + 2 workers."""
    procs = tl.Processes()
    tl.map(np_sum, [np.zeros(1)] * WORKERS * 2, mode=procs, workers=WORKERS)  # start the warm pool
    gc.collect()
    idle = tree_pss()  # the interpreters themselves, before any data exists
    rng = np.random.default_rng(0)
    data = [rng.random(n) for _ in range(ARRAYS)]
    expected = sum(float(a.sum()) for a in data)
    nbytes = sum(a.nbytes for a in data)
    rows: list[Row] = []

    def record(name: str, fn: Callable[[], float]) -> None:
        gc.collect()
        start = time.perf_counter()
        total = fn()  # the first call: cold (workers map the data for the first time)
        first = time.perf_counter() - start
        assert abs(total - expected) < 1e-6 * abs(expected), name
        gc.collect()
        seconds, peak = best_of(rounds, fn)
        rows.append((name, first, seconds, peak, nbytes))
        print(f"  {name}: first {first:.3f} s, best {seconds:.3f} s, peak PSS {peak / 1e6:.0f} MB", flush=True)

    # SharedArray, data in place: the arrays *are* shared; the plain copies are gone meanwhile.
    shared = [tl.SharedArray.from_numpy(a) for a in data]
    data.clear()
    gc.collect()

    def in_place() -> float:
        return sum(tl.map(np_sum, shared, mode=procs, workers=WORKERS, chunksize=1))

    record("taskloom SharedArray (data in place)", in_place)
    data.extend(np.array(s.array) for s in shared)
    for s in shared:
        s.close()
    shared.clear()
    gc.collect()

    def copy_in() -> float:
        arrays = [tl.SharedArray.from_numpy(a) for a in data]
        try:
            return sum(tl.map(np_sum, arrays, mode=procs, workers=WORKERS, chunksize=1))
        finally:
            for a in arrays:
                a.close()

    record("taskloom SharedArray (copy-in counted)", copy_in)
    record("taskloom processes, arrays pickled",
           lambda: sum(tl.map(np_sum, data, mode=procs, workers=WORKERS, chunksize=1)))
    tl.shutdown()

    from multiprocessing import shared_memory

    blocks = []
    for a in data:
        block = shared_memory.SharedMemory(create=True, size=a.nbytes)
        np.ndarray(a.shape, dtype=a.dtype, buffer=block.buf)[:] = a
        blocks.append(block)
    specs = [(b.name, a.shape, a.dtype.str) for b, a in zip(blocks, data, strict=True)]
    try:
        with mp.get_context("forkserver").Pool(WORKERS) as pool:
            pool.map(np_sum, [np.zeros(1)] * WORKERS * 2)  # started, as the others
            record("shared_memory by hand (data in place)", lambda: sum(pool.map(shm_sum, specs, chunksize=1)))
        with mp.get_context("forkserver").Pool(WORKERS) as pool:
            pool.map(np_sum, [np.zeros(1)] * WORKERS * 2)
            record("shared_memory by hand, attached once per worker (data in place)",
                   lambda: sum(pool.map(shm_sum_cached, specs, chunksize=1)))
    finally:
        for block in blocks:
            block.close()
            block.unlink()

    with mp.get_context("forkserver").Pool(WORKERS) as pool:
        record("multiprocessing Pool.map (pickling)", lambda: sum(pool.map(np_sum, data, chunksize=1)))

    _GLOBAL[:] = data
    with mp.get_context("fork").Pool(WORKERS) as pool:  # forked after the data exists: inherited
        record("fork copy-on-write (Pool, fork)", lambda: sum(pool.map(global_sum, range(ARRAYS), chunksize=1)))
    _GLOBAL.clear()

    try:
        from joblib import Parallel, delayed
    except ImportError:  # pragma: no cover - joblib is a dev dependency
        print("  joblib not installed: skipped")
    else:
        with Parallel(n_jobs=WORKERS) as parallel:  # max_nbytes="1M" by default: arrays are memmapped
            record("joblib (automatic memmapping)", lambda: sum(parallel(delayed(np_sum)(a) for a in data)))

    with ThreadPoolExecutor(WORKERS) as ex:
        record("threads (numpy releases the GIL)", lambda: sum(ex.map(np_sum, data)))
    return rows, idle


# -- part 2 -----------------------------------------------------------------------------------------------
def bench_counters(total: int, manager_total: int) -> list[tuple[str, float, float]]:
    """(name, µs per increment from 2 processes, µs per increment in one process alone)."""
    rows = []
    per_task = 1_000

    counter = tl.Counter()
    tl.starmap(add_many, [(counter, 10)] * 4, mode="processes", workers=WORKERS)  # warm pool
    counter.set(0)
    start = time.perf_counter()
    tl.starmap(add_many, [(counter, per_task)] * (total // per_task), mode="processes", workers=WORKERS)
    contended = time.perf_counter() - start
    assert counter.get() == total
    start = time.perf_counter()
    add_many(counter, total)
    alone = time.perf_counter() - start
    counter.close()
    tl.shutdown()
    rows.append(("taskloom.Counter (flock + RLock)", contended / total * 1e6, alone / total * 1e6))

    ctx = mp.get_context("forkserver")
    value = ctx.Value("q", 0)  # lock=True: a multiprocessing.RLock, inherited at process start only
    with ctx.Pool(WORKERS, initializer=_init_mp_value, initargs=(value,)) as pool:
        pool.map(mp_value_add_many, [10] * 4)
        value.value = 0
        start = time.perf_counter()
        pool.map(mp_value_add_many, [per_task] * (total // per_task), chunksize=1)
        contended = time.perf_counter() - start
    assert value.value == total
    _init_mp_value(value)
    start = time.perf_counter()
    mp_value_add_many(total)
    alone = time.perf_counter() - start
    rows.append(("multiprocessing.Value + its lock", contended / total * 1e6, alone / total * 1e6))

    with ctx.Manager() as manager, ctx.Pool(WORKERS) as pool:
        mvalue, mlock = manager.Value("q", 0), manager.Lock()
        per = manager_total // (WORKERS * 4)
        start = time.perf_counter()
        pool.map(manager_add_many, [(mvalue, mlock, per)] * (WORKERS * 4), chunksize=1)
        contended = time.perf_counter() - start
        assert mvalue.value == per * WORKERS * 4
        start = time.perf_counter()
        manager_add_many((mvalue, mlock, manager_total // 10))
        alone = time.perf_counter() - start
    rows.append(("Manager().Value + Manager().Lock()", contended / (per * WORKERS * 4) * 1e6,
                 alone / (manager_total // 10) * 1e6))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 MB arrays, fewer increments")
    args = parser.parse_args()
    n = 500_000 if args.quick else 5_000_000  # float64: 4 or 40 MB each
    rounds = 5
    print(f"# {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{WORKERS} workers", flush=True)
    print(f"Part 1: {ARRAYS} x {n * 8 / 1e6:.0f} MB arrays summed on process workers (best of {rounds})")
    rows, idle = bench_arrays(n, rounds)
    fork_time = next(r[2] for r in rows if r[0].startswith("fork"))
    print()
    print(f"Data: {rows[0][4] / 1e6:,.0f} MB. Idle parent + {WORKERS} workers before any data: "
          f"{idle / 1e6:,.0f} MB PSS.")
    print()
    print("| way to give the workers the data | first call | best | best vs fork COW | peak PSS, parent + workers | "
          "peak PSS - idle | (peak - idle) / data |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, first, seconds, peak, nbytes in rows:
        print(f"| {name} | {first:.3f} s | {seconds:.3f} s | {seconds / fork_time:.2f}x | {peak / 1e6:,.0f} MB | "
              f"{(peak - idle) / 1e6:,.0f} MB | {(peak - idle) / nbytes:.2f}x |")
    best = {r[0]: r[2] for r in rows}
    ours = best["taskloom SharedArray (data in place)"]
    for peer in ("shared_memory by hand (data in place)",
                 "shared_memory by hand, attached once per worker (data in place)"):
        print(f"Data in place: taskloom SharedArray {ours:.3f} s vs {peer} {best[peer]:.3f} s: "
              f"{ours / best[peer]:.2f}x (goal <= 1.1x)")

    total, manager_total = (20_000, 2_000) if args.quick else (100_000, 10_000)
    print()
    print(f"Part 2: counters, {total:,} increments from {WORKERS} processes ({manager_total:,} for the Manager)")
    print()
    print("| counter | 2 processes: per increment | 1 process alone: per increment | passes to a running worker |")
    print("|---|---:|---:|---|")
    passes = {"taskloom": "yes (pickled by name)", "multiprocessing": "no (inherited at start only)",
              "Manager": "yes (a proxy)"}
    for name, contended, alone in bench_counters(total, manager_total):
        print(f"| {name} | {contended:.2f} µs | {alone:.2f} µs | {passes[name.split('.')[0].split('(')[0]]} |")


if __name__ == "__main__":
    main()
