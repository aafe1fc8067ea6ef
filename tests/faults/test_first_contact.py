"""A new user's first script: no ``__main__`` guard, run as a script, ``-c``, stdin or a REPL.

Each script runs in a real interpreter in a session of its own; it must print the right result,
exit 0 within a generous bound (never hang), and leave no process of that session behind (the
fork server included).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import assert_session_empty

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]

#: No guard anywhere: module-level code, as pasted from the README's tour.
UNGUARDED = textwrap.dedent("""
    import taskloom as tl

    FACTOR = 3

    class Box:
        def __init__(self, value):
            self.value = value

    def is_prime(n):
        if n < 2:
            return False
        return all(n % k for k in range(2, int(n ** 0.5) + 1))

    def scale(box):
        return Box(box.value * FACTOR)   # a global of __main__, and a class of __main__ as result

    numbers = range(30)
    primes = tl.map(is_prime, numbers, mode="processes")
    print("primes", [n for n, p in zip(numbers, primes) if p])
    print("auto", sum(tl.map(is_prime, range(200), mode="auto")))
    boxes = tl.map(scale, [Box(1), Box(2)], mode="processes", workers=2)
    print("boxes", [b.value for b in boxes], all(isinstance(b, Box) for b in boxes))
    with tl.Executor("processes", workers=2) as ex:
        futures = [ex.submit(is_prime, n) for n in (2, 4, 5, 9)]
        print("executor", [f.result() for f in futures])
    print("lambda", tl.map(lambda x: x + FACTOR, [1, 2], mode="processes"))
""")

EXPECTED = [
    "primes [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]",
    "auto 46",
    "boxes [3, 6] True",
    "executor [True, False, True, False]",
    "lambda [4, 5]",
]


def _run(args: list[str], *, stdin: str | None = None, cwd: Path | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        pytest.fail(f"{args} hung: killed after {timeout} s\nstdout:\n{out}\nstderr:\n{err[-3000:]}")
    assert_session_empty(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)




def _check(result: subprocess.CompletedProcess[str], expected: list[str] = EXPECTED) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.strip(">. ") for line in result.stdout.splitlines()]
    for line in expected:
        assert line in lines, f"missing {line!r} in:\n{result.stdout}\nstderr:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def test_a_script_without_the_main_guard_works(tmp_path: Path) -> None:
    script = tmp_path / "first.py"
    script.write_text(UNGUARDED)
    _check(_run([str(script)]))


def test_python_dash_c_without_a_guard_works() -> None:
    _check(_run(["-c", UNGUARDED]))


def test_a_script_read_from_stdin_works(tmp_path: Path) -> None:
    _check(_run(["-"], stdin=UNGUARDED))


def test_the_interactive_interpreter_works() -> None:
    # The REPL reads statement by statement: blank lines end each block, as a user types them.
    typed = UNGUARDED.replace('\nprint("lambda"', '\n\nprint("lambda"')  # a blank line ends the with
    _check(_run(["-i", "-q"], stdin=typed + "\nexit()\n"))


def test_a_guarded_script_with_an_initializer_global_behaves_as_before(tmp_path: Path) -> None:
    # The classic pattern: an initializer in the script sets a global that tasks read.
    script = tmp_path / "guarded.py"
    script.write_text(textwrap.dedent("""
        import os
        import taskloom as tl

        connection = None
        LIMIT = 1

        def connect(name):
            global connection
            connection = f"{name}@{os.getpid()}"

        def work(x):
            return connection is not None and connection.endswith(str(os.getpid())), x * LIMIT

        if __name__ == "__main__":
            mode = tl.Processes(initializer=connect, initargs=("db",))
            print("first", tl.map(work, [1, 2, 3], mode=mode, workers=2))
            LIMIT = 10  # changed between two maps: the next map sees the new value
            print("second", tl.map(work, [1, 2, 3], mode=mode, workers=2))
    """))
    _check(_run([str(script)]), ["first [(True, 1), (True, 2), (True, 3)]",
                                 "second [(True, 10), (True, 20), (True, 30)]"])


def test_a_module_the_script_imports_travels_by_reference(tmp_path: Path) -> None:
    (tmp_path / "helpers_mod.py").write_text("import os\n\ndef where(x):\n    return __name__, x\n")
    script = tmp_path / "uses_module.py"
    script.write_text("import taskloom as tl\nfrom helpers_mod import where\n"
                      "print('where', tl.map(where, [1], mode='processes'))\n")
    _check(_run([str(script)], cwd=tmp_path), ["where [('helpers_mod', 1)]"])


def test_the_fork_server_is_gone_after_shutdown_and_a_new_map_works() -> None:
    code = textwrap.dedent("""
        import psutil, taskloom as tl
        from taskloom._backends import _forkserver
        print(tl.map(abs, [-1, -2], mode="processes", workers=2))
        server = _forkserver.server_pid()
        kids = psutil.Process().children(recursive=True)
        print("server running", server is not None and psutil.pid_exists(server), len(kids) >= 3)
        tl.shutdown()
        gone, alive = psutil.wait_procs(kids, timeout=10)
        print("after shutdown", [p.pid for p in alive], _forkserver.server_pid())
        print(tl.map(abs, [-3], mode="processes", workers=2))
    """)
    _check(_run(["-c", code]), ["[1, 2]", "server running True True", "after shutdown [] None", "[3]"])


@pytest.mark.parametrize(("setup", "env", "forked"), [
    ("", {}, True),  # one thread, a small process: forking is provably safe
    ("threading.Thread(target=time.sleep, args=(30,), daemon=True).start()", {}, False),  # a thread: exec
    ("", {"TASKLOOM_FORKSERVER": "exec"}, False),
])
def test_the_fork_server_is_forked_only_when_provably_safe(setup: str, env: dict[str, str], forked: bool,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    code = textwrap.dedent(f"""
        import threading, time
        import taskloom as tl
        from taskloom._backends import _forkserver
        {setup}
        print(tl.map(lambda x: -x, [1, 2], mode="processes", workers=2), _forkserver.server_forked())
    """)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _check(_run(["-c", code]), [f"[-1, -2] {forked}"])
