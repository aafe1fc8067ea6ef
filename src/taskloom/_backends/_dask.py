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
import contextvars
import gc
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


def _run_parcel(fn: Any, parcel: list[list[Any]], per_item_timing: bool) -> list[tuple[Any, ...] | None]:
    """Runs on a Dask worker: several batches of a run that wants more at once than the cluster has
    threads (I/O), each on a thread of its own, after leaving the worker's thread pool
    (``distributed.secede``: the worker starts its next task at once). One result per batch, in order."""
    distributed: Any = importlib.import_module("distributed")
    distributed.secede()
    results: list[tuple[Any, ...] | None] = [None] * len(parcel)

    def run(i: int) -> None:
        results[i] = _run_batch(fn, parcel[i], per_item_timing)

    # A copy of this context each: the task's own (distributed.get_worker() works in every thread).
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(run, i), daemon=True,
                                name=f"taskloom-dask-{i}") for i in range(1, len(parcel))]
    for thread in threads:
        thread.start()
    run(0)
    for thread in threads:
        thread.join()
    return results


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
        _stop_half_built(exc, distributed.Client)
        failure = _without_frames(exc)
    # The half-built Client was held by the traceback's frames: collected now, here. Collected later,
    # at random, its __del__ could run in the thread starting another client's event loop and wait
    # for the lock distributed holds meanwhile: that start failed after 10 s (an AssertionError).
    gc.collect()
    hint = ""
    if address.startswith("tls://") and security is None:
        hint = (" (a tls:// scheduler needs certificates: taskloom.Dask(address=..., "
                "security=distributed.security.Security(tls_ca_file=..., tls_client_cert=..., "
                "tls_client_key=..., require_encryption=True)))")
    raise ConnectionError(f"could not connect to the Dask scheduler at {address}: {type(failure).__name__}: "
                          f"{failure}{hint}") from failure


def _stop_half_built(exc: BaseException, client_type: Any) -> None:
    """Stop the event-loop thread of the Client whose constructor raised ``exc``: distributed leaves
    it running (one thread and three file descriptors per failed connection)."""
    tb = exc.__traceback__
    while tb is not None:
        client: Any = tb.tb_frame.f_locals.get("self")
        if isinstance(client, client_type):
            with contextlib.suppress(Exception):
                client._loop_runner.stop()
            client.status = "closed"  # and its __del__ has nothing left to close (it would use the stopped loop)
            return
        tb = tb.tb_next


def _without_frames(exc: BaseException) -> BaseException:
    """``exc`` and the exceptions it was raised from, their tracebacks (and the objects their frames
    hold) let go."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        todo += [e.__cause__, e.__context__]
    return exc


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
    r"""One Dask task per batch; a run with ``workers`` above the cluster's thread count (I/O) sends
    its batches in parcels instead: one Dask task per worker for each burst of batches, each batch
    on a thread of its own there (``_run_parcel``). Results come back through one gatherer thread.

    ::

        run --submit--> [_scatter] --client.submit--> Dask ---> _done (Dask's callback thread)
              \--> _pending --> sender thread: parcels --/          |
                                                       gatherer thread: client.gather(all finished)
                                                                     --> Done / Lost --> run's sink
    """

    name = "dask"
    prefetch = 2

    def __init__(self, config: Dask, workers: int | None) -> None:
        self._config = config
        self._conn = _connection(config)
        nthreads = self._conn.client.nthreads()
        threads = max(1, int(sum(nthreads.values())))
        self.workers = workers or threads
        # More batches at once than the cluster has threads (I/O, ``workers=32``): each runs on a
        # thread of its own outside the workers' pools, and the run keeps exactly ``workers`` in
        # flight, all running.
        self._parcels = workers is not None and workers > threads
        self._hosts = max(1, len(nthreads))  # worker processes: parcels per burst
        if self._parcels:
            self.prefetch = 1
        self._lock = threading.Lock()
        # Per run: numpy arguments scattered once (id -> (array, future)); the run's Job is the key.
        self._scattered_per_run: weakref.WeakKeyDictionary[Job, dict[int, tuple[Any, Any]]] = (
            weakref.WeakKeyDictionary())
        self._futures: dict[int, Any] = {}  # batch id -> the future running it (a parcel's, for several)
        self._members: dict[Any, list[Batch]] = {}  # a future's key -> the batches it runs, in order
        self._pending: list[tuple[Batch, list[Any]]] = []  # batches for the sender thread to parcel
        self._sending = False  # the sender thread is running
        self._finished: list[Any] = []  # finished futures whose results are not fetched yet
        self._gathering = False  # the gatherer thread is running

    def prepare(self, job: Job) -> None:
        """A warm backend whose client gave up on a lost scheduler connects afresh for the new run
        (raising ``ConnectionError`` naming the address if the scheduler is still away)."""
        if self._conn.closed():
            self._conn = _connection(self._config)

    def submit(self, batch: Batch) -> None:
        conn = self._conn
        lost = conn.lost()
        if lost is not None:
            batch.sink.put(Lost(batch.id, "broken", lost))
            return
        try:
            items = self._scatter(batch)
            if not self._parcels:
                self._send([batch], [items])
        except Exception:
            lost = conn.lost()
            if lost is None:
                raise
            batch.sink.put(Lost(batch.id, "broken", lost))  # the scheduler went away while we scattered
            return
        if batch.timed:  # Dask tells no start time: the deadline runs from submission
            batch.sink.put(Started(batch.id, time.monotonic(), "dask"))
        if self._parcels:
            with self._lock:
                self._pending.append((batch, items))
                if self._sending:
                    return
                self._sending = True
            threading.Thread(target=self._send_parcels, name="taskloom-dask-send", daemon=True).start()

    def _send(self, batches: list[Batch], items: list[list[Any]]) -> None:
        """One Dask task for ``batches``: the batch itself, or a parcel of them."""
        conn = self._conn
        job, timing = batches[0].job, batches[0].per_item_timing
        if self._parcels:
            future = conn.client.submit(_run_parcel, job.fn, items, timing, pure=False)
        else:
            future = conn.client.submit(_run_batch, job.fn, items[0], timing, pure=False)
        with self._lock:
            for batch in batches:
                self._futures[batch.id] = future
            self._members[future.key] = batches
        future.add_done_callback(self._done)
        lost = conn.lost()
        if lost is not None:  # lost just now: the client may have cancelled its futures before this one
            for batch in batches:
                self._report(batch, Lost(batch.id, "broken", lost))

    def _send_parcels(self) -> None:
        """The sender thread: whatever batches wait go out, a burst of them as one parcel per worker
        (32 single-batch tasks, each started when the one before left the worker's pool, cost ~2 ms
        each on a worker; two parcels of 16 start at once)."""
        while True:
            with self._lock:
                pending, self._pending = [(b, i) for b, i in self._pending if not b.cancelled], []
                if not pending:
                    self._sending = False
                    return
            runs: dict[tuple[int, bool], list[tuple[Batch, list[Any]]]] = {}
            for batch, items in pending:  # a parcel holds batches of one run (one function)
                runs.setdefault((batch.job.id, batch.per_item_timing), []).append((batch, items))
            for burst in runs.values():
                n = min(len(burst), self._hosts)
                for k in range(n):
                    part = burst[k * len(burst) // n:(k + 1) * len(burst) // n]
                    try:
                        self._send([b for b, _ in part], [i for _, i in part])
                    except Exception as exc:  # nothing of it was submitted
                        lost = self._conn.lost()
                        for batch, _ in part:
                            batch.sink.put(Lost(batch.id, "broken", lost) if lost is not None else
                                           Lost(batch.id, "item" if len(batch.items) == 1 else "split",
                                                f"could not be sent to Dask: {type(exc).__name__}: {exc}"))

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

    def _done(self, future: Any) -> None:
        """Dask's callback thread: a future ended. A finished one's result is fetched by the
        gatherer, with every other finished one waiting (one round trip for them all: fetching
        each here, one after the other, cost ~3 ms a batch on loopback)."""
        finished = future.status == "finished"
        with self._lock:
            batches = self._members.get(future.key, [])
            if not any(self._futures.get(b.id) is future for b in batches):
                self._members.pop(future.key, None)
                return  # reported already (the scheduler was lost), or cancelled
            if finished:
                self._finished.append(future)
                if self._gathering:
                    return
                self._gathering = True
        if finished:
            threading.Thread(target=self._gather, name="taskloom-dask-gather", daemon=True).start()
        else:
            self._deliver(future, None)

    def _gather(self) -> None:
        """The gatherer thread: fetch the results of the finished futures, all that wait at once,
        until none is left."""
        while True:
            with self._lock:
                futures, self._finished = self._finished, []
                if not futures:
                    self._gathering = False
                    return
            try:
                results = self._conn.client.gather(futures)
            except Exception:  # one of them went wrong on the way: each on its own, to know which
                results = [None] * len(futures)
            for future, result in zip(futures, results, strict=True):
                self._deliver(future, result)

    def _deliver(self, future: Any, result: Any) -> None:
        """Report each batch of an ended future: from its fetched ``result``, or (None) from the future."""
        with self._lock:
            batches = self._members.pop(future.key, [])
        for pos, batch in enumerate(batches):
            if batch.id not in self._futures:
                continue
            if result is None:
                event = self._outcome(batch, future, pos)
            else:
                event = self._result(batch, result[pos] if self._parcels else result)
            self._report(batch, event)

    @staticmethod
    def _result(batch: Batch, result: tuple[Any, ...] | None) -> Done | Lost:
        if result is None:  # its thread in the parcel died without a result (a BaseException)
            return Lost(batch.id, "item" if len(batch.items) == 1 else "split", "the batch ended on the Dask "
                                                                                  "worker without a result")
        values, errs, durations, elapsed, where = result
        errors = {pos: ItemError(exc, tb, True) for pos, (exc, tb) in errs.items()} if errs else None
        return Done(batch.id, values, errors, durations, elapsed, where)

    def _outcome(self, batch: Batch, future: Any, pos: int) -> Lost | Done:
        """What an ended future means for its batch (the ``pos``-th of a parcel)."""
        status = future.status
        if status == "finished":
            try:
                result = future.result()
            except Exception as gather_error:  # the result was lost on its way back
                return self._lost_on_the_way(batch, gather_error)
            return self._result(batch, result[pos] if self._parcels else result)
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
            futures = {}
            for batch in batches:
                future = self._futures.pop(batch.id, None)
                if future is not None:
                    futures[future.key] = future
            # A parcel's task goes only when none of its batches is wanted any more.
            doomed = [f for key, f in futures.items()
                      if not any(b.id in self._futures for b in self._members.get(key, []))]
        if doomed and self._conn.lost() is None:  # (a client without its scheduler cancelled them all)
            with contextlib.suppress(Exception):  # the scheduler went away just now
                self._conn.client.cancel(doomed)

    def close(self) -> None:
        close_all()
