"""Tasks and a runner for the journal tests: each execution is logged, so a test can count runs.

``python -m tests.journal_tasks MODE JOURNAL LOGDIR N`` maps ``logged`` over ``range(N)`` with that
journal and prints the outcomes as JSON: the process the fault tests SIGKILL and start again.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def logged(logdir: str, x: int, pause: float = 0.0) -> int:
    """Append ``x`` to ``logdir/runs.log`` (one small O_APPEND write: whole lines), then ``x * x``.

    Every 10th item from 3 raises ``ValueError``, so journals hold errors too.
    """
    fd = os.open(os.path.join(logdir, "runs.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{x}\n".encode())
    finally:
        os.close(fd)
    if pause:
        time.sleep(pause)
    if x % 10 == 3:
        raise ValueError(f"item {x} is bad")
    return x * x


class Logged:
    """``logged`` bound to a log directory (a picklable callable for every engine)."""

    def __init__(self, logdir: str | os.PathLike[str], pause: float = 0.0) -> None:
        self.logdir, self.pause = os.fspath(logdir), pause
        self.__name__ = self.__qualname__ = "logged"

    def __call__(self, x: int) -> int:
        return logged(self.logdir, x, self.pause)


async def alogged(logdir: str, pause: float, x: int) -> int:
    import asyncio

    await asyncio.sleep(pause)
    return logged(logdir, x)


def runs(logdir: str | os.PathLike[str]) -> dict[int, int]:
    """How many times each item ran, from the log."""
    counts: dict[int, int] = {}
    path = Path(logdir) / "runs.log"
    for line in path.read_text().splitlines() if path.exists() else []:
        counts[int(line)] = counts.get(int(line), 0) + 1
    return counts


def outcomes_as_json(outcomes: list[Any]) -> list[Any]:
    return [o.value if o.ok else f"{type(o.error).__name__}: {o.error.__cause__}" for o in outcomes]


def expected(n: int) -> list[Any]:
    """What ``outcomes_as_json`` gives for an uninterrupted run over ``range(n)``."""
    return [f"TaskError: item {x} is bad" if x % 10 == 3 else x * x for x in range(n)]


def main() -> None:
    import functools

    import taskloom as tl

    mode, journal, logdir, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    fn: Any = functools.partial(alogged, logdir, 0.01) if mode == "async" else Logged(logdir, 0.01)
    outcomes = tl.map(fn, range(n), mode=mode, workers=4, journal=journal, on_error="collect")
    print(json.dumps(outcomes_as_json(outcomes)))


if __name__ == "__main__":
    main()
