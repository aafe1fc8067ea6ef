"""The process engine: what crosses the process boundary, the warm pool, and clean exits."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

import taskloom as tl
from taskloom._pools import live_backends
from tests import helpers
from tests.helpers import counting

REPO = Path(__file__).resolve().parents[1]


def _process_pools() -> list:
    return [b for b in live_backends() if b.name == "processes"]


# -- what cloudpickle carries ------------------------------------------------------------------------
@pytest.mark.smoke
def test_lambdas_and_closures_run_in_processes() -> None:
    offset = 1000

    def closure(x: int) -> int:
        return x + offset

    assert tl.map(lambda x: x * 3, range(50), mode="processes", workers=2) == [x * 3 for x in range(50)]
    assert tl.map(closure, range(50), mode="processes", workers=2) == [x + 1000 for x in range(50)]
    assert tl.starmap(lambda a, b: a * b, [(2, 3), (4, 5)], mode="processes", workers=2) == [6, 20]


@pytest.mark.smoke
def test_locally_defined_class_results_come_back() -> None:
    class Point:
        def __init__(self, x: int) -> None:
            self.x = x

    points = tl.map(Point, range(10), mode="processes", workers=2)
    assert [p.x for p in points] == list(range(10))


# -- per-worker state -------------------------------------------------------------------------------
def test_initializer_runs_once_in_each_worker_before_its_tasks() -> None:
    results = tl.map(helpers.read_state, range(60), chunksize=1,
                     mode=tl.Processes(initializer=helpers.load_state, initargs=("model-v1",)), workers=2)
    assert {value for _, value, _ in results} == {"model-v1"}
    assert {calls for _, _, calls in results} == {1}, "the initializer ran more than once in a worker"
    assert len({pid for pid, _, _ in results}) <= 2


# -- the warm pool -----------------------------------------------------------------------------------
@pytest.mark.smoke
def test_warm_pool_is_reused_across_calls() -> None:
    first = tl.map(helpers.slow_getpid, range(40), mode="processes", workers=2, chunksize=1)
    pools = _process_pools()
    assert len(pools) == 1
    pids = set(pools[0].worker_pids())
    second = tl.map(helpers.slow_getpid, range(40), mode="processes", workers=2, chunksize=1)
    assert set(first) == set(second), "the second call ran on other worker processes"
    assert set(first) <= pids
    assert len(set(first)) <= 2
    assert _process_pools() == pools
    assert set(pools[0].worker_pids()) == pids


@pytest.mark.smoke
def test_shutdown_stops_workers_and_the_next_call_starts_fresh() -> None:
    first = set(tl.map(helpers.slow_getpid, range(20), mode="processes", workers=2, chunksize=1))
    tl.shutdown()
    assert helpers.poll_until(lambda: not any(psutil.pid_exists(p) for p in first), 10), "workers outlived shutdown()"
    second = set(tl.map(helpers.slow_getpid, range(20), mode="processes", workers=2, chunksize=1))
    assert not first & second


@pytest.mark.smoke
def test_workers_are_not_the_caller() -> None:
    import os

    pids = set(tl.map(helpers.getpid, range(20), mode="processes", workers=2))
    assert os.getpid() not in pids


# -- a script that exits ------------------------------------------------------------------------------
SCRIPT = """\
import os
import sys
import time

import psutil

import taskloom


def slow_getpid(_):
    time.sleep(0.005)
    return os.getpid()


if __name__ == "__main__":
    pids = sorted(set(taskloom.map(slow_getpid, range(40), mode="processes", workers=2, chunksize=1)))
    assert pids and os.getpid() not in pids, pids
    everyone = sorted({c.pid for c in psutil.Process().children(recursive=True)} | set(pids))
    print("WORKERS", *pids, flush=True)
    print("CHILDREN", *everyone, flush=True)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.smoke
def test_script_exit_leaves_no_worker_alive(tmp_path: Path) -> None:
    script = tmp_path / "uses_processes.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(maxsplit=1) for line in proc.stdout.splitlines() if line.strip())
    workers = [int(p) for p in lines["WORKERS"].split()]
    everyone = [int(p) for p in lines["CHILDREN"].split()]
    assert workers
    ok = helpers.poll_until(lambda: all(_gone(p) for p in everyone), timeout=10)
    alive = [p for p in everyone if not _gone(p)]
    assert ok, f"processes of the script still alive 10 s after it exited: {alive} (workers: {workers})"


# -- what cannot be pickled ------------------------------------------------------------------------
@pytest.mark.smoke
def test_unpicklable_function_fails_at_once() -> None:
    lock = threading.Lock()

    def locked_task(x: int) -> int:
        with lock:
            return x

    source, tally = counting(range(100))
    t0 = time.monotonic()
    with pytest.raises(tl.SerializationError) as info:
        tl.imap(locked_task, source, mode="processes", workers=2)  # at the call, not on iteration
    assert time.monotonic() - t0 < 10
    err = info.value
    assert err.what == "function"
    assert "locked_task" in str(err)
    assert tally.pulled == 0
    assert all(not pool.worker_pids() for pool in _process_pools()), "a worker started for nothing"
    with pytest.raises(tl.SerializationError) as info2:
        tl.map(locked_task, range(3), mode="processes")
    assert info2.value.what == "function"


@pytest.mark.smoke
@pytest.mark.parametrize("chunksize", [1, 4, "auto"])
def test_unpicklable_item_fails_only_that_item(chunksize: int | str) -> None:
    items = [1, 2, threading.Lock(), 4, 5, 6, 7, 8]
    outcomes = tl.map(helpers.type_name, items, mode="processes", workers=2, chunksize=chunksize,
                      on_error="collect")
    assert [o.index for o in outcomes] == list(range(len(items)))
    bad = outcomes[2]
    assert not bad.ok
    assert isinstance(bad.error, tl.SerializationError)
    assert bad.error.what == "item"
    assert bad.error.index == 2
    assert "lock" in bad.error.item_repr.lower()
    assert [o.value for i, o in enumerate(outcomes) if i != 2] == ["int"] * 7
    assert all(o.ok for i, o in enumerate(outcomes) if i != 2)


@pytest.mark.smoke
def test_unpicklable_item_in_raise_mode() -> None:
    items = [1, 2, threading.Lock(), 4]
    with pytest.raises(tl.SerializationError) as info:
        tl.map(helpers.type_name, items, mode="processes", workers=2, chunksize=1)
    assert info.value.index == 2
    # the pool still works afterwards
    assert tl.map(helpers.square, range(5), mode="processes", workers=2) == [0, 1, 4, 9, 16]


@pytest.mark.smoke
def test_unpicklable_result_fails_only_that_item() -> None:
    outcomes = tl.map(helpers.lock_on_two, range(5), mode="processes", workers=2, chunksize=5, on_error="collect")
    assert [o.ok for o in outcomes] == [True, True, False, True, True]
    assert isinstance(outcomes[2].error, tl.SerializationError), repr(outcomes[2].error)
    assert outcomes[2].error.what == "result"
    assert [o.value for o in outcomes if o.ok] == [0, 1, 3, 4]


@pytest.mark.smoke
def test_task_exception_type_crosses_the_process_boundary() -> None:
    with pytest.raises(tl.TaskError) as info:
        tl.map(helpers.fail_on_seven, range(10), mode="processes", workers=2)
    cause = info.value.__cause__
    assert isinstance(cause, ValueError)
    assert info.value.remote_traceback
    assert "fail_on_seven" in info.value.remote_traceback
