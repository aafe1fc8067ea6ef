"""taskloom's Dask mode across hosts, against ``client.map`` (plain, and batched by hand).

Run by hand, as root (not a test): ``python benchmarks/dask_hosts.py [--quick] [--repeat N] [--write]``.

The cluster is the multi-host test bed of the test suite (``tests/multihost/bed.py``): ``dask
scheduler`` on one network namespace, ``dask worker`` (one single-threaded process, with its nanny)
on each of two others, joined by a bridge; the client (this script) in the root namespace, so every
task and result crosses a veth link. Without namespaces (not root) the bed falls back to loopback
and the table says so.

Workloads: 100,000 tiny tasks (``x * x``) and 200 CPU tasks (~20 ms of pure Python each). Methods,
all through one client connected to the bed's scheduler:

* ``taskloom``: ``tl.map(fn, items, mode=tl.Dask(client=client))`` (its own batching);
* ``client.map``: ``client.gather(client.map(fn, items, pure=False))``, one Dask task per item;
* ``client.map, batched by hand``: the items cut into 4 chunks per worker thread, one Dask task
  per chunk returning the chunk's results (what a Dask user writes to avoid the per-task cost);
* ``..., results in a 1-tuple``: the same, each chunk's list of results returned inside a 1-tuple.
  distributed serializes a list (or tuple) that a task returns item by item: 12,500 ints cost
  ~0.35 s a chunk, a list inside a tuple goes as one object. taskloom's batches return a tuple.

Each method is timed ``--repeat`` times (3; 1 with ``--quick``), rotating which goes first; the
figure is the median. Plain ``client.map`` over 100,000 items takes minutes, so it is timed once.
``--write`` puts the table in docs/benchmarks.md (section ``dask_hosts``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.multihost import tasks  # noqa: E402
from tests.multihost.bed import Cluster, Network  # noqa: E402

import taskloom as tl  # noqa: E402

CPU_N = 300_000  # sum of squares below this: ~20 ms of pure Python on the machines taskloom is built on


def _chunks(items: list[Any], threads: int) -> list[list[Any]]:
    size = max(1, len(items) // (4 * threads))
    return [items[i:i + size] for i in range(0, len(items), size)]


def methods(client: Any, threads: int) -> dict[str, Callable[[Callable[[Any], Any], list[Any]], list[Any]]]:
    mode = tl.Dask(client=client)

    def ours(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return tl.map(fn, items, mode=mode)

    def plain(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return list(client.gather(client.map(fn, items, pure=False)))

    def batched(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        futures = client.map(tasks.run_chunk, [fn] * len(chunks := _chunks(items, threads)), chunks, pure=False)
        return [x for chunk in client.gather(futures) for x in chunk]

    def wrapped(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        chunks = _chunks(items, threads)
        futures = client.map(tasks.run_chunk_wrapped, [fn] * len(chunks), chunks, pure=False)
        return [x for (chunk,) in client.gather(futures) for x in chunk]

    return {"taskloom": ours, "client.map": plain, "client.map, batched by hand": batched,
            "batched, results in a 1-tuple": wrapped}


def measure(client: Any, threads: int, repeat: int, quick: bool) -> list[tuple[str, int, dict[str, float]]]:
    n_tiny = 10_000 if quick else 100_000
    n_cpu = 40 if quick else 200
    workloads = [("tiny x*x", tasks.tiny, list(range(n_tiny))), ("CPU ~20 ms", tasks.cpu, [CPU_N] * n_cpu)]
    rows = []
    for label, fn, items in workloads:
        expected = [fn(x) for x in items[:50]]
        times: dict[str, list[float]] = {}
        runs = methods(client, threads)
        names = list(runs)
        for round_ in range(repeat):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                if name == "client.map" and label.startswith("tiny") and times.get(name):
                    continue  # minutes per call: timed once
                t0 = time.perf_counter()
                out = runs[name](fn, items)
                times.setdefault(name, []).append(time.perf_counter() - t0)
                assert out[:50] == expected, name
                assert len(out) == len(items), name
                print(f"  {label}: {name} {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
        rows.append((label, len(items), {name: statistics.median(ts) for name, ts in times.items()}))
    return rows


def table(rows: list[tuple[str, int, dict[str, float]]]) -> str:
    """Each method's median, and (in brackets) its time divided by taskloom's."""
    names = list(rows[0][2])
    lines = ["| workload | tasks | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for label, n, t in rows:
        cells = [_s(t["taskloom"])] + [f"{_s(t[name])} ({t[name] / t['taskloom']:.2f}x)" for name in names[1:]]
        lines.append(f"| {label} | {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 tiny and 40 CPU tasks, one round")
    parser.add_argument("--repeat", type=int, default=None, help="timed calls per method (default 3; 1 with --quick)")
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    load_before = os.getloadavg()
    net = Network.create()
    if net.notice:
        print(net.notice, file=sys.stderr)
    cluster = Cluster(net, Path(tempfile.mkdtemp(prefix="dask-hosts-")))
    try:
        cluster.start()
        with cluster.client() as client:
            threads = sum(client.nthreads().values())
            tl.map(tasks.tiny, range(100), mode=tl.Dask(client=client))  # connect and warm both paths
            client.gather(client.map(tasks.tiny, range(100), pure=False))
            rows = measure(client, threads, repeat, args.quick)
            tl.shutdown()
    finally:
        cluster.stop()
        left = net.close()
        if left:
            print(f"left behind: {left}", file=sys.stderr)
    where = ("three network namespaces on a bridge (scheduler, two worker hosts), the client in the root "
             "namespace" if net.namespaces else "loopback (namespaces unavailable), distinct ports")
    text = (f"{table(rows)}\n\nIn brackets: the time divided by taskloom's. "
            f"Dask {threads} worker threads (one single-threaded `dask worker` per worker "
            f"host); {where}; median of {repeat} (plain `client.map` on tiny tasks: once). By hand, a chunk "
            "that returns its list of results pays for distributed serializing a returned list item by item "
            "(~0.35 s for 12,500 ints); inside a 1-tuple the list goes as one object, as taskloom's batches do. "
            "The hosts share this machine's CPUs: what the client does per task or batch (taskloom's batches "
            "aim at 50 ms of work, ~80 of them for the CPU tasks) is CPU time the workers lose here, and would "
            "not on machines of their own. Load average (1, 5, 15 min) before: "
            f"{', '.join(f'{x:.2f}' for x in load_before)}; after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    print(text)
    if args.write:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from doc_sections import write_section

        write_section("dask_hosts", "## Dask across hosts: taskloom against client.map\n\n"
                      f"`python benchmarks/dask_hosts.py --write` (as root), {time.strftime('%Y-%m-%d')}. "
                      "The multi-host test bed of the test suite (`tests/multihost/bed.py`): every task and "
                      "result crosses a link between hosts.\n\n" + text)


if __name__ == "__main__":
    main()
