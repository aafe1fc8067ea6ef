"""A run's options: spelled once (``RunOptions``), checked once, frozen (``Options``).

``map``, ``imap``, ``starmap``, ``amap``, ``aimap``, ``Executor`` and pipeline stages all build
one ``Options`` and hand it to ``open_run``; every check of a bad value lives here, and happens
before any worker starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from ._modes import Mode, ModeLike, parse_mode

__all__ = ["Options", "RunOptions"]

OnError = Literal["raise", "collect"]
Chunksize = int | Literal["auto"]
RetryOn = type[BaseException] | tuple[type[BaseException], ...]


class RunOptions(TypedDict, total=False):
    """The keyword options of ``map``, ``imap``, ``starmap``, ``amap`` and ``aimap`` (besides ``on_error``).

    A ``TypedDict``, so a set of options can be kept, typed, and passed on:
    ``opts: taskloom.RunOptions = {"mode": "threads", "workers": 64}``, then
    ``taskloom.map(fetch, urls, **opts)``. See ``imap`` for what each one does.
    """

    mode: ModeLike
    workers: int | None
    chunksize: Chunksize
    ordered: bool
    timeout: float | None
    retries: int
    retry_on: RetryOn
    rate: float | str | None
    backoff: float
    prefetch: int | None
    progress: object
    journal: str | os.PathLike[str] | None
    key: Callable[[Any], Any] | None
    rerun_failed: bool
    serializer: Any


_DEFAULTS: dict[str, Any] = {
    "mode": "auto", "workers": None, "chunksize": "auto", "ordered": True, "timeout": None, "retries": 0,
    "retry_on": (Exception,), "rate": None, "backoff": 0.0, "prefetch": None, "progress": False,
    "journal": None, "key": None, "rerun_failed": False, "serializer": None,
}
_JOURNAL_ONLY = ("key", "rerun_failed", "serializer")


def check_int(name: str, value: object, low: int, allow_none: bool = True) -> None:
    """Refuse anything but an int >= ``low`` (or None when allowed), naming the option."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an integer >= {low}{none}, got {value!r}")


_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(rate: object) -> float | None:
    """``"100/s"``, ``"30/min"``, ``"500/h"`` or a number (per second) -> starts per second."""
    if rate is None:
        return None
    if isinstance(rate, int | float) and not isinstance(rate, bool):
        if rate > 0:
            return float(rate)
    elif isinstance(rate, str):
        count, _, per = rate.replace(" ", "").partition("/")
        try:
            value = float(count)
        except ValueError:
            value = -1.0
        if value > 0 and per.lower() in _PER:
            return value / _PER[per.lower()]
    raise ValueError(f"rate must be a number of starts per second > 0 or a string like '100/s' or '30/min', "
                     f"got {rate!r}")


@dataclass(frozen=True)
class Options:
    """One run's options, checked and normalised.

    ``chunksize`` is None for adaptive batching (``"auto"``), ``rate`` is in starts per second,
    ``retry_on`` is always a tuple.
    """

    mode: Mode
    workers: int | None
    chunksize: int | None
    ordered: bool
    timeout: float | None
    retries: int
    retry_on: tuple[type[BaseException], ...]
    rate: float | None
    backoff: float
    on_error: OnError
    prefetch: int | None
    progress: object
    journal: str | os.PathLike[str] | None = None
    key: Callable[[Any], Any] | None = None
    rerun_failed: bool = False
    serializer: Any = None

    @property
    def collect(self) -> bool:
        """``on_error="collect"``: every item ends as an ``Outcome``."""
        return self.on_error == "collect"

    def replace(self, **changes: Any) -> Options:
        """A copy with ``changes`` (not checked again: for values taskloom itself chose)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def build(cls, fn: object, where: str, *, on_error: object = "raise", allow_auto: bool = True,
              **options: Any) -> Options:
        """Check ``fn`` and every option (named in any error), fill in defaults, freeze.

        Args:
            fn: the function the run will apply (it must be callable).
            where: the public name the options were given to (``"map"``...), for an unknown option.
            on_error: "raise" or "collect".
            allow_auto: whether ``mode="auto"`` is accepted.
            options: the keyword options, as ``RunOptions`` spells them.

        Raises:
            TypeError: an unknown option (the message suggests the nearest one), a value of the wrong type.
            ValueError: a value out of range.
        """
        unknown = [name for name in options if name not in _DEFAULTS]
        if unknown:
            close = difflib.get_close_matches(unknown[0], [*_DEFAULTS, "on_error"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{where}() got an unexpected keyword argument {unknown[0]!r}{hint}")
        o = {**_DEFAULTS, **options}
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        check_int("workers", o["workers"], 1)
        chunksize = o["chunksize"]
        if chunksize != "auto":
            check_int("chunksize", chunksize, 1, allow_none=False)
        timeout = o["timeout"]
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                    or timeout <= 0):
            raise ValueError(f"timeout must be a number of seconds > 0 or None, got {timeout!r}")
        check_int("retries", o["retries"], 0, allow_none=False)
        check_int("prefetch", o["prefetch"], 1)
        if on_error not in ("raise", "collect"):
            raise ValueError(f"on_error must be 'raise' or 'collect', got {on_error!r}")
        if not isinstance(o["ordered"], bool):
            raise TypeError(f"ordered must be True or False, got {o['ordered']!r}")
        retry_on = o["retry_on"]
        classes = retry_on if isinstance(retry_on, tuple) else (retry_on,)
        if not classes or not all(isinstance(c, type) and issubclass(c, BaseException) for c in classes):
            raise TypeError(f"retry_on must be an exception class or a tuple of them, got {retry_on!r}")
        rate = parse_rate(o["rate"])
        progress = o["progress"]
        if not (progress is None or isinstance(progress, bool) or callable(progress)
                or callable(getattr(progress, "update", None))):
            raise TypeError(f"progress must be True, False, a callable or an object with update(n) (like tqdm), "
                            f"got {progress!r}")
        backoff = o["backoff"]
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or backoff < 0:
            raise ValueError(f"backoff must be a number of seconds >= 0, got {backoff!r}")
        _check_journal(o)
        fixed = None if chunksize == "auto" else chunksize
        for option, value in (("timeout", timeout), ("rate", o["rate"])):
            if value is not None and fixed is not None and fixed > 1:
                raise ValueError(
                    f"{option} applies to each task, so tasks are sent one at a time: chunksize must be 1 or "
                    f"'auto' with {option}=, got {chunksize!r}"
                )
        if fixed is None and (timeout is not None or rate is not None):
            fixed = 1
        return cls(
            mode=parse_mode(o["mode"], allow_auto=allow_auto), workers=o["workers"], chunksize=fixed,
            ordered=o["ordered"], timeout=None if timeout is None else float(timeout), retries=o["retries"],
            retry_on=classes, rate=rate, backoff=float(backoff), on_error=on_error,
            prefetch=o["prefetch"], progress=progress, journal=o["journal"], key=o["key"],
            rerun_failed=o["rerun_failed"], serializer=o["serializer"],
        )


def _check_journal(o: dict[str, Any]) -> None:
    check_journal(o["journal"], o["key"], o["rerun_failed"], o["serializer"])


def check_journal(journal: object, key: object, rerun_failed: object, serializer: object) -> None:
    """Refuse bad ``journal=``, ``key=``, ``rerun_failed=`` and ``serializer=`` (map's and pipeline's), naming which."""
    if journal is None:
        given = [name for name, value in zip(_JOURNAL_ONLY, (key, rerun_failed, serializer), strict=True)
                 if value != _DEFAULTS[name]]
        if given:
            raise ValueError(f"{given[0]}= only applies to a run with journal= (the file that records each item)")
        return
    if not isinstance(journal, str | os.PathLike) or not os.fspath(journal):
        raise TypeError(f"journal must be a file path (str or os.PathLike), got {journal!r}")
    if key is not None and not callable(key):
        raise TypeError(f"key must be a function of an item (or None: items are known by position), got {key!r}")
    if not isinstance(rerun_failed, bool):
        raise TypeError(f"rerun_failed must be True or False, got {rerun_failed!r}")
    if serializer is not None and not (callable(getattr(serializer, "dumps", None))
                                       and callable(getattr(serializer, "loads", None))):
        raise TypeError(f"serializer must have dumps(obj) -> bytes and loads(bytes) -> obj (like the pickle module), "
                        f"got {serializer!r}")

