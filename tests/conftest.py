"""Fixtures for the engine tests.

* After every test: ``taskloom.shutdown()``, then no child process of the test process may be left,
  taskloom's own fork server included (multiprocessing's forkserver and resource tracker excepted:
  they are multiprocessing's, process-wide and shared; tests with ``start_method`` start them).
* ``backend``: the shared behaviour tests run once per engine.
* At start: a SIGINT that this process inherited as *ignored* is restored (see below).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

import taskloom
from tests.helpers import MODES

#: How long children may take to exit after ``taskloom.shutdown()``.
CHILD_EXIT_GRACE = 5.0

# A shell that starts a command in the background (`make test &`, `nohup ... &`, some CI runners)
# starts it with SIGINT ignored, and an ignored signal stays ignored across exec: every script the
# tests start would then ignore Ctrl-C, and Python would not even install its KeyboardInterrupt
# handler. The tests of what Ctrl-C does need what a terminal gives: the default disposition.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _is_shared_helper(proc: psutil.Process, me: int) -> bool:
    """multiprocessing's forkserver or resource tracker, kept for the whole test session.

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
    return "multiprocessing.forkserver" in cmdline or "resource_tracker" in cmdline


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
    session = _session_pids()
    return [p for p in children if _alive(p) and not _is_shared_helper(p, me) and p.pid not in session
            and not _in_session_tree(p, session)]


def _in_session_tree(proc: psutil.Process, session: set[int]) -> bool:
    try:
        return any(parent.pid in session for parent in proc.parents())
    except psutil.Error:
        return False


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


@pytest.fixture(params=[pytest.param(m, marks=pytest.mark.dask) if m == "dask" else m for m in MODES],
                ids=list(MODES))
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The engine name for the shared behaviour tests: use ``task_for(backend, fn)`` for the task.

    For "dask" the runs reach one session-wide cluster by address (TASKLOOM_DASK_ADDRESS), so each
    test connects and disconnects a client of its own without restarting a cluster each time.
    """
    if request.param == "dask":
        monkeypatch.setenv("TASKLOOM_DASK_ADDRESS", request.getfixturevalue("dask_cluster"))
    return str(request.param)


#: Pids of long-lived processes that belong to session fixtures, not to any one test.
SESSION_PIDS: set[int] = set()
#: The session's Dask cluster: its nannies restart killed workers, and those pids count as its own.
SESSION_CLUSTERS: list[Any] = []


def _session_pids() -> set[int]:
    pids = set(SESSION_PIDS)
    for cluster in SESSION_CLUSTERS:
        pids.update(pid for nanny in list(cluster.workers.values()) if (pid := getattr(nanny, "pid", None)))
    return pids


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[str]:
    """A real Dask LocalCluster (2 worker processes) for the whole session; its address."""
    import logging

    from distributed import LocalCluster

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    SESSION_PIDS.update(p.pid for p in psutil.Process().children(recursive=True) if p.pid not in before)
    SESSION_CLUSTERS.append(cluster)
    try:
        yield str(cluster.scheduler_address)
    finally:
        SESSION_CLUSTERS.clear()
        cluster.close()
        SESSION_PIDS.clear()
