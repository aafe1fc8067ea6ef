"""taskloom: run Python work concurrently through one API that measures the work and picks the engine.

Example::

    import taskloom as tl

    squares = tl.map(square, range(10_000))                      # mode="auto" measures and picks
    pages = tl.map(fetch, urls, mode="threads", workers=64)
    for outcome in tl.imap(risky, items, on_error="collect", retries=2, timeout=5.0):
        print(outcome.index, outcome.value if outcome.ok else outcome.error)

The public API is listed once, in ``__init__.pyi`` (which type checkers read): this module reads
its import lines and imports each name on first use (as ``concurrent.futures`` does), so
``import taskloom`` is cheap and a worker process imports only what it runs.
"""

import importlib as _importlib
import os as _os
import warnings as _warnings

__version__ = "0.1.0"


def _read_exports() -> dict[str, str]:
    """public name -> the module that defines it, from the ``from M import N as N`` lines of the stub."""
    exports: dict[str, str] = {}
    with open(_os.path.join(_os.path.dirname(__file__), "__init__.pyi"), encoding="utf-8") as stub:
        for line in stub:
            if line.startswith("from ") and " import " in line:
                module, _, names = line[5:].strip().partition(" import ")
                name, _, alias = names.partition(" as ")
                if name == alias and module != ".":  # submodules (testing) load on their own
                    exports[name] = module
    return exports


_EXPORTS = _read_exports()
__all__ = tuple(_EXPORTS)

_RENAMED = {"StageError": "StageFailure"}  # old name -> new name, for one release


def __getattr__(name: str) -> object:
    """Import a public name on first use, and keep it (later lookups are plain attributes)."""
    if name == "testing":
        return _importlib.import_module(".testing", __name__)
    if name in _RENAMED:
        _warnings.warn(f"taskloom.{name} was renamed taskloom.{_RENAMED[name]} (it is a record of a failed "
                       "item, not an exception)", DeprecationWarning, stacklevel=2)
        return __getattr__(_RENAMED[name])
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taskloom' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    if getattr(value, "__module__", "").startswith("taskloom."):
        value.__module__ = "taskloom"  # tracebacks and reprs read taskloom.Executor
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
