"""Module-level task functions for the pipeline tests and examples' process stages.

Worker processes import these by reference (``tests.pipeline_tasks.jitter_square``), so this module
stays light: no pytest or hypothesis at module level.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import TypeVar

T = TypeVar("T")


def identity(x: T) -> T:
    return x


def double(x: int) -> int:
    return 2 * x


def inc(x: int) -> int:
    return x + 1


def square(x: int) -> int:
    return x * x


async def aneg(x: int) -> int:
    """An async stage: yields to the loop once, then negates."""
    await asyncio.sleep(0)
    return -x


def jitter_square(x: int) -> int:
    """x * x after a random pause of 0-5 ms, so results finish out of order."""
    time.sleep(random.random() * 0.005)
    return x * x


def jitter_identity(x: T) -> T:
    time.sleep(random.random() * 0.003)
    return x


def fail_on_ten(x: int) -> int:
    if x == 10:
        raise ValueError("ten is right out")
    return x


def tens_fail_on_threes(x: int) -> int:
    """10 * x, except that a multiple of 3 raises ValueError."""
    if x % 3 == 0:
        raise ValueError(f"{x} is a multiple of three")
    return 10 * x


def plus_one_fails_on_fifties(y: int) -> int:
    """y + 1, except that a multiple of 50 raises KeyError."""
    if y % 50 == 0:
        raise KeyError(y)
    return y + 1


def slow_pid(x: int) -> tuple[int, int]:
    """(x, pid) after 50 ms: slow enough that a pipeline is busy when it is interrupted."""
    time.sleep(0.05)
    return x, os.getpid()


def is_even(x: int) -> bool:
    return x % 2 == 0


def chunks_of_two(x: int) -> list[int]:
    """[x, x] - something for ``flatten`` to take apart."""
    return [x, x]
