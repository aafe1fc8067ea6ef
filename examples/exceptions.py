"""The guide's "2. Handle Exceptions Properly" (risky_task, 5 raises), done with taskloom.

The guide submits every number to a ThreadPoolExecutor, keeps a ``future_to_number`` dict to know
which item a future belongs to, and calls ``future.result()`` in a try/except for each. It works,
but only because every future is asked: one forgotten ``result()`` and the error is gone, and the
shorter ``list(executor.map(...))`` raises the bare ValueError - which item? - and loses the other
results. With taskloom:

* ``tl.map(risky_task, numbers)`` raises ``TaskError`` naming the task: ``.index``, ``.item_repr``,
  ``.attempts``, the original exception as ``__cause__``; the tasks not started are cancelled;
* ``on_error="collect"`` gives one ``Outcome`` per item, in input order, exactly once: a value or an error;
* ``tl.Executor`` + ``tl.as_completed`` keep the guide's exact shape (the futures are plain
  ``concurrent.futures`` futures: they raise the task's own exception and carry no item, so the
  dict stays) - and ``tl.imap(..., ordered=False, on_error="collect")`` gives the same
  completion order with the item on each Outcome, no dict;
* ``retries=`` (with ``retry_on=`` and ``backoff=``) runs a flaky task again, counted in ``.attempts``.

Run: python examples/exceptions.py   (TASKLOOM_SMALL=1 for a test-sized run)
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
MANY = 100 if SMALL else 1_000
numbers = [1, 2, 3, 4, 5, 6]


def risky_task(n: int) -> int:
    if n == 5:
        raise ValueError("Number 5 not allowed!")
    return n * 2


started: list[int] = []  # items whose task began (threads share this list)


def slow_risky_task(n: int) -> int:
    started.append(n)
    time.sleep(0.01)
    return risky_task(n)


seen: set[int] = set()
seen_lock = threading.Lock()


def flaky_task(n: int) -> int:
    """Multiples of 3 fail the first time (a dropped connection); 5 always fails (a bug)."""
    with seen_lock:
        first_time = n not in seen
        seen.add(n)
    if n % 3 == 0 and first_time:
        raise ConnectionError(f"connection reset while handling {n}")
    return risky_task(n)


def guide_way() -> None:
    print("-- the guide's code")
    with concurrent.futures.ThreadPoolExecutor() as executor:
        future_to_number = {executor.submit(risky_task, num): num for num in numbers}
        for future in concurrent.futures.as_completed(future_to_number):
            number = future_to_number[future]
            try:
                result = future.result()
                print(f"Number {number} -> {result}")
            except Exception as exc:
                print(f"Number {number} generated exception: {exc}")
    with concurrent.futures.ThreadPoolExecutor() as executor:
        try:
            list(executor.map(risky_task, numbers))
        except ValueError as exc:
            print(f"list(executor.map(...)) raised a bare {exc!r}: no item, no index, "
                  f"and the other results are lost")


def taskloom_way() -> None:
    # (a) The first failure raises, with its coordinates; the rest of the run is cancelled.
    print("-- (a) tl.map raises TaskError")
    try:
        tl.map(risky_task, numbers)
        raise AssertionError("tl.map should raise")
    except tl.TaskError as exc:
        error = exc
    print(f"TaskError: {error}")
    print(f"  .index={error.index} .item_repr={error.item_repr} .attempts={error.attempts} "
          f"__cause__={error.__cause__!r}")
    assert (error.index, error.item_repr, error.attempts) == (4, "5", 1)
    assert isinstance(error.__cause__, ValueError)
    try:
        tl.map(slow_risky_task, range(1, MANY + 1), mode="threads", workers=2)
    except tl.TaskError as exc:
        print(f"{len(started)} of {MANY} tasks had started when the TaskError for item {exc.item_repr} reached "
              "the caller: the rest were cancelled and never run")
        assert len(started) < MANY

    # (b) Collect: one Outcome per item, in order, exactly once.
    print('-- (b) on_error="collect"')
    outcomes = tl.map(risky_task, numbers, on_error="collect")
    for o in outcomes:
        shown = f"-> {o.value}" if o.ok else f"error {type(o.error.__cause__).__name__}: {o.error.__cause__}"
        print(f"item {o.item} (index {o.index}) {shown}")
    check_exactly_once(outcomes, numbers)
    print(f"{len(outcomes)} outcomes for {len(numbers)} items: "
          f"{sum(o.ok for o in outcomes)} results, {sum(not o.ok for o in outcomes)} error")

    # (c) The guide's shape, on taskloom's engine (here: worker processes).
    print("-- (c) tl.Executor + tl.as_completed")
    with tl.Executor("processes", workers=2) as ex:
        future_to_number = {ex.submit(risky_task, num): num for num in numbers}
        for future in tl.as_completed(future_to_number):
            number = future_to_number[future]
            try:
                print(f"Number {number} -> {future.result()}")
            except ValueError as exc:
                origin = "with the worker's traceback" if exc.__cause__ is not None else "without a traceback"
                print(f"Number {number} generated exception: {exc} (its own ValueError, {origin})")
    print("the same completion order without the dict: each Outcome carries its item")
    for o in tl.imap(risky_task, numbers, mode="threads", ordered=False, on_error="collect"):
        print(f"  Number {o.item} -> {o.value if o.ok else o.error}")

    # (d) Retries for what is worth retrying.
    print("-- (d) retries")
    outcomes = tl.map(flaky_task, numbers, mode="threads", retries=2, retry_on=ConnectionError,
                      backoff=0.01, on_error="collect")
    for o in outcomes:
        status = f"-> {o.value}" if o.ok else f"failed: {type(o.error.__cause__).__name__}"
        print(f"item {o.item}: {status} after {o.attempts} attempt(s)")
    check_exactly_once(outcomes, numbers)
    assert [o.attempts for o in outcomes] == [1, 1, 2, 1, 1, 2]  # 5 raised ValueError: not retried
    assert [o.ok for o in outcomes] == [True, True, True, True, False, True]
    tl.shutdown()


def check_exactly_once(outcomes: list[tl.Outcome[int]], items: list[int]) -> None:
    """Every item ends as exactly one Outcome, in input order: a result or an error, never both."""
    assert [o.index for o in outcomes] == list(range(len(items)))
    assert [o.item for o in outcomes] == items
    assert all(o.ok == (o.error is None) for o in outcomes)
    assert [o.value for o in outcomes if o.ok] == [n * 2 for n in items if n != 5]
    assert [o.item for o in outcomes if not o.ok] == [5]


def main() -> None:
    guide_way()
    taskloom_way()


if __name__ == "__main__":
    main()
