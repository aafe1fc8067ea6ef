"""What a pipeline tells about itself: per-stage statistics, and the ``progress=True`` display.

The display is a thread that reads ``statistics()`` a few times a second: on a terminal it is one
rich progress line per stage (items out, rate, queue depth, how busy the workers are), so the
bottleneck is the line whose queue is full and whose workers are busy; anywhere else (CI logs,
files) it prints one plain line per stage every few seconds, and once more at the end.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["PipelineProgress", "PipelineStatistics", "StageStatistics"]

#: Seconds between plain log lines when stderr is not a terminal.
LOG_EVERY = 5.0
#: Seconds between refreshes of the rich display.
REFRESH_EVERY = 0.2


@dataclass(frozen=True)
class StageStatistics:
    """A snapshot of one stage.

    Attributes:
        name: the stage's name (``name=`` or the function's name).
        mode: the engine its tasks run on ("" until the stage's run has started).
        workers: its worker (or concurrency) count (0 until its run has started).
        state: "pending", "running", "done", "failed" (a task failed and stopped the
            pipeline) or "cancelled" (stopped early: the consumer left, or a failure upstream).
        items_in: items the stage took from its input queue.
        items_out: results it passed on (failed items excluded).
        errors: items that failed in it (collected, or the one that stopped the pipeline).
        busy: seconds its workers spent inside tasks (summed over workers).
        elapsed: seconds since the stage started (until it ended).
        queue_maxsize: the bound of its input queue.
        queue_depth: items in its input queue now.
        queue_max: the most items its input queue held.
        queue_mean: the time-weighted mean depth of its input queue.
        blocked: seconds it waited for room in the next queue (a slower stage downstream).
    """

    name: str
    mode: str
    workers: int
    state: Literal["pending", "running", "done", "failed", "cancelled"]
    items_in: int
    items_out: int
    errors: int
    busy: float
    elapsed: float
    queue_maxsize: int
    queue_depth: int
    queue_max: int
    queue_mean: float
    blocked: float

    @property
    def idle(self) -> float:
        """Worker-seconds not spent in tasks: ``elapsed x workers - busy``."""
        return max(0.0, self.elapsed * self.workers - self.busy)

    @property
    def utilisation(self) -> float:
        """The busy fraction of its workers, 0.0-1.0 (near 1 for the bottleneck)."""
        capacity = self.elapsed * self.workers
        return min(1.0, self.busy / capacity) if capacity > 0 else 0.0

    @property
    def rate(self) -> float:
        """Results per second over the stage's life."""
        return self.items_out / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        """One line of text: what ``progress=True`` prints when not on a terminal."""
        errors = f", {self.errors} errors" if self.errors else ""
        return (
            f"{self.name} [{self.mode or '?'} x{self.workers}] {self.state}: {self.items_in} in, "
            f"{self.items_out} out, {self.rate:,.1f}/s, queue {self.queue_depth}/{self.queue_maxsize} "
            f"(max {self.queue_max}, mean {self.queue_mean:.1f}), busy {self.utilisation:.0%}{errors}"
        )


@dataclass(frozen=True)
class PipelineStatistics:
    """A snapshot of a pipeline (``Pipeline.statistics()``).

    Attributes:
        stages: one ``StageStatistics`` per ``.then`` stage, in order.
        source_items: items read from the source.
        delivered: results handed to the consumer.
        errors: failures collected in ``Pipeline.errors``.
        elapsed: seconds since the pipeline started (until it ended).
        running: True while any of its threads is alive.
    """

    stages: tuple[StageStatistics, ...]
    source_items: int
    delivered: int
    errors: int
    elapsed: float
    running: bool

    @property
    def throughput(self) -> float:
        """Results delivered per second."""
        return self.delivered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def bottleneck(self) -> str | None:
        """The name of the stage whose workers were busiest (None without stages)."""
        if not self.stages:
            return None
        return max(self.stages, key=lambda s: s.utilisation).name

    def table(self) -> str:
        """The statistics as a small text table, one row per stage."""
        head = ("stage", "engine", "in", "out", "errors", "busy", "queue max/mean/size", "blocked s", "state")
        rows = [head] + [
            (s.name, f"{s.mode or '?'} x{s.workers}", str(s.items_in), str(s.items_out), str(s.errors),
             f"{s.utilisation:.0%}", f"{s.queue_max}/{s.queue_mean:.1f}/{s.queue_maxsize}", f"{s.blocked:.2f}",
             s.state)
            for s in self.stages
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.append(f"{self.source_items} read, {self.delivered} delivered, {self.errors} collected errors, "
                     f"{self.elapsed:.2f} s, {self.throughput:,.1f}/s; bottleneck: {self.bottleneck}")
        return "\n".join(lines)


class PipelineProgress:
    """``progress=True``: one line per stage, refreshed from ``snapshot()`` by its own thread."""

    def __init__(self, snapshot: Callable[[], PipelineStatistics], totals: list[int | None],
                 console: Any = None) -> None:
        self._snapshot = snapshot
        self._totals = totals
        self._stop = threading.Event()
        self._progress: Any = None
        self._tasks: list[Any] = []
        self._thread: threading.Thread | None = None
        self._last_log = time.perf_counter()
        if console is not None or sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                # markup=False: "[threads x4]" in a description is text, not a rich style tag.
                TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console, transient=False,
            )

    def start(self) -> None:
        first = self._snapshot()
        if self._progress is not None:
            for stage, total in zip(first.stages, self._totals, strict=True):
                self._tasks.append(self._progress.add_task(stage.name, total=total, info=""))
            self._progress.start()
        self._thread = threading.Thread(target=self._loop, name="taskloom-pipeline-progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = REFRESH_EVERY if self._progress is not None else LOG_EVERY
        while not self._stop.wait(interval):  # a refresh period, not a way to notice the end
            self._show(self._snapshot())

    def _show(self, stats: PipelineStatistics) -> None:
        if self._progress is not None:
            for task, stage in zip(self._tasks, stats.stages, strict=True):
                errors = f" [red]{stage.errors} errors[/red]" if stage.errors else ""
                info = (f"{stage.rate:,.1f}/s  queue {stage.queue_depth}/{stage.queue_maxsize}  "
                        f"busy {stage.utilisation:.0%}{errors}")
                self._progress.update(task, completed=stage.items_out,
                                      description=f"{stage.name} [{stage.mode or '?'} x{stage.workers}]", info=info)
        else:
            for stage in stats.stages:
                print(f"taskloom pipeline {stage.line()}", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Stop refreshing and show the final state once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._show(self._snapshot())
        if self._progress is not None:
            self._progress.stop()
