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
``KilledWorker``, which becomes ``WorkerCrashed`` here, after ``Dask(crash_retries=)`` more tries).

A lost scheduler (its process died, its host became unreachable) ends every batch in flight, and
every batch submitted while the client is without one, as ``Lost("broken")`` naming the
scheduler's address: the run fails at once instead of waiting for futures that will never end.
"""

from __future__ import annotations

import contextlib
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


def _run_batch(fn: Any, items: list[Any], per_item_timing: bool, leave_pool: bool = False) -> tuple[Any, ...]:
    """Runs on a Dask worker: the same loop as every other backend, errors made portable.

    ``leave_pool``: the run wants more batches at once than the cluster has threads (I/O): this one
    leaves the worker's thread pool first (``distributed.secede``), so the worker starts its next.
    """
    from ._worker import _portable_exception

    if leave_pool:
        distributed: Any = importlib.import_module("distributed")
        distributed.secede()

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


_SPREAD = True

#: the reason Dask's client gives the futures it cancels when it loses the scheduler
_SCHEDULER_LOST = "scheduler-connection-lost"


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
        if config.threads_per_worker is not None and (address is not None or config.client is not None):
            raise ValueError(f"Dask(threads_per_worker=) sizes taskloom's embedded cluster, but {ADDRESS_ENV} names "
                             f"a running one ({address}): its workers set their own (dask worker --nthreads)")
        if config.client is not None:
            self.client: Any = config.client
        elif address is not None:
            self.client = _connect(distributed, address, config.security)
        else:
            if config.security is not None:
                raise ValueError("Dask(security=) is for a cluster reached by address (tls://...); taskloom's "
                                 "embedded cluster listens on this machine's loopback only")
            self.main_hidden = _daskmain.hide_main_if_unguarded()
            # dashboard on a free port: two clusters (or a user's) must not fight over :8787.
            self.cluster = distributed.LocalCluster(n_workers=usable_cpus(),
                                                    threads_per_worker=config.threads_per_worker or 1,
                                                    processes=True, dashboard_address=":0",
                                                    silence_logs=logging.ERROR)
            self.client = distributed.Client(self.cluster, set_as_default=False)
        scheduler = getattr(self.client, "scheduler", None)
        #: the scheduler's address, for errors
        self.where: str = str(getattr(scheduler, "address", None) or address or "the Dask scheduler")

    def threads(self) -> int:
        return max(1, int(sum(self.client.nthreads().values())))

    def lost(self) -> str | None:
        """Why this client cannot take work now; None while it is connected."""
        status = self.client.status
        if status == "running":
            return None
        if status == "connecting":
            return (f"lost the connection to the Dask scheduler at {self.where} (its process stopped or its host "
                    "is unreachable); Dask's client is trying to reconnect")
        return f"the Dask client of the scheduler at {self.where} is {status}"

    def closed(self) -> bool:
        """A client of ours that gave up reconnecting: a new run needs a new one."""
        return self.owns_client and self.client.status in ("closing", "closed")

    def close(self) -> None:
        if self.owns_client:
            # Bounded: a client whose scheduler is gone would otherwise wait out its own timeout twice.
            with contextlib.suppress(Exception):
                self.client.close(timeout=CLOSE_TIMEOUT)
        if self.cluster is not None:
            self.cluster.close()


#: seconds ``close`` waits for a client to say goodbye to its scheduler
CLOSE_TIMEOUT = 10


def _connect(distributed: Any, address: str, security: Any) -> Any:
    """A client of the scheduler at ``address``; a failure says which address, and what to check."""
    try:
        return distributed.Client(address, security=security, set_as_default=False)
    except (OSError, TypeError, ValueError) as exc:
        hint = ""
        if address.startswith("tls://") and security is None:
            hint = (" (a tls:// scheduler needs certificates: taskloom.Dask(address=..., "
                    "security=distributed.security.Security(tls_ca_file=..., tls_client_cert=..., "
                    "tls_client_key=..., require_encryption=True)))")
        raise ConnectionError(f"could not connect to the Dask scheduler at {address}: {type(exc).__name__}: "
                              f"{exc}{hint}") from exc


_connections: dict[Any, _Connection] = {}
_connections_lock = threading.Lock()


def _connection(config: Dask) -> _Connection:
    key = (config.address or os.environ.get(ADDRESS_ENV), id(config.client) if config.client is not None else None,
           config.security_key(), config.threads_per_worker)
    with _connections_lock:
        conn = _connections.get(key)
        if conn is not None and conn.closed():  # gave up on a lost scheduler: try afresh
            del _connections[key]
            conn = None
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
        self._config = config
        self._conn = _connection(config)
        threads = self._conn.threads()
        self.workers = workers or threads
        # More batches at once than the cluster has threads (I/O, ``workers=32``): each leaves its
        # worker's thread pool, and the run keeps exactly ``workers`` in flight, all running.
        self._leave_pool = workers is not None and workers > threads
        self._spread: dict[str, Any] = {}
        if self._leave_pool:
            self.prefetch = 1
            self._spread_over_workers()
        self._lock = threading.Lock()
        # Per run: numpy arguments scattered once (id -> (array, future)); the run's Job is the key.
        self._scattered_per_run: weakref.WeakKeyDictionary[Job, dict[int, tuple[Any, Any]]] = (
            weakref.WeakKeyDictionary())
        self._futures: dict[int, Any] = {}
        self._finished: list[tuple[Batch, Any]] = []  # finished futures whose results are not fetched yet
        self._gathering = False  # a gatherer thread is fetching them

    def prepare(self, job: Job) -> None:
        """A warm backend whose client gave up on a lost scheduler connects afresh for the new run
        (raising ``ConnectionError`` naming the address if the scheduler is still away)."""
        if self._conn.closed():
            self._conn = _connection(self._config)
        if self._leave_pool:
            self._spread_over_workers()

    def _spread_over_workers(self) -> None:
        """Batches that leave the thread pool go to a worker when submitted, not queued by the scheduler.

        Dask queues a large group of tasks without dependencies on the scheduler and hands a worker
        its next one only when a thread of it frees up: here, one round trip per batch, when the batch
        before it left the pool. A loose restriction to the workers there are (any other may run it
        too) takes the tasks out of that queue: the worker starts the next itself.
        """
        if _SPREAD:
            self._spread = {"workers": list(self._conn.client.nthreads()), "allow_other_workers": True}

    def submit(self, batch: Batch) -> None:
        conn = self._conn
        lost = conn.lost()
        if lost is not None:
            batch.sink.put(Lost(batch.id, "broken", lost))
            return
        try:
            items = self._scatter(batch)
            future = conn.client.submit(_run_batch, batch.job.fn, items, batch.per_item_timing, self._leave_pool,
                                        pure=False, **self._spread)
        except Exception:
            lost = conn.lost()
            if lost is None:
                raise
            batch.sink.put(Lost(batch.id, "broken", lost))  # the scheduler went away while we scattered
            return
        with self._lock:
            self._futures[batch.id] = future
        if batch.timed:  # Dask tells no start time: the deadline runs from submission
            batch.sink.put(Started(batch.id, time.monotonic(), "dask"))
        future.add_done_callback(lambda f: self._done(batch, f))
        lost = conn.lost()
        if lost is not None:  # lost just now: the client may have cancelled its futures before this one
            self._report(batch, Lost(batch.id, "broken", lost))

    def _report(self, batch: Batch, event: Lost | Done) -> None:
        """Send the batch's one final event, unless it was sent (or the batch cancelled) already."""
        with self._lock:
            mine = self._futures.pop(batch.id, None) is not None
        if mine and not batch.cancelled:
            batch.sink.put(event)

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
        """Dask's callback thread: a future ended. A finished one's result is fetched by the
        gatherer, with every other finished one waiting (one round trip for them all: fetching
        each here, one after the other, cost ~3 ms a batch on loopback)."""
        finished = future.status == "finished"
        with self._lock:
            if batch.id not in self._futures:
                return  # reported already (the scheduler was lost), or cancelled
            if finished:
                self._finished.append((batch, future))
                if self._gathering:
                    return
                self._gathering = True
        if finished:
            threading.Thread(target=self._gather, name="taskloom-dask-gather", daemon=True).start()
        else:
            self._report(batch, self._outcome(batch, future))

    def _gather(self) -> None:
        """Fetch the results of finished futures, all that are waiting at once, until none is left."""
        while True:
            with self._lock:
                pairs, self._finished = [(b, f) for b, f in self._finished if not b.cancelled], []
                if not pairs:
                    self._gathering = False
                    return
            try:
                results = self._conn.client.gather([f for _, f in pairs])
            except Exception:  # one of them went wrong on the way: each on its own, to know which
                results = None
            for i, (batch, future) in enumerate(pairs):
                event = self._outcome(batch, future) if results is None else self._result(batch, results[i])
                self._report(batch, event)

    @staticmethod
    def _result(batch: Batch, result: tuple[Any, ...]) -> Done:
        values, errs, durations, elapsed, where = result
        errors = {pos: ItemError(exc, tb, True) for pos, (exc, tb) in errs.items()} if errs else None
        return Done(batch.id, values, errors, durations, elapsed, where)

    def _outcome(self, batch: Batch, future: Any) -> Lost | Done:
        """What an ended future means for its batch."""
        status = future.status
        if status == "finished":
            try:
                result = future.result()
            except Exception as gather_error:  # the result was lost on its way back
                return self._lost_on_the_way(batch, gather_error)
            return self._result(batch, result)
        if status == "cancelled":
            cancelled = getattr(getattr(future, "_state", None), "exception", None)
            lost = self._conn.lost()
            if getattr(cancelled, "reason", None) == _SCHEDULER_LOST or lost is not None:
                return Lost(batch.id, "broken", lost or f"lost the connection to the Dask scheduler at "
                                                        f"{self._conn.where}")
            # not by us: Dask dropped it (e.g. an input it needed was released)
            return Lost(batch.id, "crash", "Dask cancelled the task (not taskloom): an input it needed was released, "
                                           "or the client lost the scheduler")
        exc = future.exception()
        name = type(exc).__name__
        if name == "KilledWorker":
            return Lost(batch.id, "crash", f"Dask gave up on it (KilledWorker: workers died while running it; likely "
                                           f"causes: out of memory, a segfault, os._exit, a host lost): {exc}")
        reason = "item" if len(batch.items) == 1 else "split"
        return Lost(batch.id, reason, f"could not be sent to or run on Dask: {name}: {exc}")

    def _lost_on_the_way(self, batch: Batch, exc: BaseException) -> Lost:
        lost = self._conn.lost()
        if lost is not None:
            return Lost(batch.id, "broken", lost)
        return Lost(batch.id, "crash", f"its result was lost on the way back from Dask (the worker holding it "
                                       f"died?): {type(exc).__name__}: {exc}")

    def cancel(self, batches: list[Batch]) -> None:
        super().cancel(batches)
        with self._lock:
            futures = [self._futures.pop(b.id) for b in batches if b.id in self._futures]
        if futures and self._conn.lost() is None:  # (a client without its scheduler cancelled them all)
            with contextlib.suppress(Exception):  # the scheduler went away just now
                self._conn.client.cancel(futures)

    def close(self) -> None:
        close_all()
