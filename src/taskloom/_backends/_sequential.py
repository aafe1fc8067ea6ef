"""The sequential backend: every batch runs in the caller's thread, inside ``submit``."""

from __future__ import annotations

from ._base import Backend, Batch, Done


class SequentialBackend(Backend):
    name = "sequential"
    workers = 1
    prefetch = 1

    def submit(self, batch: Batch) -> None:
        from ._base import run_items

        # KeyboardInterrupt and SystemExit are the caller's own: they propagate, they are not
        # a task's error (catch=Exception).
        values, errors, durations, elapsed = run_items(
            batch.job.fn, batch.items, per_item_timing=batch.per_item_timing
        )
        batch.sink.put(Done(batch.id, values, errors, durations, elapsed, "caller"))
