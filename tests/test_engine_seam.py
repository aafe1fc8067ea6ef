"""The engine seam, proved from outside: an engine defined here, in the test, runs every front end.

``PoolEngine`` runs batches on a ``concurrent.futures`` executor it is given. It is a ``Mode``
subclass with a backend of a dozen lines, and it touches no file of ``src/``: ``map``, ``imap``,
``Executor`` and a pipeline stage run on it with retries, timeouts and ``on_error="collect"``,
because all of those live in the scheduler, not in the engines.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

import taskloom as tl
from taskloom._backends._base import Backend, Batch, Done, Started, run_items


class PoolBackend(Backend):
    """Runs each batch as one call on the executor; reports Started and Done."""

    name = "cf-pool"

    def __init__(self, executor: concurrent.futures.Executor, workers: int) -> None:
        self.executor = executor
        self.workers = workers
        self.batches = 0

    def submit(self, batch: Batch) -> None:
        self.batches += 1
        self.executor.submit(self._run, batch)

    @staticmethod
    def _run(batch: Batch) -> None:
        if batch.cancelled:
            return
        if batch.timed:
            batch.sink.put(Started(batch.id, time.monotonic(), "cf"))
        values, errors, durations, elapsed = run_items(batch.job.fn, batch.items,
                                                       per_item_timing=batch.per_item_timing)
        batch.sink.put(Done(batch.id, values, errors, durations, elapsed, "cf"))


@dataclass(frozen=True, eq=False)
class PoolEngine(tl.Mode):
    executor: concurrent.futures.Executor
    name: str = "cf-pool"
    backends: list[PoolBackend] = field(default_factory=list)

    def default_workers(self) -> int:
        return 4

    def open_backend(self, workers: int, depth: int) -> Backend:
        backend = PoolBackend(self.executor, workers)
        self.backends.append(backend)
        return backend


@pytest.fixture
def engine() -> Iterator[PoolEngine]:
    with concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="seam") as executor:
        yield PoolEngine(executor)
        tl.shutdown()


FLAKY_LOCK = threading.Lock()


class Flaky:
    """Raises on the first call for each odd item, then succeeds."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def __call__(self, x: int) -> int:
        with FLAKY_LOCK:
            first = x not in self.seen
            self.seen.add(x)
        if x % 2 and first:
            raise OSError(f"transient {x}")
        return x * x


def test_map_and_imap_run_on_an_engine_defined_outside_taskloom(engine: PoolEngine) -> None:
    assert tl.map(Flaky(), range(20), mode=engine, retries=1) == [x * x for x in range(20)]
    run = tl.imap(lambda x: x + 1, range(50), mode=engine, ordered=False)
    assert sorted(run) == list(range(1, 51))
    assert run.mode == "cf-pool"
    assert run.workers == 4
    assert sum(b.batches for b in engine.backends) > 0


def test_collect_and_timeouts_on_the_outside_engine(engine: PoolEngine) -> None:
    release = threading.Event()

    def task(x: int) -> int:
        if x == 3:
            release.wait(30)  # past its timeout: abandoned, as a thread task is
        if x == 5:
            raise ValueError("five")
        return x

    try:
        outcomes = tl.map(task, range(8), mode=engine, timeout=0.5, on_error="collect")
    finally:
        release.set()
    assert [o.ok for o in outcomes] == [True, True, True, False, True, False, True, True]
    assert isinstance(outcomes[3].error, tl.TaskTimeout)
    assert "ran past its timeout of 0.5 s: it was abandoned" in str(outcomes[3].error)
    assert isinstance(outcomes[5].error.__cause__, ValueError)


def test_an_executor_on_the_outside_engine(engine: PoolEngine) -> None:
    with tl.Executor(engine, workers=2, retries=1) as ex:
        flaky = Flaky()
        futures = [ex.submit(flaky, i) for i in range(10)]
        assert [f.result(timeout=30) for f in futures] == [i * i for i in range(10)]
        failing = ex.submit(int, "not a number")
        with pytest.raises(ValueError, match="invalid literal"):
            failing.result(timeout=30)


def test_a_pipeline_stage_on_the_outside_engine(engine: PoolEngine) -> None:
    pipe = (tl.pipeline(range(30))
            .then(Flaky(), mode=engine, retries=1)
            .then(lambda x: 1 // (x % 7), mode=engine, on_error="collect"))
    assert list(pipe) == [1 // (x * x % 7) for x in range(30) if x * x % 7]
    assert len(pipe.errors) == len([x for x in range(30) if x * x % 7 == 0])
    assert all(isinstance(e, tl.StageFailure) for e in pipe.errors)
