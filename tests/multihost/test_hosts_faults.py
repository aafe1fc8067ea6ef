"""Faults across hosts: a worker host killed, a worker host's cable pulled, the scheduler host lost.

Each test runs gated tasks (tests/multihost/tasks.py: a task says on which worker it started, then
waits for a gate file), so the fault always strikes mid-run, with work in flight on the host it
strikes: the test waits until both worker hosts are running a task, breaks one, then opens the
gate. In each: exactly one outcome per item, retries as ``crash_retries`` says, and the run ends
within the bound docs/cluster.md gives for that fault.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import taskloom as tl
from tests.helpers import deadlock, poll_until

from . import tasks
from .bed import TCP_TIMEOUT, Cluster, Host, netns_pids

pytestmark = pytest.mark.dask

#: generous bounds after a handshake (the machine may be loaded): the tight figures are in docs/cluster.md
WITHIN = 60.0
#: the scheduler drops a silent worker after the TCP timeout of its connections (the bed's: 11 s)
SILENT_HOST_NOTICED = float(TCP_TIMEOUT.rstrip("s")) + 30.0


class Gate:
    """The gate of ``tasks.gated``: markers of started tasks, and the file that lets them finish."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        self.dir = directory

    def task(self) -> Callable[[int], tuple[int, str]]:
        return functools.partial(tasks.gated, gate=str(self.dir))

    def started(self) -> dict[int, set[str]]:
        return tasks.started(str(self.dir))

    def wait_running_on(self, workers: set[str]) -> dict[int, set[str]]:
        """Block until a task has started on each of ``workers``; the markers then."""
        def seen() -> set[str]:
            return {w for on in self.started().values() for w in on}

        if not poll_until(lambda: workers <= seen(), WITHIN, interval=0.01):
            deadlock(f"tasks never started on every worker host: {sorted(workers - seen())} missing")
        return self.started()

    def open(self) -> None:
        (self.dir / "open").touch()


class Fault:
    """A fault run in a thread beside the run; ``join`` re-raises what went wrong in it."""

    def __init__(self, gate: Gate, action: Callable[[], Any]) -> None:
        self.gate = gate
        self.action = action
        self.error: BaseException | None = None
        self.at: float | None = None  # when the fault struck (time.monotonic())
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, name="fault")

    def _run(self) -> None:
        try:
            self.result = self.action()
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self.gate.open()  # whatever happened, the run must be able to end

    def __enter__(self) -> Fault:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.open()
        self.thread.join(WITHIN)
        if self.thread.is_alive():
            deadlock("the fault thread did not end")
        if self.error is not None and exc[0] is None:
            raise self.error


def hosts_by_name(cluster: Cluster) -> tuple[dict[str, Host], dict[str, str]]:
    """Worker address -> host, and host name -> worker address."""
    by_address = cluster.worker_hosts()
    assert sorted(h.name for h in by_address.values()) == ["worker1", "worker2"], by_address
    return by_address, {h.name: a for a, h in by_address.items()}


def run_collecting(mode: tl.Dask, fn: Callable[[int], Any], n: int) -> tuple[list[tl.Outcome[Any]], Any, float]:
    """Run ``fn`` over range(n), one item a batch, collecting outcomes; (outcomes, statistics, when it ended)."""
    run = tl.imap(fn, range(n), mode=mode, chunksize=1, on_error="collect")
    outcomes = list(run)
    return outcomes, run.statistics(), time.monotonic()


def assert_once_each(outcomes: list[tl.Outcome[Any]], n: int) -> None:
    assert sorted(o.index for o in outcomes) == list(range(n)), "not exactly one outcome per item"


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    g = Gate(tmp_path / "gate")
    yield g
    g.open()


def test_the_bed_is_three_hosts_and_work_crosses_to_both(cluster: Cluster) -> None:
    by_address, _by_name = hosts_by_name(cluster)
    if cluster.net.namespaces:
        for address, host in by_address.items():
            assert address.startswith(f"tcp://{host.address}:")  # each worker on its own host's address
            assert host.netns is not None  # and its programs run inside its namespace:
            assert set(netns_pids(host.netns)) >= {s.proc.pid for s in cluster.started if s.host is host}
        assert len({h.address for h in cluster.net.hosts} | {cluster.net.client_address}) == 4
    results = tl.map(tasks.where, range(40), mode=tl.Dask(address=cluster.address), chunksize=1)
    assert [r[0] for r in results] == [x * x for x in range(40)]
    assert {r[1] for r in results} == set(by_address)  # both hosts did work


def test_a_worker_host_killed_mid_run_costs_nothing(cluster: Cluster, gate: Gate) -> None:
    """Its processes SIGKILLed: Dask runs its tasks again on the other host; taskloom adds no retry."""
    by_address, by_name = hosts_by_name(cluster)
    victim, survivor = cluster.net.workers[0], cluster.net.workers[1]
    n = 30

    def kill() -> dict[int, set[str]]:
        on = gate.wait_running_on(set(by_address))
        assert cluster.kill_host(victim)
        return on

    with Fault(gate, kill) as fault:
        outcomes, stats, _ended = run_collecting(tl.Dask(address=cluster.address), gate.task(), n)
    assert_once_each(outcomes, n)
    assert [o.error for o in outcomes if not o.ok] == []
    assert [o.value[0] for o in outcomes] == [x * x for x in range(n)]
    struck = {x for x, on in fault.result.items() if by_name[victim.name] in on}
    assert struck, "no task was running on the killed host"
    for x in struck:  # what the dead host was running came back from the other one
        assert outcomes[x].value[1] == by_name[survivor.name]
    assert stats.retried == 0
    assert stats.crashed == 0
    assert cluster.pids(victim) == []


@pytest.mark.parametrize("crash_retries", [0, 1])
def test_when_dask_gives_up_crash_retries_decide(make_cluster: Callable[..., Cluster], gate: Gate,
                                                crash_retries: int) -> None:
    """allowed-failures=0: Dask gives up (KilledWorker) on what the dead host held; taskloom then
    fails those items as WorkerCrashed, or sends them again, ``crash_retries`` times."""
    cluster = make_cluster(env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"})
    by_address, by_name = hosts_by_name(cluster)
    victim = cluster.net.workers[0]
    n = 20

    def kill() -> dict[int, set[str]]:
        on = gate.wait_running_on(set(by_address))
        cluster.kill_host(victim)
        return on

    mode = tl.Dask(address=cluster.address, crash_retries=crash_retries)
    with Fault(gate, kill) as fault:
        outcomes, stats, _ = run_collecting(mode, gate.task(), n)
    assert_once_each(outcomes, n)
    struck = {x for x, on in fault.result.items() if by_name[victim.name] in on}
    assert struck
    failed = {o.index: o.error for o in outcomes if not o.ok}
    assert stats.crashed >= len(struck)  # one loss per item the dead host held
    if crash_retries == 0:
        assert struck <= set(failed)
        for error in failed.values():
            assert isinstance(error, tl.WorkerCrashed), error
            assert "KilledWorker" in str(error)
        assert stats.retried == 0
    else:
        assert failed == {}
        assert stats.retried == stats.crashed  # each loss sent again once, and that run ended well
    assert all(o.value == (o.index ** 2, o.value[1]) for o in outcomes if o.ok)


def test_a_worker_hosts_cable_pulled_then_plugged_back(cluster: Cluster, gate: Gate) -> None:
    """The scheduler hears nothing from the host: after its TCP timeout it drops the worker and runs
    its tasks on the other host; the cable goes back, a worker started there again joins."""
    by_address, by_name = hosts_by_name(cluster)
    victim, survivor = cluster.net.workers[0], cluster.net.workers[1]
    lost = by_name[victim.name]
    n = 30

    with cluster.client() as monitor:
        def pull() -> tuple[dict[int, set[str]], float]:
            on = gate.wait_running_on(set(by_address))
            cluster.link_down(victim)
            pulled = time.monotonic()
            gate.open()
            if not poll_until(lambda: lost not in monitor.nthreads(), SILENT_HOST_NOTICED, interval=0.1):
                deadlock(f"the scheduler still counts the silent worker {lost} after {SILENT_HOST_NOTICED:g} s")
            noticed = time.monotonic() - pulled
            cluster.link_up(victim)
            return on, noticed

        with Fault(gate, pull) as fault:
            outcomes, stats, _ = run_collecting(tl.Dask(address=cluster.address), gate.task(), n)
    on, noticed = fault.result
    assert_once_each(outcomes, n)
    assert [o.error for o in outcomes if not o.ok] == []
    assert [o.value[0] for o in outcomes] == [x * x for x in range(n)]
    struck = {x for x, hosts in on.items() if lost in hosts}
    assert struck
    for x in struck:
        assert outcomes[x].value[1] == by_name[survivor.name]
    assert stats.retried == 0
    assert noticed < SILENT_HOST_NOTICED
    # The host is back: whatever is left of its worker goes, a new one starts and takes work.
    cluster.kill_host(victim)
    cluster.start_worker(victim)
    cluster.wait_for_workers(2)
    again = tl.map(tasks.where, range(40), mode=tl.Dask(address=cluster.address), chunksize=1)
    assert {cluster.worker_hosts()[w].name for _, w in again} == {"worker1", "worker2"}


def _assert_scheduler_lost(outcomes: list[tl.Outcome[Any]], n: int, address: str) -> None:
    assert_once_each(outcomes, n)
    for o in outcomes:
        assert not o.ok  # every task waited at the gate: none could end before the scheduler went
        assert isinstance(o.error, tl.TaskError), o.error
        assert not isinstance(o.error, tl.WorkerCrashed), o.error
        assert f"lost the connection to the Dask scheduler at {address}" in str(o.error), o.error


def test_the_scheduler_host_killed_fails_the_run_at_once_naming_it(cluster: Cluster, gate: Gate) -> None:
    by_address, _ = hosts_by_name(cluster)
    n = 20

    def kill() -> float:
        gate.wait_running_on(set(by_address))
        struck = time.monotonic()
        cluster.kill_host(cluster.net.scheduler)
        return struck

    mode = tl.Dask(address=cluster.address)
    with Fault(gate, kill) as fault:
        outcomes, _, ended = run_collecting(mode, gate.task(), n)
    _assert_scheduler_lost(outcomes, n, cluster.address)
    assert ended - fault.result < 15.0  # at once: the dead process's connections close (generous bound)
    # A run started while Dask's client tries to reconnect fails at once too, naming the address.
    t0 = time.monotonic()
    with pytest.raises(tl.TaskError, match=f"lost the connection to the Dask scheduler at {cluster.address}"):
        tl.map(tasks.tiny, range(5), mode=mode)
    assert time.monotonic() - t0 < 15.0
    # The scheduler comes back (its workers closed themselves when it went: they come back too, as a
    # supervisor would start them): the same mode works again, whether Dask's client reconnected or
    # gave up (then taskloom connects afresh).
    cluster.restart_all()

    meanwhile: list[str] = []

    def works() -> bool:
        try:
            return tl.map(tasks.tiny, range(5), mode=mode) == [0, 1, 4, 9, 16]
        except tl.TaskError as exc:  # Dask's client has not reconnected yet
            meanwhile.append(str(exc))
            return False

    # Dask's client tries again for distributed.comm.timeouts.connect (30 s), then taskloom connects afresh.
    assert poll_until(works, 45.0, interval=0.2)
    assert all("lost the connection to the Dask scheduler" in error for error in meanwhile), meanwhile


def test_the_scheduler_hosts_cable_pulled_fails_the_run_after_the_tcp_timeout(cluster: Cluster,
                                                                             gate: Gate) -> None:
    """Nothing closes: the client notices after its own ``distributed.comm.timeouts.tcp``."""
    import dask

    if not cluster.net.namespaces:
        pytest.skip("loopback bed: a frozen process's kernel still answers TCP, only a real link goes silent")
    by_address, _ = hosts_by_name(cluster)
    n = 20

    def pull() -> float:
        gate.wait_running_on(set(by_address))
        struck = time.monotonic()
        cluster.link_down(cluster.net.scheduler)
        return struck

    # (the client reads the TCP timeout when it connects)
    with dask.config.set({"distributed.comm.timeouts.tcp": TCP_TIMEOUT}), Fault(gate, pull) as fault:
        outcomes, _, ended = run_collecting(tl.Dask(address=cluster.address), gate.task(), n)
    _assert_scheduler_lost(outcomes, n, cluster.address)
    assert ended - fault.result < SILENT_HOST_NOTICED
    t0 = time.monotonic()
    tl.shutdown()  # closing a client that lost its scheduler is bounded too
    assert time.monotonic() - t0 < 15.0
    cluster.link_up(cluster.net.scheduler)
