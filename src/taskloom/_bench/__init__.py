"""The suite behind ``taskloom bench``: workloads, the runner, and the report.

Layout (each module one idea, so the suite can grow a workload or a report section at a time)::

    _workloads.py  Workload, the registry (WORKLOADS, register) and the task functions
    _runner.py     run_suite -> SuiteResult (timings, speedups, winner, verdict; to_dict for --json)
    _machine.py    machine_info(): the machine description (also `taskloom info`)
    _tables.py     result tables as rows of text, shared by every renderer
    _html.py       render_html(): the --report page

The task functions live at module level here so worker processes import them by reference.
"""

from ._html import render_html as render_html
from ._machine import describe as describe
from ._machine import machine_info as machine_info
from ._runner import SMALL_ENV as SMALL_ENV
from ._runner import Listener as Listener
from ._runner import ModeResult as ModeResult
from ._runner import SuiteResult as SuiteResult
from ._runner import WorkloadResult as WorkloadResult
from ._runner import default_repeat as default_repeat
from ._runner import run_suite as run_suite
from ._runner import small_requested as small_requested
from ._workloads import WORKLOADS as WORKLOADS
from ._workloads import Workload as Workload
from ._workloads import WrongResult as WrongResult
from ._workloads import get_workload as get_workload
from ._workloads import register as register

__all__ = (
    "SMALL_ENV",
    "WORKLOADS",
    "Listener",
    "ModeResult",
    "SuiteResult",
    "Workload",
    "WorkloadResult",
    "WrongResult",
    "default_repeat",
    "describe",
    "get_workload",
    "machine_info",
    "register",
    "render_html",
    "run_suite",
    "small_requested",
)
