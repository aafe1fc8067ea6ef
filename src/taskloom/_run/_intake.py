"""A run's input, read only as far as its window asks: any iterator, or a ``PushSource``.

An endless generator is read a batch at a time, when the window has room; a ``PushSource``
(``Executor``, a pipeline stage) is asked with ``take``, which never blocks, and the run notes
that it starved. Time spent inside the input's ``next`` counts as waiting for input.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from ._interfaces import PushSource

if TYPE_CHECKING:
    from ._tally import Tally

#: Iterators over a list or a tuple: read a batch at a time as one slice of the sequence.
_SLICEABLE: tuple[type, ...] = (type(iter([])), type(iter(())))


def _state(source: Iterator[Any]) -> tuple[Any, ...]:
    """A list or tuple iterator's ``(iter, (sequence,), position)``; without the position once exhausted."""
    return cast("tuple[Any, ...]", source.__reduce__())


def _slice(source: Iterator[Any], size: int) -> list[Any] | None:
    """The next ``size`` items of a list or tuple iterator, as one slice of its sequence (None: read
    it item by item, as iteration does: any other iterator, or one over a subclass, whose
    ``__getitem__`` may not give what iterating gives).

    ``islice`` copies an item at a time through the iterator: on 200,000 tiny tasks that was ~15%
    of a sequential run's time, the slice ~6%. The iterator's own state (``__reduce__`` gives the
    sequence and the position, ``__setstate__`` moves it) stays the one truth of where the input
    is, so whoever else reads it (auto's sample) reads on from there.
    """
    if type(source) not in _SLICEABLE:
        return None
    state = _state(source)
    if len(state) < 3:  # exhausted
        return []
    seq, pos = state[1][0], state[2]
    if type(seq) is not list and type(seq) is not tuple:
        return None
    chunk = seq[pos:pos + size]
    source.__setstate__(pos + len(chunk))  # type: ignore[attr-defined]
    return chunk if type(chunk) is list else list(chunk)


def put_back(item: Any, source: Iterator[Any]) -> Iterator[Any]:
    """``source`` as it was before ``next(source)`` gave ``item``: a list or tuple iterator is
    moved back one place (it stays sliceable), any other is chained after ``item``."""
    if type(source) in _SLICEABLE:
        state = _state(source)
        if len(state) == 3 and state[2] > 0:
            source.__setstate__(state[2] - 1)  # type: ignore[attr-defined]
            return source
    return itertools.chain((item,), source)


class Intake:
    """The input of one run; ``open`` until it ended, failed, or was closed (pushed input)."""

    def __init__(self, items: Iterable[Any], tally: Tally) -> None:
        self._source: Iterator[Any] | None = items if isinstance(items, PushSource) else iter(items)
        self._tally = tally
        self.starved = False  # the window has room, but a PushSource had nothing to give

    @property
    def open(self) -> bool:
        """Whether more input may come."""
        return self._source is not None

    @property
    def pushed(self) -> bool:
        """Whether other threads push the input (a ``PushSource``) and it is still open."""
        return isinstance(self._source, PushSource)

    def take(self, size: int) -> tuple[list[Any], Exception | None]:
        """Up to ``size`` items, and the exception if the input raised (it is then closed).

        No items and no error: a PushSource has none yet (``starved``), or the input ended (no
        longer ``open``). When the input raises, the items it gave before are returned with the
        error: they were taken from the input, so they are the run's to finish or drop.
        """
        source = self._source
        assert source is not None
        items: list[Any] = []
        try:
            if isinstance(source, PushSource):
                taken = source.take(size)
                if taken is None:
                    self._source = None
                elif not taken:
                    self.starved = True  # nothing submitted yet: wait for events (submit wakes us)
                return taken or [], None
            # extend() keeps what it appended before the input raised.
            t_in = time.perf_counter()
            try:
                sliced = _slice(source, size)
                if sliced is not None:
                    items = sliced
                else:
                    items.extend(itertools.islice(source, size))
            finally:
                self._tally.waited_for_input(time.perf_counter() - t_in)
        except Exception as exc:
            self._source = None
            return items, exc
        if not items:
            self._source = None
        return items, None
