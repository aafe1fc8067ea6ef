"""Tasks for the Executor tests that run in worker processes or child interpreters (importable by
reference: ``tests.executor_tasks.<name>``). Kept light: no pytest import.

Processes signal each other through files (a parent cannot hand a worker an Event by pickling):
``wait_for_file`` waits, bounded, for a file another process creates with ``touch``.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.helpers import write_marker


def sleep_and_print(seconds: float, message: str) -> None:
    """CPython's test_concurrent_futures.sleep_and_print."""
    time.sleep(seconds)
    print(message)
    sys.stdout.flush()


def touch(path: str) -> bool:
    Path(path).touch()
    return True


def wait_for_file(path: str, timeout: float) -> bool:
    """True as soon as ``path`` exists; False if it still does not after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def announce_then_wait(started: str, go: str, timeout: float) -> int:
    """Write this process's pid to ``started`` (atomically), then wait for ``go``; the pid."""
    write_marker(started)
    wait_for_file(go, timeout)
    return os.getpid()


# -- (un)pickling faults, as in CPython's test_concurrent_futures -------------------------------------
class ErrorAtPickle:
    """Raises pickle.PicklingError when pickled."""

    def __reduce__(self) -> Any:
        raise pickle.PicklingError("Error in pickle")


def _raise_unpickling_error() -> None:
    raise pickle.UnpicklingError("Error in unpickle")


class ErrorAtUnpickle:
    """Pickles fine; raises pickle.UnpicklingError where it is unpickled."""

    def __reduce__(self) -> Any:
        return _raise_unpickling_error, ()


def return_instance(cls: type) -> Any:
    return cls()


# -- initializers --------------------------------------------------------------------------------------
_STATE: dict[str, Any] = {}
_thread_state = threading.local()


def remember(value: Any) -> None:
    """An initializer: keeps ``value`` for the tasks of this worker (process and thread)."""
    _STATE["value"] = value
    _thread_state.value = value


def remembered(_: object = None) -> Any:
    """What ``remember`` kept in this thread (threads) or process."""
    return getattr(_thread_state, "value", _STATE.get("value"))


def fail_to_initialize(*_: Any) -> None:
    raise ValueError("error in initializer")


def put_then_fail(queue: Any) -> None:
    """An initializer that reports through a multiprocessing Queue, then fails (as CPython's test)."""
    logger = logging.getLogger("concurrent.futures")
    queue.put(f"initializer ran in {os.getpid()}")
    logger.propagate = False
    raise ValueError("error in initializer")


def put_pid(queue: Any) -> None:
    queue.put(os.getpid())


def getpid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()
