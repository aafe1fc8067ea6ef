"""``journal=``: a run whose finished items survive the process that ran them.

The journal is a file of JSON lines, one per item that ended, appended and flushed as items end::

    {"index": 0, "value": 1, "attempts": 1, "seconds": 0.0012}
    {"index": 1, "key": "b.csv", "value_b64": "gASVCg...", "encoding": "pickle", ...}
    {"index": 2, "error": {"type": "ValueError", "message": "...", "traceback": "...", "kind": "TaskError"},
     "error_b64": "gASV...", "encoding": "pickle", ...}

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
import json
import math
import os
import pickle
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .._errors import JournalError, RemoteTraceback, TaskError

__all__ = ["Journal", "Record", "Segment", "record_line"]

_MAX_DEPTH = 64  # deeper values are stored by the serializer


@dataclass(frozen=True, slots=True)
class Record:
    """An item the journal holds: its value or its error, how often it ran, how long the last run took."""

    value: Any
    error: TaskError | None
    attempts: int
    seconds: float


@dataclass(slots=True)
class Segment:
    """Consecutive input items from ``start``: all recorded (``records``) or all still to run (None)."""

    start: int
    items: list[Any]
    records: list[Record] | None


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
        self.torn = False  # the last line was torn (cut off when the journal was opened)
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
        lines = data.split(b"\n")
        records: dict[Any, dict[str, Any]] = {}
        good = 0
        for number, line in enumerate(lines[:-1], 1):
            try:
                record = json.loads(line)
                index = record["index"]
                if type(index) is not int or not ("value" in record or "value_b64" in record or "error" in record):
                    raise ValueError("no index, or neither value nor error")
            except (ValueError, KeyError, TypeError) as exc:
                raise JournalError(
                    f"journal {self.path!r}, line {number}: not a record of taskloom's ({exc}). Only the last line "
                    "can be torn by a killed run, so something else changed this file: repair or remove that line"
                ) from None
            if number == 1:
                self._check_keyed("key" in record)
            records[self._identity(index, record.get("key"))] = record  # a later line wins (rerun_failed)
            good += len(line) + 1
        if lines[-1]:  # no newline at the end: torn by a kill; that item runs again
            self.torn = True
            os.truncate(self.path, good)
        return records

    def _check_keyed(self, keyed: bool) -> None:
        if keyed != (self._key is not None):
            written, now = ("with", "without") if keyed else ("without", "with")
            raise JournalError(
                f"journal {self.path!r} was written {written} key= and this run is {now} it: items would be "
                "matched by the wrong identity. Run with the same key= setting as the run that wrote it"
            )

    def _identity(self, index: int, key: Any) -> Any:
        return index if self._key is None else json.dumps(key, sort_keys=True)

    # -- the input ---------------------------------------------------------------------------------------
    def filter(self, items: Iterable[Any]) -> Iterator[Any]:
        """The items still to run; every item seen (recorded or not) is noted in ``events``, in order."""
        key_of = self._key
        for index, item in enumerate(items):
            key = None
            ident: int | str = index
            if key_of is not None:
                key = key_of(item)
                ident = self._canonical_key(key, index)
            raw = self._raw.pop(ident, None)
            if raw is not None:
                record = self._decode(raw, index)
                if record.error is None or not self._rerun_failed:
                    self.events.append((index, item, record))
                    continue
            if key_of is not None:
                self._keys[index] = key
            self.events.append((index, item, None))
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
        events = self.events
        while events and (live is None or live > 0):
            index, item, record = events.popleft()
            last = out[-1] if out else None
            if last is not None and (last.records is None) == (record is None) \
                    and last.start + len(last.items) == index:
                last.items.append(item)
                if record is not None:
                    assert last.records is not None
                    last.records.append(record)
            else:
                out.append(Segment(index, [item], None if record is None else [record]))
            if record is None and live is not None:
                live -= 1
        return out

    # -- recording ---------------------------------------------------------------------------------------
    def ended(self, index: int, item: Any, value: Any = None, error: TaskError | None = None, attempts: int = 1,
              seconds: float = 0.0) -> None:
        """Note how the item at ``index`` ended; ``flush`` writes it."""
        fields: dict[str, Any] = {"index": index}
        if self._key is not None:
            fields["key"] = self._keys.pop(index, None)
        if self._extra is not None:
            fields.update(self._extra(item))
        try:
            line = record_line(fields, value, error, attempts, seconds, self._serializer)
        except Exception as exc:
            warnings.warn(f"journal {self.path!r}: the value of item {index} of {self._name} cannot be stored "
                          f"({type(exc).__name__}: {exc}); it will run again when the journal is resumed",
                          RuntimeWarning, stacklevel=2)
            return
        self._lines.append(line)

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


def record_line(fields: dict[str, Any], value: Any, error: TaskError | None, attempts: int, seconds: float,
                serializer: Any = pickle) -> str:
    """One journal line (no newline): ``fields``, then the value or the error, attempts and seconds.

    Raises:
        Exception: whatever the serializer raises for a value that is not plain JSON.
    """
    line = dict(fields)
    if error is None:
        if plain_json(value):
            line["value"] = value
        else:
            line["value_b64"] = base64.b64encode(serializer.dumps(value)).decode("ascii")
            line["encoding"] = _serializer_name(serializer)
    else:
        line["error"] = _error_fields(error)
        try:
            line["error_b64"] = base64.b64encode(serializer.dumps(error)).decode("ascii")
            line["encoding"] = _serializer_name(serializer)
        except Exception:
            pass
    line["attempts"] = attempts
    line["seconds"] = round(seconds, 6)
    return json.dumps(line, default=repr)


def _error_fields(error: TaskError) -> dict[str, str]:
    """The error as text: what other tools (and people) read."""
    cause = error.__cause__ or error
    tb = error.remote_traceback or "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
    return {"type": type(cause).__name__, "message": str(cause), "traceback": tb, "kind": type(error).__name__}
