"""journal=: the process running a map is SIGKILLed mid-run, then the same map runs again on its journal.

Each engine that runs in the parent's process tree (threads, processes, async) is killed for real
(the whole session: parent and workers); the second run must give the result of a run that was
never killed, record every item exactly once, and not run again any item the journal had recorded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import helpers
from tests.journal_tasks import expected, runs

ROOT = Path(__file__).resolve().parents[2]
N = 300


def journal_indexes(path: Path) -> list[int]:
    """The indexes of the journal's whole lines (a torn last one, cut short by the kill, is not one)."""
    return [json.loads(line)["index"] for line in path.read_bytes().split(b"\n")[:-1]]


@pytest.mark.parametrize("mode", ["threads", "processes", "async"])
def test_a_killed_run_resumes_from_its_journal_without_running_a_recorded_item_twice(mode: str, tmp_path: Path) -> None:
    journal, logdir = tmp_path / "run.jsonl", tmp_path / "log"
    logdir.mkdir()
    args = [sys.executable, "-m", "tests.journal_tasks", mode, str(journal), str(logdir), str(N)]
    runner = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not (journal.exists() and journal.read_bytes().count(b"\n") >= N // 4):
            assert runner.poll() is None, f"the runner ended before it was killed: {runner.stderr.read()!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the runner recorded too little within 90 s"
            time.sleep(0.01)
        os.killpg(runner.pid, signal.SIGKILL)  # the parent and its workers, at once
        runner.wait(30)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(30)
        assert runner.stderr is not None
        runner.stderr.close()
    helpers.assert_session_empty(runner.pid)
    before = set(journal_indexes(journal))
    assert len(before) < N, "the run finished before it was killed: nothing to resume"

    code, out, err, sid = helpers.run_in_own_session(args, cwd=ROOT)
    assert code == 0, err
    helpers.assert_session_empty(sid)
    assert json.loads(out) == expected(N)  # as if never killed, recorded errors included
    indexes = journal_indexes(journal)
    assert sorted(indexes) == list(range(N))  # every item recorded exactly once
    counts = runs(logdir)
    assert set(counts) == set(range(N))
    ran_again = sorted(i for i in before if counts[i] != 1)
    assert ran_again == [], f"items the journal had recorded ran again: {ran_again}"
