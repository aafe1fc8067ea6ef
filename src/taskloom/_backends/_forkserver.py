"""taskloom's own fork server: worker processes that never run the caller's ``__main__``.

multiprocessing's forkserver (and spawn) prepare each child by importing the parent's main module
again: a script without an ``if __name__ == "__main__":`` guard then runs its own ``tl.map`` in
every worker. Ours is a small interpreter started once per parent process that imports only the
worker module (and cloudpickle) and forks a worker per request. Functions and classes of
``__main__`` reach workers by value (``_mainpickle``), so no worker needs the script::

    parent (any thread)                        fork server                        worker
    -------------------                        -----------                        ------
    start_worker(conn fd, payload) ─socket──>  fork() ─────────────────────────>  W.run_forked
      fds by SCM_RIGHTS: conn end,               reply: pid
      sentinel pipe's write end, extras        SIGCHLD -> waitpid -> write the
    WorkerProcess(pid, sentinel)  <──pipe────    exit code into the sentinel pipe

The sentinel is a pipe whose write end only the worker and the server hold: it becomes readable
when the server writes the worker's exit code after reaping it (or at EOF, exit code unknown, if
the server died first). So the pool watches a worker's death with one file descriptor, as it does
a ``multiprocessing.Process.sentinel``. Workers do not depend on the server once started: if the
server dies, running workers go on, and the next start launches a new server.

Forking the server is safe although the parent has threads: the server is single-threaded and
holds no locks when it forks. It exits when the parent closes its socket (``shutdown()``) or dies.

Two ways to start the server. Where it is provably safe - the parent has exactly one OS thread
(``/proc/self/task``), so no other thread can hold a lock, and a small memory footprint
(``FORK_BELOW_RSS``), so the server's copy-on-write snapshot cannot pin much memory the parent
frees later - the parent forks it: it is ready in a few milliseconds and already has every module
the parent imported. Otherwise a fresh interpreter is executed (``python -c ... serve()``) with the
parent's ``sys.path``: ~60 ms of start-up, overlapped with the parent's own work. A forked server
drops everything it inherited that is not its own: file descriptors (pointed at /dev/null, so a
stale buffer flushed later writes nowhere), atexit hooks, signal handlers.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing.connection
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

from . import _registry

_HEADER = struct.Struct("<II")  # payload length, number of extra fds
_REPLY = struct.Struct("<q")  # worker pid, or -1 then an error text follows (length-prefixed)
_STATUS = struct.Struct("<i")  # exit code written into a worker's sentinel pipe
_MAX_FDS = 64
#: fork the server from the parent only below this resident size (see the module docstring)
FORK_BELOW_RSS = 128 * 2**20

#: The modules the server imports once, so a forked worker has them for free: the first two at
#: once (every worker runs them), cloudpickle when the server is first idle (only functions and
#: classes that travel by value need it: a first map of an importable function does not wait).
PRELOAD = ("taskloom._backends._worker", "taskloom._backends._mainpickle")
PRELOAD_IDLE = ("cloudpickle",)


class ForkServerError(OSError):
    """The fork server could not be started, or it could not start a worker."""


class WorkerProcess:
    """A worker started by the fork server: the parts of ``multiprocessing.Process`` the pool uses."""

    def __init__(self, pid: int, sentinel: int) -> None:
        self.pid = pid
        self.sentinel = sentinel  # readable once the worker is gone
        self._exitcode: int | None = None
        self._gone = False

    @property
    def exitcode(self) -> int | None:
        """The exit code once the worker is gone (negative: killed by that signal), else None."""
        self._poll(0)
        return self._exitcode

    def is_alive(self) -> bool:
        return not self._poll(0)

    def join(self, timeout: float | None = None) -> None:
        self._poll(timeout)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def close(self) -> None:
        if self.sentinel >= 0:
            with contextlib.suppress(OSError):
                os.close(self.sentinel)
            self.sentinel = -1

    def _signal(self, sig: int) -> None:
        # Only while the server has not reported the worker reaped: its pid may be reused after.
        if not self._poll(0):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)

    def _poll(self, timeout: float | None) -> bool:
        """Has the worker gone? Waits up to ``timeout`` seconds (None: for ever)."""
        if self._gone:
            return True
        if self.sentinel < 0:
            return False
        if not multiprocessing.connection.wait([self.sentinel], timeout):
            return False
        data = b""
        with contextlib.suppress(OSError):
            data = os.read(self.sentinel, _STATUS.size)
        if len(data) == _STATUS.size:
            (self._exitcode,) = _STATUS.unpack(data)
        self._gone = True  # EOF without a status: the server died before reaping it
        return True

    def __del__(self) -> None:
        self.close()


class _ForkedServer:
    """A server forked from this process: the parts of ``subprocess.Popen`` the client uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.002)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


class _Client:
    """The parent's end of one fork server; requests are serialised by a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | _ForkedServer | None = None
        self._sock: socket.socket | None = None
        self.forked = False  # how the running server was started (for tests and docs)

    def prestart(self) -> None:
        """Start the server now, if it is not running, so it boots while the caller works on.

        Call it from the thread that creates a pool, before the pool's own thread exists: only
        then can a single-threaded parent fork it.
        """
        with self._lock:
            if self._sock is None:
                self._launch()

    def start_worker(self, conn_fd: int, payload: bytes, extra_fds: list[int]) -> WorkerProcess:
        """Fork a worker that runs ``_worker.run_forked`` on ``conn_fd`` and ``payload``.

        A server that died is replaced once; a second failure raises ForkServerError.
        """
        with self._lock:
            for attempt in range(2):
                if self._sock is None:
                    self._launch()
                try:
                    return self._request(conn_fd, payload, extra_fds)
                except ForkServerError:
                    raise
                except OSError as exc:  # the server is gone: EOF, broken pipe, reset
                    self._discard()
                    if attempt == 1:
                        raise ForkServerError(f"the fork server died while starting a worker: {exc}") from exc
            raise AssertionError("unreachable")  # pragma: no cover

    def server_pid(self) -> int | None:
        with self._lock:
            return None if self._proc is None else self._proc.pid

    def stop(self, timeout: float = 5.0) -> None:
        """Close the socket: the server exits. Waits for it, kills it after ``timeout``."""
        with self._lock:
            proc = self._proc
            self._discard()
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:  # pragma: no cover - it exits on EOF at once
                proc.kill()
                proc.wait(5)

    def forget(self) -> None:
        """In a forked child: this server belongs to the parent; drop it without stopping it."""
        self._lock = threading.Lock()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self._proc = None

    # -- internals (lock held) --------------------------------------------------------------
    def _launch(self) -> None:
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        tracker = _resource_tracker_fd()
        if _fork_is_safe():
            self._fork(parent_sock, child_sock, tracker)
            return
        self.forked = False
        fds = [child_sock.fileno()]
        if tracker is not None:
            fds.append(tracker)
        code = f"from taskloom._backends._forkserver import serve; serve({child_sock.fileno()}, {tracker})"
        # The server needs the parent's sys.path (the script's folder, PYTHONPATH, a venv) to
        # import taskloom and whatever modules the tasks' functions come from.
        env = dict(os.environ)
        env["TASKLOOM_FORKSERVER_PATH"] = os.pathsep.join(p if p else os.getcwd() for p in sys.path)
        try:
            proc = subprocess.Popen(
                [sys.executable, *subprocess._args_from_interpreter_flags(), "-c", code],  # type: ignore[attr-defined]
                stdin=subprocess.DEVNULL, pass_fds=fds, env=env, close_fds=True,
            )
        except OSError as exc:
            parent_sock.close()
            raise ForkServerError(f"the fork server could not be started with {sys.executable}: {exc}") from exc
        finally:
            child_sock.close()
        self._proc, self._sock = proc, parent_sock

    def _fork(self, parent_sock: socket.socket, child_sock: socket.socket, tracker: int | None) -> None:
        # The server imports what it lacks of PRELOAD (cloudpickle) itself, while the parent goes on.
        for stream in (sys.stdout, sys.stderr):  # nothing buffered may be written twice
            with contextlib.suppress(Exception):
                stream.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the server
            try:
                parent_sock.close()
                keep = {0, 1, 2, child_sock.fileno(), *(() if tracker is None else (tracker,))}
                _forget_the_parent(keep)
                serve(child_sock.detach(), tracker)
            finally:
                os._exit(1)
        child_sock.close()
        self._proc, self._sock, self.forked = _ForkedServer(pid), parent_sock, True

    def _request(self, conn_fd: int, payload: bytes, extra_fds: list[int]) -> WorkerProcess:
        assert self._sock is not None
        r, w = os.pipe()
        try:
            message = _HEADER.pack(len(payload), len(extra_fds)) + payload
            socket.send_fds(self._sock, [message], [conn_fd, w, *extra_fds])
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        try:
            (pid,) = _REPLY.unpack(_recv_exact(self._sock, _REPLY.size))
            if pid < 0:
                (size,) = _REPLY.unpack(_recv_exact(self._sock, _REPLY.size))
                text = _recv_exact(self._sock, size).decode("utf-8", "replace")
                raise ForkServerError(f"the fork server could not start a worker: {text}")
        except BaseException:
            os.close(r)
            raise
        return WorkerProcess(pid, r)

    def _discard(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        if self._proc is not None and self._proc.poll() is None:
            # It sees EOF and exits: reap it so no zombie stays (stop() kills one that does not).
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self._proc.wait(0.5)
        self._proc = None


def _fork_is_safe() -> bool:
    """Is forking this process provably safe now? One OS thread, and a small footprint."""
    if os.environ.get("TASKLOOM_FORKSERVER") == "exec" or not hasattr(os, "fork"):
        return False
    try:
        threads = len(os.listdir("/proc/self/task"))
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: no proof, no fork
        return False
    return threads == 1 and rss < FORK_BELOW_RSS


def _forget_the_parent(keep: set[int]) -> None:  # pragma: no cover - runs in a forked server
    """In a server forked from the parent: drop what belongs to the parent."""
    import weakref

    atexit._clear()  # the parent's exit hooks are not ours (nor the workers')
    finalize: Any = weakref.finalize
    finalize._registered_with_atexit = False  # workers register their finalizers anew
    for sig in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError, TypeError):
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDWR)
    keep = keep | {devnull}
    os.dup2(devnull, 0)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 256))
    for fd in fds:
        if fd not in keep:
            # Kept open on /dev/null rather than closed: a stale buffered file object of the
            # parent's that flushes later writes nowhere, never into a file that reused its number.
            with contextlib.suppress(OSError):
                os.dup2(devnull, fd)


def _resource_tracker_fd() -> int | None:
    """multiprocessing's resource tracker, when this process already runs one: workers share it."""
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    fd = getattr(getattr(tracker, "_resource_tracker", None), "_fd", None)
    return fd if isinstance(fd, int) else None


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise EOFError("the fork server closed its socket")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


_client = _Client()


def start_worker(conn_fd: int, payload: bytes, extra_fds: list[int] | None = None) -> WorkerProcess:
    """Start a worker through this process's fork server (launched on first use)."""
    return _client.start_worker(conn_fd, payload, extra_fds or [])


def server_pid() -> int | None:
    """The fork server's pid while it runs (for tests and ``taskloom info``)."""
    return _client.server_pid()


def server_forked() -> bool:
    """Was the running server forked from this process (rather than started as a new interpreter)?"""
    return _client.forked


def prestart() -> None:
    """Start the server now if it is not running (see ``_Client.prestart``)."""
    _client.prestart()


def stop() -> None:
    """Stop the fork server (``taskloom.shutdown()`` and interpreter exit call it)."""
    _client.stop()


_registry.join("after_pools", stop)  # after the pools: their workers are stopped by then


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_client.forget)


# -- the server process -------------------------------------------------------------------------


def serve(fd: int, tracker_fd: int | None = None) -> None:  # pragma: no cover - runs in the server
    """The fork server's main loop (the server process runs only this)."""
    path = os.environ.pop("TASKLOOM_FORKSERVER_PATH", None)
    if path is not None:
        sys.path[:] = path.split(os.pathsep)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for module in PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(module)
    if tracker_fd is not None:
        from multiprocessing import resource_tracker

        resource_tracker._resource_tracker._fd = tracker_fd  # type: ignore[attr-defined]
    sock = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    sentinels: dict[int, int] = {}  # worker pid -> write end of its sentinel pipe
    idle_preload = list(PRELOAD_IDLE)
    while True:
        try:
            # Idle for 50 ms (the first workers are asked for right after the server starts).
            ready, _, _ = select.select([sock.fileno(), wake_r], [], [], 0.05 if idle_preload else None)
        except InterruptedError:
            continue
        if not ready:
            with contextlib.suppress(ImportError):
                __import__(idle_preload.pop())
            continue
        if wake_r in ready:
            with contextlib.suppress(OSError):
                os.read(wake_r, 4096)
            _reap(sentinels)
        if sock.fileno() in ready:
            try:
                request = _read_request(sock)
            except (EOFError, OSError):
                break  # the parent closed the socket or died: done
            pid = _fork_worker(request, sock, (wake_r, wake_w, *sentinels.values()), tracker_fd)
            conn_fd, sentinel_w, extra = request[1], request[2], request[3]
            os.close(conn_fd)
            for extra_fd in extra:
                os.close(extra_fd)
            if pid < 0:
                os.close(sentinel_w)
            else:
                sentinels[pid] = sentinel_w
            _reap(sentinels)
    os._exit(0)


def _read_request(sock: socket.socket) -> tuple[bytes, int, int, list[int]]:  # pragma: no cover - server
    data, fds, _, _ = socket.recv_fds(sock, _HEADER.size, _MAX_FDS)
    if not data:
        raise EOFError
    while len(data) < _HEADER.size:
        more = sock.recv(_HEADER.size - len(data))
        if not more:
            raise EOFError
        data += more
    size, n_extra = _HEADER.unpack(data)
    payload = _recv_exact(sock, size)
    if len(fds) != 2 + n_extra:
        for fd in fds:
            os.close(fd)
        raise EOFError("a request arrived without its file descriptors")
    return payload, fds[0], fds[1], list(fds[2:])


def _fork_worker(request: tuple[bytes, int, int, list[int]], sock: socket.socket, close: tuple[int, ...],
                 tracker_fd: int | None) -> int:  # pragma: no cover - server
    payload, conn_fd, _sentinel_w, extra = request
    try:
        pid = os.fork()
    except OSError as exc:
        text = f"fork() failed: {exc}".encode()
        sock.sendall(_REPLY.pack(-1) + _REPLY.pack(len(text)) + text)
        return -1
    if pid == 0:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            sock.close()
            for fd in close:  # the server's pipes and the other workers' sentinels
                with contextlib.suppress(OSError):
                    os.close(fd)
            # The sentinel's write end stays open here: it closes when this process ends.
            from taskloom._backends import _worker

            code = _worker.run_forked(conn_fd, payload, extra)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    sock.sendall(_REPLY.pack(pid))
    return pid


def _reap(sentinels: dict[int, int]) -> None:  # pragma: no cover - server
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        w = sentinels.pop(pid, None)
        if w is not None:
            with contextlib.suppress(OSError):
                os.write(w, _STATUS.pack(os.waitstatus_to_exitcode(status)))
            os.close(w)
