"""Picklable joblib tasks for tests/test_joblib_backend.py (the estimators are in joblib_estimators.py).

They live in an importable module (not in the test file) so that worker processes, which import
them by name, find them; this one does not import scikit-learn, so a worker that runs only these
starts fast.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from tests.helpers import write_marker


# -- plain joblib tasks -----------------------------------------------------------------------------------
def square(i: int) -> int:
    return i * i


def square_and_pid(i: int) -> tuple[int, int]:
    return i * i, os.getpid()


def pid(_: object = None) -> int:
    return os.getpid()


def crash_if(crash: bool, i: int) -> int:
    """SIGKILL this worker when ``crash``: a segfault or an OOM kill looks the same to the pool."""
    if crash:
        os.kill(os.getpid(), signal.SIGKILL)
    return i


def boom(i: int) -> int:
    raise ValueError(f"boom {i}")


def fail_once(marker: str, i: int) -> int:
    """Raise on the first call (no ``marker`` file yet), return ``i`` after."""
    path = Path(marker)
    if not path.exists():
        write_marker(path, "failed once")
        raise RuntimeError(f"first attempt of task {i} fails")
    return i


def hang_if(hang: bool, started_dir: str, i: int) -> int:
    """Write ``started_dir/<i>`` (holding this pid) and, when ``hang``, never return."""
    write_marker(Path(started_dir, str(i)))
    if hang:
        threading.Event().wait()
    return i


def nested_pids(n: int) -> tuple[int, list[int]]:
    """A joblib Parallel inside a task: joblib's nested backend (threads) runs it here."""
    import joblib

    inner = joblib.Parallel(n_jobs=2)(joblib.delayed(pid)(i) for i in range(n))
    return os.getpid(), inner


def import_estimators() -> None:
    """A worker initializer: import scikit-learn before the first task, so that a short
    ``timeout`` in a test is not spent importing it (a fresh worker takes a second or more)."""
    import tests.joblib_estimators  # noqa: F401

