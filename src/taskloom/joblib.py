"""taskloom as a joblib backend: scikit-learn's ``n_jobs`` runs on taskloom's workers.

Example::

    import joblib
    import taskloom.joblib

    taskloom.joblib.register()
    with joblib.parallel_config(backend="taskloom", n_jobs=2, timeout=600.0, crash_retries=1):
        search = GridSearchCV(model, grid).fit(X, y)   # a hung fit is killed, a crashed worker retried

Every joblib batch becomes a task of a ``taskloom.Executor``, so it gets what taskloom gives any
task: a ``timeout`` that kills a process task and replaces its worker, a worker crash (SIGKILL,
segfault, the OOM killer) that costs only that task and is retried on a fresh worker, retries,
worker recycling by memory, a progress bar, and no worker left behind on Ctrl-C.

How the work is cut:

* joblib still cuts the input into batches, but the backend sizes them (``compute_batch_size``)
  by taskloom's rule: about 50 ms of work per batch, from the time per call measured in the
  worker, growing at most 10x a step. joblib's own rule doubles the size from the dispatch-to-result
  time seen by the parent, aiming at 0.2 s; measured side by side (``benchmarks/joblib_backend.py
  --sizing joblib``), taskloom's is faster on tiny calls and even on searches. With ``timeout``
  every joblib call is its own task, so the limit is per fit, not per batch of fits.
* A batch of several calls lost to a crash is re-sent once whole (``crash_retries``), then call by
  call, so only the call that keeps crashing fails, and its error names it.
* A scikit-learn fit (``_fit_and_score``) killed by ``timeout`` or by a worker that kept crashing
  is, by default, scored like any fit that raised: the search's ``error_score`` (NaN unless set),
  the search goes on, and scikit-learn's ``FitFailedWarning`` lists the ``TaskTimeout`` or
  ``WorkerCrashed``. With ``error_score="raise"`` (or ``killed_fits="raise"``) the error is raised.

``import taskloom`` does not import this module (nor joblib): ``import taskloom.joblib`` does.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import pickle
import re
import reprlib
import threading
import time
from collections.abc import Callable
from typing import Any

import joblib
from joblib._parallel_backends import AutoBatchingMixin, FallbackToBackend, SequentialBackend

import taskloom
from taskloom._backends import _mainpickle
from taskloom._modes import parse_mode
from taskloom._system import usable_cpus

__all__ = ["NAME", "TaskloomBackend", "register"]

NAME = "taskloom"
"""The name ``register()`` gives the backend by default: ``joblib.parallel_config(backend="taskloom")``."""

_MODES = ("processes", "threads", "auto", "dask", "sequential")
_KILLED_FITS = ("error_score", "raise")
#: What joblib passes to every backend's ``configure`` for its own backends (memmapping, hints).
_JOBLIB_OWN = frozenset({"max_nbytes", "temp_folder", "mmap_mode", "verbose", "context", "idle_worker_timeout"})
#: Batch sizing (``compute_batch_size``): seconds of work a batch aims at, growth per step, ceiling.
_TARGET_BATCH_SECONDS = 0.05
_MAX_GROWTH = 10
_MAX_BATCH = 65_536
_SIZING = "taskloom"  # "joblib": joblib's AutoBatchingMixin instead (benchmarks/joblib_backend.py --sizing)
_OPTIONS = ("mode", "timeout", "retries", "crash_retries", "max_memory", "progress", "killed_fits")


def register(name: str = NAME, *, make_default: bool = False) -> None:
    """Register the taskloom backend with joblib (as ``"taskloom"``). Safe to call more than once.

    Then ``joblib.parallel_config(backend="taskloom", n_jobs=2, timeout=60.0)`` runs every
    ``joblib.Parallel`` inside it, scikit-learn's included, on taskloom. Example::

        import joblib
        import taskloom.joblib

        taskloom.joblib.register()
        with joblib.parallel_config(backend="taskloom", n_jobs=2, timeout=600.0):
            squares = joblib.Parallel()(joblib.delayed(pow)(i, 2) for i in range(10))

    Args:
        name: the backend name for ``parallel_config(backend=...)``.
        make_default: also make it joblib's default backend (no ``parallel_config`` needed).
    """
    joblib.register_parallel_backend(name, TaskloomBackend, make_default=make_default)


@dataclasses.dataclass(frozen=True)
class _Options:
    mode: Any = "processes"
    timeout: float | None = None
    retries: int = 0
    crash_retries: int | None = None
    max_memory: int | str | None = None
    progress: object = False
    killed_fits: str = "error_score"


class TaskloomBackend(AutoBatchingMixin, joblib.ParallelBackendBase):  # type: ignore[misc]
    """A joblib backend that runs each batch as a task of a ``taskloom.Executor``.

    Built by joblib from ``parallel_config(backend="taskloom", **options)`` (after ``register()``);
    the same options may also be given to ``joblib.Parallel(backend="taskloom", ...)``, where they
    override. Without ``n_jobs`` (``None``) every usable CPU is used, as with joblib's Dask
    backend; ``-1`` is every usable CPU and ``-2`` all but one (CPU affinity and cgroup quota
    counted); ``n_jobs=1`` is joblib's sequential path: joblib runs the calls in the calling
    process and asks no backend, so neither ``timeout`` nor crash retries apply there.

    Args:
        mode: ``"processes"`` (the default: taskloom's process pool), ``"threads"``, ``"dask"``,
            ``"sequential"``, a mode object such as ``taskloom.Processes(max_tasks_per_worker=50)``,
            or ``"auto"``: threads when joblib asks for shared memory or the library prefers
            threads (scikit-learn says so for estimators that release the GIL), processes when a
            ``timeout`` is set (only a process task can be stopped), otherwise what
            ``taskloom.advise`` picks after running the first batch once in the calling process.
        timeout: seconds one joblib call may run; then it fails with ``TaskTimeout`` (on processes
            its worker is killed and replaced). Each call is then its own task. None: no limit.
        retries: extra attempts for a call (a batch without ``timeout``) that raised.
        crash_retries: how often a call whose worker died is run again on a fresh worker before
            it fails with ``WorkerCrashed`` (default: ``taskloom.Processes``' default, 1).
        max_memory: recycle a worker whose RSS is over this after a task (``"2GiB"``, bytes).
        progress: as for ``taskloom.Executor``: True for a bar of finished tasks (joblib batches,
            or calls with ``timeout``), a callback, or a tqdm-like object.
        killed_fits: ``"error_score"`` (the default): a scikit-learn fit killed by ``timeout`` or
            by crashes gets the search's ``error_score`` like a fit that raised (unless that is
            ``"raise"``); ``"raise"``: the ``TaskTimeout`` / ``WorkerCrashed`` is always raised.
        nesting_level: set by joblib: how deep in nested ``Parallel`` calls this backend runs.
        inner_max_num_threads: joblib's; not supported by this backend (joblib refuses it), which
            caps the native thread pools of each worker to its share of the CPUs itself.

    Raises:
        ValueError: a bad option (an unknown mode name, a ``timeout`` that is not a number of
            seconds > 0, ``crash_retries`` or ``max_memory`` without worker processes...), when
            ``parallel_config`` (or ``Parallel``) is called, not at the first task.
        TypeError: a ``mode`` that is neither a name nor a taskloom mode object; an option the
            backend does not know (raised by ``configure``, when ``Parallel`` starts).
    """

    default_n_jobs = -1
    supports_retrieve_callback = True
    supports_inner_max_num_threads = False

    def __init__(self, mode: Any = "processes", *, timeout: float | None = None, retries: int = 0,
                 crash_retries: int | None = None, max_memory: int | str | None = None, progress: object = False,
                 killed_fits: str = "error_score", nesting_level: int | None = None,
                 inner_max_num_threads: int | None = None) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        self._options = _check(_Options(mode, timeout, retries, crash_retries, max_memory, progress, killed_fits))
        flavour = _flavour(self._options.mode)
        # What joblib reads before configure(): a thread engine shares the caller's memory.
        self.uses_threads = flavour in ("threads", "sequential")
        self.supports_sharedmem = flavour in ("threads", "sequential", "auto")
        self._executor: taskloom.Executor | None = None
        self._run: _RunOptions | None = None
        self._lock = threading.Lock()
        self._live: set[concurrent.futures.Future[Any]] = set()
        self._dispatched = 0
        self._nested: Any = None
        self._cpus: int | None = None
        self._per_call: float | None = None  # seconds per call, measured in the workers (EWMA)
        self._largest = 1

    # -- joblib's contract ---------------------------------------------------------------------------
    @property
    def supports_timeout(self) -> bool:
        """True: joblib's own ``Parallel(timeout=)`` works too (it raises, then ``abort_everything`` kills)."""
        return True

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """How many calls run at once for a given ``n_jobs``, by joblib's convention.

        Args:
            n_jobs: a positive count; -1 is every usable CPU (CPU affinity and cgroup quota
                counted), -2 all but one, and so on; None is the default, -1.

        Returns:
            The number of workers, at least 1.

        Raises:
            ValueError: ``n_jobs`` is 0.
        """
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            n_jobs = self.default_n_jobs
        n_jobs = int(n_jobs)
        if n_jobs < 0:
            if self._cpus is None:
                self._cpus = usable_cpus()
            n_jobs = max(self._cpus + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: str | None = None,
                  require: str | None = None, **backend_kwargs: Any) -> int:
        """Start an executor for one ``Parallel`` call (joblib calls it as the call begins).

        Args:
            n_jobs: as for ``effective_n_jobs``.
            parallel: the ``joblib.Parallel`` being run (joblib passes it).
            prefer: joblib's soft hint, ``"threads"`` or ``"processes"``: only ``mode="auto"``
                reads it.
            require: joblib's hard constraint: ``"sharedmem"`` makes ``mode="auto"`` use threads.
            **backend_kwargs: the backend options given to ``parallel_config`` or ``Parallel``
                (``mode``, ``timeout``, ``retries``, ``crash_retries``, ``max_memory``,
                ``progress``, ``killed_fits``: they override the ones the backend was built
                with), and joblib's own for its backends (memmapping, ``verbose``), ignored.

        Returns:
            How many calls run at once.

        Raises:
            TypeError: an option this backend does not know.
            ValueError: a bad option value.
            joblib._parallel_backends.FallbackToBackend: for a single worker (``n_jobs=1``):
                joblib then runs the calls itself, sequentially (its own signal, not an error).
        """
        ours = {k: backend_kwargs.pop(k) for k in list(backend_kwargs) if k in _OPTIONS}
        unknown = sorted(set(backend_kwargs) - _JOBLIB_OWN)
        if unknown:
            raise TypeError(f"the taskloom joblib backend got unknown option(s) {unknown}; it takes {list(_OPTIONS)}")
        options = _check(dataclasses.replace(self._options, **ours)) if ours else self._options
        n = self.effective_n_jobs(n_jobs)
        if n == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        self._nested = self.get_nested_backend()
        self._dispatched = 0
        run = _RunOptions(options, n, getattr(parallel, "n_tasks", None))
        if _flavour(options.mode) == "auto":
            run.mode = _auto_hint(options, prefer, require)
        self._run = run
        self._executor = run.executor() if run.mode is not None else None
        return n

    def start_call(self) -> None:
        """A ``Parallel`` call starts (several per ``configure`` in ``with Parallel(...) as p``).

        Errors count the calls of each ``Parallel`` call from 0 again.
        """
        with self._lock:
            self._dispatched = 0  # errors name a call by its index in this call's input
        run, parallel = self._run, getattr(self, "parallel", None)
        if run is not None and parallel is not None:
            run.n_tasks = getattr(parallel, "n_tasks", None)

    def compute_batch_size(self) -> int:
        """How many calls joblib puts in its next batch (``Parallel(batch_size="auto")``).

        One with ``timeout`` (the limit is per call). Otherwise taskloom's rule rather than
        joblib's: the per-call time measured *in the worker* sets a batch of about 50 ms of work,
        growing at most 10x a step, and capped so the calls left still make 4 batches per worker
        when joblib knows how many there are.

        Returns:
            The number of calls in the next batch, at least 1.
        """
        run = self._run
        if run is not None and run.options.timeout is not None:
            return 1
        if _SIZING == "joblib":
            return int(super().compute_batch_size())
        with self._lock:
            per_call, largest = self._per_call, self._largest
        if per_call is None or run is None:
            return 1
        size = int(_TARGET_BATCH_SECONDS / max(per_call, 1e-9))
        cap = _MAX_BATCH
        if run.n_tasks is not None:
            cap = max(1, (run.n_tasks - self._dispatched) // (4 * run.workers))
        return max(1, min(size, largest * _MAX_GROWTH, cap))

    def batch_completed(self, batch_size: int, duration: float) -> None:
        """joblib reports a finished batch: unused, as batches are sized from the workers' own timing.

        Args:
            batch_size: the number of calls in the batch.
            duration: seconds from its dispatch to its result, as joblib saw them in this process.
        """
        if _SIZING == "joblib":
            super().batch_completed(batch_size, duration)

    def _observe(self, n_calls: int, elapsed: float) -> None:
        if n_calls <= 0:
            return
        sample = elapsed / n_calls
        with self._lock:
            self._per_call = sample if self._per_call is None else 0.5 * self._per_call + 0.5 * sample
            self._largest = max(self._largest, n_calls)

    def submit(self, func: Any, callback: Callable[[Any], Any] | None = None) -> _Job:
        """Send one joblib batch to taskloom.

        A batch of several calls is one task; with ``timeout``, or after a crash of its worker,
        each call is its own task.

        Args:
            func: the batch, joblib's ``BatchedCalls`` (any callable without arguments is run as
                one task).
            callback: called with the returned job once the batch has its results or its error.

        Returns:
            The job, which ``retrieve_result_callback`` reads.

        Raises:
            RuntimeError: the backend is not configured (or was terminated).
        """
        run = self._run
        if run is None:
            raise RuntimeError("the taskloom joblib backend was not configured (or was terminated)")
        calls = list(getattr(func, "items", ()))
        with self._lock:
            first = self._dispatched
            self._dispatched += max(len(calls), 1)
        if run.mode is None:  # mode="auto": measured on this first batch
            run.mode = _advised_mode(func, run.n_tasks)
            self._executor = run.executor()
        job = _Job(self, callback, calls, first)
        if not calls:  # not a BatchedCalls: an opaque callable, one task
            job.send_opaque(func)
        elif len(calls) == 1 or run.options.timeout is not None:
            job.send_each(range(len(calls)))
        else:
            job.send_batch(func)
        return job

    def retrieve_result_callback(self, out: _Job) -> list[Any]:
        """The results of a finished batch.

        Args:
            out: the job ``submit`` returned.

        Returns:
            The results of the batch's calls, in order.

        Raises:
            Exception: the batch's first error: what a call raised, or a ``TaskTimeout`` /
                ``WorkerCrashed`` naming the joblib call.
        """
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancel the calls that have not started and stop the ones running (a process task's
        worker is killed); joblib calls it when a call failed or its ``timeout`` passed.

        Args:
            ensure_ready: start a fresh executor afterwards, for the ``Parallel`` to go on.
        """
        with self._lock:
            live = list(self._live)
            self._live.clear()
        for future in live:
            future.cancel()
        self._close(cancel=True)
        parallel = getattr(self, "parallel", None)
        if ensure_ready and parallel is not None:
            self.configure(n_jobs=parallel.n_jobs, parallel=parallel, **parallel._backend_kwargs)

    def terminate(self) -> None:
        """The ``Parallel`` call ended: let go of its executor (the warm pool stays for the next)."""
        self._close(cancel=False)
        self.reset_batch_stats()
        self._per_call, self._largest = None, 1

    def __reduce__(self) -> Any:  # a nested BatchedCalls never carries this backend, but be safe
        return (_rebuild, (self._options,))

    # -- helpers --------------------------------------------------------------------------------------
    def _close(self, *, cancel: bool) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=cancel)

    def _submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        executor, run = self._executor, self._run
        if executor is None or run is None:  # aborted (or terminated) meanwhile: joblib is not waiting
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            future.cancel()
            future.set_running_or_notify_cancel()
            return future
        try:
            if run.pickled:
                fn = _Packed(_mainpickle.dumps_by_value(fn), fn.__qualname__)
            future = executor.submit(fn, *args, **kwargs)
        except Exception as exc:
            # An argument that cannot be pickled (loky's future raises that too), or a pool that
            # taskloom.shutdown() closed: this batch fails with it. Raised here instead, in the
            # executor's thread (joblib dispatches from there), nothing would tell joblib.
            future = concurrent.futures.Future()
            future.set_exception(exc)
            return future
        with self._lock:
            self._live.add(future)
        return future

    def _settled(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._live.discard(future)


def _rebuild(options: _Options) -> TaskloomBackend:
    return TaskloomBackend(**{f.name: getattr(options, f.name) for f in dataclasses.fields(options)})


# -- options ------------------------------------------------------------------------------------------
def _flavour(mode: Any) -> str:
    return mode if isinstance(mode, str) else str(getattr(mode, "name", "?"))


def _check(options: _Options) -> _Options:
    """Refuse a bad option when ``parallel_config`` is called, not at the first task."""
    mode = options.mode
    if isinstance(mode, str):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {list(_MODES)} or a taskloom mode object, got {mode!r}")
    elif not isinstance(mode, taskloom.Mode) or mode.measures or mode.runs == "coroutines":
        raise TypeError(f"mode must be a string or a taskloom mode object (Processes, Threads, Dask, Sequential), "
                        f"got {mode!r}")
    if options.killed_fits not in _KILLED_FITS:
        raise ValueError(f"killed_fits must be one of {list(_KILLED_FITS)}, got {options.killed_fits!r}")
    flavour = _flavour(mode)
    if flavour not in ("processes", "auto"):
        for name in ("crash_retries", "max_memory"):
            if getattr(options, name) is not None:
                raise ValueError(f"{name} is for worker processes: it needs mode 'processes' (or 'auto'), "
                                 f"got mode {flavour!r}")
    # Let the mode and the executor check the rest (types, ranges), as they would at the first task.
    check_mode = _engine(options, "processes" if flavour == "auto" else None)
    taskloom.Executor(check_mode, workers=1, timeout=options.timeout, retries=options.retries,
                      progress=options.progress).shutdown(wait=False)
    return options


def _engine(options: _Options, flavour: str | None) -> Any:
    """The taskloom mode object for these options (``flavour`` overrides "auto")."""
    mode = parse_mode(options.mode if flavour is None or not isinstance(options.mode, str) else flavour)
    if mode.pickles_calls:  # worker processes (Processes): their own settings
        changes: dict[str, Any] = {}
        if options.crash_retries is not None:
            changes["crash_retries"] = options.crash_retries
        if options.max_memory is not None:
            changes["max_memory"] = options.max_memory
        if changes:
            mode = dataclasses.replace(mode, **changes)  # type: ignore[type-var]
    return mode


def _auto_hint(options: _Options, prefer: str | None, require: str | None) -> str | None:
    """mode="auto" without running anything: what joblib's hints and the options settle."""
    if require == "sharedmem":
        return "threads"  # the calls write to shared memory: only threads can run them
    if options.timeout is not None:
        return "processes"  # only a process task can be stopped at its deadline
    if prefer == "threads":
        return "threads"  # the library says the work releases the GIL
    return None


def _advised_mode(batch: Any, n_tasks: int | None) -> str:
    """mode="auto": run the first batch here (once more later, on the chosen engine) and ask advise."""
    try:
        advice = taskloom.advise(_run_batch, [batch], budget=0.1, total=n_tasks)
    except Exception:  # the batch raised here: it will again on processes, where it is reported
        return "processes"
    return advice.mode if advice.mode in ("sequential", "threads", "processes") else "processes"


def _run_batch(batch: Callable[[], Any]) -> Any:
    return batch()


class _RunOptions:
    """The options of one ``Parallel`` call, and the engine chosen for it."""

    def __init__(self, options: _Options, workers: int, n_tasks: int | None) -> None:
        self.options = options
        self.workers = workers
        self.n_tasks = n_tasks
        self.mode: str | None = _flavour(options.mode)
        self.pickled = False  # tasks go to worker processes: pickled here first (see _Packed)

    def executor(self) -> taskloom.Executor:
        engine = _engine(self.options, self.mode)
        o = self.options
        self.pickled = parse_mode(engine).pickles_calls
        return taskloom.Executor(engine, workers=self.workers, timeout=o.timeout, retries=o.retries,
                                 progress=o.progress, cancel_running=self.pickled)


# -- what runs in the workers ---------------------------------------------------------------------------
def _name_of(fn: Any) -> str:
    target = getattr(fn, "function", fn)  # scikit-learn's _FuncWrapper keeps the real function there
    return str(getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or type(target).__name__)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
#: taskloom cuts an item's repr at 80 characters in its messages; ours end in "()" there.
_LABEL_MAX = 76


def _short(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):  # an array: its shape, not its numbers (cheap)
        return f"<{type(value).__name__} {'x'.join(str(n) for n in shape)}>"
    try:
        return _REPR.repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _label(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """How errors name one joblib call: ``f(1, 'x', key=2)``; a scikit-learn fit by what differs."""
    name = _name_of(fn)
    if _is_fit_and_score(fn):
        estimator = args[0] if args else kwargs.get("estimator")
        parts = [type(estimator).__name__]
        if kwargs.get("parameters"):
            parts.append(_short(kwargs["parameters"]))
        for key in ("candidate_progress", "split_progress"):
            progress = kwargs.get(key)
            if progress:
                parts.append(f"{key.split('_')[0]} {progress[0] + 1}/{progress[1]}")
        text = f"{name}({', '.join(parts)})"
    else:
        parts = [_short(a) for a in args[:4]] + [f"{k}={_short(v)}" for k, v in list(kwargs.items())[:3]]
        if len(args) > 4 or len(kwargs) > 3:
            parts.append("...")
        text = f"{name}({', '.join(parts)})"
    return text if len(text) <= _LABEL_MAX else text[:_LABEL_MAX - 4] + "...)"


def _is_fit_and_score(fn: Any) -> bool:
    target = getattr(fn, "function", fn)
    return (getattr(target, "__name__", None) == "_fit_and_score"
            and getattr(target, "__module__", None) == "sklearn.model_selection._validation")


class _Call:
    """One joblib call as a task, with the nested-backend setting joblib's ``BatchedCalls`` gives it.

    Its ``__qualname__`` is the call's label, so taskloom's errors name the task by it. Returns
    ``(value, seconds)``: the time is measured here, in the worker, for the batch sizing.
    """

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], nested: Any,
                 label: str = "") -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.nested = nested
        self.__qualname__ = label

    def __call__(self) -> tuple[Any, float]:
        start = time.perf_counter()
        if self.nested is None:
            value = self.fn(*self.args, **self.kwargs)
        else:
            backend, n_jobs = self.nested
            with joblib.parallel_config(backend=backend, n_jobs=n_jobs):
                value = self.fn(*self.args, **self.kwargs)
        return value, time.perf_counter() - start

    def __reduce__(self) -> Any:  # the label stays here: only the parent's messages use it
        return _Call, (self.fn, self.args, self.kwargs, self.nested)


class _Packed:
    """A task already pickled, once, by value (cloudpickle, as loky pickles every task).

    taskloom's own pickler for ``__main__`` functions (``_mainpickle.dumps_by_value``), not plain
    cloudpickle: a ``__main__`` function shares the worker's ``__main__`` namespace, so it sees
    the globals that ``mode=taskloom.Processes(initializer=...)`` set there, as with
    ``taskloom.map``. The executor then pickles only this small wrapper around the bytes, with
    the C pickler: the bytes say "__main__" (a scikit-learn task carries the caller's warning
    filters, and Python's default ones name ``__main__``), but the executor's check reads the
    wrapper's opcodes, where they are only bytes, so nothing is pickled a second time.
    """

    def __init__(self, blob: bytes, label: str = "") -> None:
        self.blob = blob
        self.__qualname__ = label

    def __call__(self) -> Any:
        return pickle.loads(self.blob)()

    def __reduce__(self) -> Any:
        return _Packed, (self.blob,)


class _Batch:
    """A whole joblib batch (``BatchedCalls``) as one task; returns ``(results, seconds)``."""

    def __init__(self, batch: Callable[[], Any], label: str = "") -> None:
        self.batch = batch
        self.__qualname__ = label

    def __call__(self) -> tuple[Any, float]:
        start = time.perf_counter()
        value = self.batch()
        return value, time.perf_counter() - start

    def __reduce__(self) -> Any:
        return _Batch, (self.batch,)


# -- one joblib batch, possibly sent as several taskloom tasks -----------------------------------------------
_PREFIX = re.compile(r"^task \d+ \(Executor\.submit\) on item ")


class _Job:
    """What ``submit`` returns to joblib: the batch's results, gathered from one or more tasks."""

    def __init__(self, backend: TaskloomBackend, callback: Callable[[Any], Any] | None, calls: list[Any],
                 first: int) -> None:
        self.backend = backend
        self.callback = callback
        self.calls = calls
        self.first = first  # joblib's index of the batch's first call (calls are dispatched in order)
        self.results: list[Any] = [None] * max(len(calls), 1)
        self.labels: list[str] = [""] * len(self.results)  # of the calls sent one by one
        self.left = len(self.results)
        self.error: BaseException | None = None
        self.ended = False
        self.lock = threading.Lock()

    # sending
    def send_opaque(self, func: Callable[[], Any]) -> None:
        self.labels = [_name_of(func)]
        future = self.backend._submit(_Batch(func, self.labels[0]))
        future.add_done_callback(functools.partial(self._ended, start=0, count=1, whole=True, opaque=True))

    def send_batch(self, batch: Callable[[], Any]) -> None:
        names = ", ".join(sorted({_name_of(fn) for fn, _, _ in self.calls}))
        label = f"joblib batch of {len(self.calls)} ({names})"
        future = self.backend._submit(_Batch(batch, label[:_LABEL_MAX]))
        future.add_done_callback(functools.partial(self._ended, start=0, count=len(self.calls), whole=True))

    def send_each(self, positions: range) -> None:
        nested = self.backend._nested
        for position in positions:
            fn, args, kwargs = self.calls[position]
            label = _label(fn, args, kwargs)
            self.labels[position] = label
            future = self.backend._submit(_Call(fn, args, kwargs, nested, label))
            future.add_done_callback(functools.partial(self._ended, start=position, count=1, whole=False))

    # receiving (in the executor's driver thread, or where a future was cancelled)
    def _ended(self, future: concurrent.futures.Future[Any], *, start: int, count: int, whole: bool,
               opaque: bool = False) -> None:
        self.backend._settled(future)
        if self.ended:
            return
        if future.cancelled():
            self._finish(concurrent.futures.CancelledError("the joblib call was cancelled"))
            return
        error = future.exception()
        if error is None:
            value, elapsed = future.result()
            if not opaque:
                self.backend._observe(count, elapsed)
            with self.lock:
                if opaque:
                    self.results = value
                elif whole:
                    self.results[start:start + count] = value
                else:
                    self.results[start] = value
                self.left -= count
                done = self.left == 0
            if done:
                self._finish(None)
            return
        if whole and count > 1 and isinstance(error, taskloom.WorkerCrashed):
            # The culprit is unknown: each call again as its own task, so only it fails.
            try:
                self.send_each(range(start, start + count))
            except Exception as exc:  # the executor was shut down meanwhile (an abort)
                self._finish(exc)
            return
        if isinstance(error, taskloom.TaskTimeout | taskloom.WorkerCrashed) and not opaque:
            _name_task(error, self.first + start, self.labels[start])
            if count == 1 and self.backend._run is not None \
                    and self.backend._run.options.killed_fits == "error_score":
                scored = _as_failed_fit(self.calls[start], error)
                if scored is not _NOT_A_FIT:
                    with self.lock:
                        self.results[start] = scored
                        self.left -= 1
                        done = self.left == 0
                    if done:
                        self._finish(None)
                    return
        self._finish(error)

    def _finish(self, error: BaseException | None) -> None:
        with self.lock:
            if self.ended:
                return
            self.ended = True
            self.error = error
        if self.callback is not None:
            self.callback(self)

    def result(self) -> list[Any]:
        if self.error is not None:
            raise self.error
        return self.results


def _name_task(error: BaseException, index: int, label: str) -> None:
    """Name the joblib call in a TaskTimeout / WorkerCrashed: its index in the ``Parallel`` input
    and its label (the executor's own task index and "Executor.submit" mean nothing here)."""
    message = str(error.args[0]) if error.args else str(error)
    named = f"joblib task {index} ({label})" if label else f"joblib task {index}"
    prefix = _PREFIX.match(message)
    if prefix is not None:
        rest = message[prefix.end():]
        rest = rest[len(label) + 2:] if label and rest.startswith(label + "()") else rest
        message = f"{named}{rest}" if rest.startswith(" ") else f"{named}: {rest}"
    error.args = (message, *error.args[1:])
    error.index = index  # type: ignore[attr-defined]
    error.stage = "joblib.Parallel"  # type: ignore[attr-defined]
    if label:
        error.item_repr = label  # type: ignore[attr-defined]


# -- scikit-learn's error_score for a killed fit ---------------------------------------------------------
_NOT_A_FIT: Any = object()


def _as_failed_fit(call: tuple[Any, tuple[Any, ...], dict[str, Any]], error: BaseException) -> Any:
    """scikit-learn's result for a fit that raised ``error``, or ``_NOT_A_FIT``.

    Only for ``sklearn.model_selection._validation._fit_and_score`` with an ``error_score`` other
    than "raise": it is called here, in the parent, with the task's own (unfitted) estimator whose
    ``fit`` raises ``error`` at once, so scikit-learn builds the result exactly as for any fit that
    raised: ``error_score`` as the score, the error's text in ``fit_error``, and its
    ``FitFailedWarning`` at the end of the search.
    """
    fn, args, kwargs = call
    if not _is_fit_and_score(fn):
        return _NOT_A_FIT
    target = getattr(fn, "function", fn)
    error_score = kwargs.get("error_score", math.nan)
    if isinstance(error_score, str):  # "raise": the error reaches the user
        return _NOT_A_FIT
    estimator = args[0] if args else kwargs.get("estimator")
    if estimator is None:
        return _NOT_A_FIT

    def fit(*_: Any, **__: Any) -> Any:
        raise error

    try:
        estimator.fit = fit
        try:
            return target(*args, **kwargs)
        finally:
            del estimator.fit
    except Exception:  # another scikit-learn than the one this was written for: raise the error itself
        return _NOT_A_FIT
