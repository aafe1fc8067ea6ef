"""``pipeline(..., journal=)`` (``_pipeline_journal.py``): a pipeline resumed from its journal.

Per source item, the journal keeps what came out of the whole pipeline (or the failure); a run
on a journal cut short (as by a kill) feeds only the source items it lacks.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

import taskloom as tl
from tests import helpers
from tests.journal_tasks import Logged, runs


def pairs(x: int) -> list[int]:
    return [x, -x]


def build(source: Any, logdir: Path, journal: Path, **options: Any) -> tl.Pipeline[Any]:
    """Logged (fails on 3, 13...) collects; a filter drops multiples of 4; flatten doubles the rest."""
    return (tl.pipeline(source, journal=journal, **options)
            .then(Logged(logdir), mode="threads", workers=4, on_error="collect")
            .filter(lambda v: v % 4)
            .then(pairs, mode="processes", workers=2)
            .flatten())


def cut(journal: Path, keep: int) -> set[int]:
    """Keep the first ``keep`` lines and half of the next (a torn line); the indexes kept."""
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(b"\n".join(lines[:keep]) + b"\n" + lines[keep][: len(lines[keep]) // 2])
    return {json.loads(line)["index"] for line in lines[:keep]}


def summary(pipe: tl.Pipeline[Any]) -> tuple[list[Any], list[tuple[int, str]]]:
    outputs = list(pipe)
    return outputs, sorted((f.index, str(f.error.__cause__)) for f in pipe.errors)


def test_a_resumed_pipeline_gives_what_an_uninterrupted_one_gives(tmp_path: Path) -> None:
    logdir, journal = tmp_path / "log", tmp_path / "j.jsonl"
    logdir.mkdir()
    want = summary(build(range(40), logdir, tmp_path / "once.jsonl"))
    assert want[1] == [(3, "item 3 is bad"), (13, "item 13 is bad"), (23, "item 23 is bad"), (33, "item 33 is bad")]
    assert 0 not in want[0]
    assert -1 in want[0]

    (logdir / "runs.log").unlink()
    build(range(40), logdir, journal).run()
    kept = cut(journal, 17)
    assert summary(build(range(40), logdir, journal)) == want  # recorded failures come back to errors
    counts = runs(logdir)
    assert all(counts[i] == 1 for i in kept)  # recorded items were not fed again
    assert sorted(json.loads(line)["index"] for line in journal.read_text().splitlines()) == list(range(40))
    by_index = {json.loads(line)["index"]: json.loads(line) for line in journal.read_text().splitlines()}
    assert by_index[4]["value"] == []
    assert by_index[5]["value"] == [25, -25]
    assert "error" in by_index[3]


def test_a_recorded_failure_of_a_raising_stage_is_raised_in_its_place(tmp_path: Path) -> None:
    logdir, journal = tmp_path / "log", tmp_path / "j.jsonl"
    logdir.mkdir()

    def pipe() -> tl.Pipeline[Any]:
        return tl.pipeline(range(10), journal=journal).then(Logged(logdir), mode="threads", workers=1)

    got: list[Any] = []
    with pytest.raises(tl.TaskError, match="item 3 is bad"):
        got.extend(pipe())
    assert got == [0, 1, 4]
    again: list[Any] = []
    with pytest.raises(tl.TaskError, match="item 3 is bad") as info:
        again.extend(pipe())
    assert again == [0, 1, 4]
    assert info.value.index == 3
    assert runs(logdir)[3] == 1  # raised from the journal, not run again
    fixed = tl.pipeline(range(10), journal=journal, rerun_failed=True).then(helpers.square, mode="threads")
    assert list(fixed) == [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]


def test_unordered_and_keyed_with_a_shuffled_source(tmp_path: Path) -> None:
    logdir, journal = tmp_path / "log", tmp_path / "j.jsonl"
    logdir.mkdir()
    items = list(range(30))

    def pipe(source: list[int]) -> tl.Pipeline[Any]:
        return (tl.pipeline(source, journal=journal, key=str, ordered=False)
                .then(Logged(logdir), mode="threads", on_error="collect").then(helpers.square, mode="threads"))

    first = summary(pipe(items[:20]))
    random.Random(3).shuffle(items)
    outputs, errors = summary(pipe(items))
    assert sorted(outputs) == sorted((x * x) ** 2 for x in range(30) if x % 10 != 3)
    assert errors == [(items.index(x), f"item {x} is bad") for x in sorted((3, 13, 23), key=items.index)]
    assert set(first[0]) < set(outputs)
    assert runs(logdir) == dict.fromkeys(range(30), 1)


def test_an_unordered_pipeline_with_a_filter_cannot_keep_a_journal(tmp_path: Path) -> None:
    pipe = tl.pipeline(range(3), journal=tmp_path / "j.jsonl", ordered=False).filter(bool).then(abs, mode="threads")
    with pytest.raises(ValueError, match=r"after filter\(bool\) .* use ordered=True with journal="):
        list(pipe)


def test_two_pipelines_on_one_journal_at_once_are_refused(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    first = iter(tl.pipeline(range(1000), journal=journal).then(helpers.square, mode="threads"))
    assert next(first) == 0
    with pytest.raises(tl.JournalError, match="in use by another run"):
        list(tl.pipeline(range(10), journal=journal).then(helpers.square, mode="threads"))
    first.close()  # type: ignore[attr-defined]
    assert list(tl.pipeline(range(3), journal=journal).then(helpers.square, mode="threads")) == [0, 1, 4]
