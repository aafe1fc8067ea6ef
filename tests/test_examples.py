"""Every example runs, test-sized (TASKLOOM_SMALL=1), and prints what it is there to show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: example file -> lines its output must contain
EXPECTED: dict[str, list[str]] = {
    "io_threads.py": ["all titles correct", "auto chose threads"],
    "async_fetch.py": ["all titles correct", "with at most 100 at once"],
    "daemon_threads.py": [
        "daemon thread:", "killed before it finished",
        "taskloom.background:", "finished cleanly",
        "failed after 2 restarts and stop()/join() re-raised",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_shows_its_point(name: str) -> None:
    env = {**os.environ, "TASKLOOM_SMALL": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=EXAMPLES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in EXPECTED[name]:
        assert line in proc.stdout, f"{name} did not print {line!r}:\n{proc.stdout}"
