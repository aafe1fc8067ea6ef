"""What a failure becomes (``_run/_failures.py``): pure decisions on plain data, then the run acting on them.

The decisions take what happened (an ``At``, a ``Lost`` or ``Done`` event, a crash record, the
``RetryPolicy``) and return ``Split``, ``Retry``, ``Fail`` or ``FailRun``; nothing here needs a run,
a backend or a clock. The last tests check the run acts on each answer, on the scripted engine.
"""

from __future__ import annotations

import random
from concurrent.futures import BrokenExecutor
from typing import Any

import pytest

import taskloom as tl
from taskloom._backends._base import Batch, Done, ItemError, Lost
from taskloom._run import _failures as failures
from taskloom._run._failures import At, Fail, FailRun, Retry, Split
from taskloom._run._policy import RetryPolicy
from tests.fake_engine import Crash, FakeBackend, FakeEngine, Ok, make_run

ENGINE = FakeEngine()


def policy(retries: int = 0, retry_on: tuple[type[BaseException], ...] = (Exception,), crash_retries: int = 1,
           backoff: float = 0.0) -> RetryPolicy:
    return RetryPolicy(retries, retry_on, backoff, crash_retries, random.Random(0))


def at(attempts: int = 1, index: int = 4, item: Any = "x") -> At:
    return At("fn", index, item, attempts)


def raised(exc: BaseException, remote: bool = False) -> ItemError:
    return ItemError(exc, f"Traceback: {exc!r}\n", remote)


# -- a task raised or ran past its deadline -----------------------------------------------------------------
def test_a_raised_task_is_retried_while_retries_allow() -> None:
    p = policy(retries=2)
    assert failures.after_error(at(1), raised(OSError()), p) == Retry(2)
    assert failures.after_error(at(2), raised(OSError()), p) == Retry(3)
    decision = failures.after_error(at(3), raised(OSError("gone")), p)
    assert isinstance(decision, Fail)
    assert str(decision.error) == "task 4 (fn) failed after 3 attempts on item 'x': OSError: gone"
    assert decision.error.attempts == 3
    assert isinstance(decision.error.__cause__, OSError)


def test_a_retry_after_an_error_waits_out_its_backoff() -> None:
    decision = failures.after_error(at(1), raised(OSError()), policy(retries=1))
    assert isinstance(decision, Retry)
    assert decision.wait


def test_only_retry_on_classes_are_retried() -> None:
    decision = failures.after_error(at(1), raised(ValueError()), policy(retries=3, retry_on=(OSError,)))
    assert isinstance(decision, Fail)
    assert isinstance(decision.error.__cause__, ValueError)


def test_what_cannot_be_pickled_is_never_retried() -> None:
    error = tl.SerializationError("cannot pickle the result", what="result")
    decision = failures.after_error(at(1), raised(error), policy(retries=5))
    assert isinstance(decision, Fail)
    assert decision.error is error  # taskloom's own error, with this run's coordinates
    assert decision.error.index == 4
    assert decision.error.stage == "fn"


def test_a_remote_traceback_hangs_under_the_original_exception() -> None:
    decision = failures.after_error(at(1), raised(KeyError("k"), remote=True), policy())
    assert isinstance(decision, Fail)
    cause = decision.error.__cause__
    assert isinstance(cause, KeyError)
    assert "Traceback: KeyError('k')" in str(cause.__cause__)


def test_a_timeout_is_retried_like_an_error_then_kept_as_it_is() -> None:
    timeout = failures.timeout_error(at(1), 2.0, ENGINE)
    assert failures.after_error(at(1), timeout, policy(retries=1)) == Retry(2)
    decision = failures.after_error(at(2), timeout, policy(retries=1))
    assert decision == Fail(timeout)
    assert isinstance(decision.error, tl.TaskTimeout)
    assert "ran past its timeout of 2 s: the fake worker was stopped" in str(decision.error)


@pytest.mark.parametrize(("values", "elapsed", "errors", "timeout", "late"), [
    ([1], 3.0, None, 2.0, True),  # came after its deadline (or could not be stopped)
    ([1], 1.0, None, 2.0, False),
    ([1], 3.0, None, None, False),  # no timeout
    ([None], 3.0, {0: raised(OSError())}, 2.0, False),  # it failed anyway: judged as an error
    ([1, 2], 3.0, None, 2.0, False),  # not a timed batch (those hold one item)
])
def test_ran_late_judges_a_timed_result_by_its_elapsed_time(values: list[Any], elapsed: float,
                                                              errors: dict[int, ItemError] | None,
                                                              timeout: float | None, late: bool) -> None:
    assert failures.ran_late(Done(1, values, errors, None, elapsed, "w"), timeout) is late


# -- a batch was lost ---------------------------------------------------------------------------------------
def lost(reason: str, detail: str = "the worker died", pid: int | None = 4242, exitcode: int | None = -9) -> Lost:
    return Lost(7, reason, detail, pid, exitcode)


@pytest.mark.parametrize("reason", ["crash", "split"])
def test_a_batch_of_several_lost_to_a_crash_or_pickling_is_split(reason: str) -> None:
    assert failures.after_lost(lost(reason), 3, "fn") == Split()
    assert failures.after_lost(lost(reason), 1, "fn") is None  # alone: the item is the culprit


@pytest.mark.parametrize("reason", ["item", "result", "broken"])
def test_other_losses_are_decided_item_by_item(reason: str) -> None:
    assert failures.after_lost(lost(reason), 3, "fn") is None


def test_a_function_that_cannot_be_unpickled_fails_the_run() -> None:
    decision = failures.after_lost(lost("function", "No module named 'notebook_cell'"), 5, "fn")
    assert isinstance(decision, FailRun)
    assert isinstance(decision.error, tl.SerializationError)
    assert decision.error.what == "function"
    assert "the function fn could not be unpickled in a worker process: No module named" in str(decision.error)


def test_every_worker_death_counts_split_or_not() -> None:
    assert failures.worker_died(lost("crash"))
    assert not failures.worker_died(lost("split"))
    assert not failures.worker_died(lost("broken"))


def test_a_crashed_item_goes_again_at_once_then_fails_with_every_death() -> None:
    p = policy(crash_retries=1)
    first: list[tuple[int, int | None]] = [(4242, -9)]
    assert failures.lost_item(at(1), lost("crash"), first, p, ENGINE) == Retry(2, wait=False)
    both: list[tuple[int, int | None]] = [(4242, -9), (4343, 3)]
    decision = failures.lost_item(at(2), lost("crash"), both, p, ENGINE)
    assert isinstance(decision, Fail)
    assert isinstance(decision.error, tl.WorkerCrashed)
    assert "crashed its worker 2 time(s) (pid 4242: killed by SIGKILL; pid 4343: exit code 3)" in str(decision.error)
    assert decision.error.history == both


def test_crash_retries_are_counted_apart_from_error_retries() -> None:
    # Retries for errors do not let a crashing task go again: only the engine's crash retries do.
    decision = failures.lost_item(at(1), lost("crash"), [(1, -9)], policy(retries=5, crash_retries=0), ENGINE)
    assert isinstance(decision, Fail)


def test_a_crash_on_a_remote_worker_has_no_pid() -> None:
    decision = failures.lost_item(at(1), lost("crash", pid=None), [(0, None)], policy(crash_retries=0), ENGINE)
    assert isinstance(decision, Fail)
    assert "(a remote worker)" in str(decision.error)


@pytest.mark.parametrize(("reason", "what"), [("item", "argument"), ("result", "result")])
def test_an_item_that_cannot_be_pickled_fails_without_retry(reason: str, what: str) -> None:
    event = lost(reason, f"the {reason} could not be pickled: lambda")
    decision = failures.lost_item(at(1), event, [], policy(retries=5), ENGINE)
    assert isinstance(decision, Fail)
    assert isinstance(decision.error, tl.SerializationError)
    assert str(decision.error) == f"task 4 of fn: the {what} could not be pickled: lambda"


def test_a_broken_pool_fails_each_item_with_the_engines_broken_error_as_cause() -> None:
    decision = failures.lost_item(at(1), lost("broken", "the initializer raised"), [], policy(retries=5), ENGINE)
    assert isinstance(decision, Fail)
    assert str(decision.error) == "task 4 of fn could not run: the initializer raised"
    assert isinstance(decision.error.__cause__, BrokenExecutor)
    assert decision.error._pool_broken


# -- the run acts on the decision ---------------------------------------------------------------------------
class LosingBackend(FakeBackend):
    """Loses every batch for ``reason`` (what the fake's script cannot say: a broken pool, a function)."""

    reason = "broken"

    def _play(self, batch: Batch) -> Any:
        running = super()._play(batch)
        running.event = Lost(batch.id, self.reason, "lost by the test")
        return running


@pytest.mark.parametrize("reason", ["broken", "function"])
def test_the_run_ends_every_item_of_a_broken_pool_and_fails_on_a_function(reason: str) -> None:
    h = make_run([1, 2, 3], chunksize=3, on_error="collect", retries=2)
    backend = LosingBackend(h.clock, workers=2)
    backend.reason = reason
    h.run._dispatch.backend = backend
    if reason == "broken":
        outcomes = list(h.run)
        assert [o.ok for o in outcomes] == [False, False, False]
        assert all("could not run: lost by the test" in str(o.error) for o in outcomes)
        assert h.run.statistics().failed == 3
        assert h.run.statistics().retried == 0
    else:
        with pytest.raises(tl.SerializationError, match="the function fn could not be unpickled"):
            list(h.run)
    assert backend.attempts == {1: 1, 2: 1, 3: 1}  # one batch, never split nor retried


def test_a_crash_retry_does_not_wait_for_the_backoff() -> None:
    h = make_run([1], lambda item, attempt: Crash(seconds=1) if attempt == 1 else Ok(seconds=1), retries=3,
                 backoff=5.0)
    start = h.clock.t
    assert h.run.to_list() == [10]
    assert [t - start for t, _ in h.backend.started_at] == [0.0, 1.0]  # again at the instant of the death
    assert h.run.statistics().retried == 1
    assert h.run.statistics().crashed == 1
