"""The window and ordered delivery: which groups a run holds, and when their results go out.

A ``Group`` is a chunk of consecutive input items, the unit of ordering and of the in-flight
window; it keeps each item's value or error, its attempts and its crashes. ``Delivery`` holds the
groups taken from the input and not yet handed out, and the blocks of results ready for the
consumer: in input order (``ordered=True``), else each group as soon as all its items have ended
(or, when its batch reports in parts, ``Done.part``, what ended of it with each part).
It knows nothing of backends, batches or time; the run tells it what ended and takes blocks out.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import TaskError
from .._outcome import Outcome

if TYPE_CHECKING:
    from .._backends._base import Done, ItemError


@dataclass(eq=False)
class Group:
    """Consecutive input items from ``start``: their values, errors, attempts and crashes."""

    start: int
    items: list[Any]
    #: each item's value once it ended; empty until an item ends apart from its whole group (a
    #: group whose batch succeeded takes the batch's list: no list of Nones made and freed per group)
    values: list[Any]
    remaining: int  # items not ended yet
    errors: dict[int, TaskError] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)  # pos -> runs so far (absent: 1)
    crashes: dict[int, list[tuple[int, int | None]]] = field(default_factory=dict)
    durations: list[float] | None = None
    emitted: bool = False  # handed out (or dropped as failed): no longer in the window
    waiting: bool = False  # finished, and counted by Delivery as waiting behind an earlier group
    #: the first positions that succeeded, when they ended in order (an undercount otherwise): what
    #: on_error="raise" may still hand out of a group when an item after them fails
    succeeded_first: int = 0
    #: unordered: positions that ended one by one and are not handed out yet; ``handed``: those a
    #: batch reported in parts (``Done.part``) had handed out before the group ended
    ended: list[int] | None = None
    handed: set[int] | None = None

    def slots(self) -> list[Any]:
        """``values`` with a place for every item (None until it ends)."""
        if len(self.values) != len(self.items):
            self.values = [None] * len(self.items)
        return self.values

    def succeed(self, pos: int) -> None:
        """The item at ``pos`` ended with the value already in ``slots()[pos]``."""
        self.remaining -= 1
        if pos == self.succeeded_first:
            self.succeeded_first += 1
        if self.ended is not None:
            self.ended.append(pos)

    def fail(self, pos: int, error: TaskError) -> None:
        """The item at ``pos`` ended with ``error``, for good."""
        self.errors[pos] = error
        self.slots()[pos] = None
        self.remaining -= 1
        if self.ended is not None:
            self.ended.append(pos)

    def record(self, event: Done, positions: list[int] | None, collect: bool) -> Iterator[tuple[int, ItemError]]:
        """Take in a batch's results: the values and durations of the items at ``positions`` (None: all).

        Each item that succeeded has ended; each that raised is yielded as ``(pos, error)``, in
        batch order, for the run to decide as it goes: the items before it have ended, those after
        it not yet (on_error="raise" hands out no further than that).
        """
        durations = event.durations
        if positions is None and not event.errors:
            self.values = event.values  # fast path: the whole group succeeded
            if durations is not None:
                self.durations = durations
            self.remaining = 0
            return
        if self.durations is None and collect:
            self.durations = [0.0] * len(self.items)
        errors = event.errors or {}
        n = len(event.values)
        values = self.slots()
        for i, value in enumerate(event.values):
            pos = i if positions is None else positions[i]
            if self.durations is not None:
                self.durations[pos] = durations[i] if durations is not None else event.elapsed / n
            error = errors.get(i)
            if error is None:
                values[pos] = value
                self.succeed(pos)
            else:
                yield pos, error


class Delivery:
    """Groups not yet handed out (the window) and blocks ready for the consumer.

    ``collect``: a block is an ``Outcome`` per item; else the group's values (a group with an
    error is never handed out: the run raises the error instead). Used under the run's lock.
    """

    def __init__(self, ordered: bool, collect: bool) -> None:
        self.ordered = ordered
        self.collect = collect
        #: imap: finished groups waiting behind a slow one count against the window (memory bound);
        #: ``map`` (``to_list``) turns it off.
        self.hold_finished = True
        self.open = 0  # groups taken from the input and not yet handed out
        self._finished_waiting = 0  # ordered: groups that ended but wait behind an earlier one
        self.halted = False  # a failure was recorded: nothing more is handed out
        self._groups: collections.deque[Group] = collections.deque()  # ordered: undelivered groups
        self._ready: collections.deque[list[Any]] = collections.deque()  # blocks ready to hand out

    def open_group(self, start: int, items: list[Any], values: list[Any] | None = None,
                   durations: list[float] | None = None) -> Group:
        """A new group of ``items`` from input position ``start``, counted in the window."""
        group = Group(start, items, [] if values is None else values, len(items),
                      durations=durations)
        self.open += 1
        if self.ordered:
            self._groups.append(group)
        else:
            group.ended = []
        return group

    def in_window(self) -> int:
        """Groups that count against the window. For ``map`` (which keeps every result anyway),
        finished groups waiting behind a slow one do not: they cost no memory that the caller's
        list would not hold, and counting them would idle workers behind one slow task."""
        if self.hold_finished or not self.ordered:
            return self.open
        return self.open - self._finished_waiting

    @property
    def has_ready(self) -> bool:
        """Whether a block waits for the consumer."""
        return bool(self._ready)

    def take(self) -> list[Any] | None:
        """The next block for the consumer, or None when none is ready.

        ``map`` (``hold_finished`` off: it keeps every result anyway) gets every ready block as
        one, so a run of many small groups (single coroutines, retried items) costs one trip
        through the run's lock per round of events, not one per group.
        """
        ready = self._ready
        if not ready:
            return None
        if self.hold_finished or len(ready) == 1:
            return ready.popleft()
        block = [value for part in ready for value in part]
        ready.clear()
        return block

    def drop(self) -> None:
        """The run was cancelled: what is ready is never handed out."""
        self._ready.clear()

    def deliver(self, group: Group | None = None, part: bool = False) -> None:
        """Hand out finished groups: in input order when ordered, else ``group`` once it is done.

        ``part``: a batch of ``group`` reported some of its items (``Done.part``) while others run
        on; unordered, what ended of the group is handed out now (the group stays in the window).
        """
        if self.halted:
            return
        if self.ordered:
            while self._groups and self._groups[0].remaining == 0:
                self._emit(self._groups.popleft())
            if group is not None and group.remaining == 0 and not group.emitted and not group.waiting:
                group.waiting = True  # counted once here, not by a walk over every group per item taken
                self._finished_waiting += 1
        elif group is not None:
            if group.remaining == 0:
                self._emit(group)
            elif part and group.ended:
                ended, group.ended = group.ended, []
                if group.handed is None:
                    group.handed = set()
                group.handed.update(ended)
                self._hand_out(group, ended)

    def halt_at(self, group: Group) -> None:
        """on_error="raise": hand out what comes before the failed item (ordered), then nothing."""
        if self.ordered:
            while self._groups and self._groups[0] is not group and self._groups[0].remaining == 0:
                self._emit(self._groups.popleft())
            if self._groups and self._groups[0] is group:
                # The items before the failed one that have ended: all of them once the group
                # has, else those that ended in order (the rest of its batch is still to come).
                before = min(group.errors)
                if group.remaining:
                    before = min(before, group.succeeded_first)
                if before:
                    self._ready.append(group.values[:before])
        self.halted = True

    def _emit(self, group: Group) -> None:
        self.open -= 1
        group.emitted = True
        if group.waiting:
            self._finished_waiting -= 1
        if group.handed is not None:  # some were handed out already
            self._hand_out(group, [pos for pos in range(len(group.items)) if pos not in group.handed])
        elif self.collect:
            durations = group.durations or [0.0] * len(group.items)
            block = [
                Outcome(group.start + pos, item, group.values[pos], group.errors.get(pos),
                        group.attempts.get(pos, 1), durations[pos])
                for pos, item in enumerate(group.items)
            ]
            self._ready.append(block)
        elif not group.errors:
            self._ready.append(group.values)

    def _hand_out(self, group: Group, positions: list[int]) -> None:
        """A block of the group's items at ``positions`` (an unordered group handed out in parts)."""
        if self.collect:
            durations = group.durations or [0.0] * len(group.items)
            block = [Outcome(group.start + pos, group.items[pos], group.values[pos], group.errors.get(pos),
                             group.attempts.get(pos, 1), durations[pos]) for pos in positions]
        else:  # a group with an error is never handed out whole: the run raises instead
            block = [group.values[pos] for pos in positions if pos not in group.errors]
        if block:
            self._ready.append(block)
