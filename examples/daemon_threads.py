"""The guide's daemon threads, and what goes wrong with them; then taskloom.background.

A daemon thread is killed wherever it is when the program ends: in the middle of a write. And an
exception in it is printed and forgotten. taskloom.background stops the service *before* the
interpreter tears down, lets the current run finish, and re-raises its exception on stop().
Run: python examples/daemon_threads.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import taskloom as tl

CHILD = textwrap.dedent("""
    import sys, threading, time
    out = open(sys.argv[1], "w")
    def writer(stop=None):
        for record in range(1_000_000):
            if stop is not None and stop.is_set():
                break
            out.write(f"record {record} " + "x" * 100 + " end\\n")
            time.sleep(0.0005)
        out.write("CLEAN END\\n")
        out.flush()
    if sys.argv[2] == "daemon":
        threading.Thread(target=writer, daemon=True).start()
    else:
        import taskloom
        taskloom.background(writer)
    time.sleep(0.1)   # the main program ends while the writer is busy
""")


def run_child(kind: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        script, out = Path(tmp) / "child.py", Path(tmp) / "out.txt"
        script.write_text(CHILD)
        subprocess.run([sys.executable, str(script), str(out), kind], check=True, timeout=60)
        return out.read_text()


def main() -> None:
    for kind, label in (("daemon", "daemon thread"), ("taskloom", "taskloom.background")):
        text = run_child(kind)
        verdict = "finished cleanly" if text.endswith("CLEAN END\n") else "killed before it finished"
        print(f"{label}: {text.count(chr(10))} lines written, {verdict}")

    # A periodic job that fails: the error is not lost.
    ticks = threading.Event()

    def poll() -> None:
        ticks.set()
        raise ConnectionError("the queue server went away")

    svc = tl.background(poll, interval=0.01, restart="on-failure", max_restarts=2)
    ticks.wait(5)
    try:
        svc.join(10)
    except ConnectionError as exc:
        print(f"the service failed after {svc.restarts} restarts and stop()/join() re-raised: {exc}")


if __name__ == "__main__":
    main()
