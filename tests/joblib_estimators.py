"""scikit-learn estimators for tests/test_joblib_backend.py, importable by worker processes.

They wrap a ``DecisionTreeClassifier(random_state=0)``, so their scores are deterministic and equal
on every backend; each misbehaves in one way, and only when told to.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.tree import DecisionTreeClassifier

from tests.helpers import write_marker


class _Tree(ClassifierMixin, BaseEstimator):
    """A deterministic tree classifier; subclasses misbehave in ``_before_fit``."""

    def _before_fit(self) -> None:
        pass

    def fit(self, X: Any, y: Any) -> _Tree:
        self._before_fit()
        self.tree_ = DecisionTreeClassifier(max_depth=self.max_depth, random_state=0).fit(X, y)
        self.classes_ = self.tree_.classes_
        return self

    def predict(self, X: Any) -> Any:
        return self.tree_.predict(X)


class CrashOnceTree(_Tree):
    """The first fit anywhere (no ``marker`` file yet) SIGKILLs its own worker; later fits work."""

    def __init__(self, marker: str = "", max_depth: int | None = None) -> None:
        self.marker = marker
        self.max_depth = max_depth

    def _before_fit(self) -> None:
        if self.marker and not os.path.exists(self.marker):
            write_marker(self.marker)
            os.kill(os.getpid(), signal.SIGKILL)


class CrashingTree(_Tree):
    """Every fit with ``crash=True`` SIGKILLs its worker."""

    def __init__(self, crash: bool = False, max_depth: int | None = None) -> None:
        self.crash = crash
        self.max_depth = max_depth

    def _before_fit(self) -> None:
        if self.crash:
            os.kill(os.getpid(), signal.SIGKILL)


class HangingTree(_Tree):
    """A fit with ``hang=True`` never returns; each fit first writes ``started_dir/{hang|fit}-<pid>-...``
    holding its pid."""

    def __init__(self, hang: bool = False, started_dir: str = "", max_depth: int | None = None) -> None:
        self.hang = hang
        self.started_dir = started_dir
        self.max_depth = max_depth

    def _before_fit(self) -> None:
        if self.started_dir:
            name = f"{'hang' if self.hang else 'fit'}-{os.getpid()}-{threading.get_ident()}-{id(self)}"
            write_marker(Path(self.started_dir, name))
        if self.hang:
            threading.Event().wait()
