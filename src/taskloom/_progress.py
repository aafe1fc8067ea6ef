"""A progress display fed by the scheduler's result events (the same for every backend).

On a terminal it is a rich progress bar (done/total, rate, ETA, errors, mode and workers); on
anything else (CI logs, files) it writes a log line every few seconds instead of escape codes.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

LOG_EVERY = 5.0  # seconds between lines when not on a terminal


def _rich_display() -> bool:
    """A terminal, or Jupyter (where stderr is no terminal but rich renders anyway)."""
    if sys.stderr.isatty():
        return True
    try:
        from IPython import get_ipython  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class ProgressBar:
    """Listens to a run: ``update(done, failed)`` per finished block, ``close()`` at the end."""

    def __init__(self, name: str, mode: str, workers: int, total: int | None) -> None:
        self.name, self.mode, self.workers, self.total = name, mode, workers, total
        self.done = self.failed = 0
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()
        self._last_log = self._t0
        self._closed = False
        self._progress: Any = None
        self._task: Any = None
        if _rich_display():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                # markup=False: "[threads x4]" in the description is text, not a rich style tag.
                TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), TextColumn("{task.fields[errors]}"), transient=False,
            )
            self._task = self._progress.add_task(
                f"{name} [{mode} x{workers}]", total=total, rate="", errors=""
            )
            self._progress.start()

    def update(self, done: int, failed: int) -> None:
        with self._lock:
            if self._closed:
                return
            self.done += done
            self.failed += failed
            now = time.perf_counter()
            rate = self.done / max(now - self._t0, 1e-9)
            if self._progress is not None:
                errors = f"[red]{self.failed} errors" if self.failed else ""
                self._progress.update(self._task, completed=self.done, rate=f"{rate:,.1f}/s", errors=errors)
            elif now - self._last_log >= LOG_EVERY:
                self._last_log = now
                print(self.line(rate), file=sys.stderr, flush=True)

    def line(self, rate: float) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        errors = f", {self.failed} errors" if self.failed else ""
        return f"taskloom {self.name} [{self.mode} x{self.workers}]: {self.done}{of} done, {rate:,.1f}/s{errors}"

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._progress is not None:
                self._progress.stop()
            else:
                rate = self.done / max(time.perf_counter() - self._t0, 1e-9)
                print(self.line(rate), file=sys.stderr, flush=True)


class _Callback:
    """``progress=callable``: called with a ``ProgressUpdate`` after each finished batch."""

    def __init__(self, fn: Any, mode: str, workers: int, total: int | None) -> None:
        from ._stats import ProgressUpdate

        self._make = ProgressUpdate
        self.fn, self.mode, self.workers, self.total = fn, mode, workers, total
        self.done = self.failed = 0
        self._t0 = time.perf_counter()

    def update(self, done: int, failed: int) -> None:
        self.done += done
        self.failed += failed
        self.fn(self._make(self.done, self.failed, self.total, time.perf_counter() - self._t0, self.mode, self.workers))

    def close(self) -> None:
        pass


class _TqdmLike:
    """``progress=tqdm(...)`` or anything with ``update(n)``: advanced by finished tasks.

    Its ``total`` is filled in when it has none and the run knows one. It is the caller's object,
    so taskloom does not close it.
    """

    def __init__(self, bar: Any, total: int | None) -> None:
        self.bar = bar
        if total is not None and getattr(bar, "total", 0) is None:
            bar.total = total

    def update(self, done: int, failed: int) -> None:
        self.bar.update(done)

    def close(self) -> None:
        refresh = getattr(self.bar, "refresh", None)
        if callable(refresh):
            refresh()


def make_listener(progress: object, name: str, mode: str, workers: int, total: int | None) -> Any:
    """The listener for ``progress=``: True (a bar), a callback, a tqdm-like object, or nothing."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return ProgressBar(name, mode, workers, total)
    if callable(getattr(progress, "update", None)):
        return _TqdmLike(progress, total)
    if callable(progress):
        return _Callback(progress, mode, workers, total)
    raise TypeError(f"progress must be True, False, a callable or an object with update(n) (like tqdm), "
                    f"got {progress!r}")
