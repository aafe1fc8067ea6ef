"""The ``taskloom bench`` suite: workload checks, the runner's scoring, and the renderers."""

from __future__ import annotations

import io
import math

import pytest

from taskloom._bench import (
    SMALL_ENV,
    WORKLOADS,
    ModeResult,
    SuiteResult,
    Workload,
    WrongResult,
    get_workload,
    register,
    render_html,
    run_suite,
    small_requested,
)
from taskloom._bench._runner import _score
from taskloom._bench._tables import format_seconds, plain_table, rows
from taskloom._bench._workloads import cpu_task, io_task
from taskloom._system import usable_cpus


def _right_answers(workload: Workload, items: list[object]) -> list[object]:
    fn = workload.fn
    return [fn(item) for item in items]


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_check_passes_on_the_right_answers(name: str) -> None:
    workload = get_workload(name)
    items = workload.make_items(small=True)
    workload.check(items, _right_answers(workload, items))


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_check_raises_on_a_wrong_answer(name: str) -> None:
    workload = get_workload(name)
    items = workload.make_items(small=True)
    results = _right_answers(workload, items)
    results[-1] = "not the answer"
    with pytest.raises(WrongResult, match=rf"workload {name!r}: result {len(items) - 1} "):
        workload.check(items, results)


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_check_raises_on_a_missing_answer(name: str) -> None:
    workload = get_workload(name)
    items = workload.make_items(small=True)
    with pytest.raises(WrongResult, match=rf"expected {len(items)} results, got {len(items) - 1}"):
        workload.check(items, _right_answers(workload, items)[:-1])


def test_small_inputs_are_smaller() -> None:
    cpu = get_workload("cpu")
    assert sum(cpu.make_items(small=True)) < sum(cpu.make_items(small=False))
    assert cpu_task(4) == 0 + 1 + 4 + 9
    io_wl = get_workload("io")
    assert sum(io_wl.make_items(small=True)) < sum(io_wl.make_items(small=False))
    assert io_task(0.0) == "Completed after 0.0s"


def test_async_version_only_where_there_is_one() -> None:
    assert get_workload("cpu").function_for("async") is None
    assert get_workload("io").function_for("async") is not None
    assert get_workload("io").function_for("threads") is io_task


def test_unknown_workload_names_the_choices() -> None:
    with pytest.raises(KeyError, match="no workload named 'gpu': choose from cpu, io"):
        get_workload("gpu")


def test_register_refuses_a_duplicate_name() -> None:
    with pytest.raises(ValueError, match="a workload named 'cpu' is already registered"):
        register(get_workload("cpu"))


def test_small_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SMALL_ENV, raising=False)
    assert not small_requested()
    assert small_requested(quick=True)
    monkeypatch.setenv(SMALL_ENV, "1")
    assert small_requested()


# -- the runner -------------------------------------------------------------------------------------
def _off_by_one(n: int) -> int:
    return n + 1


def _same(n: int) -> int:
    return n


WRONG = Workload(name="wrong", description="answers wrong", fn=_off_by_one, items=lambda small: [1, 2, 3],
                 expect=_same)


def test_suite_times_checks_and_scores() -> None:
    suite = run_suite([get_workload("cpu")], ["threads"], repeat=2, small=True)
    assert suite.ok
    (result,) = suite.workloads
    assert [r.mode for r in result.results] == ["sequential", "threads"]  # the baseline comes first
    for r in result.results:
        assert len(r.times) == 2
        assert r.first_call is not None
        assert r.low <= r.median <= r.high
        assert r.speedup is not None
        assert r.efficiency is not None
        assert math.isclose(r.efficiency, r.speedup / usable_cpus())
    assert result.results[0].speedup == pytest.approx(1.0)
    assert sum(r.winner for r in result.results) == 1
    assert result.verdict.startswith("cpu (CPU-bound pure Python): ")
    assert result.skipped == {}


def test_a_wrong_answer_is_a_failure_not_a_time() -> None:
    suite = run_suite([WRONG], ["threads"], repeat=1, small=True)
    assert not suite.ok
    for r in suite.workloads[0].results:
        assert r.times == []
        assert r.error is not None
        assert r.error.startswith("WrongResult: workload 'wrong': result 0")
    assert suite.failures[0].startswith("wrong/sequential: WrongResult")
    assert "no mode answered right" in suite.workloads[0].verdict
    assert suite.to_dict()["ok"] is False


def test_async_is_skipped_without_an_async_function() -> None:
    suite = run_suite([get_workload("cpu")], ["async"], repeat=1, small=True)
    assert [r.mode for r in suite.workloads[0].results] == ["sequential"]
    assert "async" in suite.workloads[0].skipped


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"modes": ["turbo"]}, "unknown mode 'turbo'"),
    ({"repeat": 0}, "repeat must be >= 1, got 0"),
    ({"workers": 0}, "workers must be >= 1 or None, got 0"),
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


@pytest.fixture
def suite() -> SuiteResult:
    return run_suite([get_workload("io")], ["threads", "async"], repeat=1, small=True)


def test_rows_and_html_report(suite: SuiteResult) -> None:
    (result,) = suite.workloads
    table = rows(result)
    assert [r.cells[0] for r in table] == ["sequential", "threads", "async"]
    assert sum(r.winner for r in table) == 1
    page = render_html(suite)
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<table") == 2  # the workload and the machine
    for row in table:
        for cell in row.cells:
            assert cell.replace("'", "&#x27;") in page
    assert f"<td>CPUs usable</td><td>{usable_cpus()}</td>" in page
    assert "Warm-pool times" in page


def test_html_escapes_text(suite: SuiteResult) -> None:
    suite.workloads[0].verdict = "<script>alert(1)</script>"
    page = render_html(suite)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


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
    from taskloom._bench._tables import timing_note

    suite.machine["load_average"] = [0.0, 0.0, 0.0]
    assert "Note: the load average" not in timing_note(suite)
    suite.machine["load_average"] = [99.0, 1.0, 1.0]
    assert "Note: the load average was 99.00" in timing_note(suite)
