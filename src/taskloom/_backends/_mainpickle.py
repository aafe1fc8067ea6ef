"""Pickling for workers that never import the caller's ``__main__``.

Functions and classes defined in ``__main__`` (a script, ``python -c``, stdin, a REPL or a
notebook) travel by value, with cloudpickle, so a worker needs neither the script nor a
``__main__`` guard in it. Modules the user imports still travel by reference.

One namespace per worker. cloudpickle gives each unpickled function a fresh globals dict, so a
global that ``Processes(initializer=...)`` sets (``global db; db = connect()``) would be invisible
to the task function that arrives later. Here every ``__main__`` function shares the worker's own
``__main__`` namespace, and the globals a function brings are merged into it with one rule: a name
the worker rebound itself (by an initializer or a task) keeps the worker's value; any other takes
the parent's value of this call. So an initializer's connection survives, and a setting the parent
changed between two maps arrives.
"""

from __future__ import annotations

import io
import pickle
import sys
from typing import Any

_MISSING = object()
#: worker side: the value each ``__main__`` global had when it was last merged (or at start-up)
_merged: dict[str, Any] = {}


def main_namespace() -> dict[str, Any]:
    """This process's ``__main__`` namespace: where ``__main__`` functions find their globals."""
    namespace: dict[str, Any] = sys.modules["__main__"].__dict__
    return namespace


def snapshot() -> None:
    """Worker start-up: what ``__main__`` holds now counts as merged (a forked copy of the parent)."""
    _merged.clear()
    _merged.update(main_namespace())


def merge(namespace: dict[str, Any], arrived: dict[str, Any]) -> None:
    """Merge a function's globals into the worker's namespace (see the module docstring)."""
    for name, value in arrived.items():
        if name not in namespace or namespace[name] is _merged.get(name, _MISSING):
            namespace[name] = value
            _merged[name] = value


class _MainGlobals(dict):  # type: ignore[type-arg]
    """Stands for the worker's ``__main__`` namespace inside a pickle."""

    def __reduce__(self) -> Any:
        return main_namespace, ()


def _setstate(func: Any, state: Any) -> None:
    """cloudpickle's function state setter, with ``merge`` instead of overwriting the globals."""
    from cloudpickle import cloudpickle as cp

    attrs, slots = state
    arrived = slots.get("__globals__")
    if arrived:
        merge(func.__globals__, arrived)
        slots = {**slots, "__globals__": {}}
    cp._function_setstate(func, (attrs, slots))


_pickler: Any = None


def _pickler_class() -> Any:
    global _pickler
    if _pickler is None:
        from cloudpickle import cloudpickle as cp

        class MainPickler(cp.Pickler):  # type: ignore[misc]
            """cloudpickle, with ``__main__`` functions sharing the worker's namespace."""

            def _function_getnewargs(self, func: Any) -> Any:
                args = super()._function_getnewargs(func)
                if func.__globals__ is not main_namespace():
                    return args
                code, base, *rest = args
                if not isinstance(base, _MainGlobals):
                    base = _MainGlobals(base)
                    self.globals_ref[id(func.__globals__)] = base
                return (code, base, *rest)

            def _dynamic_function_reduce(self, func: Any) -> Any:
                reduced = super()._dynamic_function_reduce(func)
                if (func.__globals__ is main_namespace() and len(reduced) == 6
                        and reduced[5] is cp._function_setstate):
                    return (*reduced[:5], _setstate)
                return reduced

        _pickler = MainPickler
    return _pickler


def dumps_by_value(obj: Any, *, multiprocessing_reducers: bool = False) -> bytes:
    """Pickle ``obj`` with ``__main__`` functions and classes by value (see the module docstring).

    ``multiprocessing_reducers``: also use the reducers multiprocessing registers for its own
    objects (a ``Connection`` pickles its file descriptor through ``DupFd``), for what travels to
    a new worker as ``initargs`` (a Queue of the same context, as ``ProcessPoolExecutor`` allows).
    """
    buffer = io.BytesIO()
    pickler = _mp_pickler_class() if multiprocessing_reducers else _pickler_class()
    pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


_mp_pickler: Any = None


def _mp_pickler_class() -> Any:
    """MainPickler with multiprocessing's reducers (the C pickler reads ``dispatch_table`` from
    the class when it is created, so they go on a subclass, not on an instance)."""
    global _mp_pickler
    if _mp_pickler is None:
        from collections import ChainMap
        from multiprocessing.reduction import ForkingPickler

        base = _pickler_class()
        extra: Any = ForkingPickler._extra_reducers  # type: ignore[attr-defined]
        _mp_pickler = type("MainPicklerWithMultiprocessing", (base,),
                           {"dispatch_table": ChainMap(extra, base.dispatch_table)})
    return _mp_pickler


def dumps(obj: Any) -> bytes:
    """Fast C pickle when nothing in ``obj`` refers to ``__main__``; by value when something does.

    A reference to ``__main__.Box`` would not resolve in a worker, which has no copy of the
    script. Ordinary data pays one scan of the pickled bytes for ``b"__main__"`` (next to
    nothing); only when that hits are the opcodes read (``refers_to_main``), so a *string*
    "__main__" in the data (scikit-learn carries the caller's warning filters, and Python's
    default ones name ``__main__``; a dict key; a bytes blob that is itself a pickle) does not
    send the object to the slower pickler.
    """
    try:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return dumps_by_value(obj)  # lambdas, closures, local classes: cloudpickle's job
    if b"__main__" in data and refers_to_main(data):
        return dumps_by_value(obj)
    return data


class _FoundMain(Exception):
    """Raised by ``_Scan.find_class`` at the first global of ``__main__``."""


class _StubType(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:  # REDUCE, INST, OBJ: what a call builds
        return cls

    def __setitem__(cls, key: Any, value: Any) -> None:  # SETITEM(S) on what a call built
        pass


class _Stub(metaclass=_StubType):
    """What every global, and everything built from one, is while ``refers_to_main`` reads a
    pickle: one class that takes whatever the pickle does with it and does nothing. A class,
    not an instance, because a pickle may call what a call returned (cloudpickle's
    ``_builtin_type("CodeType")(...)``, a bound method) or ``NEWOBJ`` it, which needs a type."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # NEWOBJ, NEWOBJ_EX
        return cls

    @staticmethod
    def __setstate__(*args: Any) -> None:  # BUILD
        pass

    @staticmethod
    def append(*args: Any) -> None:  # APPEND(S)
        pass

    @staticmethod
    def extend(*args: Any) -> None:
        pass

    @staticmethod
    def add(*args: Any) -> None:  # ADDITEMS
        pass


class _Scan(pickle.Unpickler):
    """The C unpickler, with every global replaced by ``_Stub``, nothing imported or run."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "__main__":
            raise _FoundMain
        return _Stub


def refers_to_main(data: bytes) -> bool:
    """Whether unpickling ``data`` would look up a global of the ``__main__`` module.

    That is a ``GLOBAL`` (or ``INST``) opcode whose module is ``__main__``, a ``STACK_GLOBAL``
    whose module operand is the string "__main__" (pushed there, or fetched from the memo by
    ``BINGET``/``LONG_BINGET``/``GET`` after an earlier ``MEMOIZE``/``BINPUT``), or an ``EXT``
    code registered for ``__main__``; in any protocol. The walk over the opcodes is the C
    unpickler's own, so its stack and memo are exactly the unpickler's, with every global a
    ``_Stub``: nothing is imported or called. A string "__main__" is only a string.

    Cost: about that of unpickling the data without its globals. For objects pickled through
    Python reducers (a scikit-learn task) that is a fraction of pickling them by value; for
    millions of plain ints, floats or strings it is 2-3x what pickling them took (the old byte
    scan re-pickled them by value instead, at about the C pickler's speed). A walk in Python
    (``pickletools.genops``) costs several times more in both cases. Bytes blobs (numpy arrays)
    are copied once more, for a moment.

    Data it cannot read that way (not a pickle, persistent ids, out-of-band buffers) counts as
    referring to ``__main__``: the caller then takes the by-value path, which is never wrong.
    """
    try:
        _Scan(io.BytesIO(data), encoding="latin1").load()
    except Exception:  # _FoundMain, or what the scan cannot read
        return True
    return False
