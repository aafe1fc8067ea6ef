"""The ``taskloom bench`` suite: workload checks, the loopback server, CPU metering, scoring, rendering.

No test asserts a timing: the machine is shared and noisy. Runs use the "test" size.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import re
import subprocess
import sys
import urllib.error
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from taskloom._bench import (
    BENCH_MODES,
    SMALL_ENV,
    WORKLOADS,
    ModeResult,
    SuiteResult,
    Workload,
    WorkloadResult,
    WrongResult,
    _cpu,
    _mixed,
    _numpy,
    _runner,
    available_modes,
    bench_size,
    default_repeat,
    get_workload,
    register,
    render_html,
    run_suite,
)
from taskloom._bench._charts import summary_svg, workload_svg
from taskloom._bench._runner import _score
from taskloom._bench._tables import format_seconds, notes, plain_table, rows, skipped, timing_note
from taskloom._bench._workloads import SIZES, cpu_task, fib, io_task, square
from taskloom._system import usable_cpus


def _runnable() -> list[str]:
    return [name for name, w in WORKLOADS.items() if w.unavailable() is None]


@contextlib.contextmanager
def _answers(name: str) -> Iterator[tuple[Workload, list[Any], list[Any]]]:
    """A workload's test-size items (server running, if any) and the right answers for them."""
    workload = get_workload(name)
    with workload.open("test") as items:
        yield workload, items, [workload.fn(item) for item in items]


# -- the workloads' checks ----------------------------------------------------------------------------
def test_every_workload_but_array_shared_runs_here() -> None:
    # numpy is a dev dependency; array-shared waits for taskloom.SharedArray (tested with a stand-in below).
    assert set(WORKLOADS) - set(_runnable()) <= {"array-shared"}
    assert list(WORKLOADS)[:7] == ["cpu", "io", "fib", "tiny", "mixed", "array", "array-shared"]


@pytest.mark.parametrize("name", _runnable())
def test_check_passes_on_the_right_answers(name: str) -> None:
    with _answers(name) as (workload, items, results):
        workload.check(items, results)


@pytest.mark.parametrize("name", _runnable())
def test_check_raises_on_a_wrong_answer(name: str) -> None:
    with _answers(name) as (workload, items, results):
        results[-1] = "not the answer"
        with pytest.raises(WrongResult, match=rf"workload {name!r}: result {len(items) - 1} "):
            workload.check(items, results)


@pytest.mark.parametrize("name", _runnable())
def test_check_raises_on_a_nearly_right_answer(name: str) -> None:
    # Off by one (the smallest error an integer answer can have; one missing element for array).
    with _answers(name) as (workload, items, results):
        if isinstance(results[0], str):
            results[0] += "!"
        else:
            results[0] += 1
        with pytest.raises(WrongResult, match=rf"workload {name!r}: result 0 "):
            workload.check(items, results)


# "cpu" and "io" are left out: their tasks all have the same answer, so an order cannot show.
@pytest.mark.parametrize("name", [n for n in _runnable() if n not in ("cpu", "io")])
def test_check_raises_on_answers_out_of_order(name: str) -> None:
    with _answers(name) as (workload, items, results):
        assert len(set(map(repr, results))) > 1
        results.reverse()
        with pytest.raises(WrongResult):
            workload.check(items, results)


@pytest.mark.parametrize("name", _runnable())
def test_check_raises_on_a_missing_answer(name: str) -> None:
    with _answers(name) as (workload, items, results), \
            pytest.raises(WrongResult, match=rf"expected {len(items)} results, got {len(items) - 1}"):
        workload.check(items, results[:-1])


@pytest.mark.parametrize("name", _runnable())
def test_sizes_grow(name: str) -> None:
    workload = get_workload(name)
    # Not "full": it builds 256 MB of arrays. The size tables are checked below.
    assert len(workload.items("test")) <= len(workload.items("quick"))


def test_size_tables_grow() -> None:
    from taskloom._bench import _workloads as w

    for table in (w.CPU_SIZES, w.IO_SIZES, w.TINY_SIZES, _mixed.MIXED_SIZES, _numpy.ARRAY_SIZES):
        assert list(table) == list(SIZES)
        assert table["test"] <= table["quick"] <= table["full"]  # type: ignore[operator]


def test_the_task_functions() -> None:
    assert cpu_task(4) == 0 + 1 + 4 + 9
    assert [fib(n) for n in range(8)] == [0, 1, 1, 2, 3, 5, 8, 13]
    assert square(7) == 49
    assert io_task(0.0) == "Completed after 0.0s"


def test_async_version_only_where_there_is_one() -> None:
    assert get_workload("cpu").function_for("async") is None
    assert get_workload("io").function_for("async") is not None
    assert get_workload("mixed").function_for("async") is _mixed.fetch_and_digest_async
    assert get_workload("io").function_for("threads") is io_task


def test_unknown_workload_names_the_choices() -> None:
    with pytest.raises(KeyError, match="no workload named 'gpu': choose from cpu, io, fib, tiny, mixed"):
        get_workload("gpu")


def test_register_refuses_a_duplicate_name() -> None:
    with pytest.raises(ValueError, match="a workload named 'cpu' is already registered"):
        register(get_workload("cpu"))


def test_wrong_result_message_stays_one_line() -> None:
    workload = get_workload("array")
    with workload.open("test") as items, pytest.raises(WrongResult) as caught:
        workload.check(items[:1], [0.0])
    assert "\n" not in str(caught.value)
    assert len(str(caught.value)) < 250


# -- the loopback HTTP server -------------------------------------------------------------------------
def test_mixed_fetches_from_the_loopback_server() -> None:
    with _mixed.serve([(3, 50, 0.0), (4, 50, 0.001)]) as urls:
        assert all(url.startswith("http://127.0.0.1:") for url in urls)
        got = [_mixed.fetch_and_digest(url) for url in urls]
        got_async = asyncio.run(_gather(urls))
    want = [_mixed.digest(_mixed.make_body(i, 50)) for i in (3, 4)]
    assert got == want
    assert got_async == want
    assert got[0] != got[1]


async def _gather(urls: list[str]) -> list[int]:
    return list(await asyncio.gather(*(_mixed.fetch_and_digest_async(url) for url in urls)))


@pytest.mark.parametrize("url", [
    "http://example.com/data/1?n=1&delay=0",
    "https://127.0.0.1:1/data/1?n=1&delay=0",
    "http://localhost:80/data/1?n=1&delay=0",
    "http://127.0.0.1/data/1?n=1&delay=0",
])
def test_fetch_refuses_anything_but_the_loopback_address(url: str) -> None:
    with pytest.raises(ValueError, match=r"the bench fetches only http://127\.0\.0\.1:<port>/ URLs"):
        _mixed.fetch_and_digest(url)
    with pytest.raises(ValueError, match="the bench fetches only"):
        asyncio.run(_mixed.fetch_and_digest_async(url))


def test_fetch_ignores_a_proxy_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy would take the request off this machine; the bench's opener has no proxy handler.
    monkeypatch.setenv("http_proxy", "http://192.0.2.1:9")  # TEST-NET-1: never routed
    monkeypatch.setenv("HTTP_PROXY", "http://192.0.2.1:9")
    _mixed._opener.cache_clear()
    try:
        with _mixed.serve([(1, 10, 0.0)]) as (url,):
            assert _mixed.fetch_and_digest(url) == _mixed.digest(_mixed.make_body(1, 10))
    finally:
        _mixed._opener.cache_clear()


def test_server_answers_404_off_its_pages() -> None:
    with _mixed.serve([(1, 10, 0.0)]) as (url,):
        base = url.split("/data/")[0]
        with pytest.raises(urllib.error.HTTPError, match="404"):
            _mixed.fetch_and_digest(base + "/elsewhere")
        with pytest.raises(ConnectionError, match="bad response"):
            asyncio.run(_mixed.fetch_and_digest_async(base + "/data/x?n=1&delay=0"))


# -- the large-array workloads -------------------------------------------------------------------------
class _FakeShared:
    """A stand-in for the planned ``taskloom.SharedArray`` (DESIGN.md section 8): same surface."""

    opened = 0
    closed = 0

    def __init__(self, array: np.ndarray[Any, Any]) -> None:
        self._array = array

    @classmethod
    @contextlib.contextmanager
    def from_numpy(cls, array: np.ndarray[Any, Any]) -> Iterator[_FakeShared]:
        cls.opened += 1
        try:
            yield cls(array.copy())
        finally:
            cls.closed += 1

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        return self._array


def test_array_shared_hook_runs_once_shared_array_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    import taskloom

    workload = get_workload("array-shared")
    if not hasattr(taskloom, "SharedArray"):
        assert "SharedArray" in (workload.unavailable() or "")
    monkeypatch.setattr(taskloom, "SharedArray", _FakeShared, raising=False)
    assert workload.unavailable() is None
    suite = run_suite([workload], ["threads"], repeat=1, size="test")
    assert suite.ok, suite.failures
    assert _FakeShared.opened == _FakeShared.closed == 1
    (result,) = suite.workloads
    assert result.tasks == len(_numpy._items("test"))


def test_array_is_skipped_without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_numpy.importlib.util, "find_spec", lambda name: None)
    assert get_workload("array").unavailable() == "needs numpy: pip install 'taskloom[bench]'"
    suite = run_suite([get_workload("array"), get_workload("array-shared")], ["threads"], repeat=1, size="test")
    assert suite.workloads == []
    assert set(suite.skipped_workloads) == {"array", "array-shared"}
    assert "workload array not run: needs numpy" in skipped(suite)[0]


# -- CPU metering --------------------------------------------------------------------------------------
def test_cpu_seconds_counts_each_descendant_once() -> None:
    before: _cpu.CpuSnapshot = (1.0, {(10, 5.0): 2.0, (11, 5.0): 1.0, (12, 5.0): 9.0})
    # 10 spent 0.5; 11 exited (lost); 12's pid was reused by a new process (all of its 0.25 counts);
    # 13 is new (all of its 0.75 counts); this process spent 0.5.
    after: _cpu.CpuSnapshot = (1.5, {(10, 5.0): 2.5, (12, 7.0): 0.25, (13, 6.0): 0.75})
    assert _cpu.cpu_seconds(before, after) == pytest.approx(0.5 + 0.5 + 0.25 + 0.75)


def test_cpu_snapshot_sees_a_busy_child() -> None:
    code = ("import sys, time\n"
            "while time.process_time() < 0.3: pass\n"
            "print('spun', flush=True)\n"
            "sys.stdin.read()\n")
    before = _cpu.snapshot()
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as child:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline().strip() == "spun"
        after = _cpu.snapshot(own_first=True)
        child.stdin.close()
        assert child.wait(timeout=30) == 0
    assert _cpu.cpu_seconds(before, after) >= 0.25  # CPU time, not wall time: safe on a busy machine


# -- modes and sizes ----------------------------------------------------------------------------------
def test_bench_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SMALL_ENV, raising=False)
    assert bench_size() == "full"
    assert bench_size(quick=True) == "quick"
    monkeypatch.setenv(SMALL_ENV, "1")
    assert bench_size() == bench_size(quick=True) == "test"
    assert default_repeat("full") >= default_repeat("quick") >= 1


def test_dask_is_skipped_until_taskloom_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "dask" in BENCH_MODES
    monkeypatch.setattr(_runner, "MODE_NAMES", ("sequential", "threads"))
    run, skipped_modes = available_modes(["threads", "dask", "threads"])
    assert run == ["threads"]
    assert skipped_modes == {"dask": "this version of taskloom has no mode 'dask' yet"}


def test_dask_needs_distributed_once_taskloom_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_runner, "MODE_NAMES", ("sequential", "dask"))
    monkeypatch.setattr(_runner.importlib.util, "find_spec", lambda name: None)
    assert available_modes(["dask"]) == ([], {"dask": "needs the 'distributed' package: "
                                                       "pip install 'taskloom[dask]'"})


def test_a_mode_taskloom_has_is_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # What happens the day MODE_NAMES gains "dask" (distributed is a dev dependency).
    monkeypatch.setattr(_runner, "MODE_NAMES", (*_runner.MODE_NAMES, "dask"))
    assert available_modes(["dask"]) == (["dask"], {})


# -- the runner ---------------------------------------------------------------------------------------
def _off_by_one(n: int) -> int:
    return n + 1


def _same(n: int) -> int:
    return n


WRONG = Workload(name="wrong", description="answers wrong", fn=_off_by_one, items=lambda size: [1, 2, 3],
                 expect=_same)


def test_suite_times_checks_and_scores() -> None:
    suite = run_suite([get_workload("cpu")], ["threads"], repeat=2, size="test")
    assert suite.ok
    (result,) = suite.workloads
    assert [r.mode for r in result.results] == ["sequential", "threads"]  # the baseline comes first
    for r in result.results:
        assert len(r.times) == len(r.cpu) == 2
        assert r.first_call is not None
        assert r.low <= r.median <= r.high
        assert r.speedup is not None
        assert r.efficiency is not None
        assert math.isclose(r.efficiency, r.speedup / usable_cpus())
        assert r.utilisation is not None
        assert r.utilisation >= 0
    assert result.results[0].speedup == pytest.approx(1.0)
    assert sum(r.winner for r in result.results) == 1
    assert result.verdict.startswith("cpu (CPU-bound pure Python): ")
    assert result.skipped == {}
    assert suite.skipped_modes == {}
    data = suite.to_dict()
    assert data["settings"]["size"] == "test"
    assert len(data["workloads"][0]["results"][1]["cpu_seconds"]) == 2


def test_a_wrong_answer_is_a_failure_not_a_time() -> None:
    suite = run_suite([WRONG], ["threads"], repeat=1, size="test")
    assert not suite.ok
    for r in suite.workloads[0].results:
        assert r.times == []
        assert r.cpu == []
        assert r.error is not None
        assert r.error.startswith("WrongResult: workload 'wrong': result 0")
        assert r.utilisation is None
    assert suite.failures[0].startswith("wrong/sequential: WrongResult")
    assert "no mode answered right" in suite.workloads[0].verdict
    assert suite.to_dict()["ok"] is False
    assert workload_svg(suite.workloads[0]) is None  # nothing to draw
    assert summary_svg(suite) is None


def test_async_is_skipped_without_an_async_function() -> None:
    suite = run_suite([get_workload("cpu")], ["async"], repeat=1, size="test")
    assert [r.mode for r in suite.workloads[0].results] == ["sequential"]
    assert "async" in suite.workloads[0].skipped


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"modes": ["turbo"]}, "unknown mode 'turbo'"),
    ({"repeat": 0}, "repeat must be >= 1, got 0"),
    ({"workers": 0}, "workers must be >= 1 or None, got 0"),
    ({"size": "huge"}, "size must be one of full, quick, test, got 'huge'"),
])
def test_run_suite_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"modes": ["threads"], **kwargs}
    modes = args.pop("modes")
    with pytest.raises(ValueError, match=message):
        run_suite([get_workload("cpu")], modes, **args)  # type: ignore[arg-type]


def _fake(mode: str, times: list[float], ran_as: str | None = None, workers: int = 2) -> ModeResult:
    return ModeResult(mode, ran_as=ran_as or mode, workers=workers, times=times)


def test_scoring_and_verdict() -> None:
    cpu = get_workload("cpu")
    results = [_fake("sequential", [1.0, 1.0, 1.2], workers=1), _fake("threads", [1.0], workers=6),
               _fake("processes", [0.5, 0.52]), _fake("auto", [0.6], ran_as="processes")]
    verdict = _score(cpu, results, cpus=2)
    assert verdict == ("cpu (CPU-bound pure Python): processes, 2.0x on 2 CPUs; threads 1.0x - the GIL; "
                       "auto 1.7x - chose processes")
    assert [r.winner for r in results] == [False, False, True, False]
    assert results[2].efficiency == pytest.approx(0.99, abs=0.01)


def test_verdict_when_sequential_wins_or_a_mode_fails() -> None:
    io_wl = get_workload("io")
    failed = ModeResult("processes", error="WrongResult: no")
    results = [_fake("sequential", [0.1], workers=1), _fake("threads", [0.2], workers=6), failed]
    verdict = _score(io_wl, results, cpus=1)
    assert verdict.startswith("io (I/O-bound waits): sequential - the tasks are too small for a pool to pay "
                              "for itself on 1 CPU; threads 0.5x - 6 threads wait at once")
    assert verdict.endswith("; FAILED: processes")


def test_utilisation_is_cpu_over_wall_times_cpus() -> None:
    r = ModeResult("processes", times=[1.0, 2.0, 4.0], cpu=[1.0, 3.0, 2.0], cpus=2)
    assert r.utilisation == pytest.approx(0.5)  # median of 0.5, 0.75, 0.25


@pytest.mark.parametrize(("mode", "times", "cpu", "cell"), [
    ("processes", [1.0], [1.5], "75%"),
    ("processes", [1.0], [2.5], "100%"),  # tick rounding can overshoot: never shown above 100%
    ("processes", [0.01], [0.03], "~100%"),  # a 10 ms run: worker CPU time is rough
    ("threads", [0.01], [0.01], "50%"),  # this process's own CPU time is exact
])
def test_cpu_use_cell(mode: str, times: list[float], cpu: list[float], cell: str) -> None:
    result = WorkloadResult(get_workload("cpu"), 1, [ModeResult(mode, ran_as=mode, workers=2, times=times, cpu=cpu,
                                                                cpus=2)])
    assert rows(result)[0].cells[5] == cell
    assert ("~ marks runs under 100 ms" in notes(result, 2)[-1]) is cell.startswith("~")


# -- rendering ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("seconds", "text"), [
    (12.345, "12.3 s"), (1.0, "1.00 s"), (0.9999, "1.00 s"), (0.0284, "28.4 ms"), (0.1234, "123 ms"),
    (0.0000123, "12.3 us"), (float("nan"), "-"),
])
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_plain_table_aligns_columns() -> None:
    text = plain_table(("name", "n"), [("a", "1"), ("long name", "100")], (False, True))
    lines = text.splitlines()
    assert lines[0] == "name         n"
    assert lines[1] == "---------  ---"
    assert lines[3] == "long name  100"


@pytest.fixture(scope="module")
def suite() -> Iterator[SuiteResult]:
    # Module-scoped: one short run feeds every rendering test. The autouse fixture shuts the
    # pools after the first test that uses it; the results are plain data by then.
    return run_suite([get_workload("io"), get_workload("mixed")], ["threads", "async", "dask"], repeat=1,
                    size="test")


def test_rows_and_html_report(suite: SuiteResult) -> None:
    result = suite.workloads[0]
    table = rows(result)
    dask = ["dask"] if "dask" not in suite.skipped_modes else []  # runs once taskloom has mode="dask"
    assert [r.cells[0] for r in table] == ["sequential", "threads", "async", *dask]
    assert sum(r.winner for r in table) == 1
    assert all(r.cells[5].endswith("%") for r in table)  # CPU use
    page = render_html(suite)
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<table") == 3  # two workloads and the machine
    assert page.count("<svg") == 3  # a chart per workload and the summary
    # Self-contained: no script, no stylesheet link, no URL but the SVG namespaces, internal refs only.
    assert "<script" not in page
    assert "<link" not in page
    assert set(re.findall(r"https?://[^\s\"']+", page)) <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    assert not re.findall(r"(?:src|href)=\"(?!#)", page)
    for row in table:
        for cell in row.cells:
            assert cell.replace("'", "&#x27;") in page
    assert f"<td>CPUs usable</td><td>{usable_cpus()}</td>" in page
    assert "Warm-pool times" in page
    if "dask" in suite.skipped_modes:
        assert "mode dask not run" in page


def test_html_escapes_text(suite: SuiteResult) -> None:
    saved = suite.workloads[0].verdict
    suite.workloads[0].verdict = "<script>alert(1)</script>"
    try:
        page = render_html(suite)
    finally:
        suite.workloads[0].verdict = saved
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_report_without_matplotlib(suite: SuiteResult, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskloom._bench import _charts

    monkeypatch.setattr(_charts.importlib.util, "find_spec", lambda name: None)
    page = render_html(suite)
    assert "<svg" not in page
    assert "No charts: charts need matplotlib: pip install &#x27;taskloom[bench]&#x27;" in page
    assert page.count("<table") == 3


def test_rich_renderers_do_not_fail(suite: SuiteResult) -> None:
    from taskloom._cli._bench import _RichProgress, print_rich

    out = io.StringIO()
    print_rich(suite, out)
    assert "Verdict" in out.getvalue()
    assert "fastest" in out.getvalue()
    progress = _RichProgress(io.StringIO())
    progress.start(2)
    progress.step("io", "threads", "warm-up")
    progress.step("io", "threads", "run 1/1")
    progress.finished("io", suite.workloads[0].results[1])
    progress.close()


def test_timing_note_warns_about_outside_load(suite: SuiteResult) -> None:
    saved = suite.machine["load_average"]
    try:
        suite.machine["load_average"] = [0.0, 0.0, 0.0]
        assert "Note: the load average" not in timing_note(suite)
        suite.machine["load_average"] = [99.0, 1.0, 1.0]
        assert "Note: the load average was 99.00" in timing_note(suite)
        assert "99.00 before the run" in timing_note(suite)
    finally:
        suite.machine["load_average"] = saved
