"""taskloom as a joblib backend (``taskloom.joblib``): scikit-learn's ``n_jobs`` on taskloom.

Real worker processes, real signals: a fit that SIGKILLs its own worker, a fit that never returns,
a real Ctrl-C to a process running a search. Results are compared with joblib's default backend
(loky) on a data set scikit-learn ships (iris).
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import psutil
import pytest
from sklearn.datasets import load_iris
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.svm import SVC

import taskloom
import taskloom.joblib
from tests import joblib_estimators as je
from tests import joblib_tasks as jt
from tests.helpers import poll_until, read_markers, session_members

ROOT = Path(__file__).resolve().parent.parent
CPUS = taskloom.Processes().default_workers()

X, Y = load_iris(return_X_y=True)
CV = KFold(n_splits=3, shuffle=True, random_state=0)
SVC_GRID = {"C": [0.1, 1.0, 10.0], "gamma": [0.01, 0.1, "scale"]}


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    taskloom.joblib.register()
    yield
    _stop_loky()


def _stop_loky() -> None:
    """loky keeps its workers for the next call: end them, so the test leaves no child behind."""
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _scores(search: GridSearchCV) -> list[float]:
    return [float(s) for s in search.cv_results_["mean_test_score"]]


def _same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))


def _wait_for_markers(folder: Path, n: int, timeout: float = 30.0) -> dict[str, str]:
    assert poll_until(lambda: len(read_markers(folder)) >= n, timeout=timeout), (
        f"{n} task(s) did not start within {timeout} s: {sorted(read_markers(folder))}")
    return read_markers(folder)


# -- registration, the 10,000 tiny tasks, n_jobs -------------------------------------------------------------
@pytest.mark.smoke
def test_register_makes_the_backend_selectable() -> None:
    assert joblib.parallel.BACKENDS["taskloom"] is taskloom.joblib.TaskloomBackend
    taskloom.joblib.register()  # twice is fine
    with joblib.parallel_config(backend="taskloom", n_jobs=2):
        backend, n_jobs = joblib.parallel.get_active_backend()
    assert isinstance(backend, taskloom.joblib.TaskloomBackend)
    assert n_jobs == 2


def test_ten_thousand_tiny_tasks_run_on_taskloom_workers() -> None:
    with joblib.parallel_config(backend="taskloom"):
        out = joblib.Parallel(n_jobs=2)(joblib.delayed(jt.square_and_pid)(i) for i in range(10_000))
    assert [value for value, _ in out] == [i * i for i in range(10_000)]
    pids = {p for _, p in out}
    assert os.getpid() not in pids, "the tasks ran in the calling process"
    assert 1 <= len(pids) <= 2


def test_plain_parallel_with_backend_name() -> None:
    out = joblib.Parallel(n_jobs=2, backend="taskloom")(joblib.delayed(jt.square)(i) for i in range(100))
    assert out == [i * i for i in range(100)]


@pytest.mark.smoke
def test_n_jobs_follows_joblibs_conventions() -> None:
    backend = taskloom.joblib.TaskloomBackend()
    assert backend.effective_n_jobs(-1) == CPUS
    assert backend.effective_n_jobs(-2) == max(CPUS - 1, 1)
    assert backend.effective_n_jobs(None) == CPUS  # unset: every usable CPU, as joblib's dask backend
    assert backend.effective_n_jobs(3) == 3
    with pytest.raises(ValueError, match="n_jobs == 0"):
        backend.effective_n_jobs(0)
    with joblib.parallel_config(backend="taskloom"):
        assert joblib.Parallel().n_jobs == -1


def test_a_managed_parallel_goes_on_after_a_failed_call() -> None:
    with joblib.Parallel(n_jobs=2, backend="taskloom", crash_retries=0) as parallel:
        assert parallel(joblib.delayed(jt.square)(i) for i in range(5)) == [0, 1, 4, 9, 16]
        with pytest.raises(taskloom.WorkerCrashed, match=r"^joblib task 2 "):  # indexes count per call
            parallel(joblib.delayed(jt.crash_if)(i == 2, i) for i in range(4))
        assert parallel(joblib.delayed(jt.square)(i) for i in range(5)) == [0, 1, 4, 9, 16]


def test_n_jobs_1_is_joblibs_sequential_path_in_the_caller() -> None:
    with joblib.parallel_config(backend="taskloom", n_jobs=1):
        pids = joblib.Parallel()(joblib.delayed(jt.pid)(i) for i in range(5))
    assert set(pids) == {os.getpid()}


def test_nested_parallel_inside_a_task_uses_joblibs_nested_backend() -> None:
    with joblib.parallel_config(backend="taskloom", n_jobs=2):
        out = joblib.Parallel()(joblib.delayed(jt.nested_pids)(4) for _ in range(3))
    for worker, inner in out:
        assert worker != os.getpid()
        assert inner == [worker] * 4  # threads (joblib's default for the first nesting level) in the worker


# -- scikit-learn: equal to loky ------------------------------------------------------------------------------
def test_grid_search_and_cross_val_score_equal_lokys() -> None:
    def run(backend: str) -> tuple[GridSearchCV, np.ndarray]:
        with joblib.parallel_config(backend=backend, n_jobs=2):
            search = GridSearchCV(SVC(), SVC_GRID, cv=CV).fit(X, Y)
            scores = cross_val_score(SVC(C=3.0), X, Y, cv=CV)
        return search, scores

    loky_search, loky_scores = run("loky")
    ours_search, ours_scores = run("taskloom")
    assert _scores(ours_search) == _scores(loky_search)
    assert ours_search.best_params_ == loky_search.best_params_
    assert ours_search.best_score_ == loky_search.best_score_
    assert list(ours_scores) == list(loky_scores)


# -- crashes ------------------------------------------------------------------------------------------------
def test_a_fit_that_kills_its_worker_is_retried_and_the_search_completes(tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    grid = {"max_depth": [1, 2, 3, None]}
    with joblib.parallel_config(backend="taskloom", n_jobs=2, crash_retries=1):
        search = GridSearchCV(je.CrashOnceTree(marker=str(marker)), grid, cv=CV, error_score="raise").fit(X, Y)
    assert marker.exists(), "no fit crashed its worker"
    crashed = int(marker.read_text())
    assert crashed != os.getpid()
    assert not psutil.pid_exists(crashed) or psutil.Process(crashed).status() == psutil.STATUS_ZOMBIE
    with joblib.parallel_config(backend="loky", n_jobs=2):  # the marker is there now: no crash
        reference = GridSearchCV(je.CrashOnceTree(marker=str(marker)), grid, cv=CV, error_score="raise").fit(X, Y)
    assert _scores(search) == _scores(reference)
    assert search.best_params_ == reference.best_params_


def test_a_call_that_keeps_crashing_fails_with_worker_crashed_naming_it() -> None:
    with joblib.parallel_config(backend="taskloom", n_jobs=2, crash_retries=1), \
            pytest.raises(taskloom.WorkerCrashed) as info:
        joblib.Parallel()(joblib.delayed(jt.crash_if)(i == 3, i) for i in range(6))
    error = info.value
    assert str(error).startswith("joblib task 3 (crash_if(True, 3)) crashed its worker 2 time(s)"), str(error)
    assert "SIGKILL" in str(error)
    assert error.index == 3
    assert len(error.history) == 2  # the first run and one crash retry, each on its own worker
    assert all(code == -signal.SIGKILL for _, code in error.history)


def test_a_crash_inside_a_batch_costs_only_the_call_that_crashed() -> None:
    # Batches of 4 calls: the batch holding call 5 crashes, is sent again whole (crash_retries=1),
    # then call by call, so the other calls of that batch still give their results.
    with joblib.parallel_config(backend="taskloom", n_jobs=2, crash_retries=1), \
            pytest.raises(taskloom.WorkerCrashed, match=r"joblib task 5 \(crash_if\(True, 5\)\)"):
        joblib.Parallel(batch_size=4)(joblib.delayed(jt.crash_if)(i == 5, i) for i in range(12))
    out = []
    with joblib.parallel_config(backend="taskloom", n_jobs=2, crash_retries=0):
        gen = joblib.Parallel(batch_size=4, return_as="generator")(
            joblib.delayed(jt.crash_if)(False, i) for i in range(12))
        out = list(gen)
    assert out == list(range(12))


@pytest.mark.filterwarnings("ignore:One or more of the test scores are non-finite")
def test_a_fit_that_keeps_crashing_gets_the_error_score() -> None:
    grid = {"crash": [False, True], "max_depth": [2]}
    with joblib.parallel_config(backend="taskloom", n_jobs=2, crash_retries=1), \
            pytest.warns(FitFailedWarning, match="WorkerCrashed"):
        search = GridSearchCV(je.CrashingTree(), grid, cv=CV).fit(X, Y)
    scores = _scores(search)
    assert not math.isnan(scores[0])
    assert math.isnan(scores[1])
    assert search.best_params_ == {"crash": False, "max_depth": 2}


# -- timeouts -----------------------------------------------------------------------------------------------
#: Workers import scikit-learn before their first task, so a short timeout is not spent on that.
WARM = taskloom.Processes(initializer=jt.import_estimators)


def test_a_hung_fit_is_killed_and_reported_as_task_timeout(tmp_path: Path) -> None:
    start = time.monotonic()
    with joblib.parallel_config(backend="taskloom", n_jobs=2, mode=WARM, timeout=2.0), \
            pytest.raises(taskloom.TaskTimeout) as info:
        GridSearchCV(je.HangingTree(started_dir=str(tmp_path)), {"hang": [False, True]}, cv=CV,
                     error_score="raise").fit(X, Y)
    elapsed = time.monotonic() - start
    assert elapsed < 2.0 + 30.0, f"the hung fit was reported after {elapsed:.1f} s"
    message = str(info.value)
    assert re.match(r"joblib task \d+ \(_fit_and_score\(HangingTree, \{'hang': True\}, candidate 2/2, split \d/3\)\) "
                    r"ran past its timeout of 2 s: its worker process was terminated and replaced", message), message
    assert info.value.timeout == 2.0
    assert info.value.index == 3 + int(message.split("split ")[1][0]) - 1  # candidate 2 comes after 3 splits of 1
    # The hung fits' workers were killed (by the timeout or by joblib's abort), not left running.
    hung = {int(pid) for pid in read_markers(tmp_path, "hang-*").values()}
    assert hung
    assert os.getpid() not in hung
    assert poll_until(lambda: not (hung & _children()), timeout=10), "a hung worker is still alive"


@pytest.mark.filterwarnings("ignore:One or more of the test scores are non-finite")
def test_a_hung_fit_gets_the_error_score_and_the_search_goes_on(tmp_path: Path) -> None:
    grid = {"hang": [False, True], "max_depth": [2, 3]}
    cv = KFold(n_splits=2, shuffle=True, random_state=0)
    # 4 workers: the 4 hung fits (they use no CPU) are killed together, in one timeout.
    with joblib.parallel_config(backend="taskloom", n_jobs=4, mode=WARM, timeout=2.0), \
            pytest.warns(FitFailedWarning, match="TaskTimeout") as record:
        search = GridSearchCV(je.HangingTree(started_dir=str(tmp_path)), grid, cv=cv).fit(X, Y)
    assert "ran past its timeout of 2 s" in str(record[0].message)
    scores = _scores(search)
    params = search.cv_results_["params"]
    hung = [s for s, p in zip(scores, params, strict=True) if p["hang"]]
    assert len(hung) == 2
    assert all(math.isnan(s) for s in hung)
    with joblib.parallel_config(backend="loky", n_jobs=2):
        reference = GridSearchCV(je.HangingTree(), {"max_depth": [2, 3]}, cv=cv).fit(X, Y)
    assert [s for s, p in zip(scores, params, strict=True) if not p["hang"]] == _scores(reference)
    assert search.best_params_["hang"] is False


def test_killed_fits_raise_option() -> None:
    grid = {"crash": [False, True]}
    with joblib.parallel_config(backend="taskloom", n_jobs=2, crash_retries=0, killed_fits="raise"), \
            pytest.raises(taskloom.WorkerCrashed, match=r"_fit_and_score\(CrashingTree, \{'crash': True\}"):
        GridSearchCV(je.CrashingTree(), grid, cv=CV).fit(X, Y)


def test_a_timeout_applies_to_each_call_not_to_a_batch(tmp_path: Path) -> None:
    # batch_size=5 asks joblib for batches; with timeout= each call is still its own task.
    with joblib.parallel_config(backend="taskloom", n_jobs=2, timeout=2.0), \
            pytest.raises(taskloom.TaskTimeout, match=r"^joblib task 7 \(hang_if\(True, '.*', 7\)\) ran past"):
        joblib.Parallel(batch_size=5)(joblib.delayed(jt.hang_if)(i == 7, str(tmp_path), i) for i in range(10))


def test_joblibs_own_parallel_timeout_works_and_kills_the_hung_call(tmp_path: Path) -> None:
    import multiprocessing

    with joblib.parallel_config(backend="taskloom", n_jobs=2), pytest.raises(multiprocessing.TimeoutError):
        joblib.Parallel(timeout=2.0, batch_size=1)(
            joblib.delayed(jt.hang_if)(i == 1, str(tmp_path), i) for i in range(4))
    hung = int((tmp_path / "1").read_text())
    assert hung != os.getpid()
    assert poll_until(lambda: hung not in _children(), timeout=10), "the hung call's worker is still alive"


# -- Ctrl-C ---------------------------------------------------------------------------------------------------
CTRL_C_SCRIPT = """
import sys
import joblib
import taskloom.joblib
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV
from tests.joblib_estimators import HangingTree

taskloom.joblib.register()
X, y = load_iris(return_X_y=True)
with joblib.parallel_config(backend="taskloom", n_jobs=2):
    GridSearchCV(HangingTree(hang=True, started_dir=sys.argv[1]), {"max_depth": [1, 2, 3]}, cv=3).fit(X, y)
print("the search ended")
"""


def test_ctrl_c_stops_a_search_and_leaves_no_process_behind(tmp_path: Path) -> None:
    script = tmp_path / "search.py"
    script.write_text(textwrap.dedent(CTRL_C_SCRIPT))
    started = tmp_path / "started"
    started.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, str(script), str(started)], cwd=ROOT, env=env, start_new_session=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            # Both workers are inside a fit that never returns.
            workers = {int(pid) for pid in _wait_for_markers(started, 2, timeout=45).values()}
            family = psutil.Process(proc.pid).children(recursive=True)
            assert workers <= {p.pid for p in family}
            os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
            try:
                _, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                pytest.fail("the search did not stop within 10 s of Ctrl-C")
            assert proc.returncode != 0
            assert "KeyboardInterrupt" in err
            _, alive = psutil.wait_procs(family, timeout=10)
            assert not alive, f"orphans left after Ctrl-C: {alive}"
            assert poll_until(lambda: not session_members(proc.pid), timeout=10), (
                f"a process of the session is left: {session_members(proc.pid)}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            for pid in session_members(proc.pid):
                os.kill(pid, signal.SIGKILL)


# -- return_as generators --------------------------------------------------------------------------------------
@pytest.mark.parametrize("return_as", ["generator", "generator_unordered"])
def test_return_as_generators(return_as: str) -> None:
    with joblib.parallel_config(backend="taskloom", n_jobs=2):
        gen = joblib.Parallel(return_as=return_as)(joblib.delayed(jt.square)(i) for i in range(500))
        assert not isinstance(gen, list)
        out = list(gen)
    expected = [i * i for i in range(500)]
    assert (out if return_as == "generator" else sorted(out)) == expected


@pytest.mark.parametrize("return_as", ["generator", "generator_unordered"])
def test_leaving_a_generator_early_kills_the_calls_still_running(tmp_path: Path, return_as: str) -> None:
    with joblib.parallel_config(backend="taskloom", n_jobs=2):
        gen = joblib.Parallel(return_as=return_as, batch_size=1)(
            joblib.delayed(jt.hang_if)(i > 0, str(tmp_path), i) for i in range(6))
        try:
            assert next(gen) == 0
            # Both workers inside a hung call (task 0 returns; 1 and 2 start next, one per worker).
            assert poll_until(lambda: len(read_markers(tmp_path, "[!0]*")) >= 2, timeout=30)
            running = {int(pid) for pid in read_markers(tmp_path, "[!0]*").values()}
            assert len(running) == 2
            assert os.getpid() not in running
            with pytest.warns(UserWarning, match="cancelled"):
                gen.close()  # joblib aborts the call: taskloom kills the workers running hung calls
        finally:
            with warnings.catch_warnings():  # a failed assertion above: still stop the calls, quietly
                warnings.simplefilter("ignore")
                gen.close()
    assert poll_until(lambda: not (running & _children()), timeout=10), "a hung call's worker is still alive"


# -- options --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("options", "error"), [
    ({"mode": "bogus"}, ValueError),
    ({"mode": 3}, TypeError),
    ({"timeout": -1.0}, ValueError),
    ({"retries": -1}, ValueError),
    ({"crash_retries": -1}, ValueError),
    ({"max_memory": "lots"}, ValueError),
    ({"mode": "threads", "crash_retries": 1}, ValueError),
    ({"killed_fits": "ignore"}, ValueError),
    ({"progress": 42}, TypeError),
    ({"workers": 2}, TypeError),
])
def test_bad_options_are_refused_at_parallel_config(options: dict[str, Any], error: type[Exception]) -> None:
    children = _children()
    with pytest.raises(error):
        joblib.parallel_config(backend="taskloom", **options)
    assert _children() <= children


def test_unknown_option_to_parallel_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown option"):
        joblib.Parallel(n_jobs=2, backend="taskloom", bogus=1)(joblib.delayed(jt.square)(i) for i in range(3))


def test_options_given_to_parallel_override_parallel_config() -> None:
    with joblib.parallel_config(backend="taskloom", n_jobs=2, mode="processes"):
        pids = joblib.Parallel(mode="threads")(joblib.delayed(jt.pid)(i) for i in range(4))
    assert set(pids) == {os.getpid()}


def test_threads_mode_runs_in_the_caller_and_shares_memory() -> None:
    seen: list[int] = []
    with joblib.parallel_config(backend="taskloom", n_jobs=2, mode="threads"):
        joblib.Parallel(require="sharedmem")(joblib.delayed(seen.append)(i) for i in range(20))
        pids = joblib.Parallel()(joblib.delayed(jt.pid)(i) for i in range(4))
    assert sorted(seen) == list(range(20))
    assert set(pids) == {os.getpid()}


def test_auto_mode_picks_threads_for_shared_memory_and_runs_everything() -> None:
    seen: list[int] = []
    with joblib.parallel_config(backend="taskloom", n_jobs=2, mode="auto"):
        joblib.Parallel(require="sharedmem")(joblib.delayed(seen.append)(i) for i in range(20))
        out = joblib.Parallel()(joblib.delayed(jt.square)(i) for i in range(2000))
    assert sorted(seen) == list(range(20))
    assert out == [i * i for i in range(2000)]


def test_retries_run_a_failed_call_again(tmp_path: Path) -> None:
    marker = tmp_path / "failed"
    with joblib.parallel_config(backend="taskloom", n_jobs=2, retries=1):
        out = joblib.Parallel()(joblib.delayed(jt.fail_once)(str(marker), i) for i in range(1))
    assert out == [0]
    assert marker.exists()


def test_a_task_exception_is_raised_as_itself() -> None:
    with joblib.parallel_config(backend="taskloom", n_jobs=2), pytest.raises(ValueError, match="boom 3") as info:
        joblib.Parallel()(joblib.delayed(jt.boom)(i) for i in [3])
    cause = info.value.__cause__  # the worker's traceback, as loky gives it
    assert cause is not None
    assert "in boom" in str(cause)


def test_an_argument_that_cannot_be_pickled_is_raised() -> None:
    lock = threading.Lock()
    with joblib.parallel_config(backend="taskloom", n_jobs=2), pytest.raises(TypeError, match="pickle"):
        joblib.Parallel()(joblib.delayed(jt.pid)(lock) for _ in range(3))


def test_taskloom_shutdown_under_a_running_call_raises_instead_of_hanging(tmp_path: Path) -> None:
    from concurrent.futures.process import BrokenProcessPool

    with joblib.parallel_config(backend="taskloom", n_jobs=2):
        gen = joblib.Parallel(return_as="generator", batch_size=1)(
            joblib.delayed(jt.hang_if)(True, str(tmp_path), i) for i in range(6))
        _wait_for_markers(tmp_path, 2)
        taskloom.shutdown()  # the pool goes away under the two hung calls
        with pytest.raises(BrokenProcessPool):
            list(gen)


def test_max_memory_recycles_workers_after_each_task() -> None:
    with joblib.parallel_config(backend="taskloom", n_jobs=2, max_memory="1KiB"):
        pids = joblib.Parallel(batch_size=1)(joblib.delayed(jt.pid)(i) for i in range(6))
    assert len(set(pids)) == 6  # every worker is over 1 KiB after its task, so each task gets a fresh one


def test_progress_callback_is_told_of_finished_tasks() -> None:
    updates: list[Any] = []
    lock = threading.Lock()

    def progress(update: Any) -> None:
        with lock:
            updates.append(update)

    with joblib.parallel_config(backend="taskloom", n_jobs=2, progress=progress):
        joblib.Parallel(batch_size=1)(joblib.delayed(jt.square)(i) for i in range(10))
    assert poll_until(lambda: bool(updates) and updates[-1].done == 10, timeout=10), updates[-1:]  # coalesced


def test_a_mode_object_is_accepted() -> None:
    mode = taskloom.Processes(max_tasks_per_worker=1)
    with joblib.parallel_config(backend="taskloom", n_jobs=2, mode=mode, crash_retries=0):
        pids = joblib.Parallel(batch_size=1)(joblib.delayed(jt.pid)(i) for i in range(4))
    assert len(set(pids)) == 4


# -- pickling ---------------------------------------------------------------------------------------------
def test_a_scikit_learn_task_is_pickled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its warning filters say "__main__" (Python's default ones do): that once made the executor
    # pickle the already pickled task again with cloudpickle, and again for the worker's batch.
    from cloudpickle import cloudpickle as cp

    from taskloom._backends import _mainpickle

    counts = {"tasks": 0, "cloudpickle": 0, "by value": 0}
    real_init, real_dump, real_by_value = taskloom.joblib._Packed.__init__, cp.Pickler.dump, _mainpickle.dumps_by_value

    def packed(self: Any, *args: Any) -> None:
        counts["tasks"] += 1
        real_init(self, *args)

    def dump(self: Any, obj: Any) -> Any:
        counts["cloudpickle"] += 1
        return real_dump(self, obj)

    def by_value(obj: Any, **kwargs: Any) -> bytes:
        counts["by value"] += 1
        return real_by_value(obj, **kwargs)

    monkeypatch.setattr(taskloom.joblib._Packed, "__init__", packed)
    monkeypatch.setattr(cp.Pickler, "dump", dump)
    monkeypatch.setattr(_mainpickle, "dumps_by_value", by_value)
    with warnings.catch_warnings():
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        with joblib.parallel_config(backend="taskloom", n_jobs=2):
            search = GridSearchCV(SVC(), {"C": [1.0, 10.0]}, cv=CV).fit(X, Y)
    assert search.best_params_ in ({"C": 1.0}, {"C": 10.0})
    assert counts["tasks"] >= 1
    assert counts["cloudpickle"] == counts["by value"] == counts["tasks"], counts


MAIN_DEFS = """
_tl_joblib_db = None

def _tl_joblib_connect():
    global _tl_joblib_db
    _tl_joblib_db = "connected"

def _tl_joblib_query(i):
    return i, _tl_joblib_db
"""


def test_a_main_function_sees_the_globals_of_the_initializer() -> None:
    # As with taskloom.map: functions of the script share the worker's __main__ namespace.
    namespace = sys.modules["__main__"].__dict__
    exec(compile(MAIN_DEFS, "<__main__ of the test>", "exec"), namespace)
    try:
        mode = taskloom.Processes(initializer=namespace["_tl_joblib_connect"])
        query = namespace["_tl_joblib_query"]
        with joblib.parallel_config(backend="taskloom", n_jobs=2, mode=mode):
            out = joblib.Parallel(batch_size=1)(joblib.delayed(query)(i) for i in range(4))
        assert out == [(i, "connected") for i in range(4)]
        assert namespace["_tl_joblib_db"] is None  # the parent's own stays as it was
    finally:
        for name in ("_tl_joblib_db", "_tl_joblib_connect", "_tl_joblib_query"):
            namespace.pop(name, None)


@pytest.mark.dask
def test_dask_mode(dask_cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKLOOM_DASK_ADDRESS", dask_cluster)
    with joblib.parallel_config(backend="taskloom", n_jobs=2, mode="dask"):
        out = joblib.Parallel()(joblib.delayed(jt.square)(i) for i in range(200))
    assert out == [i * i for i in range(200)]


def test_importing_the_module_does_not_change_joblibs_default() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend, _ = joblib.parallel.get_active_backend()
    assert not isinstance(backend, taskloom.joblib.TaskloomBackend)
