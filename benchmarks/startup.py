"""taskloom's start-up against the stdlib's and loky's, each case in a fresh interpreter, side by side.

Run by hand (not a test), from the repository root::

    .venv/bin/python benchmarks/startup.py                 # median of 10 per case: about a minute
    .venv/bin/python benchmarks/startup.py --quick         # median of 3
    .venv/bin/python benchmarks/startup.py --repeat 20 --json startup.json   # also write the raw samples

What is measured (issue 15's "Benchmark"), every case in its own fresh interpreter
(``sys.executable -c ...``), which times itself with ``time.perf_counter()`` and prints its figures as
JSON on stdout for this script to collect:

1. Import: ``import taskloom; taskloom.map`` (the attribute access loads the lazily imported API;
   ``import taskloom`` alone is reported from the same interpreter) against ``import
   concurrent.futures`` (the reference), ``from concurrent.futures import ProcessPoolExecutor`` and
   ``import multiprocessing``. For taskloom, also which of asyncio, ssl, rich and numpy the import
   loaded (target: none).
2. First processes map of one trivial task (the builtin ``abs``, so no ``__main__`` is involved),
   timed from just after the script's imports to the result, so it includes whatever the call
   imports lazily, the pool's start (and the fork server's, for forkserver) and the one task:
   ``taskloom.map(abs, [-1], mode="processes", workers=2)`` against ``ProcessPoolExecutor(2)``
   submit + result with fork and with forkserver, ``multiprocessing.get_context(...).Pool(2).map``
   with fork and with forkserver (the reference: issue 15's target), loky's
   ``get_reusable_executor(max_workers=2)`` submit + result, and joblib's
   ``Parallel(n_jobs=2)(delayed(abs)(x) for x in [-1])`` (loky underneath). The pool's shutdown
   (``taskloom.shutdown()``, ``shutdown(wait=True)``, ``close(); join()``) is timed apart, after
   the second call; "process" is the child's whole life seen from here (interpreter start and exit
   included).
3. Second call (warm), in the same interpreter: the same call again on the same pool.

The cases go round-robin: each round runs every case once, the starting case rotating from round to
round, so that outside load slows all of them alike. One untimed round comes first: it fills the
children's bytecode cache. The children get this process's environment, with ``PYTHONPATH`` led by
this checkout's ``src/`` (so taskloom is imported from here, venv or not) and a private bytecode
cache (``PYTHONPYCACHEPREFIX`` in a temporary directory, written even where
``PYTHONDONTWRITEBYTECODE`` is set), so that every library is imported from bytecode, as an
installed one would be, without writing into the source tree. Reported: median and min in ms, and
the ratio to the stdlib reference (below 1: faster than it). The targets of issue 15 follow, with how
far each is: ``import taskloom; taskloom.map`` within 15 ms, none of asyncio, ssl, rich, numpy
imported by it, and the first processes map within the forkserver ``Pool(2)`` first result.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
WATCH = ("asyncio", "ssl", "rich", "numpy")  # none of these should be loaded by import taskloom; taskloom.map
IMPORT_TARGET_MS = 15.0
MARK = "@@startup@@ "  # the child's result line starts with this (anything else it prints is ignored)
TIMEOUT = 120.0  # seconds per child: a hung child is killed and reported, the run goes on

# -- the children ---------------------------------------------------------------------------------------

# Every child starts with these lines only: sys and time are built into the interpreter, so nothing is
# imported before the clock starts but what the interpreter itself loads at start-up.
_PRELUDE = f"""\
import sys
import time
_WATCH = {WATCH!r}
_preloaded = [m for m in _WATCH if m in sys.modules]
"""

_REPORT = f"""\
import json
print({MARK!r} + json.dumps(_out), flush=True)
"""


def _import_child(first: str, then: str | None) -> str:
    """A child that times ``first`` and then ``then`` (say, an attribute access that imports more)."""
    return _PRELUDE + textwrap.dedent(f"""\
        _t0 = time.perf_counter()
        {first}
        _t1 = time.perf_counter()
        {then or "pass"}
        _t2 = time.perf_counter()
        _out = {{"first_ms": (_t1 - _t0) * 1e3, "total_ms": (_t2 - _t0) * 1e3,
                 "loaded": [m for m in _WATCH if m in sys.modules and m not in _preloaded],
                 "preloaded": _preloaded}}
        """) + _REPORT


def _pool_child(imports: str, first: str, second: str, close: str) -> str:
    """A child that imports, runs a first and a second call (each setting its result, ``r1``/``r2``),
    counts its child processes (untimed) and shuts the pool down, each step timed apart."""
    return _PRELUDE + textwrap.dedent("""\
        _t0 = time.perf_counter()
        {imports}
        _t1 = time.perf_counter()
        {first}
        _t2 = time.perf_counter()
        {second}
        _t3 = time.perf_counter()
        _loaded = [m for m in _WATCH if m in sys.modules and m not in _preloaded]
        try:
            import psutil
            _children = len(psutil.Process().children(recursive=True))
        except ImportError:
            _children = None
        _t4 = time.perf_counter()
        {close}
        _t5 = time.perf_counter()
        _out = {{"import_ms": (_t1 - _t0) * 1e3, "first_ms": (_t2 - _t1) * 1e3,
                 "second_ms": (_t3 - _t2) * 1e3, "shutdown_ms": (_t5 - _t4) * 1e3,
                 "results": [list(r1), list(r2)], "children": _children, "loaded": _loaded,
                 "preloaded": _preloaded}}
        """).format(imports=imports, first=first, second=second, close=close) + _REPORT


@dataclass
class Case:
    """One contender: the code its fresh interpreter runs, and the samples it sent back."""

    name: str
    kind: str  # "import" or "pool"
    code: str
    reference: bool = False  # the stdlib reference that the ratios divide by
    samples: list[dict[str, Any]] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)  # the child's whole life, seen from the parent
    errors: list[str] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [s[key] for s in self.samples]


def _stdlib_pools(start: str) -> list[Case]:
    ctx = f"ctx = multiprocessing.get_context({start!r})"
    ppe = _pool_child(
        f"import multiprocessing\nfrom concurrent.futures import ProcessPoolExecutor\n{ctx}",
        "ex = ProcessPoolExecutor(2, mp_context=ctx)\nr1 = [ex.submit(abs, -1).result()]",
        "r2 = [ex.submit(abs, -1).result()]",
        "ex.shutdown(wait=True)",
    )
    pool = _pool_child(
        f"import multiprocessing\n{ctx}",
        "pool = ctx.Pool(2)\nr1 = pool.map(abs, [-1])",
        "r2 = pool.map(abs, [-1])",
        "pool.close()\npool.join()",
    )
    return [
        Case(f"ProcessPoolExecutor(2), {start}: submit + result", "pool", ppe),
        Case(f"multiprocessing Pool(2), {start}: map", "pool", pool, reference=start == "forkserver"),
    ]


def make_cases(with_joblib: bool) -> list[Case]:
    """Every case: the imports first, then the pools (taskloom first in each group)."""
    tl_map = 'taskloom.map(abs, [-1], mode="processes", workers=2)'
    cases = [
        Case("import taskloom; taskloom.map", "import", _import_child("import taskloom", "taskloom.map")),
        Case("import concurrent.futures", "import", _import_child("import concurrent.futures", None),
             reference=True),
        Case("from concurrent.futures import ProcessPoolExecutor", "import",
             _import_child("from concurrent.futures import ProcessPoolExecutor", None)),
        Case("import multiprocessing", "import", _import_child("import multiprocessing", None)),
        Case('taskloom.map(abs, [-1], mode="processes", workers=2)', "pool",
             _pool_child("import taskloom\ntaskloom.map", f"r1 = {tl_map}", f"r2 = {tl_map}", "taskloom.shutdown()")),
        *_stdlib_pools("fork"),
        *_stdlib_pools("forkserver"),
    ]
    if with_joblib:
        # loky keeps the executor for reuse (joblib's included): the module's global is the one it made.
        loky_close = ("from joblib.externals.loky import reusable_executor\n"
                      "if reusable_executor._executor is not None:\n"
                      "    reusable_executor._executor.shutdown(wait=True)")
        cases += [
            Case("loky get_reusable_executor(2): submit + result", "pool", _pool_child(
                "from joblib.externals.loky import get_reusable_executor",
                "ex = get_reusable_executor(max_workers=2)\nr1 = [ex.submit(abs, -1).result()]",
                "ex = get_reusable_executor(max_workers=2)\nr2 = [ex.submit(abs, -1).result()]",
                loky_close)),
            Case("joblib Parallel(n_jobs=2) (loky)", "pool", _pool_child(
                "from joblib import Parallel, delayed",
                "r1 = Parallel(n_jobs=2)(delayed(abs)(x) for x in [-1])",
                "r2 = Parallel(n_jobs=2)(delayed(abs)(x) for x in [-1])",
                loky_close)),
        ]
    return cases


# -- running them ----------------------------------------------------------------------------------------


def child_env(cache_dir: str) -> dict[str, str]:
    """This process's environment, with this checkout's src/ first on PYTHONPATH and a private
    bytecode cache (written, so that the timed rounds import from bytecode)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env["PYTHONPYCACHEPREFIX"] = cache_dir
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_child(case: Case, env: dict[str, str]) -> tuple[dict[str, Any] | None, float, str | None]:
    """Run one case in a fresh interpreter: its figures, its wall time in ms, and an error if any."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", case.code], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return None, (time.perf_counter() - t0) * 1e3, f"timed out after {TIMEOUT:.0f} s"
    wall = (time.perf_counter() - t0) * 1e3
    lines = [line[len(MARK):] for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return None, wall, f"exit {proc.returncode}: {tail}"
    out = json.loads(lines[-1])
    if case.kind == "pool" and out["results"] != [[1], [1]]:
        return None, wall, f"wrong results {out['results']!r}"
    return out, wall, None


def measure(cases: Sequence[Case], repeat: int, env: dict[str, str]) -> None:
    """One untimed round, then ``repeat`` rounds of every case, the starting case rotating."""
    n = len(cases)
    for r in range(-1, repeat):
        label = "warm-up (untimed)" if r < 0 else f"round {r + 1}/{repeat}"
        print(f"  {label}", file=sys.stderr, flush=True)
        order = list(cases) if r < 0 else [cases[(r + i) % n] for i in range(n)]
        for case in order:
            out, wall, error = run_child(case, env)
            if error is not None:
                print(f"    {case.name}: {error}", file=sys.stderr, flush=True)
            if r < 0:
                continue
            if error is not None:
                case.errors.append(error)
            else:
                assert out is not None
                case.samples.append(out)
                case.wall_ms.append(wall)


# -- the tables ------------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, the first column left-aligned and the others right-aligned."""
    widths = [max(len(c) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ms(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else f"{value:{fmt}}"


def _ratio(value: float | None, ref: float | None) -> str:
    return "-" if value is None or not ref else f"{value / ref:.2f}x"


def _failed(case: Case) -> str:
    return f" ({len(case.errors)} failed)" if case.errors else ""


def _modules(samples: list[dict[str, Any]]) -> str:
    seen = sorted({m for s in samples for m in s["loaded"]})
    return ", ".join(seen) if seen else "none"


def import_table(cases: Sequence[Case]) -> str:
    ref = _med(next(c for c in cases if c.reference).values("total_ms"))
    rows = []
    for c in cases:
        total = _med(c.values("total_ms"))
        mins = min(c.values("total_ms"), default=None)
        rows.append((c.name + _failed(c), _ms(total, ".2f"), _ms(mins, ".2f"), _ratio(total, ref),
                     _modules(c.samples)))
        if c.name.startswith("import taskloom"):
            alone = _med(c.values("first_ms"))
            rows.append(("  of which import taskloom", _ms(alone, ".2f"),
                         _ms(min(c.values("first_ms"), default=None), ".2f"), _ratio(alone, ref), ""))
    headers = ("import", "median ms", "min ms", "vs concurrent.futures", f"loaded of {', '.join(WATCH)}")
    return table(headers, rows)


def pool_table(cases: Sequence[Case]) -> str:
    reference = next(c for c in cases if c.reference)
    ref_first, ref_second = _med(reference.values("first_ms")), _med(reference.values("second_ms"))
    rows = []
    for c in cases:
        first, second = _med(c.values("first_ms")), _med(c.values("second_ms"))
        rows.append((
            c.name + _failed(c),
            _ms(first), _ms(min(c.values("first_ms"), default=None)), _ratio(first, ref_first),
            _ms(second, ".2f"), _ms(min(c.values("second_ms"), default=None), ".2f"), _ratio(second, ref_second),
            _ms(_med(c.values("shutdown_ms"))), _ms(_med(c.values("import_ms"))), _ms(_med(c.wall_ms), ".0f"),
        ))
    headers = ("first processes call of one task", "first: median ms", "min ms", "vs forkserver Pool",
               "second: median ms", "min ms", "vs forkserver Pool", "shutdown ms", "imports ms", "process ms")
    return table(headers, rows)


def targets(cases: Sequence[Case]) -> tuple[str, list[dict[str, Any]]]:
    """Issue 15's targets: measured (median), limit, how far, met."""
    by_name = {c.name: c for c in cases}
    tl_import = by_name["import taskloom; taskloom.map"]
    tl_pool = next(c for c in cases if c.name.startswith("taskloom.map"))
    ref_pool = next(c for c in cases if c.kind == "pool" and c.reference)
    loaded = sorted({m for s in tl_import.samples for m in s["loaded"]})
    found: list[dict[str, Any]] = []

    def add(what: str, measured: float | None, limit: float | None) -> None:
        met = None if measured is None or limit is None else measured <= limit
        found.append({"target": what, "measured_ms": measured, "limit_ms": limit, "met": met})

    add("import taskloom; taskloom.map <= 15 ms", _med(tl_import.values("total_ms")), IMPORT_TARGET_MS)
    add(f"first processes map <= {ref_pool.name} first result", _med(tl_pool.values("first_ms")),
        _med(ref_pool.values("first_ms")))
    rows = []
    for t in found:
        m, lim = t["measured_ms"], t["limit_ms"]
        over = "-" if m is None or lim is None else f"{m - lim:+.1f} ms ({m / lim:.2f}x)"
        verdict = "-" if t["met"] is None else ("met" if t["met"] else "NOT met")
        rows.append((t["target"], _ms(m), _ms(lim), over, verdict))
    found.append({"target": f"import taskloom; taskloom.map loads none of {', '.join(WATCH)}",
                  "loaded": loaded, "met": not loaded and bool(tl_import.samples)})
    rows.append((f"import taskloom; taskloom.map loads none of {', '.join(WATCH)}",
                 ", ".join(loaded) or "none", "none", f"{len(loaded)} loaded",
                 "met" if found[-1]["met"] else "NOT met"))
    return table(("target (issue 15)", "measured ms (median)", "limit ms", "how far", "verdict"), rows), found


# -- main ------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    try:
        load: list[float] | None = list(os.getloadavg())
    except OSError:  # pragma: no cover - not on this platform
        load = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "os_cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_avg": load,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=None, help="fresh interpreters per case (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 per case (unless --repeat is given)")
    parser.add_argument("--json", metavar="PATH", help="also write the raw samples and the summary as JSON")
    args = parser.parse_args(argv)
    repeat = args.repeat if args.repeat is not None else (3 if args.quick else 10)
    if repeat < 1:
        parser.error("--repeat must be at least 1")

    with_joblib = importlib.util.find_spec("joblib") is not None
    cases = make_cases(with_joblib)
    before = machine()
    cache_dir = tempfile.mkdtemp(prefix="taskloom-startup-pycache-")
    try:
        measure(cases, repeat, child_env(cache_dir))
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    after = machine()

    imports = [c for c in cases if c.kind == "import"]
    pools = [c for c in cases if c.kind == "pool"]
    load = (" / ".join(", ".join(f"{x:.2f}" for x in m["load_avg"]) for m in (before, after))
            if before["load_avg"] and after["load_avg"] else "unknown")
    print("### taskloom start-up benchmark")
    print()
    print(f"Python {before['python']} ({before['implementation']}) on {before['platform']}; "
          f"{before['os_cpu_count']} CPUs ({before['usable_cpus']} usable). Every case in a fresh interpreter, "
          f"median and min of {repeat}, the cases round-robin in one run. Load average (1, 5, 15 min) "
          f"before / after: {load}." + ("" if with_joblib else " joblib is not installed: no loky rows."))
    print()
    print("#### Import (ms, inside the child; the reference is import concurrent.futures)")
    print()
    print(import_table(imports))
    print()
    print("#### First processes call of one task, then a second on the same pool (ms, inside the child; "
          "the reference is multiprocessing Pool(2) with forkserver)")
    print()
    print(pool_table(pools))
    print()
    print("#### Targets")
    print()
    text, found = targets(cases)
    print(text)
    no_pool = [c.name for c in pools if any(s["children"] == 0 for s in c.samples)]
    if no_pool:
        print()
        print(f"Warning: no child process was alive after the calls of: {', '.join(no_pool)}")

    if args.json:
        doc = {
            "machine": before, "machine_after": after, "repeat": repeat, "targets": found,
            "cases": [{"name": c.name, "kind": c.kind, "reference": c.reference, "samples": c.samples,
                       "wall_ms": c.wall_ms, "errors": c.errors} for c in cases],
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\n(wrote {args.json})", file=sys.stderr)
    return 1 if any(c.errors for c in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
