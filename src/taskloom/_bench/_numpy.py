"""The large-array workloads: a numpy function summed over the blocks of one big array.

``array`` passes each block as the task's argument, the way most code does it: threads share the
block, processes receive a pickled copy of it (8 MB per block at the quick size). numpy's
ufuncs release the GIL on arrays this big, so threads run them in parallel too.

``array-shared`` is the same work with the blocks in a ``taskloom.SharedArray`` (zero-copy for
process workers): the task receives ``(shared, lo, hi)`` and reads its block in place, so the
two tables side by side show what sharing buys. ``_shared_setup`` relies only on
``SharedArray.from_numpy(array)`` (a context manager) and ``numpy.asarray(shared)`` (a view), and
the workload says why it is skipped where ``taskloom.SharedArray`` is missing (a build without the
shared-state module).

numpy is an optional dependency (``pip install 'taskloom[bench]'``): it is imported on first use,
and without it both workloads are skipped with that advice.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._workloads import Size, Workload, register

if TYPE_CHECKING:
    import numpy as np

__all__ = ["block_stat", "shared_block_stat"]

#: (blocks, float64 values per block).
ARRAY_SIZES: dict[Size, tuple[int, int]] = {
    "full": (16, 2_000_000),
    "quick": (8, 1_000_000),
    "test": (4, 10_000),
}
# Values are small integers (0..1008), so a block's exact sum is an integer far below 2**53 and
# the float sum over it is exact up to the sin/cos rounding, which stays below 1e-5: a tolerance
# of 0.25 catches one missing or extra element (each adds at least 1.0) and nothing else.
MODULUS = 1009
TOLERANCE = 0.25


def block_stat(block: np.ndarray[Any, Any]) -> float:
    """``sum(sin(x)**2 + cos(x)**2 + x)`` over one block: four passes of numpy ufuncs."""
    import numpy as np

    return float(np.sum(np.sin(block) ** 2 + np.cos(block) ** 2 + block))


def shared_block_stat(item: tuple[Any, int, int]) -> float:
    """``block_stat`` of ``shared[lo:hi]``, read in place from a ``taskloom.SharedArray``."""
    import numpy as np

    shared, lo, hi = item
    return block_stat(np.asarray(shared)[lo:hi])


def _numpy_missing() -> str | None:
    if importlib.util.find_spec("numpy") is None:
        return "needs numpy: pip install 'taskloom[bench]'"
    return None


def _shared_missing() -> str | None:
    missing = _numpy_missing()
    if missing is not None:
        return missing
    import taskloom

    if not hasattr(taskloom, "SharedArray"):
        return "taskloom.SharedArray is not in this version of taskloom yet"
    return None


def _items(size: Size) -> list[np.ndarray[Any, Any]]:
    import numpy as np

    blocks, length = ARRAY_SIZES[size]
    # One big array, cut into views: what a program holding a large array would hand out.
    big = (np.arange(blocks * length, dtype=np.int64) % MODULUS).astype(np.float64)
    return [big[j * length:(j + 1) * length] for j in range(blocks)]


def _expect(block: np.ndarray[Any, Any]) -> float:
    # sin**2 + cos**2 is 1 for every element: the answer is the length plus the exact integer sum.
    import numpy as np

    return float(block.size + int(block.astype(np.int64).sum()))


def _same(got: Any, want: float) -> bool:
    return isinstance(got, float) and abs(got - want) < TOLERANCE


@contextlib.contextmanager
def _shared_setup(blocks: list[np.ndarray[Any, Any]]) -> Iterator[list[tuple[Any, int, int]]]:
    """The blocks copied once into a ``taskloom.SharedArray``, as ``(shared, lo, hi)`` items."""
    import numpy as np

    import taskloom

    whole = np.concatenate(blocks)
    bounds = np.cumsum([0] + [len(b) for b in blocks]).tolist()
    # getattr: mypy must pass both before and after SharedArray lands (a type: ignore would not).
    shared_array: Any = getattr(taskloom, "SharedArray", None)
    with shared_array.from_numpy(whole) as shared:
        yield [(shared, lo, hi) for lo, hi in itertools.pairwise(bounds)]


def _shared_expect(item: tuple[Any, int, int]) -> float:
    import numpy as np

    shared, lo, hi = item
    return _expect(np.asarray(shared)[lo:hi])


_NOTES = {
    "threads": "numpy releases the GIL; threads share the blocks",
    "processes": "each block pickled to a worker",
}

register(Workload(
    name="array",
    description="numpy over large blocks, passed as arguments",
    fn=block_stat,
    items=_items,
    expect=_expect,
    same=_same,
    requires=_numpy_missing,
    notes=_NOTES,
))

register(Workload(
    name="array-shared",
    description="numpy over large blocks in a taskloom.SharedArray",
    fn=shared_block_stat,
    items=_items,
    expect=_shared_expect,
    same=_same,
    setup=_shared_setup,
    requires=_shared_missing,
    notes={**_NOTES, "processes": "blocks read in place from shared memory"},
))
