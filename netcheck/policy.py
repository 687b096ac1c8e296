"""Readiness rules and thresholds, read from ``endpoints/policy.toml``.

A collector may later push overrides; they go through ``Policy.with_overrides``
so there is one place that checks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from netcheck.catalog import data_dir
from netcheck.errors import ConfigError
from netcheck.files import load_user_toml


@dataclass(frozen=True)
class Policy:
    deadline_s: float = 30.0
    concurrency: int = 96
    dns_concurrency: int = 40
    tcp_samples: int = 3
    tcp_samples_thorough: int = 10
    whoami_name: str | None = None
    exchange_score_points: tuple[tuple[float, float], ...] = (
        (10, 100), (25, 80), (100, 60), (200, 40), (300, 20), (350, 0))
    exchange_degraded_below: int = 60
    slow_latency_ms: float = 100.0
    slow_dns_ms: float = 150.0
    media_rtt_ms: float = 100.0
    media_loss_pct: float = 1.0
    media_jitter_ms: float = 30.0
    media_window_s: float = 1.0
    media_window_s_thorough: float = 10.0

    def with_overrides(self, overrides: Mapping[str, Any]) -> Policy:
        known = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ConfigError(f"unknown policy setting(s): {', '.join(unknown)}")
        return replace(self, **dict(overrides))


def _flatten(doc: Mapping[str, Any]) -> dict[str, Any]:
    check = doc.get("check", {})
    score = doc.get("exchange_score", {})
    media = doc.get("teams_media", {})
    out: dict[str, Any] = {
        "deadline_s": float(check.get("deadline_s", 30.0)),
        "concurrency": int(check.get("concurrency", 96)),
        "dns_concurrency": int(check.get("dns_concurrency", 40)),
        "tcp_samples": int(check.get("tcp_samples", 3)),
        "tcp_samples_thorough": int(check.get("tcp_samples_thorough", 10)),
        "whoami_name": check.get("whoami_name") or None,
        "slow_latency_ms": float(doc.get("latency", {}).get("slow_ms", 100.0)),
        "slow_dns_ms": float(doc.get("dns", {}).get("slow_ms", 150.0)),
        "media_rtt_ms": float(media.get("rtt_ms", 100.0)),
        "media_loss_pct": float(media.get("loss_pct", 1.0)),
        "media_jitter_ms": float(media.get("jitter_ms", 30.0)),
        "media_window_s": float(media.get("window_s", 1.0)),
        "media_window_s_thorough": float(media.get("window_s_thorough", 10.0)),
    }
    if "points" in score:
        out["exchange_score_points"] = tuple((float(a), float(b)) for a, b in score["points"])
    if "degraded_below" in score:
        out["exchange_degraded_below"] = int(score["degraded_below"])
    return out


def load_policy(path: Path | None = None) -> Policy:
    path = path or data_dir() / "policy.toml"
    doc = load_user_toml(path, limit=1_000_000, what="the policy")
    try:
        policy = Policy(**_flatten(doc))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot load the policy ({exc})") from exc
    if policy.deadline_s <= 0 or min(policy.concurrency, policy.dns_concurrency, policy.tcp_samples) < 1:
        raise ConfigError(f"{path}: deadline, concurrency, dns_concurrency and tcp_samples must be positive")
    return policy


def exchange_score(p50_ms: float, points: tuple[tuple[float, float], ...]) -> int:
    """The admin center's Exchange network score: piecewise linear in P50 TCP latency."""
    if p50_ms <= points[0][0]:
        return int(round(points[0][1]))
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if p50_ms <= x1:
            return int(round(y0 + (y1 - y0) * (p50_ms - x0) / (x1 - x0)))
    return int(round(points[-1][1]))
