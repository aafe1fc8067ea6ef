"""Functions that `taskloom advise` / `taskloom map` tests name as tests.cli_tasks:NAME."""

from __future__ import annotations

import time
from typing import Any


def spin(line: str) -> int:
    return sum(i * i for i in range(int(line)))


def wait(record: Any) -> Any:
    time.sleep(0.01)
    return record


NOT_CALLABLE = 42


def inc(line: str) -> int:
    return int(line) + 1


def add(a: int, b: int) -> int:
    return a + b


def slow_inc(line: str) -> int:
    time.sleep(0.01)
    return int(line) + 1


def row_total(row: dict[str, str]) -> int:
    return int(row["a"]) + int(row["b"])
