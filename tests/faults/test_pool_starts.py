"""Worker deaths at start-up and between tasks, a dead fork server, a failing manager thread.

Each costs no task and no hang: a worker that dies before it holds a task is replaced, the fork
server is started again when it is needed, and a failure inside the pool's manager thread reaches
the run as an error that names it instead of ending the thread (the run would wait for ever).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

import taskloom as tl
from taskloom._backends import _forkserver
from taskloom._backends._processes import ProcessBackend

from . import tasks
from .support import Consumer, assert_gone, consume_ok, process_backend, record_thread_deaths, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("times", [2, 6])
def test_workers_killed_while_they_start_cost_no_task(tmp_path: Path, times: int) -> None:
    # 6 kills in a row is past the limit for workers that exit by themselves (3), not for kills.
    mode = tl.Processes(initializer=tasks.die_at_start, initargs=(str(tmp_path), times), crash_retries=0)
    assert tl.map(tasks.square, range(20), mode=mode, workers=2) == [i * i for i in range(20)]
    assert len(tasks.marks(str(tmp_path), "start")) == times
    assert_gone(tasks.marks(str(tmp_path), "start"), "the workers killed at start")


def test_workers_that_keep_exiting_at_start_end_the_run_with_the_cause(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deaths = record_thread_deaths(monkeypatch)
    mode = tl.Processes(initializer=tasks.die_at_start, initargs=(str(tmp_path), 1000, "exit"), crash_retries=0)
    with pytest.raises(tl.TaskError) as info:
        tl.map(tasks.square, range(4), mode=mode, workers=2)
    text = str(info.value)
    assert "3 worker processes in a row failed to start" in text, text
    assert "exited with code 3 before it was ready" in text, text
    assert "initializer" in text, text
    assert not deaths


def test_a_worker_killed_while_idle_costs_no_task() -> None:
    mode = tl.Processes(crash_retries=0)
    first = set(tl.map(tasks.getpid, range(4), mode=mode, workers=2))
    victim = sorted(first)[0]
    os.kill(victim, signal.SIGKILL)
    assert_gone([victim], "the idle worker")
    again = tl.map(tasks.getpid, range(20), mode=mode, workers=2)
    assert victim not in again
    assert len(again) == 20


def test_killing_the_fork_server_mid_run_costs_no_task_and_no_hang() -> None:
    # Workers recycle every 5 tasks, so the run needs new workers after the server is gone.
    mode = tl.Processes(max_tasks_per_worker=5, crash_retries=0)
    run = tl.imap(tasks.short_square, range(400), mode=mode, workers=2)
    consumer = Consumer(run)
    wait_until(lambda: _forkserver.server_pid() is not None and process_backend().worker_pids() != [],
               "the pool started")
    server = _forkserver.server_pid()
    assert server is not None
    os.kill(server, signal.SIGKILL)
    results = consumer.finish_ok(timeout=100)
    assert results == [i * i for i in range(400)]
    assert _forkserver.server_pid() not in (None, server), "a new fork server started"


def test_a_fork_server_killed_between_runs_is_replaced() -> None:
    assert tl.map(tasks.square, [1, 2], mode="processes", workers=2) == [1, 4]
    server = _forkserver.server_pid()
    assert server is not None
    os.kill(server, signal.SIGKILL)  # the pool's workers stay; only the server goes
    assert_gone([server], "the fork server")
    for w in process_backend().worker_pids():
        os.kill(w, signal.SIGKILL)
    assert tl.map(tasks.square, [3, 4], mode=tl.Processes(crash_retries=0), workers=2) == [9, 16]


def test_a_failing_start_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    deaths = record_thread_deaths(monkeypatch)
    real = _forkserver.start_worker
    calls: list[int] = []

    def flaky(*args: Any) -> Any:
        calls.append(1)
        if len(calls) <= 2:
            raise OSError("no more processes (test)")
        return real(*args)

    monkeypatch.setattr(_forkserver, "start_worker", flaky)
    assert tl.map(tasks.square, range(10), mode=tl.Processes(crash_retries=0), workers=2) == [i * i for i in range(10)]
    assert len(calls) >= 3
    assert not deaths


def test_a_start_that_always_fails_ends_the_run_with_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    deaths = record_thread_deaths(monkeypatch)

    def broken(*args: Any) -> Any:
        raise OSError("no more processes (test)")

    monkeypatch.setattr(_forkserver, "start_worker", broken)
    with pytest.raises(tl.TaskError) as info:
        tl.map(tasks.square, range(4), mode="processes", workers=2)
    assert "could not be started: OSError: no more processes (test)" in str(info.value)
    assert not deaths, deaths


def test_an_error_in_the_manager_thread_reaches_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    deaths = record_thread_deaths(monkeypatch)

    def bug(self: ProcessBackend) -> None:
        raise RuntimeError("a bug in dispatch (test)")

    monkeypatch.setattr(ProcessBackend, "_dispatch", bug)
    with pytest.raises(tl.TaskError) as info:
        tl.map(tasks.square, range(4), mode="processes", workers=2)
    assert "RuntimeError: a bug in dispatch (test)" in str(info.value)
    assert not deaths, deaths
    managers = [t for t in threading.enumerate() if t.name == "taskloom-pool"]
    assert managers
    assert all(t.is_alive() for t in managers)
    monkeypatch.undo()
    assert consume_ok(tl.imap(tasks.square, range(4), mode="processes", workers=2)) == [0, 1, 4, 9]


def test_auto_starts_no_process_pool_for_work_it_runs_sequentially() -> None:
    assert tl.map(tasks.square, range(2000)) == [i * i for i in range(2000)]  # tiny tasks: the loop
    assert [b.name for b in tl._pools.live_backends() if b.name == "processes"] == []
    assert _forkserver.server_pid() is None
