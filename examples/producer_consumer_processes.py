"""The guide's process producer/consumer (``multiprocessing.Queue``), done with taskloom.pipeline.

The guide starts a producer process and two consumer processes joined by a ``multiprocessing.Queue``.
Its consumers stop on ``queue.get(timeout=1)`` inside a bare ``except:`` - which also swallows
every real error (and Ctrl-C) - so a slow producer loses its consumers and a failing item vanishes
without a word. Here:

* the producer and the consumers are stages on process pools (``workers=1`` and ``workers=2``);
* items travel between them through bounded queues, with back-pressure;
* the end of the input ends every stage (an end-of-stream marker, no timeout);
* a failing item is not swallowed: with ``on_error="collect"`` it lands in ``pipe.errors``,
  naming the stage and the item, and the stream goes on;
* Ctrl-C stops every process; after ``taskloom.shutdown()`` no child process is left.

Run: ``python examples/producer_consumer_processes.py`` (``TASKLOOM_SMALL=1``: shorter pauses).
"""

from __future__ import annotations

import os
import random
import time

from leftovers import wait_gone, worker_processes

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
SCALE = 0.01 if SMALL else 1.0
ITEMS = 10
BAD = 7  # this item's data is corrupt: its consumer raises


def produce(i: int) -> str:
    """The guide's producer body, run in a worker process: make one piece of data."""
    time.sleep(random.uniform(0.1, 0.3) * SCALE)
    return f"data-{i}" if i != BAD else "data-corrupt"


def process(item: str) -> tuple[str, int, int]:
    """The guide's consumer body, run in one of two worker processes: (item, its number, pid)."""
    time.sleep(random.uniform(0.2, 0.5) * SCALE)
    number = int(item.split("-")[1])  # "data-corrupt" raises ValueError
    return item, number * number, os.getpid()


def main() -> None:
    pipe = (tl.pipeline(range(ITEMS))
            .then(produce, mode="processes", workers=1, name="producer")
            .then(process, mode="processes", workers=2, on_error="collect", name="consumers", maxsize=4))
    pids = set()
    for item, square, pid in pipe:
        print(f"processed {item} -> {square} in worker process {pid}", flush=True)
        pids.add(pid)
    for error in pipe.errors:
        print(f"reported, not swallowed: stage {error.stage!r}, source item {error.index}: "
              f"{type(error.error.__cause__).__name__}: {error.error.__cause__}")
    stats = pipe.statistics()
    print(f"consumers ran on {stats.stages[1].workers} worker processes ({len(pids)} of them got items)")
    print(stats.table())
    tl.shutdown()
    left = wait_gone(worker_processes(), timeout=5)  # workers take a moment to exit
    print("after taskloom.shutdown(): " + ("nothing left behind" if not left else f"{len(left)} processes left!"))


if __name__ == "__main__":
    main()
