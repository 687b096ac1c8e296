"""When the agent acts: the check schedule and the upload backoff.

Pure: the clock and the random source are passed in, so tests replay an hour in
microseconds and a fixed seed gives a fixed schedule.

- A scheduled check runs every ``interval_s`` plus a random ``0..jitter_s``, so a
  fleet that boots at 9:00 does not check (and upload) in the same second.
- A failed upload waits with exponential backoff and *full* jitter: attempt ``n``
  waits ``uniform(0, min(cap, base * 2**n))`` (never less than ``floor_s``). A
  ``Retry-After`` from the collector replaces that wait: it is honoured, plus up
  to 10 % so that agents told the same thing do not all come back at once.
- Full jitter can draw many short waits in a row, so a budget caps the attempts
  in any sliding hour (20 by default): when the budget is spent, the next attempt
  waits until the oldest one leaves the window. That makes "at most 20 attempts an
  hour against a failing collector" a guarantee, not a likelihood.
"""

from __future__ import annotations

import email.utils
import random
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from netcheck.errors import ConfigError

#: what a collector's policy may set (a bad policy must not make agents hammer it)
POLICY_MIN_INTERVAL_S = 60.0
POLICY_MAX_INTERVAL_S = 7 * 86400.0
#: a Retry-After longer than this is treated as this (a typo must not silence a laptop for a year)
RETRY_AFTER_MAX_S = 3600.0


@dataclass(frozen=True)
class Schedule:
    """How often the agent checks on its own."""

    interval_s: float = 3600.0
    jitter_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ConfigError(f"check interval {self.interval_s!r} s must be positive")
        if not self.jitter_s >= 0:
            raise ConfigError(f"check jitter {self.jitter_s!r} s must not be negative")

    def first_delay(self, rng: random.Random) -> float:
        """Seconds from agent start to its first check: spread over the jitter window."""
        return rng.uniform(0.0, min(self.jitter_s, self.interval_s))

    def next_delay(self, rng: random.Random) -> float:
        """Seconds from one scheduled check to the next."""
        return self.interval_s + rng.uniform(0.0, self.jitter_s)

    def from_policy(self, interval_s: object, jitter_s: object) -> Schedule:
        """This schedule with the collector's values, clamped to sane bounds; bad values are ignored."""
        out = self
        if isinstance(interval_s, int | float) and not isinstance(interval_s, bool) and interval_s > 0:
            out = replace(out, interval_s=min(max(float(interval_s), POLICY_MIN_INTERVAL_S),
                                              POLICY_MAX_INTERVAL_S))
        if isinstance(jitter_s, int | float) and not isinstance(jitter_s, bool) and jitter_s >= 0:
            out = replace(out, jitter_s=min(float(jitter_s), out.interval_s))
        return out


@dataclass
class Backoff:
    """Exponential backoff with full jitter, capped; mutable: one per retrying activity."""

    base_s: float = 30.0
    cap_s: float = 900.0
    floor_s: float = 1.0
    retry_after_max_s: float = RETRY_AFTER_MAX_S
    #: at most this many attempts in any ``window_s`` (0: no budget)
    budget: int = 20
    window_s: float = 3600.0
    attempt: int = 0
    _failures: deque[float] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ConfigError(f"backoff base {self.base_s} s must be positive and at most the cap {self.cap_s} s")
        if self.budget < 0:
            raise ConfigError("backoff budget must be 0 (none) or positive")

    def ceiling(self) -> float:
        """The largest wait the next failure can draw."""
        return min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 60))

    def next_delay(self, rng: random.Random, now: float, retry_after_s: float | None = None) -> float:
        """Seconds to wait after an attempt that failed at ``now`` (a monotonic time), and count it."""
        ceiling = self.ceiling()
        self.attempt += 1
        if retry_after_s is not None:
            honoured = min(max(retry_after_s, 0.0), self.retry_after_max_s)
            delay = max(self.floor_s, honoured * rng.uniform(1.0, 1.1))
        else:
            delay = max(self.floor_s, rng.uniform(0.0, ceiling))
        if self.budget:
            self._failures.append(now)
            while len(self._failures) > self.budget:
                self._failures.popleft()
            if len(self._failures) == self.budget:
                # one more attempt before the oldest leaves the window would exceed the budget
                delay = max(delay, self._failures[0] + self.window_s - now)
        return delay

    def reset(self) -> None:
        """After a success: the next failure starts from the base again."""
        self.attempt = 0
        self._failures.clear()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MAX_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return min(max(0.0, (when - current).total_seconds()), RETRY_AFTER_MAX_S)
