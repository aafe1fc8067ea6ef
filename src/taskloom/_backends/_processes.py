"""The process backend: taskloom's own pool of worker processes.

Not a wrapper over ``ProcessPoolExecutor``: the pool must know which worker runs which batch, to
kill exactly that worker on a timeout or a cancel, to notice a death at once through its
sentinel, and to retry or report the batch it was running. Data flow::

    scheduler thread            manager thread ("taskloom-pool")            worker process
    ----------------            --------------------------------            --------------
    submit(batch):              loop:
      pickle items  ──pending──>  start workers on demand
                                  dispatch: send to a ready worker  ──pipe──>  receiver ─> main
                                  wait(pipes, sentinels, wake pipe)
    sink.get()  <──Done/Lost/──   result  -> unpickle -> batch.sink   <──pipe──  results
                   Started        sentinel -> Lost("crash") for the running batch,
                                              re-queue what it had not started
                                  cancel/abort -> SIGTERM, SIGKILL after a grace

The manager thread alone owns the worker table; other threads only append to ``pending`` (under
the lock) and write a byte to the wake pipe. Each worker holds at most ``DEPTH`` batches: one
running and one queued behind it, so it never waits for the parent between two batches.

Workers start from taskloom's own fork server (``_forkserver``; the default "forkserver" start
method), which never runs the caller's ``__main__``; "fork" and "spawn" use multiprocessing's own
process start. Whatever fails in the manager thread reaches the runs: a worker that cannot be
started counts as a failed start (the pool gives up only after several in a row, see
``_start_failed``), and any other error fails the batches it concerns rather than ending the
thread, so a run never waits for an event that cannot come.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import mmap
import multiprocessing
import multiprocessing.connection
import os
import pickle
import threading
import time
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .._errors import SerializationError
from .._modes import Processes, parse_size
from .._system import IN_WORKER_ENV, bounded_wait, usable_cpus
from . import _forkserver, _mainpickle
from . import _worker as W
from ._base import Backend, Batch, CpuTime, Done, ItemError, Job, Lost, Started

DEPTH = 2  # batches sent ahead to one worker: one running, one waiting (only short ones, see _short_next)
SEND_AHEAD_BELOW = 0.005  # seconds: a job whose batches run shorter than this gets a batch queued ahead
KILL_GRACE = 0.5  # seconds between SIGTERM and SIGKILL for a worker we stop
START_FAILURES_LIMIT = 3  # consecutive workers that exit by themselves before they are ready: broken
KILLED_STARTS_LIMIT = 10  # consecutive workers killed by a signal before they are ready: broken
MANAGER_ERRORS_LIMIT = 3  # consecutive failed rounds of the manager thread before it fails every batch
log = logging.getLogger("taskloom")


class _Worker:
    __slots__ = ("conn", "idle_since", "jobs", "outstanding", "pid", "proc", "ready", "retiring", "taken")

    def __init__(self, proc: Any, conn: Connection, taken: Any = None) -> None:
        self.proc = proc
        self.conn = conn
        self.taken = taken  # the worker's W.TAKEN page (fork server workers), or None
        self.pid: int = proc.pid
        self.ready = False
        self.retiring = False
        self.outstanding: collections.deque[Batch] = collections.deque()
        self.jobs: set[int] = set()  # job ids whose function this worker has
        self.idle_since = time.monotonic()


@dataclass
class _JobState:
    """What the pool keeps per run: the function's message (pickled once), its batch time (EWMA)."""

    message: bytes
    batch_seconds: float | None = None


class ProcessBackend(Backend):
    name = "processes"
    prefetch = 2

    def __init__(self, config: Processes, workers: int) -> None:
        self.config = config
        self.workers = workers
        self._start_method = config.resolved_start_method
        # "forkserver" is ours (no __main__ re-run); "fork" and "spawn" are multiprocessing's.
        self._ctx: Any = (None if self._start_method == "forkserver"
                          else multiprocessing.get_context(self._start_method))
        self._lock = threading.Lock()
        self._jobs: weakref.WeakKeyDictionary[Job, _JobState] = weakref.WeakKeyDictionary()
        self._pending: collections.deque[Batch] = collections.deque()
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._wake_pending = False
        self._workers: list[_Worker] = []
        self._dying: dict[Any, tuple[_Worker, float]] = {}  # sentinel -> (worker, SIGKILL deadline)
        self._closed = False
        self._start_exits = 0  # workers that ended by themselves before ready, in a row
        self._start_kills = 0  # workers killed by a signal before ready, in a row
        self._spawn_after = 0.0  # after a failed start: no new start before this time (backoff)
        self._untaken: collections.Counter[int] = collections.Counter()  # batch id -> deaths before taken
        self._thread: threading.Thread | None = None
        self._worker_config = self._make_worker_config()
        # What a fork-server worker starts from, pickled once ("fork"/"spawn": multiprocessing's job).
        self._payload = W.dumps(self._worker_config) if self._ctx is None else b""
        if self._ctx is None:
            # Here, in the caller's thread, before the pool's own thread exists: a single-threaded
            # caller can fork the server (milliseconds); otherwise it boots while the run starts.
            with contextlib.suppress(OSError):  # the first worker start tries again, and reports it
                _forkserver.prestart()

    # -- contract (any thread) ----------------------------------------------------------------
    def prepare(self, job: Job) -> None:
        if job not in self._jobs:
            state = _JobState(W.OP_FUNCTION + W.Q.pack(job.id) + pickle_function(job))
            with self._lock:
                self._jobs.setdefault(job, state)

    def submit(self, batch: Batch) -> None:
        try:
            payload = _mainpickle.dumps(batch.items)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            reason = "item" if len(batch.items) == 1 else "split"
            batch.sink.put(Lost(batch.id, reason, f"could not be pickled: {detail}"))
            return
        flags = ((W.FLAG_TIMED if batch.timed else 0) | (W.FLAG_PER_ITEM if batch.per_item_timing else 0)
                 | (W.FLAG_CPU if batch.measure_cpu else 0))
        if len(batch.items) == 1:
            flags |= W.FLAG_SINGLE
        batch.payload = W.OP_BATCH + W.BATCH.pack(batch.id, batch.job.id, flags) + payload
        with self._lock:
            if self._closed:
                batch.sink.put(Lost(batch.id, "broken", "the process pool was shut down"))
                return
            self._pending.append(batch)
            self._ensure_thread()
            self._wake_locked()

    def cancel(self, batches: list[Batch]) -> None:
        super().cancel(batches)
        with self._lock:
            self._wake_locked()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
            self._wake_locked()
        if thread is not None:
            thread.join(timeout=10)

    def worker_pids(self) -> list[int]:
        """Pids of the live workers (for tests and statistics)."""
        return [w.pid for w in list(self._workers)]

    # -- helpers ------------------------------------------------------------------------------
    def _initializer(self, collector: W.FdCollector) -> bytes | None:
        """The initializer and its arguments, pickled once for the pool; file descriptors they carry
        (a multiprocessing Queue or Pipe) are collected to travel beside them."""
        cfg = self.config
        if cfg.initializer is None:
            return None
        from multiprocessing import context

        context.set_spawning_popen(collector)  # type: ignore[arg-type]  # duck-typed: DupFd only
        try:
            return _mainpickle.dumps_by_value((cfg.initializer, cfg.initargs), multiprocessing_reducers=True)
        except Exception as exc:
            raise SerializationError(
                f"Processes(initializer={cfg.initializer!r}) could not be pickled with its initargs: "
                f"{type(exc).__name__}: {exc}",
                what="function",
            ) from exc
        finally:
            context.set_spawning_popen(None)

    def _make_worker_config(self) -> W.WorkerConfig:
        cfg = self.config
        # Pickled now, in the caller, so that what cannot be pickled fails at once.
        collector = W.FdCollector()
        init = self._initializer(collector) if self._ctx is None else self._initializer_alone()
        # The descriptors initargs carry (a Queue's pipe) are the parent's own and stay open while
        # the user's objects live: each worker the fork server starts gets them beside the payload.
        self._init_fds = collector.fds
        # Cap native thread pools (BLAS, OpenMP) to this worker's share of the CPUs, so that
        # numpy in N workers does not start N x cpus threads. A user's explicit setting wins.
        share = str(max(1, usable_cpus() // max(1, self.workers)))
        env = {IN_WORKER_ENV: "1"}
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
            env[var] = os.environ.get(var, share)
        # Workers ship log records at the level the parent's root logger has now: below it the
        # parent would drop them anyway, so they need not cross the pipe.
        config = W.WorkerConfig(init, cfg.max_tasks_per_worker, parse_size(cfg.max_memory, "max_memory"),
                                parse_size(cfg.max_result_size, "max_result_size"), env,
                                logging.getLogger().getEffectiveLevel(), os.getpid())
        if self._ctx is not None and cfg.initializer is not None:
            config.initargs = cfg.initargs  # passed by multiprocessing itself, as ProcessPoolExecutor does
        config.authkey = bytes(multiprocessing.current_process().authkey)
        return config

    def _initializer_alone(self) -> bytes | None:
        """"fork"/"spawn": the initializer pickled by value, its arguments left to multiprocessing
        (a fork inherits them; spawn pickles them while it starts the worker, Queues included)."""
        cfg = self.config
        if cfg.initializer is None:
            return None
        try:
            return _mainpickle.dumps_by_value(cfg.initializer)
        except Exception as exc:
            raise SerializationError(
                f"Processes(initializer={cfg.initializer!r}) could not be pickled: {type(exc).__name__}: {exc}",
                what="function",
            ) from exc

    def _wake_locked(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            self._wake_w.send_bytes(b"!")

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._manage, name="taskloom-pool", daemon=True)
            self._thread.start()

    # -- the manager thread ---------------------------------------------------------------------
    def _manage(self) -> None:
        errors = 0
        try:
            while True:
                with self._lock:
                    closed = self._closed
                if closed:
                    break
                try:
                    self._reap_cancelled()
                    self._spawn_as_needed()
                    self._dispatch()
                    self._loop_once()
                    errors = 0
                except Exception as exc:  # never die silently: the runs would wait for ever
                    errors += 1
                    self._on_manager_error(exc, errors)
        finally:
            self._shutdown_workers()

    def _on_manager_error(self, exc: Exception, errors: int) -> None:
        log.error("taskloom: the process pool's manager thread failed (%d in a row)", errors, exc_info=exc)
        if errors < MANAGER_ERRORS_LIMIT:
            time.sleep(0.01 * errors)  # no busy loop if the same step fails again
            return
        # It keeps failing: end every batch it holds with the cause, kill the workers, start over.
        cause = f"the process pool failed: {type(exc).__name__}: {exc}"
        for w in list(self._workers):
            for batch in w.outstanding:
                batch.sink.put(Lost(batch.id, "broken", cause))
            w.outstanding.clear()
            self._kill(w)
        self._fail_pending(cause)
        time.sleep(0.05)

    def _loop_once(self) -> None:
        handles: list[Any] = [self._wake_r]
        for w in self._workers:
            handles.append(w.conn)
            handles.append(w.proc.sentinel)
        handles.extend(self._dying)
        # bounded_wait: without a GIL, results this thread unpickled are freed only when it runs.
        timeout = bounded_wait(self._next_timer())
        ready = multiprocessing.connection.wait(handles, timeout)
        now = time.monotonic()
        ready_set = set(ready)
        if self._wake_r in ready_set:
            with self._lock:
                self._wake_pending = False
                while self._wake_r.poll():
                    self._wake_r.recv_bytes()
        for w in list(self._workers):
            if w.conn in ready_set:
                self._read(w)
        for w in list(self._workers):
            if w.proc.sentinel in ready_set:
                self._on_death(w)
        for sentinel, (w, deadline) in list(self._dying.items()):
            if sentinel in ready_set:
                w.proc.join(0)
                _reap_segments(w.pid)
                with contextlib.suppress(OSError):
                    w.conn.close()
                _close_process(w.proc)
                del self._dying[sentinel]
            elif now >= deadline:
                w.proc.kill()
                self._dying[sentinel] = (w, float("inf"))
        self._retire_idle(now)

    def _next_timer(self) -> float | None:
        """Seconds until the next SIGKILL deadline, idle retirement or delayed start, or None."""
        deadlines = [d for _, d in self._dying.values() if d != float("inf")]
        deadlines += [w.idle_since + self.config.idle_timeout
                      for w in self._workers if w.ready and not w.outstanding and not w.retiring]
        if self._spawn_after:
            deadlines.append(self._spawn_after)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _spawn_as_needed(self) -> None:
        with self._lock:
            pending = len(self._pending)
        if not pending:
            return
        # Start the whole pool as soon as there is work: a run that has one batch now has more
        # a moment later, and a worker that starts late makes the first results late. Starting
        # one costs a few milliseconds with the forkserver; idle ones retire after idle_timeout.
        if self._spawn_after:
            if time.monotonic() < self._spawn_after:
                return
            self._spawn_after = 0.0
        live = sum(1 for w in self._workers if not w.retiring)
        for _ in range(self.workers - live):
            try:
                self._spawn()
            except Exception as exc:
                self._start_failed(f"a worker process could not be started: {type(exc).__name__}: {exc}",
                                   killed=False)
                return

    def _spawn(self) -> None:
        parent_conn, child_conn = multiprocessing.Pipe(duplex=True)
        taken = None
        try:
            if self._ctx is None:
                page = os.memfd_create("taskloom-taken", os.MFD_CLOEXEC)
                try:
                    os.ftruncate(page, W.TAKEN.size)
                    taken = mmap.mmap(page, W.TAKEN.size)
                    proc: Any = _forkserver.start_worker(child_conn.fileno(), self._payload, [page, *self._init_fds])
                finally:
                    os.close(page)
            else:
                proc = self._ctx.Process(target=W.main, args=(child_conn, self._worker_config),
                                         name="taskloom-worker", daemon=False)
                proc.start()
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()
        self._workers.append(_Worker(proc, parent_conn, taken))

    def _start_failed(self, cause: str, *, killed: bool) -> None:
        """A worker could not start, or died before it was ready: no task was lost.

        Starts are retried with a growing pause. The pool reports itself unable to start only
        when starts keep failing with no worker becoming ready in between: START_FAILURES_LIMIT
        workers in a row that ended by themselves (an import error, an initializer that exits),
        or KILLED_STARTS_LIMIT in a row killed by a signal (someone killing workers, or the
        out-of-memory killer at every start).
        """
        if killed:
            self._start_kills += 1
        else:
            self._start_exits += 1
        failures = self._start_kills + self._start_exits
        self._spawn_after = time.monotonic() + min(1.0, 0.01 * 2 ** (failures - 1))
        if self._start_exits >= START_FAILURES_LIMIT or self._start_kills >= KILLED_STARTS_LIMIT:
            self._start_exits = self._start_kills = 0
            self._fail_pending(f"{failures} worker processes in a row failed to start; the last: {cause}")

    def _dispatch(self) -> None:
        """Deal batches round-robin: every ready worker gets one before any gets a second.

        Filling one worker to DEPTH first would queue a second long task behind a long one while
        another worker sits idle (two 0.3 s tasks then took 0.6 s instead of 0.3 s).
        """
        for depth in range(DEPTH):
            for w in self._workers:
                if not w.ready or w.retiring or len(w.outstanding) > depth:
                    continue
                if depth > 0 and not self._short_next():
                    return
                batch = self._pop_pending()
                if batch is None:
                    return
                try:
                    if batch.job.id not in w.jobs:
                        w.conn.send_bytes(self._jobs[batch.job].message)
                        w.jobs.add(batch.job.id)
                    w.conn.send_bytes(batch.payload)
                except OSError:
                    # The worker died under us: its sentinel reports it; this batch never left.
                    with self._lock:
                        self._pending.appendleft(batch)
                    continue
                w.outstanding.append(batch)

    def _short_next(self) -> bool:
        """Is the next batch known to be short? Only then is it worth queueing behind another.

        A batch sent ahead waits in that worker's pipe; if the batch before it is long, another
        worker may go idle meanwhile while it cannot take it. Sending ahead saves one round trip
        (~0.1 ms), which only matters when batches are that short.
        """
        with self._lock:
            batch = self._pending[0] if self._pending else None
        if batch is None:
            return False
        state = self._jobs.get(batch.job)
        seconds = state.batch_seconds if state is not None else None
        return seconds is not None and seconds < SEND_AHEAD_BELOW

    def _pop_pending(self) -> Batch | None:
        with self._lock:
            while self._pending:
                batch = self._pending.popleft()
                if not batch.cancelled:
                    return batch
            return None

    def _reap_cancelled(self) -> None:
        """Kill workers whose running batch was cancelled or aborted; unsend the waiting ones."""
        for w in list(self._workers):
            if not w.outstanding:
                continue
            if w.outstanding[0].cancelled:
                self._kill(w)
                continue
            for batch in list(w.outstanding)[1:]:
                if batch.cancelled:
                    w.outstanding.remove(batch)
                    with contextlib.suppress(OSError):
                        w.conn.send_bytes(W.OP_CANCEL + W.Q.pack(batch.id))

    def _kill(self, w: _Worker) -> None:
        """Stop a worker now: SIGTERM, SIGKILL after a grace; re-queue what it had not started."""
        self._workers.remove(w)
        with contextlib.suppress(OSError):
            w.proc.terminate()
        self._dying[w.proc.sentinel] = (w, time.monotonic() + KILL_GRACE)
        waiting = list(w.outstanding)[1:]
        w.outstanding.clear()
        self._requeue(waiting)

    def _requeue(self, batches: list[Batch]) -> None:
        with self._lock:
            for batch in reversed(batches):
                if not batch.cancelled:
                    self._pending.appendleft(batch)

    def _read(self, w: _Worker) -> None:
        """Drain every message this worker has sent."""
        conn = w.conn
        try:
            while conn.poll():
                msg = conn.recv_bytes()
                self._handle(w, msg)
                if w not in self._workers:
                    return
        except (EOFError, OSError):
            pass  # it died; the sentinel tells the rest

    def _handle(self, w: _Worker, msg: bytes) -> None:
        op = msg[:1]
        if op == W.OP_RESULT:
            batch_id, elapsed, *cpu = W.RESULT.unpack_from(msg, 1)
            batch = self._pop_outstanding(w, batch_id)
            if batch is None:
                return  # cancelled meanwhile: nobody wants it
            if self._untaken:
                self._untaken.pop(batch_id, None)
            if not w.outstanding:
                w.idle_since = time.monotonic()
            state = self._jobs.get(batch.job)
            if state is not None:
                previous = state.batch_seconds
                state.batch_seconds = elapsed if previous is None else 0.5 * previous + 0.5 * elapsed
            try:
                values, errs, durations = pickle.loads(memoryview(msg)[1 + W.RESULT.size:])
            except BaseException as exc:
                reason = "result" if len(batch.items) == 1 else "split"
                batch.sink.put(Lost(batch.id, reason,
                                    f"the result could not be unpickled in the parent: {type(exc).__name__}: {exc}",
                                    w.pid))
                return
            errors = None
            if errs:
                errors = {pos: ItemError(exc, tb, True) for pos, (exc, tb) in errs.items()}
            batch.sink.put(Done(batch.id, values, errors, durations, elapsed, str(w.pid),
                                cpu=None if cpu[0] < 0 else CpuTime(*cpu)))
        elif op == W.OP_STARTED:
            (batch_id,) = W.Q.unpack_from(msg, 1)
            for batch in w.outstanding:
                if batch.id == batch_id:
                    batch.sink.put(Started(batch_id, time.monotonic(), str(w.pid)))
                    break
        elif op == W.OP_LOG:
            _relay_log(msg)
        elif op == W.OP_READY:
            w.ready = True
            self._start_exits = self._start_kills = 0
            w.idle_since = time.monotonic()
        elif op == W.OP_LOST:
            (batch_id,) = W.Q.unpack_from(msg, 1)
            code = msg[1 + W.Q.size:2 + W.Q.size]
            detail = msg[2 + W.Q.size:].decode("utf-8", "replace")
            batch = self._pop_outstanding(w, batch_id)
            if batch is not None:
                reason = {W.LOST_ITEM: "item", W.LOST_FUNCTION: "function"}.get(code, "split")
                prefix = "could not be unpickled in the worker: " if reason != "function" else ""
                batch.sink.put(Lost(batch.id, reason, prefix + detail, w.pid))
        elif op == W.OP_RETIRE:
            w.retiring = True
            waiting = list(w.outstanding)
            w.outstanding.clear()
            self._requeue(waiting)
        elif op == W.OP_INIT_FAILED:
            detail = msg[1:].decode("utf-8", "replace")
            self._fail_pending(
                "the worker's initializer raised, so no worker could start:\n" + detail
            )

    def _pop_outstanding(self, w: _Worker, batch_id: int) -> Batch | None:
        for batch in w.outstanding:
            if batch.id == batch_id:
                w.outstanding.remove(batch)
                return batch
        return None

    def _on_death(self, w: _Worker) -> None:
        # The sentinel fired, so it is exiting: wait the moment it takes to be reaped, or a
        # multiprocessing child's exit code is not known yet ("exit status unknown").
        w.proc.join(1.0)
        _reap_segments(w.pid)
        self._read(w)  # results it sent just before dying still count
        if w in self._workers:
            self._workers.remove(w)
        with contextlib.suppress(OSError):
            w.conn.close()
        exitcode = w.proc.exitcode
        _close_process(w.proc)
        if w.retiring:
            return
        if not w.ready:
            hint = ""
            if self._start_method == "spawn" and exitcode == 1:
                hint = (" With the 'spawn' start method each worker imports your main module again: if "
                        "your script calls taskloom at module level, put that code under "
                        "`if __name__ == '__main__':`, or use the default start method")
            self._start_failed(f"{describe_start_exit(exitcode)}.{hint}", killed=exitcode is not None and exitcode < 0)
            return
        if not w.outstanding:
            return  # died between tasks (e.g. killed while idle): nothing was lost
        running = w.outstanding[0]
        if w.taken is not None and W.TAKEN.unpack_from(w.taken)[0] not in (running.id, -running.job.id):
            # It died before it took this batch (killed as the batch was sent): nothing ran, so
            # it goes out again uncounted - unless that keeps happening (a batch too large to
            # receive, say), which is then a crash like any other.
            self._untaken[running.id] += 1
            if self._untaken[running.id] < 3:
                waiting = list(w.outstanding)
                w.outstanding.clear()
                self._requeue(waiting)
                return
        self._untaken.pop(running.id, None)
        w.outstanding.popleft()
        waiting = list(w.outstanding)
        w.outstanding.clear()
        self._requeue(waiting)
        running.sink.put(Lost(running.id, "crash", describe_exit(exitcode), w.pid, exitcode))

    def _fail_pending(self, detail: str) -> None:
        with self._lock:
            batches = list(self._pending)
            self._pending.clear()
        for batch in batches:
            batch.sink.put(Lost(batch.id, "broken", detail))

    def _retire_idle(self, now: float) -> None:
        for w in list(self._workers):
            if w.ready and not w.outstanding and now - w.idle_since >= self.config.idle_timeout:
                with self._lock:
                    if self._pending:
                        return
                w.retiring = True
                with contextlib.suppress(OSError):
                    w.conn.send_bytes(W.OP_STOP)

    def _shutdown_workers(self) -> None:
        """Stop every worker: idle ones are asked, busy ones terminated, stragglers killed."""
        workers = list(self._workers)
        self._workers.clear()
        for w in workers:
            if w.outstanding or not w.ready:
                with contextlib.suppress(OSError):
                    w.proc.terminate()
            else:
                with contextlib.suppress(OSError):
                    w.conn.send_bytes(W.OP_STOP)
            for batch in w.outstanding:
                batch.sink.put(Lost(batch.id, "broken", "the process pool was shut down"))
        self._fail_pending("the process pool was shut down")
        deadline = time.monotonic() + 2.0
        everyone = workers + [w for w, _ in self._dying.values()]
        for w in everyone:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.exitcode is None:
                w.proc.kill()
                w.proc.join(1.0)
            with contextlib.suppress(OSError):
                w.conn.close()
            _close_process(w.proc)
        self._dying.clear()
        for conn in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                conn.close()


def _close_process(proc: Any) -> None:
    """Release a finished worker's handles (its sentinel): a long-lived pool must not leak them."""
    with contextlib.suppress(ValueError, OSError):  # ValueError: a multiprocessing child still running
        proc.close()


def _reap_segments(pid: int) -> None:
    """Unlink shared memory a dead worker created (its SharedArrays): it cannot do it any more."""
    from .. import _shared

    with contextlib.suppress(OSError):  # best effort: the resource tracker still cleans up at the end
        _shared.reap(pid)


def _relay_log(msg: bytes) -> None:
    """A worker's log record, handed to the parent's logger of the same name."""
    try:
        record = logging.makeLogRecord(pickle.loads(memoryview(msg)[1:]))
    except Exception:  # a garbled record must not take the pool down
        return
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)  # record.process is the worker's pid


def pickle_function(job: Job) -> bytes:
    """The job's function pickled (by reference when importable, else by value with cloudpickle),
    or a SerializationError that says why not."""
    try:
        data: bytes = _mainpickle.dumps(job.fn)
    except Exception as exc:
        raise SerializationError(
            f"the function {job.name} cannot be sent to worker processes: it could not be "
            f"pickled ({type(exc).__name__}: {exc}). Functions, lambdas and closures travel with "
            "cloudpickle, but what they capture must pickle too (locks, open files, sockets and "
            "database connections do not): create such objects inside the task or in "
            "Processes(initializer=...), or use mode='threads'",
            what="function",
        ) from exc
    return data


def describe_start_exit(exitcode: int | None) -> str:
    """Say how a worker ended before it was ready: no task of yours ran in it yet."""
    if exitcode is None:
        return "a worker disappeared before it was ready (exit status unknown)"
    if exitcode < 0:
        return describe_exit(exitcode).replace("the worker was killed", "a worker was killed before it was ready", 1)
    return (f"a worker exited with code {exitcode} before it was ready: in Processes(initializer=...), or "
            "while importing what the task needs (its output above says why)")


def describe_exit(exitcode: int | None) -> str:
    """Say how a worker ended and what usually causes it."""
    import signal

    if exitcode is None:
        return "the worker disappeared (exit status unknown)"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        causes = {
            "SIGKILL": "most often the out-of-memory killer (check `dmesg`), or another process killed it",
            "SIGSEGV": "a segmentation fault, usually in a C extension",
            "SIGBUS": "a bus error, usually in a C extension or a memory-mapped file",
            "SIGABRT": "abort(), usually an assertion in a C extension",
            "SIGTERM": "terminated by another process",
        }
        cause = causes.get(name)
        return f"the worker was killed by {name}" + (f": {cause}" if cause else "")
    if exitcode == 0:
        return ("the worker exited with code 0 without returning a result: the task probably called "
                "os._exit(0) or sys.exit() from a thread")
    return (f"the worker exited with code {exitcode}: the task probably called os._exit({exitcode}), "
            "or a C extension called exit()")

