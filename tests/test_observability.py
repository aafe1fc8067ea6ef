"""Seeing the work: progress events, statistics and their diagnosis, logs from process workers."""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterator

import pytest

import taskloom as tl
from taskloom._progress import ProgressBar
from tests import helpers
from tests.helpers import task_for


def fail_on_sevens(x: int) -> int:
    if x % 7 == 0:
        raise ValueError(x)
    return x


def test_progress_callback_counts_every_item_exactly_once(backend: str) -> None:
    updates: list[tl.ProgressUpdate] = []
    fn = task_for(backend, fail_on_sevens)
    outcomes = tl.map(fn, range(100), mode=backend, workers=2, on_error="collect", progress=updates.append)
    assert len(outcomes) == 100
    assert updates, "no progress update"
    last = updates[-1]
    assert last.done == 100
    assert last.failed == sum(1 for x in range(100) if x % 7 == 0)
    assert last.total == 100
    assert last.mode == backend
    dones = [u.done for u in updates]
    assert dones == sorted(dones)  # monotonic


class FakeTqdm:
    def __init__(self) -> None:
        self.n = 0
        self.total: int | None = None
        self.refreshed = False

    def update(self, n: int) -> None:
        self.n += n

    def refresh(self) -> None:
        self.refreshed = True


def test_progress_accepts_a_tqdm_like_object() -> None:
    bar = FakeTqdm()
    assert tl.map(helpers.square, range(50), mode="threads", progress=bar) == [x * x for x in range(50)]
    assert bar.n == 50
    assert bar.total == 50
    assert bar.refreshed


def test_progress_rejects_nonsense() -> None:
    with pytest.raises(TypeError, match="progress"):
        tl.map(helpers.square, [1], progress="yes")


def test_progress_bar_falls_back_to_log_lines_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    tl.map(helpers.square, range(30), mode="threads", progress=True)
    err = capsys.readouterr().err
    assert "\x1b[" not in err  # no escape codes in a log file
    assert "30/30 done" in err
    assert "threads" in err


def test_progress_bar_on_a_terminal_draws_with_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    bar = ProgressBar("job", "threads", 4, 10)
    bar.update(6, 1)
    bar.update(4, 0)
    bar.close()
    assert bar.done == 10
    assert bar.failed == 1


def test_executor_progress_and_statistics() -> None:
    updates: list[tl.ProgressUpdate] = []
    with tl.Executor("threads", workers=2, progress=updates.append) as ex:
        futures = [ex.submit(helpers.square, i) for i in range(20)]
        assert [f.result(timeout=30) for f in futures] == [i * i for i in range(20)]
        stats = ex.statistics()
    assert stats is not None
    assert stats.completed == 20
    assert updates[-1].done == 20


def busy(seconds: float) -> float:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


def test_statistics_add_up() -> None:
    run = tl.imap(busy, [0.01] * 20, mode="threads", workers=2, chunksize=1)
    assert len(list(run)) == 20
    stats = run.statistics()
    assert stats.completed == 20
    assert stats.batches == 20
    assert sum(stats.per_worker.values()) == 20
    assert stats.task_time == pytest.approx(sum(stats.busy.values()))
    for worker in stats.busy:
        assert stats.busy[worker] + stats.idle(worker) == pytest.approx(stats.elapsed, rel=0.05)
    assert stats.percentiles["p50"] >= 0.009
    assert stats.percentiles["max"] >= stats.percentiles["p90"] >= stats.percentiles["p50"]
    assert len(stats.slowest) == 5
    index, item, seconds = stats.slowest[0]
    assert 0 <= index < 20
    assert item == "0.01"
    assert seconds >= 0.009
    summary = stats.summary()
    assert "diagnosis:" in summary
    assert "threads x2" in summary


def slow_producer(n: int) -> Iterator[int]:
    for i in range(n):
        time.sleep(0.01)
        yield i


def test_diagnosis_names_a_slow_producer() -> None:
    run = tl.imap(helpers.square, slow_producer(30), mode="threads", workers=4)
    list(run)
    stats = run.statistics()
    assert stats.input_wait > 0.2
    assert "producer is the bottleneck" in stats.diagnosis


def test_diagnosis_names_dispatch_overhead() -> None:
    run = tl.imap(helpers.square, range(3000), mode="processes", workers=2, chunksize=1)
    list(run)
    assert "dispatch overhead" in run.statistics().diagnosis


def test_diagnosis_when_tasks_are_the_bottleneck() -> None:
    run = tl.imap(busy, [0.02] * 8, mode="threads", workers=2, chunksize=1)
    list(run)
    assert "the tasks themselves are the bottleneck" in run.statistics().diagnosis


def test_crashes_are_counted() -> None:
    from tests.faults import tasks

    run = tl.imap(tasks.crash_every_tenth, range(1, 12), mode=tl.Processes(crash_retries=0), workers=2,
                  chunksize=1, on_error="collect")
    outcomes = list(run)
    assert sum(1 for o in outcomes if not o.ok) == 1
    assert run.statistics().crashed >= 1


def log_and_square(x: int) -> int:
    logging.getLogger("tests.worker").warning("square of %d from pid %d", x, os.getpid())
    if x == 1:
        try:
            raise KeyError("missing")
        except KeyError:
            logging.getLogger("tests.worker").exception("failed on %d", x)
    return x * x


def test_logs_from_process_workers_reach_the_parents_handlers(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert tl.map(log_and_square, [0, 1, 2], mode="processes", workers=2) == [0, 1, 4]
    records = [r for r in caplog.records if r.name == "tests.worker"]
    assert len(records) == 4
    assert all(r.process != os.getpid() for r in records)  # the worker's pid, not ours
    assert all(f"pid {r.process}" in r.getMessage() for r in records if "square" in r.getMessage())
    failed = [r for r in records if r.levelno == logging.ERROR]
    assert failed
    assert "KeyError" in (failed[0].exc_text or "")


def test_diagnosis_names_a_slow_consumer() -> None:
    run = tl.imap(helpers.square, range(40), mode="threads", workers=2)
    for _ in run:
        time.sleep(0.005)  # the caller's own work between results
    stats = run.statistics()
    assert stats.consumer_time > 0.1
    assert "consumer is the bottleneck" in stats.diagnosis


def test_slowest_tasks_do_not_repr_whole_large_items() -> None:
    # A plain repr of 4 MB of bytes is 16 MB of text: noting slow items must not pay for that.
    from taskloom._errors import short_repr

    big = bytes(4_000_000)
    text = short_repr((big, "x" * 1_000_000, bytearray(big)))
    assert len(text) <= 80
    assert short_repr(big).endswith("...(4,000,000 bytes)") or len(short_repr(big)) <= 80
    run = tl.imap(len, [big] * 3, mode="threads", workers=1, chunksize=1)
    assert list(run) == [4_000_000] * 3
    assert all(len(item) <= 80 for _, item, _ in run.statistics().slowest)


def test_a_large_numpy_item_is_named_by_its_first_values_shape_and_dtype() -> None:
    # numpy's own repr formats the whole array before anything cuts it (~0.5 ms for 40 MB): the
    # run names each of its slowest items, so a job of 8 numpy sums paid 4 ms for it.
    import numpy as np

    from taskloom._errors import short_repr

    big = np.arange(5_000_000, dtype=np.float64).reshape(1000, 5000)
    text = short_repr(big, 200)
    assert text == "array([0, 1, 2, ...], shape=(1000, 5000), dtype=float64)"
    assert short_repr(np.arange(3)) == repr(np.arange(3))  # small ones as numpy writes them

    class NotNumpy:  # named like it, without its attributes: an instance's usual repr
        pass

    NotNumpy.__name__ = "ndarray"
    assert short_repr(NotNumpy()).startswith("<")
    run = tl.imap(np.sum, [big] * 3, mode="threads", workers=1, chunksize=1)
    assert list(run) == [big.sum()] * 3
    assert {item for _, item, _ in run.statistics().slowest} == {short_repr(big, 60)}
