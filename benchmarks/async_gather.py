"""The async engine against a bare ``asyncio.gather``: 2,000 coroutines sleeping 20 ms, all at once.

Run by hand (not a test), under the shared benchmark lock on a shared machine::

    flock /tmp/taskloom-bench.lock python benchmarks/async_gather.py [--rounds 11] [--tasks 2000]

Contenders, each in a fresh interpreter per round (round-robin, so a noisy moment hits all of
them alike), each with an untimed warm-up run in that interpreter before the timed ones:

* ``gather``: ``asyncio.run`` of ``asyncio.gather(*(job(i) for i in range(n)))`` (the peer; the
  warm-up and the timed runs share one loop, as taskloom's shared loop does);
* ``map``: ``taskloom.map(job, range(n), mode="async", workers=n)`` from synchronous code;
* ``amap``: ``await taskloom.amap(job, range(n), workers=n)`` inside a running loop;
* ``imap``: ``list(taskloom.imap(job, range(n), mode="async", workers=n, ordered=False))``
  (results as they finish, as ``asyncio.as_completed`` would give them).

Each interpreter reports the median of its timed repeats; the table shows the median over the
rounds, its ratio to ``gather``'s median, and the median of the per-round ratios (each contender
over the ``gather`` of its own round: on a shared machine whose load comes and goes, a paired
ratio moves less than a ratio of medians). ``--against DIR`` adds ``map``, ``amap`` and ``imap``
run on another taskloom source tree (``DIR/taskloom``, e.g. ``git archive HEAD src | tar -x -C
/tmp/base`` then ``--against /tmp/base/src``), interleaved in the same rounds: a before/after in
one session.
``--child NAME`` runs one interpreter's share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

LATENCY = 0.02
CONTENDERS = ("gather", "map", "amap", "imap")


async def job(x: int) -> int:
    await asyncio.sleep(LATENCY)
    return x


def child(name: str, n: int, repeats: int) -> list[float]:
    """Warm up once, then time ``repeats`` runs of contender ``name`` in this interpreter."""
    times: list[float] = []
    if name == "gather":
        async def once_gather() -> None:
            out = await asyncio.gather(*(job(i) for i in range(n)))
            assert out[-1] == n - 1
        asyncio.run(_timed_on_one_loop(once_gather, repeats, times))
    elif name == "map":
        import taskloom as tl

        def once_map() -> None:
            out = tl.map(job, range(n), mode="async", workers=n)
            assert out[-1] == n - 1
        once_map()  # warm-up: starts the loop thread, imports the engine
        for _ in range(repeats):
            times.append(_time(once_map))
    elif name == "imap":
        import taskloom as tl

        def once_imap() -> None:
            out = list(tl.imap(job, range(n), mode="async", workers=n, ordered=False))
            assert len(out) == n
        once_imap()  # warm-up
        for _ in range(repeats):
            times.append(_time(once_imap))
    elif name == "amap":
        import taskloom as tl

        async def once_amap() -> None:
            out = await tl.amap(job, range(n), mode="async", workers=n)
            assert out[-1] == n - 1
        asyncio.run(_timed_on_one_loop(once_amap, repeats, times))
    else:
        raise SystemExit(f"unknown contender {name!r}")
    return times


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


async def _timed_on_one_loop(once: Callable[[], Awaitable[None]], repeats: int, times: list[float]) -> None:
    """An untimed warm-up, then ``repeats`` timed runs of ``once``, all on the running loop."""
    await once()
    for _ in range(repeats):
        t0 = time.perf_counter()
        await once()
        times.append(time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=11, help="fresh interpreters per contender (default 11)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per interpreter (default 3)")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated contenders")
    parser.add_argument("--against", metavar="DIR", help="also run map, amap and imap on the taskloom in DIR")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.tasks, args.repeats)))
        return
    names = [c for c in args.only.split(",") if c]
    if "gather" not in names:
        names.insert(0, "gather")
    if args.against:
        names += [f"{c}@against" for c in ("map", "amap", "imap") if c in names]
    per: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # who goes first rotates
        for name in order:
            contender, _, where = name.partition("@")
            env = dict(os.environ)
            if where:
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.against, env.get("PYTHONPATH")]))
            out = subprocess.run([sys.executable, __file__, "--child", contender, "--tasks", str(args.tasks),
                                  "--repeats", str(args.repeats)], capture_output=True, text=True, check=True,
                                 env=env)
            per[name].append(statistics.median(json.loads(out.stdout)))
    base = statistics.median(per["gather"])
    print(f"{args.tasks} coroutines sleeping {LATENCY * 1000:.0f} ms, all at once; {args.rounds} rounds, "
          f"median of {args.repeats} per interpreter")
    for name in names:
        med = statistics.median(per[name])
        spread = f"{min(per[name]) * 1000:.1f}-{max(per[name]) * 1000:.1f}"
        paired = statistics.median(t / g for t, g in zip(per[name], per["gather"], strict=True))
        print(f"  {name:13s} {med * 1000:7.1f} ms  (range {spread} ms)  {med / base:5.2f}x gather"
              f"  (paired {paired:4.2f}x)")


if __name__ == "__main__":
    main()
