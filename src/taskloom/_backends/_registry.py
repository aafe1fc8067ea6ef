"""Where engines join taskloom's shutdown: hooks run by ``taskloom.shutdown()`` and at exit.

A backend module registers what must happen when every pool stops (close the Dask clients it
opened, stop the fork server) when it is imported; so ``shutdown()`` knows no engine by name, and
an engine never imported costs nothing. Three phases, each in registration order:

* ``before_exit``: at interpreter exit only, while every pool still runs (an ``Executor``
  finishes the work already submitted, as the stdlib's does);
* ``after_pools``: after the warm pools were closed (``shutdown()`` and exit);
* ``at_exit_last``: at interpreter exit only, after everything else (thread tasks still running
  get a grace period to finish a write).

This module sits at the bottom: it imports nothing of taskloom.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

Phase = Literal["before_exit", "after_pools", "at_exit_last"]

_lock = threading.Lock()
_hooks: dict[Phase, list[Callable[[], None]]] = {"before_exit": [], "after_pools": [], "at_exit_last": []}


def join(phase: Phase, hook: Callable[[], None]) -> None:
    """Run ``hook`` in ``phase`` (once per hook, however often a module is imported)."""
    with _lock:
        if hook not in _hooks[phase]:
            _hooks[phase].append(hook)


def run(phase: Phase) -> None:
    """Call the hooks of ``phase``; one that raises does not stop the others."""
    with _lock:
        hooks = list(_hooks[phase])
    errors: list[BaseException] = []
    for hook in hooks:
        try:
            hook()
        except Exception as exc:  # pragma: no cover - a hook is written not to raise
            errors.append(exc)
    if errors:  # pragma: no cover
        raise errors[0]
