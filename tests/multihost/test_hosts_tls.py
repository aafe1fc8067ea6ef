"""No one else gets in: the bed's cluster speaking TLS only, with certificates made for the test.

The scheduler and the workers are started with ``--tls-ca-file/--tls-cert/--tls-key`` (the bed's
own CA); taskloom reaches them with ``tl.Dask(address="tls://...", security=Security(...))``. A
client with no certificate, a certificate of another CA, the CA alone, or plain TCP is refused
(at once, with an error naming the address), and so is a worker with a foreign certificate.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import taskloom as tl
from tests.helpers import poll_until

from . import tasks
from .bed import Certificates, Cluster, make_certificates

pytestmark = pytest.mark.dask

#: a refused connection fails at once (the handshake fails); generous for a loaded machine
REFUSED_WITHIN = 20.0


def test_taskloom_runs_on_a_tls_cluster_with_its_certificates(tls_cluster: Cluster,
                                                             certificates: Certificates) -> None:
    assert tls_cluster.address.startswith("tls://")
    results = tl.map(tasks.where, range(30), mode=tl.Dask(address=tls_cluster.address,
                                                          security=certificates.security()), chunksize=1)
    assert [v for v, _ in results] == [x * x for x in range(30)]
    workers = {w for _, w in results}
    assert all(w.startswith("tls://") for w in workers)  # the workers speak TLS too
    hosts = tls_cluster.worker_hosts()
    assert {hosts[w].name for w in workers} == {"worker1", "worker2"}


def _refused(mode: tl.Dask, address: str) -> str:
    t0 = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        tl.map(tasks.tiny, range(3), mode=mode)
    assert time.monotonic() - t0 < REFUSED_WITHIN
    assert f"could not connect to the Dask scheduler at {address}" in str(info.value)
    return str(info.value)


def _io_loops() -> int:
    """Event-loop threads of Dask clients in this process."""
    return sum(1 for t in threading.enumerate() if t.name == "IO loop")


def test_a_client_without_the_certificate_is_refused(tls_cluster: Cluster, certificates: Certificates,
                                                     tmp_path: Path) -> None:
    from distributed.security import Security

    address = tls_cluster.address
    scheduler_log = tls_cluster.started[0].log
    loops_before = _io_loops()

    def handshakes_failed() -> int:
        return scheduler_log.read_text(errors="replace").count("TLS handshake failed")

    # No certificate at all: taskloom says what is missing.
    assert "security=distributed.security.Security(" in _refused(tl.Dask(address=address), address)
    # The right CA but no certificate of its own: Dask makes no TLS context for it.
    ca_only = Security(tls_ca_file=str(certificates.ca), require_encryption=True)
    _refused(tl.Dask(address=address, security=ca_only), address)
    # A certificate of another CA, and plain TCP to the TLS port: the scheduler refuses the handshake.
    before = handshakes_failed()
    rogue = make_certificates(tmp_path / "rogue", "rogue")
    _refused(tl.Dask(address=address, security=rogue.security()), address)
    plain = address.replace("tls://", "tcp://")
    _refused(tl.Dask(address=plain), plain)
    assert poll_until(lambda: handshakes_failed() >= before + 2, 10.0), tls_cluster.log_tail()
    # A refused client leaves no event loop behind (distributed's half-built Client would keep one,
    # and stop it whenever it is collected: in the middle of another client's start, it made that
    # start fail after 10 s).
    assert poll_until(lambda: _io_loops() <= loops_before, 10.0)
    # And the cluster is still there for those who have the certificate.
    assert tl.map(tasks.tiny, range(5), mode=tl.Dask(address=address, security=certificates.security())) == [
        0, 1, 4, 9, 16]


def test_a_worker_with_a_foreign_certificate_cannot_join(tls_cluster: Cluster, tmp_path: Path) -> None:
    scheduler_log = tls_cluster.started[0].log
    before = scheduler_log.read_text(errors="replace").count("TLS handshake failed")
    rogue = make_certificates(tmp_path / "rogue", "rogue")
    host = tls_cluster.net.workers[1]
    own_tls = tls_cluster.tls
    tls_cluster.tls = rogue  # the next program started gets the foreign files
    try:
        intruder = tls_cluster.start_worker(host)
    finally:
        tls_cluster.tls = own_tls
    try:
        assert poll_until(lambda: scheduler_log.read_text(errors="replace").count("TLS handshake failed") > before,
                          60.0), tls_cluster.log_tail()
        with tls_cluster.client() as client:
            assert len(client.nthreads()) == 2  # only the bed's own workers
    finally:
        tls_cluster.kill(intruder)
