"""Fixtures for the engine tests.

* After every test: ``taskloom.shutdown()``, then no child process of the test process may be left
  (the multiprocessing forkserver and resource tracker excepted: they are process-wide and shared).
* ``backend``: the shared behaviour tests run once per engine.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import psutil
import pytest

import taskloom
from tests.helpers import MODES

#: How long children may take to exit after ``taskloom.shutdown()``.
CHILD_EXIT_GRACE = 5.0


def _is_shared_helper(proc: psutil.Process, me: int) -> bool:
    """The forkserver or resource tracker that multiprocessing keeps for the whole test session.

    Forkserver *workers* are forked from the forkserver, so they share its command line: only a
    direct child of the test process counts as the server itself.
    """
    try:
        if proc.ppid() != me:
            return False
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True  # gone already
    except psutil.AccessDenied:  # pragma: no cover - our own children
        return False
    return "forkserver" in cmdline or "resource_tracker" in cmdline


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def leftover_children() -> list[psutil.Process]:
    me = os.getpid()
    try:
        children = psutil.Process(me).children(recursive=True)
    except psutil.NoSuchProcess:  # pragma: no cover
        return []
    return [p for p in children if _alive(p) and not _is_shared_helper(p, me)]


def _describe(procs: list[psutil.Process]) -> str:
    lines = []
    for p in procs:
        try:
            lines.append(f"  pid {p.pid} (parent {p.ppid()}): {' '.join(p.cmdline())[:200]}")
        except psutil.Error:
            lines.append(f"  pid {p.pid}: (gone)")
    return "\n".join(lines)


@pytest.fixture(autouse=True)
def _no_child_left_behind() -> Iterator[None]:
    yield
    taskloom.shutdown()
    deadline = time.monotonic() + CHILD_EXIT_GRACE
    left = leftover_children()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = leftover_children()
    if left:
        report = _describe(left)
        # Do not let one leak fail every test after it: end these (our own children, by pid).
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(left, timeout=5)
        pytest.fail(
            f"{len(left)} child process(es) still alive {CHILD_EXIT_GRACE:g} s after taskloom.shutdown():\n"
            f"{report}",
            pytrace=False,
        )


@pytest.fixture(params=MODES, ids=list(MODES))
def backend(request: pytest.FixtureRequest) -> str:
    """The engine name for the shared behaviour tests: use ``task_for(backend, fn)`` for the task."""
    return str(request.param)
