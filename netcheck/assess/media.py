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

Loss and the other two figures come from one window but not from the same requests. Round
trip and jitter are judged on the requests sent at Teams' audio packet stride (``stride_ms`` in
``policy.toml``, 20 ms), so jitter keeps the meaning it has for a call. Loss is a count, and a
count near Microsoft's 1 % mark needs hundreds of requests to settle: none lost of 50 happens one
time in five on a link that loses 3 %. So the window sends several requests per stride
(:func:`sample_plan`, derived from the mark and the confidence), counts loss over all of them, and
keeps the round trips of every ``every``-th. A sample that shows loss neither under the mark nor at
or above it (:func:`loss_unshown`) hedges the status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netcheck.models import Detail, DetailValue, MediaStats

if TYPE_CHECKING:
    from netcheck.policy import Policy


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


def thresholds_of(policy: Policy) -> MediaThresholds:
    """The pass marks ``policy.toml`` ``[teams_media]`` gives."""
    return MediaThresholds(policy.media_rtt_ms, policy.media_loss_pct, policy.media_jitter_ms)


def loss_shown(sent: int, received: int, thresholds: MediaThresholds) -> bool:
    """Does the sample show loss of ``loss_pct`` or more? Yes when a link that loses exactly ``loss_pct``
    would lose this many packets or more less often than ``1 - loss_confidence`` (the exact binomial test;
    equivalently, the one-sided Clopper-Pearson lower bound is at or above the mark). One lost of 10 (10 %)
    does not show 1 %: a 1 % link loses one or more of 10 one time in ten."""
    lost, p = sent - received, thresholds.loss_pct / 100
    if lost <= 0 or p >= 1:
        return False
    return 1 - sum(_binomial(sent, k, p) for k in range(lost)) < 1 - thresholds.loss_confidence


def _binomial(sent: int, k: int, p: float) -> float:
    """The chance of losing exactly ``k`` of ``sent`` at rate ``p`` (in logs: ``sent`` may be thousands)."""
    return math.exp(math.lgamma(sent + 1) - math.lgamma(k + 1) - math.lgamma(sent - k + 1)
                    + k * math.log(p) + (sent - k) * math.log1p(-p))


def loss_under_shown(sent: int, received: int, thresholds: MediaThresholds) -> bool:
    """Does the sample show loss under ``loss_pct``? Yes when a link that loses exactly ``loss_pct`` would
    lose this few packets or fewer less often than ``1 - loss_confidence`` (the exact binomial test, the
    other tail of :func:`loss_shown`). None lost of 50 does not show it (a 1 % link does that 6 times in
    10); none of 299 does (:func:`clean_sample_size`)."""
    lost, p = sent - received, thresholds.loss_pct / 100
    if sent <= 0 or lost < 0:
        return False
    if p >= 1:
        return lost < sent
    return sum(_binomial(sent, k, p) for k in range(lost + 1)) < 1 - thresholds.loss_confidence


def clean_sample_size(thresholds: MediaThresholds) -> int:
    """The fewest requests that, none of them lost, show loss under the mark: the smallest ``n`` with
    ``(1 - loss_pct/100) ** n < 1 - loss_confidence`` (299 for 1 % at 95 %)."""
    p = thresholds.loss_pct / 100
    if p >= 1:
        return 1
    n = max(1, math.ceil(math.log(1 - thresholds.loss_confidence) / math.log1p(-p)))
    while not loss_under_shown(n, n, thresholds):  # the float's edge: exact at the boundary
        n += 1
    while n > 1 and loss_under_shown(n - 1, n - 1, thresholds):
        n -= 1
    return n


#: Requests planned beyond :func:`clean_sample_size`: the sender skips the slots a stall overran (it
#: does not burst to catch up), and a loaded laptop stalls it now and then.
_SPARE = 1.25
#: The fastest pace: a stricter mark (or a shorter window) than one request a millisecond can settle is
#: hedged, not flooded at the relay (a 0.01 % mark would otherwise plan 37,000 requests a second).
_FASTEST_S = 0.001


def sample_plan(thresholds: MediaThresholds, window_s: float, stride_s: float) -> tuple[float, int]:
    """``(interval_s, every)`` for one window: a request every ``interval_s``, a whole number ``every`` of
    them per Teams packet stride, enough in ``window_s`` that a clean link shows loss under the mark with a
    quarter to spare (1 s at 20 ms, 1 %, 95 %: 2.5 ms, every 8th; 10 s: 20 ms, every one), and never
    faster than one a millisecond (what that cannot settle is hedged)."""
    if window_s <= 0 or stride_s <= 0:
        raise ValueError("the media window and stride must be positive")
    strides = max(1.0, window_s / stride_s)
    every = max(1, math.ceil(clean_sample_size(thresholds) * _SPARE / strides))
    every = min(every, max(1, math.floor(stride_s / _FASTEST_S)))
    return stride_s / every, every


def loss_unshown(stats: MediaStats, thresholds: MediaThresholds) -> str | None:
    """When the window shows loss neither under the mark nor at or above it (too few sent, or too few lost
    to tell): the sentence that says the media status rests on round trip and jitter and may be degraded;
    None when the sample settles it, or nothing answered."""
    loss = stats.loss_pct
    if stats.received == 0 or loss is None or loss_shown(stats.sent, stats.received, thresholds) \
            or loss_under_shown(stats.sent, stats.received, thresholds):
        return None
    mark, sure = f"{thresholds.loss_pct:g} %", f"{thresholds.loss_confidence:.0%} confidence"
    lost = stats.sent - stats.received
    if loss >= thresholds.loss_pct:
        told = f"too few sent to show loss of {mark} or more at {sure}"
    else:
        told = (f"too few to show loss under {mark} at {sure} (none lost of "
                f"{clean_sample_size(thresholds)} would)")
    return (f"{lost} of {stats.sent} packets lost ({loss:.1f} %): {told}, so the call quality is judged on "
            "round trip and jitter")


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
    # Since the window sends several requests per stride, samples_ms holds the round trips at the stride
    # only (fewer than received); older reports hold one per answer. Both rebuild the same way.
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


def queues_seen(stats: MediaStats, thresholds: MediaThresholds) -> bool:
    """Did the window's round trips (at the stride) spread over more than the jitter mark above their floor?
    Queues were filling somewhere on the path while it ran, and the check's own burst of probes is one
    thing that fills them (a userspace VPN client, a home router): what the window saw may be the check's
    own doing. A flat window (a long path, a lossy line with steady delay) shows the path as it is."""
    samples = sorted(stats.samples_ms)
    if len(samples) < 2:
        return False
    high = samples[min(len(samples) - 1, math.ceil(0.9 * len(samples)) - 1)]  # 90th: one late answer is not a queue
    return high - samples[0] > thresholds.jitter_ms


#: Requests lost one after another that make a drop-out (:func:`dropout_seen`): a line that loses 10 % at
#: random (ten times Microsoft's mark) shows such a run in about 4 of 100 windows of 400 requests.
DROPOUT_RUN = 4


def dropout_seen(detail: Detail) -> bool:
    """Did the window lose a run of ``DROPOUT_RUN`` or more requests sent one after another (the probe's
    ``dropout_lost``)? For that time nothing got through: a busy laptop's VPN client or home router dropping
    what the check's own burst of probes queued, a Wi-Fi drop-out. A lossy line loses here and there."""
    return _dropout(detail.get("dropout_lost"))


def _dropout(run: object) -> bool:
    """Is ``run`` (a count of requests lost one after another) a drop-out (``DROPOUT_RUN`` or more)?"""
    return isinstance(run, int) and not isinstance(run, bool) and run >= DROPOUT_RUN


def needs_quiet_window(detail: Detail, thresholds: MediaThresholds) -> bool:
    """Should a window that ran beside the check's other probes be taken again once they are done? Only when
    it would make the media status degraded and what it saw may be the burst's doing: its round trips show
    queues (:func:`queues_seen`) or it lost a run of requests (:func:`dropout_seen`). A clean window, a flat
    one that loses here and there (a lossy line) and a silent one are kept as they are, at no cost."""
    stats = stats_from_detail(detail)
    if stats is None or stats.received == 0:
        return False
    good, _ = assess_media(stats, thresholds)
    return not good and (queues_seen(stats, thresholds) or dropout_seen(detail))


#: The first window's figures kept beside the quiet window's (:func:`with_quiet_window`), as ``loaded_<key>``.
_LOADED_KEYS = ("rtt_ms", "jitter_ms", "loss_pct", "sent", "received", "samples_ms", "dropout_lost", "dropout_ms")


def with_quiet_window(first: Detail, quiet: Detail) -> dict[str, DetailValue]:
    """The detail of a media result whose window was taken again after the check's other probes: the quiet
    window's figures, which the status follows, and the first window's as ``loaded_*`` (taken while the
    check's own probes ran), so the report keeps both."""
    merged: dict[str, DetailValue] = dict(quiet)
    merged.update({f"loaded_{k}": first.get(k) for k in _LOADED_KEYS})
    merged["quiet_window"] = True
    return merged


def unconfirmed_note(detail: Detail) -> str | None:
    """The sentence that says a window that wanted taking again after the check's own probes
    (:func:`needs_quiet_window`) could not be, the deadline leaving no room: what it saw may be theirs, so
    it does not settle the status; None otherwise."""
    if detail.get("quiet_window") is not False:
        return None
    return ("measured while this check's own probes were running, and what the window saw (queues, or requests "
            "lost in a row) may be their doing; the deadline left no room to measure again once they were done, "
            "so whether calls are impaired now is not settled (netcheck check --thorough measures for longer)")


def loaded_note(detail: Detail) -> str | None:
    """The sentence that says a media status rests on a window taken again after the check's own probes, with
    the first window's figures; None when there was one window."""
    if detail.get("quiet_window") is not True:
        return None
    sent, received = detail.get("loaded_sent"), detail.get("loaded_received")
    rtt, loss = detail.get("loaded_rtt_ms"), detail.get("loaded_loss_pct")
    figures = []
    if isinstance(rtt, int | float) and not isinstance(rtt, bool):
        figures.append(f"round trip {rtt:.0f} ms")
    if isinstance(loss, int | float) and not isinstance(loss, bool):
        figures.append(f"loss {loss:.1f} % ({sent} sent, {received} answered)")
    if _dropout(detail.get("loaded_dropout_lost")):
        span = detail.get("loaded_dropout_ms")
        during = f" ({span:.0f} ms)" if isinstance(span, int | float) and not isinstance(span, bool) else ""
        figures.append(f"{detail.get('loaded_dropout_lost')} requests in a row unanswered{during}")
    return ("measured again after the check's other probes had finished: the first window, taken while they "
            f"ran, showed {', '.join(figures) or 'queues'}")
