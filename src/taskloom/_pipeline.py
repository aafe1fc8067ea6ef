"""Pipelines: producer/consumer stages, each on its own engine, joined by bounded queues.

A ``Run`` is pulled by its consumer, so ``imap(g, imap(f, items))`` in one thread would stall
``f`` whenever ``g`` waits. A pipeline therefore gives every stage its own *pump* thread, which
iterates that stage's ``Run`` and pushes the results into the next bounded queue::

    source ─▶ feeder ─(steps)─▶ [queue 0] ─▶ pump 0 ─(steps)─▶ [queue 1] ─▶ pump 1 ─(steps)─▶ [out] ─▶ consumer
              thread            bounded      │ Run(fn0)          bounded      │ Run(fn1)          bounded
                                             ▼                                ▼
                                   workers (its engine)            workers (its engine)

    A run reads its queue with take(), which never blocks; a put into an empty queue wakes it.
    In-band, in order, behind the items:  END (the stream is over) · Failure(error) (it stopped on an error).
    Out of band, Pipeline close():        abort every queue (each blocked put/get returns at once),
                                          Run.cancel() on every stage, join the pump threads.

* **Back-pressure.** Every queue is bounded (``maxsize``), a run reads its input only as fast as its
  window allows, and a pump blocks on a full queue: an endless source is read no faster than the
  slowest stage. A stage holds at most ``maxsize`` queued items plus ``max(2 x workers, maxsize)``
  items in its run plus the one its pump is passing on (see ``Pipeline``).
* **Shutdown without timeouts.** The end of the source travels as an ``END`` marker through every
  queue; each pump forwards it once its run has drained. Leaving the loop early (``break``,
  ``islice``), ``cancel()``, Ctrl-C or an exception in the loop body closes the pipeline: every queue
  is aborted (which wakes every thread blocked on one), every run is cancelled (which frees its
  workers), and the pump threads are joined.
* **Errors.** A failure travels down as a ``Failure`` marker behind the results of the items before
  it, and the stage that failed stops itself and everything upstream at once. So with
  ``ordered=True`` the consumer receives exactly what a plain loop would have produced before
  raising the same ``TaskError`` (named after the stage). ``on_error="collect"`` sends a stage's
  failures to ``Pipeline.errors`` instead.
* **Order.** Each queue has one producer and one consumer, and each stage's run is ordered when
  the pipeline is, so source order holds end to end; ``filter``/``batch``/``flatten`` keep it.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sized
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from ._callables import fn_name, is_coroutine_function
from ._modes import ModeLike
from ._options import Options, check_journal
from ._pipeline_flow import (
    DEFAULT_MAXSIZE,
    END,
    Aborted,
    Execution,
    Failure,
    StageFailure,
    StageSpec,
    StepSpec,
)
from ._pipeline_report import PipelineProgress, PipelineStatistics, StageStatistics

if TYPE_CHECKING:
    from ._pipeline_journal import PipelineJournal

__all__ = ["Pipeline", "PipelineStatistics", "StageFailure", "StageStatistics", "pipeline"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)  # a Pipeline only produces its items: Pipeline[int] is a Pipeline[object]
R = TypeVar("R")

_Node = StageSpec | StepSpec


def _check_size(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


class Pipeline(Generic[T_co]):
    """A lazy chain of stages over a source; iterate it to run it (see ``taskloom.pipeline``).

    Each ``then``/``filter``/``batch``/``flatten`` returns a new ``Pipeline``; nothing runs until
    the pipeline is iterated (or ``run()``/``collect()`` is called). A pipeline over a re-iterable
    source (a list, a range) may be run again; ``errors`` and ``statistics()`` describe the latest
    run. It is also a context manager: leaving the ``with`` block cancels it. Iterating a pipeline
    that is already running (in another loop or thread) raises ``RuntimeError``.

    **Memory bound.** Items read from the source and not yet delivered are at most::

        1 + sum over stages of (maxsize + max(2 x workers, maxsize) + 1) + maxsize of the last stage
          + (n - 1) for each .batch(n)

    (the feeder's item in hand; per stage, its input queue, what its run holds - a window of
    ``workers x 2`` batches of at most ``max(1, maxsize // (2 x workers))`` items - and the item its
    pump is passing on; the output queue). With ``mode="auto"`` a stage may also hold the items it
    sampled (a few dozen at most) until it has passed them on. ``flatten`` can multiply items: what
    it produces counts against the queues after it.
    """

    def __init__(self, source: Iterable[Any], nodes: tuple[_Node, ...], *, ordered: bool, progress: bool,
                 journal: dict[str, Any] | None = None) -> None:
        self._source = source
        self._nodes = nodes
        self._ordered = ordered
        self._progress = progress
        self._journal = journal  # pipeline()'s journal=, key=, rerun_failed=, serializer= (None: no journal)
        self._execution: Execution | None = None

    def __repr__(self) -> str:
        parts = [f"pipeline({type(self._source).__name__})"]
        for node in self._nodes:
            parts.append(f"then({node.name})" if isinstance(node, StageSpec) else node.name)
        return f"<Pipeline {'.'.join(parts)}>"

    # -- building ----------------------------------------------------------------------------------
    def _add(self, node: _Node) -> Pipeline[Any]:
        return Pipeline(self._source, (*self._nodes, node), ordered=self._ordered, progress=self._progress,
                        journal=self._journal)

    @overload
    def then(self, fn: Callable[[T_co], Awaitable[R]], *, name: str | None = ..., mode: ModeLike = ...,
             workers: int | None = ..., maxsize: int | None = ..., on_error: Literal["raise", "collect"] = ...,
             retries: int = ..., timeout: float | None = ...) -> Pipeline[R]: ...
    @overload
    def then(self, fn: Callable[[T_co], R], *, name: str | None = ..., mode: ModeLike = ...,
             workers: int | None = ..., maxsize: int | None = ..., on_error: Literal["raise", "collect"] = ...,
             retries: int = ..., timeout: float | None = ...) -> Pipeline[R]: ...
    def then(
        self,
        fn: Callable[[T_co], Any],
        *,
        name: str | None = None,
        mode: ModeLike = "auto",
        workers: int | None = None,
        maxsize: int | None = None,
        on_error: Literal["raise", "collect"] = "raise",
        retries: int = 0,
        timeout: float | None = None,
    ) -> Pipeline[Any]:
        """Add a stage: ``fn`` runs on every item, on its own engine and workers.

        Args:
            fn: a function of one item; an ``async def`` function runs on asyncio. For
                ``mode="processes"`` it must be importable or picklable by cloudpickle.
            name: the stage's name in errors, statistics and progress (default: ``fn``'s name).
            mode: "auto", "sequential", "threads", "processes", "async", or a mode object.
            workers: workers (or the concurrency cap for async); default as for ``taskloom.map``.
            maxsize: the bound of the queue in front of this stage (default 64). Batches sent to
                workers hold at most ``maxsize // (2 x workers)`` items: raise it for tiny tasks.
            on_error: "raise" - the first failure stops the pipeline and the consumer gets a
                ``TaskError`` naming this stage; "collect" - failures go to ``Pipeline.errors``
                and the stream goes on without them.
            retries: extra attempts for an item whose task raised.
            timeout: seconds one task may run (then it fails with ``TaskTimeout``).

        Returns:
            A new ``Pipeline`` that ends with this stage.

        Raises:
            ValueError, TypeError: a bad argument (checked here, before anything runs).
        """
        options = Options.build(fn, "then", mode=mode, workers=workers, timeout=timeout, retries=retries,
                                on_error=on_error)
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"name must be a non-empty string or None, got {name!r}")
        if maxsize is not None:
            _check_size("maxsize", maxsize)
        label = name or fn_name(fn)
        options.mode.check_function(f"stage {label!r}", is_coroutine_function(fn))
        taken = {n.name for n in self._nodes if isinstance(n, StageSpec)}
        unique, k = label, 2
        while unique in taken:  # the same function twice: tell the stages apart in reports
            unique, k = f"{label}#{k}", k + 1
        return self._add(StageSpec(fn, unique, options, maxsize or DEFAULT_MAXSIZE))

    def filter(self, pred: Callable[[T_co], object]) -> Pipeline[T_co]:
        """Keep the items for which ``pred(item)`` is true (runs in the thread that feeds the next queue).

        A predicate that raises stops the pipeline with a ``TaskError`` naming ``filter(pred)``.
        Make an expensive test a stage instead (``then``) so it runs on workers.
        """
        if not callable(pred):
            raise TypeError(f"pred must be callable, got {pred!r}")
        return self._add(StepSpec("filter", f"filter({fn_name(pred)})", fn=pred))

    def batch(self, n: int) -> Pipeline[list[T_co]]:
        """Group items into lists of ``n`` (the last one may be shorter), in order."""
        _check_size("n", n)
        return self._add(StepSpec("batch", f"batch({n})", n=n))

    def flatten(self: Pipeline[Iterable[R]]) -> Pipeline[R]:
        """Replace each item (an iterable) by its elements, in order."""
        return self._add(StepSpec("flatten", "flatten"))

    # -- running -----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[T_co]:
        """Start the pipeline; results stream out. Leaving the loop early stops every stage."""
        return self._consume()

    def _consume(self) -> Iterator[T_co]:
        # A generator: nothing starts before the first next(), and its finally (run on break,
        # on an exception, on garbage collection) always stops every thread and worker.
        ex = self._start()
        try:
            outbox, journal = ex.outbox, ex.journal
            while True:
                try:
                    entry = outbox.get()
                except Aborted:  # cancel() from another thread
                    return
                if type(entry) is tuple:
                    if journal is not None:  # what the journal holds before this item goes out first
                        yield from journal.reach(entry[0], ex)
                        journal.output(entry[0], entry[1])
                    ex.delivered += 1
                    yield entry[1]
                elif entry is END:
                    if journal is not None:
                        yield from journal.reach(None, ex)
                    return
                elif isinstance(entry, Failure):
                    if journal is not None:
                        index = getattr(entry.error, "index", None)
                        yield from journal.reach(index if isinstance(index, int) else None, ex)
                        journal.failing(entry.error)
                    raise entry.error
        finally:
            ex.close()

    def _start(self) -> Execution:
        current = self._execution
        if current is not None and not current.closed:
            raise RuntimeError("this pipeline is already running: iterate it once at a time")
        stages = [n for n in self._nodes if isinstance(n, StageSpec)]
        segments: list[list[StepSpec]] = [[]]
        for node in self._nodes:
            if isinstance(node, StageSpec):
                segments.append([])
            else:
                segments[-1].append(node)
        source, journal = self._source, None
        if self._journal is not None:
            journal = self._open_journal(stages)
            source = journal.source(source)
        ex = Execution(source, stages, segments, ordered=self._ordered, journal=journal)
        if journal is not None:
            ex.on_close.append(journal.journal.close)
        self._execution = ex
        if self._progress:
            view = PipelineProgress(ex.statistics, self._totals())
            view.start()
            ex.on_close.append(view.close)
        ex.start()
        return ex

    def _open_journal(self, stages: list[StageSpec]) -> PipelineJournal:
        from ._pipeline_journal import PipelineJournal
        from ._run._journal import Journal

        settings = self._journal
        assert settings is not None
        steps = [n.name for n in self._nodes if isinstance(n, StepSpec)]
        if steps and not self._ordered:
            raise ValueError(f"journal= on an unordered pipeline cannot tell when a source item is complete after "
                             f"{steps[0]} (it may drop, merge or multiply items): use ordered=True with journal=")
        journal = Journal(settings["journal"], name="pipeline", key=settings["key"],
                          rerun_failed=settings["rerun_failed"], serializer=settings["serializer"])
        collecting = {s.name for s in stages if s.on_error == "collect"}
        return PipelineJournal(journal, ordered=self._ordered, collecting=collecting)

    def _totals(self) -> list[int | None]:
        """Expected items per stage for the progress bars: known until a filter/batch/flatten."""
        total = len(self._source) if isinstance(self._source, Sized) else None
        totals: list[int | None] = []
        for node in self._nodes:
            if isinstance(node, StepSpec):
                total = None
            else:
                totals.append(total)
        return totals

    def run(self) -> PipelineStatistics:
        """Run to the end, dropping the results; return the statistics.

        Raises:
            TaskError: a stage with on_error="raise" failed (named in ``.stage``).
        """
        for _ in self:
            pass
        return self.statistics()

    def collect(self) -> list[T_co]:
        """Run to the end and return the results as a list.

        Raises:
            TaskError: a stage with on_error="raise" failed (named in ``.stage``).
        """
        return list(self)

    def cancel(self) -> None:
        """Stop the running pipeline from any thread: its consumer gets no more results."""
        if self._execution is not None:
            self._execution.close()

    def __enter__(self) -> Pipeline[T_co]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    # -- reporting ---------------------------------------------------------------------------------
    @property
    def errors(self) -> list[StageFailure]:
        """The failures of stages with on_error="collect" in the latest run, as they happened."""
        return self._execution.errors if self._execution is not None else []

    def statistics(self) -> PipelineStatistics:
        """Per-stage counters of the latest run (safe to call while it runs, from any thread)."""
        if self._execution is not None:
            return self._execution.statistics()
        stages = tuple(
            StageStatistics(n.name, "", 0, "pending", 0, 0, 0, 0.0, 0.0, n.maxsize, 0, 0, 0.0, 0.0)
            for n in self._nodes if isinstance(n, StageSpec)
        )
        return PipelineStatistics(stages, 0, 0, 0, 0.0, False)


def pipeline(source: Iterable[T], *, ordered: bool = True, progress: bool = False,
             journal: str | os.PathLike[str] | None = None, key: Callable[[T], Any] | None = None,
             rerun_failed: bool = False, serializer: Any = None) -> Pipeline[T]:
    """Start building a pipeline over ``source``: add stages with ``.then(...)``, then iterate.

    Example::

        pipe = (taskloom.pipeline(urls, progress=True)
                .then(download, mode="threads", workers=32)
                .then(parse, mode="processes", on_error="collect")
                .then(store, mode="threads", workers=1))
        for row in pipe:
            ...
        print(pipe.statistics().table(), pipe.errors)

    Args:
        source: any iterable, endless ones included; it is read in a thread of its own, no faster
            than the stages take the items.
        ordered: results come out in source order (True), or each as soon as it is ready.
        progress: show one progress line per stage on stderr (a rich display on a terminal,
            plain lines every few seconds elsewhere).
        journal: a file recording, per source item, what came out of the pipeline for it (a
            list of outputs) or its failure; a pipeline run again on it feeds only the source
            items it lacks and hands out the recorded ones in their place (see ``map``'s
            ``journal=``; unordered, it needs a pipeline without filter, batch or flatten).
        key: identifies a source item in the journal (default: its position in the source).
        rerun_failed: run again the source items the journal records as failed.
        serializer: ``dumps``/``loads`` for outputs that are not plain JSON (default ``pickle``).

    Returns:
        A lazy ``Pipeline``: nothing runs until it is iterated.

    Raises:
        TypeError: ``source`` is not iterable, or ``ordered``/``progress`` are not booleans.
        JournalError: (when the pipeline starts) ``journal`` is in use by another run, or is not a journal.
    """
    try:
        iter(source)
    except TypeError:
        raise TypeError(f"source must be iterable, got {type(source).__name__}") from None
    for flag, value in (("ordered", ordered), ("progress", progress)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False, got {value!r}")
    check_journal(journal, key, rerun_failed, serializer)
    settings = None if journal is None else {"journal": journal, "key": key, "rerun_failed": rerun_failed,
                                             "serializer": serializer}
    return Pipeline(source, (), ordered=ordered, progress=progress, journal=settings)

