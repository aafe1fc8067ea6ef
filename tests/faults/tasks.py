"""Tasks and fault objects for the fault battery, importable by worker processes.

Everything that runs in a worker is at module level here, so it pickles by reference
(``tests.faults.tasks.dispatch``). Keep this module light: no pytest import, nothing heavy.

Handshakes with the test go through files: a task that the test will kill first writes its pid to
``<directory>/<tag>-<pid>`` (atomically, by rename), and the test waits for that file.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers import write_marker

#: How long a "hanging" task sleeps: far past any bound in the tests, so only a kill ends it early.
HANG_SECONDS = 300.0


# -- handshakes ------------------------------------------------------------------------------------
def mark(directory: str, tag: str) -> int:
    """Write this process's pid to ``<directory>/<tag>-<pid>``; return the pid."""
    write_marker(Path(directory, f"{tag}-{os.getpid()}"))
    return os.getpid()


def marks(directory: str, tag: str) -> list[int]:
    """Pids that called ``mark(directory, tag)``, oldest first."""
    files = sorted((p for p in Path(directory).glob(f"{tag}-*") if not p.name.startswith(".")),
                   key=lambda p: p.stat().st_mtime_ns)
    return [int(p.read_text()) for p in files]


# -- plain tasks -------------------------------------------------------------------------------------
def square(x: int) -> int:
    return x * x


def getpid(_: object = None) -> int:
    return os.getpid()


def slow_square(x: int) -> int:
    """A task that takes a while: long maps that the stop tests interrupt."""
    time.sleep(0.2)
    return x * x


def short_square(x: int) -> int:
    """A short task for the chaos run."""
    time.sleep(0.0005)
    return x * x


def dispatch(item: Any) -> Any:
    """``item * item`` for an int; for ``(name, *args)`` call the task ``name(*args)``.

    Lets one map mix healthy tasks with one faulty task.
    """
    if isinstance(item, int):
        return item * item
    name, *args = item
    return globals()[name](*args)


# -- crashes -----------------------------------------------------------------------------------------
def hang(directory: str, tag: str) -> str:
    mark(directory, tag)
    time.sleep(HANG_SECONDS)
    return "woke up"


def first_attempt_hangs(directory: str, tag: str) -> int:
    """The first attempt marks and hangs (the test kills it); a later attempt returns its pid."""
    earlier = marks(directory, tag)
    pid = mark(directory, tag)
    if not earlier:
        time.sleep(HANG_SECONDS)
    return pid


def hang_ignoring_sigterm(directory: str, tag: str) -> str:
    """Ignore SIGTERM (but leave a file saying it came), mark, hang."""

    def on_term(signum: int, frame: object) -> None:
        Path(directory, f"sigterm-{os.getpid()}").write_text("SIGTERM received and ignored")

    signal.signal(signal.SIGTERM, on_term)
    mark(directory, tag)
    time.sleep(HANG_SECONDS)  # PEP 475: the sleep resumes after the handler
    return "woke up"


def sigkill_self(directory: str | None = None, tag: str = "crash") -> None:
    if directory is not None:
        mark(directory, tag)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(HANG_SECONDS)  # pragma: no cover - the signal is delivered first


def segfault(directory: str | None = None, tag: str = "crash") -> None:
    if directory is not None:
        mark(directory, tag)
    ctypes.string_at(0)  # reads address 0: SIGSEGV


def exit_with(code: int, directory: str | None = None, tag: str = "crash") -> None:
    if directory is not None:
        mark(directory, tag)
    os._exit(code)


_ONE_AT_A_TIME = threading.Lock()


def grow_or_crash_once(arg: tuple[int, str | None]) -> int:
    """``sum(i*i for i in range(n))``; the first call with a directory in a worker process SIGKILLs it.

    Calls with n == 1 run one at a time (a lock): without a GIL too, threads take turns and do
    not scale, so auto starts them sequentially there too (see test_workload's ``growing``).
    """
    n, directory = arg
    if n == 1:
        with _ONE_AT_A_TIME:
            return sum(i * i for i in range(n))
    if directory is not None and _in_worker():
        try:
            os.close(os.open(Path(directory, "crashed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(HANG_SECONDS)  # pragma: no cover
    return sum(i * i for i in range(n))


def crash_every_tenth(i: int) -> int:
    """``i * i``, except that every tenth item (0, 10, 20...) SIGKILLs its worker."""
    if i % 10 == 0:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(HANG_SECONDS)  # pragma: no cover
    return i * i


def raise_system_exit(code: int) -> None:
    raise SystemExit(code)


def raise_keyboard_interrupt(text: str) -> None:
    raise KeyboardInterrupt(text)


def fail_every_seventh(i: int) -> int:
    if i % 7 == 3:
        raise ValueError(f"item {i} fails on purpose")
    return i * i


async def afail_every_seventh(i: int) -> int:
    await asyncio.sleep(0)
    return fail_every_seventh(i)


async def adispatch(item: Any) -> Any:
    """The coroutine twin of ``dispatch``: ints are squared, ``(name, *args)`` calls a task."""
    await asyncio.sleep(0)
    if isinstance(item, int):
        return item * item
    name, *args = item
    result = globals()[name](*args)
    if asyncio.iscoroutine(result):
        return await result
    return result


async def ahang_until_cancelled(cancelled: threading.Event) -> str:
    """Sleep "forever"; when cancelled, say so through a thread-safe event, then let it go."""
    try:
        await asyncio.sleep(HANG_SECONDS)
    except asyncio.CancelledError:
        cancelled.set()
        raise
    return "woke up"


def thread_wait(started: threading.Event, release: threading.Event, holder: list[threading.Thread]) -> str:
    """A thread task that "hangs" until the test sets ``release`` (so no thread outlives a test)."""
    holder.append(threading.current_thread())
    started.set()
    release.wait(60)
    return "released"


# -- memory --------------------------------------------------------------------------------------------
_LEAKED: list[bytes] = []


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def leak(nbytes: int) -> tuple[int, int, int]:
    """Keep ``nbytes`` of touched memory for good; return (pid, rss before, rss after)."""
    before = rss()
    _LEAKED.append(b"\x01" * nbytes)  # written, so resident
    return os.getpid(), before, rss()


def big_bytes(nbytes: int) -> bytes:
    return b"\x02" * nbytes


def small_sized(_: object = None) -> tuple[int, int]:
    """A worker's (pid, rss): for max_tasks_per_worker."""
    return os.getpid(), rss()


# -- (un)pickling faults ---------------------------------------------------------------------------------
def _in_worker() -> bool:
    return os.environ.get("TASKLOOM_WORKER") == "1"


def _load_raises(label: str) -> None:
    raise ValueError(f"boom while unpickling the {label}")


def _load_kills(label: str) -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(HANG_SECONDS)  # pragma: no cover


class RaisesOnPickle:
    """Raises as soon as anyone pickles it."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __reduce__(self) -> Any:
        raise ValueError(f"boom while pickling the {self.label}")

    def __repr__(self) -> str:
        return f"RaisesOnPickle({self.label!r})"


class KillsOnPickle:
    """SIGKILLs the process that pickles it (only ever built in a worker)."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __reduce__(self) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(HANG_SECONDS)  # pragma: no cover
        return (KillsOnPickle, (self.label,))  # pragma: no cover

    def __repr__(self) -> str:
        return f"KillsOnPickle({self.label!r})"


class RaisesOnUnpickle:
    """Pickles fine; raises in whichever process unpickles it."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __reduce__(self) -> Any:
        return (_load_raises, (self.label,))

    def __repr__(self) -> str:
        return f"RaisesOnUnpickle({self.label!r})"


class KillsOnUnpickle:
    """Pickles fine; SIGKILLs whichever process unpickles it (a worker: the parent never does)."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __reduce__(self) -> Any:
        return (_load_kills, (self.label,))

    def __repr__(self) -> str:
        return f"KillsOnUnpickle({self.label!r})"


def stage_task(item: Any) -> Any:
    """The task of the pickle-stage matrix.

    An int is squared. ``"return:<Class>"`` returns an instance of that fault class as the result
    (so it is pickled in the worker and unpickled in the parent). Any other item is returned as is.
    """
    if isinstance(item, int):
        return item * item
    if isinstance(item, str) and item.startswith("return:"):
        return globals()[item.removeprefix("return:")]("result")
    return item


def return_lock(_: object = None) -> Any:
    """A result that cannot be pickled."""
    return threading.Lock()


class FlakyInput:
    """An iterator that yields 0, 1, ... and raises ``ValueError`` on pull number ``fail_at``.

    It would go on yielding after the error, so ``pulls`` shows whether anyone kept pulling.
    """

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.pulls = 0

    def __iter__(self) -> FlakyInput:
        return self

    def __next__(self) -> int:
        self.pulls += 1
        if self.pulls == self.fail_at:
            raise ValueError(f"the input broke at pull {self.pulls}")
        return self.pulls - 1


def raising_generator(source: FlakyInput) -> Iterator[int]:
    """A generator over a ``FlakyInput``: it raises mid-stream where its source does."""
    yield from source


# -- worker start-up -----------------------------------------------------------------------------------
def die_at_start(directory: str, times: int, how: str = "kill") -> None:
    """An initializer: the first ``times`` workers to start die in it (``how``: SIGKILL or exit 3).

    Each claims one of ``times`` turns with O_EXCL (two workers starting at once both counted
    fewer marks than ``times`` and both died: one death too many).
    """
    for turn in range(times):
        try:
            os.close(os.open(Path(directory, f".turn-{turn}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        mark(directory, "start")
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)
