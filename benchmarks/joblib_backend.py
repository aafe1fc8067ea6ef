"""taskloom as a joblib backend against joblib's default (loky), side by side, fresh interpreters.

Run by hand (not a test), from the repository root::

    .venv/bin/python benchmarks/joblib_backend.py                # 5 rounds: a few minutes
    .venv/bin/python benchmarks/joblib_backend.py --quick        # 3 rounds
    .venv/bin/python benchmarks/joblib_backend.py --quick --docs # also write the table into docs/benchmarks.md

``--docs`` rewrites only this script's section of docs/benchmarks.md (``<!-- begin: joblib_backend -->``
to ``<!-- end: joblib_backend -->``, see ``doc_sections.py``); ``peers.py``'s section stays.

What is measured (issue 20's "Benchmark"), each case in its own fresh interpreter, which times itself
and prints its figures as JSON for this script to collect:

* ``search``: ``GridSearchCV(SVC(), {"C": [0.1, 1, 10, 100], "gamma": [0.01, 0.1, 1, "scale"]}, cv=5)``
  on iris (80 fits of about a millisecond: the cost of dispatching them dominates).
* ``search-digits``: ``GridSearchCV(SVC(), {"C": [1, 10], "gamma": [0.001, 0.01]}, cv=3)`` on the
  digits data set (12 fits of about 0.1 s each: the work dominates).
* ``tiny``: ``joblib.Parallel()(joblib.delayed(f)(i) for i in range(10_000))``, ``f`` a one-line
  function of the script (so pickled by value, as a user's would be).

Each runs under ``joblib.parallel_config(backend=..., n_jobs=2)`` with backend ``"loky"`` (joblib's
default) and ``"taskloom"`` (after ``taskloom.joblib.register()``). "cold" is the first call in the
interpreter (it starts the workers, which import scikit-learn); "warm" is the median of the next
calls on the same warm workers. The cases go round-robin, the starting case rotating each round, so
that outside load slows all of them alike; one untimed round fills the bytecode cache first.
Reported: median (and min) over the rounds, and the ratio taskloom / loky (below 1: taskloom is
faster). The goal of issue 20: within 1.1x of loky on the search, not slower on tiny tasks.

``--sizing joblib`` adds a third backend row, ``taskloom (joblib sizing)``: the same backend with
joblib's own auto-batching (``AutoBatchingMixin``) instead of taskloom's batch sizing, to show
which one does better (the reason the backend uses taskloom's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from doc_sections import DOC as DOCS
from doc_sections import write_section

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
MARK = "@@joblib@@ "
TIMEOUT = 300.0
SECTION = "joblib_backend"  # of docs/benchmarks.md

WORKLOADS = {
    "search": "GridSearchCV on iris, 80 fits of ~1 ms",
    "search-digits": "GridSearchCV on digits, 12 fits of ~0.1 s",
    "tiny": "10,000 tiny tasks",
}
BACKENDS = {
    "loky": ("loky", None),
    "taskloom": ("taskloom", "taskloom"),
    "taskloom (joblib sizing)": ("taskloom", "joblib"),
}

CHILD = """\
import json, sys, time
workload, backend, sizing, warm_calls, mark = sys.argv[1:6]
warm_calls = int(warm_calls)
import joblib
if backend == "taskloom":
    import taskloom.joblib
    taskloom.joblib.register()
    taskloom.joblib._SIZING = sizing

def f(i):
    return i * i

def job():
    if workload == "tiny":
        out = joblib.Parallel()(joblib.delayed(f)(i) for i in range(10_000))
        assert out == [i * i for i in range(10_000)]
        return None
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC
    if workload == "search":
        grid = {"C": [0.1, 1, 10, 100], "gamma": [0.01, 0.1, 1, "scale"]}
        search = GridSearchCV(SVC(), grid, cv=5).fit(X, y)
    else:
        search = GridSearchCV(SVC(), {"C": [1, 10], "gamma": [0.001, 0.01]}, cv=3).fit(X, y)
    return [round(float(s), 12) for s in search.cv_results_["mean_test_score"]]

if workload != "tiny":
    from sklearn.datasets import load_digits, load_iris
    X, y = (load_iris if workload == "search" else load_digits)(return_X_y=True)
    import sklearn.model_selection, sklearn.svm  # imported before the clock starts, on both backends

with joblib.parallel_config(backend=backend, n_jobs=2):
    t = time.perf_counter()
    scores = job()
    cold = time.perf_counter() - t
    warm = []
    for _ in range(warm_calls):
        t = time.perf_counter()
        again = job()
        warm.append(time.perf_counter() - t)
        assert again == scores
if backend == "taskloom":
    taskloom.shutdown()
else:
    from joblib.externals.loky import reusable_executor
    if reusable_executor._executor is not None:
        reusable_executor._executor.shutdown(wait=True, kill_workers=True)
print(mark + json.dumps({"cold": cold, "warm": warm, "scores": scores}), flush=True)
"""


def run_child(workload: str, backend: str, warm_calls: int, env: dict[str, str]) -> dict[str, Any]:
    name, sizing = BACKENDS[backend]
    argv = [sys.executable, "-c", CHILD, workload, name, sizing or "-", str(warm_calls), MARK]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=ROOT)
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            return dict(json.loads(line[len(MARK):]))
    raise RuntimeError(f"{workload} on {backend} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def child_env(cache: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONPYCACHEPREFIX"] = cache  # every library imported from bytecode, none written into the tree
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # (or each child would compile scikit-learn from source)
    return env


def measure(rounds: int, warm_calls: int, backends: list[str]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    cases = [(w, b) for w in WORKLOADS for b in backends]
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory(prefix="taskloom-bench-") as cache:
        env = child_env(cache)
        for w in WORKLOADS:  # untimed: fills the bytecode cache
            run_child(w, "taskloom", 0, env)
            run_child(w, "loky", 0, env)
        for r in range(rounds):
            order = cases[r % len(cases):] + cases[:r % len(cases)]
            for workload, backend in order:
                samples[(workload, backend)].append(run_child(workload, backend, warm_calls, env))
            print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    for workload in WORKLOADS:  # every backend computed the same scores
        found = {json.dumps(s["scores"]) for b in backends for s in samples[(workload, b)]}
        assert len(found) == 1, f"{workload}: the backends disagree: {found}"
    return samples


def summarize(samples: dict[tuple[str, str], list[dict[str, Any]]],
              backends: list[str]) -> list[dict[str, Any]]:
    rows = []
    for workload in WORKLOADS:
        ref: dict[str, float] = {}
        for backend in backends:
            runs = samples[(workload, backend)]
            cold = [s["cold"] for s in runs]
            warm = [statistics.median(s["warm"]) for s in runs]
            row = {"workload": workload, "backend": backend,
                   "cold": statistics.median(cold), "cold_min": min(cold),
                   "warm": statistics.median(warm), "warm_min": min(warm)}
            if backend == "loky":
                ref = {"cold": row["cold"], "warm": row["warm"]}
            row["cold_ratio"] = row["cold"] / ref["cold"]
            row["warm_ratio"] = row["warm"] / ref["warm"]
            rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| workload | backend | warm: median (min) | warm / loky | cold: median (min) | cold / loky |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['backend']} | {r['warm'] * 1e3:.0f} ms ({r['warm_min'] * 1e3:.0f}) | "
                     f"{r['warm_ratio']:.2f}x | {r['cold'] * 1e3:.0f} ms ({r['cold_min'] * 1e3:.0f}) | "
                     f"{r['cold_ratio']:.2f}x |")
    return "\n".join(lines)


def verdict(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        if r["backend"] != "taskloom":
            continue
        goal = 1.0 if r["workload"] == "tiny" else 1.1
        met = "met" if r["warm_ratio"] <= goal else "missed"
        out.append(f"- **{r['workload']}** (warm): taskloom / loky = {r['warm_ratio']:.2f}x, goal <= {goal:.1f}x: "
                   f"{met}.")
    return out


def markdown(rows: list[dict[str, Any]], rounds: int, warm_calls: int, load: tuple[float, ...],
             seconds: float) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = f"""\
    ## joblib backend: taskloom against loky

    Written by `python benchmarks/joblib_backend.py --docs` on {when}, in {seconds:.0f} s ({rounds} rounds,
    {warm_calls} warm calls each); the script rewrites only this section of the page, `benchmarks/peers.py`
    only its own. Each case runs in a fresh interpreter under `joblib.parallel_config(backend=..., n_jobs=2)`:
    loky is joblib's default backend, taskloom is `taskloom.joblib` (processes, no timeout). "warm" is a
    call on workers that already ran one (the usual case inside a search); "cold" is the first call of
    the interpreter, which starts the workers (they import scikit-learn). Median (min) over the rounds.
    Workloads: {"; ".join(f"`{k}`: {v}" for k, v in WORKLOADS.items())}. Both backends computed the
    same scores. Load average (1 min) before and after: {load[0]:.2f}, {load[1]:.2f}. **This is a shared
    machine with 2 CPUs, and others run tests on it**: read differences under ~15% as noise.

    """
    return textwrap.dedent(body) + table(rows) + "\n\n" + "\n".join(verdict(rows)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="fresh interpreters per case (default 5)")
    parser.add_argument("--quick", action="store_true", help="3 rounds (unless --rounds is given)")
    parser.add_argument("--warm", type=int, default=3, help="warm calls per interpreter (default 3)")
    parser.add_argument("--sizing", choices=["taskloom", "joblib"], default="taskloom",
                        help="joblib: also run the backend with joblib's own auto-batching")
    parser.add_argument("--docs", action="store_true", help="write the table into its section of docs/benchmarks.md")
    parser.add_argument("--json", metavar="PATH", help="also write the raw samples and the summary as JSON")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    backends = ["loky", "taskloom"] + (["taskloom (joblib sizing)"] if args.sizing == "joblib" else [])
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    samples = measure(rounds, args.warm, backends)
    seconds = time.monotonic() - start
    rows = summarize(samples, backends)
    print(f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{rounds} rounds, {args.warm} warm calls each, {seconds:.0f} s")
    print(table(rows))
    print("\n".join(verdict(rows)))
    if args.docs:
        write_section(SECTION, markdown(rows, rounds, args.warm, (load_before, os.getloadavg()[0]), seconds), DOCS)
        print(f"wrote the {SECTION!r} section of {DOCS.relative_to(ROOT)}")
    if args.json:
        raw = {f"{w}|{b}": v for (w, b), v in samples.items()}
        Path(args.json).write_text(json.dumps({"rows": rows, "samples": raw}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
