"""BLAS on thread workers: 8 matrix products of 1000x1000 (float64) on ``Threads(2)``, capped or not.

Two taskloom threads each calling a BLAS that starts one thread per CPU run CPUs x 2 BLAS threads
on CPUs cores. taskloom caps BLAS to each pool thread's share of the CPUs while the pool runs
(``_backends/_blas.py``, threadpoolctl; processes get environment variables instead). Rows:

* ``threads(2), capped``: taskloom as it is (max(1, cpus // 2) BLAS threads per pool thread);
* ``threads(2), uncapped``: the same with the cap switched off (what taskloom did before);
* ``one thread, BLAS on every CPU``: a plain loop in the caller, BLAS left as it is (the reference).

Each row runs in a fresh interpreter, round-robin, ``--rounds`` times (median); the matrices are
made and one product is run outside the clock. The ratio capped/uncapped is what the cap buys.

Run: .venv/bin/python benchmarks/blas.py [--rounds 5] [--size 1000] [--count 8]

Measured on 2 CPUs (OpenBLAS, pthreads): 8 x 1000x1000, capped/uncapped 0.99x on a quiet machine
(each product keeps both CPUs busy either way), 0.92-0.94x with other work running; with many
small products (``--size 300 --count 200``), 0.69x: there the surplus BLAS threads mostly wait.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

VARIANTS = ("threads(2), capped", "threads(2), uncapped", "one thread, BLAS on every CPU")


def _one(variant: str, size: int, count: int) -> dict[str, object]:
    """In a fresh interpreter: time one variant (seconds, and the BLAS threads seen in a task)."""
    import numpy as np
    import threadpoolctl

    import taskloom as tl
    from taskloom._backends import _blas

    if variant == "threads(2), uncapped":
        _blas.acquire = lambda limit: False  # taskloom before the cap

    rng = np.random.default_rng(0)
    mats = [rng.standard_normal((size, size)) for _ in range(count)]

    def product(m: np.ndarray) -> float:  # type: ignore[type-arg]
        return float((m @ m)[0, 0])

    def blas_threads(_: object) -> int:
        return max(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")

    if variant == "one thread, BLAS on every CPU":
        def run() -> list[float]:
            return [product(m) for m in mats]
        seen = blas_threads(None)
    else:
        def run() -> list[float]:
            return tl.map(product, mats, mode=tl.Threads(), workers=2, chunksize=1)
        seen = tl.map(blas_threads, [0], mode=tl.Threads(), workers=2)[0]
    product(mats[0])  # warm-up: BLAS starts its threads
    run()
    t0 = time.perf_counter()
    run()
    elapsed = time.perf_counter() - t0
    tl.shutdown()
    return {"seconds": elapsed, "blas_threads": seen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.one, args.size, args.count)))
        return
    from taskloom._system import usable_cpus

    results: dict[str, list[dict[str, object]]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            out = subprocess.run([sys.executable, __file__, "--one", variant, "--size", str(args.size),
                                  "--count", str(args.count)], capture_output=True, text=True, check=True)
            results[variant].append(json.loads(out.stdout))
    median = {v: statistics.median(float(r["seconds"]) for r in rs) for v, rs in results.items()}  # type: ignore[arg-type]
    print(f"{args.count} products of {args.size}x{args.size} float64, {usable_cpus()} usable CPUs, "
          f"median of {args.rounds} rounds (fresh interpreters, round-robin)\n")
    print("| variant | BLAS threads per task | seconds | vs uncapped |")
    print("|---|---|---|---|")
    for variant in VARIANTS:
        seen = results[variant][0]["blas_threads"]
        print(f"| {variant} | {seen} | {median[variant]:.3f} | "
              f"{median[variant] / median['threads(2), uncapped']:.2f}x |")
    ratios = [float(c["seconds"]) / float(u["seconds"])  # type: ignore[arg-type]
              for c, u in zip(results["threads(2), capped"], results["threads(2), uncapped"], strict=True)]
    print(f"\ncapped / uncapped, per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
