"""When one machine is not enough: the same taskloom call on a Dask cluster.

The guide stops at one machine. The team that outgrows it changes one argument: mode="dask".
This script runs a CPU-bound job three ways and checks that the answers agree:

* sequentially, as the reference;
* on taskloom's embedded cluster (mode="dask": a LocalCluster with one worker process per
  usable CPU, started once and reused by later calls, closed by taskloom.shutdown() or at exit);
* on a cluster reached by address, as a real multi-host cluster is: here a LocalCluster this
  script starts on 127.0.0.1 (on real hosts: `dask scheduler` and `dask worker ADDRESS`).

taskloom batches tiny tasks on Dask as it does on its own pool, so 20,000 small tasks cost
little more than 20 big ones; and errors come back as on any other engine: a TaskError that
names the item, with on_error="collect" giving one Outcome per item.

Run: python examples/cluster.py   (TASKLOOM_SMALL=1 for a test-sized run; needs taskloom[dask])
"""

from __future__ import annotations

import logging
import os
import time

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
JOBS = 8 if SMALL else 32
N = 20_000 if SMALL else 200_000
TINY = 2_000 if SMALL else 20_000


def sum_of_squares(n: int) -> int:
    return sum(i * i for i in range(n))


def checked_inverse(x: int) -> float:
    if x == 3:
        raise ZeroDivisionError("no inverse for 3 today")
    return 1 / (x + 1)


def timed(label: str, fn: object, items: list[int], **options: object) -> list[int]:
    t0 = time.perf_counter()
    results = tl.map(fn, items, **options)  # type: ignore[call-overload]
    print(f"{label:<42} {time.perf_counter() - t0:6.2f} s")
    return results


def main() -> None:
    from distributed import LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)  # Dask logs every start and stop at INFO

    numbers = [N + k for k in range(JOBS)]
    expected = timed("sequential", sum_of_squares, numbers, mode="sequential")

    embedded = timed("embedded cluster, first call (starts it)", sum_of_squares, numbers, mode="dask")
    again = timed("embedded cluster, second call (warm)", sum_of_squares, numbers, mode="dask")
    assert embedded == again == expected

    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        remote = timed(f"cluster at {cluster.scheduler_address}", sum_of_squares, numbers,
                       mode=tl.Dask(address=cluster.scheduler_address))
        assert remote == expected
        tiny = list(range(TINY))
        squares = timed(f"{TINY:,} tiny tasks on the same cluster", sum_of_squares, tiny,
                        mode=tl.Dask(address=cluster.scheduler_address))
        assert squares == [sum_of_squares(x) for x in tiny]
        outcomes = tl.map(checked_inverse, range(6), mode=tl.Dask(address=cluster.scheduler_address),
                          on_error="collect")
        failed = [o for o in outcomes if not o.ok]
        assert len(outcomes) == 6
        assert [o.index for o in failed] == [3]
        print(f"on_error='collect': {len(outcomes) - len(failed)} results and 1 error: {failed[0].error}")
        tl.shutdown()  # drops the connection to this cluster before the cluster itself stops
    print("all three agree")


if __name__ == "__main__":
    main()
