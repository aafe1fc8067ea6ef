"""``taskloom map module:function INPUT -o OUTPUT``: a resumable command-line runner.

Each input record is the function's one argument (``--star``: a JSON list is unpacked). With
``-o OUTPUT`` the output is the run's journal (``journal=`` of ``taskloom.imap``, the one
implementation): one JSON line per record, appended and flushed as each ends::

    {"index": 3, "input": ..., "value": ...}
    {"index": 4, "input": ..., "error": {"type": "ValueError", "message": "...", "traceback": "...", ...}, ...}

``--resume`` keeps what OUTPUT holds and runs only the rest, so a killed run restarts where it
stopped: nothing recorded runs twice, nothing is lost. A run killed mid-write leaves a torn last
line; it is cut off and that record is done again. The exit status is 1 when any record failed,
in this run or (still recorded as failed) in an earlier one. Without ``-o`` the lines go to
stdout, in input order unless ``--unordered``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

from .._options import Options
from .._run._journal import record_line
from .._run._open import open_run
from ._inputs import InputError, load_function, read_records

__all__ = ["run_map"]


class _Apply:
    """Calls the function on one record (``star``: unpacked); pickles by reference."""

    def __init__(self, fn: Callable[..., Any], star: bool) -> None:
        self.fn, self.star = fn, star

    def __call__(self, record: Any) -> Any:
        if self.star:
            if not isinstance(record, list):
                raise TypeError(f"--star needs each record to be a JSON list, got {type(record).__name__}")
            return self.fn(*record)
        return self.fn(record)


def _input_field(record: Any) -> dict[str, Any]:
    return {"input": record}


def run_map(spec: str, source: str, *, output: str | None, fmt: str | None, star: bool, mode: str,
            workers: int | None, timeout: float | None, retries: int, ordered: bool, progress: bool,
            resume: bool, rerun_failed: bool = False) -> int:
    """Run the command; returns the exit code (0 all ok, 1 some failed, 2 bad usage)."""
    if resume and output is None:
        raise InputError("--resume needs -o OUTPUT (it reads what a previous run wrote there)")
    if rerun_failed and not resume:
        raise InputError("--rerun-failed goes with --resume (it runs again what OUTPUT records as failed)")
    fn = load_function(spec)
    records = read_records(source, fmt)
    first = next(records, _END)  # an unreadable or empty input is reported before anything runs
    apply = _Apply(fn, star)
    options = Options.build(apply, "taskloom map", on_error="collect", mode=mode, workers=workers, timeout=timeout,
                            retries=retries, ordered=ordered, progress=progress, journal=output,
                            rerun_failed=rerun_failed)
    items = iter(()) if first is _END else _chain(first, records)
    run = open_run(apply, items, options, name=getattr(fn, "__qualname__", spec),
                   journal_options={"extra": _input_field, "fresh": not resume})
    ok = failed = 0
    out: IO[str] | None = sys.stdout if output is None else None
    with run:
        for outcome in run:
            if outcome.error is None:
                ok += 1
            else:
                failed += 1
            if out is not None:  # no -o: the lines go to stdout (with -o, the journal wrote them)
                out.write(record_line(outcome.index, {"input": outcome.item}, outcome.value, outcome.error,
                                      outcome.attempts, outcome.duration) + "\n")
    before = run.statistics().skipped
    earlier = f" ({before} of them already done by an earlier run)" if before else ""
    print(f"taskloom map: {ok} succeeded, {failed} failed{earlier}", file=sys.stderr)
    return 1 if failed else 0


_END = object()


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
