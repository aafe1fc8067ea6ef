"""The guide's thread producer/consumer (``queue.Queue`` + ``get(timeout=1)``), done with taskloom.pipeline.

The guide's consumers stop when ``q.get(timeout=1)`` finds the queue empty. So a producer that
pauses longer than a second loses its consumers, and every item it makes after the pause is never
consumed; its queue is unbounded, so a fast producer can fill memory; and an exception in a
consumer kills that thread silently. Here:

* the producer is a plain generator (the pipeline's source), read in a thread of its own;
* the consumers are one stage with ``workers=2`` on threads;
* the queue between them is bounded (``maxsize=4``): the producer waits when the consumers lag;
* the end of the producer is passed on as an end-of-stream marker, so the consumers stop when
  the items run out - never on a timeout, however long the producer pauses;
* a consumer that raises stops the pipeline with a ``TaskError`` naming the stage and the item;
* the results come back in production order.

Run: ``python examples/producer_consumer_threads.py`` (``TASKLOOM_SMALL=1``: shorter pauses).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
SCALE = 0.01 if SMALL else 1.0  # TASKLOOM_SMALL=1: the same story, 100x faster
ITEMS_PER_PRODUCER = 5


def producer(producer_id: int) -> Iterator[str]:
    """The guide's producer, as a generator: yield instead of ``q.put``."""
    for i in range(ITEMS_PER_PRODUCER):
        item = f"item-{producer_id}-{i}"
        print(f"produced {item}", flush=True)
        yield item
        time.sleep(random.uniform(0.1, 0.5) * SCALE)
    # A pause longer than the guide's get(timeout=1): its consumers would give up here and the
    # second producer's items would never be consumed. An end-of-stream marker does not care.
    time.sleep(1.5 * SCALE)


def produce_all() -> Iterator[str]:
    for producer_id in range(2):
        yield from producer(producer_id)


def consume(item: str) -> str:
    """The guide's consumer body: handle one item (no loop, no queue, no timeout)."""
    time.sleep(random.uniform(0.1, 0.3) * SCALE)
    return f"consumed {item} on {threading.current_thread().name}"


def main() -> None:
    pipe = tl.pipeline(produce_all()).then(consume, mode="threads", workers=2, maxsize=4, name="consumers")
    results = []
    for line in pipe:
        print(line, flush=True)
        results.append(line.split()[1])
    expected = [f"item-{p}-{i}" for p in range(2) for i in range(ITEMS_PER_PRODUCER)]
    assert results == expected, results
    print(f"all {len(results)} items consumed, in order; no timeout, nothing lost")
    print(pipe.statistics().table())


if __name__ == "__main__":
    main()
