"""Stopping: Ctrl-C, SIGTERM and SIGKILL to a parent process running a long map.

The parent is a real subprocess in its own session (so its process group can be signalled like a
terminal's Ctrl-C). It says READY with its worker pids once both workers have returned results;
then the test signals it and asserts that the parent exits and that nothing it started (workers,
forkserver, resource tracker) is left, within generous bounds. benchmarks/faults.py measures the
real times.

The spec: SIGINT to the whole process group -> the parent raises KeyboardInterrupt and exits
promptly, no worker left behind (workers ignore SIGINT). SIGTERM to the parent -> it exits, no
worker left. SIGKILL to the parent -> its workers notice and exit.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.support import GONE_WITHIN, Parent, assert_gone


@pytest.fixture
def parent(tmp_path: Path) -> Iterator[Parent]:
    p = Parent(tmp_path)
    try:
        p.wait_ready()
        yield p
    finally:
        p.close()  # whatever the outcome, nothing of it outlives the test


def test_ctrl_c_to_the_process_group_stops_the_parent_and_its_workers(parent: Parent) -> None:
    parent.signal_group(signal.SIGINT)
    code = parent.wait_exit(GONE_WITHIN)
    stderr = parent.stderr()
    assert code != 0, f"the parent exited with 0 after Ctrl-C; stderr:\n{stderr}"
    assert "KeyboardInterrupt" in stderr, f"the parent did not raise KeyboardInterrupt; stderr:\n{stderr}"
    # one traceback, the parent's: workers ignore SIGINT and print nothing
    assert stderr.count("KeyboardInterrupt") <= 2, f"several tracebacks:\n{stderr}"
    assert_gone(parent.workers, "workers after Ctrl-C")
    assert_gone(parent.family, "processes the parent started, after Ctrl-C")


def test_sigterm_to_the_parent_leaves_no_worker(parent: Parent) -> None:
    parent.proc.send_signal(signal.SIGTERM)
    code = parent.wait_exit(GONE_WITHIN)
    assert code != 0, f"the parent exited with 0 after SIGTERM; stderr:\n{parent.stderr()}"
    assert_gone(parent.workers, "workers after SIGTERM to the parent")
    assert_gone(parent.family, "processes the parent started, after SIGTERM to the parent")


def test_sigkill_to_the_parent_its_workers_exit(parent: Parent) -> None:
    parent.proc.kill()
    assert parent.wait_exit(GONE_WITHIN) == -signal.SIGKILL
    assert_gone(parent.workers, "workers of a SIGKILLed parent")
    assert_gone(parent.family, "processes started by a SIGKILLed parent")
