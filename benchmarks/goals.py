"""Issue 19's table, measured again: each workload's best peer, taskloom, and whether the goal is met.

Run by hand (not a test), under the shared benchmark lock on a shared machine::

    flock /tmp/taskloom-bench.lock python benchmarks/goals.py [--rounds 3] [--rows tiny,sleep] [--write]

The workloads, peers and goals are the issue's (``ROWS``), measured the way it measured them: every
contender in a fresh interpreter per round (round-robin, so a noisy moment hits all alike), pools
started and one untimed warm-up call before the timed one; the figure is the median over the rounds.
``auto`` is a function auto measured before (the warm-up ran it: the usual case of a function mapped
again); ``auto, first run`` is a function it has never seen (a fresh copy of the function for the
timed call), so it measures first. The streaming row also reports the parent's peak extra memory.
``--write`` puts the table into docs/benchmarks.md (section ``goals``), with ``CAUSES``' note
under each goal missed. ``--child ROW CONTENDER`` runs one interpreter's share.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import multiprocessing
import statistics
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from shared import shm_sum, shm_sum_cached  # noqa: E402  (the by-hand SharedMemory tasks of benchmarks/shared.py)

import taskloom as tl  # noqa: E402
from taskloom._system import usable_cpus  # noqa: E402

WORKERS = usable_cpus()


# -- the tasks (module level: process workers import them) ---------------------------------------------
def square(x: int) -> int:
    return x * x


def pure_python(n: int) -> int:
    return sum(i * i for i in range(n))


def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def async_sleepy(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def array_sum(array: Any) -> float:
    return float(array.sum())  # numpy releases the GIL in the reduction


def shared_sum(shared: tl.SharedArray) -> float:
    return float(shared.array.sum())


def fresh(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``fn`` that auto has never measured (it remembers what it measured per function)."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = fn.__qualname__
    return copy


# -- the contenders: each returns (warm-up, timed call), set up in the child ----------------------------
Calls = tuple[Callable[[], Any], Callable[[], Any]]


def _warm_pools() -> None:
    """Start taskloom's process and thread pools, as every peer's pool is started before its clock.

    (The warm-up call alone would not: on a job near the line a first run may choose sequential, and
    the timed run then start the process pool, ~150 ms here with workers importing this module.)
    """
    tl.map(square, range(WORKERS * 4), mode="processes")
    tl.map(square, range(WORKERS * 4), mode="threads")


def _auto(fn: Callable[[Any], Any], items: Callable[[], Any], first_run: bool) -> Calls:
    def call() -> Any:  # first run: each call gets a function auto has not seen
        return tl.map(fresh(fn) if first_run else fn, items())

    def warm_up() -> Any:
        _warm_pools()
        return call()

    return warm_up, call


def _same(call: Callable[[], Any]) -> Calls:
    return call, call


def _forkserver_pool() -> Any:
    pool = multiprocessing.get_context("forkserver").Pool(WORKERS)
    pool.map(square, range(WORKERS * 4))  # started outside the clock, as every pool
    return pool


def _arrays() -> list[Any]:
    import numpy as np

    return [np.random.default_rng(i).random(5_000_000) for i in range(8)]  # 8 x 40 MB


def _shared_blocks() -> list[tuple[str, tuple[int, ...], str]]:
    """The arrays in ``SharedMemory`` blocks made by hand, removed when this interpreter exits."""
    from multiprocessing import shared_memory

    import numpy as np

    blocks, specs = [], []
    for a in _arrays():
        block = shared_memory.SharedMemory(create=True, size=a.nbytes)
        np.ndarray(a.shape, dtype=a.dtype, buffer=block.buf)[:] = a
        blocks.append(block)
        specs.append((block.name, a.shape, a.dtype.str))

    def remove() -> None:
        for block in blocks:
            block.close()
            block.unlink()

    atexit.register(remove)
    return specs


def _stream(n: int) -> Iterator[int]:
    yield from range(n)


STREAM = 2_000_000


def contender(row: str, name: str) -> Calls:
    """Set up one contender of one row in this interpreter."""
    if row == "tiny":
        items = list(range(200_000))
        if name == "loop":
            return _same(lambda: [square(x) for x in items])
        if name == "Pool.map":
            pool = _forkserver_pool()
            return _same(lambda: pool.map(square, items))
        if name == "processes":
            return _same(lambda: tl.map(square, items, mode="processes"))
        return _auto(square, lambda: items, name.endswith("first run"))
    if row == "cpu":
        items = [500_000] * 16
        if name == "ProcessPoolExecutor":
            ex = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("forkserver"))
            list(ex.map(square, range(WORKERS * 4)))
            return _same(lambda: list(ex.map(pure_python, items)))
        if name == "processes":
            return _same(lambda: tl.map(pure_python, items, mode="processes"))
        return _auto(pure_python, lambda: items, name.endswith("first run"))
    if row == "sleep":
        items = [0.02] * 2000
        if name == "ThreadPoolExecutor(200)":
            ex = ThreadPoolExecutor(200)
            return _same(lambda: list(ex.map(sleepy, items)))
        if name == "threads(200)":
            return _same(lambda: tl.map(sleepy, items, mode="threads", workers=200))
        return _auto(sleepy, lambda: items, name.endswith("first run"))
    if row == "async":
        items = [0.02] * 2000
        if name == "asyncio.gather":
            loop = asyncio.new_event_loop()  # the warm-up and the timed run share it, as taskloom's loop is shared

            async def gather() -> list[float]:
                return await asyncio.gather(*(async_sleepy(s) for s in items))

            return _same(lambda: loop.run_until_complete(gather()))
        return _same(lambda: tl.map(async_sleepy, items, mode="async", workers=len(items)))
    if row == "numpy":
        arrays = _arrays()
        if name == "ThreadPoolExecutor":
            ex = ThreadPoolExecutor()
            return _same(lambda: list(ex.map(array_sum, arrays)))
        if name == "threads":
            return _same(lambda: tl.map(array_sum, arrays, mode="threads"))
        return _auto(array_sum, lambda: arrays, name.endswith("first run"))
    if row == "shared":
        if name == "SharedArray":
            shared = [tl.SharedArray.from_numpy(a) for a in _arrays()]
            tl.map(square, range(WORKERS * 4), mode="processes")  # the pool starts before the data is used
            return _same(lambda: tl.map(shared_sum, shared, mode="processes", chunksize=1))
        specs = _shared_blocks()
        pool = _forkserver_pool()
        task = shm_sum if name == "by hand" else shm_sum_cached
        return _same(lambda: pool.map(task, specs, chunksize=1))
    if row == "stream":
        if name == "Pool.imap(1000)":
            pool = _forkserver_pool()
            return (lambda: sum(1 for _ in pool.imap(square, _stream(1000), chunksize=1000)),
                    lambda: sum(1 for _ in pool.imap(square, _stream(STREAM), chunksize=1000)))
        mode = "processes" if name == "processes" else "auto"
        return (lambda: sum(1 for _ in tl.imap(square, _stream(1000), mode=mode)),
                lambda: sum(1 for _ in tl.imap(square, _stream(STREAM), mode=mode)))
    raise SystemExit(f"unknown row {row!r} or contender {name!r}")


def _peak_rss(timed: Callable[[], Any]) -> tuple[float, float]:
    """Seconds of ``timed()`` and the peak resident size above the size before it, in MB."""
    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], proc.memory_info().rss)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.perf_counter()
    timed()
    seconds = time.perf_counter() - started
    stop.set()
    watcher.join()
    return seconds, (peak[0] - base) / 2**20


def child(row: str, name: str) -> None:
    warm, timed = contender(row, name)
    warm()
    seconds, extra_mb = _peak_rss(timed)
    print(json.dumps({"seconds": seconds, "mb": extra_mb}))
    tl.shutdown()


# -- the table ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    title: str
    peers: tuple[str, ...]  # the best of these is the reference
    ours: tuple[str, ...]  # held to the goal
    fixed: str | None  # taskloom's fixed mode, shown for information
    goal: float  # ours / best peer at most
    goal_text: str
    per: int = 0  # items, for a per-item figure (0: seconds)


ROWS: dict[str, Row] = {
    "tiny": Row("200,000 tiny tasks `x*x`", ("loop", "Pool.map"), ("auto", "auto, first run"), "processes", 1.1,
                "auto <= 1.1x the plain loop", per=200_000),
    "cpu": Row("16 CPU tasks of ~50 ms", ("ProcessPoolExecutor",), ("auto", "auto, first run"), "processes", 1.1,
               "auto <= 1.1x the best"),
    "sleep": Row("2,000 blocking `time.sleep(0.02)`", ("ThreadPoolExecutor(200)",), ("auto", "auto, first run"),
                 "threads(200)", 1.1, "auto <= 1.1x TPE(200)"),
    "async": Row("2,000 `asyncio.sleep(0.02)`", ("asyncio.gather",), ("async",), None, 1.2, "async <= 1.2x gather"),
    "numpy": Row("8 x 40 MB numpy `arr.sum()`", ("ThreadPoolExecutor",), ("auto", "auto, first run"), "threads", 1.2,
                 "auto <= 1.2x threads"),
    "shared": Row("same, arrays already in shared memory", ("by hand", "by hand, attached once"), ("SharedArray",),
                  None, 1.1, "SharedArray <= 1.1x by hand"),
    "stream": Row("2,000,000 streamed items", ("Pool.imap(1000)",), ("processes", "auto"), None, 1.0,
                  "keep ahead; memory <= +10 MB", per=STREAM),
}

#: Why a goal is missed, for the page (a miss without a cause here says "not explained yet").
CAUSES: dict[str, str] = {
    "tiny": (
        "the first run (a remembered function met the goal in the last run, 1.08x; 1.20x the run "
        "before): auto runs a sample of ~70 tasks (~1 ms) and picks sequential. In one process, side by "
        "side (15 and 21 rounds, 2026-12-04): the loop 9.5-11.0 ms, `tl.map(mode=\"sequential\")` "
        "11.6-12.8 ms, auto 12.5-13.9 ms, auto's first run 13.3 ms. What the engine adds on ~50 ns "
        "tasks is its bookkeeping per item: "
        "each item is copied into its batch (a slice of the list since 2026-12-04: item by item it "
        "was ~15% of the run), each result into the caller's list, and both lists freed, ~10 ns an item "
        "(2% on tasks of 1 us). Fresh interpreters move more than that (the loop took 0.07-0.09 us an "
        "item across runs), and a first run there also pays for memory the process touches first. Not "
        "built: results written straight into the caller's list (the sequential path would give up the "
        "window's order and error bookkeeping that every engine shares)."
    ),
    "cpu": (
        "the first run (remembered: 0.96x; auto's pools are started before the clock too, as the peers' "
        "are: a warm-up run that chose sequential, near the line on this 0.3 s job, had left the timed run "
        "to start the process pool, 1.34x): a function auto has never seen runs its first task in the "
        "caller's thread, and after 5 ms a second beside it on a thread (the GIL reading), before the "
        "process pool takes the rest: two tasks of ~25 ms at one thread's speed on a 0.2 s job "
        "(`benchmarks/auto.py`: 1.12x idle, 1.10x busy; the probe does not lengthen it: without it the "
        "first task would still run alone, one CPU idle, for as long). In one process, side by side, "
        "taskloom processes and `ProcessPoolExecutor` took 320 and 318 ms (7 rounds); fresh interpreters "
        "move by 20% here."
    ),
    "numpy": (
        "a 10 ms job of eight ~1.2 ms tasks. In one process, side by side (21 rounds, 2026-12-04): "
        "`ThreadPoolExecutor` 10.3 ms, taskloom threads 11.2 (chunksize 1: 10.6), auto 11.3, auto's "
        "first run 13.2: the run's own costs are ~0.1 ms a task (its bookkeeping, the BLAS cap, the "
        "slowest items' descriptions), and the first run runs three of the eight tasks while it "
        "measures, the first alone and two on the GIL probe's threads (1.7x), which leaves five for "
        "two threads: an odd last round. Fresh interpreters move by "
        "15% on a job this short (remembered auto: 1.00x in one run of 7 rounds, 1.18x in the next)."
    ),
    "shared": (
        "each task also unpickles its SharedArray (a name and a shape) and checks that the name still "
        "means the segment it mapped (an `os.stat`), and goes through the process pool's batch "
        "bookkeeping: ~2 ms on 8 tasks, at the edge of the goal (1.03x, 1.10x, 1.04x and 1.11x in four "
        "runs of 3-5 rounds, 2026-12-03 and 04)."
    ),
}


def _fmt(seconds: float, per: int) -> str:
    return f"{seconds / per * 1e6:.2f} us" if per else f"{seconds:.3f} s"


def measure(rows: list[str], rounds: int) -> dict[str, dict[str, list[dict[str, float]]]]:
    out: dict[str, dict[str, list[dict[str, float]]]] = {}
    for key in rows:
        row = ROWS[key]
        names = [*row.peers, *((row.fixed,) if row.fixed else ()), *row.ours]
        out[key] = {n: [] for n in names}
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                done = subprocess.run([sys.executable, __file__, "--child", key, name], capture_output=True,
                                      text=True, timeout=600)
                if done.returncode:
                    raise SystemExit(f"{key} / {name} failed:\n{done.stderr}")
                out[key][name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {key}: " + ", ".join(f"{n} {statistics.median(x['seconds'] for x in v):.3f} s"
                                       for n, v in out[key].items()), file=sys.stderr, flush=True)
    return out


def table(results: dict[str, dict[str, list[dict[str, float]]]], rounds: int) -> str:
    lines = ["| workload | best peer | taskloom, fixed mode | taskloom | goal | ratio | status |",
             "|---|---|---|---|---|---|---|"]
    notes = []
    for key, timings in results.items():
        row = ROWS[key]
        med = {n: statistics.median(x["seconds"] for x in v) for n, v in timings.items()}
        mb = {n: statistics.median(x["mb"] for x in v) for n, v in timings.items()}
        best = min(row.peers, key=lambda n: med[n])
        ratios = {n: med[n] / med[best] for n in row.ours}
        worst = max(ratios.values())
        met = worst <= row.goal
        if key == "stream":
            met = met and all(mb[n] <= 10 for n in row.ours)
        shown = ", ".join(f"{n} {_fmt(med[n], row.per)}" + (f" (+{mb[n]:.0f} MB)" if key == "stream" else "")
                          for n in row.ours)
        fixed = f"{row.fixed} {_fmt(med[row.fixed], row.per)}" if row.fixed else "-"
        peer = f"{best} {_fmt(med[best], row.per)}" + (f" (+{mb[best]:.0f} MB)" if key == "stream" else "")
        ratio = ", ".join(f"{r:.2f}" for r in ratios.values())
        lines.append(f"| {row.title} | {peer} | {fixed} | {shown} | {row.goal_text} | {ratio} | "
                     f"{'met' if met else 'MISSED'} |")
        if not met:
            notes.append(f"- **{row.title}**: {CAUSES.get(key, 'not explained yet.')}")
    text = "\n".join(lines) + (
        f"\n\nmedian of {rounds} fresh interpreters per contender, round-robin, pools started and one untimed "
        f"call before the timed one; {WORKERS} usable CPUs; ratio = taskloom / best peer (auto: remembered, "
        "then first run)")
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from: {', '.join(ROWS)}")
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    parser.add_argument("--child", nargs=2, metavar=("ROW", "CONTENDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    text = table(measure(rows, args.rounds), args.rounds)
    print(text)
    if args.write:
        from doc_sections import write_section

        write_section("goals", "## Issue 19's goals, measured again\n\n"
                      f"`python benchmarks/goals.py --write`, {time.strftime('%Y-%m-%d')}.\n\n{text}")


if __name__ == "__main__":
    main()
