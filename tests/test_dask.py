"""mode="dask" on real clusters: embedded LocalCluster, a given client, and a scheduler with workers
started as separate processes from the `dask` command, one of them SIGKILLed mid-run.

(The shared behaviour suite runs on Dask too: tests/test_behaviour.py with the "dask" backend.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import taskloom as tl
from tests import helpers

DASK = str(Path(sys.executable).with_name("dask"))


def slow_square(x: int) -> int:
    time.sleep(0.02)
    return x * x


def kill_own_worker(x: int) -> int:
    if x == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def sleep_long(x: int) -> int:
    time.sleep(3)
    return x


def sleep_unless_zero(x: int) -> int:
    if x:
        time.sleep(3)
    return x


@pytest.fixture
def no_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKLOOM_DASK_ADDRESS", raising=False)


def test_embedded_local_cluster_is_started_once_and_shut_down(no_address: None) -> None:
    from taskloom._backends import _dask

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    assert tl.map(helpers.square, range(20), mode="dask") == [x * x for x in range(20)]
    conn = next(iter(_dask._connections.values()))
    first_workers = set(conn.client.nthreads())
    assert tl.map(helpers.square, range(5), mode=tl.Dask()) == [x * x for x in range(5)]
    assert set(next(iter(_dask._connections.values())).client.nthreads()) == first_workers  # reused
    cluster_pids = {p.pid for p in psutil.Process().children(recursive=True)
                    if p.pid not in before and "resource_tracker" not in " ".join(p.cmdline())}
    assert len(cluster_pids) >= 2  # real worker processes
    tl.shutdown()
    _gone, alive = psutil.wait_procs([psutil.Process(p) for p in cluster_pids if psutil.pid_exists(p)], timeout=15)
    assert alive == []
    assert _dask._connections == {}


def test_a_given_client_is_used_and_never_closed(dask_cluster: str, no_address: None) -> None:
    from distributed import Client

    with Client(dask_cluster, set_as_default=False) as client:
        assert tl.map(helpers.square, range(10), mode=tl.Dask(client=client)) == [x * x for x in range(10)]
        tl.shutdown()
        assert client.submit(helpers.square, 3).result(timeout=30) == 9  # still open


def test_tiny_tasks_are_batched(dask_cluster: str, no_address: None) -> None:
    run = tl.imap(helpers.square, range(20_000), mode=tl.Dask(address=dask_cluster))
    assert list(run) == [x * x for x in range(20_000)]
    assert run.statistics().batches < 2_000  # not one Dask task per item


def test_worker_death_becomes_worker_crashed(dask_cluster: str, no_address: None) -> None:
    # The killer runs alone: each death also loses whatever else that worker held (Dask may then
    # count a neighbour's task as suspicious too), which is Dask's behaviour, not what is tested.
    [outcome] = tl.map(kill_own_worker, [1], mode=tl.Dask(address=dask_cluster), on_error="collect")
    assert isinstance(outcome.error, tl.WorkerCrashed)
    assert "KilledWorker" in str(outcome.error)
    assert tl.map(helpers.square, [2, 3], mode=tl.Dask(address=dask_cluster)) == [4, 9]  # the cluster lives on


def test_a_task_dask_cancels_behind_our_back_is_reported_not_waited_for(dask_cluster: str,
                                                                        no_address: None) -> None:
    import distributed

    from taskloom._pools import live_backends

    run = tl.imap(sleep_long, [1], mode=tl.Dask(address=dask_cluster), on_error="collect")
    taken: list[object] = []
    consumer = threading.Thread(target=lambda: taken.extend(run), daemon=True)
    consumer.start()
    backend = next(b for b in live_backends() if b.name == "dask")
    deadline = time.monotonic() + 30
    while not backend._futures:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the batch never reached Dask"
        time.sleep(0.01)
    [key] = [f.key for f in backend._futures.values()]  # type: ignore[attr-defined]
    with distributed.Client(dask_cluster, set_as_default=False) as other:
        other.cancel([distributed.Future(key, other)], force=True)  # another client drops the task
    consumer.join(60)
    assert not consumer.is_alive(), "the run waited forever for a task Dask had cancelled"
    [outcome] = taken
    assert outcome.ok or "Dask cancelled" in str(outcome.error)  # retried once, or reported


def test_timeout_is_reported_on_time(dask_cluster: str, no_address: None) -> None:
    t0 = time.monotonic()
    outcomes = tl.map(sleep_long, [1], mode=tl.Dask(address=dask_cluster), timeout=0.5, on_error="collect")
    assert isinstance(outcomes[0].error, tl.TaskTimeout)
    assert time.monotonic() - t0 < 2.5  # before the 3 s task would have ended (generous bound)


def test_executor_on_dask(dask_cluster: str, no_address: None) -> None:
    with tl.Executor(tl.Dask(address=dask_cluster)) as ex:
        futures = [ex.submit(helpers.square, i) for i in range(10)]
        assert [f.result(timeout=60) for f in futures] == [i * i for i in range(10)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def process_cluster(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1 (no nanny: a kill is final)."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = (tmp_path / "dask.log").open("wb")
    # Workers import the task functions by name, like a user's workers need the user's code.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", ":0"], stdout=log, stderr=log, start_new_session=True,
                              env=env)]
    try:
        from distributed import Client

        for _ in range(2):
            procs.append(subprocess.Popen([DASK, "worker", address, "--nthreads", "1", "--no-nanny",
                                           "--dashboard-address", ":0"], stdout=log, stderr=log,
                                          start_new_session=True, env=env))
        with Client(address, set_as_default=False, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, procs
    finally:
        # Workers first: a worker closing says goodbye to its scheduler (without one, it waits its timeout out).
        for group in (procs[1:], procs[:1]):
            for proc in group:
                if proc.poll() is None:
                    proc.terminate()
            for proc in group:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        log.close()
        assert all(not psutil.pid_exists(p.pid) or psutil.Process(p.pid).status() == psutil.STATUS_ZOMBIE
                   for p in procs)


def test_a_real_cluster_by_address_survives_a_killed_worker(
    process_cluster: tuple[str, list[subprocess.Popen[bytes]]], no_address: None
) -> None:
    address, procs = process_cluster
    victim = procs[1]
    started = threading.Event()
    n = 300

    def kill_when_running() -> None:
        started.wait(60)
        time.sleep(0.2)  # let both workers hold tasks (the run is ~3 s long)
        os.killpg(victim.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    outcomes = []
    try:
        for outcome in tl.imap(slow_square, range(n), mode=tl.Dask(address=address), chunksize=5,
                               on_error="collect", ordered=False):
            outcomes.append(outcome)
            started.set()
    finally:
        started.set()
        killer.join(60)
    assert victim.wait(10) == -signal.SIGKILL
    indexes = sorted(o.index for o in outcomes)
    assert indexes == list(range(n))  # every item exactly once
    failed = [(o.index, o.error) for o in outcomes if not o.ok]
    assert failed == []
    assert all(o.value == o.index * o.index for o in outcomes)
    tl.shutdown()


def test_pipeline_stage_on_dask(dask_cluster: str, no_address: None) -> None:
    pipe = (tl.pipeline(range(30))
            .then(helpers.square, mode=tl.Dask(address=dask_cluster))
            .then(abs, mode="threads"))
    assert pipe.collect() == [x * x for x in range(30)]


def block_sum(args: tuple[object, int, int]) -> float:
    import numpy as np

    arr, lo, hi = args
    return float(np.asarray(arr)[lo:hi].sum())


def test_shared_array_on_a_cluster_by_address_is_scattered(dask_cluster: str, no_address: None) -> None:
    import numpy as np

    data = np.arange(10_000, dtype=float)
    with tl.SharedArray.from_numpy(data) as arr:
        blocks = [(arr, lo, lo + 1000) for lo in range(0, 10_000, 1000)]
        sums = tl.map(block_sum, blocks, mode=tl.Dask(address=dask_cluster), chunksize=1)
        from taskloom._backends import _dask

        scattered = [k for conn in _dask._connections.values() for k in conn.scattered]
        assert scattered == [("shared", arr.name)]  # once, for all ten batches
    assert sums == [float(data[lo:lo + 1000].sum()) for lo in range(0, 10_000, 1000)]


def test_a_large_numpy_argument_is_scattered_once_not_put_in_every_task(dask_cluster: str,
                                                                       no_address: None) -> None:
    import warnings

    import numpy as np

    big = np.ones(2_000_000)  # 16 MB: in every task's graph, Dask would warn "Sending large graph"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        totals = tl.starmap(helpers.array_total, [(big, i) for i in range(10)],
                            mode=tl.Dask(address=dask_cluster), chunksize=1)
    assert totals == [2_000_000.0 + i for i in range(10)]
    assert not [w for w in caught if "large graph" in str(w.message)], [str(w.message) for w in caught]


def test_shared_array_on_the_embedded_cluster_travels_by_name(no_address: None) -> None:
    import numpy as np

    data = np.arange(4_000, dtype=float)
    with tl.SharedArray.from_numpy(data) as arr:
        sums = tl.map(block_sum, [(arr, 0, 2000), (arr, 2000, 4000)], mode="dask", chunksize=1)
    assert sums == [float(data[:2000].sum()), float(data[2000:].sum())]


def test_interpreter_exit_closes_the_embedded_cluster(tmp_path: Path) -> None:
    script = tmp_path / "uses_dask.py"
    script.write_text(
        "import os, json, psutil, taskloom as tl\n"
        "def sq(x): return x * x\n"
        "if __name__ == '__main__':\n"
        "    assert tl.map(sq, range(10), mode='dask') == [x * x for x in range(10)]\n"
        "    kids = [p.pid for p in psutil.Process().children(recursive=True)]\n"
        "    print(json.dumps(kids), flush=True)\n"  # exits here without calling shutdown()
    )
    env = {k: v for k, v in os.environ.items() if k != "TASKLOOM_DASK_ADDRESS"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    kids = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(kids) >= 2  # the cluster's worker processes were there
    def alive() -> list[int]:
        return [p for p in kids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]

    deadline = time.monotonic() + 15
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive() == []


# -- the Dask mode's own settings ----------------------------------------------------------------------------------
def test_dask_settings_are_checked_and_name_the_cluster() -> None:
    with pytest.raises(ValueError, match="threads_per_worker"):
        tl.Dask(threads_per_worker=0)
    with pytest.raises(ValueError, match="dask worker --nthreads"):
        tl.Dask(address="tcp://h:8786", threads_per_worker=4)
    with pytest.raises(ValueError, match="crash_retries"):
        tl.Dask(crash_retries=-1)
    assert tl.Dask(threads_per_worker=4) != tl.Dask()  # another embedded cluster
    assert tl.Dask(crash_retries=2) == tl.Dask()  # the same cluster: only the run's policy differs
    assert hash(tl.Dask(crash_retries=2)) == hash(tl.Dask())
    assert tl.Dask(crash_retries=2).crash_retries == 2


def test_equal_security_settings_share_one_connection() -> None:
    from distributed.security import Security

    def security(cert: str) -> Security:
        return Security(tls_ca_file="ca.pem", tls_client_cert=cert, tls_client_key="me.key", require_encryption=True)

    mine, again, theirs = (tl.Dask(address="tls://h:8786", security=security(cert))
                           for cert in ("me.pem", "me.pem", "you.pem"))
    assert mine == again  # a Security made per call is the same settings, hence the same warm connection
    assert hash(mine) == hash(again)
    assert mine != theirs


def test_a_tls_address_without_certificates_is_refused_at_once_saying_what_is_missing(no_address: None) -> None:
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=r"tls://127\.0\.0\.1:9.*security=distributed\.security\.Security"):
        tl.map(helpers.square, [1], mode=tl.Dask(address="tls://127.0.0.1:9"))
    assert time.monotonic() - t0 < 10


def test_security_is_for_a_cluster_reached_by_address(no_address: None) -> None:
    with pytest.raises(ValueError, match="reached by address"):
        tl.map(helpers.square, [1], mode=tl.Dask(security=object()))


def meet(args: tuple[str, int]) -> bool:
    """Arrive at a meeting of ``n`` tasks (files in ``directory``); True if all came within 60 s."""
    directory, n = args
    Path(directory, f"{os.getpid()}-{threading.get_ident()}").touch()
    deadline = time.monotonic() + 60
    while len(os.listdir(directory)) < n:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_workers_above_the_clusters_threads_run_that_many_at_once(dask_cluster: str, no_address: None,
                                                                   tmp_path: Path) -> None:
    """I/O on Dask: workers=8 on a cluster of 2 threads runs 8 tasks at once (each leaves its
    worker's thread pool); only then can 8 tasks that wait for each other all meet."""
    run = tl.imap(meet, [(str(tmp_path), 8)] * 8, mode=tl.Dask(address=dask_cluster), workers=8, chunksize=1)
    assert run.window == 8  # exactly `workers` batches in flight, all running
    assert list(run) == [True] * 8


def test_the_embedded_cluster_takes_threads_per_worker(no_address: None) -> None:
    from taskloom._backends import _dask

    mode = tl.Dask(threads_per_worker=3)
    assert tl.map(helpers.square, range(10), mode=mode) == [x * x for x in range(10)]
    [conn] = _dask._connections.values()
    assert set(conn.client.nthreads().values()) == {3}


def where_or_fail(x: int) -> str:
    """The worker's address (distributed.get_worker() must work in a parcel's threads too); 7 fails."""
    from distributed import get_worker

    if x == 7:
        raise ValueError("seven is right out")
    time.sleep(0.05)
    return str(get_worker().address)


def test_io_parcels_keep_each_items_outcome_and_its_worker(dask_cluster: str, no_address: None) -> None:
    outcomes = tl.map(where_or_fail, range(24), mode=tl.Dask(address=dask_cluster), workers=8, chunksize=1,
                      on_error="collect")
    assert [o.index for o in outcomes] == list(range(24))
    [failed] = [o for o in outcomes if not o.ok]
    assert failed.index == 7
    assert "seven is right out" in str(failed.error)
    assert {o.value for o in outcomes if o.ok} <= set(_workers(dask_cluster))


def _workers(address: str) -> list[str]:
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        return list(client.nthreads())


def test_io_parcels_time_out_on_time_and_stop_when_left(dask_cluster: str, no_address: None) -> None:
    mode = tl.Dask(address=dask_cluster)
    t0 = time.monotonic()
    outcomes = tl.map(sleep_long, [1, 2, 3, 4], mode=mode, workers=4, timeout=0.5, on_error="collect")
    assert all(isinstance(o.error, tl.TaskTimeout) for o in outcomes)
    assert time.monotonic() - t0 < 2.5  # before the 3 s tasks would have ended (generous bound)
    t0 = time.monotonic()
    with tl.imap(sleep_unless_zero, range(8), mode=mode, workers=8, chunksize=1) as run:
        assert next(iter(run)) == 0  # leave after the first: the rest is cancelled, not waited for
    assert time.monotonic() - t0 < 2.5


def test_two_io_runs_at_once_share_the_backend_each_with_its_own_results(dask_cluster: str,
                                                                          no_address: None) -> None:
    mode = tl.Dask(address=dask_cluster)
    results: dict[str, list[int]] = {}

    def run(name: str, fn: object) -> None:
        results[name] = tl.map(fn, range(40), mode=mode, workers=8, chunksize=1)  # type: ignore[call-overload]

    threads = [threading.Thread(target=run, args=(n, f)) for n, f in (("square", slow_square), ("abs", abs))]
    for t in threads:
        t.start()
    for t in threads:
        helpers.join(t, "a run on Dask")
    assert results == {"square": [x * x for x in range(40)], "abs": list(range(40))}
