"""Tasks for tests/test_free_threaded.py that worker processes import (no pytest here)."""

from __future__ import annotations

import threading
import time


class Made:
    """A result whose end a test can watch (a weak reference), made wherever the task runs."""

    def __init__(self, value: int) -> None:
        self.value = value


def make(value: int) -> Made:
    return Made(value)


async def make_async(value: int) -> Made:
    return Made(value)


SERIAL = threading.Lock()


def serialised_spin(seconds: float) -> float:
    """Computes for ``seconds`` of its thread's CPU time holding one lock: never parallel on threads.

    Each worker process has a lock of its own, so processes do run it in parallel.
    """
    with SERIAL:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass
    return seconds


def spin(seconds: float) -> float:
    """Computes for ``seconds`` of its thread's CPU time, sharing nothing."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return seconds
