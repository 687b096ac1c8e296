"""Check schedule and backoff: pure functions, replayed with fixed seeds."""

from __future__ import annotations

import bisect
import random
from datetime import UTC, datetime, timedelta

import pytest

from netcheck.agent.schedule import Backoff, Schedule, parse_retry_after
from netcheck.errors import ConfigError


def test_scheduled_checks_are_spread_by_jitter() -> None:
    s = Schedule(3600, 300)
    rng = random.Random(1)
    delays = [s.next_delay(rng) for _ in range(1000)]
    assert all(3600 <= d <= 3900 for d in delays)
    assert max(delays) - min(delays) > 250  # really spread, not constant
    firsts = [s.first_delay(rng) for _ in range(1000)]
    assert all(0 <= d <= 300 for d in firsts)


def test_policy_cannot_make_the_agent_hammer_the_collector() -> None:
    s = Schedule(3600, 300)
    assert s.from_policy(0.001, 0).interval_s == 60
    assert s.from_policy(0, 0).interval_s == 3600  # not positive: ignored
    assert s.from_policy(-5, -1) == s
    assert s.from_policy(True, 10).interval_s == 3600
    assert s.from_policy(7200, 99999).jitter_s == 7200
    assert s.from_policy("x", None) == s
    with pytest.raises(ConfigError):
        Schedule(0, 1)


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    b = Backoff(base_s=30, cap_s=900, budget=0)
    ceilings = []
    for _ in range(12):
        ceilings.append(b.ceiling())
        d = b.next_delay(rng, 0.0)
        assert 1.0 <= d <= ceilings[-1]
    assert ceilings[:6] == [30, 60, 120, 240, 480, 900]
    assert set(ceilings[5:]) == {900}
    # full jitter: draws cover the whole range below the ceiling
    draws = [Backoff(base_s=30, cap_s=900, attempt=10, budget=0).next_delay(rng, 0.0) for _ in range(2000)]
    assert min(draws) < 100 and max(draws) > 800


def test_at_most_20_attempts_in_any_hour_against_a_failing_collector() -> None:
    worst_seen = 0
    for seed in range(2000):
        rng = random.Random(seed)
        b = Backoff()
        t, attempts = 0.0, []
        while t < 3 * 3600:
            attempts.append(t)
            t += b.next_delay(rng, t)
        worst = max(bisect.bisect_left(attempts, a + 3600) - i for i, a in enumerate(attempts))
        worst_seen = max(worst_seen, worst)
    assert worst_seen <= 20


class _Unlucky(random.Random):
    """Every jitter draw is the smallest possible: the worst case for the collector."""

    def uniform(self, a: float, b: float) -> float:
        return a


def _attempts_in_first_hour(b: Backoff, rng: random.Random) -> int:
    t, n = 0.0, 0
    while t < 3600:
        n += 1
        t += b.next_delay(rng, t)
    return n


def test_the_attempt_budget_holds_even_when_every_jitter_draw_is_minimal() -> None:
    assert _attempts_in_first_hour(Backoff(budget=0), _Unlucky()) > 1000  # floor only: 1 s apart
    assert _attempts_in_first_hour(Backoff(), _Unlucky()) == 20
    # the cap (15 min) holds for every draw; only the budget can make a wait longer
    capped, rng = Backoff(budget=0), random.Random(5)
    assert all(capped.next_delay(rng, 0.0) <= 900 for _ in range(1000))


def test_retry_after_is_honoured_within_ten_percent() -> None:
    rng = random.Random(3)
    b = Backoff()
    for ra in (1.0, 30.0, 120.0, 600.0, 1800.0):
        d = b.next_delay(rng, 0.0, retry_after_s=ra)
        assert ra <= d <= ra * 1.1 or (ra < 1 and d == 1.0)


def test_reset_after_success_starts_from_the_base_again() -> None:
    b = Backoff()
    for _ in range(8):
        b.next_delay(random.Random(0), 0.0)
    b.reset()
    assert b.ceiling() == 30


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after(" 5 ") == 5
    assert parse_retry_after("99999999") == 3600
    http_date = (now + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(http_date, now) == pytest.approx(90)
    assert parse_retry_after("yesterday") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") is None
