"""The test bed itself: it leaves nothing behind, even torn down in the middle of faults; a bed whose
test process was killed is swept by the next; the loopback fallback is a working bed too."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import psutil
import pytest

import taskloom as tl

from . import tasks
from .bed import NETNS_PREFIX, Cluster, Network, namespaces_refused, netns_pids, session_pids, sweep_stale

pytestmark = pytest.mark.dask


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=True).stdout


def test_teardown_in_the_middle_of_faults_leaves_nothing(tmp_path: Path) -> None:
    net = Network.create()
    try:
        cluster = Cluster(net, tmp_path / "logs").start()
        try:
            assert tl.map(tasks.tiny, range(10), mode=tl.Dask(address=cluster.address)) == [x * x for x in range(10)]
            sessions = [s.proc.pid for s in cluster.started]
            cluster.kill_host(net.workers[0])  # a dead host,
            cluster.link_down(net.workers[1])  # a host without its cable (or frozen),
            tl.shutdown()
        finally:
            left = cluster.stop()  # and the scheduler still up
    finally:
        net_left = net.close()
    assert left == []
    assert net_left == []
    assert [pid for sid in sessions for pid in session_pids(sid)] == []
    if net.namespaces:
        names = [h.netns for h in net.hosts]
        listed = _ip("netns", "list")
        assert not [n for n in names if n and n in listed]
        links = _ip("link", "show")
        assert not [link for link in [net.bridge, *(h.link for h in net.hosts)] if link and f" {link}" in links]


def test_a_bed_whose_test_process_died_is_swept(tmp_path: Path) -> None:
    refused = namespaces_refused()
    if refused is not None:
        pytest.skip(f"loopback bed ({refused}): no namespaces to sweep")
    dead = next(pid for pid in range(4_000_000, 3_000_000, -1) if not psutil.pid_exists(pid))
    netns, bridge = f"{NETNS_PREFIX}{dead}x1-scheduler", f"tlb{dead}a"
    _ip("netns", "add", netns)
    _ip("link", "add", bridge, "type", "bridge")
    sleeper = subprocess.Popen(["ip", "netns", "exec", netns, "sleep", "600"], start_new_session=True)
    try:
        # `ip netns exec` enters the namespace, then becomes sleep: until then nothing runs in it
        deadline = time.monotonic() + 10
        while netns_pids(netns) != [sleeper.pid] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert netns_pids(netns) == [sleeper.pid]
        swept = sweep_stale()
        assert netns in swept
        assert bridge in swept
        sleeper.wait(10)  # what ran in it is gone with it (psutil reaped it: no exit status here)
        assert not psutil.pid_exists(sleeper.pid)
        assert not re.search(rf"^{re.escape(netns)}\b", _ip("netns", "list"), re.M)
        assert f" {bridge}:" not in _ip("link", "show")
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait(10)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)


def test_the_loopback_fallback_is_a_bed_too(tmp_path: Path) -> None:
    net = Network.create(force_loopback=True)
    assert net.notice is not None
    assert "127.0.0.1" in net.notice
    assert "\n" not in net.notice
    cluster = Cluster(net, tmp_path / "logs")
    try:
        cluster.start()
        hosts = cluster.worker_hosts()
        assert sorted(h.name for h in hosts.values()) == ["worker1", "worker2"]
        assert len({a.rsplit(":", 1)[1] for a in hosts}) == 2  # distinct ports
        results = tl.map(tasks.where, range(30), mode=tl.Dask(address=cluster.address), chunksize=1)
        assert {hosts[w].name for _, w in results} == {"worker1", "worker2"}
        assert cluster.kill_host(net.workers[0])
        assert cluster.pids(net.workers[0]) == []
        assert tl.map(tasks.tiny, range(5), mode=tl.Dask(address=cluster.address)) == [0, 1, 4, 9, 16]
    finally:
        tl.shutdown()
        assert cluster.stop() == []
        assert net.close() == []
