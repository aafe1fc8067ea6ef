"""A run's statistics: the numbers behind ``Run.statistics()``, and progress told to its listener.

The run reports what happened (a batch came back, an item ended, a retry, a worker death, time
spent waiting for input or dispatching, the consumer away between blocks); ``Tally`` keeps it in
a ``_stats.Recorder`` and tells the progress listener how many more tasks ended since last time.
It is used under the run's lock, except ``consumer_returns``/``consumer_leaves``, which only the
consumer's thread calls.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .._stats import Recorder, RunStatistics

if TYPE_CHECKING:
    from .._backends._base import Done
    from ._interfaces import Listener


class Tally:
    """The numbers of one run, and its progress listener (if any)."""

    def __init__(self, listener: Listener | None) -> None:
        self.numbers = Recorder()
        self._listener = listener
        self._reported = (0, 0)  # (done, failed) last told to the listener
        self._left_at = 0.0  # when the consumer last took a block (0: not yet)

    # -- counts ------------------------------------------------------------------------------------------
    @property
    def ended(self) -> int:
        """Tasks that ended so far, with a value or an error."""
        return self.numbers.completed + self.numbers.failed

    def completed(self, n: int = 1) -> None:
        self.numbers.completed += n

    def failed(self) -> None:
        self.numbers.failed += 1

    def skipped(self, n: int) -> None:
        """Items the run's journal held: handed out as recorded, not run."""
        self.numbers.skipped += n

    def retried(self) -> None:
        self.numbers.retried += 1

    def crashed(self) -> None:
        self.numbers.crashed += 1

    def dispatched(self) -> None:
        self.numbers.batches += 1

    # -- where the time went -----------------------------------------------------------------------------
    def batch_ran(self, event: Done, start: int, items: list[Any], positions: list[int] | None) -> None:
        """A batch came back: its worker's busy time, the duration sample, each task measured alone.

        ``positions``: the group's positions the batch held (None: the whole group from ``start``).
        """
        n = len(event.values)
        self.numbers.batch(event.worker, n, event.elapsed, event.durations)
        if n == 1 or event.durations is not None:
            base = list(positions) if positions is not None else range(n)
            for i in range(n):
                self.numbers.task(start + base[i], items[base[i]],
                                  event.durations[i] if event.durations is not None else event.elapsed)

    def ran_in_caller(self, index: int, item: Any, seconds: float) -> None:
        """A task auto mode ran in the caller's thread before the run started."""
        self.numbers.batch("caller", 1, seconds, None)
        self.numbers.task(index, item, seconds)

    def waited_for_input(self, seconds: float) -> None:
        self.numbers.input_wait += seconds

    def work_begins(self, now: float | None = None) -> tuple[float, float]:
        """The consumer's thread starts dispatching (or handling events); pass it to ``work_ends``."""
        return (time.perf_counter() if now is None else now), self.numbers.input_wait

    def work_ends(self, began: tuple[float, float]) -> None:
        """Dispatch time since ``work_begins``, less what of it was spent waiting for input."""
        t0, waited = began
        self.numbers.dispatch_time += time.perf_counter() - t0 - (self.numbers.input_wait - waited)

    def consumer_returns(self) -> None:
        """The consumer asks for a block: the time since it took the last one was its own work."""
        if self._left_at:
            self.numbers.consumer_time += time.perf_counter() - self._left_at

    def consumer_leaves(self) -> None:
        """The consumer has its block (or the run's end, or its error)."""
        self._left_at = time.perf_counter()

    # -- reports -----------------------------------------------------------------------------------------
    def snapshot(self, *, mode: str, workers: int, submitted: int, chunksize: int) -> RunStatistics:
        return self.numbers.snapshot(mode=mode, workers=workers, submitted=submitted, chunksize=chunksize)

    def notify(self) -> None:
        """Tell the listener (a progress display) how many more tasks ended since last time."""
        if self._listener is None:
            return
        done, failed = self.ended + self.numbers.skipped, self.numbers.failed
        last_done, last_failed = self._reported
        if done != last_done:
            self._reported = (done, failed)
            self._listener.update(done - last_done, failed - last_failed)

    def close(self) -> None:
        """The run ended: the listener is closed (it may be told more than once)."""
        if self._listener is not None:
            self._listener.close()
