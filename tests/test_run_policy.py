"""The run's policies and batch sizes as plain objects: ``_run/_policy.py`` and ``_run/_chunker.py``."""

from __future__ import annotations

import random

import pytest

import taskloom as tl
from taskloom._options import Options
from taskloom._run._chunker import MAX_GROWTH, MAX_UNSIZED_BATCH, TARGET_BATCH_SECONDS, Chunker
from taskloom._run._policy import BACKOFF_MAX, RetryPolicy, Timeline, TokenBucket, backoff_delay, earliest


def test_chunker_starts_at_one_then_aims_at_the_target_batch_time() -> None:
    c = Chunker(None, None, workers=2)
    assert c.next_size() == 1
    c.observe(1, 0.001)  # 1 ms per item: the target is 50 items, but growth is capped at x10
    assert c.next_size() == MAX_GROWTH
    c.observe(MAX_GROWTH, 0.001 * MAX_GROWTH)
    assert c.next_size() == int(TARGET_BATCH_SECONDS / 0.001)


def test_chunker_caps_batches_so_the_rest_splits_across_workers() -> None:
    c = Chunker(None, 80, workers=2)  # 80 items, 2 workers: about 4 batches each -> at most 10
    c.observe(1, 1e-9)
    c.largest = 10**6
    assert c.next_size() == 10
    c.plan(None, 2)  # no known length: only the unsized bound holds
    assert c.next_size() == MAX_UNSIZED_BATCH


def test_chunker_fixed_size_ignores_measurements() -> None:
    c = Chunker(7, 1000, workers=4)
    c.observe(7, 100.0)
    assert c.next_size() == 7


def test_backoff_is_exponential_capped_and_jittered_into_its_upper_half() -> None:
    assert backoff_delay(0.0, 3) == 0.0
    assert backoff_delay(1.0, 1, lambda lo, hi: hi) == 1.0
    assert backoff_delay(1.0, 4, lambda lo, hi: hi) == 8.0
    assert backoff_delay(1.0, 4, lambda lo, hi: lo) == 4.0
    assert backoff_delay(1.0, 50, lambda lo, hi: hi) == BACKOFF_MAX


def test_retry_policy_counts_attempts_and_classes() -> None:
    p = RetryPolicy(retries=2, retry_on=(OSError,), backoff=0.5, crash_retries=1, rng=random.Random(3))
    assert p.retries_error(OSError(), 1, never=tl.SerializationError)
    assert p.retries_error(OSError(), 2, never=tl.SerializationError)
    assert not p.retries_error(OSError(), 3, never=tl.SerializationError)
    assert not p.retries_error(ValueError(), 1, never=tl.SerializationError)
    assert p.retries_crash(1)
    assert not p.retries_crash(2)
    assert p.delay(1) == backoff_delay(0.5, 1, random.Random(3).uniform)


def test_token_bucket_spaces_starts_and_never_bursts_after_a_late_wake_up() -> None:
    bucket = TokenBucket(rate=4.0, now=100.0)
    assert bucket.take(100.0)
    assert not bucket.take(100.1)
    assert bucket.take(100.25)
    assert bucket.take(103.0)  # late: one start, and the next is a full interval later
    assert not bucket.take(103.1)
    assert bucket.take(103.25)


def test_timeline_pops_in_due_order_and_keeps_ties_in_insertion_order() -> None:
    t: Timeline[str] = Timeline()
    t.add(5.0, "b")
    t.add(1.0, "a")
    t.add(5.0, "c")
    assert t.next_due() == 1.0
    assert t.pop_due(0.5) is None
    assert [t.pop_due(10.0), t.pop_due(10.0), t.pop_due(10.0), t.pop_due(10.0)] == ["a", "b", "c", None]
    t.add(2.0, "x")
    assert t.remove_where(lambda v: v == "x") == "x"
    assert len(t) == 0
    assert earliest(None, 3.0, 2.0) == 2.0
    assert earliest(None) is None


# -- options: spelled once, checked once --------------------------------------------------------------
def test_an_unknown_option_is_named_with_the_nearest_one() -> None:
    with pytest.raises(TypeError, match=r"map\(\) got an unexpected keyword argument 'worker' \(did you mean "
                                        r"'workers'\?\)"):
        tl.map(abs, [1], worker=2)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"imap\(\) got an unexpected keyword argument 'colour'$"):
        tl.imap(abs, [1], colour="red")  # type: ignore[call-overload]


def test_options_are_frozen_and_normalised() -> None:
    o = Options.build(abs, "map", mode="threads", timeout=2, rate="30/min", retry_on=OSError)
    assert o.mode == tl.Threads()
    assert o.chunksize == 1
    assert o.rate == 0.5
    assert o.retry_on == (OSError,)
    assert o.timeout == 2.0
    with pytest.raises(AttributeError):
        o.retries = 3  # type: ignore[misc]


def test_run_options_can_be_kept_and_passed_on() -> None:
    opts: tl.RunOptions = {"mode": "threads", "workers": 3, "retries": 1}
    assert tl.map(abs, [-1, -2], **opts) == [1, 2]
