"""Task functions and small tools shared by the engine tests.

Everything that runs in a worker process lives at module level here, so that worker processes can
import it by reference (``tests.helpers.square``). Keep this module light: no pytest or hypothesis
imports at module level, because every worker process that runs one of these tasks imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

MODES = ("sequential", "threads", "processes", "async", "dask")

#: A context variable the thread/async context tests set in the caller and read in a task.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("REQUEST_ID", default="unset")


# -- plain tasks -----------------------------------------------------------------------------------
def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def getpid(_: object = None) -> int:
    return os.getpid()


def slow_getpid(_: object = None) -> int:
    """A pid, after a short pause so that every worker of a small pool gets some of the work."""
    time.sleep(0.002)
    return os.getpid()


def pid_and_square(x: int) -> tuple[int, int]:
    time.sleep(0.001)
    return os.getpid(), x * x


def type_name(x: object) -> str:
    return type(x).__name__


def lock_on_two(x: int) -> object:
    """A result that cannot be pickled for item 2."""
    return threading.Lock() if x == 2 else x


def fail_on_multiples_of_three(x: int) -> int:
    """x * 10, except that a multiple of 3 raises ValueError."""
    if x % 3 == 0:
        raise ValueError(f"{x} is a multiple of three")
    return x * 10


def fail_on_seven(x: int) -> int:
    if x == 7:
        raise ValueError("seven is right out")
    return x


def raise_value_error(message: str) -> None:
    raise ValueError(message)


def sleep_then_return(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def sleep_from_five(x: int) -> int:
    """Items 0-4 return at once; from item 5 on the task sleeps 30 s (so it must be cancelled)."""
    if x >= 5:
        time.sleep(30)
    return x


def read_request_id(_: object = None) -> str:
    return REQUEST_ID.get()


async def aread_request_id(_: object = None) -> str:
    await asyncio.sleep(0)
    return REQUEST_ID.get()


async def asquare(x: int) -> int:
    await asyncio.sleep(0)
    return x * x


class FlakyTask:
    """Fails its first ``failures`` attempts on each item, then returns ``item * 2``.

    Attempts are counted with one file per attempt in ``directory``, so the count is shared by
    threads and by worker processes (which do not share memory). Picklable by reference.
    """

    def __init__(self, directory: str | os.PathLike[str], failures: int,
                 exc_type: type[Exception] = ValueError) -> None:
        self.directory = str(directory)
        self.failures = failures
        self.exc_type = exc_type

    def attempts(self, item: object) -> int:
        prefix = f"{item}."
        return sum(1 for name in os.listdir(self.directory) if name.startswith(prefix))

    def __call__(self, item: int) -> int:
        Path(self.directory, f"{item}.{uuid.uuid4().hex}").touch()
        attempt = self.attempts(item)
        if attempt <= self.failures:
            raise self.exc_type(f"attempt {attempt} on {item} fails on purpose")
        return item * 2


class SevenFailsLate(FlakyTask):
    """Returns the item, but item 7 always fails: after 0.05 s on its first attempt (long enough for
    the items after it to be queued), after 0.2 s on its retry, which is queued behind them. So the
    items after 7 have finished before 7 fails for good.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        super().__init__(directory, failures=0)

    def __call__(self, item: int) -> int:
        if item != 7:
            return item
        Path(self.directory, f"{item}.{uuid.uuid4().hex}").touch()
        time.sleep(0.2 if self.attempts(item) > 1 else 0.05)
        raise ValueError("seven is right out")


class SevenFailsWhenTold:
    """Returns the item; item 7 raises once the file ``go`` exists in ``directory`` (the test's
    consumer makes it when it has what it waited for; after 30 s it raises anyway)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        self.__name__ = self.__qualname__ = "seven_fails_when_told"

    def __call__(self, item: int) -> int:
        if item != 7:
            return item
        deadline = time.monotonic() + 30
        while not Path(self.directory, "go").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        raise ValueError("seven is right out")

# -- async adapter -------------------------------------------------------------------------------
def task_for(mode: str, sync_fn: Callable[..., Any]) -> Callable[..., Any]:
    """``sync_fn`` itself, or for mode "async" a coroutine function that calls it.

    Nothing is pickled in async mode, so a closure is fine there. The coroutine yields to the loop
    once, so tasks really interleave.
    """
    if mode != "async":
        return sync_fn

    async def run_async(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return sync_fn(*args, **kwargs)

    name = getattr(sync_fn, "__name__", type(sync_fn).__name__)
    run_async.__name__ = run_async.__qualname__ = f"async_{name}"
    return run_async


def expected(fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    return [fn(x) for x in items]


# -- input that counts how far it was read ---------------------------------------------------------
class Tally:
    """How many items a ``counting`` generator handed out (read from the consumer's thread)."""

    def __init__(self) -> None:
        self.pulled = 0


def counting(iterable: Iterable[Any]) -> tuple[Iterator[Any], Tally]:
    """A generator over ``iterable`` and the tally of how many items were pulled from it."""
    tally = Tally()

    def gen() -> Iterator[Any]:
        for item in iterable:
            tally.pulled += 1
            yield item

    return gen(), tally


# -- waiting in tests ------------------------------------------------------------------------------
def all_stacks() -> str:
    """Every thread's stack, as faulthandler prints them (for deadlock reports)."""
    import faulthandler

    with tempfile.TemporaryFile("w+") as f:
        faulthandler.dump_traceback(f, all_threads=True)
        f.seek(0)
        return f.read()


def deadlock(what: str) -> None:
    """Fail the running test: ``what`` did not happen in time; include every thread's stack."""
    import pytest

    pytest.fail(f"deadlock: {what}\n{all_stacks()}")


def wait_for(event: threading.Event, what: str, timeout: float = 10.0) -> None:
    if not event.wait(timeout):
        deadlock(f"{what} (waited {timeout} s)")


def join(thread: threading.Thread, what: str, timeout: float = 30.0) -> None:
    thread.join(timeout)
    if thread.is_alive():
        deadlock(f"{what} (thread {thread.name} still running after {timeout} s)")


def poll_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """True as soon as ``predicate()`` is; False if it is still false after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)



# -- marker files: a worker says "I started" and who it is -------------------------------------------
def write_marker(path: str | os.PathLike[str], text: str | None = None) -> None:
    """Write ``text`` (default: this process's pid) to ``path`` atomically.

    A test that polls for the file never reads it half-written: the text goes to a dot-file beside it
    first and is renamed into place. Readers skip dot-files (``read_markers``).
    """
    final = Path(path)
    temporary = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.write_text(str(os.getpid()) if text is None else text)
    os.replace(temporary, final)


def read_markers(directory: str | os.PathLike[str], pattern: str = "*") -> dict[str, str]:
    """``{name: text}`` of the markers in ``directory`` matching ``pattern`` (dot-files skipped)."""
    return {p.name: p.read_text() for p in sorted(Path(directory).glob(pattern)) if not p.name.startswith(".")}


# -- a per-worker initializer (Processes(initializer=...)) -------------------------------------------
_WORKER_STATE: dict[str, Any] = {"value": None, "calls": 0}


def load_state(value: Any) -> None:
    """An initializer: what a worker loads once (a model, a connection) before its first task."""
    _WORKER_STATE["value"] = value
    _WORKER_STATE["calls"] += 1


def read_state(_: object = None) -> tuple[int, Any, int]:
    """(pid, the value the initializer loaded, how often the initializer ran in this worker)."""
    time.sleep(0.005)
    return os.getpid(), _WORKER_STATE["value"], _WORKER_STATE["calls"]


def array_total(array: Any, i: int) -> float:
    """The sum of a (numpy) array, plus i: a task whose argument is large."""
    return float(array.sum()) + i


def run_in_own_session(args: list[str], cwd: Any, env: dict[str, str] | None = None,
                       timeout: float = 120) -> tuple[int, str, str, int]:
    """Run ``args`` in a session of its own; (returncode, stdout, stderr, pid). On a timeout,
    everything of that session is killed (nothing is left behind) and the return code is -9."""
    import signal
    import subprocess

    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:  # timed out: leave nothing behind, then fail
            for pid in session_members(proc.pid):
                os.kill(pid, signal.SIGKILL)
            out, err = proc.communicate()
    return proc.returncode, out, err, proc.pid


def session_members(sid: int) -> list[int]:
    """Pids of the live (not zombie) processes of session ``sid``: what a child started with
    ``start_new_session=True`` left behind, its own descendants included."""
    import psutil  # here, not at the top: worker processes import this module

    members = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return members


def assert_session_empty(sid: int, timeout: float = 15.0) -> None:
    """Fail (after killing them) if processes of session ``sid`` are still alive ``timeout`` s from now.

    A script's helpers may take a moment to go (a resource tracker exits when its pipe closes).
    """
    deadline = time.monotonic() + timeout
    left = session_members(sid)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = session_members(sid)
    if left:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        raise AssertionError(f"processes left behind by the script: {left}")
