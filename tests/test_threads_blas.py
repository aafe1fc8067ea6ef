"""BLAS on thread workers is capped to each pool thread's share of the CPUs, and set back after.

Real numpy and threadpoolctl (the ``all`` extra), no mocks: ``threadpoolctl.threadpool_info()``
is read inside the tasks. Only libraries with a process-wide limit are expected to change (the
OpenMP runtime's limit belongs to each calling thread, and taskloom leaves it alone).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest

np = pytest.importorskip("numpy")
threadpoolctl = pytest.importorskip("threadpoolctl")

import taskloom as tl  # noqa: E402
from taskloom._system import usable_cpus  # noqa: E402


def blas_limits(_: object = None) -> dict[str, int]:
    """Each process-wide BLAS library's thread limit, as seen from the calling thread."""
    return {info["filepath"]: info["num_threads"] for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas" and info.get("threading_layer") != "openmp"}


def capped(original: dict[str, int], workers: int) -> dict[str, int]:
    share = max(1, usable_cpus() // workers)
    return {path: min(n, share) for path, n in original.items()}


@pytest.fixture
def original() -> dict[str, int]:
    np.ones((2, 2)) @ np.ones((2, 2))  # numpy imported and its BLAS loaded
    limits = blas_limits()
    if not limits:
        pytest.skip("numpy has no BLAS with a process-wide thread limit here")
    return limits


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_a_thread_task_sees_blas_capped_to_its_share_and_the_limits_come_back(
        original: dict[str, int], workers: int) -> None:
    seen = tl.map(blas_limits, range(workers), mode="threads", workers=workers, chunksize=1)
    assert seen == [capped(original, workers)] * workers
    assert blas_limits() == original  # the run is over: set back before its last result
    tl.shutdown()
    assert blas_limits() == original


def test_the_limits_are_set_back_after_the_pool_shuts_down(original: dict[str, int]) -> None:
    inside = threading.Event()
    leave = threading.Event()

    def hold(_: object) -> dict[str, int]:
        inside.set()
        leave.wait(30)
        return blas_limits()

    run = tl.imap(hold, [0], mode="threads", workers=4)
    consumer = threading.Thread(target=lambda: run.to_list())
    consumer.start()
    try:
        assert inside.wait(30)
        assert blas_limits() == capped(original, 4)  # process-wide: the caller's thread too
    finally:
        leave.set()
        consumer.join(30)
    tl.shutdown()
    assert blas_limits() == original


def test_concurrent_pools_take_the_smallest_limit_and_each_lease_ends_on_its_own(original: dict[str, int]) -> None:
    if usable_cpus() < 2:
        pytest.skip("with one CPU every share is 1")
    steps: dict[str, Any] = {}
    big_inside, big_leave = threading.Event(), threading.Event()

    def big_pool_task(_: object) -> None:  # on a pool of 4: the smallest share
        steps["big"] = blas_limits()
        big_inside.set()
        big_leave.wait(30)

    def small_pool_task(_: object) -> dict[str, int]:  # on a pool of 1: the largest share
        steps["alone"] = blas_limits()
        consumer = threading.Thread(target=lambda: tl.map(big_pool_task, [0], mode="threads", workers=4))
        consumer.start()
        big_inside.wait(30)
        steps["both"] = blas_limits()
        big_leave.set()
        consumer.join(30)
        return blas_limits()

    steps["after big"] = tl.map(small_pool_task, [0], mode="threads", workers=1)[0]
    assert steps["alone"] == capped(original, 1)
    assert steps["big"] == steps["both"] == capped(original, 4)
    assert steps["after big"] == capped(original, 1)
    assert blas_limits() == original


def test_nested_pools_keep_the_smallest_limit(original: dict[str, int]) -> None:
    def outer(_: object) -> tuple[dict[str, int], dict[str, int]]:
        inner = tl.map(blas_limits, [0], mode="threads", workers=8)[0]
        return inner, blas_limits()

    inner, back_in_outer = tl.map(outer, [0], mode="threads", workers=2)[0]
    assert inner == capped(original, 8)
    assert back_in_outer == capped(original, 2)
    assert blas_limits() == original


def test_a_lower_limit_the_user_set_is_never_raised(original: dict[str, int]) -> None:
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        seen = tl.map(blas_limits, [0], mode="threads", workers=1)[0]
        assert seen == dict.fromkeys(original, 1)
    assert blas_limits() == original


def test_no_numeric_library_is_imported_to_cap_it() -> None:
    code = ("import sys, taskloom as tl\n"
            "tl.map(abs, range(20), mode='threads', workers=2)\n"
            "print(sorted(m for m in ('numpy', 'threadpoolctl', 'scipy') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
