"""Warm pools: the only process-wide state. Reused between calls, ended by ``shutdown()``.

Pools are keyed by their engine's configuration and worker count, so several threads calling
``taskloom.map`` with the same mode share one pool, and a second call a moment later pays no
start-up; a pipeline stage adds its position to the key, so two stages never share a pool.
``shutdown()`` runs at interpreter exit too. atexit handlers run last-in first-out, and
multiprocessing's own exit hook (``multiprocessing.util``) joins its child processes: ours must run
first, so it is registered again whenever ``multiprocessing.util`` was imported after it. Neither
asyncio nor multiprocessing is imported here: a first ``map`` on threads pays for neither.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Hashable
from typing import TYPE_CHECKING

from ._backends import _registry
from ._backends._base import Backend, nesting_depth

if TYPE_CHECKING:
    from ._modes import Mode

_lock = threading.Lock()
_pools: dict[Hashable, Backend] = {}
_keep: list[object] = []  # configs whose id() is part of a key stay alive with their pool


def _key(mode: Mode, engine: Hashable, workers: int, depth: int, slot: Hashable) -> Hashable:
    key: Hashable = (type(mode).__name__, engine, workers, depth, slot)
    try:
        hash(key)
    except TypeError:  # e.g. Processes(initargs=([...],)): unhashable, keyed by identity
        _keep.append(mode)
        key = (type(mode).__name__, id(mode), workers, depth, slot)
    return key


def get_backend(mode: Mode, workers: int, slot: Hashable = None) -> Backend:
    """The warm backend for this mode and worker count, created on first use.

    ``slot`` keeps pools apart that would otherwise be shared: each pipeline stage asks for its
    own (stage 2's thread pool is not stage 0's, even with the same mode and worker count), and
    is still warm for the next pipeline.
    """
    # A map called from a pool thread (or the loop thread) gets a pool one level deeper: queueing
    # behind the very tasks that wait for it would deadlock. Processes are separate anyway.
    depth = nesting_depth() if mode.pool_per_depth else 0
    engine = mode.pool_key()
    if engine is None:  # nothing worth keeping warm (sequential)
        return mode.open_backend(workers, depth)
    key = _key(mode, engine, workers, depth, slot)
    with _lock:
        backend = _pools.get(key)
        if backend is None:
            backend = mode.open_backend(workers, depth)
            _pools[key] = backend
    if not _hook_is_last and "multiprocessing.util" in sys.modules:
        _register_exit_hook()
    return backend


def shutdown() -> None:
    """Stop every warm pool now: worker processes end, threads and event loops stop.

    Runs still in flight on those pools end with an error. The next call starts fresh pools.
    Also runs at interpreter exit.
    """
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
        _keep.clear()
    for backend in pools:
        backend.close()
    # What engines joined (Dask clients opened without a pooled backend left, the fork server,
    # whose workers are stopped by now).
    _registry.run("after_pools")


def live_backends() -> list[Backend]:
    """The warm pools that exist now (for ``taskloom info`` and tests)."""
    with _lock:
        return list(_pools.values())


def _forget_in_child() -> None:
    # A forked child inherits our pool objects but not their threads: start from nothing.
    global _lock
    _lock = threading.Lock()
    _pools.clear()
    _keep.clear()


def _at_exit() -> None:
    _registry.run("before_exit")  # executors' pending work first, while the pools still run it
    shutdown()
    _registry.run("at_exit_last")  # thread tasks still running get a grace period, not a kill mid-write


_hook_is_last = False


def _register_exit_hook() -> None:
    """(Re-)register ``_at_exit`` so it runs before multiprocessing's hook, if that is loaded."""
    global _hook_is_last
    _hook_is_last = "multiprocessing.util" in sys.modules
    atexit.unregister(_at_exit)
    atexit.register(_at_exit)


_register_exit_hook()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
