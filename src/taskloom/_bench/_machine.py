"""The machine a benchmark ran on: what ``taskloom info`` prints and every report starts with."""

from __future__ import annotations

import multiprocessing
import os
import platform
import sys
import sysconfig
from pathlib import Path
from typing import Any

from .._modes import by_name, default_start_method
from .._system import cgroup_cpu_limit, gil_enabled, usable_cpus

__all__ = ["describe", "machine_info"]


def _cpu_model() -> str | None:
    # platform.processor() is empty on most Linux systems; /proc/cpuinfo names the model.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # pragma: no cover - psutil is a core dependency, but never fail `info`
        return None


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return None


def machine_info() -> dict[str, Any]:
    """Describe this machine and interpreter as taskloom sees them (JSON-ready).

    Returns:
        A dict: taskloom and Python versions, platform, CPUs (usable, ``os.cpu_count()``, the
        affinity mask and a cgroup quota),
        memory, start methods and taskloom's default, the GIL, default workers per mode, and the
        load average (1, 5, 15 minutes) at the time of the call.
    """
    from .. import __version__

    return {
        "taskloom_version": __version__,
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "usable_cpus": usable_cpus(),
        "os_cpu_count": os.cpu_count(),
        # What usable_cpus comes from: the affinity mask (None where the OS has none) and a quota.
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cgroup_cpu_quota": cgroup_cpu_limit(),
        "memory_bytes": _memory_bytes(),
        "start_methods": multiprocessing.get_all_start_methods(),
        "default_start_method": default_start_method(),
        "gil_enabled": gil_enabled(),
        "free_threading_build": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        # Not the machine's but the moment's: other work running during a benchmark skews it.
        "load_average": _load_average(),
        "default_workers": {name: by_name(name).default_workers()
                            for name in ("sequential", "threads", "processes", "async")},
    }


def describe(info: dict[str, Any]) -> list[tuple[str, str]]:
    """``machine_info()`` as labelled lines of text, in display order (for tables and the report)."""
    workers = info["default_workers"]
    memory = info.get("memory_bytes")
    load = info.get("load_average")
    affinity, quota = info.get("cpu_affinity"), info.get("cgroup_cpu_quota")
    return [
        ("taskloom version", str(info["taskloom_version"])),
        ("Python", f"{info['python_version']} ({info['python_implementation']})"),
        ("Platform", str(info["platform"])),
        ("CPU model", str(info.get("cpu_model") or "unknown")),
        ("CPUs usable", str(info["usable_cpus"])),
        ("os.cpu_count()", str(info["os_cpu_count"])),
        ("CPU affinity", "n/a" if affinity is None else f"{affinity} CPU(s)"),
        ("cgroup CPU quota", "none" if quota is None else f"{quota:g} CPU(s)"),
        ("Memory", "unknown" if memory is None else f"{memory / 2**30:.1f} GiB"),
        ("Start methods", ", ".join(info["start_methods"])),
        ("taskloom start method", str(info["default_start_method"])),
        ("GIL enabled", "yes" if info["gil_enabled"] else "no"),
        ("Free-threading build", "yes" if info["free_threading_build"] else "no"),
        ("Default workers", ", ".join(f"{mode} {count}" for mode, count in workers.items())),
        ("Load average", "unknown" if not load else ", ".join(f"{x:.2f}" for x in load) + " (1, 5, 15 min)"),
    ]
