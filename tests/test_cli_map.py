"""`taskloom map` end to end, in subprocesses: formats, errors, exit codes, --resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]


def taskloom(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskloom._cli", *args], capture_output=True, text=True,
                          input=stdin, timeout=120, cwd=ROOT)


def lines(path: Path) -> list[dict[str, object]]:
    """OUTPUT's records by index (a journal is written as records end, not in input order)."""
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda r: int(str(r["index"])))


def test_plain_lines_with_an_error_recorded(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("1\n2\nnot a number\n4\n")
    out = tmp_path / "out.jsonl"
    proc = taskloom("map", "tests.cli_tasks:inc", str(source), "-o", str(out), "--mode", "threads")
    assert proc.returncode == 1, proc.stderr
    assert "3 succeeded, 1 failed" in proc.stderr
    rows = lines(out)
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert [r.get("value") for r in rows] == [2, 3, None, 5]
    error = rows[2]["error"]
    assert isinstance(error, dict)
    assert error["type"] == "ValueError"
    assert "not a number" in str(error["message"])
    assert "Traceback" in str(error["traceback"])


def test_jsonl_with_star_on_processes(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("[1, 2]\n[3, 4]\n[5, 6]\n")
    out = tmp_path / "out.jsonl"
    proc = taskloom("map", "tests.cli_tasks:add", str(source), "--star", "-o", str(out), "--mode", "processes")
    assert proc.returncode == 0, proc.stderr
    assert [r["value"] for r in lines(out)] == [3, 7, 11]
    assert [r["input"] for r in lines(out)] == [[1, 2], [3, 4], [5, 6]]


def test_csv_rows_are_dicts_and_stdout_is_the_default(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a,b\n1,2\n10,20\n")
    proc = taskloom("map", "tests.cli_tasks:row_total", str(source))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["value"] for r in rows] == [3, 30]
    assert rows[0]["input"] == {"a": "1", "b": "2"}


def test_stdin_input(tmp_path: Path) -> None:
    proc = taskloom("map", "tests.cli_tasks:inc", "-", "--unordered", stdin="1\n2\n3\n")
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(line)["value"] for line in proc.stdout.splitlines()) == [2, 3, 4]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["map", "tests.nope:f", "README.md"], "cannot import module"),
        (["map", "tests.cli_tasks:NOT_CALLABLE", "README.md"], "is not callable"),
        (["map", "tests.cli_tasks:inc", "no/such/file.txt"], "cannot read"),
        (["map", "tests.cli_tasks:inc", "README.md", "--resume"], "--resume needs -o"),
        (["map", "tests.cli_tasks:inc", "README.md", "--mode", "gpu"], "unknown mode"),
        (["map", "tests.cli_tasks:inc", "README.md", "--workers", "0"], "expected a whole number >= 1"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(args: list[str], message: str) -> None:
    proc = taskloom(*args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_resume_after_sigkill_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    n = 400
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{i}\n" for i in range(n)))
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "taskloom._cli", "map", "tests.cli_tasks:slow_inc", str(source), "-o", str(out),
            "--mode", "processes", "--workers", "2", "--unordered"]
    runner = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until a good part is written, then kill it
            if out.exists() and out.read_text().count("\n") >= 60:
                break
            time.sleep(0.02)
        else:
            pytest.fail("deadlock: the runner wrote nothing within 60 s")
        family = [runner.pid] + [p.pid for p in psutil.Process(runner.pid).children(recursive=True)]
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(30)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    assert psutil.wait_procs([psutil.Process(p) for p in family if psutil.pid_exists(p)], timeout=10)[1] == []
    with out.open("a") as f:
        f.write('{"index": 9999, "inp')  # a torn last line, as if killed mid-write
    first_part = out.read_text().count("\n")
    assert first_part < n

    proc = taskloom("map", "tests.cli_tasks:slow_inc", str(source), "-o", str(out), "--mode", "threads",
                    "--workers", "8", "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "already done" in proc.stderr
    rows = lines(out)
    indexes = [r["index"] for r in rows]
    assert sorted(indexes) == list(range(n))  # every item exactly once
    assert all(r["value"] == int(str(r["input"])) + 1 for r in rows)


def test_resume_exits_1_when_an_earlier_run_recorded_a_failure(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("1\nnot a number\n3\n")
    out = tmp_path / "out.jsonl"
    first = taskloom("map", "tests.cli_tasks:inc", str(source), "-o", str(out), "--mode", "threads")
    assert first.returncode == 1, first.stderr
    again = taskloom("map", "tests.cli_tasks:inc", str(source), "-o", str(out), "--resume")
    assert again.returncode == 1, again.stderr  # nothing ran, but the recorded failure still counts
    assert "2 succeeded, 1 failed (3 of them already done by an earlier run)" in again.stderr
    assert len(lines(out)) == 3  # nothing was run or written twice

    source.write_text("1\n2\n3\n")  # the bad record fixed: --rerun-failed runs just that one again
    fixed = taskloom("map", "tests.cli_tasks:inc", str(source), "-o", str(out), "--resume", "--rerun-failed")
    assert fixed.returncode == 0, fixed.stderr
    assert "3 succeeded, 0 failed (2 of them already done by an earlier run)" in fixed.stderr
    assert [r["index"] for r in lines(out)][-1] == 2
    assert len(lines(out)) == 4


def test_a_second_runner_on_the_same_output_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{i}\n" for i in range(100_000)))
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "taskloom._cli", "map", "tests.cli_tasks:slow_inc", str(source), "-o", str(out),
            "--mode", "threads", "--workers", "2"]
    runner = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.stat().st_size > 0):  # it holds the journal once it wrote a record
            assert time.monotonic() < deadline, "the first runner wrote nothing within 60 s"
            time.sleep(0.02)
        second = taskloom("map", "tests.cli_tasks:inc", str(source), "-o", str(out), "--resume")
        assert second.returncode == 2
        assert "is in use by another run" in second.stderr
        assert f"process {runner.pid}" in second.stderr
    finally:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(30)
