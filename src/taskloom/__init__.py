"""taskloom: run Python work concurrently through one API that measures the work and picks the engine.

Example::

    import taskloom as tl

    squares = tl.map(square, range(10_000))                      # mode="auto" measures and picks
    pages = tl.map(fetch, urls, mode="threads", workers=64)
    for outcome in tl.imap(risky, items, on_error="collect", retries=2, timeout=5.0):
        print(outcome.index, outcome.value if outcome.ok else outcome.error)

The public API is assembled here only. Names are imported on first use (as ``concurrent.futures``
does), so ``import taskloom`` is cheap and a worker process imports only what it runs.
"""

import importlib as _importlib
import typing as _typing

__version__ = "0.1.0"

#: public name -> the private module that defines it
_EXPORTS: dict[str, str] = {
    "AsyncRun": "._aio",
    "aimap": "._aio",
    "amap": "._aio",
    "imap": "._api",
    "map": "._api",
    "starmap": "._api",
    "DeadlockError": "._errors",
    "LockOrderError": "._errors",
    "SerializationError": "._errors",
    "TaskError": "._errors",
    "TaskTimeout": "._errors",
    "TaskloomError": "._errors",
    "WorkerCrashed": "._errors",
    "Executor": "._executor",
    "Async": "._modes",
    "Auto": "._modes",
    "Dask": "._modes",
    "Processes": "._modes",
    "Sequential": "._modes",
    "Threads": "._modes",
    "Outcome": "._outcome",
    "Pipeline": "._pipeline",
    "pipeline": "._pipeline",
    "StageError": "._pipeline_flow",
    "PipelineStatistics": "._pipeline_report",
    "StageStatistics": "._pipeline_report",
    "shutdown": "._pools",
    "Run": "._scheduler",
    "Service": "._service",
    "background": "._service",
    "Counter": "._shared",
    "SharedArray": "._shared",
    "Value": "._shared",
    "ProgressUpdate": "._stats",
    "RunStatistics": "._stats",
    "OrderedLock": "._sync",
    "OrderedRLock": "._sync",
    "acquire": "._sync",
    "deadlock_watch": "._sync",
    "Advice": "._workload",
    "advise": "._workload",
    "as_completed": "concurrent.futures",
    "wait": "concurrent.futures",
}

__all__ = (
    "Advice",
    "Async",
    "AsyncRun",
    "Auto",
    "Counter",
    "Dask",
    "DeadlockError",
    "Executor",
    "LockOrderError",
    "OrderedLock",
    "OrderedRLock",
    "Outcome",
    "Pipeline",
    "PipelineStatistics",
    "Processes",
    "ProgressUpdate",
    "Run",
    "RunStatistics",
    "Sequential",
    "SerializationError",
    "Service",
    "SharedArray",
    "StageError",
    "StageStatistics",
    "TaskError",
    "TaskTimeout",
    "TaskloomError",
    "Threads",
    "Value",
    "WorkerCrashed",
    "__version__",
    "acquire",
    "advise",
    "aimap",
    "amap",
    "as_completed",
    "background",
    "deadlock_watch",
    "imap",
    "map",
    "pipeline",
    "shutdown",
    "starmap",
    "wait",
)

if _typing.TYPE_CHECKING:
    from concurrent.futures import as_completed as as_completed
    from concurrent.futures import wait as wait

    from . import testing as testing
    from ._aio import AsyncRun as AsyncRun
    from ._aio import aimap as aimap
    from ._aio import amap as amap
    from ._api import imap as imap
    from ._api import map as map
    from ._api import starmap as starmap
    from ._errors import DeadlockError as DeadlockError
    from ._errors import LockOrderError as LockOrderError
    from ._errors import SerializationError as SerializationError
    from ._errors import TaskError as TaskError
    from ._errors import TaskloomError as TaskloomError
    from ._errors import TaskTimeout as TaskTimeout
    from ._errors import WorkerCrashed as WorkerCrashed
    from ._executor import Executor as Executor
    from ._modes import Async as Async
    from ._modes import Auto as Auto
    from ._modes import Dask as Dask
    from ._modes import Processes as Processes
    from ._modes import Sequential as Sequential
    from ._modes import Threads as Threads
    from ._outcome import Outcome as Outcome
    from ._pipeline import Pipeline as Pipeline
    from ._pipeline import pipeline as pipeline
    from ._pipeline_flow import StageError as StageError
    from ._pipeline_report import PipelineStatistics as PipelineStatistics
    from ._pipeline_report import StageStatistics as StageStatistics
    from ._pools import shutdown as shutdown
    from ._scheduler import Run as Run
    from ._service import Service as Service
    from ._service import background as background
    from ._shared import Counter as Counter
    from ._shared import SharedArray as SharedArray
    from ._shared import Value as Value
    from ._stats import ProgressUpdate as ProgressUpdate
    from ._stats import RunStatistics as RunStatistics
    from ._sync import OrderedLock as OrderedLock
    from ._sync import OrderedRLock as OrderedRLock
    from ._sync import acquire as acquire
    from ._sync import deadlock_watch as deadlock_watch
    from ._workload import Advice as Advice
    from ._workload import advise as advise


def __getattr__(name: str) -> _typing.Any:
    """Import a public name on first use, and keep it (later lookups are plain attributes)."""
    if name == "testing":
        return _importlib.import_module(".testing", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taskloom' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    if getattr(value, "__module__", "").startswith("taskloom."):
        value.__module__ = "taskloom"  # tracebacks and reprs read taskloom.Executor
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
