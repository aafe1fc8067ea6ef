"""taskloom: run Python work concurrently through one API that measures the work and picks the engine.

Example::

    import taskloom as tl

    squares = tl.map(square, range(10_000))                      # mode="auto" measures and picks
    pages = tl.map(fetch, urls, mode="threads", workers=64)
    for outcome in tl.imap(risky, items, on_error="collect", retries=2, timeout=5.0):
        print(outcome.index, outcome.value if outcome.ok else outcome.error)
"""

from concurrent.futures import as_completed as as_completed
from concurrent.futures import wait as wait

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
from ._modes import Processes as Processes
from ._modes import Sequential as Sequential
from ._modes import Threads as Threads
from ._outcome import Outcome as Outcome
from ._outcome import RunStatistics as RunStatistics
from ._pools import shutdown as shutdown
from ._scheduler import Run as Run
from ._workload import Advice as Advice
from ._workload import advise as advise

__version__ = "0.1.0"

__all__ = (
    "Advice",
    "Async",
    "Auto",
    "DeadlockError",
    "Executor",
    "LockOrderError",
    "Outcome",
    "Processes",
    "Run",
    "RunStatistics",
    "Sequential",
    "SerializationError",
    "TaskError",
    "TaskTimeout",
    "TaskloomError",
    "Threads",
    "WorkerCrashed",
    "__version__",
    "advise",
    "as_completed",
    "imap",
    "map",
    "shutdown",
    "starmap",
    "wait",
)

# Public objects report themselves as taskloom.X in reprs and tracebacks.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("taskloom."):
        _obj.__module__ = "taskloom"
del _name, _obj
