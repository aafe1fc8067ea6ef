"""Which worker processes are still alive: how the examples show that nothing is left behind.

Not an example of its own: context_managers.py, resource_cleanup.py and
producer_consumer_processes.py import it (as the I/O examples import local_server.py).
"""

from __future__ import annotations

import os
import time

import psutil


def worker_processes() -> set[int]:
    """Pids of our live descendants, except multiprocessing's forkserver and resource tracker.

    Forkserver workers are forked from the forkserver and share its command line, so only a
    *direct* child named so is the server itself.
    """
    me, pids = os.getpid(), set()
    for proc in psutil.Process().children(recursive=True):
        try:
            command = " ".join(proc.cmdline())
            helper = proc.ppid() == me and ("forkserver" in command or "resource_tracker" in command)
            if not helper and proc.status() != psutil.STATUS_ZOMBIE:
                pids.add(proc.pid)
        except psutil.Error:
            continue  # gone meanwhile
    return pids


def wait_gone(pids: set[int], timeout: float = 10.0) -> set[int]:
    """The pids still alive after waiting up to ``timeout`` seconds for them to exit."""
    deadline = time.monotonic() + timeout
    while (left := pids & worker_processes()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left
