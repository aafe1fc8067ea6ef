"""``taskloom map module:function INPUT -o OUTPUT``: a resumable command-line runner.

Each input record is the function's one argument (``--star``: a JSON list is unpacked). Each result
is one JSON line, written as soon as it is known::

    {"index": 3, "input": ..., "value": ...}
    {"index": 4, "input": ..., "error": {"type": "ValueError", "message": "...", "traceback": "..."}}

``--resume`` reads OUTPUT first and skips the indexes already there, so a killed run restarts
where it stopped: nothing done twice, nothing lost. A run killed mid-write leaves a torn last line;
it is cut off and that item is done again.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import IO, Any

from ._inputs import InputError, load_function, read_records

__all__ = ["run_map"]

FLUSH_EVERY = 0.2  # seconds: results reach OUTPUT at least this often


class _Apply:
    """Calls the function on the record of an ``(index, record)`` pair; pickles by reference."""

    def __init__(self, fn: Callable[..., Any], star: bool) -> None:
        self.fn, self.star = fn, star

    def __call__(self, pair: tuple[int, Any]) -> Any:
        record = pair[1]
        if self.star:
            if not isinstance(record, list):
                raise TypeError(f"--star needs each record to be a JSON list, got {type(record).__name__}")
            return self.fn(*record)
        return self.fn(record)


def done_indexes(path: str) -> set[int]:
    """Indexes already in OUTPUT; a torn last line (a run killed mid-write) is cut off."""
    if not os.path.exists(path):
        return set()
    done: set[int] = set()
    with open(path, "rb+") as f:
        data = f.read()
        good = 0  # bytes up to the end of the last complete, valid line
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                done.add(int(json.loads(line)["index"]))
            except (ValueError, KeyError, TypeError):
                break  # a garbled line: everything from here on is redone
            good += len(line)
        if good < len(data):
            f.truncate(good)
    return done


def _error_json(error: BaseException) -> dict[str, str]:
    cause = error.__cause__ or error
    remote = getattr(error, "remote_traceback", None)
    tb = remote or "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
    return {"type": type(cause).__name__, "message": str(cause), "traceback": tb}


def run_map(spec: str, source: str, *, output: str | None, fmt: str | None, star: bool, mode: str,
            workers: int | None, timeout: float | None, retries: int, ordered: bool, progress: bool,
            resume: bool) -> int:
    """Run the command; returns the exit code (0 all ok, 1 some failed, 2 bad usage)."""
    import taskloom

    if resume and output is None:
        raise InputError("--resume needs -o OUTPUT (it reads what a previous run wrote there)")
    fn = load_function(spec)
    skip = done_indexes(output) if resume and output else set()
    records = read_records(source, fmt)
    first = next(records, _END)  # an unreadable or empty input is reported before anything runs

    def pairs() -> Iterator[tuple[int, Any]]:
        if first is _END:
            return
        for index, record in enumerate(_chain(first, records)):
            if index not in skip:
                yield index, record

    out: IO[str] = open(output, "a" if resume else "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    ok = failed = 0
    try:
        run = taskloom.imap(_Apply(fn, star), pairs(), mode=mode, workers=workers, timeout=timeout,
                            retries=retries, ordered=ordered, on_error="collect", progress=progress)
        last_flush = time.monotonic()
        for outcome in run:
            index, record = outcome.item
            line: dict[str, Any] = {"index": index, "input": record}
            if outcome.error is None:
                line["value"] = outcome.value
                ok += 1
            else:
                line["error"] = _error_json(outcome.error)
                failed += 1
            out.write(json.dumps(line, default=repr) + "\n")
            if time.monotonic() - last_flush >= FLUSH_EVERY:
                out.flush()
                last_flush = time.monotonic()
    finally:
        out.flush()
        if out is not sys.stdout:
            out.close()
    skipped = f", {len(skip)} already done" if skip else ""
    print(f"taskloom map: {ok} succeeded, {failed} failed{skipped}", file=sys.stderr)
    return 1 if failed else 0


_END = object()


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
