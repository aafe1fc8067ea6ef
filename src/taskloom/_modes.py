"""Mode objects: which engine runs the work, with that engine's own knobs and facts.

A mode is a string (``"threads"``) or one of these frozen dataclasses. Knobs that belong to one
engine live on its object (``Processes(max_tasks_per_worker=...)``), not on every call.

Every mode derives from ``Mode``, which is also the engine contract: what the rest of taskloom
asks of an engine (how to open its backend, its crash-retry default, its batching rule, what a
timeout does to a task, whether tasks see the caller's context, which callables it runs, what
nesting does). No module outside this one and ``_backends/`` asks which mode it has: it asks
the mode. A new engine is one more ``Mode`` subclass and one backend module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias

from ._system import ASYNC_DEFAULT_WORKERS, default_threads, usable_cpus

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import BrokenExecutor

    from ._backends._base import Backend

__all__ = ["Async", "Auto", "Dask", "Mode", "ModeLike", "Processes", "Sequential", "Threads", "parse_mode"]

MODE_NAMES = ("sequential", "threads", "processes", "async", "dask", "auto")

#: Async batches: about this many of a run's coroutines running at once share the bookkeeping of
#: one batch, and a batch holds at most ``ASYNC_MAX_BATCH`` (see ``Async.batch_size``).
ASYNC_BATCHES_AT_ONCE = 64
ASYNC_MAX_BATCH = 32


class Mode:
    """The base of every mode object, and the contract an engine keeps with the scheduler.

    ``Sequential``, ``Threads``, ``Processes``, ``Async``, ``Dask`` and ``Auto`` are modes;
    ``isinstance(x, taskloom.Mode)`` tells a mode object from a mode name. The class attributes
    below are the engine's facts, which the scheduler, ``Executor`` and pipelines read instead
    of asking which mode they have. A subclass that implements ``open_backend`` (returning a
    backend of ``taskloom._backends._base``) plugs a new engine in; that contract is internal
    and may change between versions (see docs/architecture.md).

    Attributes:
        name: the engine's name in statistics, errors and progress ("threads", "processes"...).
        crash_retries: runs again, on a fresh worker, of a task whose worker died (0 where a
            task cannot kill its worker).
        timeout_text: what happens to a task past its ``timeout``, for the ``TaskTimeout`` message.
        sees_caller_context: tasks run in a copy of the caller's ``contextvars`` context.
        runs: which callables it accepts: "functions", "coroutines" (``async def``) or "both".
        pool_per_depth: a call from inside one of its own workers gets a pool of its own (a
            thread pool whose tasks wait on that same pool would deadlock); False where workers
            are separate processes.
        measures: True only for ``Auto``: the mode is chosen by measuring, not opened.
        pickles_calls: tasks and results travel pickled (``Executor.submit`` pickles at once).
        stops_running_tasks: a running task can really be stopped (``Executor(cancel_running=True)``).
        marks_running_when_taken: a submitted task counts as running once the engine took it
            (the stdlib's process pool does so, and ``Executor`` follows it).
    """

    name: str
    crash_retries: int = 0
    timeout_text: ClassVar[str] = "it was abandoned"
    sees_caller_context: ClassVar[bool] = False
    runs: ClassVar[Literal["functions", "coroutines", "both"]] = "functions"
    pool_per_depth: ClassVar[bool] = True
    measures: ClassVar[bool] = False
    pickles_calls: ClassVar[bool] = False
    stops_running_tasks: ClassVar[bool] = False
    marks_running_when_taken: ClassVar[bool] = False

    def default_workers(self) -> int:
        """The worker count a call gets without ``workers=``."""
        return usable_cpus()

    def open_backend(self, workers: int, depth: int) -> Backend:
        """A new backend running this engine with ``workers`` workers (``depth``: see ``pool_per_depth``)."""
        raise ValueError(f"mode {self.name!r} cannot run tasks by itself")

    def open_on_loop(self, loop: asyncio.AbstractEventLoop, loop_thread: int, workers: int) -> Backend | None:
        """A backend on the caller's running event loop (``amap``), or None: use the shared pool."""
        return None

    def batch_size(self, workers: int, total: int | None) -> int | None:
        """The engine's own batch size for ``chunksize="auto"``, or None: sized by measured time (``Chunker``)."""
        return None

    def pool_key(self) -> Hashable:
        """What tells two warm pools of this engine apart (with the worker count); None: never pooled."""
        return self

    def broken_error(self) -> type[BrokenExecutor]:
        """The stdlib's exception for a pool of this engine that can run nothing."""
        from concurrent.futures import BrokenExecutor

        return BrokenExecutor

    def check_function(self, label: str, coroutine: bool) -> None:
        """Refuse a callable this engine cannot run, with a message naming ``label`` and the way out.

        Raises:
            ValueError: an ``async def`` function on an engine for plain ones, or the reverse.
        """
        if coroutine and self.runs == "functions":
            raise ValueError(f"{label} is an async def function: it needs mode='async' or 'auto', not {self.name!r}")
        if not coroutine and self.runs == "coroutines":
            raise ValueError(f"mode={self.name!r} runs async def functions, and {label} is a plain function: "
                             "use mode='threads' for blocking I/O")


def by_name(name: str) -> Mode:
    """The default mode object of one of ``MODE_NAMES`` (auto's advice names its engine so)."""
    return _BY_NAME[name]()


def _check_idle_timeout(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"idle_timeout must be a number of seconds > 0, got {value!r}")


@dataclass(frozen=True)
class Sequential(Mode):
    """Run every task in the caller's thread, one after the other (debuggable, no overhead).

    Same as ``mode="sequential"``. Retries, ``on_error``, statistics and progress work as on every
    engine; a task past its ``timeout`` cannot be interrupted: it runs to its end, then fails with
    ``TaskTimeout``.
    """

    name: Literal["sequential"] = field(default="sequential", init=False, repr=False)
    timeout_text: ClassVar[str] = "it ran to the end in the caller's thread (the sequential mode cannot interrupt it)"

    def default_workers(self) -> int:
        """The worker count a call gets without ``workers=``: always 1."""
        return 1

    def open_backend(self, workers: int, depth: int) -> Backend:
        from ._backends._sequential import SequentialBackend

        return SequentialBackend()

    def pool_key(self) -> Hashable:
        return None  # nothing to keep warm: a new (free) backend per run


@dataclass(frozen=True)
class Threads(Mode):
    """Run tasks on a warm pool of threads: for I/O and for code that releases the GIL.

    Same as ``mode="threads"`` with the defaults. Without ``workers`` a call gets
    ``min(32, cpus + 4)`` threads, the stdlib's default. Thread tasks see the caller's
    ``contextvars``. A thread cannot be stopped: a task past its ``timeout`` fails with
    ``TaskTimeout`` at the deadline and runs on (its result is dropped) while the pool starts a
    replacement thread.

    Args:
        idle_timeout: seconds after which an idle pool thread exits (default 60.0); the next task
            starts a new one.
        initializer: called once in each pool thread before its first task, with ``initargs``
            (as ``ThreadPoolExecutor(initializer=)``). If it raises, the tasks waiting for the pool
            fail (a ``taskloom.Executor`` becomes broken: ``BrokenThreadPool``), and the exception
            is logged at CRITICAL on the ``concurrent.futures`` logger, as the stdlib does.
        initargs: arguments for ``initializer``.

    Raises:
        ValueError, TypeError: an ``idle_timeout`` that is not a number > 0, or an initializer
            that is not callable.
    """

    idle_timeout: float = 60.0
    initializer: Callable[..., Any] | None = None
    initargs: tuple[Any, ...] = ()
    name: Literal["threads"] = field(default="threads", init=False, repr=False)
    timeout_text: ClassVar[str] = "its thread cannot be stopped and runs on; its result will be ignored"
    sees_caller_context: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_idle_timeout(self.idle_timeout)
        if self.initializer is not None and not callable(self.initializer):
            raise TypeError(f"initializer must be callable, got {self.initializer!r}")

    def default_workers(self) -> int:
        """The worker count a call gets without ``workers=``: ``min(32, usable CPUs + 4)``."""
        return default_threads()

    def open_backend(self, workers: int, depth: int) -> Backend:
        from ._backends._threads import ThreadBackend

        return ThreadBackend(workers, self.idle_timeout, depth, self.initializer, self.initargs)

    def broken_error(self) -> type[BrokenExecutor]:
        from concurrent.futures.thread import BrokenThreadPool

        return BrokenThreadPool


def default_start_method() -> str:
    # fork is fast but unsafe once threads exist (and taskloom's own pool has a manager thread):
    # a child can inherit a lock held by another thread and hang. Python 3.14 made forkserver the
    # default on Linux for this reason; we do the same on every POSIX system that has it, and
    # start workers from taskloom's own fork server, which never runs the caller's __main__.
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    if sys.platform != "darwin" and "forkserver" in methods:
        return "forkserver"
    return "spawn"


@dataclass(frozen=True)
class Processes(Mode):
    """Run tasks on taskloom's own warm process pool: for pure-Python CPU work.

    Same as ``mode="processes"`` with the defaults. The function, items and results travel
    pickled (cloudpickle for the function, so lambdas and closures work). Workers never run
    your ``__main__``: what it defines (functions, classes, globals a task reads) travels by value,
    so a script needs no ``if __name__ == "__main__":`` guard. A task past its ``timeout`` has its
    worker terminated and replaced.

    Example::

        taskloom.map(work, items, mode=taskloom.Processes(max_tasks_per_worker=500, max_memory="2GiB",
                                                          initializer=load_model))

    Args:
        start_method: ``"forkserver"`` (the default on POSIX systems other than macOS: taskloom's
            own fork server, started once, with only the worker module loaded), ``"spawn"`` (the
            default on macOS and Windows; each worker imports your main module again, so a script
            needs the ``__main__`` guard) or ``"fork"`` (multiprocessing's: fast, but unsafe
            once the parent has threads).
        max_tasks_per_worker: recycle a worker after this many tasks (leaky libraries); None
            (the default): never.
        max_memory: recycle a worker whose RSS is over this after a task: bytes, or a string such
            as ``"2GiB"`` or ``"500MB"``; None (the default): no limit.
        initializer: called once in each worker before its first task, with ``initargs``.
        initargs: arguments for ``initializer``.
        crash_retries: how often a task whose worker died is run again on a fresh worker
            before it is reported as ``WorkerCrashed`` (default 1; counted apart from ``retries``).
        idle_timeout: seconds after which an idle worker exits (default 120.0).
        max_result_size: a result larger than this (bytes or a string such as ``"512MiB"``) fails
            as ``SerializationError`` instead of exhausting memory; None (the default): no limit.

    Raises:
        ValueError, TypeError: an unknown start method, a size that cannot be read, an
            out-of-range count or timeout, or an initializer that is not callable.
    """

    start_method: str | None = None
    max_tasks_per_worker: int | None = None
    max_memory: int | str | None = None
    initializer: Callable[..., Any] | None = None
    initargs: tuple[Any, ...] = ()
    crash_retries: int = 1
    idle_timeout: float = 120.0
    max_result_size: int | str | None = None
    name: Literal["processes"] = field(default="processes", init=False, repr=False)
    timeout_text: ClassVar[str] = "its worker process was terminated and replaced"
    pool_per_depth: ClassVar[bool] = False  # separate processes: a nested call cannot wait on itself
    pickles_calls: ClassVar[bool] = True
    stops_running_tasks: ClassVar[bool] = True
    marks_running_when_taken: ClassVar[bool] = True

    def __post_init__(self) -> None:
        import multiprocessing

        methods = multiprocessing.get_all_start_methods()
        if self.start_method is not None and self.start_method not in methods:
            raise ValueError(
                f"start_method must be one of {methods}, got {self.start_method!r}"
            )
        if self.max_tasks_per_worker is not None and self.max_tasks_per_worker < 1:
            raise ValueError(f"max_tasks_per_worker must be >= 1 or None, got {self.max_tasks_per_worker!r}")
        if self.crash_retries < 0:
            raise ValueError(f"crash_retries must be >= 0, got {self.crash_retries!r}")
        _check_idle_timeout(self.idle_timeout)
        if self.initializer is not None and not callable(self.initializer):
            raise TypeError(f"initializer must be callable, got {self.initializer!r}")
        parse_size(self.max_memory, "max_memory")
        parse_size(self.max_result_size, "max_result_size")

    @property
    def resolved_start_method(self) -> str:
        """The start method workers will use: ``start_method``, or this platform's default."""
        return self.start_method or default_start_method()

    def default_workers(self) -> int:
        """The worker count a call gets without ``workers=``: the CPUs this process may use
        (CPU affinity and cgroup quota, not ``os.cpu_count()``)."""
        return usable_cpus()

    def open_backend(self, workers: int, depth: int) -> Backend:
        from ._backends._processes import ProcessBackend

        return ProcessBackend(self, workers)

    def broken_error(self) -> type[BrokenExecutor]:
        from concurrent.futures.process import BrokenProcessPool

        return BrokenProcessPool


@dataclass(frozen=True)
class Async(Mode):
    """Run coroutine functions on an asyncio event loop; ``workers`` caps concurrency.

    From synchronous code the loop runs in a taskloom thread ("taskloom-asyncio"), shared by
    every run with the same settings, so a caller can map coroutines without a loop of its own.
    Inside a running loop, ``await taskloom.amap(...)`` / ``taskloom.aimap(...)`` run them on
    the caller's loop instead. Default cap: 100 at once (a semaphore, not a pool).

    Args:
        loop: ``"asyncio"`` (default) or ``"uvloop"`` (the ``taskloom[uvloop]`` extra).
        debug: report, with its stack, any coroutine that blocks the loop for more than
            100 ms (also on with the environment variable ``TASKLOOM_DEBUG=1``).

    Raises:
        ValueError: ``loop`` is neither "asyncio" nor "uvloop" (at construction), or uvloop is
            not installed (when a run starts).
    """

    loop: str = "asyncio"
    debug: bool = False
    name: Literal["async"] = field(default="async", init=False, repr=False)
    timeout_text: ClassVar[str] = "the coroutine was cancelled"
    sees_caller_context: ClassVar[bool] = True
    runs: ClassVar[Literal["functions", "coroutines", "both"]] = "coroutines"

    def __post_init__(self) -> None:
        if self.loop not in ("asyncio", "uvloop"):
            raise ValueError(f"loop must be 'asyncio' or 'uvloop', got {self.loop!r}")

    def default_workers(self) -> int:
        """The concurrency cap a call gets without ``workers=``: 100 coroutines at once."""
        return ASYNC_DEFAULT_WORKERS

    def batch_size(self, workers: int, total: int | None) -> int:
        """A count, not a time: the coroutines of a batch run side by side (each an asyncio task
        of its own, at most ``workers`` of a run at once) and mostly wait, so a batch's time says
        nothing of how many it should hold.

        About 1/64 of what runs at once (of the whole input, when that is smaller), at most 32:
        2,000 at once go as 63 batches, not 2,000 (each costs the run ~5 µs that the GIL
        serialises with the loop); under 128 at once (the default cap is 100), one per batch.
        Items report as they end (``Done.part``): a failure is acted on at once, and an
        unordered run hands each result out as it ends. In order, a batch's results go out when
        its last item ends, so a straggler holds back at most the 31 before it in its batch.
        """
        at_once = workers if total is None else min(workers, total)
        return max(1, min(at_once // ASYNC_BATCHES_AT_ONCE, ASYNC_MAX_BATCH))

    def open_backend(self, workers: int, depth: int) -> Backend:
        from ._backends._asyncio import AsyncBackend

        return AsyncBackend(workers, self._loop_factory(), depth=depth, debug=self.debugging)

    def open_on_loop(self, loop: asyncio.AbstractEventLoop, loop_thread: int, workers: int) -> Backend | None:
        from ._backends._asyncio import AsyncBackend

        # amap/aimap: coroutines run on the caller's own loop (its sessions and locks live there).
        return AsyncBackend(workers, loop=loop, loop_thread=loop_thread, debug=self.debugging)

    def _loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop] | None:
        if self.loop != "uvloop":
            return None
        try:
            import uvloop
        except ImportError:
            raise ValueError("Async(loop='uvloop') needs the 'uvloop' package: "
                             "pip install 'taskloom[uvloop]'") from None
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory

    @property
    def debugging(self) -> bool:
        """Whether blocking coroutines are reported: ``debug``, or ``TASKLOOM_DEBUG`` set and not "0"."""
        return self.debug or os.environ.get("TASKLOOM_DEBUG", "") not in ("", "0")


@dataclass(frozen=True)
class Dask(Mode):
    """Run tasks on a Dask ``distributed`` cluster (the ``taskloom[dask]`` extra).

    Example::

        tl.map(score, rows, mode=tl.Dask(address="tls://scheduler:8786",
                                         security=Security(tls_ca_file="ca.pem", tls_client_cert="me.pem",
                                                           tls_client_key="me.key", require_encryption=True)))

    Args:
        address: a running scheduler, e.g. ``"tcp://scheduler:8786"`` or ``"tls://scheduler:8786"``
            (default: the ``TASKLOOM_DASK_ADDRESS`` environment variable, else an embedded
            ``LocalCluster`` with one process per usable CPU, started once and reused).
        client: an existing ``distributed.Client`` to use instead; taskloom never closes it.
        security: a ``distributed.security.Security`` (certificates) for a ``tls://`` address;
            None: Dask's own configuration (``distributed.comm.tls``).
        threads_per_worker: threads in each worker process of the embedded ``LocalCluster``
            (default 1: one process per CPU, for CPU work); more suits code that waits or releases
            the GIL. A running cluster sets its own (``dask worker --nthreads``).
        crash_retries: how often taskloom sends a task again after Dask gave up on it
            (``KilledWorker``: its workers died under it ``distributed.scheduler.allowed-failures`` + 1
            times) or dropped it; default 0, as Dask already runs again a task whose worker died.

    Without ``workers``, a run keeps twice the cluster's thread count of batches in flight. With
    ``workers`` above the cluster's thread count (I/O: ``workers=32``), ``workers`` batches run at
    once, as a thread pool of that size would run them: each on a thread of its own, outside the
    workers' thread pools (``distributed.secede``).

    Raises:
        ValueError: ``threads_per_worker`` below 1 or given with ``address`` or ``client``, or a
            negative ``crash_retries``.
    """

    address: str | None = None
    client: Any = field(default=None, compare=False)
    security: Any = field(default=None, compare=False)
    threads_per_worker: int | None = None
    crash_retries: int = 0
    name: Literal["dask"] = field(default="dask", init=False, repr=False)
    pool_per_depth: ClassVar[bool] = False  # the cluster's own workers run the tasks
    marks_running_when_taken: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.threads_per_worker is not None:
            if isinstance(self.threads_per_worker, bool) or not isinstance(self.threads_per_worker, int) \
                    or self.threads_per_worker < 1:
                raise ValueError(f"threads_per_worker must be an int >= 1 or None, got {self.threads_per_worker!r}")
            if self.address is not None or self.client is not None:
                raise ValueError("threads_per_worker sizes taskloom's embedded cluster; a running cluster sets "
                                 "its own (dask worker --nthreads)")
        if isinstance(self.crash_retries, bool) or not isinstance(self.crash_retries, int) or self.crash_retries < 0:
            raise ValueError(f"crash_retries must be an int >= 0, got {self.crash_retries!r}")

    def _target(self) -> tuple[Any, ...]:
        """What tells two clusters (or two ways of reaching one) apart: not ``crash_retries``."""
        return (self.address, self.client is None or id(self.client), self.security_key(), self.threads_per_worker)

    def security_key(self) -> Hashable:
        """``security`` by its settings (files, PEM text, flags), so that two equal ``Security`` objects
        (one made per call) share one connection."""
        if self.security is None:
            return None
        names = set(getattr(self.security, "__dict__", ()))
        for cls in type(self.security).__mro__:  # distributed's Security keeps its settings in __slots__
            slots = getattr(cls, "__slots__", ())
            names.update((slots,) if isinstance(slots, str) else slots)
        if not names:
            return id(self.security)
        values = ((name, getattr(self.security, name, None)) for name in sorted(names))
        return (type(self.security), *((k, v if isinstance(v, str | int | float | bool | None) else repr(v))
                                       for k, v in values))

    def __hash__(self) -> int:
        return hash(self._target())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dask) and self._target() == other._target()

    def default_workers(self) -> int:
        """0, which stands for "the cluster's thread count", known once connected."""
        return 0  # the cluster's thread count, known once connected

    def open_backend(self, workers: int, depth: int) -> Backend:
        from ._backends._dask import DaskBackend

        return DaskBackend(self, workers or None)


@dataclass(frozen=True)
class Auto(Mode):
    """Measure the first tasks and choose the mode: the default, same as ``mode="auto"``.

    A plain function's first tasks run in the caller's thread, timed (wall against CPU time),
    for a budget of about 50 ms and at most 64 tasks (their results are kept); two more may run
    on two threads at once to see whether the function releases the GIL. A cost model then picks
    sequential, threads or processes and the worker count, and the run's ``advice`` says why. If
    later tasks turn out much longer or shorter than sampled, the choice is made again, once. An
    ``async def`` function always goes to "async". ``taskloom.advise`` gives the same advice
    without running the job.
    """

    name: Literal["auto"] = field(default="auto", init=False, repr=False)
    runs: ClassVar[Literal["functions", "coroutines", "both"]] = "both"
    measures: ClassVar[bool] = True
    sees_caller_context: ClassVar[bool] = True  # it may run the tasks on threads

    def default_workers(self) -> int:
        """The usable CPUs (the worker count ``mode="auto"`` actually uses comes from its measurement)."""
        return usable_cpus()


ModeLike: TypeAlias = "str | Mode"

_BY_NAME: dict[str, Callable[[], Mode]] = {
    "sequential": Sequential,
    "threads": Threads,
    "processes": Processes,
    "async": Async,
    "dask": Dask,
    "auto": Auto,
}


def parse_mode(mode: ModeLike, *, allow_auto: bool = True) -> Mode:
    """Turn a mode string or object into a mode object, or raise ValueError naming the choices."""
    if isinstance(mode, Mode):
        if mode.measures and not allow_auto:
            raise ValueError("mode 'auto' is not valid here: choose 'sequential', 'threads', 'processes' or 'async'")
        return mode
    if isinstance(mode, str):
        key = mode.strip().lower()
        if key in _BY_NAME and (allow_auto or key != "auto"):
            return _BY_NAME[key]()
        names = [n for n in MODE_NAMES if allow_auto or n != "auto"]
        raise ValueError(f"mode must be one of {', '.join(repr(n) for n in names)}, got {mode!r}")
    raise TypeError(f"mode must be a string or a mode object such as taskloom.Threads(), got {mode!r}")


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4,
          "tib": 1024**4}


def parse_size(value: int | str | None, name: str) -> int | None:
    """``"2GiB"`` -> 2147483648; an int passes through; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"{name} must be a number of bytes or a string like '2GiB', got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{name} must be > 0 bytes, got {value!r}")
        return value
    text = value.strip().lower().replace(" ", "")
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(digits):]
    try:
        number = float(digits)
    except ValueError:
        number = -1.0
    if unit not in _UNITS or number <= 0:
        raise ValueError(f"{name} must be a size like '512MiB' or '2GB', got {value!r}")
    return int(number * _UNITS[unit])
