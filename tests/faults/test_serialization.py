"""(Un)pickling faults on processes: the function, an item, a result; at every stage of the trip.

The spec: an unpicklable item or result, and an exception while unpickling in the worker or the
parent, is a ``SerializationError`` naming which object and task and why, for that task only;
with ``on_error="collect"`` every other item completes. An unpicklable function fails the call at
once. An object that *kills* the process that (un)pickles it in a worker is a crash like any other
(``WorkerCrashed``); either way the next task succeeds on the same pool.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import taskloom as tl
from taskloom._pools import live_backends
from tests.faults import tasks
from tests.faults.support import (
    assert_one_outcome_per_item,
    consume,
    consume_ok,
    process_backend,
)

N = 30
BAD = 10


def warm_pool(mode: tl.Processes) -> set[int]:
    consume_ok(tl.imap(tasks.getpid, range(8), mode=mode, workers=2, chunksize=1))
    pids = set(process_backend().worker_pids())
    assert len(pids) == 2, pids
    return pids


def items_with(bad: Any) -> list[Any]:
    return [bad if i == BAD else i for i in range(N)]


def assert_only_bad_failed(outcomes: list[tl.Outcome[Any]]) -> tl.TaskError:
    assert_one_outcome_per_item(outcomes, N)
    for o in outcomes:
        if o.index != BAD:
            assert o.ok, o
            assert o.value == o.index * o.index, o
    error = outcomes[BAD].error
    assert error is not None, "the faulty item did not fail"
    return error


def assert_serialization_error(error: object, what: str, *words: str) -> None:
    assert isinstance(error, tl.SerializationError), (
        f"expected SerializationError, got {type(error).__name__}: {error} (cause: {error.__cause__!r})"  # type: ignore[union-attr]
    )
    assert error.what == what, error.what
    assert error.index == BAD, error.index
    message = str(error)
    for word in (f"task {BAD}", "stage_task", *words):
        assert word in message, f"{word!r} missing from: {message}"


def test_unpicklable_function_fails_the_call_at_once() -> None:
    lock = threading.Lock()

    def locked_square(x: int) -> int:
        with lock:
            return x * x

    began = time.monotonic()
    with pytest.raises(tl.SerializationError) as info:
        tl.map(locked_square, range(100), mode=tl.Processes(), workers=2)
    assert time.monotonic() - began < 10
    error = info.value
    assert error.what == "function"
    message = str(error)
    for word in ("locked_square", "pickled", "lock"):
        assert word in message, f"{word!r} missing from: {message}"
    for pool in live_backends():
        if pool.name == "processes":
            assert pool.worker_pids() == [], "workers were started for a call that cannot run"  # type: ignore[attr-defined]


def test_function_that_cannot_be_unpickled_in_the_worker_fails_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mode = tl.Processes()
    warm_pool(mode)  # the forkserver starts now, with today's sys.path: it will not see tmp_path
    (tmp_path / "parent_only_module.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "parent_only_module", raising=False)
    module = importlib.import_module("parent_only_module")
    try:
        began = time.monotonic()
        _, error = consume(tl.imap(module.triple, range(50), mode=mode, workers=2, on_error="collect"),
                           timeout=30)
        assert time.monotonic() - began < 10
    finally:
        sys.modules.pop("parent_only_module", None)
    assert isinstance(error, tl.SerializationError), repr(error)
    assert error.what == "function"
    for word in ("triple", "parent_only_module"):
        assert word in str(error), f"{word!r} missing from: {error}"
    assert consume_ok(tl.imap(tasks.stage_task, [5, 6], mode=mode, workers=2)) == [25, 36]


@pytest.mark.parametrize("on_error", ["collect", "raise"])
def test_unpicklable_item(on_error: str) -> None:
    mode = tl.Processes()
    before = warm_pool(mode)
    run = tl.imap(tasks.stage_task, items_with(threading.Lock()), mode=mode, workers=2,
                  on_error=on_error)  # type: ignore[call-overload]
    outcomes, error = consume(run, timeout=30)
    if on_error == "collect":
        assert error is None, repr(error)
        error = assert_only_bad_failed(outcomes)
    assert_serialization_error(error, "item", "pickled", "lock")
    if on_error == "collect":  # ("raise" cancels the rest of the run, which may stop a busy worker)
        assert set(process_backend().worker_pids()) == before, "a worker was lost to a pickling error"
    assert consume_ok(tl.imap(tasks.stage_task, [5, 6], mode=mode, workers=2)) == [25, 36]


def test_unpicklable_result() -> None:
    mode = tl.Processes()
    before = warm_pool(mode)
    outcomes, error = consume(tl.imap(tasks.stage_task, items_with("return:return_lock"), mode=mode,
                                      workers=2, on_error="collect"), timeout=30)
    assert error is None, repr(error)
    error = assert_only_bad_failed(outcomes)
    assert_serialization_error(error, "result", "pickled", "lock")
    assert set(process_backend().worker_pids()) == before, "a worker was lost to a pickling error"
    assert consume_ok(tl.imap(tasks.stage_task, [5, 6], mode=mode, workers=2)) == [25, 36]


def test_item_whose_unpickling_raises_in_the_worker() -> None:
    mode = tl.Processes()
    before = warm_pool(mode)
    outcomes, error = consume(tl.imap(tasks.stage_task, items_with(tasks.RaisesOnUnpickle("item")), mode=mode,
                                      workers=2, on_error="collect"), timeout=30)
    assert error is None, repr(error)
    error = assert_only_bad_failed(outcomes)
    assert_serialization_error(error, "item", "unpickled", "boom while unpickling the item")
    assert set(process_backend().worker_pids()) == before, "a worker was lost to an unpickling error"
    assert consume_ok(tl.imap(tasks.stage_task, [5, 6], mode=mode, workers=2)) == [25, 36]


# -- the matrix: every stage of the round trip, raising or killing --------------------------------------------
# "Kills" applies to the worker's stages only: an object that kills the process pickling or
# unpickling it in the *parent* would kill the caller itself, which no library can survive.
STAGES = {
    # id: (the faulty item, expected: "item"/"result" for a SerializationError, "crash" for a
    #      WorkerCrashed; words the message must hold)
    "item-pickled-in-parent-raises": (tasks.RaisesOnPickle("item"), "item",
                                      ("pickled", "boom while pickling the item")),
    "item-unpickled-in-worker-raises": (tasks.RaisesOnUnpickle("item"), "item",
                                        ("unpickled", "boom while unpickling the item")),
    "item-unpickled-in-worker-kills": (tasks.KillsOnUnpickle("item"), "crash", ("SIGKILL",)),
    "result-pickled-in-worker-raises": ("return:RaisesOnPickle", "result",
                                        ("pickled", "boom while pickling the result")),
    "result-pickled-in-worker-kills": ("return:KillsOnPickle", "crash", ("SIGKILL",)),
    "result-unpickled-in-parent-raises": ("return:RaisesOnUnpickle", "result",
                                          ("unpickled", "boom while unpickling the result")),
}


@pytest.mark.parametrize("chunksize", ["auto", 4])
@pytest.mark.parametrize("stage", list(STAGES), ids=list(STAGES))
def test_pickle_stage_matrix(stage: str, chunksize: Any) -> None:
    bad, expected, words = STAGES[stage]
    mode = tl.Processes()  # crash_retries=1
    before = warm_pool(mode)
    pool = process_backend()
    outcomes, error = consume(tl.imap(tasks.stage_task, items_with(bad), mode=mode, workers=2,
                                      chunksize=chunksize, on_error="collect"), timeout=60)
    assert error is None, repr(error)
    error = assert_only_bad_failed(outcomes)
    if expected == "crash":
        assert isinstance(error, tl.WorkerCrashed), repr(error)
        assert len(error.history) == 2, error.history
        assert all(code == -signal.SIGKILL for _, code in error.history), error.history
        for word in (f"task {BAD}", "stage_task", *words):
            assert word in str(error), f"{word!r} missing from: {error}"
    else:
        assert_serialization_error(error, expected, *words)
        assert set(pool.worker_pids()) == before, "a worker was lost to a (un)pickling error"
    # the next task succeeds on the same pool
    assert consume_ok(tl.imap(tasks.stage_task, [5, 6, 7], mode=mode, workers=2)) == [25, 36, 49]
    assert process_backend() is pool
