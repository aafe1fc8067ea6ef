"""CPython's own ``test_concurrent_futures``, run against ``taskloom.Executor``.

The file comes from the interpreter's ``Lib/test`` or, where the build left it out, from Debian's
``libpython3.X-testsuite`` (``scripts/fetch_cpython_tests.py`` fetches it when this module is
collected; when that fails, ``test_the_cpython_suite_is_here`` fails and says why: it is never
skipped). Every test class of the file that runs on one of the stdlib's executors is run again with
only its executor class swapped: ``executor_type`` becomes one of the adapters below, which take the
stdlib constructor's arguments and build a ``taskloom.Executor`` ("threads", or "processes" with the
same start method). The tests that cannot apply are listed, each with its reason, in
``tests/cpython_futures_na.py`` (and in docs/executor.md); the tests that start a new interpreter
with the stdlib class named in their script are ported at the end of this module.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import logging
import multiprocessing
import subprocess
import sys
import textwrap
import unittest
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import taskloom as tl
from tests.cpython_futures_na import NOT_APPLICABLE

ROOT = Path(__file__).resolve().parent.parent
FETCHER = ROOT / "scripts" / "fetch_cpython_tests.py"
DOCS = ROOT / "docs" / "executor.md"


def _fetcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_cpython_tests", FETCHER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load() -> tuple[ModuleType | None, str | None]:
    """CPython's test module, or None and the reason it could not be had."""
    try:
        name, path = _fetcher().ensure()
    except Exception as exc:
        return None, f"CPython's test_concurrent_futures could not be found nor fetched: {exc}"
    try:
        return importlib.import_module(name), None
    except Exception as exc:
        return None, f"CPython's test_concurrent_futures ({path}) could not be imported: {type(exc).__name__}: {exc}"


cft, LOAD_ERROR = _load()


def test_the_cpython_suite_is_here() -> None:
    """Fails (never skips) when the suite could not be had, so CI cannot go green without it."""
    if LOAD_ERROR is not None:
        pytest.fail(LOAD_ERROR, pytrace=False)


# -- the adapters: the stdlib's constructors, taskloom's executor ---------------------------------------
class TaskloomThreadPoolExecutor(tl.Executor):
    """``ThreadPoolExecutor(max_workers, thread_name_prefix, initializer, initargs)`` as ``tl.Executor``."""

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "",
                 initializer: Any = None, initargs: tuple[Any, ...] = ()) -> None:
        super().__init__(tl.Threads(initializer=initializer, initargs=initargs), workers=max_workers)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait, cancel_futures=cancel_futures)
        _end_warm_pools(wait)


class TaskloomProcessPoolExecutor(tl.Executor):
    """``ProcessPoolExecutor(max_workers, mp_context, initializer, initargs, max_tasks_per_child)``."""

    def __init__(self, max_workers: int | None = None, mp_context: Any = None, initializer: Any = None,
                 initargs: tuple[Any, ...] = (), *, max_tasks_per_child: int | None = None) -> None:
        method = mp_context.get_start_method() if mp_context is not None else None
        super().__init__(tl.Processes(start_method=method, initializer=initializer, initargs=initargs,
                                      max_tasks_per_worker=max_tasks_per_child), workers=max_workers)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait, cancel_futures=cancel_futures)
        _end_warm_pools(wait)


def _end_warm_pools(wait: bool) -> None:
    """The one deliberate difference the suite can see: taskloom's warm pools outlive an executor.

    ``shutdown(wait=True)`` of the stdlib joins its workers, and the suite's tearDown counts threads
    and child processes. The adapters therefore end the warm pools there, as ``taskloom.shutdown()``
    (or the interpreter's exit) does for a program.
    """
    if wait:
        tl.shutdown()


# -- the suite, with only the executor class swapped -----------------------------------------------------
_VARIANTS = {  # the stdlib's mixin -> (executor class, name part)
    "ThreadPoolMixin": TaskloomThreadPoolExecutor,
    "ProcessPoolForkMixin": TaskloomProcessPoolExecutor,
    "ProcessPoolForkserverMixin": TaskloomProcessPoolExecutor,
    "ProcessPoolSpawnMixin": TaskloomProcessPoolExecutor,
}


def _defining_class(cls: type, name: str) -> str:
    return next(klass.__name__ for klass in cls.__mro__ if name in vars(klass))


def _swapped(cls: type[unittest.TestCase]) -> type[unittest.TestCase] | None:
    """``cls`` with its executor class swapped for taskloom's, or None if it uses no executor."""
    mixins = [klass.__name__ for klass in cls.__mro__ if klass.__name__ in _VARIANTS]
    if not mixins:
        return None
    namespace: dict[str, Any] = {"executor_type": _VARIANTS[mixins[0]], "__module__": __name__}
    for attr in unittest.TestLoader().getTestCaseNames(cls):
        if f"{_defining_class(cls, attr)}.{attr}" in NOT_APPLICABLE:
            namespace[attr] = None  # not a test any more: see tests/cpython_futures_na.py
    return type(f"Taskloom{cls.__name__}", (cls,), namespace)


def _build(module: ModuleType) -> dict[str, type[unittest.TestCase]]:
    classes: dict[str, type[unittest.TestCase]] = {}
    for value in vars(module).values():
        if not (isinstance(value, type) and issubclass(value, unittest.TestCase)):
            continue
        if value.__module__ != module.__name__:
            continue
        if value.__name__ == "FutureTests":  # the Future API itself, no executor: see test_future_api
            continue
        swapped = _swapped(value)
        if swapped is not None:
            classes[swapped.__name__] = swapped
    return classes


SUITE: dict[str, type[unittest.TestCase]] = _build(cft) if cft is not None else {}
globals().update(SUITE)


def test_future_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPython's FutureTests (the Future class itself, no executor), run by unittest's runner.

    Two of them read what ``logging``'s last-resort handler writes to stderr, as under CPython's
    own runner; pytest's log capture puts a handler on the root logger, so it is set aside here.
    The runner would also run the module's ``setUpModule``, whose cleanup is CPython's housekeeping
    for a process that runs only its tests: it stops multiprocessing's resource tracker, which
    waits for every process holding the tracker's pipe (the session's Dask cluster): a hang here.
    """
    assert cft is not None, LOAD_ERROR
    monkeypatch.setattr(cft, "setUpModule", lambda: None)
    suite = unittest.TestLoader().loadTestsFromTestCase(cft.FutureTests)
    root = logging.getLogger()
    handlers = root.handlers[:]
    for handler in handlers:
        root.removeHandler(handler)
    try:
        result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)
    finally:
        for handler in handlers:
            root.addHandler(handler)
    problems = [f"{test.id()}:\n{trace}" for test, trace in result.failures + result.errors]
    assert not problems, "\n".join(problems)
    assert result.testsRun == suite.countTestCases() > 0


def test_each_variant_is_built() -> None:
    assert LOAD_ERROR is None, LOAD_ERROR
    kinds = {name for name in SUITE for mixin in ("ThreadPool", "ProcessPoolFork", "ProcessPoolForkserver",
                                                 "ProcessPoolSpawn") if name.startswith(f"Taskloom{mixin}")}
    assert len(kinds) >= 4 * 3, sorted(SUITE)


def test_every_not_applicable_entry_names_a_test_of_the_suite() -> None:
    assert cft is not None, LOAD_ERROR
    for key in NOT_APPLICABLE:
        owner, test = key.split(".")
        klass = getattr(cft, owner, None)
        assert klass is not None, f"{key}: {cft.__file__} has no class {owner}"
        assert test in vars(klass), f"{key} is not a test of {cft.__file__}"


def test_the_docs_list_every_not_applicable_test_with_its_reason() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for key, reason in NOT_APPLICABLE.items():
        line = next((line for line in text.splitlines() if f"`{key}`" in line), None)
        assert line is not None, f"docs/executor.md does not list {key}"
        assert reason.replace("`", "") in line.replace("`", ""), f"docs/executor.md gives another reason for {key}"


# -- ports: the tests whose child interpreter names the stdlib's class -------------------------------------
START_METHODS = [m for m in ("fork", "forkserver", "spawn") if m in multiprocessing.get_all_start_methods()]
PORT_MODES = ["threads", *(f"processes-{m}" for m in START_METHODS)]


def _mode_expr(mode: str) -> str:
    if mode == "threads":
        return "tl.Threads()"
    return f"tl.Processes(start_method={mode.split('-', 1)[1]!r})"


def _run_script(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("mode", PORT_MODES)
def test_port_interpreter_shutdown(mode: str) -> None:
    """ExecutorShutdownTest.test_interpreter_shutdown: work submitted just before exit still runs."""
    got = _run_script(f"""
        import taskloom as tl
        from tests.executor_tasks import sleep_and_print
        if __name__ == "__main__":
            t = tl.Executor({_mode_expr(mode)}, workers=5)
            t.submit(sleep_and_print, 1.0, "apple")
        """)
    assert got.stderr == ""
    assert got.stdout.strip() == "apple"


@pytest.mark.parametrize("mode", PORT_MODES)
def test_port_submit_after_interpreter_shutdown(mode: str) -> None:
    """ExecutorShutdownTest.test_submit_after_interpreter_shutdown."""
    got = _run_script(f"""
        import atexit
        @atexit.register
        def run_last():
            try:
                t.submit(id, None)
            except RuntimeError:
                print("runtime-error")
                raise
        import taskloom as tl
        if __name__ == "__main__":
            t = tl.Executor({_mode_expr(mode)}, workers=5)
            if {mode != "threads"}:
                t.submit(id, 42).result()
        """)
    assert "RuntimeError: cannot schedule new futures" in got.stderr
    assert got.stdout.strip() == "runtime-error"


@pytest.mark.parametrize("mode", PORT_MODES)
def test_port_hang_gh83386(mode: str) -> None:
    """ExecutorShutdownTest.test_hang_gh83386: shutdown(wait=False) with a running future, then exit."""
    got = _run_script(f"""
        import taskloom as tl
        from tests.executor_tasks import sleep_and_print
        if __name__ == "__main__":
            t = tl.Executor({_mode_expr(mode)}, workers=3)
            t.submit(sleep_and_print, 1.0, "apple")
            t.shutdown(wait=False)
        """)
    assert got.stderr == ""
    assert got.stdout.strip() == "apple"


def test_port_cancel_futures_wait_false() -> None:
    """ThreadPoolShutdownTest.test_cancel_futures_wait_false."""
    got = _run_script("""
        import taskloom as tl
        from tests.executor_tasks import sleep_and_print
        if __name__ == "__main__":
            t = tl.Executor("threads")
            t.submit(sleep_and_print, .1, "apple")
            t.shutdown(wait=False, cancel_futures=True)
        """)
    assert got.stderr == ""
    assert got.stdout.strip() == "apple"
