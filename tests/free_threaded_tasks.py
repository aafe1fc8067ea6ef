"""Tasks for tests/test_free_threaded.py that worker processes import (no pytest here)."""

from __future__ import annotations

import os
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


#: (pid, thread id) of the test's own thread, set by the test (worker processes have another pid)
CALLER: tuple[int, int] | None = None


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def slower_off_the_caller(x: int) -> int:
    """Computes 1 ms in the test's thread and in worker processes, 100x that on any other thread
    of the test's process (as 3.13t ran tasks that update a dict the caller's thread filled)."""
    pid, thread = os.getpid(), threading.get_ident()
    elsewhere = CALLER is not None and pid == CALLER[0] and thread != CALLER[1]
    _spin(0.1 if elsewhere else 0.001)
    return 2 * x
