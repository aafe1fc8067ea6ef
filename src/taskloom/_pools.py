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
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from ._backends._base import Backend, nesting_depth
from ._modes import Async, Dask, Mode, Processes, Sequential, Threads

if TYPE_CHECKING:
    import asyncio

_lock = threading.Lock()
_pools: dict[Hashable, Backend] = {}
_keep: list[object] = []  # configs whose id() is part of a key stay alive with their pool


def _key(mode: Mode, workers: int, depth: int, slot: Hashable) -> Hashable:
    key: Hashable = (type(mode).__name__, mode, workers, depth, slot)
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
    if isinstance(mode, Sequential):
        from ._backends._sequential import SequentialBackend

        return SequentialBackend()
    # A map called from a pool thread (or the loop thread) gets a pool one level deeper: queueing
    # behind the very tasks that wait for it would deadlock. Processes are separate anyway.
    depth = 0 if isinstance(mode, Processes) else nesting_depth()
    key = _key(mode, workers, depth, slot)
    with _lock:
        backend = _pools.get(key)
        if backend is None:
            backend = _create(mode, workers, depth)
            _pools[key] = backend
    if not _hook_is_last and "multiprocessing.util" in sys.modules:
        _register_exit_hook()
    return backend


def _create(mode: Mode, workers: int, depth: int) -> Backend:
    if isinstance(mode, Threads):
        from ._backends._threads import ThreadBackend

        return ThreadBackend(workers, mode.idle_timeout, depth, mode.initializer, mode.initargs)
    if isinstance(mode, Processes):
        from ._backends._processes import ProcessBackend

        return ProcessBackend(mode, workers)
    if isinstance(mode, Dask):
        from ._backends._dask import DaskBackend

        return DaskBackend(mode, workers or None)
    if isinstance(mode, Async):
        from ._backends._asyncio import AsyncBackend

        return AsyncBackend(workers, _loop_factory(mode), depth=depth, debug=mode.debugging)
    raise ValueError(f"no backend for mode {mode!r}")  # pragma: no cover - parse_mode guards


def _loop_factory(mode: Async) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if mode.loop != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        raise ValueError("Async(loop='uvloop') needs the 'uvloop' package: pip install 'taskloom[uvloop]'") from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


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
    dask = sys.modules.get("taskloom._backends._dask")
    if dask is not None:  # an Executor or run may have connected without a pooled backend left
        dask.close_all()
    forkserver = sys.modules.get("taskloom._backends._forkserver")
    if forkserver is not None:  # after the pools: their workers are stopped by then
        forkserver.stop()


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
    executor = sys.modules.get("taskloom._executor")
    if executor is not None:  # executors' pending work first, while the pools still run it
        executor.finish_pending_at_exit()
    shutdown()
    threads = sys.modules.get("taskloom._backends._threads")
    if threads is not None:  # thread tasks still running get a grace period, not a kill mid-write
        threads.finish_running()


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
