"""A multi-host Dask test bed on one machine: three hosts, real `dask` programs, real links.

**Hosts.** Each host is a Linux network namespace (``ip netns add``) with one end of a veth pair as
its ``eth0``; the other ends join a bridge in the root namespace, which holds the address the
client uses. So the scheduler host, the two worker hosts and the client (the test process, in the
root namespace) each have an address of their own on a /24 of 10.213.0.0/16 chosen free at start
(under a file lock, so two test sessions never share one), and every byte between them crosses a
real link: taking the root end of a host's veth pair down is pulling its cable.

**Programs.** ``dask scheduler`` on the scheduler host and ``dask worker`` (with its nanny, one
single-threaded worker process) on each worker host, started with ``ip netns exec``, exactly as
docs/cluster.md tells a user to start them on real machines. Each program is the leader of a
session of its own, so a host's processes (the nanny and its worker) are found and killed together.

**Fallback.** A machine that refuses namespaces (not root, no iproute2, a container without
CAP_NET_ADMIN) gets the same three hosts on 127.0.0.1 with distinct ports, and ``notice`` says so
in one line (the fixture prints it). A pulled cable is then a frozen host (SIGSTOP of its
processes): the cluster hears nothing from it, as with a pulled cable; the workers run without a
nanny and the scheduler drops a silent worker after ``worker-ttl`` (TCP keeps a frozen process's
connections alive, so the TCP timeout alone would never fire).

**Nothing left behind.** ``Network.close`` and ``Cluster.stop`` kill what they started (by pid:
the session of each program, and every process inside the bed's namespaces), delete the
namespaces, links and bridge, and report anything still there; a bed whose test process died
(SIGKILL) is swept by the next one (its names carry the pid of the process that made it).
A killed host's processes cannot unlink the named semaphores that `multiprocessing` made for them
(`/dev/shm/sem.mp-*`: their resource tracker dies with them), so ``Cluster.stop`` unlinks those
that appeared while the cluster ran and that no living process maps (each CI run left 54).

Used by tests/multihost (fixtures in its conftest.py) and benchmarks/dask_hosts.py. Not a test
module: no pytest import here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).with_name("dask"))
#: every name the bed gives a namespace starts with this, then the pid of the process that made it
NETNS_PREFIX = "tlhost-"
#: a lock shared by every test session of this machine while it picks a free subnet
SUBNET_LOCK = Path(tempfile.gettempdir()) / "taskloom-hosts.lock"
#: how long the cluster may take to start (scheduler and two workers with their nannies) on a busy machine
READY_WITHIN = 90.0
#: the scheduler drops a worker whose connection stays silent this long (Dask's least: 11 s; default 30 s)
TCP_TIMEOUT = "11s"
#: loopback fallback: a frozen worker is dropped after this many seconds without a heartbeat
LOOPBACK_WORKER_TTL = "5s"

_counter = iter(range(1, 1_000_000))


class BedError(RuntimeError):
    """The bed could not be built or torn down."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


# -- hosts and the network -------------------------------------------------------------------------------------
@dataclass
class Host:
    """One machine of the bed."""

    name: str  # "scheduler", "worker1", "worker2"
    address: str  # its IP address on the bed
    netns: str | None = None  # its namespace (None: the loopback fallback)
    link: str | None = None  # the root end of its veth pair: down = the cable pulled

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` as run on this host."""
        return ["ip", "netns", "exec", self.netns, *args] if self.netns else list(args)


@dataclass
class Network:
    """Three hosts joined by a bridge, or on loopback; ``close()`` removes it all."""

    scheduler: Host
    workers: list[Host]
    namespaces: bool
    client_address: str  # the test process's address on the bed
    notice: str | None = None  # one line: why the bed runs on loopback
    bridge: str | None = None
    _made: list[str] = field(default_factory=list)  # namespaces made
    _links: list[str] = field(default_factory=list)  # links made in the root namespace

    @property
    def hosts(self) -> list[Host]:
        return [self.scheduler, *self.workers]

    @classmethod
    def create(cls, force_loopback: bool = False) -> Network:
        """Namespaces if the machine allows them, else loopback (with ``notice`` set)."""
        reason = "TASKLOOM_HOSTS_LOOPBACK is set" if force_loopback else namespaces_refused()
        if reason is None:
            sweep_stale()
            try:
                return cls._with_namespaces()
            except (BedError, OSError, subprocess.SubprocessError) as exc:
                reason = f"building the namespaces failed: {exc}"
        return cls(Host("scheduler", "127.0.0.1"), [Host("worker1", "127.0.0.1"), Host("worker2", "127.0.0.1")],
                   namespaces=False, client_address="127.0.0.1",
                   notice=f"multi-host test bed: network namespaces unavailable ({reason}); the hosts share "
                          "127.0.0.1 with distinct ports, a pulled cable is a frozen host")

    @classmethod
    def _with_namespaces(cls) -> Network:
        tag = f"{os.getpid()}x{next(_counter)}"
        # Interface names have at most 15 characters: "tlb" + pid + counter, "tlv" + pid + counter + host.
        short = f"{os.getpid() % 10_000_000}{chr(ord('a') + next(_counter) % 26)}"
        net = cls(Host("scheduler", ""), [Host("worker1", ""), Host("worker2", "")], namespaces=True,
                  client_address="", bridge=f"tlb{short}")
        try:
            with _subnet_lock():
                third = _free_subnet()
                net.client_address = f"10.213.{third}.254"
                assert net.bridge is not None
                _ip("link", "add", net.bridge, "type", "bridge")
                net._links.append(net.bridge)
                _ip("addr", "add", f"{net.client_address}/24", "dev", net.bridge)
            _ip("link", "set", net.bridge, "up")
            for number, host in enumerate(net.hosts, start=1):
                host.address = f"10.213.{third}.{number}"
                host.netns = f"{NETNS_PREFIX}{tag}-{host.name}"
                host.link = f"tlv{short}{number}"
                _ip("netns", "add", host.netns)
                net._made.append(host.netns)
                _ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
                net._links.append(host.link)
                _ip("link", "set", host.link, "master", net.bridge, "up")
                _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
                _ip("-n", host.netns, "link", "set", "eth0", "up")
                _ip("-n", host.netns, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            left = net.close()
            raise BedError(f"{' '.join(exc.cmd)}: {exc.stderr.strip()}" + (f"; left: {left}" if left else "")) from exc
        except BaseException:
            net.close()
            raise
        return net

    def close(self) -> list[str]:
        """Kill every process inside the bed's namespaces, delete them, its links and its bridge.

        Returns what is still there afterwards (empty when all is gone)."""
        for netns in self._made:
            kill_pids(netns_pids(netns))
        for netns in self._made:
            _ip("netns", "del", netns, check=False)
        for link in reversed(self._links):  # veth ends go with their namespace; the bridge is ours to delete
            if _link_exists(link):
                _ip("link", "del", link, check=False)
        left = self.leftovers()
        self._made, self._links = [], []
        return left

    def leftovers(self) -> list[str]:
        """Namespaces and links of this bed that still exist."""
        listed = _ip("netns", "list", check=False).stdout if self._made else ""
        left = [f"namespace {n}" for n in self._made if re.search(rf"^{re.escape(n)}\b", listed, re.M)]
        left += [f"link {link}" for link in self._links if _link_exists(link)]
        return left


def namespaces_refused() -> str | None:
    """Why this machine cannot build the bed with namespaces, or None."""
    if os.environ.get("TASKLOOM_HOSTS_LOOPBACK"):
        return "TASKLOOM_HOSTS_LOOPBACK is set"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if os.geteuid() != 0:
        return "not root"
    probe = f"{NETNS_PREFIX}{os.getpid()}x0-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@contextlib.contextmanager
def _subnet_lock() -> Iterator[None]:
    with SUBNET_LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _free_subnet() -> int:
    """A third octet x such that no address of 10.213.x.0/24 is in use in the root namespace."""
    used = set(re.findall(r"\b10\.213\.(\d+)\.", _ip("-4", "addr", "show").stdout + _ip("-4", "route").stdout))
    start = os.getpid() % 250
    for step in range(250):
        third = (start + step) % 250 + 1
        if str(third) not in used:
            return third
    raise BedError("no free /24 in 10.213.0.0/16")


def _link_exists(name: str) -> bool:
    return _ip("link", "show", "dev", name, check=False).returncode == 0


def netns_pids(netns: str) -> list[int]:
    """The pids of the processes inside ``netns`` (none if it is gone)."""
    out = _ip("netns", "pids", netns, check=False).stdout
    return [int(p) for p in out.split()]


def signal_pids(pids: Sequence[int], sig: int, wait: float) -> list[int]:
    """Send ``sig`` to each pid, then wait up to ``wait`` s for them to end; the pids still alive."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)
    _gone, alive = psutil.wait_procs(procs, timeout=wait)
    return [p.pid for p in alive if _alive(p)]


def kill_pids(pids: Sequence[int]) -> list[int]:
    """SIGKILL each pid and wait for it; the pids still alive after 10 s (none, normally)."""
    return signal_pids(pids, signal.SIGKILL, wait=10.0)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def beds_of_this_process() -> tuple[list[str], list[str]]:
    """The namespaces and bridges that beds made by this process still have (open or forgotten)."""
    pid = os.getpid()
    names = [line.split()[0] for line in _ip("netns", "list", check=False).stdout.splitlines() if line.split()]
    namespaces = [n for n in names if n.startswith(f"{NETNS_PREFIX}{pid}x")]
    bridges = re.findall(rf"^\d+: (tlb{pid % 10_000_000}[a-z])[:@]", _ip("link", "show").stdout, re.M)
    return namespaces, bridges


def remove(namespaces: Sequence[str], bridges: Sequence[str]) -> None:
    """Kill what runs in ``namespaces``, delete them and ``bridges`` (a bed that was never closed)."""
    for name in namespaces:
        kill_pids(netns_pids(name))
        _ip("netns", "del", name, check=False)
    for bridge in bridges:
        _ip("link", "del", bridge, check=False)


def sweep_stale() -> list[str]:
    """Remove the namespaces of beds whose test process is gone (it was killed before its teardown)."""
    swept = []
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.match(rf"{re.escape(NETNS_PREFIX)}(\d+)x\d+-", name)
        if match and not psutil.pid_exists(int(match.group(1))):
            kill_pids(netns_pids(name))
            _ip("netns", "del", name, check=False)
            swept.append(name)
    # Their veth ends went with the namespaces; a bridge of a dead pid is left: delete it.
    for match in re.finditer(r"^\d+: (tlb(\d+)[a-z])[:@]", _ip("link", "show").stdout, re.M):
        if not psutil.pid_exists(int(match.group(2))):
            _ip("link", "del", match.group(1), check=False)
            swept.append(match.group(1))
    return swept


# -- TLS certificates --------------------------------------------------------------------------------------------
@dataclass
class Certificates:
    """A CA, a certificate it signed (for the scheduler, the workers and the client), and files."""

    ca: Path
    cert: Path
    key: Path

    def security(self) -> object:
        """A ``distributed.security.Security`` that speaks TLS with these files, and only TLS."""
        from distributed.security import Security

        return Security(tls_ca_file=str(self.ca), tls_client_cert=str(self.cert), tls_client_key=str(self.key),
                        require_encryption=True)


def make_certificates(directory: Path, name: str = "bed") -> Certificates:
    """A fresh CA and a certificate signed by it, made with the `openssl` command (valid 2 days)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (directory / f"{name}-{part}" for part in
                                  ("ca.key", "ca.pem", "node.key", "node.csr", "node.pem"))

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
            "-subj", f"/CN=taskloom {name} test CA")
    openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN=taskloom {name} node")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", "2")
    return Certificates(ca, cert, key)


# -- the cluster ----------------------------------------------------------------------------------------------------
@dataclass
class Started:
    """A program started on a host: its Popen (the session leader) and its log."""

    host: Host
    proc: subprocess.Popen[bytes]
    log: Path
    killed: bool = False  # on purpose (kill_host): its exit is no failure to start


class Cluster:
    """``dask scheduler`` and one ``dask worker`` per worker host, on a ``Network``.

    ``env``: more environment for the programs (Dask settings: ``DASK_DISTRIBUTED__...``).
    """

    def __init__(self, net: Network, logs: Path, *, port: int | None = None, tls: Certificates | None = None,
                 env: dict[str, str] | None = None, nthreads: int = 1) -> None:
        self.net = net
        self.logs = logs
        self.tls = tls
        self.nthreads = nthreads
        self.protocol = "tls" if tls else "tcp"
        self.port = port or (8786 if net.namespaces else _free_port())
        self.address = f"{self.protocol}://{net.scheduler.address}:{self.port}"
        self.started: list[Started] = []
        self.semaphores_before = _semaphores()  # what is not ours (see orphan_semaphores)
        self.env = {**os.environ, "PYTHONPATH": str(ROOT),  # workers import the tasks by name (tests.multihost)
                    "DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP": TCP_TIMEOUT,
                    "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "info"}
        if not net.namespaces:
            self.env["DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL"] = LOOPBACK_WORKER_TTL
        self.env.pop("TASKLOOM_DASK_ADDRESS", None)
        self.env.update(env or {})
        logs.mkdir(parents=True, exist_ok=True)

    # -- start ----------------------------------------------------------------------------------------
    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return ["--tls-ca-file", str(self.tls.ca), "--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]

    def _spawn(self, host: Host, args: list[str]) -> Started:
        log = self.logs / f"{host.name}-{len(self.started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(host.command(args), stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                    cwd=ROOT, start_new_session=True)
        started = Started(host, proc, log)
        self.started.append(started)
        return started

    def start_scheduler(self) -> Started:
        host = self.net.scheduler
        return self._spawn(host, [DASK, "scheduler", "--host", host.address, "--port", str(self.port),
                                  "--no-dashboard", "--protocol", self.protocol, *self._tls_args()])

    def start_worker(self, host: Host) -> Started:
        nanny = ["--nanny"] if self.net.namespaces else ["--no-nanny"]
        return self._spawn(host, [DASK, "worker", self.address, "--host", host.address, "--nthreads",
                                  str(self.nthreads), "--nworkers", "1", *nanny, "--no-dashboard",
                                  "--death-timeout", "120", *self._tls_args()])

    def start(self) -> Cluster:
        """Start the scheduler and the workers; return once a client sees every worker."""
        try:
            self.start_scheduler()
            for host in self.net.workers:
                self.start_worker(host)
            self.wait_for_workers(len(self.net.workers))
        except BaseException:
            self.stop()
            raise
        return self

    def client(self, timeout: float = READY_WITHIN) -> Any:
        """A client of this cluster (close it: ``with cluster.client() as c``)."""
        from distributed import Client

        security = self.tls.security() if self.tls else None
        return Client(self.address, security=security, set_as_default=False, timeout=timeout)

    def wait_for_workers(self, n: int, timeout: float = READY_WITHIN) -> dict[str, int]:
        """Block until ``n`` workers are connected; their addresses and threads."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                with self.client(timeout=min(10.0, max(1.0, deadline - time.monotonic()))) as client:
                    client.wait_for_workers(n, timeout=max(1.0, deadline - time.monotonic()))
                    return dict(client.nthreads())
            except (OSError, TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise BedError(f"the cluster at {self.address} did not get {n} workers in {timeout:g} s: "
                                   f"{exc}\n{self.log_tail()}") from exc

    def check_alive(self) -> None:
        """Fail if a program exited while starting (its log says why)."""
        for s in self.started:
            if s.proc.poll() is not None and not s.killed:
                raise BedError(f"`dask` on {s.host.name} exited with {s.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for s in self.started:
            text = s.log.read_text(errors="replace").splitlines() if s.log.exists() else []
            out.append(f"--- {s.log.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    def worker_hosts(self) -> dict[str, Host]:
        """The connected workers' addresses, each with the host it runs on (found by its pid)."""
        with self.client() as client:
            pids = client.run(os.getpid)
        out = {}
        for address, pid in pids.items():
            for host in self.net.workers:
                if pid in self.pids(host):
                    out[address] = host
        return out

    # -- faults ---------------------------------------------------------------------------------------
    def pids(self, host: Host) -> list[int]:
        """Every live process of ``host``: its programs' sessions, and whatever is inside its namespace."""
        pids = set(netns_pids(host.netns)) if host.netns else set()
        for s in self.started:
            if s.host is host:
                pids.update(session_pids(s.proc.pid))
        return sorted(pids)

    def kill_host(self, host: Host) -> list[int]:
        """SIGKILL every process of ``host`` (the machine dies); the pids killed."""
        pids = self.pids(host)
        for s in self.started:
            if s.host is host:
                s.killed = True
        kill_pids(pids)
        for s in self.started:
            if s.host is host:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    s.proc.wait(10)
        return pids

    def restart_all(self) -> None:
        """Start every host's programs again (what is left of them killed first), as supervisors would."""
        for host in self.net.hosts:
            self.kill_host(host)
        self.start_scheduler()
        for host in self.net.workers:
            self.start_worker(host)
        self.wait_for_workers(len(self.net.workers))

    def kill(self, started: Started) -> None:
        """SIGKILL one program and whatever it started (its session)."""
        started.killed = True
        kill_pids(session_pids(started.proc.pid))
        with contextlib.suppress(subprocess.TimeoutExpired):
            started.proc.wait(10)

    def link_down(self, host: Host) -> None:
        """Pull ``host``'s cable (loopback: freeze its processes)."""
        if host.link:
            _ip("link", "set", host.link, "down")
        else:
            for pid in self.pids(host):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)

    def link_up(self, host: Host) -> None:
        if host.link:
            _ip("link", "set", host.link, "up")
        else:
            for pid in self.pids(host):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    # -- stop -----------------------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Stop every program (SIGTERM, then SIGKILL after a grace); what is still alive afterwards."""
        hosts = self.net.hosts
        for host in hosts:  # a frozen host cannot exit
            if host.link is None:
                for pid in self.pids(host):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
            elif not _link_is_up(host.link):
                _ip("link", "set", host.link, "up", check=False)
        everyone = sorted({pid for host in hosts for pid in self.pids(host)})
        alive = signal_pids(everyone, signal.SIGTERM, wait=5.0)
        signal_pids(alive, signal.SIGKILL, wait=10.0)
        for s in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.proc.wait(10)
        left = [f"pid {pid} on {host.name}" for host in hosts for pid in self.pids(host)]
        if not left:
            for name in self.orphan_semaphores():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{SHM}/{name}")
        return left

    def orphan_semaphores(self) -> list[str]:
        """Named semaphores made since the cluster started that no living process maps (those of
        killed processes: nothing else would ever unlink them)."""
        new = _semaphores() - self.semaphores_before
        return sorted(new - _mapped_in_shm()) if new else []


def _link_is_up(name: str) -> bool:
    flags = re.search(r"<([^>]*)>", _ip("link", "show", "dev", name, check=False).stdout)
    return flags is not None and "UP" in flags.group(1).split(",")


SHM = "/dev/shm"


def _semaphores() -> set[str]:
    """The names of `multiprocessing`'s named semaphores in /dev/shm."""
    try:
        return {n for n in os.listdir(SHM) if n.startswith("sem.mp-")}
    except FileNotFoundError:
        return set()


def _mapped_in_shm() -> set[str]:
    """The names of /dev/shm files that some living process maps (a semaphore in use is mapped)."""
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        with contextlib.suppress(OSError):
            for line in maps.read_text(errors="replace").splitlines():
                at = line.find(SHM + "/")
                if at >= 0:
                    mapped.add(line[at + len(SHM) + 1:].split()[0])
    return mapped


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
