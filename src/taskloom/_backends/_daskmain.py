"""Dask worker processes that do not run the caller's script again (no ``__main__`` guard needed).

``distributed`` starts each worker of a ``LocalCluster`` with multiprocessing's "spawn" (or
"forkserver"), whose child first runs the parent's main script again, as ``__mp_main__``
(``multiprocessing.spawn.get_preparation_data`` names it, ``spawn.prepare`` runs it). In a script
without the ``if __name__ == "__main__":`` guard that is the script's own ``tl.map(...,
mode="dask")``: a cluster started inside every worker, and "Nanny failed to start".

So, when taskloom starts its embedded cluster from a point of the script that a worker would
reach again (top-level code outside a guard), the preparation data of Dask's worker processes
leaves out the main script, as multiprocessing already does for an interactive session. The
worker runs only ``distributed``; what the script defines travels by value (Dask pickles anything
that names ``__main__`` with cloudpickle). This is decided once, and holds for every Dask worker
process started afterwards (a worker the nanny restarts too, which would otherwise run the script
again in the middle of the run). A guarded script, ``python -c``, stdin, a REPL, a package's
``__main__.py`` and a cluster of the user's own are left exactly as they were.
"""

from __future__ import annotations

import ast
import os
import sys
import threading
import tokenize
from collections.abc import Callable
from multiprocessing import spawn
from typing import Any

#: the keys by which a spawned child runs the parent's main module again
_MAIN_KEYS = ("init_main_from_name", "init_main_from_path")

_lock = threading.Lock()
_original: Callable[[str], dict[str, Any]] | None = None


def hiding() -> bool:
    """Whether Dask's worker processes are started without the main script (decided once)."""
    return _original is not None


def hide_main_if_unguarded() -> bool:
    """Before taskloom starts its own cluster: leave the main script out of its workers' start
    when a worker would otherwise run the code that is starting it. Returns ``hiding()``."""
    with _lock:
        if _original is None and _unguarded_start():
            _install()
    return hiding()


def main_source() -> str | None:
    """The file a spawned child would run again as ``__mp_main__``; None when it runs nothing."""
    main = sys.modules.get("__main__")
    if main is None:
        return None
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name is not None:  # python -m name: multiprocessing runs the module again by name
        if name == "__main__" or name.endswith(".__main__"):
            return None  # a package's __main__.py is never run again
        path = getattr(spec, "origin", None)
    else:
        path = getattr(main, "__file__", None)
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    return os.path.realpath(path)


def guard_bodies(source: str) -> list[tuple[int, int]]:
    """The line ranges of the bodies of the top-level ``if __name__ == "__main__":`` blocks."""
    ranges = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.body:
            last = node.body[-1]
            ranges.append((node.body[0].lineno, last.end_lineno or last.lineno))
    return ranges


def _is_main_test(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = (test.left, test.comparators[0])
    return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def _main_line(path: str) -> int | None:
    """The line the main script's top-level code is running now (in the main thread), if it is."""
    main_globals = vars(sys.modules["__main__"])
    frame = sys._current_frames().get(threading.main_thread().ident or -1)
    while frame is not None:
        code = frame.f_code
        if (code.co_name == "<module>" and frame.f_globals is main_globals
                and os.path.realpath(code.co_filename) == path):
            return frame.f_lineno
        frame = frame.f_back
    return None


def _unguarded_start() -> bool:
    """Whether a worker that runs the main script again would reach what is starting the cluster.

    While the script's top-level code runs: unless the statement running now is inside a guard.
    After it (a thread the script started, an exit hook): unless the script has a guard at all.
    """
    path = main_source()
    if path is None:
        return False
    try:
        with tokenize.open(path) as f:
            guards = guard_bodies(f.read())
    except (OSError, SyntaxError, ValueError):
        return False  # not Python we can read: leave multiprocessing's start as it is
    line = _main_line(path)
    if line is None:
        return not guards
    return not any(first <= line <= last for first, last in guards)


def _is_dask_worker(name: str) -> bool:
    # distributed's nanny names it "Dask Worker process (from Nanny)", and starts it from a thread
    # named "AsyncProcess <name> watch message queue" (distributed/process.py).
    return "Dask" in name or threading.current_thread().name.startswith("AsyncProcess")


def _preparation_data(name: str) -> dict[str, Any]:
    assert _original is not None
    data = _original(name)
    if _is_dask_worker(name):
        for key in _MAIN_KEYS:
            data.pop(key, None)
    return data


def _install() -> None:
    global _original
    _original = spawn.get_preparation_data
    # popen_spawn_posix and popen_forkserver look it up on the module at each start
    spawn.get_preparation_data = _preparation_data
