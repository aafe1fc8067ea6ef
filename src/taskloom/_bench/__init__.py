"""The suite behind ``taskloom bench``: workloads, the runner, and the report.

Layout (each module one idea, so the suite can grow a workload or a report section at a time)::

    _workloads.py  Workload, the registry (WORKLOADS, register), sizes; cpu, io, fib, tiny
    _mixed.py      the loopback HTTP server and the mixed fetch-then-compute workload
    _numpy.py      numpy blocks: array (passed as arguments), array-shared (taskloom.SharedArray)
    _cpu.py        CPU time of this process and its descendants (pool workers), for CPU use
    _runner.py     run_suite -> SuiteResult (timings, speedups, CPU use, winner, verdict; to_dict)
    _machine.py    machine_info(): the machine description (also `taskloom info`)
    _tables.py     result tables as rows of text, shared by every renderer
    _charts.py     one bar chart per workload, as inline SVG (matplotlib, imported on first use)
    _html.py       render_html(): the --report page

The task functions live at module level so worker processes import them by reference; importing
this package registers every workload.
"""

# Registration order is display order: cpu, io, fib, tiny (_workloads), mixed, array, array-shared.
from . import _mixed as _mixed
from . import _numpy as _numpy
from ._html import render_html as render_html
from ._machine import describe as describe
from ._machine import machine_info as machine_info
from ._runner import BENCH_MODES as BENCH_MODES
from ._runner import SMALL_ENV as SMALL_ENV
from ._runner import Listener as Listener
from ._runner import ModeResult as ModeResult
from ._runner import SuiteResult as SuiteResult
from ._runner import WorkloadResult as WorkloadResult
from ._runner import available_modes as available_modes
from ._runner import bench_size as bench_size
from ._runner import default_repeat as default_repeat
from ._runner import run_suite as run_suite
from ._workloads import SIZES as SIZES
from ._workloads import WORKLOADS as WORKLOADS
from ._workloads import Size as Size
from ._workloads import Workload as Workload
from ._workloads import WrongResult as WrongResult
from ._workloads import get_workload as get_workload
from ._workloads import register as register

__all__ = (
    "BENCH_MODES",
    "SIZES",
    "SMALL_ENV",
    "WORKLOADS",
    "Listener",
    "ModeResult",
    "Size",
    "SuiteResult",
    "Workload",
    "WorkloadResult",
    "WrongResult",
    "available_modes",
    "bench_size",
    "default_repeat",
    "describe",
    "get_workload",
    "machine_info",
    "register",
    "render_html",
    "run_suite",
)
