"""Testing concurrent code: a stress harness that finds races, and its pytest plugin.

``stress(fn)`` runs ``fn`` on many threads at once, many times over, and checks an invariant after
each repetition: the guide's "counter == 200000" test, made to fail when the code is wrong::

    repetition i (seed s+i):  setup()  ->  N threads wait at a barrier  ->  all run fn()  ->  join
                                           (each with seeded preemption)                  ->  check()

Why preemption. On CPython 3.10+ a thread is only switched at a few places (calls, loop back-edges),
never between the load and the store of ``counter += 1``, so a tiny ``sys.setswitchinterval`` alone
almost never exposes the guide's race. Each stress thread therefore traces its code opcode by
opcode (``sys.settrace`` with ``frame.f_trace_opcodes``) and gives the GIL away at seeded random
opcodes: every few dozen bytecodes on average, anywhere, including between a read and the write
that depends on it. With the same seed, each thread yields at the same places; the operating
system's scheduling still varies, so a replay usually, not always, fails the same way.

Without a GIL (a free-threaded build, ``PYTHON_GIL=0``) the stress threads really run at once,
on as many CPUs as there are, and a forced switch is a pause (``time.sleep(0)``) in one of them
at a seeded place: it no longer hands a lock over, but it still shifts one thread's steps
against the others' at random places, and the races the GIL made rare (a list edited by two
threads, a value read outside the lock that guards it) show up on their own. ``make test-ft``
runs taskloom's own stress tests that way; ``switch_interval`` has no effect there.

Coverage. coverage.py (and debuggers) use the same hook. A stress thread chains to the tracer it
found installed, forwarding every event but the opcode ones, so coverage keeps measuring the code
under stress; nothing needs to be configured. With coverage's ``sysmon`` core (Python 3.12+) the
two do not meet at all.

Only code outside the standard library is preempted (yours, installed packages, taskloom's own),
to keep the slowdown where the races are.
"""

from __future__ import annotations

import functools
import inspect
import os
import random
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

__all__ = ["StressFailure", "StressReport", "stress"]

_TraceFn = Callable[..., Any]


class StressFailure(AssertionError):
    """A stress run found a failing repetition.

    Attributes:
        repetition: which repetition failed (0-based).
        seed: that repetition's seed: ``stress(..., seed=seed)`` starts with the same preemption points.
    """

    def __init__(self, message: str, *, repetition: int, seed: int) -> None:
        super().__init__(message)
        self.repetition = repetition
        self.seed = seed

    def __reduce__(self) -> Any:
        return (_rebuild_failure, (str(self), self.repetition, self.seed))


def _rebuild_failure(message: str, repetition: int, seed: int) -> StressFailure:
    return StressFailure(message, repetition=repetition, seed=seed)


@dataclass(frozen=True)
class StressReport:
    """What a passing stress run did.

    Attributes:
        threads: threads per repetition.
        repetitions: repetitions run (all passed).
        seed: the seed of the first repetition (repetition ``i`` used ``seed + i``).
        switches: forced thread switches, over all threads and repetitions.
        duration: wall time in seconds.
    """

    threads: int
    repetitions: int
    seed: int
    switches: int
    duration: float

    def __str__(self) -> str:
        return (f"stress: {self.repetitions} repetitions x {self.threads} threads passed "
                f"({self.switches} forced switches, seed={self.seed}, {self.duration:.2f} s)")


# -- preemption ----------------------------------------------------------------------------------------
def _stdlib_dirs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    paths = sysconfig.get_paths()
    stdlib = tuple({os.path.realpath(paths[k]) + os.sep for k in ("stdlib", "platstdlib") if k in paths})
    packages = tuple({os.path.realpath(paths[k]) + os.sep for k in ("purelib", "platlib") if k in paths})
    return stdlib, packages


_STDLIB, _PACKAGES = _stdlib_dirs()
_THIS_FILE = __file__
_wanted_cache: dict[CodeType, bool] = {}


def _wanted(code: CodeType) -> bool:
    """Whether to preempt inside this code: not the stdlib (site-packages is not stdlib), not us."""
    wanted = _wanted_cache.get(code)
    if wanted is None:
        name = code.co_filename
        if name == _THIS_FILE or name.startswith("<"):
            wanted = False
        else:
            real = os.path.realpath(name)
            wanted = not real.startswith(_STDLIB) or real.startswith(_PACKAGES)
        _wanted_cache[code] = wanted
    return wanted


class _Preempter:
    """One stress thread's tracer: yields the GIL at seeded random opcodes, forwards the rest."""

    __slots__ = ("countdown", "every", "prev", "rng", "switches", "trace")

    def __init__(self, rng: random.Random, every: int, prev: _TraceFn | None) -> None:
        self.rng = rng
        self.every = every
        self.prev = prev
        self.switches = 0
        self.countdown = rng.randint(1, 2 * every)
        self.trace: _TraceFn = self._call  # one bound method, so `is` can recognise it

    def _call(self, frame: FrameType, event: str, arg: Any) -> Any:
        # The global tracer sees only 'call' events; what it returns traces that frame.
        prev_local = None
        if self.prev is not None:
            prev_local = self.prev(frame, event, arg)
            # coverage's C tracer re-installs itself when called for a 'call' event, and its
            # installer replaces itself with the real tracer: adopt whatever is now installed
            # as the one to forward to, and put ourselves back in front.
            now = sys.gettrace()
            if now is not self.trace:
                self.prev = now
                sys.settrace(self.trace)
        if not _wanted(frame.f_code):
            return prev_local
        frame.f_trace_opcodes = True
        return _LocalTrace(self, prev_local)

    def tick(self) -> None:
        self.countdown -= 1
        if self.countdown <= 0:
            self.countdown = self.rng.randint(1, 2 * self.every)
            self.switches += 1
            time.sleep(0)  # releases the GIL: a thread waiting for it runs now, mid-statement


class _LocalTrace:
    __slots__ = ("owner", "prev")

    def __init__(self, owner: _Preempter, prev: _TraceFn | None) -> None:
        self.owner = owner
        self.prev = prev

    def __call__(self, frame: FrameType, event: str, arg: Any) -> _LocalTrace:
        if event == "opcode":
            self.owner.tick()
        elif self.prev is not None:
            self.prev = self.prev(frame, event, arg)
        return self


# -- the harness -------------------------------------------------------------------------------------------
def stress(
    fn: Callable[[], object],
    *,
    threads: int = 8,
    repeat: int = 100,
    setup: Callable[[], object] | None = None,
    check: Callable[[], object] | None = None,
    seed: int | None = None,
    preempt_every: int | None = 64,
    switch_interval: float | None = None,
    timeout: float = 60.0,
) -> StressReport:
    """Run ``fn`` on ``threads`` threads at once, ``repeat`` times, and check an invariant each time.

    Each repetition calls ``setup()``, starts the threads, releases them together from a barrier
    so that they really overlap, joins them, then calls ``check()``. Every thread gives the GIL
    away at seeded random bytecodes (see ``help(taskloom.testing)``), which exposes races that ordinary
    thread switching on CPython 3.10+ almost never does.

    Example (the guide's counter)::

        counter = 0
        def increment():
            global counter
            for _ in range(100):
                counter += 1
        def reset():
            global counter
            counter = 0
        def invariant():
            assert counter == 8 * 100, f"lost updates: counter is {counter}"

        tl.testing.stress(increment, setup=reset, check=invariant)    # raises StressFailure

    Args:
        fn: the code under test, called with no arguments in every thread.
        threads: threads per repetition (>= 2).
        repeat: repetitions (>= 1).
        setup: called before each repetition, in the calling thread.
        check: called after each repetition once the threads have joined; fails the run by
            raising (an ``assert``) or by returning False.
        seed: the first repetition's seed (repetition ``i`` uses ``seed + i``); None picks one.
            The seed of a failing repetition, passed back here, replays it first.
        preempt_every: average number of bytecodes between forced thread switches; None turns
            preemption off (only the barrier and the interpreter's own switching remain).
        switch_interval: if given, ``sys.setswitchinterval`` for the run (restored afterwards);
            no effect without a GIL.
        timeout: seconds a repetition may take before it is reported as a deadlock.

    Returns:
        A report of the passing run.

    Raises:
        StressFailure: a repetition failed: an exception in a thread, a failed check, or threads
            still running after ``timeout`` (a deadlock?). The message names the repetition and
            its seed; ``__cause__`` is the original exception.
        ValueError: a bad argument.
    """
    if threads < 2:
        raise ValueError(f"threads must be >= 2 to find races between threads, got {threads!r}")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat!r}")
    if preempt_every is not None and preempt_every < 1:
        raise ValueError(f"preempt_every must be >= 1 bytecodes (or None), got {preempt_every!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    if inspect.iscoroutinefunction(fn):
        raise TypeError(f"stress runs plain functions on threads; {fn!r} is a coroutine function")
    base = random.SystemRandom().randrange(2**32) if seed is None else int(seed)
    old_interval = sys.getswitchinterval()
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    start = time.perf_counter()
    switches = 0
    try:
        for rep in range(repeat):
            switches += _repetition(fn, rep, repeat, base + rep, threads, setup, check, preempt_every, timeout)
    finally:
        sys.setswitchinterval(old_interval)
    return StressReport(threads=threads, repetitions=repeat, seed=base, switches=switches,
                        duration=time.perf_counter() - start)


def _repetition(
    fn: Callable[[], object], rep: int, repeat: int, seed: int, threads: int,
    setup: Callable[[], object] | None, check: Callable[[], object] | None,
    preempt_every: int | None, timeout: float,
) -> int:
    """One repetition; returns its forced switches, or raises StressFailure."""
    if setup is not None:
        setup()
    barrier = threading.Barrier(threads)
    errors: list[tuple[int, BaseException]] = []
    switched = [0] * threads

    def run(index: int) -> None:
        preempter = None
        if preempt_every is not None:
            preempter = _Preempter(random.Random(f"{seed}:{index}"), preempt_every, sys.gettrace())
        try:
            barrier.wait(timeout)
        except threading.BrokenBarrierError:
            return  # another thread failed to start: reported by the join below
        if preempter is not None:
            sys.settrace(preempter.trace)
        try:
            fn()
        except BaseException as exc:  # reported by the harness, never to threading.excepthook
            errors.append((index, exc))
        finally:
            if preempter is not None:
                sys.settrace(preempter.prev)
                switched[index] = preempter.switches

    workers = [threading.Thread(target=run, args=(i,), name=f"stress-{rep}-{i}", daemon=True)
               for i in range(threads)]
    for t in workers:
        t.start()
    deadline = time.monotonic() + timeout
    for t in workers:
        t.join(max(0.0, deadline - time.monotonic()))
    where = f"repetition {rep} of {repeat} failed (seed={seed}; stress(..., seed={seed}) replays it first)"
    stuck = [t for t in workers if t.is_alive()]
    if stuck:
        barrier.abort()
        raise StressFailure(
            f"stress: {where}: {len(stuck)} of {threads} threads still running after {timeout:g} s: "
            f"deadlock?\n{_stacks(stuck)}",
            repetition=rep, seed=seed,
        )
    if errors:
        index, exc = min(errors, key=lambda e: e[0])
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        more = f" (and {len(errors) - 1} other thread(s))" if len(errors) > 1 else ""
        raise StressFailure(
            f"stress: {where}: thread {index} of {threads} raised {type(exc).__name__}: {exc}{more}\n{tb}",
            repetition=rep, seed=seed,
        ) from exc
    if check is not None:
        try:
            ok = check()
        except Exception as exc:
            raise StressFailure(
                f"stress: {where}: check() failed after {threads} threads ran: {type(exc).__name__}: {exc}",
                repetition=rep, seed=seed,
            ) from exc
        if ok is False:
            raise StressFailure(f"stress: {where}: check() returned False after {threads} threads ran",
                                repetition=rep, seed=seed)
    return sum(switched)


def _stacks(stuck: list[threading.Thread]) -> str:
    frames = sys._current_frames()
    parts = []
    for t in stuck:
        frame = frames.get(t.ident or -1)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "  (ended meanwhile)\n"
        parts.append(f"Stack of thread {t.name!r}:\n{stack}")
    return "\n".join(parts)


# -- pytest plugin -----------------------------------------------------------------------------------------
# Loaded through the `pytest11` entry point (or `-p taskloom.testing`). No pytest import at module
# level: `import taskloom` imports this module and must stay light.
_MARKER = ("stress(threads=8, repeat=100, seed=None, preempt_every=64, switch_interval=None, timeout=60.0): "
           "run the test function on many threads at once, many times, with seeded preemption "
           "(taskloom.testing.stress); fixtures are set up once for the whole run")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--stress-seed", type=int, default=None,
                     help="seed for @pytest.mark.stress tests (replays a failure the report names)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER)


def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a ``@pytest.mark.stress`` test through ``stress`` (pytest's own call runs otherwise)."""
    marker = pyfuncitem.get_closest_marker("stress")
    if marker is None:
        return None
    if marker.args:
        raise TypeError("@pytest.mark.stress takes keyword arguments only, e.g. @pytest.mark.stress(threads=8)")
    options: dict[str, Any] = dict(marker.kwargs)
    seed = pyfuncitem.config.getoption("--stress-seed", default=None)
    if seed is not None:
        options["seed"] = seed
    names = pyfuncitem._fixtureinfo.argnames
    body = functools.partial(pyfuncitem.obj, **{name: pyfuncitem.funcargs[name] for name in names})
    stress(body, **options)
    return True
