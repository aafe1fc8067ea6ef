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
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import taskloom as tl
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


class _Interrupted(Exception):
    pass


def _as_map(task: Callable[[Any], Any]) -> Any:
    return tl.map(task, range(3), mode="threads", workers=3)


def _as_pipeline(task: Callable[[Any], Any]) -> Any:
    return list(tl.pipeline(range(3)).then(task, mode="threads", workers=3))


@pytest.mark.parametrize("consume", [_as_map, _as_pipeline], ids=["map", "pipeline"])
def test_a_signal_landing_on_another_thread_reaches_a_caller_waiting_for_a_hung_task(
        consume: Callable[[Callable[[Any], Any]], Any]) -> None:
    # A process-directed signal (Ctrl-C, pytest-timeout's SIGALRM) may land on any thread; its
    # Python handler runs when the main thread next runs Python code. A caller blocked in one long
    # wait for the run's next event would not run it while a task hangs: Ctrl-C did nothing.
    all_started, release = threading.Barrier(4), threading.Event()

    def hung(x: int) -> int:
        all_started.wait(30)
        release.wait(60)
        return x

    def signal_from_another_thread() -> None:
        all_started.wait(30)
        # Some time for the caller to settle into its wait (the fix does not need it; without the
        # fix, a signal sent while the caller still handles the tasks' start would be seen at once).
        if not release.wait(0.5):
            signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # the C handler runs in this thread

    def handler(signum: int, frame: Any) -> None:
        raise _Interrupted

    watchdog = threading.Timer(30, release.set)  # the test's own bound: without the fix it ends here, failing
    sender = threading.Thread(target=signal_from_another_thread)
    old = signal.signal(signal.SIGUSR1, handler)
    try:
        watchdog.start()
        sender.start()
        with pytest.raises(_Interrupted):
            consume(hung)
        assert not release.is_set(), "the handler ran only once the hung tasks ended"
    finally:
        signal.signal(signal.SIGUSR1, old)
        release.set()
        watchdog.cancel()
        sender.join(30)
