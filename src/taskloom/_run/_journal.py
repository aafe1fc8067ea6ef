"""``journal=``: a run whose finished items survive the process that ran them.

The journal is a file of JSON lines, one per item that ended, appended and flushed as items end::

    {"index": 0, "value": 1}
    {"index": 1, "key": "b.csv", "value_b64": "gASVCg...", "encoding": "pickle", "seconds": 0.0012}
    {"index": 2, "error": {"type": "ValueError", "message": "...", "traceback": "...", "kind": "TaskError"},
     "error_b64": "gASV...", "encoding": "pickle", "attempts": 3}

(``"attempts"`` when not 1; ``"seconds"`` when the item was timed on its own.)

A value that is plain JSON (``None``, bools, ints, finite floats, strings, lists, dicts with string
keys) is stored as itself; any other value, and the error as raised, as the serializer's bytes in
base64 (``pickle`` by default). A run started on an existing journal reads it first: the items it
records are not run again, they are handed out in their place with the rest. An item is known by
its input position, or by ``key(item)`` when the input order may change between runs.

Only the last line can be torn (appends end a line before the next begins): a run killed while
writing leaves one, which is cut off, and that item runs again. A broken line anywhere else means
someone else changed the file, and the run refuses it. Two runs on one journal at once are refused
by a lock (``flock`` on ``<journal>.lock``, released by the kernel even when the holder is killed).

The run drives it: ``filter`` wraps the input (auto mode samples only items still to run),
``segments`` lays out what the filter has seen as consecutive stretches of recorded and live
items, ``ended`` records an item and ``flush`` writes what was recorded since the last flush.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import math
import os
import pickle
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii  # what json.dumps writes for a str (C, when available)
from typing import Any, NamedTuple

from .._errors import JournalError, RemoteTraceback, TaskError

__all__ = ["Journal", "Record", "Segment", "record_line"]

_MAX_DEPTH = 64  # deeper values are stored by the serializer


class Record(NamedTuple):  # a tuple: a resume makes one per recorded item
    """An item the journal holds: its value or its error, how often it ran, how long the last run took."""

    value: Any
    error: TaskError | None
    attempts: int
    seconds: float


_new_record = tuple.__new__


@dataclass(slots=True)
class Segment:
    """Consecutive input items from ``start``: all recorded (``records``) or all still to run (None)."""

    start: int
    items: list[Any]
    records: list[Record] | None


def _scalar(value: Any) -> str | None:
    """``json.dumps(value)`` for the values most tasks return (int, str, finite float, bool, None), fast; else None."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    return None


def plain_json(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` survives ``json.dumps`` then ``json.loads`` as an equal value of the same types."""
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str:
        return True
    if kind is float:
        return math.isfinite(value)
    if depth >= _MAX_DEPTH:
        return False
    if kind is list:
        return all(plain_json(v, depth + 1) for v in value)
    if kind is dict:
        return all(type(k) is str and plain_json(v, depth + 1) for k, v in value.items())
    return False


def _serializer_name(serializer: Any) -> str:
    """What a journal line's "encoding" says: the serializer's ``name``, else its ``__name__`` (``pickle``)."""
    return str(getattr(serializer, "name", None) or getattr(serializer, "__name__", type(serializer).__name__))


class Journal:
    """One run's journal file: what it held when the run started, and what the run adds.

    Args:
        path: the file (created, readable and writable by its owner only, when missing).
        name: the run's name, for messages.
        key: a function of an item giving its identity (a JSON value); None: its input position.
        rerun_failed: run again the items the journal records as failed.
        serializer: ``dumps``/``loads`` for values that are not plain JSON (default ``pickle``).
        extra: more fields for each line, from the item (the command line writes the input there).
        fresh: start the journal empty (once this run holds it) instead of resuming it.

    Raises:
        JournalError: another run holds the journal, or a line other than the last is broken, or
            the journal was written with ``key=`` and this run has none (or the other way round).
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str, key: Callable[[Any], Any] | None = None,
                 rerun_failed: bool = False, serializer: Any = None,
                 extra: Callable[[Any], dict[str, Any]] | None = None, fresh: bool = False) -> None:
        self.path = os.fspath(path)
        self._name = name
        self._key = key
        self._rerun_failed = rerun_failed
        self._serializer = serializer if serializer is not None else pickle
        self._encoding = _serializer_name(self._serializer)
        self._extra = extra
        self.events: collections.deque[tuple[int, Any, Record | None]] = collections.deque()
        self.last_index = -1  # the input position of the item ``filter`` gave last
        self._keys: dict[int, Any] = {}  # live items: input position -> key (key= only)
        self._seen: dict[str, int] = {}  # key= only: canonical key -> the input position that had it
        self._lines: list[str] = []
        self._lock_fd = self._lock()
        self._fd = -1
        try:
            if fresh and os.path.exists(self.path):
                os.truncate(self.path, 0)
            self._raw = self._read()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except BaseException:
            self.close()
            raise

    # -- opening -----------------------------------------------------------------------------------------
    def _lock(self) -> int:
        import fcntl

        lock_path = self.path + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise JournalError(
                f"journal {self.path!r} is in use by another run (process {holder} holds {lock_path!r}): two "
                "runs on one journal would run and record its items twice. Wait for that run to end, or give "
                "this one another journal file"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def _read(self) -> dict[Any, dict[str, Any]]:
        """The journal's records by identity; a torn last line is cut off the file."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return {}
        good = data.rfind(b"\n") + 1  # the whole lines
        if good < len(data):  # no newline at the end: torn by a kill; that item runs again
            os.truncate(self.path, good)
        lines = data[:good].split(b"\n")[:-1]
        if not lines:
            return {}
        try:  # one parse for the whole file (a line at a time costs ~7x more)
            parsed = json.loads(b"[" + b",".join(lines) + b"]")
        except ValueError:
            parsed = None
        if type(parsed) is not list or len(parsed) != len(lines):  # a line holds no value, or two: find it
            parsed = [self._parse(number, line) for number, line in enumerate(lines, 1)]
        self._check_keyed(type(parsed[0]) is dict and "key" in parsed[0])
        records: dict[Any, dict[str, Any]] = {}
        keyed = self._key is not None
        for number, record in enumerate(parsed, 1):
            if type(record) is not dict or type(record.get("index")) is not int \
                    or not ("value" in record or "value_b64" in record or "error" in record):
                self._refuse(number, "no index, or neither value nor error")
            # a later line wins (a rerun_failed run records an item again)
            records[json.dumps(record.get("key"), sort_keys=True) if keyed else record["index"]] = record
        return records

    def _parse(self, number: int, line: bytes) -> Any:
        try:
            return json.loads(line)
        except ValueError as exc:
            self._refuse(number, str(exc))

    def _refuse(self, number: int, why: str) -> Any:
        raise JournalError(
            f"journal {self.path!r}, line {number}: not a record of taskloom's ({why}). Only the last line "
            "can be torn by a killed run, so something else changed this file: repair or remove that line"
        )

    def _check_keyed(self, keyed: bool) -> None:
        if keyed != (self._key is not None):
            written, now = ("with", "without") if keyed else ("without", "with")
            raise JournalError(
                f"journal {self.path!r} was written {written} key= and this run is {now} it: items would be "
                "matched by the wrong identity. Run with the same key= setting as the run that wrote it"
            )

    # -- the input ---------------------------------------------------------------------------------------
    def filter(self, items: Iterable[Any]) -> Iterator[Any]:
        """The items still to run; every item seen (recorded or not) is noted in ``events``, in order."""
        key_of, pop, note, decode = self._key, self._raw.pop, self.events.append, self._decode
        rerun_failed = self._rerun_failed
        for index, item in enumerate(items):
            key = None
            ident: int | str = index
            if key_of is not None:
                key = key_of(item)
                ident = self._canonical_key(key, index)
            raw = pop(ident, None)
            if raw is not None:
                record = decode(raw, index)
                if record.error is None or not rerun_failed:
                    note((index, item, record))
                    continue
            if key_of is not None:
                self._keys[index] = key
            note((index, item, None))
            self.last_index = index
            yield item

    def _canonical_key(self, key: Any, index: int) -> str:
        try:
            ident = json.dumps(key, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise JournalError(f"key= must give a JSON value (a str, an int, a tuple of them...): for item {index} "
                               f"it gave {key!r} ({exc})") from None
        first = self._seen.setdefault(ident, index)
        if first != index:
            raise JournalError(f"key= gave items {first} and {index} the same key {key!r}: the journal tells items "
                               "apart by their key, so each item needs its own")
        return ident

    def segments(self, live: int | None) -> list[Segment]:
        """What the input gave since the last call, in order, up to and including the next ``live`` items to run.

        ``live`` None: everything seen (the input has ended, or raised). Each segment is all
        recorded or all to run, and consecutive in the input.
        """
        out: list[Segment] = []
        events, take = self.events, self.events.popleft
        items: list[Any] = []
        records: list[Record] | None = None
        to_run, end = None, -1  # the kind and the end of the segment being built
        while events and (live is None or live > 0):
            index, item, record = take()
            kind = record is None
            if kind is to_run and index == end:
                items.append(item)
                if records is not None:
                    records.append(record)  # type: ignore[arg-type]
            else:
                items, records = [item], (None if kind else [record])  # type: ignore[list-item]
                out.append(Segment(index, items, records))
                to_run = kind
            end = index + 1
            if kind and live is not None:
                live -= 1
        return out

    # -- recording ---------------------------------------------------------------------------------------
    def ended(self, index: int, item: Any, value: Any = None, error: TaskError | None = None, attempts: int = 1,
              seconds: float | None = None) -> None:
        """Note how the item at ``index`` ended (``seconds``: when measured alone); ``flush`` writes it."""
        fields: dict[str, Any] | None = None
        if self._key is not None or self._extra is not None:
            fields = {}
            if self._key is not None:
                fields["key"] = self._keys.pop(index, None)
            if self._extra is not None:
                fields.update(self._extra(item))
        try:
            line = record_line(index, fields, value, error, attempts, seconds, self._serializer)
        except Exception as exc:
            warnings.warn(f"journal {self.path!r}: the value of item {index} of {self._name} cannot be stored "
                          f"({type(exc).__name__}: {exc}); it will run again when the journal is resumed",
                          RuntimeWarning, stacklevel=2)
            return
        self._lines.append(line)

    def ended_values(self, start: int, positions: Iterable[int], items: list[Any], values: list[Any],
                     attempts: dict[int, int], durations: list[float] | None) -> None:
        """``ended`` for the items of a batch at ``positions`` that returned a value (the run's hot path)."""
        lines = self._lines
        plain = self._key is None and self._extra is None
        for pos in positions:
            value = values[pos]
            text = _scalar(value) if plain else None
            tries = attempts.get(pos, 1) if attempts else 1
            if text is None or tries != 1:
                self.ended(start + pos, items[pos], value, None, tries, None if durations is None else durations[pos])
            elif durations is None:
                lines.append(f'{{"index": {start + pos}, "value": {text}}}')
            else:
                lines.append(f'{{"index": {start + pos}, "value": {text}, "seconds": {round(durations[pos], 6)!r}}}')

    def flush(self) -> None:
        """Append what was recorded since the last flush, as whole lines, in one write."""
        if not self._lines or self._fd < 0:
            return
        data = memoryview(("\n".join(self._lines) + "\n").encode())
        self._lines.clear()
        while data:
            written = os.write(self._fd, data)
            data = data[written:]

    def close(self) -> None:
        """Write what is left and let another run have the journal. Safe to call more than once."""
        if self._fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self._fd)
                self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1

    # -- reading a record --------------------------------------------------------------------------------
    def _decode(self, raw: dict[str, Any], index: int) -> Record:
        attempts = int(raw.get("attempts", 1))
        seconds = float(raw.get("seconds", 0.0))
        if "value" in raw:  # the usual record: no NamedTuple.__new__ (a Python function) per item
            return _new_record(Record, (raw["value"], None, attempts, seconds))
        if "error" in raw:
            return Record(None, self._decode_error(raw, index), attempts, seconds)
        if "value" in raw:
            return Record(raw["value"], None, attempts, seconds)
        return Record(self._loads(raw["value_b64"], raw, index), None, attempts, seconds)

    def _loads(self, b64: str, raw: dict[str, Any], index: int) -> Any:
        encoding = raw.get("encoding", "pickle")
        if encoding != self._encoding:
            raise JournalError(f"journal {self.path!r}: item {raw['index']} was stored with serializer {encoding!r}, "
                               f"and this run has {self._encoding!r}: pass the serializer the journal was written with")
        try:
            return self._serializer.loads(base64.b64decode(b64))
        except Exception as exc:
            raise JournalError(f"journal {self.path!r}: the stored value of item {index} cannot be loaded "
                               f"({type(exc).__name__}: {exc})") from exc

    def _decode_error(self, raw: dict[str, Any], index: int) -> TaskError:
        fields = raw["error"]
        loaded: Any = None
        if "error_b64" in raw:
            try:
                loaded = self._loads(raw["error_b64"], raw, index)
            except JournalError:
                loaded = None
        if isinstance(loaded, TaskError):
            error = loaded
        else:
            error = TaskError(f"{self._name} failed on item {index} in an earlier run: "
                              f"{fields.get('type', 'Exception')}: {fields.get('message', '')}",
                              index=index, attempts=int(raw.get("attempts", 1)), stage=self._name)
            if fields.get("traceback"):
                error.__cause__ = RemoteTraceback(fields["traceback"])
        error.index = index  # with key=, the item may have moved
        return error


def record_line(index: int, fields: dict[str, Any] | None, value: Any, error: TaskError | None, attempts: int = 1,
                seconds: float | None = None, serializer: Any = pickle) -> str:
    """One journal line (no newline): the index, ``fields``, the value or the error, then attempts and seconds.

    ``attempts`` is written when not 1, ``seconds`` when known (the item was timed alone). Built
    as text: a long base64 value is not scanned again by a JSON encoder.

    Raises:
        Exception: whatever the serializer raises for a value that is not plain JSON.
    """
    parts = [f'{{"index": {index}']
    if fields:
        parts.append(", " + json.dumps(fields, default=repr)[1:-1])
    if error is None:
        text = _scalar(value)
        if text is None and plain_json(value):
            text = json.dumps(value)
        if text is not None:
            parts.append(f', "value": {text}')
        else:
            b64 = base64.b64encode(serializer.dumps(value)).decode("ascii")
            parts.append(f', "value_b64": "{b64}", "encoding": {json.dumps(_serializer_name(serializer))}')
    else:
        parts.append(f', "error": {json.dumps(_error_fields(error))}')
        with contextlib.suppress(Exception):  # not picklable: the text fields above still describe it
            b64 = base64.b64encode(serializer.dumps(error)).decode("ascii")
            parts.append(f', "error_b64": "{b64}", "encoding": {json.dumps(_serializer_name(serializer))}')
    if attempts != 1:
        parts.append(f', "attempts": {attempts}')
    if seconds is not None:
        parts.append(f', "seconds": {round(seconds, 6)!r}')
    parts.append("}")
    return "".join(parts)


def _error_fields(error: TaskError) -> dict[str, str]:
    """The error as text: what other tools (and people) read."""
    cause = error.__cause__ or error
    tb = error.remote_traceback or "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
    return {"type": type(cause).__name__, "message": str(cause), "traceback": tb, "kind": type(error).__name__}
