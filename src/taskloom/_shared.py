"""Shared state across threads and processes: SharedArray, Value and Counter.

Every object here lives in a POSIX shared-memory segment (the kind ``multiprocessing.shared_memory``
makes) and pickles as its *name*, so it reaches an already-running warm worker as an ordinary
argument and the worker maps the same pages instead of receiving a copy::

    parent (owner)                                      worker process (any, even warm)
    create /dev/shm/tl<pid>_<token> ── register ──> resource tracker (unlinks it if the parent dies)
    SharedArray / Value ── pickle: (name, shape, dtype) ──> attach: open + mmap, *not* registered;
                                                            arrays stay mapped in a per-process cache
    close() / with-exit / garbage collection / exit:        the cache drops a mapping once its
    unlink + unregister                                     segment is gone (next miss, or within 1 s)

Ownership. Only the creating process unlinks a segment. A worker attaches without telling the
resource tracker: before Python 3.13 ``SharedMemory(name)`` registers every attachment, and the
tracker (one per process tree, shared by our forkserver workers) keeps one *set* of names, so a
worker's register/unregister pair would erase the owner's registration, and a worker with a tracker
of its own would unlink the segment under the owner's feet when it exits. On Linux we therefore open
``/dev/shm/<name>`` ourselves (which is exactly what glibc's ``shm_open`` does).

Death. The owner registers each segment with multiprocessing's resource tracker, a helper process
that outlives its clients: when the owner dies, even by SIGKILL, the tracker sees its pipe close
once the last process of the tree (our workers exit when their parent dies) is gone, and unlinks
what is still registered. ``tests/test_shared.py::test_no_segment_left_after_parent_sigkill`` proves
it. Segments a *worker* creates carry its pid in their name, so ``reap(pid)`` can unlink them when
the pool notices that worker's death.

Cross-process locking (Value, Counter). A lock that reaches a running worker must be rebuilt from
a pickle, which rules out an inherited ``multiprocessing.Lock``. We use ``fcntl.flock`` on the
segment's own file descriptor, stacked under a per-process ``threading.RLock``:

* flock locks belong to an open file description, and every process opens the segment itself, so
  they exclude each other across processes; the RLock excludes threads of one process (they share
  the description, so flock alone would let them all in);
* the kernel drops the lock when its holder dies: a worker SIGKILLed mid-``add`` cannot leave the
  counter locked forever (a named semaphore would stay taken);
* it needs no second kernel object to name, track and clean up.

It costs two system calls per operation; ``benchmarks/shared.py`` measures it against
``multiprocessing.Value`` with its lock and against a Manager.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import multiprocessing.util
import os
import secrets
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["Counter", "SharedArray", "Value", "reap"]

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: Value works across threads only
    fcntl = None  # type: ignore[assignment]

#: Segments are opened directly in this directory on Linux (what glibc's shm_open does).
_SHM_DIR = "/dev/shm"
_RAW_SHM = sys.platform.startswith("linux") and os.path.isdir(_SHM_DIR)
#: Every segment taskloom creates starts with this prefix, then the creator's pid (see ``reap``).
_PREFIX = "tl"
_RTYPE = "shared_memory"  # the resource tracker's name for POSIX shared memory


def _numpy() -> Any:
    """numpy, imported on first use: ``import taskloom`` must stay light (STYLE.md rule 4)."""
    try:
        import numpy
    except ImportError as exc:
        raise ImportError(
            "taskloom.SharedArray needs numpy, which is not installed: pip install 'taskloom[shared]'"
        ) from exc
    return numpy


# -- segments ------------------------------------------------------------------------------------------
class _Segment:
    """One mapping of a shared-memory segment in this process: owned (created here) or attached.

    Only the owner unlinks, and only in the process that created it: a child made by ``os.fork``
    inherits the object (and its finalizer) but must never remove its parent's segment.
    """

    __slots__ = ("__weakref__", "_finalizer", "fd", "ino", "mm", "name", "owner", "size")

    _finalizer: weakref.finalize[Any, Any]

    def __init__(self, name: str, size: int, fd: int, mm: mmap.mmap, owner: bool, ino: int = 0) -> None:
        self.name = name
        self.size = size
        self.ino = ino  # identifies the segment behind the name (see _attach_cached)
        self.fd = fd  # -1 when the mapping needs no descriptor of its own (see keep_fd)
        self.mm = mm
        self.owner = owner
        # Runs on close(), on garbage collection and at interpreter exit, whichever comes first.
        self._finalizer = weakref.finalize(self, _release, name, fd, mm, os.getpid() if owner else None)
        if owner and multiprocessing.parent_process() is not None:
            # A multiprocessing child (a pool worker started with "fork" or "spawn") ends with
            # os._exit, which skips atexit and so weakref.finalize; multiprocessing runs its own
            # exit finalizers first. Workers of taskloom's fork server run atexit. Proved by
            # tests/test_shared.py::test_segment_made_in_a_worker_goes_when_the_worker_exits.
            multiprocessing.util.Finalize(self, self._finalizer, exitpriority=0)

    @classmethod
    def create(cls, size: int, *, keep_fd: bool = False) -> _Segment:
        """A new segment of ``size`` bytes (at least 1: an empty mapping is an error), owned here."""
        size = max(size, 1)
        if not _RAW_SHM:  # pragma: no cover - not Linux
            return cls._create_portable(size)
        from multiprocessing import resource_tracker

        fd = -1
        while fd < 0:
            name = f"{_PREFIX}{os.getpid()}_{secrets.token_hex(6)}"
            # Registered *before* it exists: a SIGKILL between the two steps must not leak it.
            resource_tracker.register("/" + name, _RTYPE)
            try:
                fd = os.open(os.path.join(_SHM_DIR, name),
                             os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except BaseException as exc:
                resource_tracker.unregister("/" + name, _RTYPE)
                if not isinstance(exc, FileExistsError):  # else: 48 random bits collided, draw again
                    raise
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            _unlink(name)
            raise
        if not keep_fd:
            os.close(fd)  # mmap keeps its own duplicate
            fd = -1
        return cls(name, size, fd, mm, owner=True)

    @classmethod
    def attach(cls, name: str, *, writable: bool, keep_fd: bool = False) -> _Segment:
        """Map an existing segment, without registering it with the resource tracker."""
        if not _RAW_SHM:  # pragma: no cover - not Linux
            return cls._attach_portable(name, writable)
        try:
            fd = os.open(os.path.join(_SHM_DIR, name),
                         (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"shared-memory segment {name!r} no longer exists: the process that created it closed it "
                "(left its `with` block, called close(), dropped it or exited) before this process attached; "
                "keep it open until the work that uses it has finished"
            ) from None
        try:
            st = os.fstat(fd)
            mm = mmap.mmap(fd, st.st_size, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
        except BaseException:
            os.close(fd)
            raise
        if not keep_fd:
            os.close(fd)
            fd = -1
        return cls(name, st.st_size, fd, mm, owner=False, ino=st.st_ino)

    @classmethod
    def _create_portable(cls, size: int) -> _Segment:  # pragma: no cover - not Linux
        from multiprocessing.shared_memory import SharedMemory

        shm = SharedMemory(create=True, size=size, name=f"{_PREFIX}{os.getpid()}_{secrets.token_hex(6)}")
        seg = cls.__new__(cls)
        seg.name, seg.size, seg.fd, seg.owner = shm.name, shm.size, -1, True
        seg.mm = shm._mmap  # type: ignore[attr-defined]
        seg._finalizer = weakref.finalize(seg, _release_portable, shm, os.getpid())
        return seg

    @classmethod
    def _attach_portable(cls, name: str, writable: bool) -> _Segment:  # pragma: no cover - not Linux
        from multiprocessing.shared_memory import SharedMemory

        if sys.version_info >= (3, 13):
            shm = SharedMemory(name=name, track=False)
        else:  # registers with this process's tracker: see the module docstring
            shm = SharedMemory(name=name)
        seg = cls.__new__(cls)
        seg.name, seg.size, seg.fd, seg.owner = name, shm.size, -1, False
        seg.mm = shm._mmap  # type: ignore[attr-defined]
        seg._finalizer = weakref.finalize(seg, _release_portable, shm, None)
        return seg

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Unmap (when no numpy view still uses the pages) and, for the owner, unlink now."""
        self._finalizer()


def _unlink(name: str) -> None:
    from multiprocessing import resource_tracker

    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(_SHM_DIR, name))
    resource_tracker.unregister("/" + name, _RTYPE)


def _release(name: str, fd: int, mm: mmap.mmap, owner_pid: int | None) -> None:
    if owner_pid is not None and owner_pid == os.getpid():
        _unlink(name)  # the memory itself is freed when the last mapping anywhere goes away
    if fd >= 0:
        os.close(fd)
    # A numpy view still alive here keeps the mapping: mmap refuses to close under exported
    # buffers, and the pages are unmapped when the last view is collected. Unlinking above did
    # not wait for that, so nothing leaks either way.
    with contextlib.suppress(BufferError):
        mm.close()


def _release_portable(shm: Any, owner_pid: int | None) -> None:  # pragma: no cover - not Linux
    with contextlib.suppress(BufferError):
        shm.close()
    if owner_pid is not None and owner_pid == os.getpid():
        shm.unlink()


# -- the attachment cache ----------------------------------------------------------------------------------
# A warm worker receives the same array in task after task. Mapping it afresh each time costs a
# page fault per 4 KiB page on first touch, and an unmap at the end: for 40 MB, more than the sum
# itself (benchmarks/shared.py). So a process keeps the arrays it attached mapped, and reuses a
# mapping while the name still refers to the same segment (same inode). A mapping whose segment
# the owner has removed is dropped at the next attach, or within a second by a reaper thread, so
# a closed array's memory is not pinned by idle workers. Values are not cached: each keeps a
# descriptor of its own, because flock tells holders apart by open file description.
_cache: dict[tuple[str, bool], _Segment] = {}
_cache_lock = threading.Lock()
_CACHE_MAX = 32  # mappings; the least recently used goes first
_REAP_EVERY = 1.0  # seconds
_reaper: list[threading.Thread] = []


def _segment_alive(seg: _Segment) -> bool:
    try:
        return os.stat(os.path.join(_SHM_DIR, seg.name)).st_ino == seg.ino
    except OSError:
        return False


def _attach_cached(name: str, writable: bool) -> _Segment:
    """A mapping of segment ``name`` for a SharedArray in a non-owner process, reused when possible."""
    if not _RAW_SHM:  # pragma: no cover - not Linux
        return _Segment.attach(name, writable=writable)
    key = (name, writable)
    with _cache_lock:
        seg = _cache.pop(key, None)
        if seg is not None and not _segment_alive(seg):
            seg.close()
            seg = None
        if seg is None:
            _sweep_cache()  # a miss: a new array, maybe because older ones were closed
            seg = _Segment.attach(name, writable=writable)
        _cache[key] = seg  # (re)inserted last: the most recently used
        while len(_cache) > _CACHE_MAX:
            _cache.pop(next(iter(_cache))).close()
        if not _reaper or not _reaper[0].is_alive():
            _reaper[:] = [threading.Thread(target=_reap_cache, name="taskloom-shm-reaper", daemon=True)]
            _reaper[0].start()
    return seg


def _sweep_cache() -> None:
    """Drop the cached mappings of segments their owner removed (called under ``_cache_lock``)."""
    for key, seg in list(_cache.items()):
        if not _segment_alive(seg):
            del _cache[key]
            seg.close()


def _reap_cache() -> None:
    """Sweep the cache every second; ends when the cache is empty."""
    while True:
        time.sleep(_REAP_EVERY)
        with _cache_lock:
            _sweep_cache()
            if not _cache:
                _reaper.clear()
                return


def _reset_cache_in_child() -> None:
    # The reaper thread does not exist in a forked child, and the lock may have been held.
    global _cache_lock
    _cache_lock = threading.Lock()
    _reaper.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_cache_in_child)


def reap(pid: int) -> list[str]:
    """Unlink the segments that process ``pid`` created and left behind; returns their names.

    For the process pool to call when it notices that a worker died: a segment belongs to the
    process that created it, so a worker's segments outlive it otherwise (until the whole process
    tree ends and the resource tracker cleans up). Linux only; elsewhere it returns ``[]``.
    """
    if not _RAW_SHM:  # pragma: no cover - not Linux
        return []
    prefix = f"{_PREFIX}{pid}_"
    try:
        names = [n for n in os.listdir(_SHM_DIR) if n.startswith(prefix)]
    except OSError:  # pragma: no cover - /dev/shm unreadable
        return []
    for name in names:
        _unlink(name)
    return names


_S = TypeVar("_S", bound="_Closeable")


class _Closeable:
    """``with`` support shared by the public classes: the block closes the object."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- SharedArray ---------------------------------------------------------------------------------------
class SharedArray(_Closeable):
    """A numpy array in shared memory, passed to process workers without copying.

    Make one with ``from_numpy()`` (copies the data in once) or ``zeros()``. It pickles as
    ``(name, shape, dtype)``, so a process worker, even one of a warm pool that was already running,
    maps the same memory. ``np.asarray(arr)`` and ``arr.array`` are zero-copy views; indexing
    works as on the array, and slice assignment when it is writable. Threads and the sequential
    engine receive the very same object.

    The process that made it owns the segment and removes it when the ``with`` block ends, on
    ``close()``, when the object is garbage-collected, at exit, and (through multiprocessing's
    resource tracker) when that process is killed. Keep it open until the work using it is done.

    Example::

        with tl.SharedArray.from_numpy(big) as arr:               # block_sum(arr, lo, hi)
            sums = tl.starmap(block_sum, [(arr, lo, lo + 1000) for lo in range(0, len(arr), 1000)],
                              mode="processes")

        with tl.SharedArray.zeros((8, 1_000), "float64") as out:   # fill_row(out, i) writes row i
            tl.starmap(fill_row, [(out, i) for i in range(8)], mode="processes")
            total = np.asarray(out).sum()

    Attributes:
        name: the segment's name (``multiprocessing.shared_memory.SharedMemory(name=...)`` can open it).
        shape: the array's shape.
        dtype: the array's numpy dtype.
        writable: whether views of it may be written to.
    """

    __slots__ = ("_segment", "_view", "dtype", "name", "shape", "writable")

    _segment: _Segment
    _view: np.ndarray[Any, Any]
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    writable: bool

    def __init__(self) -> None:
        raise TypeError("make a SharedArray with SharedArray.from_numpy(array) or SharedArray.zeros(shape, dtype)")

    @classmethod
    def _wrap(cls, segment: _Segment, shape: tuple[int, ...], dtype: np.dtype[Any], writable: bool) -> SharedArray:
        np_ = _numpy()
        self = object.__new__(cls)
        self._segment = segment
        self.name = segment.name
        self.shape = shape
        self.dtype = dtype
        self.writable = writable
        count = 1
        for n in shape:
            count *= n
        view = np_.frombuffer(segment.mm, dtype=dtype, count=count).reshape(shape)
        if not writable:
            view.flags.writeable = False
        self._view = view
        return self

    @classmethod
    def zeros(cls, shape: int | tuple[int, ...], dtype: npt.DTypeLike = float, *, writable: bool = True) -> SharedArray:
        """A new zero-filled shared array, writable by default (for workers to fill).

        Args:
            shape: an int or a tuple of ints.
            dtype: anything ``numpy.dtype`` accepts, except object dtypes.
            writable: whether views may be written to (in this process and in workers).

        Raises:
            ImportError: numpy is not installed (``pip install 'taskloom[shared]'``).
            ValueError: a negative dimension, or a dtype that holds Python objects.
        """
        np_ = _numpy()
        dt = _shareable_dtype(np_.dtype(dtype))
        shp = _shape(shape)
        nbytes = dt.itemsize
        for n in shp:
            nbytes *= n
        # A new segment is zero-filled by the kernel (ftruncate of a fresh tmpfs file).
        return cls._wrap(_Segment.create(nbytes), shp, dt, writable)

    @classmethod
    def from_numpy(cls, array: npt.ArrayLike, *, writable: bool = False) -> SharedArray:
        """A shared copy of ``array``, read-only by default (shared to be read).

        The data is copied in once, here; from then on no worker copies it.

        Args:
            array: a numpy array (or anything ``numpy.asarray`` accepts), not of object dtype.
            writable: whether views may be written to (in this process and in workers).

        Raises:
            ImportError: numpy is not installed (``pip install 'taskloom[shared]'``).
            ValueError: the array holds Python objects (object dtype cannot be shared).
        """
        np_ = _numpy()
        src = np_.asarray(array)
        dt = _shareable_dtype(src.dtype)
        shared = cls._wrap(_Segment.create(src.nbytes), tuple(src.shape), dt, True)
        shared._view[...] = src
        if not writable:
            shared.writable = False
            shared._view.flags.writeable = False
        return shared

    # -- the array ------------------------------------------------------------------------------------
    @property
    def array(self) -> np.ndarray[Any, Any]:
        """The data as a numpy array: a view of the shared memory, never a copy.

        Raises:
            ValueError: the SharedArray was closed.
        """
        view: np.ndarray[Any, Any] | None = getattr(self, "_view", None)
        if view is None:
            raise ValueError(f"SharedArray {self.name!r} is closed")
        return view

    @property
    def nbytes(self) -> int:
        """The size of the data in bytes."""
        return int(self.dtype.itemsize) * _product(self.shape)

    @property
    def ndim(self) -> int:
        """The number of dimensions, as ``numpy.ndarray.ndim``."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of elements, as ``numpy.ndarray.size``."""
        return _product(self.shape)

    @property
    def closed(self) -> bool:
        """True once this object was closed (in the owner: once the segment was removed)."""
        return getattr(self, "_view", None) is None or (self._segment.owner and self._segment.closed)

    @property
    def owner(self) -> bool:
        """True in the process that created the segment (the one that removes it)."""
        return self._segment.owner

    def __array__(self, dtype: npt.DTypeLike | None = None, copy: bool | None = None) -> np.ndarray[Any, Any]:
        view = self.array
        if dtype is not None and _numpy().dtype(dtype) != view.dtype:
            if copy is False:
                raise ValueError(f"cannot view SharedArray of {view.dtype} as {dtype} without a copy")
            return view.astype(dtype)
        return view.copy() if copy else view

    def __getitem__(self, key: Any) -> Any:
        return self.array[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        view = self.array
        if not view.flags.writeable:
            raise ValueError(
                f"SharedArray {self.name!r} is read-only: make it with writable=True "
                "(SharedArray.from_numpy(data, writable=True) or SharedArray.zeros(...))"
            )
        view[key] = value

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d SharedArray")
        return int(self.shape[0])

    def __iter__(self) -> Iterator[Any]:
        return iter(self.array)

    # -- life cycle -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop using the shared memory; in the owner, remove the segment too. Idempotent.

        Views taken earlier (``np.asarray(arr)``) stay valid until they are dropped: the memory
        is released when the last one goes, but the segment's name is removed now.
        """
        with contextlib.suppress(AttributeError):
            del self._view
        if self._segment.owner:
            self._segment.close()
        # An attachment's mapping belongs to the process's cache (reused by the next task that
        # receives the same array), which drops it once the owner has removed the segment.

    def __reduce__(self) -> tuple[Callable[..., SharedArray], tuple[Any, ...]]:
        if self.closed:
            raise ValueError(f"SharedArray {self.name!r} is closed and cannot be sent to another process")
        return (_attach_array, (self.name, self.shape, self.dtype, self.writable))

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("writable" if self.writable else "read-only")
        role = "owner" if self.owner else "attached"
        return f"<taskloom.SharedArray {self.name!r} shape={self.shape} dtype={self.dtype} {state}, {role}>"


def _attach_array(name: str, shape: tuple[int, ...], dtype: np.dtype[Any], writable: bool) -> SharedArray:
    """Unpickling: map the owner's segment in this process (a worker), without copying."""
    return SharedArray._wrap(_attach_cached(name, writable), shape, dtype, writable)


def _shape(shape: int | tuple[int, ...]) -> tuple[int, ...]:
    shp = (int(shape),) if isinstance(shape, int) else tuple(int(n) for n in shape)
    if any(n < 0 for n in shp):
        raise ValueError(f"shape must not have negative dimensions, got {shape!r}")
    return shp


def _product(shape: tuple[int, ...]) -> int:
    count = 1
    for n in shape:
        count *= n
    return count


def _shareable_dtype(dt: np.dtype[Any]) -> np.dtype[Any]:
    if dt.hasobject:
        raise ValueError(
            f"dtype {dt} holds Python objects, which cannot live in shared memory: use a numeric, "
            "bytes or fixed-width string dtype, or send the objects as ordinary arguments"
        )
    return dt


# -- Value and Counter ---------------------------------------------------------------------------------
#: dtype spellings -> struct format (native alignment is irrelevant: one field at offset 0).
_FORMATS: dict[str, str] = {
    "int8": "b", "int16": "h", "int32": "i", "int64": "q",
    "uint8": "B", "uint16": "H", "uint32": "I", "uint64": "Q",
    "float32": "f", "float64": "d", "bool": "?",
    "i1": "b", "i2": "h", "i4": "i", "i8": "q", "u1": "B", "u2": "H", "u4": "I", "u8": "Q",
    "f4": "f", "f8": "d", "b1": "?",
    "int": "q", "float": "d", "double": "d", "bool_": "?",
    # multiprocessing.Value / array-module typecodes, for familiarity
    "b": "b", "h": "h", "i": "i", "l": "q", "q": "q", "B": "B", "H": "H", "I": "I", "L": "Q", "Q": "Q",
    "f": "f", "d": "d", "?": "?",
}

_T = TypeVar("_T", int, float, bool)


def _format_of(dtype: object) -> str:
    if dtype is int:
        return "q"
    if dtype is float:
        return "d"
    if dtype is bool:
        return "?"
    if isinstance(dtype, str):
        key = dtype
    elif isinstance(dtype, type):  # numpy scalar types (np.int64), without importing numpy here
        key = dtype.__name__
    else:  # numpy dtype objects
        key = str(getattr(dtype, "name", ""))
    fmt = _FORMATS.get(key.lstrip("<=|").lower() if len(key) > 1 else key)
    if fmt is None:
        raise ValueError(
            f"Value dtype must be an integer, float or bool type (int, float, 'int64', 'f8', 'i'...), got {dtype!r}"
        )
    return fmt


#: Bumped in the child after every fork: a Value notices it and re-opens its descriptor (a forked
#: child shares the parent's open file description, and flock would treat the two as one holder).
_forks = 0


def _after_fork_in_child() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

_GET, _SET, _ADD, _UPDATE = range(4)


class Value(_Closeable, Generic[_T]):
    """One number shared by threads and processes, with atomic updates.

    It pickles as the name of its segment, so it can be passed to process workers (even ones
    already running) as an ordinary argument, unlike ``multiprocessing.Value``, whose lock can
    only be inherited by a process as it starts. Every operation holds a lock that excludes other
    threads *and* other processes (``fcntl.flock``, which the kernel releases if a holder dies), so ``add`` is a real
    read-modify-write. Create it in the parent: the creating process removes the segment on
    ``close()``, at the end of a ``with`` block, on garbage collection, at exit, or when it dies.
    Once closed, reading or updating it raises ``ValueError``.

    Example::

        total = tl.Value("float64", 0.0)
        tl.starmap(partial_sum, [(total, chunk) for chunk in chunks], mode="processes")
        print(total.get())

    Args:
        dtype: ``int``, ``float``, ``bool``, a numpy dtype or name (``"int64"``, ``"f8"``...), or a
            ``multiprocessing.Value`` typecode (``"i"``, ``"d"``...).
        initial: the starting value.

    Raises:
        ValueError: an unsupported dtype.
    """

    __slots__ = ("__weakref__", "_depth", "_fd", "_fmt", "_forks", "_mm", "_rlock", "_segment", "_struct", "name")

    _depth: int
    _fd: int
    _fmt: str
    _forks: int
    _mm: mmap.mmap | None
    _rlock: threading.RLock
    _segment: _Segment
    _struct: struct.Struct
    name: str

    def __init__(self, dtype: object, initial: _T) -> None:
        fmt = _format_of(dtype)
        self._setup(_Segment.create(struct.calcsize(fmt), keep_fd=True), fmt)
        self._run(_SET, initial)

    def _setup(self, segment: _Segment, fmt: str) -> None:
        self._segment = segment
        self.name = segment.name
        self._fmt = fmt
        self._struct = struct.Struct(fmt)
        self._mm = segment.mm
        self._fd = segment.fd if fcntl is not None else -1
        # Threads of one process share the descriptor, so flock alone would let them all in: the
        # RLock excludes them, the flock excludes other processes. Reentrant, so that the function
        # given to update() may read the value.
        self._rlock = threading.RLock()
        self._depth = 0
        self._forks = _forks

    def _run(self, op: int, arg: Any) -> Any:
        """Do one operation under the thread lock and the cross-process lock."""
        if self._mm is None:
            raise ValueError(f"{type(self).__name__} {self.name!r} is closed")
        if self._forks != _forks:
            self._after_fork()
        with self._rlock:
            # Read again under the lock: close() clears it under the lock, then closes the descriptor
            # and the mapping outside it. Read before, a thread that then waited for the lock
            # used both after close() (flock on a closed, or reused, descriptor: seen on 3.13t).
            mm = self._mm
            if mm is None:
                raise ValueError(f"{type(self).__name__} {self.name!r} is closed")
            depth = self._depth
            self._depth = depth + 1
            try:
                outer = depth == 0 and self._fd >= 0
                if outer:
                    fcntl.flock(self._fd, fcntl.LOCK_EX)
                try:
                    if op == _GET:
                        return self._struct.unpack_from(mm, 0)[0]
                    if op == _SET:
                        self._struct.pack_into(mm, 0, arg)
                        return None
                    old = self._struct.unpack_from(mm, 0)[0]
                    new = old + arg if op == _ADD else arg(old)
                    self._struct.pack_into(mm, 0, new)
                    return new
                finally:
                    if outer:
                        fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                self._depth = depth

    def _after_fork(self) -> None:
        # A new descriptor (a new open file description, so flock tells parent and child apart),
        # and a new RLock: the old one may be held by a thread that does not exist in this child.
        self._forks = _forks
        self._rlock = threading.RLock()
        self._depth = 0
        if self._fd >= 0:
            self._fd = os.open(os.path.join(_SHM_DIR, self.name), os.O_RDWR | os.O_CLOEXEC)
            weakref.finalize(self, os.close, self._fd)

    def get(self) -> _T:
        """The current value."""
        value: _T = self._run(_GET, None)
        return value

    def set(self, value: _T) -> None:
        """Replace the value.

        Raises:
            struct.error: the value does not fit the dtype.
        """
        self._run(_SET, value)

    def add(self, n: _T) -> _T:
        """Add ``n`` atomically; returns the new value.

        Raises:
            struct.error: the result does not fit the dtype (integers do not wrap around silently).
        """
        new: _T = self._run(_ADD, n)
        return new

    def update(self, fn: Callable[[_T], _T]) -> _T:
        """Replace the value by ``fn(value)`` atomically; returns the new value.

        ``fn`` runs under the lock, so keep it short; it may read this value, not other shared objects.
        """
        new: _T = self._run(_UPDATE, fn)
        return new

    @property
    def value(self) -> _T:
        """The current value, as ``multiprocessing.Value`` spells it (same as ``get()``)."""
        return self.get()

    @value.setter
    def value(self, value: _T) -> None:
        self.set(value)

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called on this object; it can no longer be read or sent."""
        return self._mm is None

    def close(self) -> None:
        """Stop using it; in the creating process, remove the segment too. Idempotent."""
        with self._rlock:  # not under a running operation of another thread
            self._mm = None
        self._segment.close()

    def __reduce__(self) -> tuple[Callable[..., Value[Any]], tuple[Any, ...]]:
        if self.closed:
            raise ValueError(f"{type(self).__name__} {self.name!r} is closed and cannot be sent to another process")
        if fcntl is None or not _RAW_SHM:  # pragma: no cover - not Linux
            raise TypeError(
                f"taskloom.{type(self).__name__} is shared across processes on Linux only; "
                "on this platform use it across threads"
            )
        return (_attach_value, (type(self), self.name, self._fmt))

    def __repr__(self) -> str:
        shown = "closed" if self.closed else repr(self.get())
        return f"<taskloom.{type(self).__name__} {self.name!r} {shown}>"


class Counter(Value[int]):
    """An integer counter shared by threads and processes: ``add()`` is atomic everywhere.

    The guide's "counter that is not 200000" cannot happen with it, whether the increments come
    from threads or from process workers.

    Example::

        hits = tl.Counter()
        tl.starmap(count_hits, [(hits, page) for page in pages], mode="processes")  # hits.add() in each
        print(hits.get())

    Args:
        initial: the starting value (a 64-bit signed integer).
    """

    __slots__ = ()

    def __init__(self, initial: int = 0) -> None:
        super().__init__("int64", initial)

    def add(self, n: int = 1) -> int:
        """Add ``n`` (default 1) atomically; returns the new value."""
        new: int = self._run(_ADD, n)
        return new


def _attach_value(cls: type[Value[Any]], name: str, fmt: str) -> Value[Any]:
    """Unpickling: open the owner's segment in this process, with a descriptor of its own for flock."""
    self = object.__new__(cls)
    self._setup(_Segment.attach(name, writable=True, keep_fd=True), fmt)
    return self
