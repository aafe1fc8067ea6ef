"""The sequential backend: every batch runs in the consumer's thread, outside the run's lock.

``submit`` (called under the run's lock) only queues the batch; the run calls ``run_inline``
after releasing its lock and before it waits for events, so the task runs in the thread that
iterates the run, and ``cancel()`` or ``statistics()`` from another thread never wait for a task.
"""

from __future__ import annotations

import collections

from ._base import Backend, Batch, Done


class SequentialBackend(Backend):
    name = "sequential"
    workers = 1
    prefetch = 1

    def __init__(self) -> None:
        self._pending: collections.deque[Batch] = collections.deque()

    def submit(self, batch: Batch) -> None:
        self._pending.append(batch)

    def run_inline(self) -> None:
        from ._base import cpu_mark, cpu_since, run_items

        while self._pending:
            batch = self._pending.popleft()
            if batch.cancelled:
                continue
            # KeyboardInterrupt and SystemExit are the caller's own: they propagate, they are not
            # a task's error (catch=Exception).
            mark = cpu_mark() if batch.measure_cpu else None
            values, errors, durations, elapsed = run_items(
                batch.job.fn, batch.items, per_item_timing=batch.per_item_timing
            )
            cpu = None if mark is None else cpu_since(mark)
            batch.sink.put(Done(batch.id, values, errors, durations, elapsed, "caller", cpu=cpu))
