"""Memory: recycling workers (max_tasks_per_worker, max_memory), huge results, max_result_size.

The spec: ``Processes(max_tasks_per_worker=N, max_memory="...")`` recycle workers; a task that
leaks memory under ``max_memory`` gets its worker recycled and the run completes. A 300 MB result
works; a result over ``Processes(max_result_size=...)`` fails as ``SerializationError`` naming its
size and the limit.
"""

from __future__ import annotations

import collections
import re
from typing import Any

import taskloom as tl
from tests.faults import tasks
from tests.faults.support import (
    assert_gone,
    assert_one_outcome_per_item,
    consume,
    consume_ok,
    process_backend,
)

MiB = 1024 * 1024


def test_leaking_task_with_max_memory_recycles_workers_and_the_run_completes() -> None:
    limit, step, n = 150 * MiB, 25 * MiB, 30
    mode = tl.Processes(max_memory="150MiB")
    results = consume_ok(tl.imap(tasks.leak, [step] * n, mode=mode, workers=2, chunksize=1), timeout=90)
    assert len(results) == n
    pids = [pid for pid, _, _ in results]
    # 30 x 25 MiB is 750 MiB of leaks: two workers can only have held it by being recycled.
    assert len(set(pids)) > 2, f"no worker was recycled: {collections.Counter(pids)}"
    for pid, before, _after in results:
        assert before <= limit, f"worker {pid} started a task at {before / MiB:.0f} MiB, over max_memory"
    live = set(process_backend().worker_pids())
    assert_gone(set(pids) - live, "the recycled workers")


def test_leaking_task_with_max_memory_in_batches() -> None:
    # Processes(max_memory=...) recycles "a worker whose RSS is over this after a task": after each
    # task, also inside a batch (auto chunksize batches small tasks; chunksize=5 makes it certain).
    limit, step, n = 150 * MiB, 25 * MiB, 40
    mode = tl.Processes(max_memory="150MiB")
    results = consume_ok(tl.imap(tasks.leak, [step] * n, mode=mode, workers=2, chunksize=5), timeout=90)
    assert len(results) == n
    pids = [pid for pid, _, _ in results]
    assert len(set(pids)) > 2, f"no worker was recycled: {collections.Counter(pids)}"
    worst = max(before for _, before, _ in results)
    assert worst <= limit, f"a task started on a worker at {worst / MiB:.0f} MiB, over max_memory=150MiB"


def test_max_tasks_per_worker_recycles_workers() -> None:
    n, quota = 200, 5
    mode = tl.Processes(max_tasks_per_worker=quota)
    results = consume_ok(tl.imap(tasks.small_sized, range(n), mode=mode, workers=2), timeout=90)
    assert len(results) == n
    per_pid = collections.Counter(pid for pid, _ in results)
    over = {pid: count for pid, count in per_pid.items() if count > quota}
    assert not over, (f"max_tasks_per_worker={quota}, but these workers ran more tasks: {over} "
                      "(tasks, not batches, must count)")
    assert len(per_pid) >= n // quota
    assert_gone(set(per_pid) - set(process_backend().worker_pids()), "the recycled workers")


def test_300_mb_result_arrives_whole() -> None:
    size = 300_000_000
    mode = tl.Processes()
    [result] = consume_ok(tl.imap(tasks.big_bytes, [size], mode=mode, workers=1), timeout=90)
    assert isinstance(result, bytes)
    assert len(result) == size
    assert result.count(b"\x02") == size
    del result
    assert consume_ok(tl.imap(tasks.square, range(10), mode=mode, workers=1)) == [x * x for x in range(10)]


def test_result_over_max_result_size_is_a_serialization_error() -> None:
    limit, big = 10 * MiB, 20 * MiB
    mode = tl.Processes(max_result_size="10MiB")
    consume_ok(tl.imap(tasks.getpid, range(4), mode=mode, workers=2, chunksize=1))
    before = set(process_backend().worker_pids())
    items: list[Any] = [1, 2, ("big_bytes", big), 3, ("big_bytes", 1000)]
    outcomes, error = consume(tl.imap(tasks.dispatch, items, mode=mode, workers=2, on_error="collect"),
                              timeout=60)
    assert error is None, repr(error)
    assert_one_outcome_per_item(outcomes, len(items))
    assert [o.value for o in outcomes if o.index != 2] == [1, 4, 9, b"\x02" * 1000]
    bad = outcomes[2].error
    assert isinstance(bad, tl.SerializationError), (
        f"expected SerializationError, got {type(bad).__name__}: {bad}")
    assert bad.what == "result"
    assert bad.index == 2
    message = str(bad)
    numbers = [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*\d", message)]
    assert any(big <= n < big + MiB for n in numbers), f"the result's size is not named: {message}"
    assert limit in numbers or "10MiB" in message or "10 MiB" in message, f"the limit is not named: {message}"
    assert "task 2" in message, message
    assert "max_result_size" in message, message
    assert set(process_backend().worker_pids()) == before, "a worker was lost to an oversized result"
