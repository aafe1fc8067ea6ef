"""The ``taskloom`` command: ``info``, ``bench``, ``--version`` and usage errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import taskloom
from taskloom._bench import BENCH_MODES, SMALL_ENV, WORKLOADS, Workload
from taskloom._bench._tables import format_seconds
from taskloom._cli import main
from taskloom._modes import MODE_NAMES
from taskloom._system import usable_cpus


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SMALL_ENV, "1")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- info ---------------------------------------------------------------------------------------------
def test_info_prints_the_cpu_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["CPUs usable"].strip() == str(usable_cpus())
    assert lines["os.cpu_count()"].strip() == str(os.cpu_count())
    assert "GIL enabled" in lines
    assert "forkserver" in out or "spawn" in out


def test_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["usable_cpus"] == usable_cpus()
    assert info["os_cpu_count"] == os.cpu_count()
    assert info["taskloom_version"] == taskloom.__version__
    assert info["default_start_method"] in info["start_methods"]
    assert isinstance(info["gil_enabled"], bool)
    assert isinstance(info["free_threading_build"], bool)
    assert set(info["default_workers"]) == {"sequential", "threads", "processes", "async"}
    assert info["default_workers"]["processes"] == usable_cpus()


def test_info_on_a_terminal_is_a_table(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["info"]) == 0
    assert "taskloom info" in out.getvalue()
    assert "CPUs usable" in out.getvalue()


# -- the command line ---------------------------------------------------------------------------------
def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"taskloom {taskloom.__version__}"


@pytest.mark.parametrize(("argv", "message"), [
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["bench", "--modes", "sequential,turbo"],
     f"argument --modes: unknown mode 'turbo': choose from {', '.join(MODE_NAMES)}"),
    (["bench", "--modes", ","], "expected at least one mode"),
    (["bench", "--workloads", "gpu"], "argument --workloads: unknown workload 'gpu': choose from cpu, io"),
    (["bench", "--repeat", "0"], "argument --repeat: expected a whole number >= 1, got '0'"),
    (["bench", "--workers", "many"], "argument --workers: expected a whole number >= 1, got 'many'"),
])
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "usage: taskloom" in err


def test_report_into_a_missing_folder_fails_before_running(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "nowhere" / "bench.html"
    assert main(["bench", "--report", str(target)]) == 2
    err = capsys.readouterr().err
    assert "--report" in err
    assert "does not exist" in err
    assert not target.parent.exists()


# -- bench --------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("small")
def test_bench_quick_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # What `make bench` runs (--quick --report), on test sizes: every workload, every mode.
    json_path, report_path = tmp_path / "bench.json", tmp_path / "bench.html"
    argv = ["bench", "--quick", "--repeat", "2", "--json", str(json_path), "--report", str(report_path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = captured.out
    for text in ("cpu: CPU-bound pure Python", "io: I/O-bound waits", "fib: CPU-bound recursion",
                 "tiny: tiny tasks", "mixed: HTTP fetch", "array: numpy over large blocks", "speedup",
                 "efficiency", "CPU use", "fastest", "Verdict", "Warm-pool times", "test-size inputs"):
        assert text in out
    assert "cpu/processes" in captured.err  # the plain progress lines

    data = json.loads(json_path.read_text())
    assert set(data) >= {"machine", "settings", "workloads", "ok", "started", "timing", "skipped_modes",
                         "skipped_workloads", "load_average_after"}
    assert data["ok"] is True
    assert data["machine"]["usable_cpus"] == usable_cpus()
    assert data["settings"] == {"workloads": list(WORKLOADS), "modes": list(BENCH_MODES),
                                "repeat": 2, "workers": None, "size": "test"}
    ran = [name for name in WORKLOADS if name not in data["skipped_workloads"]]
    by_name = {w["name"]: w for w in data["workloads"]}
    assert list(by_name) == ran
    assert set(ran) >= {"cpu", "io", "fib", "tiny", "mixed", "array"}
    modes = [m for m in BENCH_MODES if m not in data["skipped_modes"]]
    for name, workload in by_name.items():
        has_async = WORKLOADS[name].async_fn is not None
        assert [r["mode"] for r in workload["results"]] == [m for m in modes if has_async or m != "async"]
        assert ("async" in workload["skipped"]) is not has_async
    for mode, why in data["skipped_modes"].items():  # dask, until taskloom has it
        assert f"mode {mode} not run: {why}" in out
    html = report_path.read_text()
    for workload in data["workloads"]:
        assert workload["verdict"] in out
        assert sum(r["winner"] for r in workload["results"]) == 1
        for r in workload["results"]:
            assert set(r) >= {"mode", "ran_as", "workers", "times", "cpu_seconds", "cpu_utilisation", "median",
                              "min", "max", "first_call", "speedup", "efficiency", "winner", "ok", "error"}
            assert len(r["times"]) == len(r["cpu_seconds"]) == 2
            assert r["ok"]
            assert r["min"] <= r["median"] <= r["max"]
            # the report holds the same numbers as the terminal
            assert format_seconds(r["median"]) in html
            assert f"{r['speedup']:.2f}x" in html
            assert f"{100 * min(r['cpu_utilisation'], 1.0):.0f}%" in html  # shown capped at 100%
            assert format_seconds(r["median"]) in out
        # each workload's section: its table, then its chart
        section = html.split(f'<section id="workload-{workload["name"]}">')[1].split("</section>")[0]
        assert section.count("<table") == 1
        assert section.count("<svg") == 1
        assert f"{workload['name']}: {workload['description']}" in section
    assert html.count("<table") == len(data["workloads"]) + 1  # and the machine
    assert html.count("<svg") == len(data["workloads"]) + 1  # and the summary chart
    auto = next(r for r in by_name["io"]["results"] if r["mode"] == "auto")
    assert f"auto ({auto['ran_as']})" in html  # which engine auto chose, named


@pytest.mark.usefixtures("small")
def test_bench_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    out, err = _Terminal(), _Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["bench", "--workloads", "cpu", "--modes", "threads", "--repeat", "1", "--workers", "2"]) == 0
    assert "Verdict" in out.getvalue()
    assert "cpu/threads" in err.getvalue()


def _off_by_one(n: int) -> int:
    return n + 1


def _same(n: int) -> int:
    return n


@pytest.mark.usefixtures("small")
def test_bench_exits_1_on_a_wrong_answer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    wrong = Workload(name="wrong", description="answers wrong", fn=_off_by_one, items=lambda small: [1, 2],
                     expect=_same)
    monkeypatch.setitem(WORKLOADS, "wrong", wrong)
    json_path = tmp_path / "bench.json"
    assert main(["bench", "--workloads", "wrong", "--modes", "threads", "--repeat", "1",
                 "--json", str(json_path)]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err
    assert "wrong/threads: WrongResult: workload 'wrong': result 0 for item 1 is 2, expected 1" in err
    assert json.loads(json_path.read_text())["ok"] is False


def test_bench_via_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, SMALL_ENV: "1"}
    report = tmp_path / "bench.html"
    proc = subprocess.run(
        [sys.executable, "-m", "taskloom._cli", "bench", "--quick", "--workloads", "cpu",
         "--modes", "sequential,processes", "--repeat", "1", "--report", str(report)],
        capture_output=True, text=True, env=env, timeout=100, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "cpu (CPU-bound pure Python): " in proc.stdout
    assert "processes" in report.read_text()


def test_console_script_version() -> None:
    script = Path(sys.executable).with_name("taskloom")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable!r} (not installed with pip)")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"taskloom {taskloom.__version__}"


# -- advise -------------------------------------------------------------------------------------------
def test_advise_reads_plain_lines_and_explains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = tmp_path / "sample.txt"
    sample.write_text("\n".join(["1"] * 50) + "\n")
    assert main(["advise", "tests.cli_tasks:spin", str(sample)]) == 0
    out = capsys.readouterr().out
    assert "mode:" in out
    assert "sequential" in out
    assert "why:" in out
    assert "Measured" in out


def test_advise_json_from_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = tmp_path / "sample.jsonl"
    sample.write_text("\n".join(json.dumps({"id": i}) for i in range(8)) + "\n")
    assert main(["advise", "tests.cli_tasks:wait", str(sample), "--json", "--budget", "0.2"]) == 0
    advice = json.loads(capsys.readouterr().out)
    assert advice["mode"] == "threads"
    assert advice["workers"] > 6
    assert advice["reasons"]
    assert "measurements" in advice


def test_advise_csv_rows_are_dicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = tmp_path / "sample.csv"
    sample.write_text("a,b\n1,2\n3,4\n")
    assert main(["advise", "tests.cli_tasks:wait", str(sample), "--json", "--limit", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["measurements"]["item_bytes"] > 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.cli_tasks:missing", "has no attribute 'missing'"),
        ("tests.no_such_module:f", "cannot import module"),
        ("tests.cli_tasks:NOT_CALLABLE", "is not callable"),
        ("no_colon", "expected package.module:function"),
    ],
)
def test_advise_bad_function_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    sample = tmp_path / "s.txt"
    sample.write_text("1\n")
    assert main(["advise", spec, str(sample)]) == 2
    assert message in capsys.readouterr().err


def test_advise_bad_json_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = tmp_path / "s.jsonl"
    sample.write_text('{"ok": 1}\n{broken\n')
    assert main(["advise", "tests.cli_tasks:wait", str(sample)]) == 2
    assert "line 2" in capsys.readouterr().err


def test_advise_missing_or_empty_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["advise", "tests.cli_tasks:wait", str(tmp_path / "nope.txt")]) == 2
    assert "cannot read" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["advise", "tests.cli_tasks:wait", str(empty)]) == 2
    assert "holds no records" in capsys.readouterr().err
