"""Home of CPython's ``test_concurrent_futures`` when the interpreter has none of its own.

``scripts/fetch_cpython_tests.py`` keeps the file in ``.cache/cpython-tests/<X.Y>/`` (git-ignored);
this package adds that folder to its path, so the file imports as
``tests._cpython.test_concurrent_futures`` in the test process and, by the same name, in every
worker process that unpickles one of its functions (``mul``, ``init``, ...).
"""

from __future__ import annotations

import sys
from pathlib import Path

__path__.append(str(Path(__file__).resolve().parents[2] / ".cache" / "cpython-tests"
                    / f"{sys.version_info[0]}.{sys.version_info[1]}"))
