"""Ordered locks, lock-order checking and deadlock detection.

The guide's fix for its deadlock is a rule, "always acquire locks in the same order"; this module
turns the rule into a check, in the spirit of the Linux kernel's lockdep: every ``OrderedLock``
has a place in one global order, ``(rank, creation order)``, and a thread that takes a lock while
holding a *later* one gets a ``LockOrderError`` at that moment, before any other thread has to be
there to make it hang. ``acquire(*locks)`` takes a set of locks in the order, so code that needs
several never has to think about it.

``deadlock_watch`` catches what the order cannot: plain locks. While it is active, locks the
watched code creates with ``threading.Lock()``/``threading.RLock()`` are tracked ones, and every
tracked lock (ordered ones included) takes part in a wait-for graph::

    _held[thread]     the locks a thread holds, in the order taken, with where   (owner writes)
    lock._owner       the thread holding a lock                                   (set after taking,
                                                                                    cleared before release)
    _waiting[thread]  the lock a thread is blocked on, and since when             (under _graph)

    thread T blocks on L  ->  follow L._owner -> _waiting[owner].lock -> its owner ... back to T?
                              yes: DeadlockError in T, with every participant's stack
    T still blocked after `timeout`  ->  DeadlockError in T, with every thread's stack

A waiting thread waits in short slices and re-checks the graph between them, so a cycle whose last
edge was recorded a moment late is still found, and the watch's timeout needs no watchdog thread.
Raising in the thread that closes the cycle is what breaks it: that thread unwinds, releases what it
holds, and the others go on.

Checks are on by default; ``TASKLOOM_LOCKCHECK=0`` in the environment (read at import) makes ordered
locks plain locks, at near-zero cost, and leaves them out of deadlock watches.
"""

from __future__ import annotations

import _thread
import contextlib
import itertools
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, ClassVar

from ._errors import DeadlockError, LockOrderError

__all__ = ["DeadlockWatch", "LockStatistics", "OrderedLock", "OrderedRLock", "acquire", "deadlock_watch"]

#: Read once, at import: checks cannot be switched while locks are held without losing track of them.
CHECKS = os.environ.get("TASKLOOM_LOCKCHECK", "1").strip().lower() not in ("0", "false", "no", "off")

#: How often a watched, blocked thread wakes to re-check the graph and its own waiting time.
_SLICE = 0.05

_creation = itertools.count()
_graph = _thread.allocate_lock()  # never a tracked lock: the machinery must not watch itself
_held: dict[int, list[_Hold]] = {}  # thread ident -> that thread's holds (the list is also in _tls)
_waiting: dict[int, _Wait] = {}
_tls = threading.local()
_watches: list[DeadlockWatch] = []  # active watches; an empty list is the fast path
_watch_lock = _thread.allocate_lock()
_originals: list[Any] = []  # threading.Lock and threading.RLock, while watches have them swapped
_swaps = 0  # how many active watches swap them

_THIS_FILE = __file__
_SKIP_FILES = frozenset({_THIS_FILE, threading.__file__, __import__("contextlib").__file__})


class _Hold:
    __slots__ = ("lock", "site")

    def __init__(self, lock: _TrackedLock, site: str) -> None:
        self.lock = lock
        self.site = site


class _Wait:
    __slots__ = ("lock", "since")

    def __init__(self, lock: _TrackedLock, since: float) -> None:
        self.lock = lock
        self.since = since


def _my_holds() -> list[_Hold]:
    try:
        holds: list[_Hold] = _tls.holds
    except AttributeError:
        holds = _tls.holds = []
        _held[_thread.get_ident()] = holds  # a thread reusing a dead one's ident replaces its list
    return holds


def _forget_hold(holds: list[_Hold] | None, lock: _TrackedLock) -> None:
    """Remove the last hold of ``lock`` from a thread's holds.

    A plain lock may be released by another thread than its owner, which then edits the owner's
    list while the owner appends to it or removes its own holds: so the hold is found in a copy
    and removed by identity, never by an index that the owner may have shifted meanwhile (on a
    free-threaded build that deleted the wrong hold or raised IndexError; the GIL only made it rare).
    """
    if not holds:
        return
    for hold in reversed(holds.copy()):
        if hold.lock is lock:
            with contextlib.suppress(ValueError):  # _Hold has no __eq__: removed by identity
                holds.remove(hold)
            return


def _site(frame: FrameType | None = None) -> str:
    """``file:line in function`` of the first caller outside taskloom's lock code and threading."""
    f: FrameType | None = frame if frame is not None else sys._getframe(1)
    while f is not None and f.f_code.co_filename in _SKIP_FILES:
        f = f.f_back
    if f is None:  # pragma: no cover - called from nowhere
        return "<unknown>"
    return f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"


def _thread_names() -> dict[int, str]:
    return {t.ident: t.name for t in threading.enumerate() if t.ident is not None}


# -- tracked locks ---------------------------------------------------------------------------------------
class _TrackedLock:
    """A lock that knows its owner and takes part in deadlock watches.

    This class stands in for ``threading.Lock()`` inside a watch: like a plain lock, it may be
    released by another thread than the one that took it.
    """

    __slots__ = ("__weakref__", "_count", "_inner", "_owner", "name")

    _reentrant: ClassVar[bool] = False
    _strict_owner: ClassVar[bool] = False  # only the owner may release (RLock and ordered locks)
    _kind: ClassVar[str] = "Lock"

    def __init__(self, name: str) -> None:
        self.name = name
        self._inner: Any = _thread.allocate_lock()  # an RLock for plain OrderedRLocks
        self._owner: int | None = None
        self._count = 0

    # -- the lock protocol --------------------------------------------------------------------------
    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock, as ``threading.Lock.acquire`` does (same arguments, same result).

        Raises:
            LockOrderError: (ordered locks) a later lock in the order is held by this thread.
            DeadlockError: (inside a ``deadlock_watch``) waiting would close a cycle of threads
                waiting for each other, or has lasted longer than the watch's timeout.
        """
        me = _thread.get_ident()
        if self._owner == me and self._reentrant:
            self._count += 1
            return True
        # A try-lock cannot deadlock (lockdep exempts it too), so only blocking calls are checked.
        if blocking:
            self._check(me)
        if self._inner.acquire(False):
            self._took(me, sys._getframe(1))
            return True
        if not blocking:
            return False
        if not _watches:
            if not self._inner.acquire(True, timeout):
                return False
            self._took(me, sys._getframe(1))
            return True
        return self._wait_watched(me, timeout, sys._getframe(1))

    def release(self) -> None:
        """Release the lock (one level, for a reentrant lock).

        Raises:
            RuntimeError: the lock is not held (or, for reentrant and ordered locks, not by this thread).
        """
        me = _thread.get_ident()
        owner = self._owner
        if self._strict_owner and owner != me:
            raise RuntimeError(f"cannot release {self!r}: it is not held by this thread")
        if self._reentrant and self._count > 1:
            self._count -= 1
            return
        if owner is not None:
            # Cleared before the real release, so the graph never names an owner that let go.
            self._owner = None
            self._count = 0
            _forget_hold(_held.get(owner), self)
        self._inner.release()  # RuntimeError("release unlocked lock") when it was not held

    def locked(self) -> bool:
        """Whether some thread holds the lock now (a snapshot: it may change at once)."""
        return bool(self._inner.locked())

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    # -- threading.Condition support -----------------------------------------------------------------
    def _is_owned(self) -> bool:
        return self._owner == _thread.get_ident()

    def _release_save(self) -> tuple[int, int | None]:
        state = (self._count, self._owner)
        self._count = 1  # release fully, whatever the recursion depth
        self.release()
        return state

    def _acquire_restore(self, state: tuple[int, int | None]) -> None:
        self.acquire()
        self._count = max(state[0], 1)

    def _at_fork_reinit(self) -> None:
        # logging re-initialises its handlers' locks in a forked child; only this thread survives.
        self._inner = _thread.allocate_lock()
        self._owner = None
        self._count = 0

    # -- bookkeeping -----------------------------------------------------------------------------------
    def _check(self, me: int) -> None:
        """Hook for ordered locks: refuse to take this lock out of order."""

    def _took(self, me: int, frame: FrameType) -> None:
        self._owner = me
        self._count = 1
        _my_holds().append(_Hold(self, _site(frame)))

    def _wait_watched(self, me: int, timeout: float, frame: FrameType) -> bool:
        """Block inside a watch: in the wait-for graph, in slices, until taken, timed out or deadlocked."""
        start = time.monotonic()
        deadline = None if timeout is None or timeout < 0 else start + timeout
        with _graph:
            _waiting[me] = _Wait(self, start)
            cycle = _breaks_cycle(me, self)
        try:
            while cycle is None:
                now = time.monotonic()
                limit = _watch_timeout()
                if limit is not None and now - start > limit:
                    raise _report(DeadlockError(_blocked_report(me, self, now - start, limit)))
                step = _SLICE if deadline is None else min(_SLICE, deadline - now)
                if step <= 0:
                    return False
                if self._inner.acquire(True, step):
                    with _graph:  # owner and waiting change together: no phantom self-loop
                        _waiting.pop(me, None)
                        self._took(me, frame)
                    return True
                with _graph:
                    cycle = _breaks_cycle(me, self)
            raise _report(DeadlockError(_cycle_report(me, cycle)))
        finally:
            with _graph:
                _waiting.pop(me, None)

    def __repr__(self) -> str:
        return f"<{self._kind} {self.name!r} {self._state()}>"

    def _state(self) -> str:
        owner = self._owner
        if owner is None:
            return "locked" if self._inner.locked() else "unlocked"
        return f"locked by {_thread_names().get(owner, f'thread {owner}')!r}"


class _TrackedRLock(_TrackedLock):
    """Stands in for ``threading.RLock()`` inside a watch."""

    __slots__ = ()
    _reentrant = True
    _strict_owner = True
    _kind = "RLock"


def _breaks_cycle(me: int, lock: _TrackedLock) -> list[tuple[int, _TrackedLock]] | None:
    """``_find_cycle``; when there is one, ``me`` leaves the graph at once, under ``_graph``: this
    thread will raise and break the cycle, and no other member may find it again while this one
    writes its report (without a GIL, the other woke from its wait slice in that time and raised
    too, 22 times in 60 on a busy 3.13t: two DeadlockErrors for one deadlock)."""
    cycle = _find_cycle(me, lock)
    if cycle is not None:
        _waiting.pop(me, None)
    return cycle


def _find_cycle(me: int, lock: _TrackedLock) -> list[tuple[int, _TrackedLock]] | None:
    """The wait-for cycle through ``me`` blocked on ``lock``, as (thread, lock it waits for); or None.

    Called under ``_graph``. A cycle that does not pass through ``me`` is left to one of its own
    members to find, so each cycle is reported once.
    """
    path = [(me, lock)]
    seen = {me}
    while True:
        owner = lock._owner
        if owner is None:
            return None
        if owner == me:
            # A plain lock may be released by another thread (a lock used as a signal), so a
            # thread waiting for a plain lock it holds itself is left to the timeout.
            return path if len(path) > 1 or lock._strict_owner else None
        if owner in seen:
            return None
        seen.add(owner)
        wait = _waiting.get(owner)
        if wait is None:
            return None
        lock = wait.lock
        path.append((owner, lock))


def _describe_holds(ident: int) -> list[str]:
    return [f"      holds {h.lock.name!r}, taken at {h.site}" for h in list(_held.get(ident, ()))]


def _stack(ident: int, frames: dict[int, FrameType]) -> str:
    """The thread's stack, as a traceback prints it, without taskloom's own lock frames."""
    frame = frames.get(ident)
    if frame is None:  # pragma: no cover - the thread ended meanwhile
        return "    (no stack: the thread has ended)"
    summary = [fs for fs in traceback.extract_stack(frame) if fs.filename != _THIS_FILE]
    return "".join(traceback.format_list(summary)).rstrip("\n")


def _cycle_report(me: int, cycle: list[tuple[int, _TrackedLock]]) -> str:
    names = _thread_names()
    frames = sys._current_frames()
    lines = [f"deadlock: {len(cycle)} thread(s) wait for each other in a cycle (found by taskloom.deadlock_watch)"]
    for ident, lock in cycle:
        owner = lock._owner
        lines.append(f"  thread {names.get(ident, ident)!r} waits for {lock.name!r}, "
                     f"held by thread {names.get(owner, owner) if owner is not None else None!r}")
        lines.extend(_describe_holds(ident))
    lines.append("Take the locks in one order everywhere (taskloom.OrderedLock and taskloom.acquire enforce it).")
    for ident, _ in cycle:
        here = " (raising DeadlockError here)" if ident == me else ""
        lines.append(f"\nStack of thread {names.get(ident, ident)!r}{here}:")
        lines.append(_stack(ident, frames))
    return "\n".join(lines)


def _blocked_report(me: int, lock: _TrackedLock, waited: float, limit: float) -> str:
    names = _thread_names()
    frames = sys._current_frames()
    owner = lock._owner
    holder = names.get(owner, owner) if owner is not None else None
    lines = [
        f"deadlock?: thread {names.get(me, me)!r} has waited {waited:.1f} s for {lock.name!r}, held by thread "
        f"{holder!r}, longer than the watch's timeout of {limit:g} s (taskloom.deadlock_watch). Either the "
        "threads wait on each other through something the watch does not track, or a lock is held too long.",
    ]
    lines.extend(_describe_holds(me))
    # Every thread, as faulthandler would print them: the culprit may hold no tracked lock at all.
    for ident in sorted(frames, key=lambda i: i != me):  # the waiting thread first
        here = " (raising DeadlockError here)" if ident == me else ""
        lines.append(f"\nStack of thread {names.get(ident, ident)!r}{here}:")
        lines.extend(_describe_holds(ident) if ident != me else [])
        lines.append(_stack(ident, frames))
    return "\n".join(lines)


def _report(error: DeadlockError) -> DeadlockError:
    """Record the error with every active watch (so the watched block hears of it), and return it."""
    with _watch_lock:
        for watch in _watches:
            watch.reports.append(str(error))
    return error


# -- ordered locks ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LockStatistics:
    """A snapshot of an ordered lock.

    Attributes:
        name: the lock's name.
        rank: its rank (lower ranks are taken first).
        locked: whether it is held.
        owner: the name of the thread holding it, or None.
    """

    name: str
    rank: int
    locked: bool
    owner: str | None


class OrderedLock(_TrackedLock):
    """A lock with a place in one global order, checked on every blocking acquire.

    Locks are ordered by ``(rank, creation order)``, lower first. Taking a lock while this
    thread holds a later one raises ``LockOrderError`` naming both locks and where the held one
    was taken, before it can deadlock: two threads taking the same pair in opposite orders is
    the guide's deadlock, and the first thread to do it fails at once, whether or not the other
    is there yet. To take several, use ``taskloom.acquire``, which sorts them.

    Unlike ``threading.Lock``, only the thread holding it may release it. Taking it twice in one
    thread raises ``DeadlockError`` (use ``OrderedRLock`` for that). With ``TASKLOOM_LOCKCHECK=0``
    it is a plain lock.

    Example::

        accounts = tl.OrderedLock("accounts", rank=1)
        ledger = tl.OrderedLock("ledger", rank=2)
        with tl.acquire(ledger, accounts):    # takes accounts, then ledger
            ...

    Args:
        name: shown in errors and reports.
        rank: the lock's rank (default 0): lower ranks must be taken first; among equal ranks,
            the lock created first comes first.

    Attributes:
        name: the lock's name.
        rank: the lock's rank.

    Raises:
        TypeError: ``name`` is not a non-empty string, or ``rank`` is not an int.
    """

    __slots__ = ("_order", "_plain", "rank")

    _strict_owner = True
    _kind = "OrderedLock"

    def __init__(self, name: str, *, rank: int = 0) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"OrderedLock name must be a non-empty string, got {name!r}")
        if not isinstance(rank, int) or isinstance(rank, bool):
            raise TypeError(f"OrderedLock rank must be an int, got {rank!r}")
        super().__init__(name)
        self.rank = rank
        self._order = (rank, next(_creation))
        self._plain = not CHECKS
        if self._plain:
            self._inner = self._plain_inner()

    def _plain_inner(self) -> Any:
        return _thread.allocate_lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._plain:
            return bool(self._inner.acquire(blocking, timeout))
        return super().acquire(blocking, timeout)

    def release(self) -> None:
        if self._plain:
            self._inner.release()
        else:
            super().release()

    def __enter__(self) -> bool:
        if self._plain:
            return bool(self._inner.acquire())
        return super().acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def _check(self, me: int) -> None:
        holds = _my_holds()
        if not holds:
            return
        if self._owner == me:
            here = next((h.site for h in holds if h.lock is self), "?")
            raise DeadlockError(
                f"thread {threading.current_thread().name!r} would wait forever for {self._kind} "
                f"{self.name!r}, which it already holds (taken at {here}): a non-reentrant lock cannot be "
                "taken twice; release it first, or use taskloom.OrderedRLock"
            )
        later = None
        for hold in holds.copy():  # another thread may be releasing a plain lock of ours (_forget_hold)
            lock = hold.lock
            if isinstance(lock, OrderedLock) and lock._order > self._order and (
                later is None or lock._order > later.lock._order  # type: ignore[attr-defined]
            ):
                later = hold
        if later is not None:
            raise LockOrderError(_order_message(self, later))

    def statistics(self) -> LockStatistics:
        """A snapshot: name, rank, whether it is locked and by which thread."""
        owner = self._owner
        return LockStatistics(
            name=self.name, rank=self.rank, locked=self.locked(),
            owner=None if owner is None else _thread_names().get(owner, str(owner)),
        )

    def __repr__(self) -> str:
        state = ("locked" if self.locked() else "unlocked") if self._plain else self._state()
        return f"<taskloom.{self._kind} {self.name!r} rank={self.rank} {state}>"


class OrderedRLock(OrderedLock):
    """A reentrant ``OrderedLock``: the holding thread may take it again (release as many times).

    Taking it again while holding it never violates the order, even if later locks were taken in
    between: it does not wait.
    """

    __slots__ = ()

    _reentrant = True
    _kind = "OrderedRLock"

    def _plain_inner(self) -> Any:
        return _thread.RLock()

    def _release_save(self) -> tuple[int, int | None]:
        if self._plain:  # the C RLock knows how
            return self._inner._release_save()  # type: ignore[no-any-return]
        return super()._release_save()

    def _acquire_restore(self, state: Any) -> None:
        if self._plain:
            self._inner._acquire_restore(state)
        else:
            super()._acquire_restore(state)

    def _is_owned(self) -> bool:
        if self._plain:
            return bool(self._inner._is_owned())
        return super()._is_owned()

    def locked(self) -> bool:
        """Whether some thread holds the lock now (a snapshot: it may change at once)."""
        if not self._plain:
            return super().locked()
        # The C RLock has no locked() before Python 3.14: probe it.
        if self._inner._is_owned():
            return True
        if self._inner.acquire(False):
            self._inner.release()
            return False
        return True


def _order_message(lock: OrderedLock, later: _Hold) -> str:
    held = later.lock
    assert isinstance(held, OrderedLock)
    if held.rank != lock.rank:
        why = f"rank {lock.rank} comes before rank {held.rank}"
    else:
        why = f"both have rank {lock.rank}, and {lock.name!r} was created first"
    return (
        f"lock order violated: taking {lock.name!r} (rank {lock.rank}) while holding {held.name!r} "
        f"(rank {held.rank}, taken at {later.site}); {why}, so {lock.name!r} must be taken first. "
        f"Another thread taking them in the right order would deadlock with this one. Take {lock.name!r} "
        f"before {held.name!r}, or take both with taskloom.acquire({lock.name}, {held.name})."
    )


# -- acquire(*locks) ----------------------------------------------------------------------------------------
class Acquired:
    """Locks taken by ``taskloom.acquire``: release them with ``release()`` or by leaving ``with``."""

    __slots__ = ("_locks",)

    def __init__(self, locks: list[OrderedLock]) -> None:
        self._locks = locks

    @property
    def locks(self) -> tuple[OrderedLock, ...]:
        """The locks, in the order they were taken."""
        return tuple(self._locks)

    def release(self) -> None:
        """Release every lock, last taken first. Idempotent."""
        locks, self._locks = self._locks, []
        for lock in reversed(locks):
            lock.release()

    def __enter__(self) -> Acquired:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def acquire(*locks: OrderedLock, timeout: float | None = None) -> Acquired:
    """Take several ordered locks, always in their global order; release them together.

    The order is ``(rank, creation order)``, lower first, whatever order they are passed in, so
    two threads taking the same set can never deadlock on each other. A lock passed twice is
    taken once.

    Example::

        with tl.acquire(ledger, accounts):
            move(money)

    Args:
        *locks: ``OrderedLock`` or ``OrderedRLock`` objects.
        timeout: seconds to wait for all of them together; None waits as long as it takes.

    Returns:
        The held locks: use as a context manager, or call ``release()``.

    Raises:
        TypeError: a lock that is not an ordered lock (a plain lock has no place in the order).
        TimeoutError: not all taken within ``timeout``; none are left held.
        LockOrderError: this thread already holds a lock later than one of them.
    """
    unique: dict[int, OrderedLock] = {}
    for lock in locks:
        if not isinstance(lock, OrderedLock):
            raise TypeError(
                f"taskloom.acquire takes OrderedLock or OrderedRLock objects (they carry the order), "
                f"got {type(lock).__module__}.{type(lock).__qualname__}"
            )
        unique.setdefault(id(lock), lock)
    ordered = sorted(unique.values(), key=lambda lk: lk._order)
    deadline = None if timeout is None else time.monotonic() + timeout
    taken: list[OrderedLock] = []
    try:
        for lock in ordered:
            if deadline is None:
                lock.acquire()
            elif not lock.acquire(True, max(0.0, deadline - time.monotonic())):
                raise TimeoutError(
                    f"could not take {lock.name!r} within {timeout:g} s "
                    f"(holding {[lk.name for lk in taken]}); released them all"
                )
            taken.append(lock)
    except BaseException:
        for lock in reversed(taken):
            lock.release()
        raise
    return Acquired(taken)


# -- deadlock_watch ------------------------------------------------------------------------------------
def _watch_timeout() -> float | None:
    watches = _watches
    if not watches:
        return None
    return min(w.timeout for w in watches)


_tracked_ids = itertools.count(1)


def _tracked_lock() -> _TrackedLock:
    # Numbered: two locks made on one line (lock1, lock2 = Lock(), Lock()) must read apart.
    return _TrackedLock(f"Lock#{next(_tracked_ids)} (threading.Lock() at {_site(sys._getframe(1))})")


def _tracked_rlock(*args: Any, **kwargs: Any) -> _TrackedRLock:
    return _TrackedRLock(f"RLock#{next(_tracked_ids)} (threading.RLock() at {_site(sys._getframe(1))})")


class DeadlockWatch:
    """An active ``deadlock_watch``: what it found so far is in ``reports``.

    Use it as a context manager (``with taskloom.deadlock_watch() as watch:``). Leaving the block
    normally after a deadlock was found in any thread raises ``DeadlockError`` with the first report.

    Attributes:
        timeout: seconds a thread may wait for a tracked lock before it is reported.
        track_new_locks: whether ``threading.Lock``/``RLock`` are swapped for tracked locks.
        reports: the text of every deadlock found so far.
    """

    def __init__(self, timeout: float, track_new_locks: bool) -> None:
        self.timeout = timeout
        self.track_new_locks = track_new_locks
        self.reports: list[str] = []

    def __enter__(self) -> DeadlockWatch:
        global _swaps
        with _watch_lock:
            _watches.append(self)
            if self.track_new_locks:
                if _swaps == 0:
                    _originals[:] = [threading.Lock, threading.RLock]
                    threading.Lock = _tracked_lock  # type: ignore[assignment]
                    threading.RLock = _tracked_rlock  # type: ignore[assignment]
                _swaps += 1
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        global _swaps
        with _watch_lock:
            _watches.remove(self)
            if self.track_new_locks:
                _swaps -= 1
                if _swaps == 0:  # the last watch that swapped them: put the originals back
                    threading.Lock, threading.RLock = _originals
                    _originals.clear()
        if self.reports and exc is None:
            raise DeadlockError(
                f"{len(self.reports)} deadlock(s) detected in the watched code; the first:\n{self.reports[0]}"
            )


def deadlock_watch(*, timeout: float = 10.0, track_new_locks: bool = True) -> DeadlockWatch:
    """Detect deadlocks in the block instead of hanging: a context manager.

    While it is active, ordered locks, and the plain locks created by ``threading.Lock()`` and
    ``threading.RLock()`` inside the block (swapped for tracked ones, process-wide), form a
    wait-for graph. A thread whose wait would close a cycle gets ``DeadlockError`` at once, with
    the stack of every thread in the cycle and the locks each holds; raising there breaks the
    cycle, so the others go on. A thread blocked on a tracked lock for longer than ``timeout``
    gets ``DeadlockError`` too, with every thread's stack (faulthandler-style). When the block
    ends normally after any such error in any thread, it raises ``DeadlockError`` itself, so a
    deadlock seen by a worker thread is not lost.

    Not tracked: locks created before the block or by ``_thread.allocate_lock``, and waits on
    other primitives (``Queue.get``, ``Event.wait``, ``Thread.join``) other than through a
    tracked lock.

    Example::

        with tl.deadlock_watch(timeout=5):
            lock1, lock2 = threading.Lock(), threading.Lock()
            ...   # the guide's worker1/worker2: one of them raises DeadlockError

    Args:
        timeout: seconds a thread may wait for a tracked lock before it is reported.
        track_new_locks: swap ``threading.Lock``/``RLock`` for tracked locks inside the block;
            False watches ordered locks only.

    Returns:
        The watch; its ``reports`` list holds the text of every deadlock found.

    Raises:
        ValueError: ``timeout`` is not positive.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    return DeadlockWatch(float(timeout), track_new_locks)
