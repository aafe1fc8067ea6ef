"""When a run retries, waits and gives up: retries with backoff, the rate limit, deadlines.

Everything here reads time from a ``Clock``, never from ``time`` directly, so the scheduler's
tests run it on a scripted clock with no real sleep (``tests/test_run_scheduler.py``).
"""

from __future__ import annotations

import heapq
import itertools
import queue
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

#: Retry backoff never waits longer than this.
BACKOFF_MAX = 30.0

E = TypeVar("E")
V = TypeVar("V")


class Clock(Protocol):
    """Where a run reads the time and waits for its next event."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    def wait(self, sink: queue.SimpleQueue[E], timeout: float | None) -> E | None:
        """The next event from ``sink``, or None once ``timeout`` seconds passed without one."""
        ...


SIGNAL_SLICE = 0.25  # seconds: the longest a waiting caller takes to run a signal's Python handler


class RealClock:
    """``time.monotonic`` and a blocking ``get`` on the sink, in slices.

    A signal (Ctrl-C, pytest-timeout's SIGALRM) may land on any thread of the process; its Python
    handler then runs only when the main thread next runs Python code. A thread blocked in one
    long ``get`` would not, until the run's next event: a hung task held off Ctrl-C for good.
    """

    now = staticmethod(time.monotonic)

    @staticmethod
    def wait(sink: queue.SimpleQueue[E], timeout: float | None) -> E | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = SIGNAL_SLICE if deadline is None else min(SIGNAL_SLICE, deadline - time.monotonic())
            try:
                return sink.get(timeout=max(left, 0.0))
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    return None


REAL_CLOCK = RealClock()


def backoff_delay(base: float, attempts: int, uniform: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds before retry number ``attempts``: exponential, capped, with jitter.

    ``base · 2^(attempts-1)``, capped at ``BACKOFF_MAX``, then scaled by a random factor in
    [0.5, 1]: retries of many failed tasks spread out instead of hitting a struggling server
    at the same instant ("equal jitter").
    """
    if base <= 0:
        return 0.0
    return float(min(BACKOFF_MAX, base * 2 ** (attempts - 1)) * uniform(0.5, 1.0))


class TokenBucket:
    """At most ``rate`` task starts per second, evenly spaced (a bucket of one token)."""

    def __init__(self, rate: float, now: float) -> None:
        self.interval = 1.0 / rate
        self.next = now

    def take(self, now: float) -> bool:
        """Whether a task may start at ``now`` (and if so, the next may start one interval later)."""
        if now < self.next:
            return False
        # Strict spacing: a late wake-up does not earn a burst (a rate limit is never exceeded).
        self.next = max(self.next, now) + self.interval
        return True


@dataclass
class RetryPolicy:
    """Which failures run again, and when.

    ``retries`` and ``retry_on`` are the caller's; ``crash_retries`` is the engine's (a task whose
    worker died), counted apart.
    """

    retries: int
    retry_on: tuple[type[BaseException], ...]
    backoff: float
    crash_retries: int
    rng: random.Random = field(default_factory=random.Random)

    def retries_error(self, error: BaseException, attempts: int, never: type[BaseException]) -> bool:
        """Whether a task that raised ``error`` on its ``attempts``-th run goes again."""
        return attempts <= self.retries and isinstance(error, self.retry_on) and not isinstance(error, never)

    def retries_crash(self, crashes: int) -> bool:
        """Whether a task that crashed its worker ``crashes`` times goes again."""
        return crashes <= self.crash_retries

    def delay(self, attempts: int) -> float:
        """Seconds to wait before retry number ``attempts`` (0 without backoff)."""
        return backoff_delay(self.backoff, attempts, self.rng.uniform)


class Timeline(Generic[V]):
    """Things due at a time (deadlines, retries waiting out their backoff), earliest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, V]] = []
        self._seq = itertools.count()  # ties keep their order; values are never compared

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, due: float, value: V) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), value))

    def next_due(self) -> float | None:
        """When the earliest entry is due, or None when empty."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> V | None:
        """The earliest entry if it is due at ``now``, removed; else None."""
        if self._heap and self._heap[0][0] <= now:
            return heapq.heappop(self._heap)[2]
        return None

    def remove_where(self, match: Callable[[V], bool]) -> V | None:
        """Remove and return the first entry ``match`` accepts."""
        for i, entry in enumerate(self._heap):
            if match(entry[2]):
                self._heap.pop(i)
                heapq.heapify(self._heap)
                return entry[2]
        return None

    def clear(self) -> None:
        self._heap.clear()


def earliest(*times: float | None) -> float | None:
    """The earliest of the times given (None: no timer)."""
    due = [t for t in times if t is not None]
    return min(due) if due else None
