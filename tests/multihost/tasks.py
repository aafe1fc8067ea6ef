"""Tasks the multi-host tests run on the bed's workers (imported there by name: keep it light).

Handshakes go through files: the hosts are network namespaces of one machine and share its file
system, so a task can say "I started, on this worker" and wait for the test to open a gate.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

#: how long a gated task waits for its gate before it gives up and returns (the test fails first)
GATE_LIMIT = 120.0


def worker_address() -> str:
    """The address of the Dask worker running this task."""
    from distributed import get_worker

    return str(get_worker().address)


def _safe(address: str) -> str:
    return re.sub(r"[^0-9A-Za-z.]+", "_", address)


def where(x: int) -> tuple[int, str]:
    """(x * x, the worker that ran it)."""
    time.sleep(0.01)
    return x * x, worker_address()


def gated(x: int, gate: str) -> tuple[int, str]:
    """Say "x started on this worker" in ``gate``, wait until ``gate/open`` exists, return (x * x, worker)."""
    me = worker_address()
    Path(gate, f"started.{x}.{_safe(me)}").write_text(me)
    deadline = time.monotonic() + GATE_LIMIT
    while not os.path.exists(os.path.join(gate, "open")) and time.monotonic() < deadline:
        time.sleep(0.01)
    return x * x, me


def started(gate: str) -> dict[int, set[str]]:
    """Read by the test: item -> the workers it started on (from ``gated``'s markers)."""
    out: dict[int, set[str]] = {}
    for path in Path(gate).glob("started.*"):
        text = path.read_text()
        if text:  # (empty: being written)
            out.setdefault(int(path.name.split(".")[1]), set()).add(text)
    return out


def array_total(args: tuple[Any, int]) -> tuple[float, str]:
    """The sum of a numpy array plus i, and the worker: a task whose argument is large."""
    array, i = args
    return float(array.sum()) + i, worker_address()


def block_sum(args: tuple[Any, int, int]) -> tuple[float, str]:
    import numpy as np

    array, lo, hi = args
    return float(np.asarray(array)[lo:hi].sum()), worker_address()


def megabytes(n: int) -> tuple[bytes, str]:
    """A result of ``n`` MiB (a repeated pattern, so its content can be checked), and the worker."""
    return bytes(range(256)) * (n * 4096), worker_address()


def tiny(x: int) -> int:
    return x * x


def cpu(n: int) -> int:
    return sum(i * i for i in range(n))


def sleep_io(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def run_chunk(fn: Any, chunk: list[Any]) -> list[Any]:
    """One Dask task over a chunk of items: batching by hand, as a Dask user would (benchmarks/dask_hosts.py)."""
    return [fn(x) for x in chunk]


def meet(args: tuple[str, int]) -> tuple[bool, str]:
    """Arrive at a meeting of ``n`` tasks (files in a shared folder); (all came within 60 s, the worker)."""
    directory, n = args
    me = worker_address()
    Path(directory, f"{_safe(me)}-{os.getpid()}-{time.monotonic_ns()}").touch()
    deadline = time.monotonic() + 60
    while len(os.listdir(directory)) < n:
        if time.monotonic() > deadline:
            return False, me
        time.sleep(0.01)
    return True, me


def run_chunk_wrapped(fn: Any, chunk: list[Any]) -> tuple[list[Any]]:
    """``run_chunk`` with its results in a 1-tuple: distributed serializes a list (or tuple) a task
    returns item by item (12,500 ints: ~0.35 s), a list inside a tuple as one object."""
    return ([fn(x) for x in chunk],)
