"""A new user's first script with ``mode="dask"`` and no ``__main__`` guard (no scheduler configured,
so taskloom starts its embedded LocalCluster).

Dask starts its workers with multiprocessing's "spawn", whose child runs the parent's main script
again: without the guard, every worker started a cluster of its own ("Nanny failed to start").
Each script here runs in a real interpreter in a session of its own; it must print the right
result once, run its top-level code once (it appends a line to a file at each run), exit 0 within
a generous bound, and leave no process of its session behind.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from taskloom._backends._daskmain import guard_bodies
from tests.helpers import assert_session_empty, run_in_own_session

pytestmark = [pytest.mark.timeout(300), pytest.mark.dask]

ROOT = Path(__file__).resolve().parents[2]

#: Appends to runs.txt at each run of its top-level code; classes, globals, lambdas of __main__.
HEAD = textwrap.dedent("""
    import os
    import sys
    import taskloom as tl

    with open("runs.txt", "a") as f:
        f.write(f"{os.getpid()}\\n")

    FACTOR = 3

    class Box:
        def __init__(self, value):
            self.value = value

    def square(x):
        return x * x

    def scale(box):
        return Box(box.value * FACTOR)   # a global of __main__, and a class of __main__ as result

    def main_module_name(_):
        return sys.modules["__main__"].__name__

    def total(boxes):
        return sum(b.value for b in boxes)
""")

MAPS = textwrap.dedent("""
    print("squares", tl.map(square, range(10), mode="dask"))
    boxes = tl.map(scale, [Box(1), Box(2)], mode="dask")
    print("boxes", [b.value for b in boxes], all(isinstance(b, Box) for b in boxes))
    print("lambda", tl.map(lambda x: x + FACTOR, [1, 2], mode="dask"))
    print("worker main", set(tl.map(main_module_name, range(4), mode="dask", chunksize=1)))

    import numpy as np
    many = np.empty(150_000, dtype=object)  # over 1 MiB: an array taskloom would scatter
    many[:] = [Box(1) for _ in range(150_000)]
    print("object array", tl.map(total, [many], mode="dask"))
""")

GUARDLESS = HEAD + MAPS
GUARDED = HEAD + 'if __name__ == "__main__":\n' + textwrap.indent(MAPS, "    ")

GUARDLESS_EXPECTED = [
    "squares [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
    "boxes [3, 6] True",
    "lambda [4, 5]",
    "worker main {'__main__'}",  # the worker's own __main__: it never ran the script
    "object array [150000]",  # its Boxes travel by value, as the workers have no script
]


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **extra}
    env.pop("TASKLOOM_DASK_ADDRESS", None)  # no scheduler configured: the embedded cluster
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    try:
        code, out, err, pid = run_in_own_session([sys.executable, *args], cwd=cwd, env=_env(env or {}),
                                                 timeout=120)
    except Exception as exc:  # TimeoutExpired: the session was killed already
        pytest.fail(f"{args} hung (killed after 120 s): {exc!r}")
    assert_session_empty(pid)
    return code, out, err




def _check(code: int, out: str, err: str, expected: list[str]) -> None:
    assert code == 0, err[-3000:]
    lines = out.splitlines()
    for line in expected:
        assert lines.count(line) == 1, f"{line!r} not printed exactly once in:\n{out}\nstderr:\n{err[-3000:]}"
    # What re-running the script in a worker prints. Not any traceback at all: on a loaded machine
    # a worker's last heartbeat can meet the scheduler closing at exit, which distributed logs
    # with a traceback (seen once under make test-load, the script's output complete and right).
    for sign in ("Nanny failed to start", "bootstrapping phase", "RuntimeError", "Exception in worker"):
        assert sign not in err, err[-3000:]


def _runs(cwd: Path) -> list[str]:
    return (cwd / "runs.txt").read_text().split()


@pytest.mark.parametrize("how", ["script", "module"])
def test_a_guardless_script_runs_once_on_the_embedded_cluster(tmp_path: Path, how: str) -> None:
    (tmp_path / "first.py").write_text(GUARDLESS)
    args = ["first.py"] if how == "script" else ["-m", "first"]  # -m: spawn runs it again by name
    _check(*_run(args, tmp_path), GUARDLESS_EXPECTED)
    assert len(_runs(tmp_path)) == 1  # not once more in each worker


def test_a_worker_the_nanny_restarts_does_not_run_the_script(tmp_path: Path) -> None:
    # A worker dies mid-run; its nanny starts a new one while the script runs on: that one too
    # must start without the script.
    (tmp_path / "restart.py").write_text(textwrap.dedent("""
        import os, time
        import taskloom as tl
        from taskloom._backends import _dask

        with open("runs.txt", "a") as f:
            f.write(f"{os.getpid()}\\n")

        def die(x):
            os._exit(3)

        print("before", tl.map(abs, [-1, -2], mode="dask"))
        client = next(iter(_dask._connections.values())).client
        workers = set(client.scheduler_info()["workers"])
        out = tl.map(die, [1], mode="dask", on_error="collect")
        print("died", type(out[0].error).__name__)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not set(client.scheduler_info()["workers"]) - workers:
            time.sleep(0.1)
        print("restarted", bool(set(client.scheduler_info()["workers"]) - workers))
        print("after", tl.map(abs, [-3, -4], mode="dask"))
    """))
    result = _run(["restart.py"], tmp_path, {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"})  # one death
    _check(*result, ["before [1, 2]", "died WorkerCrashed", "restarted True", "after [3, 4]"])
    assert len(_runs(tmp_path)) == 1


def test_a_guarded_script_behaves_as_before(tmp_path: Path) -> None:
    # With the guard, the workers still import the script as __mp_main__, as Dask always did.
    (tmp_path / "guarded.py").write_text(GUARDED)
    expected = [line.replace("{'__main__'}", "{'__mp_main__'}") for line in GUARDLESS_EXPECTED]
    _check(*_run(["guarded.py"], tmp_path), expected)
    assert len(_runs(tmp_path)) > 1  # the parent, and each worker's import of the script


def test_guard_bodies_are_the_lines_a_worker_does_not_run() -> None:
    source = textwrap.dedent("""\
        import taskloom as tl
        if __name__ == "__main__":
            tl.map(abs, [1], mode="dask")
            print("done")
        if "__main__" == __name__: main()
        if __name__ == "__main__" or True:
            pass
        def f():
            if __name__ == "__main__":
                pass
    """)
    assert guard_bodies(source) == [(3, 4), (5, 5)]
