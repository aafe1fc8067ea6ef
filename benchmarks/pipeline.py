"""download -> parse -> store: taskloom.pipeline against the guide's hand-written queues and a plain loop.

Run by hand (not a test)::

    python benchmarks/pipeline.py              # 500 items, 5 timed repeats: about two minutes
    python benchmarks/pipeline.py --quick      # 100 items, 1 repeat
    python benchmarks/pipeline.py --markdown   # the tables as Markdown, for docs/performance.md

The work, per item (the same functions for every method, every result checked):

* download: I/O, a 20 ms sleep; on 32 threads;
* parse: CPU, 10 ms of pure-Python arithmetic (calibrated at start); on one process per usable CPU;
* store: I/O, a 5 ms sleep; one writer (``workers=1``).

Methods:

* each stage alone ("standalone"): ``taskloom.map`` of that stage, with its engine and workers, over
  all the items. A pipeline cannot beat the slowest of these: that is the target's reference;
* ``taskloom.pipeline``: the three stages at once, joined by bounded queues, in source order;
* the guide's hand-written queues: download threads, parse processes and a store thread joined by
  ``queue.Queue`` / ``multiprocessing.Queue``, each consumer stopping on ``get(timeout=1)`` - as the
  guide does. Its time is reported twice: until the last item was stored, and until every thread
  and process had stopped (the timeouts' cost). Its processes use the forkserver, as taskloom does;
* a sequential loop: ``store(parse(download(i)))`` for each item.

Then the stop times: leaving the loop early (``break``: until every stage has stopped and its
workers are free), and Ctrl-C (SIGINT to a subprocess running an endless pipeline: until it has
exited, and until none of its processes is left).

Pools are warmed before anything is timed; each figure is the median of the timed repeats, run in
turn across methods so that outside load slows all of them alike. "Of the bound" compares each
repeat with the slowest stage alone timed in the same repeat, then takes the median.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

import taskloom as tl
from taskloom._system import usable_cpus

DOWNLOAD_SECONDS = 0.020
PARSE_SECONDS = 0.010
STORE_SECONDS = 0.005
DOWNLOAD_WORKERS = 32
STORE_WORKERS = 1


# -- the stages (module level: worker processes import them by reference) ---------------------------
def download(i: int) -> bytes:
    time.sleep(DOWNLOAD_SECONDS)
    return download_payload(i)


def download_payload(i: int) -> bytes:
    return f"<html><title>page {i}</title>{'x' * 1000}</html>".encode()


def spin(n: int) -> int:
    total = 0
    for k in range(n):
        total += k * k
    return total


@dataclass(frozen=True)
class Parse:
    """parse: ``spins`` iterations of pure-Python arithmetic (~10 ms), then read the page number."""

    spins: int

    def __call__(self, page: bytes) -> tuple[int, int]:
        spin(self.spins)
        number = int(page.split(b"page ", 1)[1].split(b"<", 1)[0])
        return number, len(page)


class Store:
    """store: one writer; 5 ms per item; keeps what it stored."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int]] = []

    def __call__(self, row: tuple[int, int]) -> int:
        time.sleep(STORE_SECONDS)
        self.rows.append(row)
        return row[0]


def calibrate() -> int:
    """The ``spin`` count that takes about PARSE_SECONDS here (best of a few runs)."""
    n = 10_000
    while True:
        t0 = time.perf_counter()
        spin(n)
        if time.perf_counter() - t0 > 0.005:
            break
        n *= 2
    best = min(_timed(lambda: spin(n)) for _ in range(5))
    return max(1, int(n * PARSE_SECONDS / best))


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- methods -----------------------------------------------------------------------------------------
def by_pipeline(n: int, parse: Parse, cpus: int) -> tuple[float, tl.PipelineStatistics]:
    store = Store()
    pipe = (tl.pipeline(range(n))
            .then(download, mode="threads", workers=DOWNLOAD_WORKERS, name="download")
            .then(parse, mode="processes", workers=cpus, name="parse")
            .then(store, mode="threads", workers=STORE_WORKERS, name="store"))
    t0 = time.perf_counter()
    stats = pipe.run()
    elapsed = time.perf_counter() - t0
    assert store.rows == [(i, len(download_payload(i))) for i in range(n)], "pipeline: wrong or unordered rows"
    return elapsed, stats


def by_loop(n: int, parse: Parse) -> float:
    store = Store()
    t0 = time.perf_counter()
    for i in range(n):
        store(parse(download(i)))
    elapsed = time.perf_counter() - t0
    assert len(store.rows) == n
    return elapsed


def _guide_parse_worker(inbox: Any, outbox: Any, spins: int) -> None:
    """The guide's process consumer: ``get(timeout=1)`` in a bare ``except`` ends it."""
    parse = Parse(spins)
    while True:
        try:
            page = inbox.get(timeout=1)
        except Exception:
            break
        outbox.put(parse(page))


def by_guide_queues(n: int, parse: Parse, cpus: int) -> tuple[float, float]:
    """(seconds until the last item was stored, seconds until everything had stopped)."""
    ctx = multiprocessing.get_context("forkserver")
    urls: queue.Queue[int] = queue.Queue()
    pages = ctx.Queue()
    rows = ctx.Queue()
    store = Store()
    last_stored = [0.0]

    def downloader() -> None:
        while True:
            try:
                i = urls.get(timeout=1)
            except queue.Empty:
                break
            pages.put(download(i))

    def storer() -> None:
        while True:
            try:
                row = rows.get(timeout=1)
            except queue.Empty:
                break
            store(row)
            last_stored[0] = time.perf_counter()

    t0 = time.perf_counter()
    for i in range(n):
        urls.put(i)
    threads = [threading.Thread(target=downloader) for _ in range(DOWNLOAD_WORKERS)]
    threads.append(threading.Thread(target=storer))
    procs = [ctx.Process(target=_guide_parse_worker, args=(pages, rows, parse.spins)) for _ in range(cpus)]
    for t in threads:
        t.start()
    for p in procs:
        p.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join()
    done = time.perf_counter() - t0
    pages.close()
    rows.close()
    assert sorted(store.rows) == [(i, len(download_payload(i))) for i in range(n)], "guide: rows lost"
    return last_stored[0] - t0, done


def standalone(n: int, parse: Parse, cpus: int) -> dict[str, float]:
    """Seconds each stage takes alone over all n items, with its engine and workers."""
    payloads = [download_payload(i) for i in range(n)]
    parsed = [parse(p) for p in payloads[:1]] * n
    return {
        "download": _timed(lambda: tl.map(download, range(n), mode="threads", workers=DOWNLOAD_WORKERS)),
        "parse": _timed(lambda: tl.map(parse, payloads, mode="processes", workers=cpus)),
        "store": _timed(lambda: tl.map(Store(), parsed, mode="threads", workers=STORE_WORKERS)),
    }


# -- stop times ----------------------------------------------------------------------------------------
def stop_after_break(parse: Parse, cpus: int) -> float:
    """Seconds from ``break`` until every stage has stopped (the loop statement returns after that)."""
    pipe = (tl.pipeline(itertools.count())
            .then(download, mode="threads", workers=DOWNLOAD_WORKERS)
            .then(parse, mode="processes", workers=cpus)
            .then(Store(), mode="threads", workers=STORE_WORKERS))
    t0 = 0.0
    for i, _ in enumerate(pipe):
        if i == 50:
            t0 = time.perf_counter()
            break
    elapsed = time.perf_counter() - t0
    assert not pipe.statistics().running
    return elapsed


def child_endless(spins: int) -> None:
    """The subprocess of the Ctrl-C measurement: an endless pipeline, READY once it flows."""
    pipe = (tl.pipeline(itertools.count())
            .then(download, mode="threads", workers=DOWNLOAD_WORKERS)
            .then(Parse(spins), mode="processes", workers=usable_cpus())
            .then(Store(), mode="threads", workers=STORE_WORKERS))
    for i, _ in enumerate(pipe):
        if i == 20:
            print("READY", flush=True)


def stop_after_ctrl_c(spins: int) -> tuple[float, float]:
    """(seconds from SIGINT to the process's exit, to the end of its last descendant)."""
    with subprocess.Popen([sys.executable, __file__, "--child", str(spins)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, start_new_session=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "READY":
                break
        family = psutil.Process(proc.pid).children(recursive=True)
        t0 = time.perf_counter()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        exited = time.perf_counter() - t0
        left = [p for p in family if _alive(p)]
        while left and time.perf_counter() - t0 < 60:
            time.sleep(0.005)  # poll finely: psutil.wait_procs backs off, which would blur the figure
            left = [p for p in left if _alive(p)]
        gone = time.perf_counter() - t0
        if left:
            raise RuntimeError(f"Ctrl-C left processes behind: {left}")
        return exited, gone


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- report ----------------------------------------------------------------------------------------------
def _table(rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100 items, one repeat")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child_endless(args.child)
        return
    n = args.items or (100 if args.quick else 500)
    repeats = args.repeats or (1 if args.quick else 5)
    cpus = usable_cpus()
    parse = Parse(calibrate())
    print(f"{n} items; download {DOWNLOAD_SECONDS * 1000:g} ms I/O x{DOWNLOAD_WORKERS} threads, parse "
          f"{PARSE_SECONDS * 1000:g} ms CPU x{cpus} processes, store {STORE_SECONDS * 1000:g} ms I/O x{STORE_WORKERS} "
          f"writer; {cpus} usable CPUs; median of {repeats}", flush=True)
    # Warm-up: start every pool (and the forkserver) before timing.
    by_pipeline(min(n, 50), parse, cpus)

    alone: dict[str, list[float]] = {"download": [], "parse": [], "store": []}
    piped: list[float] = []
    guide_stored: list[float] = []
    guide_done: list[float] = []
    last_stats = None
    for _ in range(repeats):
        for stage, seconds in standalone(n, parse, cpus).items():
            alone[stage].append(seconds)
        seconds, last_stats = by_pipeline(n, parse, cpus)
        piped.append(seconds)
        stored, done = by_guide_queues(n, parse, cpus)
        guide_stored.append(stored)
        guide_done.append(done)
    loop = by_loop(n, parse)

    rate = {stage: n / statistics.median(times) for stage, times in alone.items()}
    slowest = min(rate, key=lambda s: rate[s])
    # The bound of each repeat: its own slowest stage alone, timed next to it. Outside load drifts
    # over a run; a ratio to the bound measured minutes apart would mostly measure that drift.
    bounds = [min(n / alone[stage][r] for stage in alone) for r in range(repeats)]
    stage_rows = [["stage", "engine", "standalone items/s"]]
    engines = {"download": f"threads x{DOWNLOAD_WORKERS}", "parse": f"processes x{cpus}",
               "store": f"threads x{STORE_WORKERS}"}
    for stage in ("download", "parse", "store"):
        mark = " (slowest: the bound)" if stage == slowest else ""
        stage_rows.append([stage, engines[stage], f"{rate[stage]:,.0f}{mark}"])

    def row(name: str, times: list[float]) -> list[str]:
        seconds = statistics.median(times)
        ratios = [(n / t) / b for t, b in zip(times, bounds, strict=True)] if len(times) == repeats else \
            [(n / seconds) / statistics.median(bounds)]
        return [name, f"{seconds:.2f}", f"{n / seconds:,.0f}", f"{statistics.median(ratios):.0%}"]

    rows = [["method", "seconds", "items/s", "of the bound"],
            row("taskloom.pipeline (ordered)", piped),
            row("guide's queues: last item stored", guide_stored),
            row("guide's queues: all stopped (get(timeout=1))", guide_done),
            row("sequential loop", [loop])]
    broke = statistics.median(stop_after_break(parse, cpus) for _ in range(3))
    exited, gone = stop_after_ctrl_c(parse.spins)
    stop_rows = [["stop", "time"],
                 ["break out of the loop -> every stage stopped, every run cancelled", f"{broke * 1000:.1f} ms"],
                 ["Ctrl-C -> the process exited", f"{exited * 1000:.0f} ms"],
                 ["Ctrl-C -> none of its processes left", f"{gone * 1000:.0f} ms"]]
    print()
    print(_table(stage_rows, args.markdown))
    print()
    print(_table(rows, args.markdown))
    print()
    print(_table(stop_rows, args.markdown))
    ratio = statistics.median((n / t) / b for t, b in zip(piped, bounds, strict=True))
    verdict = "met" if ratio >= 0.85 else "MISSED"
    print(f"\ntarget (pipeline within 15% of the slowest stage alone): {verdict}: {ratio:.0%} (median of the "
          f"repeats, each against the bound timed next to it)")
    if last_stats is not None:
        print("\nlast pipeline run, per stage:")
        print(last_stats.table())
    tl.shutdown()


if __name__ == "__main__":
    main()
