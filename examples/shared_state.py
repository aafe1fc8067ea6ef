"""The guide's "Process Communication - Shared Memory", rewritten with taskloom.

The guide's version starts a Manager process for a shared list, passes a multiprocessing.Value
and a multiprocessing.Lock to each Process, and appends to the list under the lock. With taskloom:

* the list is not shared state at all: each task *returns* its items and map collects them, in
  order, with nothing to lock;
* the shared number is a taskloom.Counter: atomic across processes, and passed as an ordinary
  argument, so it works with a warm pool whose workers were started long before it existed
  (a multiprocessing.Value and its Lock can only be inherited at process start).

Run: python examples/shared_state.py
"""

from __future__ import annotations

import time

import taskloom as tl


def worker(shared_value: tl.Counter, worker_id: int) -> list[str]:
    items = []
    for i in range(5):
        time.sleep(0.01)
        value = shared_value.add()  # atomic, returns the new value: no lock to take
        items.append(f"Worker-{worker_id}-Item-{i}")
        print(f"Worker {worker_id}: {value}", flush=True)
    return items


def main() -> None:
    with tl.Counter(0) as shared_value:
        results = tl.starmap(worker, [(shared_value, i + 1) for i in range(3)], mode="processes", workers=3)
        shared_list = [item for items in results for item in items]
        print(f"Final shared list: {shared_list}")
        print(f"Final shared value: {shared_value.get()}")
        assert shared_value.get() == 15
        assert len(shared_list) == 15
    tl.shutdown()


if __name__ == "__main__":
    main()
