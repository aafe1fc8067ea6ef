"""The window and ordered delivery (``_run/_delivery.py``): groups in, blocks out, no engine or clock.

``Delivery`` is driven by hand here, the way the run drives it: open a group per chunk of input,
end its items (``Group.succeed`` / ``Group.fail``), call ``deliver``, take the blocks. The last
tests run it inside a ``Run`` on the scripted engine (``tests/fake_engine.py``) and virtual clock.
"""

from __future__ import annotations

import pytest

import taskloom as tl
from taskloom._backends._base import Done, ItemError
from taskloom._run._delivery import Delivery, Group
from tests.fake_engine import Ok, make_run


def finish(group: Group, values: list[int] | None = None) -> Group:
    """Every item of ``group`` ends with a value (its item times 10 unless given)."""
    for pos, item in enumerate(group.items):
        group.slots()[pos] = item * 10 if values is None else values[pos]
        group.succeed(pos)
    return group


def taken(delivery: Delivery) -> list[list[object]]:
    out = []
    while (block := delivery.take()) is not None:
        out.append(block)
    return out


def error(index: int) -> tl.TaskError:
    return tl.TaskError(f"task {index} failed", index=index)


# -- ordering --------------------------------------------------------------------------------------------
def test_ordered_hands_out_groups_in_input_order_whatever_finishes_first() -> None:
    d = Delivery(ordered=True, collect=False)
    first, second, third = d.open_group(0, [0, 1]), d.open_group(2, [2]), d.open_group(3, [3, 4])
    d.deliver(finish(third))
    d.deliver(finish(second))
    assert not d.has_ready  # both wait behind the head group
    assert d.take() is None
    d.deliver(finish(first))
    assert taken(d) == [[0, 10], [20], [30, 40]]
    assert d.open == 0


def test_unordered_hands_out_each_group_once_all_its_items_ended() -> None:
    d = Delivery(ordered=False, collect=False)
    first, second = d.open_group(0, [0, 1]), d.open_group(2, [2])
    first.slots()[0] = 0
    first.succeed(0)
    d.deliver(first)
    assert not d.has_ready  # one item of it still runs
    d.deliver(finish(second))
    assert taken(d) == [[20]]
    first.slots()[1] = 10
    first.succeed(1)
    d.deliver(first)
    assert taken(d) == [[0, 10]]
    assert d.open == 0


def test_a_group_with_an_error_is_not_handed_out_without_collect() -> None:
    d = Delivery(ordered=False, collect=False)
    group = d.open_group(0, [0, 1])
    group.fail(0, error(0))
    group.slots()[1] = 10
    group.succeed(1)
    d.deliver(group)
    assert d.take() is None  # the run raises the error instead
    assert d.open == 0  # it left the window all the same


def test_collect_hands_out_an_outcome_per_item() -> None:
    d = Delivery(ordered=True, collect=True)
    group = d.open_group(5, ["a", "b", "c"])
    group.durations = [0.5, 1.5, 2.5]
    group.slots()[0], group.slots()[2] = "A", "C"
    group.succeed(0)
    group.attempts[1] = 3
    failure = error(6)
    group.fail(1, failure)
    group.succeed(2)
    d.deliver(group)
    block = d.take()
    assert block is not None
    assert [(o.index, o.item, o.value, o.ok, o.attempts, o.duration) for o in block] == [
        (5, "a", "A", True, 1, 0.5), (6, "b", None, False, 3, 1.5), (7, "c", "C", True, 1, 2.5)]
    assert block[1].error is failure


def test_collect_without_durations_reports_zero_seconds() -> None:
    d = Delivery(ordered=False, collect=True)
    d.deliver(finish(d.open_group(0, [1, 2])))
    block = d.take()
    assert block is not None
    assert [o.duration for o in block] == [0.0, 0.0]


def test_a_group_made_of_values_computed_before_the_run_is_delivered_as_given() -> None:
    d = Delivery(ordered=True, collect=False)
    group = d.open_group(0, [1, 2], values=["one", "two"], durations=[0.1, 0.2])
    assert group.remaining == 2
    assert group.durations == [0.1, 0.2]
    group.succeed(0)
    group.succeed(1)
    d.deliver(group)
    assert taken(d) == [["one", "two"]]


# -- on_error="raise": halt ------------------------------------------------------------------------------
def test_halt_hands_out_what_precedes_the_first_failure_then_nothing() -> None:
    d = Delivery(ordered=True, collect=False)
    first, failed, later = d.open_group(0, [0, 1]), d.open_group(2, [2, 3, 4]), d.open_group(5, [5])
    finish(first)  # finished, not delivered yet (the run delivers after each event)
    d.deliver(finish(later))
    failed.slots()[0] = 20
    failed.succeed(0)
    failed.fail(1, error(3))
    failed.slots()[2] = 40
    failed.succeed(2)
    d.halt_at(failed)
    assert taken(d) == [[0, 10], [20]]  # the head group, then the values before the failed item
    d.deliver(later)
    assert d.take() is None


def test_halt_on_a_groups_first_item_hands_out_nothing_of_that_group() -> None:
    d = Delivery(ordered=True, collect=False)
    group = d.open_group(0, [0, 1])
    group.fail(0, error(0))
    group.slots()[1] = 10
    group.succeed(1)
    d.halt_at(group)
    assert d.take() is None


def test_halt_waits_for_nothing_behind_an_unfinished_head() -> None:
    d = Delivery(ordered=True, collect=False)
    head, failed = d.open_group(0, [0]), d.open_group(1, [1])
    failed.fail(0, error(1))
    d.halt_at(failed)
    d.deliver(finish(head))  # halted: even the head that finishes later stays in
    assert d.take() is None


def test_halt_unordered_stops_delivery_at_once() -> None:
    d = Delivery(ordered=False, collect=False)
    failed, other = d.open_group(0, [0]), d.open_group(1, [1])
    failed.fail(0, error(0))
    d.halt_at(failed)
    d.deliver(finish(other))
    assert d.take() is None


def test_drop_forgets_the_ready_blocks() -> None:
    d = Delivery(ordered=True, collect=False)
    d.deliver(finish(d.open_group(0, [0])))
    assert d.has_ready
    d.drop()
    assert d.take() is None


# -- the window ------------------------------------------------------------------------------------------
def test_imap_counts_finished_groups_behind_a_slow_head_in_the_window() -> None:
    d = Delivery(ordered=True, collect=False)
    d.open_group(0, [0])
    for start in (1, 2, 3):
        d.deliver(finish(d.open_group(start, [start])))
    assert d.open == 4
    assert d.in_window() == 4  # they hold memory until the head is handed out
    d.hold_finished = False  # map keeps every result anyway
    assert d.in_window() == 1
    d.deliver(d._groups[1])  # told again of a group it counted already: counted once
    assert d.in_window() == 1
    d.deliver(finish(d._groups[0]))  # the head ends: all four go out, none waits any more
    assert d.take() == [0, 10, 20, 30]  # map takes every ready block at once (one trip through the lock)
    assert d.take() is None
    assert d.open == d.in_window() == 0


def test_imap_takes_one_block_at_a_time() -> None:
    d = Delivery(ordered=True, collect=False)
    for start in (0, 1):
        d.deliver(finish(d.open_group(start, [start])))
    assert [d.take(), d.take(), d.take()] == [[0], [10], None]


def test_unordered_windows_count_open_groups_only() -> None:
    d = Delivery(ordered=False, collect=False)
    d.hold_finished = False
    d.open_group(0, [0])
    d.deliver(finish(d.open_group(1, [1])))
    assert d.in_window() == 1  # the finished one left when it was handed out
    assert d.open == 1


@pytest.mark.parametrize("drain", ["imap", "map"])
def test_a_slow_head_holds_the_window_for_imap_but_not_for_map(drain: str) -> None:
    h = make_run(list(range(10)), lambda item, _: Ok(seconds=100 if item == 0 else 1), chunksize=1, workers=2,
                 prefetch=1)
    start = h.clock.t
    results = list(h.run) if drain == "imap" else h.run.to_list()
    assert results == [i * 10 for i in range(10)]
    last_start = max(t for t, _ in h.backend.started_at) - start
    if drain == "imap":
        assert last_start >= 100  # the window (2 groups) stayed full behind item 0 until it ended
    else:
        assert last_start < 100  # finished groups left the window: the other worker went on


# -- a batch's results into its group ---------------------------------------------------------------------
def done(values: list[object], errors: dict[int, ItemError] | None = None, durations: list[float] | None = None,
         elapsed: float = 4.0) -> Done:
    return Done(1, values, errors, durations, elapsed, "w")


def test_a_whole_group_that_succeeded_takes_the_batchs_values_at_once() -> None:
    group = Group(0, [1, 2], [None, None], 2)
    assert list(group.record(done([10, 20], durations=[1.0, 3.0]), None, collect=True)) == []
    assert group.values == [10, 20]
    assert group.durations == [1.0, 3.0]
    assert group.remaining == 0


def test_failed_items_are_yielded_in_batch_order_after_the_items_before_them_ended() -> None:
    group = Group(0, [1, 2, 3, 4], [None] * 4, 4)
    boom = ItemError(ValueError("x"), "tb", False)
    seen = []
    for pos, item_error in group.record(done([None, 20, None], {0: boom, 2: boom}), [3, 1, 0], collect=True):
        seen.append((pos, item_error, group.remaining))
    # Positions 3 and 0 failed; position 1 had ended by the time 0 was yielded, not before 3.
    assert seen == [(3, boom, 4), (0, boom, 3)]
    assert group.values == [None, 20, None, None]
    assert group.durations == [4.0 / 3, 4.0 / 3, 0.0, 4.0 / 3]  # no per-item timing: the batch's mean
    assert group.remaining == 3  # the failed ones are the run's to end (retry or fail)


def test_without_collect_no_durations_are_kept() -> None:
    group = Group(0, [1, 2], [None, None], 2)
    assert list(group.record(done([10]), [1], collect=False)) == []
    assert group.durations is None
    assert group.values == [None, 10]
    assert group.remaining == 1
