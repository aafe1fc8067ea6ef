#!/usr/bin/env python3
"""Find CPython's own ``test_concurrent_futures`` for this interpreter; fetch it when it is missing.

    python scripts/fetch_cpython_tests.py     # print the path of the file (fetching it if needed)

``tests/test_cpython_futures.py`` runs that file's tests against ``taskloom.Executor`` and calls
``ensure()`` when it is collected, so ``make test`` needs no extra step. Where the file comes from,
first hit wins:

1. the interpreter's own ``Lib/test`` (``test.test_concurrent_futures``; many builds leave it out);
2. the cache, ``.cache/cpython-tests/<X.Y>/test_concurrent_futures.py`` (git-ignored);
3. Debian's ``libpython<X.Y>-testsuite`` package: ``apt-get download`` (after one ``apt-get update``
   when the package lists are empty) and ``dpkg-deb -x`` into a temporary folder: nothing is
   installed. Only that one file is kept, with ``SOURCE.txt`` naming the package it came from.

Anything else is an error that says what was tried: the suite must never be skipped silently.
Only the single-file layout of the suite (Python 3.11 and before) is supported; from 3.12 on
CPython splits it into a package, which ``FetchError`` reports.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "cpython-tests"
FILENAME = "test_concurrent_futures.py"
#: the module name under which the cached copy is imported (``tests/_cpython`` adds the cache
#: folder to its package path, so worker processes import it by that name too)
CACHED_MODULE = "tests._cpython.test_concurrent_futures"
OWN_MODULE = "test.test_concurrent_futures"


class FetchError(RuntimeError):
    """CPython's test_concurrent_futures could not be found nor fetched for this interpreter."""


def version_tag(version: tuple[int, int] | None = None) -> str:
    major, minor = version or sys.version_info[:2]
    return f"{major}.{minor}"


def cache_dir(version: tuple[int, int] | None = None) -> Path:
    """Where the fetched file for this Python version lives."""
    return CACHE / version_tag(version)


def own_file() -> Path | None:
    """The interpreter's own ``Lib/test/test_concurrent_futures.py``, if it has one.

    Raises:
        FetchError: it has the suite, but as a package (Python 3.12 and later).
    """
    try:
        spec = importlib.util.find_spec(OWN_MODULE)
    except ImportError:  # no ``test`` package at all
        return None
    if spec is None or spec.origin is None:
        return None
    if spec.submodule_search_locations is not None:
        raise FetchError(
            f"this interpreter's {OWN_MODULE} is a package ({spec.origin}); only the single-file suite of "
            "Python 3.11 and before is supported by tests/test_cpython_futures.py"
        )
    return Path(spec.origin)


def locate() -> tuple[str, Path] | None:
    """(module name, file) of a copy already here, without fetching anything."""
    own = own_file()
    if own is not None:
        return OWN_MODULE, own
    cached = cache_dir() / FILENAME
    if cached.is_file():
        return CACHED_MODULE, cached
    return None


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def fetch_from_debian(version: tuple[int, int] | None = None) -> Path:
    """Download Debian's test-suite package, keep only ``test_concurrent_futures.py`` in the cache."""
    tag = version_tag(version)
    package = f"libpython{tag}-testsuite"
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise FetchError(f"cannot fetch {package}: `{tool}` is not on PATH (not a Debian-like system?)")
    dest = cache_dir(version)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cpython-tests-", dir=dest) as tmp:
        work = Path(tmp)
        got = _run(["apt-get", "download", package], work)
        if got.returncode != 0:
            # A fresh machine has no package lists yet: fetch them once, then try again.
            update = _run(["apt-get", "update"], work)
            got = _run(["apt-get", "download", package], work)
            if got.returncode != 0:
                raise FetchError(
                    f"`apt-get download {package}` failed (exit {got.returncode}): {got.stderr.strip()[-800:]}\n"
                    f"`apt-get update` said (exit {update.returncode}): {update.stderr.strip()[-800:]}"
                )
        debs = sorted(work.glob("*.deb"))
        if not debs:
            raise FetchError(f"`apt-get download {package}` left no .deb file in {work}")
        unpacked = work / "x"
        got = _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], work)
        if got.returncode != 0:
            raise FetchError(f"`dpkg-deb -x {debs[0].name}` failed (exit {got.returncode}): {got.stderr.strip()}")
        source = unpacked / "usr" / "lib" / f"python{tag}" / "test" / FILENAME
        if not source.is_file():
            raise FetchError(f"{debs[0].name} has no usr/lib/python{tag}/test/{FILENAME}")
        # Into place atomically: a concurrent run sees the whole file or none.
        staged = work / FILENAME
        shutil.copyfile(source, staged)
        (work / "SOURCE.txt").write_text(f"{debs[0].name}\n", encoding="utf-8")
        os.replace(work / "SOURCE.txt", dest / "SOURCE.txt")
        os.replace(staged, dest / FILENAME)
    return dest / FILENAME


def ensure() -> tuple[str, Path]:
    """(module name, file) of CPython's test_concurrent_futures for this interpreter, fetched if needed.

    Raises:
        FetchError: it is not here and could not be fetched; the message says why.
    """
    found = locate()
    if found is not None:
        return found
    fetch_from_debian()
    return CACHED_MODULE, cache_dir() / FILENAME


def main() -> int:
    try:
        module, path = ensure()
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path}  (imported as {module})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
