"""Batch sizes: from the measured time per item (adaptive), or fixed."""

from __future__ import annotations

#: Auto batching aims for batches that run this long: long enough that dispatch overhead
#: (~50-200 us per batch on processes) is a few percent, short enough to balance the load.
TARGET_BATCH_SECONDS = 0.05
#: A batch never grows more than this factor over the largest one measured so far.
MAX_GROWTH = 10
#: Without a known input length, batches stay under this many items (memory and latency: a stream of
#: 2,000,000 ints peaked at +24 MB in the parent with 65,536, +6 MB with 16,384, at the same speed).
MAX_UNSIZED_BATCH = 1 << 14  # 16,384: 4 batches in flight of tiny items hold ~6 MB in the parent


class Chunker:
    """Batch size from measured per-item time (EWMA), or a fixed size.

    The first batch holds one item (nothing is known yet); each later one aims at
    ``TARGET_BATCH_SECONDS`` of work, grows at most ``MAX_GROWTH`` times over the largest batch
    measured, and is capped so the remaining work still splits into about 4 batches per worker.
    """

    def __init__(self, fixed: int | None, total: int | None, workers: int) -> None:
        self.fixed = fixed
        self.cap = MAX_UNSIZED_BATCH
        self.plan(total, workers)
        self.per_item: float | None = None
        self.largest = 1
        self.last = fixed or 1

    def plan(self, remaining: int | None, workers: int) -> None:
        """Cap batches so the remaining work still splits into about 4 batches per worker."""
        self.cap = MAX_UNSIZED_BATCH if remaining is None else max(1, remaining // max(1, workers * 4))

    def next_size(self) -> int:
        """The size of the next batch to take from the input."""
        if self.fixed is not None:
            return self.fixed
        if self.per_item is None:
            return 1
        size = int(TARGET_BATCH_SECONDS / max(self.per_item, 1e-9))
        size = max(1, min(size, self.largest * MAX_GROWTH, self.cap))
        self.last = size
        return size

    def observe(self, n_items: int, elapsed: float) -> None:
        """A batch of ``n_items`` ran in ``elapsed`` seconds."""
        if n_items <= 0:
            return
        sample = elapsed / n_items
        self.per_item = sample if self.per_item is None else 0.5 * self.per_item + 0.5 * sample
        self.largest = max(self.largest, n_items)
