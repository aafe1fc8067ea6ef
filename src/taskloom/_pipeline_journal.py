"""``pipeline(..., journal=)``: per source item, what came out of the pipeline for it, kept across runs.

The journal (``_run/_journal.py``, the same file format as ``map``'s) records one line per *source*
item once the consumer has received everything the pipeline made of it: ``"value"`` is the list
of those outputs (one for a plain chain of stages; none when a filter dropped the item; several
after ``flatten``; a ``batch`` is listed under its first item), or ``"error"`` when a stage failed
on it. A resumed pipeline feeds only the source items the journal lacks, and hands out the
recorded ones in their place: their outputs, their failures (to ``Pipeline.errors`` when the stage
that failed collects, else raised).

When an item is complete is read at the consumer: in source order (``ordered=True``) an item is
complete when the first output of a later item arrives, or the end; unordered, each output
completes its item, so steps that drop, merge or multiply items (filter, batch, flatten) need
``ordered=True`` there.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._errors import TaskError
from ._outcome import Outcome

if TYPE_CHECKING:
    from ._pipeline_flow import Execution, StageFailure
    from ._run._journal import Journal, Record

__all__ = ["PipelineJournal"]


class PipelineJournal:
    """Between a pipeline's source and its consumer: filters the source, records and replays items."""

    def __init__(self, journal: Journal, *, ordered: bool, collecting: set[str]) -> None:
        self.journal = journal
        self._ordered = ordered
        self._collecting = collecting  # stages with on_error="collect": their recorded failures go to errors
        self._lock = threading.Lock()
        self._failures: dict[int, StageFailure] = {}  # collected failures not yet recorded, by source index
        self._new_failures: collections.deque[StageFailure] = collections.deque()  # unordered: to record
        self._current: int | None = None  # ordered: the source item whose outputs are arriving
        self._outputs: list[Any] = []

    # -- the source side (the feeder's thread) -----------------------------------------------------------
    def source(self, items: Iterable[Any]) -> Iterator[Any]:
        """The source items the journal lacks; ``last_index`` is the source index of the one just given."""
        return self.journal.filter(items)

    @property
    def last_index(self) -> int:
        """The source index of the item the source gave last (the feeder's thread reads it)."""
        return self.journal.last_index

    def failed(self, failure: StageFailure) -> None:
        """A collecting stage's failure (called from its pump thread, before later items pass)."""
        with self._lock:
            if self._ordered:
                self._failures[failure.index] = failure
            else:
                self._new_failures.append(failure)

    # -- the consumer side -------------------------------------------------------------------------------
    def reach(self, origin: int | None, ex: Execution) -> Iterator[Any]:
        """Output of source item ``origin`` (None: the end) arrives: hand out and record what comes before it.

        Yields the recorded outputs of journaled items before it; raises a recorded failure of a
        stage that does not collect (after the outputs before it).
        """
        if not self._ordered:
            yield from self._reach_unordered(ex)
            return
        if self._current is not None and origin != self._current:
            self._record(self._current, self._outputs)
            self._current, self._outputs = None, []
        events = self.journal.events
        while events and (origin is None or events[0][0] <= origin):
            index, item, record = events.popleft()
            if record is not None:
                yield from self._replay(index, item, record, ex)
            elif index == origin:
                self._current = index
            else:
                self._record(index, [])  # fed, and nothing came out: a filter dropped it (or a stage collected it)
        self.journal.flush()

    def output(self, origin: int, value: Any) -> None:
        """An output of source item ``origin`` is handed to the consumer."""
        if self._ordered:
            self._outputs.append(value)
        else:
            self.journal.ended(origin, None, [value])
            self.journal.flush()

    def failing(self, error: BaseException) -> None:
        """The pipeline stops on ``error``: record it against its source item, if it names one."""
        if isinstance(error, TaskError) and isinstance(error.index, int):  # a stage's or a step's failure
            self._current, self._outputs = None, []
            self.journal.ended(error.index, None, error=error)
        self.journal.flush()

    def _reach_unordered(self, ex: Execution) -> Iterator[Any]:
        with self._lock:
            failures = list(self._new_failures)
            self._new_failures.clear()
        for failure in failures:
            self.journal.ended(failure.index, None, error=failure.error, attempts=failure.outcome.attempts)
        events = self.journal.events
        while events:
            index, item, record = events.popleft()
            if record is not None:
                yield from self._replay(index, item, record, ex)
        self.journal.flush()

    def _record(self, index: int, outputs: list[Any]) -> None:
        with self._lock:
            failure = self._failures.pop(index, None)
        if failure is None:
            self.journal.ended(index, None, outputs)
        else:
            self.journal.ended(index, None, error=failure.error, attempts=failure.outcome.attempts)

    def _replay(self, index: int, item: Any, record: Record, ex: Execution) -> Iterator[Any]:
        error: TaskError | None = record.error
        if error is None:
            for value in record.value or ():
                ex.delivered += 1
                yield value
            return
        if error.stage in self._collecting:
            from ._pipeline_flow import StageFailure

            ex.add_error(StageFailure(error.stage, index, Outcome(index, item, None, error, record.attempts,
                                                                  record.seconds)), recorded=True)
            return
        raise error
