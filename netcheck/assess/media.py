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
    #: How sure the sample must make us that loss is not under ``loss_pct`` (see :func:`loss_shown`): a
    #: statistical convention, not one of Microsoft's marks, so it is not in ``policy.toml``.
    loss_confidence: float = 0.95

    def __post_init__(self) -> None:
        for name in ("rtt_ms", "loss_pct", "jitter_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise ValueError(f"teams_media {name} must be a positive number, not {value!r}")
        c = self.loss_confidence
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.5 <= c < 1:
            raise ValueError(f"teams_media loss_confidence must be at least 0.5 and under 1, not {c!r}")


def loss_shown(sent: int, received: int, thresholds: MediaThresholds) -> bool:
    """Does the sample show loss of ``loss_pct`` or more? Yes when a link that loses exactly ``loss_pct``
    would lose this many packets or more less often than ``1 - loss_confidence`` (the exact binomial test;
    equivalently, the one-sided Clopper-Pearson lower bound is at or above the mark). One lost of 10 (10 %)
    does not show 1 %: a 1 % link loses one or more of 10 one time in ten."""
    lost, p = sent - received, thresholds.loss_pct / 100
    if lost <= 0 or p >= 1:
        return False

    def chance(k: int) -> float:  # of losing exactly k of sent at rate p (in logs: sent may be thousands)
        return math.exp(math.lgamma(sent + 1) - math.lgamma(k + 1) - math.lgamma(sent - k + 1)
                        + k * math.log(p) + (sent - k) * math.log1p(-p))

    return 1 - sum(chance(k) for k in range(lost)) < 1 - thresholds.loss_confidence


def loss_unshown(stats: MediaStats, thresholds: MediaThresholds) -> str | None:
    """When the window lost packets at or above the mark but too few were sent to show it: the sentence that
    says the media status rests on round trip and jitter; None otherwise."""
    loss = stats.loss_pct
    if stats.received == 0 or loss is None or loss < thresholds.loss_pct \
            or loss_shown(stats.sent, stats.received, thresholds):
        return None
    return (f"{stats.sent - stats.received} of {stats.sent} packets lost ({loss:.1f} %): too few sent to show "
            f"loss of {thresholds.loss_pct:g} % or more at {thresholds.loss_confidence:.0%} confidence, so the "
            "call quality is judged on round trip and jitter")


def assess_media(stats: MediaStats, thresholds: MediaThresholds) -> tuple[bool, tuple[str, ...]]:
    """Judge one window against the pass marks: ``(passed, reasons it failed)``. Loss counts only when the
    sample shows it (:func:`loss_shown`; :func:`loss_unshown` says when it did not)."""
    if stats.received == 0:
        return False, ("No STUN answers: no media path over UDP",)
    reasons: list[str] = []
    rtt, jitter, loss = stats.rtt_ms, stats.jitter_ms, stats.loss_pct
    if rtt is not None and rtt >= thresholds.rtt_ms:
        reasons.append(f"Round trip {rtt:.0f} ms is not under {thresholds.rtt_ms:g} ms")
    if loss is not None and loss >= thresholds.loss_pct and loss_shown(stats.sent, stats.received, thresholds):
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
