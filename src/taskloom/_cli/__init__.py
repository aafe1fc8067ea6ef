"""The ``taskloom`` command: ``info``, ``bench``, ``advise`` and ``map``.

``main(argv)`` parses the arguments, runs one subcommand and returns the exit code; it never calls
``sys.exit`` itself (argparse's own exits, for ``--help``, ``--version`` and usage errors, are turned
into return codes), so tests can call it in-process. Warm pools are shut down before it returns.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``low``, with an error that says so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _choices(what: str, names: Callable[[], Sequence[str]]) -> Callable[[str], list[str]]:
    """An argparse type for a comma-separated list of names, each one of ``names()``."""

    def parse(text: str) -> list[str]:
        allowed = list(names())
        chosen: list[str] = []
        for part in text.split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in allowed:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {name!r}: choose from {', '.join(allowed)} (comma-separated)"
                )
            if name not in chosen:
                chosen.append(name)
        if not chosen:
            raise argparse.ArgumentTypeError(f"expected at least one {what}, got {text!r}")
        return chosen

    return parse


def _mode_names() -> Sequence[str]:
    from .._modes import MODE_NAMES

    return MODE_NAMES


def _workload_names() -> Sequence[str]:
    from .._bench import WORKLOADS

    return list(WORKLOADS)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``taskloom`` command (subcommands ``info`` and ``bench``)."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="taskloom",
        description="Run Python work concurrently through one API: see what this machine offers "
                    "(info) and how each engine does on it (bench).",
    )
    parser.add_argument("--version", action="version", version=f"taskloom {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = commands.add_parser(
        "info", help="CPUs, start methods, the GIL and default workers",
        description="Show what taskloom sees: usable CPUs, start methods, the GIL, default workers per mode.",
    )
    info.add_argument("--json", action="store_true", help="print the same as JSON")
    info.set_defaults(handler="info")

    bench = commands.add_parser(
        "bench", help="time every mode on standard workloads, with a verdict",
        description="Run the guide's performance comparison on this machine: each workload in each mode "
                    "through taskloom.map, on warm pools, every answer checked. Sequential always runs: "
                    "it is the baseline for speedups. Set TASKLOOM_SMALL=1 for test-sized runs.",
    )
    bench.add_argument("--quick", action="store_true",
                       help="smaller inputs and 3 repeats: under a minute on 2 CPUs (what `make bench` runs)")
    bench.add_argument("--workloads", type=_choices("workload", _workload_names), default=None,
                       metavar="LIST", help=f"comma-separated, from: {', '.join(_workload_names())} (default: all)")
    bench.add_argument("--modes", type=_choices("mode", _mode_names), default=None, metavar="LIST",
                       help=f"comma-separated, from: {', '.join(_mode_names())} (default: all)")
    bench.add_argument("--repeat", type=_positive_int, default=None, metavar="N",
                       help="timed runs per workload and mode (default 5; 3 with --quick)")
    bench.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                       help="workers for every parallel mode (default: each mode's own default)")
    bench.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the raw numbers as JSON")
    bench.add_argument("--report", type=Path, default=None, metavar="PATH",
                       help="write a self-contained HTML report")
    bench.set_defaults(handler="bench")

    advise = commands.add_parser(
        "advise", help="measure a function on sample records and say which engine suits it",
        description="Run package.module:function on records from SAMPLE (JSON lines, CSV or plain lines, "
                    "chosen by extension or --format; '-' for stdin) and print taskloom's advice with its reasons.",
    )
    advise.add_argument("function", metavar="package.module:function")
    advise.add_argument("sample", metavar="SAMPLE")
    advise.add_argument("--format", choices=("jsonl", "csv", "lines"), default=None,
                        help="input format (default: by extension; plain lines otherwise)")
    advise.add_argument("--limit", type=_positive_int, default=200, metavar="N",
                        help="records to read from SAMPLE at most (default 200)")
    advise.add_argument("--budget", type=_positive_float, default=1.0, metavar="SECONDS",
                        help="seconds of sample tasks to run at most (default 1)")
    advise.add_argument("--total", type=_positive_int, default=None, metavar="N",
                        help="how many tasks the real job has (default: assume 10,000)")
    advise.add_argument("--json", action="store_true", help="print the advice as JSON")
    advise.set_defaults(handler="advise")

    mapper = commands.add_parser(
        "map", help="run package.module:function over every record of INPUT, resumably",
        description="Apply package.module:function to each record of INPUT (JSON lines, CSV rows as dicts, or "
                    "plain lines; '-' for stdin) and write one JSON line per record to OUTPUT as results come: "
                    '{"index", "input", "value"} or {"index", "input", "error": {"type", "message", "traceback"}}. '
                    "Exit status: 0 all succeeded, 1 some failed, 2 bad usage.",
    )
    mapper.add_argument("function", metavar="package.module:function")
    mapper.add_argument("input", metavar="INPUT")
    mapper.add_argument("-o", "--output", default=None, metavar="OUTPUT", help="JSON lines out (default: stdout)")
    mapper.add_argument("--format", choices=("jsonl", "csv", "lines"), default=None,
                        help="input format (default: by extension; plain lines otherwise)")
    mapper.add_argument("--star", action="store_true", help="unpack each record (a JSON list) as the arguments")
    mapper.add_argument("--mode", type=_choices("mode", _mode_names), default=["auto"], metavar="MODE",
                        help=f"one of: {', '.join(_mode_names())} (default auto)")
    mapper.add_argument("--workers", type=_positive_int, default=None, metavar="N")
    mapper.add_argument("--timeout", type=_positive_float, default=None, metavar="SECONDS", help="per task")
    mapper.add_argument("--retries", type=_non_negative_int, default=0, metavar="N")
    order = mapper.add_mutually_exclusive_group()
    order.add_argument("--ordered", dest="ordered", action="store_true", default=True,
                       help="write results to stdout in input order (default; -o OUTPUT is written as records end)")
    order.add_argument("--unordered", dest="ordered", action="store_false", help="write results as they finish")
    mapper.add_argument("--progress", action="store_true", help="a progress bar on stderr")
    mapper.add_argument("--resume", action="store_true",
                        help="OUTPUT is a journal: keep what it records, run only the rest (append to it)")
    mapper.add_argument("--rerun-failed", action="store_true",
                        help="with --resume: run again the records OUTPUT holds as failed")
    mapper.set_defaults(handler="map")
    return parser


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def main(argv: list[str] | None = None) -> int:
    """Run the ``taskloom`` command.

    Args:
        argv: the arguments after the program name; default ``sys.argv[1:]``.

    Returns:
        The exit code: 0 on success, 1 when a benchmark answer was wrong or a file could not be
        written, 2 on a usage error, 130 on Ctrl-C.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse has printed them
        return _exit_code(exc)
    try:
        if args.handler == "info":
            from ._info import run_info

            return run_info(as_json=args.json)
        if args.handler == "map":
            from .._errors import JournalError
            from ._inputs import InputError
            from ._map import run_map

            if len(args.mode) != 1:
                print("taskloom map: --mode takes one mode", file=sys.stderr)
                return 2
            try:
                return run_map(args.function, args.input, output=args.output, fmt=args.format, star=args.star,
                               mode=args.mode[0], workers=args.workers, timeout=args.timeout, retries=args.retries,
                               ordered=args.ordered, progress=args.progress, resume=args.resume,
                               rerun_failed=args.rerun_failed)
            except (InputError, JournalError) as exc:
                print(f"taskloom map: {exc}", file=sys.stderr)
                return 2
        if args.handler == "advise":
            from ._advise import run_advise
            from ._inputs import InputError

            try:
                return run_advise(args.function, args.sample, fmt=args.format, limit=args.limit,
                                  budget=args.budget, total=args.total, as_json=args.json)
            except InputError as exc:
                print(f"taskloom advise: {exc}", file=sys.stderr)
                return 2
        from ._bench import run_bench

        return run_bench(args)
    except KeyboardInterrupt:
        print("taskloom: interrupted", file=sys.stderr)
        return 130
    finally:
        import taskloom

        taskloom.shutdown()
