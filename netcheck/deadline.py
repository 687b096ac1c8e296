"""One monotonic deadline, passed down the call chain.

Every probe computes its own timeouts from the deadline it is given, so the
whole check finishes within one overall budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    """An absolute point on the monotonic clock."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())

    def step(self, cap: float) -> float:
        """The smaller of ``cap`` and what is left."""
        return min(cap, self.remaining())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def sooner(self, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now, but never later than this one."""
        return Deadline(min(self.at, time.monotonic() + seconds))
