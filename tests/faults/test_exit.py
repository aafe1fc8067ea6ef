"""Thread tasks still running when the program ends: finished, not killed mid-write.

Pool threads are daemon threads, but a task abandoned by a failed run is waited for at exit,
as a ThreadPoolExecutor's would be, so it finishes what it is writing. Tasks past their
timeout, and exits on Ctrl-C, are not waited for. Each case runs a real interpreter and looks at
what it left in a file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import os, sys, threading, time
    import taskloom as tl

    OUT = sys.argv[1]

    started = threading.Barrier(3)

    def write_slowly(i):
        if i == 0:
            started.wait(60)  # both writers are running when the run fails
            raise ValueError("the run fails at once")
        with open(OUT, "a") as f:
            f.write(f"start {i}\\n")
            f.flush()
            started.wait(60)
            time.sleep(float(os.environ.get("WRITE_SECONDS", "0.5")))
            f.write(f"end {i}\\n")

    def hang(i):
        with open(OUT, "a") as f:
            f.write("hanging\\n")
        time.sleep(600)

    if __name__ == "__main__":
        case = sys.argv[2]
        if case == "failed-run":
            try:
                tl.map(write_slowly, [0, 1, 2], mode="threads", workers=3)
            except tl.TaskError:
                print("TaskError", flush=True)
        elif case == "timeout":
            try:
                tl.map(hang, [1], mode="threads", timeout=0.2)
            except tl.TaskTimeout:
                print("TaskTimeout", flush=True)
        elif case == "ctrl-c":
            print("READY", flush=True)
            tl.map(hang, [1, 2], mode="threads", workers=2)
""")


def _run(tmp_path: Path, case: str, **env_vars: str) -> tuple[subprocess.CompletedProcess[str], float, str]:
    script, out = tmp_path / "script.py", tmp_path / "out.txt"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **env_vars}
    t0 = time.monotonic()
    if case == "ctrl-c":
        proc = subprocess.Popen([sys.executable, str(script), str(out), case], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        deadline = time.monotonic() + 30
        while (out.read_text().count("hanging") if out.exists() else 0) < 2:  # both tasks running
            assert time.monotonic() < deadline, "the tasks never started"
            time.sleep(0.01)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()  # leave nothing behind, then say what happened
            stdout, stderr = proc.communicate()
            pytest.fail(f"the program did not end within 60 s of Ctrl-C; its stderr:\n{stderr[-3000:]}")
        result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    else:
        result = subprocess.run([sys.executable, str(script), str(out), case], capture_output=True, text=True,
                                env=env, timeout=60, check=False)
    return result, time.monotonic() - t0, out.read_text() if out.exists() else ""


def test_thread_tasks_of_a_failed_run_finish_their_write_before_exit(tmp_path: Path) -> None:
    result, _, written = _run(tmp_path, "failed-run")
    assert result.returncode == 0, result.stderr
    assert "TaskError" in result.stdout
    assert sorted(written.split("\n")) == ["", "end 1", "end 2", "start 1", "start 2"], written


def test_the_exit_waits_for_a_long_write_as_the_stdlib_does_and_says_so(tmp_path: Path) -> None:
    # Longer than the 5 s after which the exit says what it waits for: no bound cuts the write.
    result, _, written = _run(tmp_path, "failed-run", WRITE_SECONDS="6")
    assert result.returncode == 0, result.stderr
    assert sorted(written.split("\n")) == ["", "end 1", "end 2", "start 1", "start 2"], written
    assert "waits for 2 thread task(s) still running" in result.stderr, result.stderr


def test_a_thread_task_past_its_timeout_does_not_hold_up_the_exit(tmp_path: Path) -> None:
    result, elapsed, written = _run(tmp_path, "timeout")
    assert result.returncode == 0, result.stderr
    assert "TaskTimeout" in result.stdout
    assert written == "hanging\n"
    assert elapsed < 30, f"the exit waited {elapsed:.1f} s for a task past its deadline"  # it sleeps 600 s


def test_ctrl_c_does_not_wait_for_running_thread_tasks(tmp_path: Path) -> None:
    result, elapsed, _ = _run(tmp_path, "ctrl-c")
    assert "KeyboardInterrupt" in result.stderr
    assert result.returncode != 0
    assert elapsed < 30, f"Ctrl-C took {elapsed:.1f} s to end the program"  # the tasks sleep 600 s
