"""Timers and in-flight limits that follow the round trips this check has measured so far.

Fixed seconds are wrong at one round trip or another: dnspython's 2 s DNS retry
makes one lost packet the slowest thing in a check, a 250 ms Happy Eyeballs
delay fires before a 200 ms path could answer, and fixed in-flight limits
serialise the work on a long path. So a check keeps two round-trip estimates
(RFC 6298's smoothed RTT and its variation), one for DNS answers and one for
TCP connects, fed by the probes as they measure:

* :func:`retransmit_after` turns an estimate into a timer: the DNS probe asks
  again after it, and a connect starts a second attempt (the same address, or
  the other family for Happy Eyeballs) after it, the first answer winning.
* :class:`Limiter` is a semaphore whose limit follows the network: once per
  round trip :func:`next_limit` grows it while round trips stay flat and backs
  it off on loss (retransmissions, timeouts: more than a tenth of the round
  trip's questions, :func:`lossy`) or when round trips grow (queues filling).
  The DNS limit starts at its ceiling, which the policy sets well below what a
  home router's DNS forwarder accepts (dnsmasq refuses beyond 150 forwarded
  queries in flight); it only backs off and regrows.

The decisions are pure functions; :class:`Pace` holds one check's state. The
runner makes a check's :class:`Pace` current for every probe it runs
(:func:`use`); a probe run alone gets a fresh one, i.e. the initial timers.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: RFC 6298 gains (alpha = 1/8, beta = 1/4) and variance factor K = 4.
_ALPHA, _BETA, _K = 0.125, 0.25, 4.0
#: Clock granularity G (RFC 6298): timers are never tighter than this above the SRTT.
CLOCK_G_S = 0.01

#: Before any answer: Windows' first DNS retry (dnspython waits 2 s, glibc 5 s).
DNS_RETRY_INITIAL_S = 1.0
#: Never ask again sooner than this (a resolver answering from its cache is not a reason to hammer it).
DNS_RETRY_FLOOR_S = 0.1
#: Before any connect: RFC 8305's recommended Connection Attempt Delay.
CONNECT_RETRY_INITIAL_S = 0.25
#: RFC 8305 section 5: at least 100 ms recommended, at most 2 s.
CONNECT_RETRY_FLOOR_S = 0.1
RETRY_CEILING_S = 2.0

#: Round trips count as flat while a round's median stays within this of the best round's.
FLAT_FACTOR = 1.25
FLAT_SLACK_S = 0.005
#: A round whose median is this far above the best round's means queues are filling.
QUEUE_FACTOR = 2.0
GROWTH = 2.0
#: A round trip whose losses exceed this share of its questions and connects backs off.
LOSS_TOLERANCE = 0.1
LOSS_BACKOFF = 0.7
QUEUE_BACKOFF = 0.85


@dataclass
class RttEstimate:
    """RFC 6298 smoothed round trip and variation, in seconds; None before the first sample."""

    srtt: float | None = None
    rttvar: float = 0.0
    samples: int = 0

    def observe(self, rtt_s: float) -> None:
        rtt_s = max(0.0, rtt_s)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt_s, rtt_s / 2
        else:
            self.rttvar = (1 - _BETA) * self.rttvar + _BETA * abs(self.srtt - rtt_s)
            self.srtt = (1 - _ALPHA) * self.srtt + _ALPHA * rtt_s
        self.samples += 1


def retransmit_after(estimate: RttEstimate, *, initial: float, floor: float,
                     ceiling: float = RETRY_CEILING_S) -> float:
    """Seconds to wait for an answer before asking again (or trying the next address).

    ``initial`` before any sample; then twice the smoothed round trip, or the
    round trip plus four times its variation (RFC 6298's RTO) when round trips
    vary more, between ``floor`` and ``ceiling``.
    """
    if estimate.srtt is None:
        return initial
    rto = max(2 * estimate.srtt, estimate.srtt + max(CLOCK_G_S, _K * estimate.rttvar))
    return min(ceiling, max(floor, rto))


def lossy(losses: int, answered: int) -> bool:
    """Whether a round trip lost enough to back off: more than :data:`LOSS_TOLERANCE` of what it asked.

    A home link's random loss (a packet in fifty) is not congestion and costs a retry, not
    the pace; queues overflowing lose many at once.
    """
    return losses > LOSS_TOLERANCE * (losses + answered)


def next_limit(limit: int, *, floor: int, ceiling: int, best_rtt: float | None,
               round_rtt: float | None, lost: bool) -> int:
    """The in-flight limit for the next round trip.

    ``round_rtt`` is the median round trip of the round just ended, ``best_rtt``
    the lowest such median so far, ``lost`` whether anything was lost in it.
    Loss backs off (x0.7); round trips grown to twice the best back off gently
    (x0.85, queues are filling); flat round trips grow the limit (x2, as slow start);
    anything between holds it.
    """
    if lost:
        new = int(limit * LOSS_BACKOFF)
    elif round_rtt is None or best_rtt is None:
        new = limit
    elif round_rtt <= best_rtt * FLAT_FACTOR + FLAT_SLACK_S:
        new = max(limit + 1, int(limit * GROWTH))
    elif round_rtt >= best_rtt * QUEUE_FACTOR:
        new = int(limit * QUEUE_BACKOFF)
    else:
        new = limit
    return min(ceiling, max(floor, new))


@dataclass
class Limiter:
    """A semaphore whose limit :func:`next_limit` moves once per round trip.

    A lower limit takes effect as work in flight finishes; nothing is cancelled.
    """

    limit: int
    floor: int
    ceiling: int
    estimate: RttEstimate = field(default_factory=RttEstimate)
    in_flight: int = 0
    best_rtt: float | None = None
    #: Every limit it has had, in order (for the benchmark and the tests).
    history: list[int] = field(default_factory=list)
    _waiters: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    _round: list[float] = field(default_factory=list)
    _round_start: float | None = None
    _losses: int = 0

    def __post_init__(self) -> None:
        self.floor = max(1, self.floor)
        self.ceiling = max(self.floor, self.ceiling)
        self.limit = min(self.ceiling, max(self.floor, self.limit))
        self.history.append(self.limit)

    async def __aenter__(self) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # woken and cancelled at once: pass the slot on
            else:
                self._waiters.remove(waiter)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def observe(self, rtt_s: float, now: float | None = None) -> None:
        """One round trip measured (seconds)."""
        now = time.monotonic() if now is None else now
        self.estimate.observe(rtt_s)
        self._round.append(rtt_s)
        self._round_passed(now)

    def lost(self, now: float | None = None) -> None:
        """Something went unanswered (a retransmission fired, an attempt timed out)."""
        self._losses += 1
        self._round_passed(time.monotonic() if now is None else now)

    def _round_passed(self, now: float) -> None:
        if self._round_start is None:
            self._round_start = now
        if now - self._round_start >= (self.estimate.srtt or 0.0):
            self._end_round(now)

    def _end_round(self, now: float) -> None:
        median = statistics.median(self._round) if self._round else None
        lost = lossy(self._losses, len(self._round))
        if median is not None and not lost:
            self.best_rtt = median if self.best_rtt is None else min(self.best_rtt, median)
        new = next_limit(self.limit, floor=self.floor, ceiling=self.ceiling, best_rtt=self.best_rtt,
                         round_rtt=median, lost=lost)
        if new != self.limit:
            self.limit = new
            self.history.append(new)
        self._round.clear()
        self._losses = 0
        self._round_start = now
        self._wake()


class Pace:
    """One check's round-trip estimates and in-flight limits, when its burst of probes is over, and the
    names its requests looked up."""

    def __init__(self, probes: int = 96, probes_ceiling: int = 96, dns: int = 40) -> None:
        self.probes = Limiter(probes, floor=min(probes, 8), ceiling=probes_ceiling)
        self.dns = Limiter(dns, floor=min(dns, 4), ceiling=dns)
        #: Set by the runner once the check's burst of probes (all but the media window) has finished, and
        #: the TCP probes it confirms with it: a measurement that wants the path without the check's own
        #: load waits for it.
        self.burst_over = asyncio.Event()
        #: Names the check's requests resolve through the OS, shared by them (:func:`netcheck.probes._http1.resolve`).
        self.lookups: dict[tuple[str, int], asyncio.Future[tuple[str, ...]]] = {}

    def dns_retry_s(self) -> float:
        return retransmit_after(self.dns.estimate, initial=DNS_RETRY_INITIAL_S, floor=DNS_RETRY_FLOOR_S)

    def connect_retry_s(self) -> float:
        """Happy Eyeballs' Connection Attempt Delay, and when to try the same address again."""
        return retransmit_after(self.probes.estimate, initial=CONNECT_RETRY_INITIAL_S, floor=CONNECT_RETRY_FLOOR_S)

    def dns_answered(self, rtt_s: float) -> None:
        self.dns.observe(rtt_s)

    def dns_lost(self) -> None:
        self.dns.lost()

    def connected(self, rtt_s: float) -> None:
        self.probes.observe(rtt_s)

    def connect_lost(self) -> None:
        self.probes.lost()


_CURRENT: contextvars.ContextVar[Pace] = contextvars.ContextVar("netcheck_pace")


def current() -> Pace:
    """The running check's :class:`Pace`; a fresh one (initial timers) outside a check."""
    pace = _CURRENT.get(None)
    return pace if pace is not None else Pace()


@contextmanager
def use(pace: Pace) -> Iterator[Pace]:
    """Make ``pace`` current for this context (tasks created inside inherit it)."""
    token = _CURRENT.set(pace)
    try:
        yield pace
    finally:
        _CURRENT.reset(token)
