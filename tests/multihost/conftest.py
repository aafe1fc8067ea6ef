"""Fixtures of the multi-host tests: the bed's network (once a session) and clusters on it.

* ``network``: three hosts (namespaces on a bridge, or loopback with a one-line notice), made once for
  the tests of this folder and removed after the last of them, which fails if a namespace or link of
  it is still there.
* ``cluster``: a fresh ``dask scheduler`` + two ``dask worker`` on it, for one test (faults break it);
  ``make_cluster(**options)`` for one with other settings. At teardown taskloom's clients close
  first, then every program is stopped, and the test fails if any process of the bed is left.
* ``shared_cluster``, ``tls_cluster``: one cluster for a whole module whose tests break nothing
  (data; TLS, with the session's ``certificates``); its processes count as the session's
  (tests/conftest.py), not as a test's leftovers.

Every test module here is marked ``dask`` (``pytestmark``). Bed programs write their logs under the test's tmp_path; a
failed start shows their last lines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import taskloom as tl
from tests import conftest as suite

from .bed import Certificates, Cluster, Network, beds_of_this_process, make_certificates, remove


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The loopback fallback's notice, one line under the results: the tests ran, but not across links."""
    for notice in _NOTICES:
        terminalreporter.write_line(notice)


#: the folder's network, while it exists (its namespaces are no test's leftovers)
_SESSION: list[Network] = []
#: why the bed runs on loopback, if it does
_NOTICES: list[str] = []


@pytest.fixture(scope="package")
def network() -> Iterator[Network]:
    net = Network.create(force_loopback=bool(os.environ.get("TASKLOOM_HOSTS_LOOPBACK")))
    if net.notice:
        _NOTICES.append(net.notice)  # said under the results (pytest_terminal_summary)
    _SESSION.append(net)
    try:
        yield net
    finally:
        _SESSION.clear()
        left = net.close()
        assert left == [], f"the test bed left {left}"


@pytest.fixture(autouse=True)
def _no_bed_left_behind() -> Iterator[None]:
    """After each test: no namespace or bridge of a bed this test made (and did not close) is left."""
    yield
    namespaces, bridges = beds_of_this_process()
    for net in _SESSION:
        namespaces = [n for n in namespaces if n not in {h.netns for h in net.hosts}]
        bridges = [b for b in bridges if b != net.bridge]
    if namespaces or bridges:
        remove(namespaces, bridges)
        pytest.fail(f"the test left a bed behind: namespaces {namespaces}, bridges {bridges}", pytrace=False)


def _stop(cluster: Cluster) -> None:
    tl.shutdown()  # taskloom's clients first: they would try to reconnect to a stopped scheduler
    left = cluster.stop()
    assert left == [], f"processes of the bed still alive after stop: {left}\n{cluster.log_tail()}"
    assert cluster.orphan_semaphores() == [], "the bed's killed processes left named semaphores in /dev/shm"


@pytest.fixture
def make_cluster(network: Network, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start a cluster (``Cluster`` options as keywords); each is stopped after the test."""
    made: list[Cluster] = []

    def make(**options: Any) -> Cluster:
        cluster = Cluster(network, tmp_path / f"logs{len(made)}", port=8786 + len(made) if network.namespaces else None,
                          **options)
        made.append(cluster)
        return cluster.start()

    yield make
    failures = []
    for cluster in made:
        try:
            _stop(cluster)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster()


def _module_cluster(cluster: Cluster) -> Iterator[Cluster]:
    cluster.start()
    leaders = {s.proc.pid for s in cluster.started}
    suite.SESSION_PIDS.update(leaders)  # its nannies' workers count too (tests/conftest.py)
    try:
        yield cluster
    finally:
        suite.SESSION_PIDS.difference_update(leaders)
        _stop(cluster)


@pytest.fixture(scope="module")
def shared_cluster(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from _module_cluster(Cluster(network, tmp_path_factory.mktemp("shared-logs"),
                                       port=8790 if network.namespaces else None))


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """The bed's CA and the certificate it signed for every program and the client."""
    return make_certificates(tmp_path_factory.mktemp("certs"), "bed")


@pytest.fixture(scope="module")
def tls_cluster(network: Network, certificates: Certificates,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The cluster speaking TLS only (``tls://``), with the bed's certificates."""
    yield from _module_cluster(Cluster(network, tmp_path_factory.mktemp("tls-logs"), tls=certificates,
                                       port=8791 if network.namespaces else None))
