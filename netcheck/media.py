"""Teams media statistics and pass marks: pure functions, no network.

The STUN probe (``netcheck/probes/stun.py``) collects round-trip samples; this
module turns them into the figures Microsoft's connectivity test reports
(median RTT, jitter, loss) and judges them against thresholds that come from
``endpoints/policy.toml`` ``[teams_media]`` (never from code).

Jitter follows RFC 3550 section 6.4.1: ``J += (|D(i-1, i)| - J) / 16``, where
``D`` is the difference between the transit times of consecutive packets in
order of arrival. With STUN the transit time is the round trip, so ``D`` is the
difference between consecutive RTT samples. The estimator starts at 0, so a
short window slightly understates it (after n samples it has reached
``1 - (15/16)**n`` of a steady value: 96 % after 50).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from netcheck.models import Detail


@dataclass(frozen=True)
class MediaThresholds:
    """Pass marks: every figure must be strictly below its mark."""

    rtt_ms: float
    loss_pct: float
    jitter_ms: float

    def __post_init__(self) -> None:
        for name in ("rtt_ms", "loss_pct", "jitter_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise ValueError(f"teams_media {name} must be a positive number, not {value!r}")


@dataclass(frozen=True)
class MediaStats:
    """What one sampling window measured.

    ``samples_ms`` are round-trip times in order of arrival; ``sent`` counts the
    requests whose fate is known (answered, or unanswered for longer than the
    grace period).
    """

    sent: int
    received: int
    samples_ms: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.sent < 0 or self.received < 0 or self.received > self.sent:
            raise ValueError(f"impossible counts: sent {self.sent}, received {self.received}")
        if len(self.samples_ms) != self.received:
            raise ValueError(f"{self.received} answers but {len(self.samples_ms)} samples")

    @property
    def rtt_ms(self) -> float | None:
        return median_ms(self.samples_ms)

    @property
    def jitter_ms(self) -> float | None:
        return interarrival_jitter(self.samples_ms) if self.samples_ms else None

    @property
    def loss_pct(self) -> float | None:
        return loss_pct(self.sent, self.received)


def median_ms(samples: Sequence[float]) -> float | None:
    """The median, or None without samples."""
    return float(statistics.median(samples)) if samples else None


def interarrival_jitter(transits: Sequence[float]) -> float:
    """RFC 3550 interarrival jitter over transit times in order of arrival.

    Fewer than two samples give 0.0 (the estimator's starting value).
    """
    jitter = 0.0
    for previous, current in zip(transits, transits[1:], strict=False):
        jitter += (abs(current - previous) - jitter) / 16.0
    return jitter


def loss_pct(sent: int, received: int) -> float | None:
    """Percentage of requests never answered, or None when nothing was sent."""
    if sent <= 0:
        return None
    return 100.0 * (sent - received) / sent


def assess_media(stats: MediaStats, thresholds: MediaThresholds) -> tuple[bool, tuple[str, ...]]:
    """Judge one window against the pass marks: ``(passed, reasons it failed)``."""
    if stats.received == 0:
        return False, ("No STUN answers: no media path over UDP",)
    reasons: list[str] = []
    rtt, jitter, loss = stats.rtt_ms, stats.jitter_ms, stats.loss_pct
    if rtt is not None and rtt >= thresholds.rtt_ms:
        reasons.append(f"Round trip {rtt:.0f} ms is not under {thresholds.rtt_ms:g} ms")
    if loss is not None and loss >= thresholds.loss_pct:
        reasons.append(f"Packet loss {loss:.1f} % is not under {thresholds.loss_pct:g} % "
                       f"({stats.sent - stats.received} of {stats.sent} lost)")
    if jitter is not None and jitter >= thresholds.jitter_ms:
        reasons.append(f"Jitter {jitter:.0f} ms is not under {thresholds.jitter_ms:g} ms")
    return not reasons, tuple(reasons)


def stats_from_detail(detail: Detail) -> MediaStats | None:
    """Rebuild the statistics from a STUN ProbeResult's detail (None if absent or inconsistent)."""
    sent, received, samples = detail.get("sent"), detail.get("received"), detail.get("samples_ms")
    if not isinstance(sent, int) or isinstance(sent, bool) or not isinstance(received, int) \
            or isinstance(received, bool) or not isinstance(samples, list):
        return None
    values: list[float] = []
    for s in samples:
        if isinstance(s, bool) or not isinstance(s, (int, float)):
            return None
        values.append(float(s))
    try:
        return MediaStats(sent, received, tuple(values))
    except ValueError:
        return None
