"""Large arrays to process workers without copying: taskloom.SharedArray.

Sending a 40 MB array to a process pool pickles and copies it for every task. A SharedArray is
copied into shared memory once; what travels to a worker (even one of a warm pool that was
already running) is its name, shape and dtype, and the worker maps the same pages. Workers can
also write into a writable one: here each fills its own row of a result array.

Run: python examples/shared_array.py     (needs numpy: pip install 'taskloom[shared]')
"""

from __future__ import annotations

import os
import pickle
import time

import numpy as np

import taskloom as tl

SMALL = os.environ.get("TASKLOOM_SMALL") == "1"
N = 1_000_000 if SMALL else 5_000_000  # float64: 8 or 40 MB
BLOCKS = 8


def block_sum(arr: tl.SharedArray, lo: int, hi: int) -> float:
    return float(np.asarray(arr)[lo:hi].sum())  # a view of the shared pages: nothing copied


def fill_row(out: tl.SharedArray, row: int) -> None:
    out[row] = np.sqrt(np.arange(out.shape[1]) + row)  # written straight into the parent's array


def main() -> None:
    data = np.random.default_rng(0).random(N)
    step = N // BLOCKS
    with tl.SharedArray.from_numpy(data) as arr:  # copied in once; removed when the block ends
        print(f"{data.nbytes / 1e6:.0f} MB array; what a task receives pickles to {len(pickle.dumps(arr))} bytes")
        start = time.perf_counter()
        sums = tl.starmap(block_sum, [(arr, lo, lo + step) for lo in range(0, N, step)], mode="processes")
        elapsed = time.perf_counter() - start
        assert np.isclose(sum(sums), data.sum())
        print(f"summed in {BLOCKS} blocks on process workers in {elapsed:.3f} s: {sum(sums):.3f}")

    with tl.SharedArray.zeros((BLOCKS, 1_000), "float64") as out:
        tl.starmap(fill_row, [(out, row) for row in range(BLOCKS)], mode="processes")
        expected = np.sqrt(np.arange(1_000)[None, :] + np.arange(BLOCKS)[:, None])
        assert np.allclose(np.asarray(out), expected)
        print(f"workers filled a shared {out.shape} result array: checksum {np.asarray(out).sum():.2f}")
    tl.shutdown()


if __name__ == "__main__":
    main()
