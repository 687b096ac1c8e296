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
from dataclasses import dataclass

from netcheck.models import Detail, MediaStats


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
