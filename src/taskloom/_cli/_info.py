"""``taskloom info``: what taskloom sees on this machine, as a table, plain text or JSON."""

from __future__ import annotations

import json
import sys

from .._bench import describe, machine_info

__all__ = ["run_info"]


def run_info(*, as_json: bool = False) -> int:
    """Print the machine description to stdout.

    Besides what ``machine_info`` says, it measures (in ~0.3 s) how much faster threads run
    pure-Python CPU work on this interpreter than one thread: the probe ``mode="auto"`` runs on a
    free-threaded build. About 1.0 with the GIL; up to the thread count without it.

    Args:
        as_json: print JSON instead of a table.

    Returns:
        The exit code, 0.
    """
    from .._sampling import SCALES
    from .._workload import scaling_text, thread_scaling

    info = machine_info()
    scaling = thread_scaling()
    info["thread_scaling"] = {str(k): round(x, 2) for k, x in scaling.items()}
    out = sys.stdout
    if as_json:
        json.dump(info, out, indent=2)
        out.write("\n")
        return 0
    rows = describe(info)
    if scaling:
        what = scaling_text(scaling).replace(" it ", " pure-Python work ", 1)
        if info["gil_enabled"]:
            why = "the GIL lets one run at a time"
        elif max(scaling.values()) >= SCALES:
            why = "no GIL: they compute in parallel"
        else:
            why = "no GIL, yet they did not run in parallel: are the CPUs busy?"
        at = next((i + 1 for i, (label, _) in enumerate(rows) if label == "Free-threading build"), len(rows))
        rows.insert(at, ("Threads (measured)", f"{what} ({why})"))
    print_rows("taskloom info", rows)
    return 0


def print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    """Label/value rows on stdout: a rich table on a terminal, aligned ``label: value`` lines else."""
    out = sys.stdout
    if out.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        for label, value in rows:
            table.add_row(label, value)
        Console(file=out).print(table)
    else:
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            out.write(f"{label + ':':<{width + 1}}  {value}\n")
