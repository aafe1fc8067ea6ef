"""``journal=`` (``_run/_journal.py``): the file, its format, its lock, and what a resumed run gives back.

The kill-and-resume tests are in ``tests/faults/test_journal_kill.py``; the same resume on every
engine (Dask included) is in the shared suite, ``tests/test_behaviour.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import random
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import taskloom as tl
from taskloom._run._journal import plain_json
from tests import helpers
from tests.journal_tasks import Logged, runs


@dataclass(frozen=True)
class Point:
    x: int
    y: int


def make_value(i: int) -> Any:
    """Values of every kind a journal must give back as they were."""
    return [i, (i, "tuple"), {i, i + 1}, Point(i, -i), {"k": [i, None, 1.5]}, b"bytes", float("nan")][i % 7]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_values_come_back_as_they_were_json_when_plain_pickle_otherwise(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    first = tl.map(make_value, range(14), mode="threads", journal=journal)
    again = tl.map(helpers.raise_value_error, range(14), mode="threads", journal=journal)  # nothing runs
    assert repr(again) == repr(first)  # nan != nan, so compare the reprs
    assert [type(v) for v in again] == [type(v) for v in first]
    by_index = {r["index"]: r for r in lines(journal)}
    assert by_index[0]["value"] == 0
    assert by_index[4]["value"] == {"k": [0 + 4, None, 1.5]}
    assert "value_b64" in by_index[1]
    assert by_index[1]["encoding"] == "pickle"
    assert "value_b64" in by_index[6]  # nor is nan


def test_the_journal_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    tl.map(helpers.square, range(3), mode="sequential", journal=journal)
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600


def test_a_torn_last_line_is_cut_off_and_that_item_runs_again(tmp_path: Path) -> None:
    journal, logdir = tmp_path / "j.jsonl", tmp_path / "log"
    logdir.mkdir()
    tl.map(Logged(logdir), [0, 1, 2], mode="threads", journal=journal, on_error="collect")
    data = journal.read_bytes().split(b"\n")
    journal.write_bytes(b"\n".join(data[:2]) + b"\n" + data[2][:5])  # killed while writing the third line
    redone = next(json.loads(line)["index"] for line in data[2:3])
    assert tl.map(Logged(logdir), [0, 1, 2], mode="threads", journal=journal) == [0, 1, 4]
    assert runs(logdir)[redone] == 2
    assert sum(runs(logdir).values()) == 4
    assert sorted(r["index"] for r in lines(journal)) == [0, 1, 2]


def test_a_broken_line_before_the_last_is_refused_by_line_number(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    journal.write_text('{"index": 0, "value": 1}\nnot json\n{"index": 2, "value": 3}\n')
    with pytest.raises(tl.JournalError, match=r"j\.jsonl', line 2: not a record") as info:
        tl.map(helpers.square, range(3), mode="threads", journal=journal)
    assert "something else changed this file" in str(info.value)
    tl.map(helpers.square, range(3), mode="threads", journal=tmp_path / "other.jsonl")  # its lock was let go


def test_a_second_run_on_a_journal_in_use_is_refused_until_the_first_ends(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    with tl.imap(helpers.square, range(100), mode="threads", journal=journal) as first:
        assert next(first) == 0
        with pytest.raises(tl.JournalError, match=rf"in use by another run \(process {os.getpid()} holds"):
            tl.map(helpers.square, range(100), mode="threads", journal=journal)
    # the first run was cancelled on leaving the block: its journal is free, and holds what it finished
    assert tl.map(helpers.square, range(100), mode="threads", journal=journal) == [x * x for x in range(100)]


def test_key_follows_items_whose_order_changed(tmp_path: Path) -> None:
    journal, logdir = tmp_path / "j.jsonl", tmp_path / "log"
    logdir.mkdir()
    items = list(range(40))
    tl.map(Logged(logdir), items[:20], mode="threads", journal=journal, key=str, on_error="collect")
    random.Random(7).shuffle(items)
    outcomes = tl.map(Logged(logdir), items, mode="threads", journal=journal, key=str, on_error="collect")
    assert [o.item for o in outcomes] == items
    assert [o.index for o in outcomes] == list(range(40))
    assert all(o.value == o.item * o.item for o in outcomes if o.item % 10 != 3)
    assert all(o.error is not None and o.error.index == o.index for o in outcomes if o.item % 10 == 3)
    assert runs(logdir) == dict.fromkeys(range(40), 1)  # the first 20 did not run again
    assert sorted(r["key"] for r in lines(journal)) == sorted(str(i) for i in range(40))


def test_a_key_given_to_two_items_is_an_error_naming_both(tmp_path: Path) -> None:
    with pytest.raises(tl.JournalError, match=r"gave items 0 and 2 the same key 'a'"):
        tl.map(len, ["a", "b", "a"], mode="threads", journal=tmp_path / "j.jsonl", key=str)


def test_a_key_that_is_not_json_is_an_error_naming_the_item(tmp_path: Path) -> None:
    with pytest.raises(tl.JournalError, match=r"key= must give a JSON value .* for item 0"):
        tl.map(len, ["a"], mode="threads", journal=tmp_path / "j.jsonl", key=lambda s: object())


def test_a_journal_written_without_key_is_refused_by_a_run_with_one(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    tl.map(len, ["a", "bb"], mode="threads", journal=journal)
    with pytest.raises(tl.JournalError, match="written without key= and this run is with it"):
        tl.map(len, ["a", "bb"], mode="threads", journal=journal, key=str)


class JsonSerializer:
    """A serializer of the user's own (here: JSON text for values that JSON cannot hold as they are)."""

    name = "tuple-json"  # what the journal's "encoding" says (default: the __name__, as for pickle)

    @staticmethod
    def dumps(value: Any) -> bytes:
        return json.dumps(list(value)).encode()

    @staticmethod
    def loads(data: bytes) -> Any:
        return tuple(json.loads(data))


def test_a_serializer_of_ones_own_and_a_mismatch_named(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    assert tl.starmap(divmod, [(7, 2), (9, 4)], mode="threads", journal=journal, serializer=JsonSerializer,
                      key=list) == [(3, 1), (2, 1)]  # a tuple key is fine: JSON gives it as a list
    assert {r["encoding"] for r in lines(journal)} == {"tuple-json"}
    assert tl.starmap(lambda a, b: 1 / 0, [(7, 2), (9, 4)], mode="threads", journal=journal,  # nothing runs
                      serializer=JsonSerializer, key=list) == [(3, 1), (2, 1)]
    with pytest.raises(tl.JournalError, match="stored with serializer 'tuple-json', and this run has 'pickle'"):
        tl.starmap(divmod, [(7, 2)], mode="threads", journal=journal, key=list)


def test_a_value_that_cannot_be_stored_is_returned_and_runs_again_next_time(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    with pytest.warns(RuntimeWarning, match=r"the value of item 0 of make_lock cannot be stored"):
        values = tl.map(make_lock, [0], mode="threads", journal=journal)
    assert type(values[0]) is type(make_lock(0))
    assert lines(journal) == []  # not recorded: it runs again next time


def make_lock(_: int) -> Any:
    import threading

    return threading.Lock()


def test_attempts_and_timeouts_are_recorded_and_come_back(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    flaky = helpers.FlakyTask(tmp_path, failures=1)
    first = tl.map(flaky, [5], mode="threads", retries=1, journal=journal, on_error="collect")
    assert (first[0].value, first[0].attempts) == (10, 2)
    again = tl.map(flaky, [5], mode="threads", retries=1, journal=journal, on_error="collect")
    assert (again[0].value, again[0].attempts) == (10, 2)
    assert flaky.attempts(5) == 2

    slow = tmp_path / "slow.jsonl"
    outcomes = tl.map(helpers.sleep_from_five, [1, 5], mode="processes", workers=2, timeout=0.5, journal=slow,
                      on_error="collect")
    assert isinstance(outcomes[1].error, tl.TaskTimeout)
    resumed = tl.map(helpers.sleep_from_five, [1, 5], mode="processes", timeout=0.5, journal=slow, on_error="collect")
    assert resumed[0].value == outcomes[0].value
    assert isinstance(resumed[1].error, tl.TaskTimeout)
    assert resumed[1].error.index == 1


def test_progress_starts_at_what_the_journal_holds(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    tl.map(helpers.square, range(10), mode="threads", journal=journal)
    updates: list[tl.ProgressUpdate] = []
    tl.map(helpers.square, range(12), mode="threads", journal=journal, progress=updates.append, chunksize=1)
    assert updates[0].done >= 10
    assert updates[-1].done == 12
    assert updates[-1].total == 12


def test_auto_mode_samples_only_items_the_journal_lacks(tmp_path: Path) -> None:
    journal, logdir = tmp_path / "j.jsonl", tmp_path / "log"
    logdir.mkdir()
    tl.map(Logged(logdir), range(0, 30, 2), mode="threads", journal=journal, on_error="collect")
    lines_ = journal.read_text().splitlines()
    journal.write_text("".join(line + "\n" for line in lines_[:5]))  # keep 5 records of the 15
    kept = {json.loads(line)["index"] for line in lines_[:5]}
    outcomes = tl.map(Logged(logdir), range(0, 30, 2), mode="auto", journal=journal, on_error="collect")
    assert [o.value for o in outcomes if o.ok] == [x * x for x in range(0, 30, 2) if x % 10 != 3]
    assert all(runs(logdir)[2 * i] == 1 for i in kept)


def test_amap_takes_a_journal(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    assert asyncio.run(tl.amap(double, range(5), journal=journal)) == [0, 2, 4, 6, 8]
    assert asyncio.run(tl.amap(helpers.raise_value_error, range(5), mode="threads",
                               journal=journal)) == [0, 2, 4, 6, 8]


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"key": str}, ValueError, "key= only applies to a run with journal="),
    ({"rerun_failed": True}, ValueError, "rerun_failed= only applies"),
    ({"journal": 3}, TypeError, "journal must be a file path"),
    ({"journal": "j", "key": 3}, TypeError, "key must be a function of an item"),
    ({"journal": "j", "rerun_failed": 1}, TypeError, "rerun_failed must be True or False"),
    ({"journal": "j", "serializer": pickle.dumps}, TypeError, "serializer must have dumps"),
])
def test_bad_journal_options_are_refused_before_anything_runs(options: dict[str, Any], error: type[Exception],
                                                              message: str) -> None:
    with pytest.raises(error, match=message):
        tl.map(helpers.square, [1], **options)


@pytest.mark.parametrize(("value", "plain"), [
    (None, True), (True, True), (3, True), ("s", True), (1.5, True), ([1, [2, {"a": None}]], True),
    (float("inf"), False), ((1,), False), ({1: 2}, False), ({1}, False), (b"x", False), (Point(1, 2), False),
])
def test_plain_json_is_what_json_gives_back_unchanged(value: Any, plain: bool) -> None:
    assert plain_json(value) is plain
    if plain:
        assert json.loads(json.dumps(value)) == value


def test_pickle_is_the_default_serializer(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    tl.map(make_value, [1], mode="sequential", journal=journal)
    import base64

    assert pickle.loads(base64.b64decode(lines(journal)[0]["value_b64"])) == (1, "tuple")
