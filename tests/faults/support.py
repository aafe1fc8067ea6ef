"""Bounded waits, process checks and subprocess parents for the fault battery.

Every wait here has a timeout; on timeout the test fails with the word "deadlock" and every
thread's stack, instead of hanging until pytest-timeout.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil
import pytest

import taskloom as tl
from taskloom._pools import live_backends

from . import tasks

ROOT = Path(__file__).resolve().parents[2]

#: Liveness bounds: generous on purpose (STYLE.md rule 19); the tight figures are measured by
#: benchmarks/faults.py.
GONE_WITHIN = 10.0
READY_WITHIN = 30.0


# -- stacks and deadlocks ----------------------------------------------------------------------------
def all_stacks() -> str:
    with tempfile.TemporaryFile("w+") as f:
        faulthandler.dump_traceback(f, all_threads=True)
        f.seek(0)
        return f.read()


def deadlock(what: str) -> None:
    pytest.fail(f"deadlock: {what}\n{all_stacks()}")


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = READY_WITHIN) -> None:
    """Poll ``predicate`` until it is true; fail with "deadlock" after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            deadlock(f"{what} (waited {timeout:g} s)")
        time.sleep(0.01)


def wait_marks(directory: str | os.PathLike[str], tag: str, count: int = 1,
               timeout: float = READY_WITHIN) -> list[int]:
    """Wait until ``count`` tasks wrote their pid under ``tag``; return the pids, oldest first."""
    wait_until(lambda: len(tasks.marks(str(directory), tag)) >= count,
               f"{count} task(s) to start and write their pid ({tag!r})", timeout)
    return tasks.marks(str(directory), tag)


# -- threads that die ---------------------------------------------------------------------------------------
#: "thread name: exception" for every thread that died of an exception while ``record_thread_deaths``
#: was active; a deadlock report includes them (a dead engine thread is the usual cause).
THREAD_DEATHS: list[str] = []
_DEAD_THREADS: list[threading.Thread] = []


def record_thread_deaths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record threads that die of an exception during this test (instead of pytest's warning)."""
    deaths: list[str] = []
    dead: list[threading.Thread] = []
    this = sys.modules[__name__]
    # Fresh lists for this test only: monkeypatch puts the (empty) module-level ones back after it.
    monkeypatch.setattr(this, "THREAD_DEATHS", deaths)
    monkeypatch.setattr(this, "_DEAD_THREADS", dead)

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.thread is not None:
            dead.append(args.thread)
        deaths.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}: {args.exc_value}")

    monkeypatch.setattr(threading, "excepthook", hook)
    return deaths


def settle_dead_threads() -> None:
    """Let threads that died finish dying, and collect what they left, before the test reports.

    Python 3.11 keeps one AST-builder state per interpreter, and tracebacks are formatted with
    ``ast.parse``: a dying thread (or a never-retrieved asyncio Task logged at garbage collection)
    formatting a traceback while pytest formats the failure in the main thread can make pytest
    crash with "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905).
    """
    for thread in _DEAD_THREADS:
        thread.join(5)
    gc.collect()


# -- runs ------------------------------------------------------------------------------------------------
class Consumer:
    """Iterates a run in a helper thread, so the test can inject a fault while the run goes on.

    ``finish(timeout)`` waits at most ``timeout`` s. A run that does not end in time is cancelled
    and the test fails with "deadlock", so a broken engine fails fast instead of hanging the suite.
    """

    def __init__(self, run: tl.Run[Any]) -> None:
        self.run = run
        self.results: list[Any] = []
        self.arrivals: list[float] = []  # time.monotonic() when each result reached the caller
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._body, name="faults-consumer", daemon=True)
        self.thread.start()

    def _body(self) -> None:
        try:
            for value in self.run:
                self.arrivals.append(time.monotonic())
                self.results.append(value)
        except BaseException as exc:  # the test inspects it
            self.error = exc

    def finish(self, timeout: float = 60.0) -> tuple[list[Any], BaseException | None]:
        deadline = time.monotonic() + timeout
        death_seen: float | None = None
        while self.thread.is_alive() and time.monotonic() < deadline:
            self.thread.join(0.05)
            if THREAD_DEATHS and death_seen is None:
                death_seen = time.monotonic()
            if death_seen is not None and time.monotonic() - death_seen > 2.0:
                break  # an engine thread died and the run did not end: it never will
        if THREAD_DEATHS:
            settle_dead_threads()
        if self.thread.is_alive():
            stacks = all_stacks()
            self.run.cancel()
            self.thread.join(5)
            freed = "freed" if not self.thread.is_alive() else "did NOT free"
            deaths = f"; threads that died: {THREAD_DEATHS}" if THREAD_DEATHS else ""
            waited = timeout - max(0.0, deadline - time.monotonic())
            pytest.fail(f"deadlock: the run did not end, waited {waited:.1f} s ({len(self.results)} results "
                        f"so far; run.cancel() {freed} the consumer{deaths})\n{stacks}")
        return self.results, self.error

    def finish_ok(self, timeout: float = 60.0) -> list[Any]:
        results, error = self.finish(timeout)
        if error is not None:
            raise AssertionError(f"the run raised {type(error).__name__}: {error}") from error
        return results


def consume(run: tl.Run[Any], timeout: float = 60.0) -> tuple[list[Any], BaseException | None]:
    """Iterate ``run`` to its end, at most ``timeout`` s: (results, the error it raised or None)."""
    return Consumer(run).finish(timeout)


def consume_ok(run: tl.Run[Any], timeout: float = 60.0) -> list[Any]:
    """Like ``consume``, and the run must not raise."""
    return Consumer(run).finish_ok(timeout)


def process_backend() -> Any:
    """The one warm process pool of this test."""
    pools = [b for b in live_backends() if b.name == "processes"]
    assert len(pools) == 1, f"expected one process pool, found {pools}"
    return pools[0]


def assert_one_outcome_per_item(outcomes: list[tl.Outcome[Any]], n: int) -> None:
    indexes = [o.index for o in outcomes]
    assert len(outcomes) == n, f"{len(outcomes)} outcomes for {n} items"
    assert sorted(indexes) == list(range(n)), "some index is missing or repeated"
    for o in outcomes:
        assert (o.error is None) == o.ok
        assert o.error is None or isinstance(o.error, tl.TaskError), repr(o.error)


# -- processes -------------------------------------------------------------------------------------------
def is_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie counts as gone: it runs no code)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def alive(pids: Iterable[int]) -> list[int]:
    return [pid for pid in pids if not is_gone(pid)]


def assert_gone(pids: Iterable[int], what: str, timeout: float = GONE_WITHIN) -> None:
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = alive(pids)
    assert not left, f"{what}: pid(s) {left} still alive {timeout:g} s later ({describe(left)})"


def describe(pids: Iterable[int]) -> str:
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out.append(f"{pid}: ppid {p.ppid()} {p.status()} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            out.append(f"{pid}: gone")
    return "; ".join(out)


def kill_all(pids: Iterable[int]) -> None:
    """End leftover processes of a failed test by pid (they may be orphans the fixture cannot see)."""
    for pid in alive(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


# -- subprocess parents ------------------------------------------------------------------------------------
PARENT_SCRIPT = """
import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, {root!r})

import taskloom as tl
from tests.faults import tasks


def main():
    # A long map: 100,000 tasks of 0.2 s on two workers would take hours.
    run = tl.imap(tasks.slow_square, range(100_000), mode=tl.Processes(), workers=2)
    it = iter(run)
    while len(run.statistics().per_worker) < 2:  # both workers have returned results
        next(it)
    pool = next(b for b in tl._pools.live_backends() if b.name == "processes")
    print("READY", json.dumps({{"parent": os.getpid(), "workers": pool.worker_pids()}}), flush=True)
    # Started after READY, so the pool was made by a single-threaded process (as a script's is).
    threading.Thread(target=end_with_the_test, args=(os.getppid(),), daemon=True).start()
    for _ in it:
        pass
    print("DONE", flush=True)


def end_with_the_test(test_pid):
    # The test process was killed (a CI timeout, Ctrl-C on pytest): do not map for hours as an
    # orphan. Our workers notice their parent is gone, as they would for any parent.
    while os.getppid() == test_pid:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
"""


class Parent:
    """A Python parent process running a long ``taskloom`` map in its own process group."""

    def __init__(self, tmp_path: Path) -> None:
        script = tmp_path / "parent.py"
        script.write_text(textwrap.dedent(PARENT_SCRIPT.format(root=str(ROOT))))
        self.stderr_path = tmp_path / "parent.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=self._stderr,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(tmp_path),
        )
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, name="parent-stdout", daemon=True)
        self._reader.start()
        self.workers: list[int] = []
        self.family: list[int] = []  # every descendant seen at READY (forkserver, workers, tracker)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._lines.put(None)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:  # timed out, or the parent ended without READY
                self.kill_everything()
                pytest.fail(f"deadlock: the parent never said READY within {timeout:g} s "
                            f"(exit code {self.proc.poll()}); its stderr:\n{self.stderr()}")
            if line.startswith("READY "):
                info = json.loads(line.removeprefix("READY "))
                self.workers = list(info["workers"])
                self.family = sorted(set(descendants(self.proc.pid)) | set(self.workers))
                assert len(self.workers) == 2, info
                assert not any(is_gone(p) for p in self.workers), describe(self.workers)
                return

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)  # start_new_session: the group id is the parent's pid

    def wait_exit(self, timeout: float = GONE_WITHIN) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_everything()
            pytest.fail(f"the parent did not exit within {timeout:g} s; its stderr:\n{self.stderr()}")
        raise AssertionError("unreachable")  # pragma: no cover

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def kill_everything(self) -> None:
        kill_all([self.proc.pid, *self.family, *descendants(self.proc.pid)])
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def close(self) -> None:
        self.kill_everything()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
