"""What a run gives back: one ``Outcome`` per item (statistics live in ``_stats``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._errors import TaskError

__all__ = ["Outcome"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """How one item ended: its value, or the error that stopped it.

    Attributes:
        index: position of the item in the input.
        item: the item itself.
        value: what the function returned (None when it failed).
        error: a ``TaskError`` (or subclass) when it failed, else None.
        attempts: how many times it ran.
        duration: seconds the last attempt ran, measured where it ran.
    """

    index: int
    item: Any
    value: T | None
    error: TaskError | None
    attempts: int
    duration: float

    @property
    def ok(self) -> bool:
        """True when the task returned a value."""
        return self.error is None

    def result(self) -> T:
        """The value, or raise the error (with the original exception as its cause)."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]
