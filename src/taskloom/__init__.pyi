"""The public API of taskloom, listed once.

Type checkers read this stub instead of ``__init__.py``; at run time ``__init__.py`` reads the
``from ... import name as name`` lines below to import each name on first use. Add a public name
here, and only here.
"""

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
from ._errors import JournalError as JournalError
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
from ._modes import Mode as Mode
from ._modes import Processes as Processes
from ._modes import Sequential as Sequential
from ._modes import Threads as Threads
from ._options import RunOptions as RunOptions
from ._outcome import Outcome as Outcome
from ._pipeline import Pipeline as Pipeline
from ._pipeline import pipeline as pipeline
from ._pipeline_flow import StageFailure as StageFailure
from ._pipeline_report import PipelineStatistics as PipelineStatistics
from ._pipeline_report import StageStatistics as StageStatistics
from ._pools import shutdown as shutdown
from ._run._run import Run as Run
from ._service import Service as Service
from ._service import background as background
from ._shared import Counter as Counter
from ._shared import SharedArray as SharedArray
from ._shared import Value as Value
from ._stats import ProgressUpdate as ProgressUpdate
from ._stats import RunStatistics as RunStatistics
from ._sync import Acquired as Acquired
from ._sync import DeadlockWatch as DeadlockWatch
from ._sync import LockStatistics as LockStatistics
from ._sync import OrderedLock as OrderedLock
from ._sync import OrderedRLock as OrderedRLock
from ._sync import acquire as acquire
from ._sync import deadlock_watch as deadlock_watch
from ._workload import Advice as Advice
from ._workload import advise as advise

__version__: str
__all__: tuple[str, ...]
