"""taskloom on Dask against plain ``client.map`` + ``gather``, on the same LocalCluster.

Run by hand (not a test): ``python benchmarks/dask_vs_client_map.py [--quick]``.

Tiny tasks (x*x) are where batching pays: plain ``client.map`` makes one Dask task, one scheduler
round trip, per item; taskloom sends batches sized from measured task times. CPU tasks (~20 ms)
are where both should be close to the cluster's parallel limit.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import taskloom as tl
from taskloom._system import usable_cpus


def tiny(x: int) -> int:
    return x * x


def cpu(n: int) -> int:
    return sum(i * i for i in range(n))


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    n_tiny = 2_000 if args.quick else 20_000
    n_cpu = 16 if args.quick else 48
    repeats = 3
    with LocalCluster(n_workers=usable_cpus(), threads_per_worker=1, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster, set_as_default=False) as client:
        mode = tl.Dask(client=client)
        tl.map(tiny, range(10), mode=mode)  # connect and warm up both paths
        client.gather(client.map(tiny, range(10), pure=False))
        rows = []
        for name, fn, items in (("tiny x*x", tiny, list(range(n_tiny))), ("CPU ~20 ms", cpu, [300_000] * n_cpu)):
            ours = median_time(lambda fn=fn, items=items: tl.map(fn, items, mode=mode), repeats)
            plain = median_time(lambda fn=fn, items=items: client.gather(client.map(fn, items, pure=False)),
                                repeats)
            seq = median_time(lambda fn=fn, items=items: [fn(x) for x in items], 1)
            rows.append((name, len(items), ours, plain, seq))
        tl.shutdown()
    print(f"Dask LocalCluster, {usable_cpus()} single-threaded workers; median of {repeats}")
    print(f"{'workload':<12} {'tasks':>7} {'taskloom':>10} {'client.map':>11} {'sequential':>11} {'speedup':>8}")
    for name, n, ours, plain, seq in rows:
        print(f"{name:<12} {n:>7} {ours * 1000:>8.0f}ms {plain * 1000:>9.0f}ms {seq * 1000:>9.0f}ms "
              f"{plain / ours:>7.1f}x")


if __name__ == "__main__":
    main()
