"""``open_run``: the one way a run starts, for ``map``, ``imap``, ``amap``, ``Executor`` and pipeline stages.

It asks the mode for every engine fact (which callables it runs, its batching rule, whether tasks
see the caller's context, its backend) and never which mode it has. ``mode="auto"`` is handed to
``_workload``, which measures, chooses an engine, and watches the run for a second look.
"""

from __future__ import annotations

import contextvars
from collections.abc import Hashable, Iterable, Iterator, Sized
from typing import TYPE_CHECKING, Any, NamedTuple

from .._backends._handover import InFlight, items_in
from .._callables import fn_name, is_coroutine_function
from .._options import Options
from .._pools import get_backend
from .._progress import make_listener
from .._sampling import MAX_IO_THREADS
from .._workload import Reconsider, choose
from ._run import Run

if TYPE_CHECKING:
    import asyncio  # not at run time: a first map on threads does not pay for asyncio

    from ._journal import Journal  # imported by a run that has one (json, pickle, base64: ~4 ms)


class CallerLoop(NamedTuple):
    """The event loop ``amap``/``aimap`` were awaited on, and the thread that runs it."""

    loop: asyncio.AbstractEventLoop
    thread: int


def open_run(fn: Any, items: Iterable[Any], options: Options, *, name: str | None = None,
             slot: Hashable = None, caller_loop: CallerLoop | None = None,
             journal_options: dict[str, Any] | None = None) -> Run[Any]:
    """Start applying ``fn`` to ``items`` as ``options`` say; the run is pulled by its consumer.

    Args:
        fn: the function (already checked callable by ``Options.build``).
        items: any iterable, or a ``PushSource`` (Executor, pipeline stage input).
        options: the run's checked options.
        name: the run's name in errors and statistics (default: ``fn``'s).
        slot: keeps this run's pool apart from others of the same engine (a pipeline stage's position).
        caller_loop: ``amap``/``aimap``: an engine that can run on the caller's loop does.
        journal_options: more ``Journal`` arguments (the command line's ``extra`` fields, ``fresh``).

    Raises:
        TypeError: ``items`` is not iterable.
        ValueError: ``fn`` is a kind of callable the engine cannot run.
        SerializationError: the function cannot be sent to worker processes.
        JournalError: ``options.journal`` is in use by another run, or is not a journal.
    """
    try:
        source = iter(items)
    except TypeError:
        raise TypeError(f"items must be iterable, got {type(items).__name__}") from None
    label = name or fn_name(fn)
    journal = None
    if options.journal is not None:  # before auto's sampling: only items the journal lacks run, or are sampled
        from ._journal import Journal

        journal = Journal(options.journal, name=label, key=options.key, rerun_failed=options.rerun_failed,
                          serializer=options.serializer, **(journal_options or {}))
        source = journal.filter(source)
    try:
        return _open(fn, items, source, options, label, slot, caller_loop, journal)
    except BaseException:
        if journal is not None:
            journal.close()
        raise


def _open(fn: Any, items: Iterable[Any], source: Iterator[Any], options: Options, label: str, slot: Hashable,
          caller_loop: CallerLoop | None, journal: Journal | None) -> Run[Any]:
    engine = options.mode
    coroutine = is_coroutine_function(fn)
    engine.check_function(label, coroutine)
    total = len(items) if isinstance(items, Sized) else None
    workers = options.workers
    advice = head = watcher = None
    in_flight: list[InFlight] = []
    sampled = 0  # items auto's sample took from the input (ended, or still running: in_flight)
    if engine.measures:
        # While the first sample task waits, a few more may start beside it (never under a rate
        # limit or a timeout, which sample tasks would not respect).
        overlap = 0 if options.rate is not None or options.timeout is not None else (workers or MAX_IO_THREADS) - 1
        # With a journal, what the sample ran is laid out around what the journal held: only
        # finished tasks are (the run takes unfinished ones over only without one).
        choice = choose(fn, source, total, workers, coroutine, overlap, hand_off=journal is None)
        engine, advice, head, workers, source = choice.engine, choice.advice, choice.head, choice.workers, choice.source
        if choice.sample is not None:  # (one an earlier run measured holds none in flight)
            in_flight = choice.sample.in_flight
        sampled = len(head or ()) + items_in(in_flight)
        if total is not None:
            total -= sampled
        if choice.sample is not None:
            watcher = Reconsider(fn, choice.sample, advice, lambda e, w: get_backend(e, w, slot))
    if workers is None:
        workers = engine.default_workers()
    if options.chunksize is None and (size := engine.batch_size(workers, total)) is not None:
        options = options.replace(chunksize=size)
    backend = engine.open_on_loop(caller_loop.loop, caller_loop.thread, workers) if caller_loop else None
    if backend is None:
        backend = get_backend(engine, workers, slot)
    listener = make_listener(options.progress, label, engine.name, backend.workers,
                             None if total is None else total + sampled)
    return Run(
        fn, source, engine=engine, backend=backend, options=options, name=label, total=total,
        # A run that may switch engines keeps the caller's context too (it may move to threads).
        context=contextvars.copy_context() if engine.sees_caller_context or watcher is not None else None,
        advice=advice, head=head, in_flight=in_flight, listener=listener, watcher=watcher, journal=journal,
    )
