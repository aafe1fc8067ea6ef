"""The worker process: the child side of taskloom's process pool.

Kept small and light to import: the forkserver preloads it, so a new worker starts in a few
milliseconds. Two threads::

    parent ──conn──> receiver thread ──inbox──> main thread: run batch ──conn──> parent
                     (reads messages;            (unpickles items, runs fn,
                      parent gone -> _exit)       pickles results)

The receiver thread always reads, so the parent can never block on a full pipe while this
worker blocks writing a large result (the classic two-pipe deadlock). It also watches for the
parent's death (EOF on the pipe, or a new parent pid) and then ends the process at once, even
in the middle of a task: orphans must not outlive their parent.

Wire format: every message is ``op byte + struct header + pickle payload`` (see ``_protocol``).
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import signal
import struct
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from ._base import cpu_mark, cpu_since, run_items

# Parent -> worker
OP_FUNCTION = b"F"  # <q job_id> + cloudpickled function
OP_BATCH = b"B"  # <q batch_id, q job_id, B flags> + pickled items
OP_CANCEL = b"C"  # <q batch_id>: skip it if not started
OP_STOP = b"X"
# Worker -> parent
OP_READY = b"I"  # <q pid>
OP_INIT_FAILED = b"E"  # traceback text
OP_STARTED = b"S"  # <q batch_id>
OP_RESULT = b"R"  # <q batch_id, d elapsed, 3d CpuTime> + pickled (values, errors, durations)
OP_LOST = b"L"  # <q batch_id> + reason byte + detail text: the batch could not run as a whole
OP_RETIRE = b"Q"  # finished its quota (tasks or memory): the parent re-queues what it sent after
OP_LOG = b"G"  # a pickled LogRecord dict: the parent hands it to its own logger of that name

FLAG_TIMED = 1
FLAG_PER_ITEM = 2
FLAG_SINGLE = 4  # a batch of one item: a failure to unpickle it is that item's own
FLAG_CPU = 8  # measure where the batch's time went (else its CpuTime is sent as -1s)

Q = struct.Struct("<q")
#: What the main thread took last, in a small memory page the parent can read after a death: a
#: batch id, or minus a job id while it loads that job's function. A batch the dead worker never
#: took was not run, so it is sent again without counting a crash.
TAKEN = Q
BATCH = struct.Struct("<qqB")
RESULT = struct.Struct("<qdddd")

LOST_SPLIT = b"s"  # run the items one by one to find the culprit
LOST_ITEM = b"i"  # this single item could not be unpickled here
LOST_FUNCTION = b"f"  # the function could not be unpickled here


class WorkerConfig:
    """What a worker needs to know, sent once when it starts."""

    def __init__(
        self,
        initializer: bytes | None,
        max_tasks: int | None,
        max_memory: int | None,
        max_result_size: int | None,
        env: dict[str, str],
        log_level: int = 30,
        parent_pid: int = 0,
    ) -> None:
        self.log_level = log_level  # records at or above it go to the parent's handlers
        self.parent_pid = parent_pid  # the taskloom parent (the fork server is only the OS parent)
        self.initializer = initializer
        self.max_tasks = max_tasks
        self.max_memory = max_memory
        self.max_result_size = max_result_size
        self.env = env
        #: "fork"/"spawn": the initializer's arguments as they are (multiprocessing passes them:
        #: inherited, or pickled while spawning); None: they are pickled with ``initializer``
        self.initargs: tuple[Any, ...] | None = None
        #: the parent's multiprocessing authkey, so a worker can talk to the parent's Managers
        self.authkey: bytes | None = None


class RemoteError(Exception):
    """Stands in for an exception that could not be pickled in the worker."""


#: file descriptors that arrived with this worker (a Queue or pipe in ``initargs``), by index
_inherited_fds: list[int] = []


class InheritedFd:
    """A file descriptor in a pickle, passed to the worker beside it (multiprocessing's ``DupFd``)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def detach(self) -> int:
        return _inherited_fds[self.index]


class FdCollector:
    """Plays multiprocessing's "spawning popen" while a worker's payload is pickled.

    A ``multiprocessing.Queue`` or ``Connection`` in ``initargs`` pickles its file descriptors
    through ``DupFd``: they are collected here and sent to the worker with the payload.
    """

    def __init__(self) -> None:
        self.fds: list[int] = []

    def duplicate_for_child(self, fd: int) -> int:
        self.fds.append(fd)
        return len(self.fds) - 1

    def DupFd(self, index: int) -> InheritedFd:  # multiprocessing's name
        return InheritedFd(index)


def dumps(obj: Any) -> bytes:
    """pickle (fast, C) first; cloudpickle for lambdas, closures and locally defined classes."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle

        data: bytes = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        return data


def _portable_exception(exc: BaseException) -> BaseException:
    try:
        pickle.loads(dumps(exc))
        return exc
    except Exception:
        return RemoteError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")


def _pack_results(
    values: list[Any], errors: dict[int, Any] | None, durations: list[float] | None, fn_name: str,
    max_size: int | None,
) -> bytes:
    """Pickle a batch's results; an item whose result cannot be pickled becomes its own error."""
    errs = None
    if errors:
        errs = {pos: (_portable_exception(e.exception), e.traceback) for pos, e in errors.items()}
    try:
        data = dumps((values, errs, durations))
    except Exception:
        errs = dict(errs or {})
        for pos, value in enumerate(values):
            if pos in errs:
                continue
            try:
                dumps(value)
            except Exception as exc:
                values[pos] = None
                errs[pos] = (_serialization_error(
                    f"the result of {fn_name}() could not be pickled to send it back: "
                    f"{type(exc).__name__}: {exc}"), traceback.format_exc())
        data = dumps((values, errs, durations))
    if max_size is not None and len(data) > max_size:
        # Too large as a whole: fail each oversized result alone, keep the others.
        errs = dict(errs or {})
        for pos, value in enumerate(values):
            if pos in errs:
                continue
            size = len(dumps(value))
            if size > max_size or len(values) == 1:
                values[pos] = None
                errs[pos] = (_serialization_error(
                    f"the result of {fn_name}() is {size:,} bytes pickled, over the limit of "
                    f"{max_size:,} bytes (Processes(max_result_size=...)); return less data, or write "
                    "it to a file and return the path"), "")
        data = dumps((values, errs, durations))
    return data


def _serialization_error(message: str) -> BaseException:
    from .._errors import SerializationError

    return SerializationError(message, what="result")


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        import psutil

        return int(psutil.Process().memory_info().rss)


def _parent_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists
        return True
    return True


def _receiver(conn: Connection, inbox: queue.SimpleQueue[bytes | None], cancelled: set[int], parent: int) -> None:
    while True:
        try:
            if not conn.poll(0.5):
                if not _parent_alive(parent):  # the pipe may live on in a process the parent forked
                    os._exit(0)
                continue
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            os._exit(0)  # the parent is gone: end now, even mid-task
        if msg[:1] == OP_CANCEL:
            cancelled.add(Q.unpack_from(msg, 1)[0])
            continue
        inbox.put(msg)
        if msg[:1] == OP_STOP:
            return


def run_forked(conn_fd: int, payload: bytes, fds: list[int]) -> int:
    """Entry point of a worker forked by taskloom's fork server; returns the exit code.

    The worker gets a ``__main__`` of its own, empty: the caller's script is never run here, and
    its functions and classes arrive by value (``_mainpickle``) into this namespace.
    """
    import atexit
    import mmap
    import types

    sys.modules["__main__"] = types.ModuleType("__main__")
    taken = mmap.mmap(fds[0], TAKEN.size)
    os.close(fds[0])
    _inherited_fds[:] = fds[1:]
    config = pickle.loads(payload)
    main(Connection(conn_fd), config, taken)
    atexit._run_exitfuncs()  # weakref finalizers (a SharedArray this worker owns), as at a normal exit
    return 0


def main(conn: Connection, config: WorkerConfig, taken: Any = None) -> None:
    """Entry point of a worker process (``taken``: see ``TAKEN``)."""
    from . import _mainpickle

    # Ctrl-C goes to the whole process group; the parent decides what stops, and the user sees
    # one traceback, not one per worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _mainpickle.snapshot()
    os.environ.update(config.env)
    if config.authkey is not None:
        from multiprocessing import process

        process.current_process().authkey = config.authkey
    _reseed()
    lock = threading.Lock()

    def send(data: bytes) -> None:
        # The main thread sends results; a task's own threads may send log records meanwhile.
        with lock:
            conn.send_bytes(data)

    _ship_logs(send, config.log_level)
    if config.initializer is not None:
        try:
            if config.initargs is not None:
                init, initargs = pickle.loads(config.initializer), config.initargs
            else:
                init, initargs = pickle.loads(config.initializer)
            init(*initargs)
        except BaseException:
            # Where ProcessPoolExecutor's workers report it, so handlers set up for it see it too.
            logging.getLogger("concurrent.futures").critical("Exception in initializer:", exc_info=True)
            util = sys.modules.get("multiprocessing.util")
            if util is not None:  # flush what the initializer put in multiprocessing Queues first
                util._exit_function()
            send(OP_INIT_FAILED + traceback.format_exc().encode("utf-8", "replace"))
            sys.exit(1)
    send(OP_READY + Q.pack(os.getpid()))

    inbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    cancelled: set[int] = set()
    threading.Thread(target=_receiver, args=(conn, inbox, cancelled, config.parent_pid or os.getppid()), daemon=True,
                     name="taskloom-receiver").start()
    functions: dict[int, Callable[..., Any] | BaseException] = {}
    names: dict[int, str] = {}
    tasks_done = 0
    while True:
        msg = inbox.get()
        if msg is None or msg[:1] == OP_STOP:
            break
        op = msg[:1]
        if op == OP_FUNCTION:
            (job_id,) = Q.unpack_from(msg, 1)
            if taken is not None:
                TAKEN.pack_into(taken, 0, -job_id)
            try:
                fn = pickle.loads(memoryview(msg)[1 + Q.size:])
                functions[job_id] = fn
                names[job_id] = getattr(fn, "__qualname__", repr(fn))
            except BaseException as exc:
                functions[job_id] = exc
            if len(functions) > 64:  # keep the newest functions only
                oldest = next(iter(functions))
                functions.pop(oldest)
                names.pop(oldest, None)
            continue
        # OP_BATCH
        batch_id, job_id, flags = BATCH.unpack_from(msg, 1)
        if batch_id in cancelled:
            cancelled.discard(batch_id)
            continue
        if taken is not None:
            TAKEN.pack_into(taken, 0, batch_id)
        if flags & FLAG_TIMED:
            send(OP_STARTED + Q.pack(batch_id))
        fn_or_exc = functions.get(job_id)
        if not callable(fn_or_exc):
            detail = (f"{type(fn_or_exc).__name__}: {fn_or_exc}" if fn_or_exc is not None
                      else "the worker never received the function")
            send(OP_LOST + Q.pack(batch_id) + LOST_FUNCTION + detail.encode("utf-8", "replace"))
            continue
        try:
            items = pickle.loads(memoryview(msg)[1 + BATCH.size:])
        except BaseException as exc:
            detail = f"{type(exc).__name__}: {exc}"
            del msg
            reason = LOST_ITEM if flags & FLAG_SINGLE else LOST_SPLIT
            send(OP_LOST + Q.pack(batch_id) + reason + detail.encode("utf-8", "replace"))
            continue
        del msg
        # Quotas are per task, not per batch: a worker stops mid-batch when it reaches one, and
        # the parent runs the rest of the batch elsewhere.
        quota = None if config.max_tasks is None else config.max_tasks - tasks_done

        def at_quota(done: int, quota: int | None = quota) -> bool:
            return (quota is not None and done >= quota) or (
                config.max_memory is not None and _rss() > config.max_memory)

        mark = cpu_mark() if flags & FLAG_CPU else None
        values, errors, durations, elapsed = run_items(
            fn_or_exc, items, per_item_timing=bool(flags & FLAG_PER_ITEM), catch=BaseException,
            stop=at_quota if quota is not None or config.max_memory is not None else None,
        )
        del items
        ran = len(values)
        payload = _pack_results(values, errors, durations, names.get(job_id, "the function"),
                                config.max_result_size)
        del values
        cpu = (-1.0, -1.0, -1.0) if mark is None else cpu_since(mark)
        send(OP_RESULT + RESULT.pack(batch_id, elapsed, *cpu) + payload)
        del payload
        tasks_done += ran
        if (config.max_tasks is not None and tasks_done >= config.max_tasks) or (
            config.max_memory is not None and _rss() > config.max_memory
        ):
            send(OP_RETIRE)
            break
    conn.close()


class _ParentHandler(logging.Handler):
    """Sends each log record to the parent, where it reaches the handlers the user configured."""

    def __init__(self, send: Callable[[bytes], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            state = dict(record.__dict__)
            state["msg"] = record.getMessage()  # args may not pickle: send the formatted text
            state["args"] = None
            if record.exc_info:
                state["exc_text"] = logging.Formatter().formatException(record.exc_info)
            state["exc_info"] = None
            self._send(OP_LOG + pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:
            self.handleError(record)


def _ship_logs(send: Callable[[bytes], None], level: int) -> None:
    """Log records from tasks go to the parent, not to this process's stderr."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_ParentHandler(send))
    root.setLevel(level)


def _reseed() -> None:
    """Forked workers share the parent's random state; give each its own."""
    import random

    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:  # only when already imported (preloaded): never import numpy here
        np.random.seed()
