"""The Dask backend: batches run as Dask tasks on a ``distributed`` cluster.

One Dask task per batch, so tiny tasks are not each a scheduler round trip (Dask's own overhead
is ~1 ms a task). Where the cluster comes from:

* ``Dask(client=...)``: your client; taskloom never closes it;
* ``Dask(address=...)`` or ``TASKLOOM_DASK_ADDRESS``: a running scheduler; taskloom closes only
  the client it opened, never the cluster;
* neither: an embedded ``LocalCluster`` (processes, one single-threaded worker per usable CPU),
  started once, reused, and closed by ``taskloom.shutdown()`` or at interpreter exit. Started
  from a script without the ``__main__`` guard, its workers do not run the script again
  (``_daskmain``): Dask's spawned workers would otherwise each start a cluster of their own.

What Dask cannot do, said plainly: a running Dask task cannot be stopped, so a ``timeout`` is
reported on time (measured from submission) while the task itself runs on; and a worker's death
is Dask's to handle (it reschedules; after ``distributed.scheduler.allowed-failures`` it reports
``KilledWorker``, which becomes ``WorkerCrashed`` here).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time
import weakref
from typing import Any

from .._modes import Dask
from .._system import usable_cpus
from . import _daskmain, _registry
from ._base import Backend, Batch, Done, ItemError, Job, Lost, Started, run_items

ADDRESS_ENV = "TASKLOOM_DASK_ADDRESS"

#: numpy arrays this large are scattered to the cluster once per run, not put in every task
SCATTER_BYTES = 1 << 20


def _shared_array_type() -> Any:
    """SharedArray's class when the user has imported it (else nothing to look for)."""
    import sys

    shared = sys.modules.get("taskloom._shared")
    return getattr(shared, "SharedArray", None)


def _run_batch(fn: Any, items: list[Any], per_item_timing: bool) -> tuple[Any, ...]:
    """Runs on a Dask worker: the same loop as every other backend, errors made portable."""
    from ._worker import _portable_exception

    values, errors, durations, elapsed = run_items(fn, items, per_item_timing=per_item_timing)
    portable = None
    if errors:
        portable = {pos: (_portable_exception(e.exception), e.traceback) for pos, e in errors.items()}
    try:
        from distributed import get_worker

        where = get_worker().address
    except (ImportError, ValueError):  # pragma: no cover - not on a worker
        where = "dask"
    return values, portable, durations, elapsed, where


class _Connection:
    """A client, and the cluster when taskloom started it."""

    def __init__(self, config: Dask) -> None:
        try:
            distributed: Any = importlib.import_module("distributed")
        except ImportError:
            raise ValueError("mode 'dask' needs the 'distributed' package: pip install 'taskloom[dask]'") from None
        self.cluster: Any = None
        self.main_hidden = False  # the cluster's workers have no copy of the main script
        self.scattered: dict[Any, Any] = {}  # SharedArray name -> its data scattered to the cluster
        self.owns_client = config.client is None
        address = config.address or os.environ.get(ADDRESS_ENV) or None
        if config.client is not None:
            self.client: Any = config.client
        elif address is not None:
            self.client = distributed.Client(address, set_as_default=False)
        else:
            self.main_hidden = _daskmain.hide_main_if_unguarded()
            # dashboard on a free port: two clusters (or a user's) must not fight over :8787.
            self.cluster = distributed.LocalCluster(n_workers=usable_cpus(), threads_per_worker=1, processes=True,
                                                    dashboard_address=":0", silence_logs=logging.ERROR)
            self.client = distributed.Client(self.cluster, set_as_default=False)

    def threads(self) -> int:
        return max(1, int(sum(self.client.nthreads().values())))

    def close(self) -> None:
        if self.owns_client:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


_connections: dict[Any, _Connection] = {}
_connections_lock = threading.Lock()


def _connection(config: Dask) -> _Connection:
    key = (config.address or os.environ.get(ADDRESS_ENV), id(config.client) if config.client is not None else None)
    with _connections_lock:
        conn = _connections.get(key)
        if conn is None:
            conn = _connections[key] = _Connection(config)
        return conn


def close_all() -> None:
    """Close what taskloom opened (``taskloom.shutdown()``)."""
    with _connections_lock:
        conns = list(_connections.values())
        _connections.clear()
    for conn in conns:
        conn.close()


_registry.join("after_pools", close_all)  # a run or Executor may have connected with no pool left


class DaskBackend(Backend):
    name = "dask"
    prefetch = 2

    def __init__(self, config: Dask, workers: int | None) -> None:
        self._conn = _connection(config)
        self.workers = workers or self._conn.threads()
        self._lock = threading.Lock()
        # Per run: numpy arguments scattered once (id -> (array, future)); the run's Job is the key.
        self._scattered_per_run: weakref.WeakKeyDictionary[Job, dict[int, tuple[Any, Any]]] = (
            weakref.WeakKeyDictionary())
        self._futures: dict[int, Any] = {}

    def submit(self, batch: Batch) -> None:
        client = self._conn.client
        items = self._scatter(batch)
        future = client.submit(_run_batch, batch.job.fn, items, batch.per_item_timing, pure=False)
        with self._lock:
            self._futures[batch.id] = future
        if batch.timed:  # Dask tells no start time: the deadline runs from submission
            batch.sink.put(Started(batch.id, time.monotonic(), "dask"))
        future.add_done_callback(lambda f: self._done(batch, f))

    def _scatter(self, batch: Batch) -> list[Any]:
        """Large data in the items (or in their tuples and lists) is sent to the cluster once.

        * A SharedArray travels by name to the embedded LocalCluster (same host: zero-copy); a
          remote cluster cannot map this machine's shared memory, so there its data is scattered,
          once per connection, and the task receives a numpy array.
        * A numpy array of ``SCATTER_BYTES`` or more is scattered once per run (the usual
          ``[(big, i) for i in ...]`` would otherwise put it in every task's graph, and Dask
          warns "Sending large graph"); the run keeps it alive, so its id stays its own.
        """
        shared_type = _shared_array_type()
        numpy = sys.modules.get("numpy")
        if shared_type is None and numpy is None:
            return batch.items
        remote = self._conn.cluster is None
        per_run = self._scattered_per_run.setdefault(batch.job, {})

        def swap(x: Any) -> Any:
            if shared_type is not None and isinstance(x, shared_type):
                if not remote:
                    return x
                key = ("shared", x.name)
                future = self._conn.scattered.get(key)
                if future is None:
                    import numpy as np  # a SharedArray exists, so numpy does

                    future = self._conn.scattered[key] = self._conn.client.scatter(np.array(x), broadcast=False,
                                                                                  hash=False)
                return future
            if (numpy is not None and isinstance(x, numpy.ndarray) and x.nbytes >= SCATTER_BYTES
                    and not (x.dtype.hasobject and self._conn.main_hidden)):
                # (Dask scatters an array with plain pickle: its objects of a class of the script
                # would not resolve on workers without the script; inline, they go by value.)
                kept = per_run.get(id(x))
                if kept is None:
                    # hash=False: a key of its own. With content keys, the next run scattering the same
                    # data could meet the release of this run's key, and Dask cancels the tasks.
                    kept = per_run[id(x)] = (x, self._conn.client.scatter(x, broadcast=False, hash=False))
                return kept[1]
            if type(x) is tuple or type(x) is list:  # not subclasses: a namedtuple is built differently
                return type(x)(swap(y) for y in x)
            return x

        return [swap(x) for x in batch.items]

    def _done(self, batch: Batch, future: Any) -> None:
        with self._lock:
            self._futures.pop(batch.id, None)
        status = future.status
        if batch.cancelled:
            return
        if status == "cancelled":  # not by us: Dask dropped it (e.g. an input it needed was released)
            batch.sink.put(Lost(batch.id, "crash", "Dask cancelled the task (not taskloom): an input it needed "
                                                   "was released, or the client lost the scheduler"))
            return
        if status == "finished":
            values, errs, durations, elapsed, where = future.result()
            errors = {pos: ItemError(exc, tb, True) for pos, (exc, tb) in errs.items()} if errs else None
            batch.sink.put(Done(batch.id, values, errors, durations, elapsed, where))
            return
        exc = future.exception()
        name = type(exc).__name__
        if name == "KilledWorker":
            batch.sink.put(Lost(batch.id, "crash", f"Dask gave up on it (KilledWorker: workers died while "
                                                  "running it; likely causes: out of memory, a segfault, "
                                                  f"os._exit): {exc}"))
        else:
            reason = "item" if len(batch.items) == 1 else "split"
            batch.sink.put(Lost(batch.id, reason, f"could not be sent to or run on Dask: {name}: {exc}"))

    def cancel(self, batches: list[Batch]) -> None:
        super().cancel(batches)
        with self._lock:
            futures = [self._futures.pop(b.id) for b in batches if b.id in self._futures]
        if futures:
            self._conn.client.cancel(futures)

    def close(self) -> None:
        close_all()
