"""``taskloom advise module:function SAMPLE``: measure a function on sample records, say which engine."""

from __future__ import annotations

import dataclasses
import json
import sys

from ._info import print_rows
from ._inputs import load_function, read_records

__all__ = ["run_advise"]


def run_advise(spec: str, sample: str, *, fmt: str | None, limit: int, budget: float, total: int | None,
               as_json: bool) -> int:
    """Print the advice for ``spec`` measured on records of ``sample``; return the exit code."""
    from .._workload import advise

    fn = load_function(spec)
    items = list(read_records(sample, fmt, limit))
    if not items:
        print(f"taskloom advise: {sample!r} holds no records", file=sys.stderr)
        return 2
    advice = advise(fn, items, budget=budget, total=total)
    if as_json:
        json.dump(dataclasses.asdict(advice), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from .._system import gil_enabled

    rows = [("mode", advice.mode), ("workers", str(advice.workers)), ("chunksize", str(advice.chunksize)),
            ("interpreter", "GIL on" if gil_enabled() else "free-threaded, GIL off: thread scaling measured")]
    rows += [(f"speedup on {mode}", f"{x:.2f}x (model)") for mode, x in advice.expected_speedup.items()]
    rows += [(k, f"{v:.4g}") for k, v in advice.measurements.items() if not k.startswith("modelled_")]
    print_rows(f"taskloom advise {spec}", rows)
    print("why:")
    for reason in advice.reasons:
        print(f"  - {reason}")
    return 0
