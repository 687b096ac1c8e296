"""The runner's wiring of a host's probes: DNS, then the rest at once; a front door's TLS and HTTPS
probes of one address go as a pair (one connection, :func:`netcheck.probes.http.probe_tls_and_https`)."""

from __future__ import annotations

import asyncio

import pytest

import netcheck.probes
import netcheck.probes.http
from netcheck.deadline import Deadline
from netcheck.m365.catalog import TargetPlan
from netcheck.models import Category, Outcome, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes import ProbeFn
from netcheck.runner import RunSettings, planned_count, run_plan

V4, V6 = "192.0.2.10", "2001:db8::10"


def plan(*hosts: tuple[str, Category, tuple[int, ...]]) -> TargetPlan:
    return TargetPlan(hosts=tuple(Target(h, category=c) for h, c, _ in hosts),
                      ports={h: p for h, _, p in hosts}, media=(), not_testable=(), skipped_optional=0)


def run(monkeypatch: pytest.MonkeyPatch, the_plan: TargetPlan, families: tuple[str, ...]
        ) -> tuple[list[ProbeResult], list[tuple[Target, Target]], list[ProbeResult]]:
    """``run_plan`` with stand-in probes: DNS answers V4 and V6; every other probe says OK."""
    pairs: list[tuple[Target, Target]] = []

    async def dns(target: Target, spec: ProbeSpec, deadline: Deadline) -> ProbeResult:
        return ProbeResult(ProbeKind.DNS, target, Outcome.OK, "resolved", detail={"ipv4": [V4], "ipv6": [V6]})

    def ok(kind: ProbeKind) -> ProbeFn:
        async def probe(target: Target, spec: ProbeSpec, deadline: Deadline) -> ProbeResult:
            return ProbeResult(kind, target, Outcome.OK, "ok")
        return probe

    async def pair(tls: Target, https: Target, spec: ProbeSpec, deadline: Deadline
                   ) -> tuple[ProbeResult, ProbeResult]:
        pairs.append((tls, https))
        return ProbeResult(ProbeKind.TLS, tls, Outcome.OK, "ok"), ProbeResult(ProbeKind.HTTP, https, Outcome.OK, "ok")

    monkeypatch.setattr(netcheck.probes, "PROBES", {ProbeKind.DNS: dns, ProbeKind.TCP: ok(ProbeKind.TCP),
                                                    ProbeKind.TLS: ok(ProbeKind.TLS),
                                                    ProbeKind.HTTP: ok(ProbeKind.HTTP)})
    monkeypatch.setattr(netcheck.probes.http, "probe_tls_and_https", pair)
    seen: list[ProbeResult] = []
    settings = RunSettings(families=families)
    results = asyncio.run(run_plan(the_plan, ProbeSpec(), Deadline.after(10), settings, seen.append))
    assert len(results) == planned_count(the_plan, settings)
    return results, pairs, seen


def kinds(results: list[ProbeResult]) -> list[tuple[str, str, int | None, str | None]]:
    return sorted((r.kind.value, r.target.host, r.target.port, r.target.address) for r in results)


def test_a_front_doors_tls_and_https_probes_of_one_address_go_as_a_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    results, pairs, seen = run(monkeypatch, plan(("fd.test", Category.OPTIMIZE, (80, 443))), ("ipv4",))
    assert [(t.address, t.port, h.address, h.port, h.scheme) for t, h in pairs] == [(V4, 443, V4, 443, "https")]
    assert kinds(results) == [("dns", "fd.test", None, None), ("http", "fd.test", 80, V4),
                              ("http", "fd.test", 443, V4), ("tcp", "fd.test", 443, V4), ("tls", "fd.test", 443, V4)]
    assert seen == results


def test_with_two_families_the_https_probes_address_is_paired_and_the_other_tls_probe_goes_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    results, pairs, _ = run(monkeypatch, plan(("fd.test", Category.ALLOW, (443,))), ("ipv4", "ipv6"))
    assert [(t.address, h.address) for t, h in pairs] == [(V6, V6)]  # HTTPS goes to the IPv6 address
    assert kinds(results) == [("dns", "fd.test", None, None), ("http", "fd.test", 443, V6),
                              ("tcp", "fd.test", 443, V4), ("tcp", "fd.test", 443, V6),
                              ("tls", "fd.test", 443, V4), ("tls", "fd.test", 443, V6)]


def test_default_endpoints_have_no_tls_probe_and_no_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    results, pairs, _ = run(monkeypatch, plan(("cdn.test", Category.DEFAULT, (80, 443))), ("ipv4",))
    assert pairs == []
    assert kinds(results) == [("dns", "cdn.test", None, None), ("http", "cdn.test", 80, V4),
                              ("http", "cdn.test", 443, V4)]
