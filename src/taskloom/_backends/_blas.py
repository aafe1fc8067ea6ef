"""Native thread pools (BLAS) capped while taskloom's thread pools run, with threadpoolctl.

N pool threads that each call into a BLAS that starts one thread per CPU make N x CPUs threads
fighting over the CPUs. Process workers are capped by environment variables when they start
(``_processes.py``); threads share one process, so the cap is process-wide: set through
threadpoolctl while a pool runs a batch, and taken back when no pool runs one.

* **Only when it is cheap and useful**: a numeric library is already imported (``numpy``,
  ``scipy`` or ``torch`` in ``sys.modules``: taskloom never imports one to cap it) and
  threadpoolctl is installed (the ``all`` extra; without it nothing is capped). The first cap in
  a process imports threadpoolctl (~15-30 ms, once).
* **Leases**: each batch running on a pool of N threads holds a lease on ``max(1, cpus // N)``;
  the smallest leased limit applies (nested and concurrent pools), and when the last lease ends
  every library taskloom lowered is set back to what it was.
* **Never raised, never fought over**: a library already at or under the limit (the user's
  ``OPENBLAS_NUM_THREADS``, their own ``threadpool_limits``) is left alone, and a library is set
  back only if it still has the value taskloom gave it. Libraries whose limit belongs to the
  calling thread (the OpenMP runtime, OpenBLAS built on OpenMP) are not touched: a limit set in one
  thread would not reach the others, nor could another thread take it back.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from .._system import usable_cpus

__all__ = ["acquire", "current_limit", "release", "share"]

#: Imported by the user: the libraries whose BLAS calls a cap concerns (never imported here).
NUMERIC_MODULES = ("numpy", "scipy", "torch")

_lock = threading.Lock()
_leases: dict[int, int] = {}  # limit -> batches running under it
_applied: int | None = None  # the limit in force (None: the libraries' own settings)
_changed: list[tuple[Any, int, int]] = []  # (library controller, its value before, the value we set)
_controller: Any = None
_controller_modules = -1  # len(sys.modules) when _controller was built: new imports may bring libraries
_unavailable = False  # threadpoolctl is not installed, or failed: never try again


def share(workers: int) -> int:
    """The BLAS threads each of ``workers`` pool threads may use: its share of the usable CPUs."""
    return max(1, usable_cpus() // max(1, workers))


def acquire(limit: int) -> bool:
    """A batch starts on a pool whose share is ``limit``: cap BLAS if a numeric library is loaded.

    Returns whether a lease was taken; if so, ``release(limit)`` must follow when the batch ends.
    """
    if _unavailable or not any(name in sys.modules for name in NUMERIC_MODULES):
        return False
    with _lock:
        _leases[limit] = _leases.get(limit, 0) + 1
        _apply()
    return True


def release(limit: int) -> None:
    """The batch of a lease ended; the last one to end sets the libraries back."""
    with _lock:
        left = _leases.get(limit, 0) - 1
        if left > 0:
            _leases[limit] = left
        else:
            _leases.pop(limit, None)
        _apply()


def current_limit() -> int | None:
    """The limit taskloom holds now (None: none): for tests and diagnostics."""
    return _applied


def _apply() -> None:
    """Make the libraries' limits what the leases say (call with ``_lock`` held)."""
    global _applied, _unavailable
    target = min(_leases) if _leases else None
    if target == _applied or _unavailable:
        _applied = target
        return
    try:
        _restore()
        if target is not None:
            _lower_to(target)
    except Exception:  # a library or threadpoolctl misbehaved: a cap is not worth failing a task
        logging.getLogger("taskloom").debug("taskloom: BLAS threads not capped", exc_info=True)
        _unavailable = True
        _changed.clear()
    _applied = target


def _lower_to(limit: int) -> None:
    controller = _get_controller()
    if controller is None:
        return
    for lib in controller.lib_controllers:
        if lib.user_api == "openmp" or getattr(lib, "threading_layer", None) == "openmp":
            continue  # per-thread limits (see the module's docstring)
        before = lib.num_threads
        if before is None or before <= limit:
            continue
        lib.set_num_threads(limit)
        if lib.num_threads == limit:  # threadpoolctl ignores it when another thread controls OpenBLAS
            _changed.append((lib, before, limit))
    _release_control()


def _restore() -> None:
    for lib, before, ours in _changed:
        if lib.num_threads == ours:  # else someone set it since: theirs stands
            lib.set_num_threads(before)
    _changed.clear()
    _release_control()


def _release_control() -> None:
    # threadpoolctl (3.5+) lets only one thread at a time set a process-wide OpenBLAS pool, the
    # first that sets it, until that thread clears it: our sets come from any pool thread, so
    # this thread gives control back at once (it clears only a control it holds).
    module = sys.modules.get("threadpoolctl")
    openblas = getattr(module, "OpenBLASController", None)
    clear = getattr(openblas, "clear_controlling_thread", None)
    if clear is not None:
        clear()


def _get_controller() -> Any:
    global _controller, _controller_modules, _unavailable
    if _controller is None or len(sys.modules) != _controller_modules:
        try:
            import threadpoolctl
        except ImportError:
            _unavailable = True
            return None
        _controller = threadpoolctl.ThreadpoolController()
        _controller_modules = len(sys.modules)
    return _controller


def _forget_in_child() -> None:
    # A forked child has none of the threads that held leases. It keeps the limits of the moment
    # (setting them back here could wait forever on a lock held by a parent's thread at the fork).
    global _lock, _applied
    _lock = threading.Lock()
    _leases.clear()
    _changed.clear()
    _applied = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
