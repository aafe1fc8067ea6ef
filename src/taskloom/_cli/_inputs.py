"""Reading records from a file or stdin, and finding ``package.module:function`` (shared by commands).

Formats: JSON lines (``.jsonl``, ``.ndjson``: each line one JSON value), CSV (``.csv``: each row a
dict keyed by the header), and plain lines (anything else: each line a string, without its newline).
``-`` reads standard input (plain lines unless ``--format`` says otherwise).
"""

from __future__ import annotations

import csv
import importlib
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

__all__ = ["FORMATS", "guess_format", "load_function", "read_records"]

FORMATS = ("jsonl", "csv", "lines")


class InputError(ValueError):
    """A record could not be read: says which file, which line and why."""


def guess_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "lines"


def _records(stream: TextIO, fmt: str, name: str) -> Iterator[Any]:
    if fmt == "csv":
        yield from csv.DictReader(stream)
    elif fmt == "jsonl":
        for lineno, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{name}, line {lineno}: not valid JSON ({exc.msg}): {line[:80]!r}") from None
    else:
        for line in stream:
            yield line.rstrip("\r\n")


def read_records(path: str, fmt: str | None = None, limit: int | None = None) -> Iterator[Any]:
    """Yield the records of ``path`` (or stdin for ``-``) lazily, at most ``limit`` of them."""
    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if path == "-":
        records = _records(sys.stdin, fmt, "<stdin>")
        yield from itertools.islice(records, limit)
        return
    try:
        stream = open(path, newline="" if fmt == "csv" else None, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot read {path!r}: {exc.strerror}") from None
    with stream:
        yield from itertools.islice(_records(stream, fmt, path), limit)


def load_function(spec: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function; errors say what is missing."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"expected package.module:function, got {spec!r}")
    # Like `python -m`: modules in the current directory can be named.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"cannot import module {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InputError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise InputError(f"{spec} is not callable (it is a {type(obj).__name__})")
    return obj  # type: ignore[no-any-return]
