"""Ordered locks, taskloom.acquire and deadlock_watch.

Anything that could hang on a regression (a real deadlock between threads) runs in a subprocess
with a hard timeout, so a broken detector fails one test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import taskloom as tl
from taskloom import _sync
from tests.helpers import join, wait_for

ROOT = Path(__file__).resolve().parents[1]
#: A subprocess that should finish in well under a second gets this long before it counts as hung.
HARD_TIMEOUT = 60.0

checks_on = pytest.mark.skipif(not _sync.CHECKS, reason="TASKLOOM_LOCKCHECK=0 in the environment")


def run_script(code: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                              text=True, timeout=HARD_TIMEOUT, check=False, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"deadlock: the script did not finish within {HARD_TIMEOUT:g} s\n{exc.stdout}\n{exc.stderr}")


def line_of(marker: str) -> int:
    """The line number in this file of the line that contains ``marker`` (once)."""
    lines = [i for i, text in enumerate(Path(__file__).read_text().splitlines(), 1) if marker in text]
    assert len(lines) == 2, lines  # the marker itself, and this lookup's argument
    return lines[0]


# -- OrderedLock -------------------------------------------------------------------------------------------
@pytest.mark.smoke
def test_ordered_lock_is_a_lock() -> None:
    lock = tl.OrderedLock("db", rank=3)
    assert not lock.locked()
    assert lock.acquire()
    assert lock.locked()
    assert not lock.acquire(blocking=False)  # a try-lock of a held lock just fails
    stats = lock.statistics()
    assert stats == _sync.LockStatistics(name="db", rank=3, locked=True, owner=threading.current_thread().name)
    assert "'db' rank=3 locked by" in repr(lock)
    lock.release()
    assert lock.statistics().owner is None
    with lock:
        assert lock.locked()
    assert "unlocked" in repr(lock)


def test_ordered_lock_validates_its_arguments() -> None:
    with pytest.raises(TypeError, match="name"):
        tl.OrderedLock("")
    with pytest.raises(TypeError, match="rank"):
        tl.OrderedLock("x", rank=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rank"):
        tl.OrderedLock("x", rank=True)


@checks_on
def test_only_the_holder_may_release() -> None:
    lock = tl.OrderedLock("owned")
    lock.acquire()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            lock.release()
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    join(t, "releasing thread")
    assert errors
    assert "not held by this thread" in str(errors[0])
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


@checks_on
def test_lock_order_violation_raises_at_the_second_acquire_naming_both() -> None:
    accounts = tl.OrderedLock("accounts", rank=1)
    ledger = tl.OrderedLock("ledger", rank=2)
    with ledger, pytest.raises(tl.LockOrderError) as info:  # HELD-HERE
        accounts.acquire()
    message = str(info.value)
    assert "'accounts' (rank 1)" in message
    assert "'ledger' (rank 2" in message
    assert f"test_sync.py:{line_of('HELD-HERE')}" in message, "where the held lock was taken"
    assert "taskloom.acquire(accounts, ledger)" in message
    assert not accounts.locked(), "a refused acquire must not take the lock"
    assert isinstance(info.value, RuntimeError)


@checks_on
def test_equal_ranks_are_ordered_by_creation() -> None:
    first, second = tl.OrderedLock("first"), tl.OrderedLock("second")
    with first, second:
        pass
    with second, pytest.raises(tl.LockOrderError, match="both have rank 0, and 'first' was created first"):
        first.acquire()


@checks_on
def test_a_try_lock_out_of_order_is_allowed() -> None:
    low, high = tl.OrderedLock("low", rank=1), tl.OrderedLock("high", rank=2)
    with high:
        assert low.acquire(blocking=False)  # cannot deadlock: lockdep exempts try-locks too
        low.release()


@checks_on
def test_taking_an_ordered_lock_twice_is_a_deadlock_error() -> None:
    lock = tl.OrderedLock("once")
    with lock, pytest.raises(tl.DeadlockError, match=r"already holds .*OrderedRLock"):
        lock.acquire()


@checks_on
def test_ordered_rlock_is_reentrant_even_after_later_locks() -> None:
    outer, inner = tl.OrderedRLock("outer", rank=1), tl.OrderedLock("inner", rank=2)
    with outer, inner, outer:  # re-entering `outer` does not wait, so it breaks no order
        assert outer.locked()
    assert not outer.locked()
    assert not inner.locked()


@contextlib.contextmanager
def held_by_another_thread(lock: Any) -> Iterator[None]:
    """``lock`` is held by another thread for the length of the block."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            release.wait(30)

    t = threading.Thread(target=hold, name="holder", daemon=True)
    t.start()
    try:
        wait_for(taken, "the other thread taking the lock")
        yield
    finally:
        release.set()
        join(t, "holder")


@checks_on
def test_violations_are_checked_per_thread() -> None:
    low, high = tl.OrderedLock("low", rank=1), tl.OrderedLock("high", rank=2)
    with held_by_another_thread(high), low:  # another thread holding `high` does not make this one out of order
        pass


def test_ordered_locks_are_not_picklable() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(tl.OrderedLock("x"))


# -- acquire(*locks) -----------------------------------------------------------------------------------------
@pytest.mark.smoke
def test_acquire_takes_locks_in_order_whatever_the_argument_order() -> None:
    accounts = tl.OrderedLock("accounts", rank=1)
    ledger = tl.OrderedLock("ledger", rank=2)
    audit = tl.OrderedLock("audit", rank=2)  # same rank, created later than ledger
    with tl.acquire(audit, ledger, accounts, ledger) as held:
        assert [lk.name for lk in held.locks] == ["accounts", "ledger", "audit"]
        assert all(lk.locked() for lk in (accounts, ledger, audit))
    assert not any(lk.locked() for lk in (accounts, ledger, audit))


def test_acquire_without_with_and_release_is_idempotent() -> None:
    a, b = tl.OrderedLock("a"), tl.OrderedLock("b")
    held = tl.acquire(b, a)
    assert a.locked()
    assert b.locked()
    held.release()
    held.release()
    assert not a.locked()
    assert not b.locked()


def test_acquire_refuses_plain_locks() -> None:
    with pytest.raises(TypeError, match=r"OrderedLock or OrderedRLock.*_thread\.lock"):
        tl.acquire(tl.OrderedLock("a"), threading.Lock())  # type: ignore[arg-type]


def test_acquire_timeout_leaves_nothing_held() -> None:
    a, b = tl.OrderedLock("a", rank=1), tl.OrderedLock("b", rank=2)
    with held_by_another_thread(b):
        with pytest.raises(TimeoutError, match=r"could not take 'b' within 0.05 s \(holding \['a'\]\)"):
            tl.acquire(a, b, timeout=0.05)
        assert not a.locked(), "a failed acquire must release what it took"
    with tl.acquire(a, b, timeout=10):
        pass


@checks_on
def test_acquire_while_holding_a_later_lock_is_a_violation() -> None:
    a, b = tl.OrderedLock("a", rank=1), tl.OrderedLock("b", rank=2)
    with b, pytest.raises(tl.LockOrderError, match="taking 'a'"):
        tl.acquire(a, b)
    assert not a.locked()


def test_condition_works_with_an_ordered_rlock() -> None:
    cond = threading.Condition(tl.OrderedRLock("cond"))
    ready: list[int] = []

    def produce() -> None:
        with cond:
            ready.append(1)
            cond.notify()

    with cond:
        t = threading.Thread(target=produce)
        t.start()
        assert cond.wait_for(lambda: ready, timeout=30), "deadlock: the condition was never notified"
    join(t, "producer")


# -- TASKLOOM_LOCKCHECK=0 --------------------------------------------------------------------------------------
def test_lockcheck_off_makes_plain_locks_that_acquire_still_sorts() -> None:
    result = run_script("""
        import threading
        import taskloom as tl
        from taskloom import _sync
        assert not _sync.CHECKS
        low, high = tl.OrderedLock("low", rank=1), tl.OrderedLock("high", rank=2)
        with high:
            with low:          # out of order, but unchecked
                pass
        with tl.acquire(high, low) as held:
            assert [lk.name for lk in held.locks] == ["low", "high"]
        r = tl.OrderedRLock("r")
        with r, r:
            assert r.locked()
        assert not r.locked()
        cond = threading.Condition(r)
        with cond:
            cond.wait(0.01)
        print("ok", repr(low))
    """, env={"TASKLOOM_LOCKCHECK": "0"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok <taskloom.OrderedLock 'low' rank=1 unlocked>")


# -- deadlock_watch -------------------------------------------------------------------------------------------
GUIDE_PAIR = """
    import threading
    import taskloom as tl

    errors = []
    try:
        with tl.deadlock_watch(timeout=30):
            lock1 = threading.Lock()
            lock2 = threading.Lock()
            both_hold_one = threading.Barrier(2)   # the guide's time.sleep(0.1), made deterministic

            def worker1():
                try:
                    with lock1:
                        both_hold_one.wait(30)
                        with lock2:
                            pass
                except tl.DeadlockError as exc:
                    errors.append(exc)

            def worker2():
                try:
                    with lock2:
                        both_hold_one.wait(30)
                        with lock1:
                            pass
                except tl.DeadlockError as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=worker1, name="worker1"),
                       threading.Thread(target=worker2, name="worker2")]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    except tl.DeadlockError as exc:
        print("WATCH:", str(exc).splitlines()[0])
    print("RAISED IN", len(errors), "THREAD(S)")
    print(errors[0])
"""


def test_the_guides_deadlock_pair_is_reported_not_hung() -> None:
    result = run_script(GUIDE_PAIR)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "WATCH: 1 deadlock(s) detected in the watched code" in out
    assert "RAISED IN 1 THREAD(S)" in out, "exactly one participant is chosen to break the cycle"
    assert "2 thread(s) wait for each other in a cycle" in out
    for name in ("worker1", "worker2"):
        assert f"Stack of thread '{name}'" in out, f"{name}'s stack is missing"
        assert f"in {name}\n" in out, f"{name}'s frame is missing from the stacks"
    assert out.count("holds 'Lock#") == 2, "each participant's held lock"
    assert "Lock#1" in out
    assert "Lock#2" in out
    assert "_sync.py" not in out, "taskloom's own frames are left out of the stacks"


def test_the_guides_fix_runs_clean_under_the_watch() -> None:
    result = run_script("""
        import threading
        import taskloom as tl
        with tl.deadlock_watch(timeout=30):
            lock1, lock2 = threading.Lock(), threading.Lock()
            def safe_worker():
                for _ in range(200):
                    with lock1:
                        with lock2:
                            pass
            threads = [threading.Thread(target=safe_worker) for _ in range(4)]
            for t in threads: t.start()
            for t in threads: t.join()
        print("clean")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_a_thread_blocked_past_the_timeout_is_reported_with_every_stack() -> None:
    result = run_script("""
        import threading
        import taskloom as tl
        never = threading.Event()   # made before the watch: an untracked wait
        caught = []
        with tl.deadlock_watch(timeout=0.3) as watch:
            lock = threading.Lock()
            held = threading.Event()
            def holder():
                with lock:
                    held.set()
                    never.wait(20)       # waits on something the watch cannot see
            def waiter():
                held.wait(20)
                try:
                    with lock:
                        pass
                except tl.DeadlockError as exc:
                    caught.append(exc)
                finally:
                    never.set()
            threads = [threading.Thread(target=holder, name="holder"), threading.Thread(target=waiter, name="waiter")]
            for t in threads: t.start()
            for t in threads: t.join()
            print("REPORTS", len(watch.reports))
            watch.reports.clear()      # seen: do not raise again at the end of the block
        print(caught[0])
    """)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "REPORTS 1" in out
    assert "thread 'waiter' has waited" in out
    assert "held by thread 'holder'" in out
    assert "longer than the watch's timeout of 0.3 s" in out
    assert "Stack of thread 'holder'" in out
    assert "Stack of thread 'MainThread'" in out, "every thread's stack, faulthandler-style"
    assert ", in holder\n" in out, "the holder's frame, though it holds its lock through an untracked wait"


def test_ordered_locks_never_reach_the_cycle() -> None:
    # The guide's pair with ordered locks: the thread taking them backwards fails with
    # LockOrderError at its second acquire, releases what it holds, and the other goes on.
    result = run_script("""
        import threading
        import taskloom as tl
        a, b = tl.OrderedLock("a", rank=1), tl.OrderedLock("b", rank=2)
        start = threading.Barrier(2)
        errors = []
        def forward():
            with a:
                start.wait(30)
                with b:
                    pass
        def backward():
            try:
                with b:
                    start.wait(30)
                    with a:
                        pass
            except tl.LockOrderError as exc:
                errors.append(exc)
        with tl.deadlock_watch(timeout=30):
            ts = [threading.Thread(target=forward), threading.Thread(target=backward)]
            for t in ts: t.start()
            for t in ts: t.join()
        print(type(errors[0]).__name__)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "LockOrderError"


def test_tracked_plain_locks_behave_like_plain_locks() -> None:
    with tl.deadlock_watch(timeout=30) as watch:
        lock = threading.Lock()
        rlock = threading.RLock()
        assert type(lock).__name__ == "_TrackedLock"
        assert lock.acquire()
        assert not lock.acquire(False)
        assert not lock.acquire(True, 0.01)  # a timed self-wait times out: the lock may be a signal
        released = threading.Event()

        def release_from_elsewhere() -> None:
            lock.release()  # plain locks may be released by another thread
            released.set()

        t = threading.Thread(target=release_from_elsewhere)
        t.start()
        wait_for(released, "the release from another thread")
        join(t, "releaser")
        assert not lock.locked()
        with rlock, rlock:
            assert rlock._is_owned()
        with pytest.raises(RuntimeError):
            rlock.release()
        with pytest.raises(RuntimeError):
            lock.release()
        # The stdlib's own users of threading.Lock/RLock keep working.
        cond = threading.Condition()
        event = threading.Event()
        items: list[int] = []

        def produce() -> None:
            with cond:
                items.append(1)
                cond.notify_all()
            event.set()

        with cond:
            t = threading.Thread(target=produce)
            t.start()
            assert cond.wait_for(lambda: items, timeout=30)
        wait_for(event, "event set")
        join(t, "producer")
        assert "RLock#" in repr(rlock)
    assert watch.reports == []
    assert not isinstance(threading.Lock(), _sync._TrackedLock)


def test_watch_restores_threading_even_when_the_block_fails() -> None:
    original_lock, original_rlock = threading.Lock, threading.RLock

    def fail_inside() -> None:
        with tl.deadlock_watch(), tl.deadlock_watch(track_new_locks=False):
            assert threading.Lock is not original_lock
            raise KeyError("boom")

    with pytest.raises(KeyError):
        fail_inside()
    assert threading.Lock is original_lock
    assert threading.RLock is original_rlock
    assert not _sync._watches


def test_nested_watches_restore_once() -> None:
    original = threading.Lock
    with tl.deadlock_watch():
        with tl.deadlock_watch():
            pass
        assert threading.Lock is not original, "the outer watch is still active"
    assert threading.Lock is original


def test_deadlock_watch_validates_timeout() -> None:
    with pytest.raises(ValueError, match="timeout"):
        tl.deadlock_watch(timeout=0)


def test_tracked_lock_after_fork_reinit() -> None:
    with tl.deadlock_watch():
        lock = threading.Lock()
    lock.acquire()
    lock._at_fork_reinit()  # what logging does in a forked child
    assert not lock.locked()
    assert lock.acquire(False)
    lock.release()


# -- in-process versions (bounded: a regression fails after the join timeout, it does not hang) -------------
def test_cycle_in_process_breaks_with_one_deadlock_error() -> None:
    errors: list[BaseException] = []
    watches: list[_sync.DeadlockWatch] = []

    def guide_pair() -> None:
        with tl.deadlock_watch(timeout=30) as watch:
            watches.append(watch)
            lock1, lock2 = threading.Lock(), threading.Lock()
            both = threading.Barrier(2)

            def worker(first: Any, second: Any) -> None:
                try:
                    with first:
                        both.wait(30)
                        with second:
                            pass
                except tl.DeadlockError as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=worker, args=(lock1, lock2), name="w1", daemon=True),
                       threading.Thread(target=worker, args=(lock2, lock1), name="w2", daemon=True)]
            for t in threads:
                t.start()
            for t in threads:
                join(t, "the deadlocked pair (the watch should have broken the cycle)")

    with pytest.raises(tl.DeadlockError, match="1 deadlock"):
        guide_pair()
    assert len(errors) == 1
    [watch] = watches
    assert len(watch.reports) == 1
    assert "Stack of thread 'w1'" in watch.reports[0]
    assert "Stack of thread 'w2'" in watch.reports[0]


def test_timeout_in_process_reports_the_blocked_thread() -> None:
    never = threading.Event()
    caught: list[BaseException] = []
    with tl.deadlock_watch(timeout=0.2) as watch:
        lock = threading.RLock()
        held = threading.Event()

        def holder() -> None:
            with lock:
                held.set()
                never.wait(30)

        def waiter() -> None:
            wait_for(held, "the holder")
            try:
                with lock:
                    pass
            except tl.DeadlockError as exc:
                caught.append(exc)
            finally:
                never.set()

        threads = [threading.Thread(target=holder, name="holder", daemon=True),
                   threading.Thread(target=waiter, name="waiter", daemon=True)]
        for t in threads:
            t.start()
        for t in threads:
            join(t, "holder and waiter")
        assert len(watch.reports) == 1
        watch.reports.clear()
    assert "thread 'waiter' has waited" in str(caught[0])
    assert "RLock#" in str(caught[0])


def test_timed_acquire_inside_a_watch_times_out_normally() -> None:
    with tl.deadlock_watch(timeout=30):
        lock = tl.OrderedLock("timed")
        with held_by_another_thread(lock):
            assert not lock.acquire(True, 0.1)
            assert not lock.acquire(False)
        assert lock.acquire(True, 10)
        lock.release()


def test_plain_mode_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sync, "CHECKS", False)
    low, high = tl.OrderedLock("low", rank=1), tl.OrderedLock("high", rank=2)
    rlock = tl.OrderedRLock("r")
    with high, low:  # unchecked
        assert low.locked()
    assert low.acquire(False)
    low.release()
    with rlock, rlock:
        assert rlock.locked()
        assert rlock._is_owned()
    assert not rlock.locked()
    cond = threading.Condition(rlock)
    with cond:
        assert not cond.wait(0.01)
    assert "unlocked" in repr(rlock)


def test_a_lock_released_by_another_thread_removes_only_its_own_hold() -> None:
    # A plain lock used as a signal: the owner takes it, another thread releases it, while the
    # owner takes and releases locks of its own. Each release must remove its own hold from the
    # owner's list. The owner's own release used to delete by an index that the releasing thread
    # shifted meanwhile: the wrong hold went (a hold of a free lock stayed) or IndexError. Run
    # under the stress harness (with its seeded preemption, the GIL's switches land there too);
    # on a free-threaded 3.13t the bare race also failed most runs.
    from taskloom.testing import stress

    with tl.deadlock_watch(timeout=30):
        signal_lock = threading.Lock()
        own = [threading.Lock() for _ in range(3)]
    rounds = 30
    # A role per thread: the first to ask owns. A counter under a lock, not next() on a shared
    # iterator: on 3.13t two threads can both get the same value from one range iterator.
    roles = [0]
    roles_lock = threading.Lock()

    def first() -> bool:
        with roles_lock:
            roles[0] += 1
            return roles[0] == 1

    taken = threading.Semaphore(0)
    holds: list[list[Any]] = []

    def reset() -> None:
        nonlocal taken
        roles[0], taken = 0, threading.Semaphore(0)
        holds.clear()

    def body() -> None:
        if first():  # the owner
            holds.append(_sync._my_holds())
            for _ in range(rounds):
                assert signal_lock.acquire(True, 10), "the releaser never released the signal lock"
                taken.release()
                for lock in own:
                    lock.acquire()
                for lock in reversed(own):
                    lock.release()
        else:  # the releaser
            for _ in range(rounds):
                assert taken.acquire(timeout=10), "the owner stopped taking the signal lock"
                signal_lock.release()

    def no_hold_left() -> None:
        assert [[h.lock.name for h in mine] for mine in holds] == [[]], "a hold outlived its release"

    stress(body, threads=2, repeat=40, setup=reset, check=no_hold_left, preempt_every=8, timeout=30)


def test_a_hold_is_removed_by_identity_whatever_the_owner_removed_meanwhile() -> None:
    # The interleaving the stress test above looks for, made to happen: the owner looks for the
    # hold of the lock it releases, and before it removes it, another thread's release of a plain
    # lock the owner held removes that hold, shifting the list.
    signal, first, second = (_sync._TrackedLock(name) for name in ("signal", "first", "second"))
    holds = [_sync._Hold(lock, "here") for lock in (signal, first, second)]

    class ShiftedMeanwhile(list):  # type: ignore[type-arg]
        shifted = False

        def copy(self) -> list[Any]:
            looked = super().copy()
            if not self.shifted:
                self.shifted = True
                self.pop(0)  # the other thread's release of `signal` lands now
            return looked

    mine = ShiftedMeanwhile(holds)
    _sync._forget_hold(mine, second)
    assert [h.lock.name for h in mine] == ["first"], "the wrong hold was removed"
    _sync._forget_hold(mine, signal)  # gone already: nothing else is removed, nothing raised
    assert [h.lock.name for h in mine] == ["first"]


def test_the_thread_that_finds_a_cycle_takes_it_out_of_the_graph() -> None:
    # Two threads (made-up idents) each hold one lock and wait for the other's. The first to look
    # finds the cycle, and must leave the graph in the same step: the other, waking from its wait
    # slice while the first is still writing its report, then finds no cycle. (It found one too
    # on a busy 3.13t: two DeadlockErrors for one deadlock, tests/test_sync.py's guide pair.)
    a, b = -101, -102
    lock_a, lock_b = _sync._TrackedLock("held by a"), _sync._TrackedLock("held by b")
    lock_a._owner, lock_b._owner = a, b
    try:
        with _sync._graph:
            _sync._waiting[a] = _sync._Wait(lock_b, 0.0)
            _sync._waiting[b] = _sync._Wait(lock_a, 0.0)
            cycle = _sync._breaks_cycle(b, lock_a)
            assert cycle is not None
            assert [ident for ident, _ in cycle] == [b, a]
            assert b not in _sync._waiting
            assert _sync._breaks_cycle(a, lock_b) is None, "the cycle was found twice"
    finally:
        with _sync._graph:
            _sync._waiting.pop(a, None)
            _sync._waiting.pop(b, None)
