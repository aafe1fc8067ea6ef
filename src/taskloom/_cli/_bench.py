"""``taskloom bench``: run the suite with a progress display, print the tables, write the files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from .._bench import (
    BENCH_MODES,
    WORKLOADS,
    ModeResult,
    SuiteResult,
    bench_size,
    default_repeat,
    get_workload,
    render_html,
    run_suite,
)
from .._bench._tables import HEADERS, NUMERIC, format_seconds, notes, plain_table, rows, skipped, timing_note

__all__ = ["run_bench"]


class _PlainProgress:
    """One line per finished (workload, mode), for logs and pipes: no escape codes."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def start(self, total_steps: int) -> None:
        self._out.write(f"taskloom bench: {total_steps} calls to run\n")

    def step(self, workload: str, mode: str, what: str) -> None:
        pass

    def finished(self, workload: str, result: ModeResult) -> None:
        self._out.write(f"{workload}/{result.label}: {_summary(result)}\n")
        self._out.flush()

    def close(self) -> None:
        pass


class _RichProgress:
    """A live progress bar on the terminal, with a line above it per finished mode."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(file=out), transient=True,
        )
        self._task: Any = None
        self._pending = False

    def start(self, total_steps: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("starting", total=total_steps)

    def step(self, workload: str, mode: str, what: str) -> None:
        # Called as a call starts: the bar counts calls finished, so the previous one is done now.
        if self._pending:
            self._progress.advance(self._task)
        self._pending = True
        self._progress.update(self._task, description=f"{workload}/{mode}: {what}")

    def finished(self, workload: str, result: ModeResult) -> None:
        style = "red" if result.error else "green"
        self._progress.console.print(f"[{style}]{workload}/{result.label}[/]: {_summary(result)}", highlight=False)

    def close(self) -> None:
        self._progress.stop()


def _summary(result: ModeResult) -> str:
    if result.error is not None:
        return f"FAILED - {result.error}"
    return f"{format_seconds(result.median)} median of {len(result.times)}"


def _headline(suite: SuiteResult) -> str:
    m = suite.machine
    gil = "GIL enabled" if m["gil_enabled"] else "GIL disabled"
    return (
        f"taskloom bench - {m['usable_cpus']} usable CPUs (os.cpu_count() {m['os_cpu_count']}), "
        f"Python {m['python_version']} {m['python_implementation']}, {gil}, "
        f"start method {m['default_start_method']}"
    )


def print_plain(suite: SuiteResult, out: TextIO) -> None:
    """The results as aligned plain text."""
    cpus = int(suite.machine["usable_cpus"])
    out.write(f"{_headline(suite)}\n{timing_note(suite)}\n")
    for line in skipped(suite):
        out.write(f"{line}\n")
    for w in suite.workloads:
        out.write(f"\n{w.workload.name}: {w.workload.description} ({w.tasks} tasks)\n")
        out.write(plain_table(HEADERS, [r.cells for r in rows(w)], NUMERIC) + "\n")
        for note in notes(w, cpus):
            out.write(f"  {note}\n")
    out.write("\nVerdict\n")
    for w in suite.workloads:
        out.write(f"  {w.verdict}\n")


def print_rich(suite: SuiteResult, out: TextIO) -> None:
    """The results as rich tables, for a terminal (they fit in 80 columns)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out)
    cpus = int(suite.machine["usable_cpus"])
    console.print(f"[bold]{_headline(suite)}[/]", highlight=False)
    console.print(timing_note(suite), style="dim", highlight=False)
    for line in skipped(suite):
        console.print(line, style="yellow", highlight=False)
    for w in suite.workloads:
        # The last column holds a one-character mark, explained in the caption, instead of the
        # words the plain table uses: with them the table is wider than an 80-column terminal.
        failures = [f"{r.label} FAILED: {r.error}" for r in w.results if r.error is not None]
        caption = "\n".join(["* fastest", *failures, *notes(w, cpus)])
        table = Table(title=f"{w.workload.name}: {w.workload.description} ({w.tasks} tasks)",
                      title_justify="left", title_style="bold", caption=caption, caption_justify="left",
                      box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for header, numeric in zip(HEADERS, NUMERIC, strict=True):
            table.add_column(header, justify="right" if numeric else "left", no_wrap=numeric,
                             max_width=12 if header == "mode" else None)
        for row in rows(w):
            mark = "*" if row.winner else "!" if row.failed else ""
            table.add_row(*row.cells[:-1], mark, style="bold green" if row.winner else "red" if row.failed else None)
        console.print()
        console.print(table)
    console.print("\n[bold]Verdict[/]")
    for w in suite.workloads:
        console.print(f"  {w.verdict}", highlight=False)


def _check_output(path: Path | None, flag: str) -> str | None:
    if path is None:
        return None
    parent = path.expanduser().resolve().parent
    if not parent.is_dir():
        return f"{flag} {str(path)!r}: the folder {str(parent)!r} does not exist"
    if path.is_dir():
        return f"{flag} {str(path)!r} is a folder: give a file name"
    return None


def run_bench(args: argparse.Namespace) -> int:
    """Run ``taskloom bench`` with parsed arguments.

    Args:
        args: the parsed arguments (see ``build_parser``).

    Returns:
        0 when every answer was right and every file was written, 1 otherwise, 2 on a usage error.
    """
    for problem in (_check_output(args.json, "--json"), _check_output(args.report, "--report")):
        if problem is not None:
            print(f"taskloom bench: error: {problem}", file=sys.stderr)
            return 2
    size = bench_size(args.quick)
    workloads = [get_workload(name) for name in (args.workloads or list(WORKLOADS))]
    # Every mode the bench knows, by default: those taskloom lacks (dask, until it lands) are
    # listed as skipped, with why, rather than silently left out.
    modes = args.modes or list(BENCH_MODES)
    repeat = args.repeat or default_repeat(size)
    listener = _RichProgress(sys.stderr) if sys.stderr.isatty() else _PlainProgress(sys.stderr)
    try:
        suite = run_suite(workloads, modes, repeat=repeat, workers=args.workers, size=size, listener=listener)
    finally:
        listener.close()
    (print_rich if sys.stdout.isatty() else print_plain)(suite, sys.stdout)
    code = 0
    if args.json is not None:
        code |= _write(args.json, json.dumps(suite.to_dict(), indent=2) + "\n", "JSON")
    if args.report is not None:
        code |= _write(args.report, render_html(suite), "report")
    if not suite.ok:
        print("\ntaskloom bench: FAILED - a mode gave a wrong answer or raised:", file=sys.stderr)
        for line in suite.failures:
            print(f"  {line}", file=sys.stderr)
        code = 1
    return code


def _write(path: Path, text: str, what: str) -> int:
    try:
        path.expanduser().write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"taskloom bench: could not write the {what} to {str(path)!r}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote the {what} to {str(path)!r}")
    return 0
