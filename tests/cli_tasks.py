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
