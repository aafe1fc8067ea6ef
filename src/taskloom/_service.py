"""``taskloom.background``: the guide's daemon thread, done right.

A daemon thread dies wherever it is when the interpreter exits - in the middle of a write - and an
exception in it is printed and forgotten. A ``Service`` runs ``fn`` on an ordinary (non-daemon)
thread, is told to stop *before* the interpreter starts tearing down (the same hook
``concurrent.futures`` uses to stop its workers), lets ``fn`` finish what it is doing, and keeps
the exception to re-raise it from ``stop()`` and ``join()``.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

from ._system import EXIT_GRACE

__all__ = ["Service", "background"]

log = logging.getLogger("taskloom")

Restart = Literal["never", "on-failure"]



class Service:
    """A function running in the background; see ``taskloom.background``.

    It runs on a thread of its own (an ordinary thread when it can be told to stop: ``fn`` takes
    ``stop`` or runs at an ``interval``; otherwise a daemon thread given 10 s at interpreter exit).
    Leaving a ``with`` block calls ``stop()``.

    Attributes:
        name: the thread's name.
        restarts: how many times it was restarted after a failure.
    """

    def __init__(self, fn: Callable[..., Any], *, interval: float | None, name: str | None,
                 restart: Restart, max_restarts: int) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        if interval is not None and (isinstance(interval, bool) or not isinstance(interval, int | float)
                                     or interval < 0):
            raise ValueError(f"interval must be a number of seconds >= 0 or None, got {interval!r}")
        if restart not in ("never", "on-failure"):
            raise ValueError(f"restart must be 'never' or 'on-failure', got {restart!r}")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"max_restarts must be an integer >= 0, got {max_restarts!r}")
        self._fn = fn
        self._interval = interval
        self._restart = restart
        self._max_restarts = max_restarts
        self._wants_stop = _takes_stop(fn)
        self._stop = threading.Event()
        self._exception: BaseException | None = None
        self.restarts = 0
        self.name = name or f"taskloom-service-{getattr(fn, '__name__', 'fn')}"
        # It can be stopped when it takes `stop` or runs at an interval: then it is an ordinary
        # thread, joined at exit. A one-shot fn without `stop` cannot be told to stop: it gets
        # EXIT_GRACE seconds at exit and is a daemon thread, so it can never hang the exit.
        self._stoppable = self._wants_stop or interval is not None
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=not self._stoppable)
        self._thread.start()
        _register_exit_hook(self)

    # -- control -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the function is running or waiting for its next interval."""
        return self._thread.is_alive()

    @property
    def exception(self) -> BaseException | None:
        """The exception that ended the service (the last one, after restarts), or None."""
        return self._exception

    @property
    def stopping(self) -> threading.Event:
        """The event ``stop()`` sets; ``fn(stop=...)`` receives the same one."""
        return self._stop

    def stop(self, timeout: float | None = None) -> None:
        """Ask it to stop (no new run starts; ``fn(stop=...)`` sees the event), then ``join``.

        A run in progress is not interrupted: it finishes first.

        Args:
            timeout: seconds to wait for it to end; None (the default) waits as long as it takes.

        Raises:
            TimeoutError: it did not stop within ``timeout`` seconds.
            Exception: the exception that ended the service, if one did.
        """
        self._stop.set()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait until it ends (without asking it to stop); re-raise the exception that ended it, if any.

        Args:
            timeout: seconds to wait; None (the default) waits as long as it takes.

        Raises:
            TimeoutError: it is still running after ``timeout`` seconds.
            Exception: the exception that ended the service, if one did.
        """
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"service {self.name!r} did not stop within {timeout} s")
        if self._exception is not None:
            raise self._exception

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else ("failed" if self._exception else "stopped")
        return f"<taskloom.Service {self.name!r} {state}, restarts={self.restarts}>"

    # -- the thread ------------------------------------------------------------------------------
    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                if self._wants_stop:
                    self._fn(stop=self._stop)
                else:
                    self._fn()
            except BaseException as exc:  # kept for stop()/join(), never lost
                self._exception = exc
                log.error("taskloom: background service %r raised", self.name, exc_info=exc)
                if self._restart == "on-failure" and self.restarts < self._max_restarts:
                    self.restarts += 1
                    log.warning("taskloom: restarting %r (%d of %d)", self.name, self.restarts, self._max_restarts)
                    # A pause before the restart: a function that fails at once must not spin.
                    if self._stop.wait(min(1.0, 0.05 * 2 ** (self.restarts - 1))):
                        return
                    continue
                return
            self._exception = None  # a run that succeeded after a restart clears the failure
            if self._interval is None or self._stop.wait(self._interval):
                return


def _takes_stop(fn: Callable[..., Any]) -> bool:
    try:
        return "stop" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


_services: list[Service] = []
_services_lock = threading.Lock()
_hook_registered = False


def _register_exit_hook(service: Service) -> None:
    global _hook_registered
    with _services_lock:
        _services.append(service)
        if _hook_registered:
            return
        _hook_registered = True
    register = getattr(threading, "_register_atexit", None)
    try:
        # Runs when the main thread ends, before non-daemon threads are joined and before the
        # interpreter tears down: services still have their modules and their files.
        if register is not None:
            register(_stop_all)
            return
    except RuntimeError:  # pragma: no cover - already shutting down
        pass
    atexit.register(_stop_all)  # pragma: no cover - Python without the private hook


def _stop_all() -> None:
    with _services_lock:
        services = list(_services)
        _services.clear()
    for service in services:
        service._stop.set()
    for service in services:
        service._thread.join(None if service._stoppable else EXIT_GRACE)


def background(fn: Callable[..., Any], *, interval: float | None = None, name: str | None = None,
               restart: Restart = "never", max_restarts: int = 3) -> Service:
    """Run ``fn`` in the background now, and stop it cleanly later.

    It runs ``fn`` once, or again ``interval`` seconds after each run ends. A long-running ``fn``
    may take a ``stop`` argument (a ``threading.Event``) and return when it is set. The service
    stops on ``.stop()``, on leaving a ``with`` block, and at interpreter exit - before the
    interpreter tears down, so a write in progress completes (unlike a ``daemon=True`` thread).
    Its exceptions are logged on the ``taskloom`` logger and re-raised by ``stop()``/``join()``.

    Args:
        fn: the function; called with ``stop=`` when it has a parameter of that name.
        interval: seconds between the end of one run and the start of the next; None: run once.
        name: the thread's name (default: from the function).
        restart: ``"on-failure"`` restarts it after an exception, up to ``max_restarts`` times.
        max_restarts: restarts allowed with ``restart="on-failure"`` (default 3).

    Returns:
        The running ``Service``.

    Raises:
        TypeError, ValueError: a bad argument (``fn`` not callable, a negative ``interval``...).

    Example::

        svc = taskloom.background(poll_queue, interval=1.0)
        ...
        svc.stop()          # waits for the current poll to finish; raises if a poll failed
    """
    return Service(fn, interval=interval, name=name, restart=restart, max_restarts=max_restarts)
