"""Input faults and accounting, on every engine.

The spec: an input iterator raising mid-stream sends its error to the caller with its traceback;
nothing hangs; no more input is pulled. With ``on_error="collect"`` every input item yields exactly
one ``Outcome``, whatever happens.
"""

from __future__ import annotations

import traceback
from typing import Any

import pytest

import taskloom as tl
from tests.faults import tasks
from tests.faults.support import assert_one_outcome_per_item, consume

ENGINES = ["sequential", "threads", "processes", "async"]
FAIL_AT = 50  # the 50th pull raises: items 0..48 came before it


def fn_for(engine: str, sync: Any, coro: Any) -> Any:
    return coro if engine == "async" else sync


def make_input(kind: str) -> tuple[Any, tasks.FlakyInput]:
    """(the input to map over, the FlakyInput that counts pulls)."""
    source = tasks.FlakyInput(FAIL_AT)
    return (tasks.raising_generator(source) if kind == "generator" else source), source


def assert_input_error(error: BaseException | None, source: tasks.FlakyInput) -> None:
    assert isinstance(error, ValueError), f"expected the input's ValueError, got {error!r}"
    assert str(error) == f"the input broke at pull {FAIL_AT}"
    frames = traceback.extract_tb(error.__traceback__)
    assert any(f.name == "__next__" and f.filename == tasks.__file__ for f in frames), (
        "the traceback does not reach into the input's __next__:\n" + "".join(traceback.format_list(frames)))
    assert source.pulls == FAIL_AT, f"input was pulled {source.pulls - FAIL_AT} more time(s) after it raised"


@pytest.mark.parametrize("kind", ["generator", "iterator"])
@pytest.mark.parametrize("engine", ENGINES)
def test_raising_input_with_on_error_raise(engine: str, kind: str) -> None:
    items, source = make_input(kind)
    fn = fn_for(engine, tasks.square, tasks.adispatch)
    results, error = consume(tl.imap(fn, items, mode=engine, workers=2), timeout=30)
    assert_input_error(error, source)
    # what was delivered before the error is the right prefix of the results, in order
    assert results == [x * x for x in range(len(results))]


@pytest.mark.parametrize("kind", ["generator", "iterator"])
@pytest.mark.parametrize("engine", ENGINES)
def test_raising_input_with_on_error_collect(engine: str, kind: str) -> None:
    items, source = make_input(kind)
    fn = fn_for(engine, tasks.square, tasks.adispatch)
    outcomes, error = consume(tl.imap(fn, items, mode=engine, workers=2, on_error="collect"), timeout=30)
    assert_input_error(error, source)
    # every item pulled before the error ran and came back, once, before the error was raised
    assert_one_outcome_per_item(outcomes, FAIL_AT - 1)
    assert all(o.ok and o.value == o.index * o.index for o in outcomes)


@pytest.mark.parametrize("engine", ENGINES)
def test_collect_gives_one_outcome_per_item(engine: str) -> None:
    n = 500
    fn = fn_for(engine, tasks.fail_every_seventh, tasks.afail_every_seventh)
    outcomes, error = consume(tl.imap(fn, range(n), mode=engine, workers=2, on_error="collect",
                                      ordered=False), timeout=60)
    assert error is None, repr(error)
    assert_one_outcome_per_item(outcomes, n)
    for o in outcomes:
        assert o.item == o.index
        if o.index % 7 == 3:
            assert type(o.error) is tl.TaskError, repr(o.error)
            assert isinstance(o.error.__cause__, ValueError), repr(o.error.__cause__)
            assert f"task {o.index}" in str(o.error)
        else:
            assert o.ok, o
            assert o.value == o.index * o.index
