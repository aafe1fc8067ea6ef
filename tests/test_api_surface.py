"""The public surface: what ``taskloom`` exports, and how bad arguments are refused."""

from __future__ import annotations

import asyncio
import pickle

import psutil
import pytest

import taskloom as tl
from taskloom._pools import live_backends
from tests import helpers
from tests.helpers import counting

PUBLIC_CLASSES = [name for name in tl.__all__ if isinstance(getattr(tl, name, None), type)]


# -- exports ------------------------------------------------------------------------------------------
@pytest.mark.smoke
def test_every_name_in_all_exists() -> None:
    missing = [name for name in tl.__all__ if not hasattr(tl, name)]
    assert not missing
    assert len(set(tl.__all__)) == len(tl.__all__), "a name is exported twice"


@pytest.mark.smoke
def test_no_private_name_is_exported() -> None:
    private = [n for n in tl.__all__ if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
    assert not private


@pytest.mark.smoke
def test_public_names_not_in_all_are_modules_or_dunders() -> None:
    import types

    extra = [
        name for name, value in vars(tl).items()
        if not name.startswith("_") and name not in tl.__all__ and not isinstance(value, types.ModuleType)
    ]
    assert not extra, f"public names missing from __all__: {extra}"


@pytest.mark.smoke
def test_expected_api_is_exported() -> None:
    for name in ("map", "imap", "starmap", "Executor", "shutdown", "as_completed", "wait", "Run", "Outcome",
                 "RunStatistics", "TaskError", "TaskTimeout", "WorkerCrashed", "SerializationError",
                 "TaskloomError", "Sequential", "Threads", "Processes", "Async", "Auto", "Advice"):
        assert name in tl.__all__, name


@pytest.mark.smoke
@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_public_classes_report_module_taskloom(name: str) -> None:
    assert getattr(tl, name).__module__ == "taskloom"


@pytest.mark.smoke
@pytest.mark.parametrize("name", ["map", "imap", "starmap", "shutdown"])
def test_public_functions_report_module_taskloom(name: str) -> None:
    assert getattr(tl, name).__module__ == "taskloom"


@pytest.mark.smoke
def test_error_hierarchy() -> None:
    assert issubclass(tl.TaskError, tl.TaskloomError)
    assert issubclass(tl.TaskloomError, Exception)
    for cls in (tl.TaskTimeout, tl.WorkerCrashed, tl.SerializationError):
        assert issubclass(cls, tl.TaskError)
    assert issubclass(tl.TaskTimeout, TimeoutError)
    assert issubclass(tl.LockOrderError, RuntimeError)
    assert issubclass(tl.DeadlockError, RuntimeError)


@pytest.mark.smoke
@pytest.mark.parametrize(
    "error",
    [
        tl.TaskError("m", index=3, item_repr="'x'", attempts=2, remote_traceback="tb", stage="f"),
        tl.TaskTimeout("m", timeout=1.5, index=1),
        tl.WorkerCrashed("m", history=[(123, -9)], index=2),
        tl.SerializationError("m", what="result", index=4),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_pickle_whole(error: tl.TaskError) -> None:
    error.__cause__ = ValueError("original")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    for attr in ("index", "item_repr", "attempts", "remote_traceback", "stage", "timeout", "history", "what"):
        assert getattr(back, attr, None) == getattr(error, attr, None), attr
    assert isinstance(back.__cause__, ValueError)


# -- bad arguments are refused before anything runs -------------------------------------------------------
BAD_ARGUMENTS = [
    ({"workers": 0}, "workers"),
    ({"workers": -3}, "workers"),
    ({"mode": "gpu"}, "mode"),
    ({"chunksize": -1}, "chunksize"),
    ({"chunksize": 0}, "chunksize"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": -1.0}, "timeout"),
    ({"retries": -1}, "retries"),
    ({"on_error": "ignore"}, "on_error"),
    ({"prefetch": 0}, "prefetch"),
]


def _child_pids() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.smoke
@pytest.mark.parametrize("call", ["imap", "map", "starmap"])
@pytest.mark.parametrize(("kwargs", "name"), BAD_ARGUMENTS, ids=[f"{k}={v!r}" for (kw, _) in BAD_ARGUMENTS
                                                                 for k, v in kw.items()])
def test_bad_argument_raises_value_error_before_any_worker_starts(call: str, kwargs: dict, name: str) -> None:
    options = {"mode": "processes", **kwargs}
    source, tally = counting([(1, 2), (3, 4)] if call == "starmap" else [1, 2])
    fn = helpers.add if call == "starmap" else helpers.square
    children = _child_pids()
    with pytest.raises(ValueError, match=name):
        getattr(tl, call)(fn, source, **options)  # imap too: at the call, not on iteration
    assert tally.pulled == 0
    assert not [b for b in live_backends() if b.name == "processes"], "a pool was made for a refused call"
    assert _child_pids() <= children, "a worker process started for a refused call"


@pytest.mark.smoke
@pytest.mark.parametrize("mode", ["threads", "processes", "sequential"])
def test_coroutine_function_needs_async_mode(mode: str) -> None:
    with pytest.raises(ValueError, match="async"):
        tl.map(helpers.asquare, [1, 2], mode=mode)
    with pytest.raises(ValueError, match="async"):
        tl.imap(helpers.asquare, [1, 2], mode=mode)
    with pytest.raises(ValueError, match="async"):
        tl.starmap(_async_add, [(1, 2)], mode=mode)


async def _async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@pytest.mark.smoke
def test_plain_function_with_async_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="async"):
        tl.map(helpers.square, [1, 2], mode="async")
    with pytest.raises(ValueError, match="async"):
        tl.imap(helpers.square, [1, 2], mode=tl.Async())
    with pytest.raises(ValueError, match="async"):
        tl.starmap(helpers.add, [(1, 2)], mode="async")


@pytest.mark.smoke
def test_timeout_with_a_larger_chunksize_is_refused() -> None:
    with pytest.raises(ValueError, match="chunksize"):
        tl.map(helpers.square, [1, 2], mode="threads", timeout=1.0, chunksize=5)
    # One at a time, or auto (which then sends one at a time), is fine.
    assert tl.map(helpers.square, [1, 2], mode="threads", timeout=5.0, chunksize=1) == [1, 4]
    assert tl.map(helpers.square, [1, 2], mode="threads", timeout=5.0) == [1, 4]


@pytest.mark.smoke
def test_wrong_types_raise_type_error() -> None:
    with pytest.raises(TypeError, match="callable"):
        tl.map(42, [1, 2], mode="threads")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="iterable"):
        tl.map(helpers.square, 42, mode="threads")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="retry_on"):
        tl.map(helpers.square, [1], mode="threads", retry_on=42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="mode"):
        tl.map(helpers.square, [1], mode=42)  # type: ignore[call-overload]


@pytest.mark.smoke
def test_import_taskloom_does_not_import_joblib() -> None:
    import subprocess
    import sys

    code = ("import sys, taskloom; taskloom.Executor; taskloom.Processes; "
            "assert 'joblib' not in sys.modules, 'import taskloom imported joblib'; "
            "assert 'taskloom.joblib' not in sys.modules; "
            "import taskloom.joblib; assert 'joblib' in sys.modules; "
            "taskloom.joblib.register(); import joblib; "
            "assert joblib.parallel.BACKENDS['taskloom'] is taskloom.joblib.TaskloomBackend")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# -- the engine seam: front ends ask the mode, never which mode it is --------------------------------
def _modules() -> dict[str, str]:
    import pathlib

    root = pathlib.Path(tl.__file__).parent
    return {str(p.relative_to(root.parent)): p.read_text() for p in root.rglob("*.py")}


@pytest.mark.smoke
def test_no_module_outside_modes_and_backends_names_a_mode_class() -> None:
    import ast

    classes = {"Sequential", "Threads", "Processes", "Async", "Dask", "Auto"}
    backends = {"SequentialBackend", "ThreadBackend", "ProcessBackend", "AsyncBackend", "DaskBackend"}
    offenders = []
    for path, text in _modules().items():
        if path == "taskloom/_modes.py" or path.startswith("taskloom/_backends/"):
            continue
        tree = ast.parse(text)
        foreign = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and not node.level and not (node.module or "").startswith("taskloom") for a in node.names}
        for node in ast.walk(tree):
            name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
            if name in (classes | backends) - foreign:  # joblib's own SequentialBackend is not ours
                offenders.append(f"{path}:{node.lineno}: {name}")
    assert not offenders, offenders


@pytest.mark.smoke
def test_taskloom_modules_import_each_other_without_a_circle() -> None:
    import ast

    graph: dict[str, set[str]] = {}
    modules = _modules()
    names = {p[:-3].replace("/", ".").removesuffix(".__init__") for p in modules}
    for path, text in modules.items():
        name = path[:-3].replace("/", ".").removesuffix(".__init__")
        package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
        deps = graph.setdefault(name, set())
        for node in ast.parse(text).body:  # module level: what importing it imports
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                deps |= {t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t in names and t != name}

    def visit(node: str, path: list[str]) -> None:
        assert node not in path, " -> ".join([*path[path.index(node):], node])
        for dep in graph.get(node, ()):
            visit(dep, [*path, node])

    for module in graph:
        visit(module, [])
