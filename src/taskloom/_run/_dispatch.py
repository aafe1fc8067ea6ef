"""Batches in flight: sent to a backend and not back yet, their deadlines, and retries waiting to go.

``Dispatch`` makes a ``Batch`` of a group's items (all, or some positions: retries, splits,
what a worker left undone), sends it to the run's current backend and remembers where it went
(auto mode may switch backends mid-run: a flight keeps its own). It keeps the deadlines of timed
batches and the retries waiting out their backoff, and it cancels what is in flight, all of it
or one task. It decides nothing about failures: the run does, with ``_failures``.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._backends._base import Backend, Batch, Done, Event, Job, Lost, Started
from ._policy import Timeline, TokenBucket, earliest

#: Batches measured at once (``measure_cpu``) at most. A measurement reads /proc twice, which lets
#: go of the GIL three times each: 256 threads fetching, each measuring, queued for the GIL and
#: took 1.0 s for a job of 0.24 s (2,000 sleeps of 20 ms).
MEASURED_AT_ONCE = 4

if TYPE_CHECKING:
    from ._delivery import Group
    from ._tally import Tally


@dataclass(eq=False)
class Flight:
    """A batch in flight: which group and positions it holds, and the backend it runs on."""

    batch: Batch
    group: Group
    positions: list[int] | None  # None: the whole group
    backend: Backend  # where it runs (auto mode may switch engines once during a run)
    reported: set[int] | None = None  # positions in the batch that came back in parts (``Done.part``)

    def all_positions(self) -> list[int] | range:
        """The group's positions the batch holds."""
        return self.positions if self.positions is not None else range(len(self.group.items))


class Dispatch:
    """What one run has in flight and waiting; used under the run's lock."""

    def __init__(self, job: Job, sink: queue.SimpleQueue[Event], backend: Backend, *, timeout: float | None,
                 per_item_timing: bool, tally: Tally) -> None:
        self.backend = backend  # where new batches go
        self._job = job
        self._sink = sink
        self._timeout = timeout
        self._per_item_timing = per_item_timing
        self.measure_cpu = False  # batches report their CPU time (auto's second look reads it)
        self._measured: set[int] = set()  # ids of measured batches, some maybe ended (pruned when full)
        self._tally = tally
        self._flights: dict[int, Flight] = {}
        self._deadlines: Timeline[int] = Timeline()  # batch ids
        self._deferred: Timeline[tuple[Group, list[int]]] = Timeline()  # retries waiting out their backoff

    def submit(self, group: Group, positions: list[int] | None = None) -> None:
        """Send the group's items at ``positions`` (None: all) to the backend as one batch."""
        items = group.items if positions is None else [group.items[p] for p in positions]
        measure = self.measure_cpu
        if measure and len(self._measured) >= MEASURED_AT_ONCE:
            self._measured &= self._flights.keys()  # those in flight still
            measure = len(self._measured) < MEASURED_AT_ONCE
        batch = Batch(self._job, items, self._sink, timed=self._timeout is not None,
                      per_item_timing=self._per_item_timing, measure_cpu=measure)
        if measure:
            self._measured.add(batch.id)
        self._flights[batch.id] = Flight(batch, group, positions, self.backend)
        self._tally.dispatched()
        self.backend.submit(batch)

    def arrived(self, event: Event) -> Flight | None:
        """The flight a ``Done`` or ``Lost`` ends, no longer in flight.

        None for a ``Started`` (a timed batch's deadline starts now) and for a batch that was
        cancelled or timed out already.
        """
        flight = self._flights.get(event.batch_id)
        if flight is None:
            return None
        if isinstance(event, Started):
            if self._timeout is not None:
                self._deadlines.add(event.at + self._timeout, event.batch_id)
            return None
        if flight.reported is None and (isinstance(event, Lost) or event.part is None):
            del self._flights[event.batch_id]  # the usual case: a batch's one event
            return flight
        # A part of the batch (``Done.part``), or the Lost of the rest of one that came in parts:
        # the flight of just those positions, which the run takes as a batch of its own.
        held = flight.all_positions()
        if flight.reported is None:
            flight.reported = set()
        reported = flight.reported
        if isinstance(event, Done) and event.part is not None:
            indexes = event.part
        else:
            indexes = [i for i in range(len(held)) if i not in reported]
        reported.update(indexes)
        if len(reported) >= len(held):
            del self._flights[event.batch_id]
        return Flight(flight.batch, flight.group, [held[i] for i in indexes], flight.backend)

    def overdue(self, now: float) -> Iterator[Flight]:
        """Flights whose deadline passed at ``now``, each no longer in flight (the run aborts them)."""
        while (batch_id := self._deadlines.pop_due(now)) is not None:
            flight = self._flights.pop(batch_id, None)
            if flight is not None:
                yield flight

    # -- retries waiting out their backoff ---------------------------------------------------------------
    def defer(self, due: float, group: Group, pos: int) -> None:
        """Submit the item at ``pos`` alone once ``due`` has passed (and a start token allows)."""
        self._deferred.add(due, (group, [pos]))

    @property
    def deferring(self) -> bool:
        """Whether a retry waits out its backoff."""
        return len(self._deferred) > 0

    def release(self, now: float, bucket: TokenBucket | None) -> None:
        """Submit the retries whose backoff has passed (each takes a start token under ``rate``)."""
        while (due := self._deferred.next_due()) is not None and due <= now:
            if bucket is not None and not bucket.take(now):
                return
            entry = self._deferred.pop_due(now)
            assert entry is not None
            self.submit(*entry)

    def next_due(self) -> float | None:
        """The earliest deadline or deferred retry, or None."""
        return earliest(self._deadlines.next_due(), self._deferred.next_due())

    # -- cancelling --------------------------------------------------------------------------------------
    def cancel_task(self, index: int) -> tuple[Group, int] | None:
        """Stop the one-item batch or deferred retry of input position ``index``: its group and position.

        The backend is told as for a cancelled run (processes: the worker running it is killed).
        None when no such batch is in flight or waiting.
        """
        for batch_id, flight in self._flights.items():
            group, positions = flight.group, flight.all_positions()
            if len(positions) == 1 and group.start + positions[0] == index:
                del self._flights[batch_id]
                flight.backend.cancel([flight.batch])
                return group, positions[0]
        entry = self._deferred.remove_where(lambda e: len(e[1]) == 1 and e[0].start + e[1][0] == index)
        return None if entry is None else (entry[0], entry[1][0])

    def cancel_all(self) -> None:
        """Drop every deadline and deferred retry, and hand every flight back to its backend."""
        by_backend: dict[int, tuple[Backend, list[Batch]]] = {}
        for f in self._flights.values():
            by_backend.setdefault(id(f.backend), (f.backend, []))[1].append(f.batch)
        self._flights.clear()
        self._deadlines.clear()
        self._deferred.clear()
        for backend, batches in by_backend.values():
            backend.cancel(batches)
