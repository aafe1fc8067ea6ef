"""Sample tasks that auto's scaling probe left running: the run takes them over as batches in flight.

Without a GIL, auto runs tasks on two threads at once to see whether threads scale. Tasks that
run far slower on a thread than in the caller's (on 3.13t, a dict the caller filled: ~100x)
show it within a millisecond but take ~10 ms each to end: the probe does not wait for them
(``_sampling._scaling_probe(hand_off=True)``). Each unfinished chunk becomes an ``InFlight``,
the run submits it as a batch to ``HandedOver``, and the chosen engine starts at once; the
chunk's results reach the run's sink as a ``Done`` when its thread ends it. Every item ends once,
in its place: the run's ordering, error policy and retries apply to these as to any batch.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

from ._base import Backend, Batch, Done, ItemError


class InFlight:
    """Sample tasks still running on a scaling-probe thread when auto chose an engine.

    Without a GIL, tasks that run far slower on a thread than in the caller's (a dict the caller
    filled, on 3.13t: ~100x) can tell in under a millisecond that threads are hopeless, yet take
    ~10 ms each to end. The run does not wait for them: it takes each chunk as a batch in flight
    (``HandedOver``, the backend of such chunks), and the chosen engine starts at once. The probe
    thread calls ``finish`` as the chunk ends; ``attach`` gets the results to the run then, or at
    once if they came first. A chunk that ended before the choice is handed over the same way,
    so that the items after a running one keep their places.
    """

    def __init__(self, at: int, items: list[Any]) -> None:
        self.at = at  # the chunk's place among the probe's items
        self.items = items
        #: (item, value, error, wall) per item run, filled by the probe thread
        self.out: list[tuple[Any, Any, ItemError | None, float]] = []
        self._lock = threading.Lock()
        self._ended: tuple[float, str] | None = None  # (seconds the chunk ran, thread name)
        self._then: Callable[[InFlight, float, str], None] | None = None

    @property
    def ended(self) -> bool:
        return self._ended is not None

    def finish(self, elapsed: float, worker: str) -> None:
        """The chunk ended (on the probe thread): hand its results to whoever attached."""
        with self._lock:
            self._ended = (elapsed, worker)
            then = self._then
        if then is not None:
            then(self, elapsed, worker)

    def attach(self, then: Callable[[InFlight, float, str], None]) -> None:
        """Call ``then(chunk, elapsed, worker)`` when the chunk ends (now, if it has)."""
        with self._lock:
            ended = self._ended
            if ended is None:
                self._then = then
        if ended is not None:
            then(self, *ended)




def items_in(chunks: list[InFlight]) -> int:
    """How many items ``chunks`` hold."""
    return sum(len(c.items) for c in chunks)


class HandedOver(Backend):
    """The backend of a run's ``InFlight`` chunks: ``submit`` takes them in the order given.

    It starts nothing: the probe's threads already run the tasks, and end when their chunk ends.
    A cancelled batch's results are dropped (a task already running on a thread is not stopped,
    as on any pool of threads).
    """

    name = "probe"

    def __init__(self, chunks: list[InFlight]) -> None:
        self._chunks = collections.deque(chunks)
        self.workers = max(1, len(chunks))

    def submit(self, batch: Batch) -> None:
        chunk = self._chunks.popleft()

        def post(chunk: InFlight, elapsed: float, worker: str) -> None:
            if batch.cancelled:
                return
            values = [task[1] for task in chunk.out]
            errors = {i: task[2] for i, task in enumerate(chunk.out) if task[2] is not None}
            durations = [task[3] for task in chunk.out] if batch.per_item_timing else None
            batch.sink.put(Done(batch.id, values, errors or None, durations, elapsed, worker))

        chunk.attach(post)
