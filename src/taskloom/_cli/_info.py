"""``taskloom info``: what taskloom sees on this machine, as a table, plain text or JSON."""

from __future__ import annotations

import json
import sys

from .._bench import describe, machine_info

__all__ = ["run_info"]


def run_info(*, as_json: bool = False) -> int:
    """Print the machine description to stdout.

    Args:
        as_json: print JSON instead of a table.

    Returns:
        The exit code, 0.
    """
    info = machine_info()
    out = sys.stdout
    if as_json:
        json.dump(info, out, indent=2)
        out.write("\n")
        return 0
    print_rows("taskloom info", describe(info))
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
