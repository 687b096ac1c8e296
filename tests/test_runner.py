"""The runner's wiring of a host's probes: DNS, then the rest at once; a front door's TLS and HTTPS
probes of one address go as a pair (one connection, :func:`netcheck.probes.http.probe_tls_and_https`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

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


def test_the_tcp_probes_named_after_the_burst_are_measured_again_while_the_rest_is_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``to_confirm`` sees every result of the burst, after it; the TCP probes it names get their quiet samples, in
    place (no new results, no progress reported for them); the pace's ``burst_over`` is set after that."""
    import netcheck.probes.tcp
    from netcheck.probes import _pace

    seen_by_confirm: list[int] = []
    over: list[bool] = []

    async def tcp(target: Target, spec: ProbeSpec, deadline: Deadline) -> ProbeResult:
        return ProbeResult(ProbeKind.TCP, target, Outcome.OK, "tcp", {}, {"samples_ms": [150.0], "median_ms": 150.0})

    async def quiet_tcp(target: Target, spec: ProbeSpec, deadline: Deadline) -> ProbeResult:
        return ProbeResult(ProbeKind.TCP, target, Outcome.OK, "tcp", {}, {"samples_ms": [12.0], "median_ms": 12.0})

    def to_confirm(results: Sequence[ProbeResult]) -> list[Target]:
        seen_by_confirm.append(len(results))
        over.append(_pace.current().burst_over.is_set())
        return [r.target for r in results if r.kind is ProbeKind.TCP and r.target.host == "slow.example"]

    async def dns(target: Target, spec: ProbeSpec, deadline: Deadline) -> ProbeResult:
        return ProbeResult(ProbeKind.DNS, target, Outcome.OK, "resolved", detail={"ipv4": [V4]})

    async def ok(target: Target, spec: ProbeSpec, deadline: Deadline) -> ProbeResult:
        return ProbeResult(ProbeKind.HTTP, target, Outcome.OK, "ok")

    monkeypatch.setattr(netcheck.probes, "PROBES", {ProbeKind.DNS: dns, ProbeKind.TCP: tcp, ProbeKind.TLS: ok,
                                                    ProbeKind.HTTP: ok})
    monkeypatch.setattr(netcheck.probes.tcp, "probe_tcp", quiet_tcp)
    the_plan = plan(("slow.example", Category.ALLOW, (80,)), ("fast.example", Category.ALLOW, (80,)))
    settings = RunSettings(families=("ipv4",))
    progress: list[ProbeResult] = []
    results = asyncio.run(run_plan(the_plan, ProbeSpec(tcp_samples=3), Deadline.after(10), settings,
                                   progress.append, to_confirm=to_confirm))
    assert seen_by_confirm == [planned_count(the_plan, settings)] and over == [False]
    assert len(results) == len(progress) == planned_count(the_plan, settings)
    tcp_of = {r.target.host: r.detail for r in results if r.kind is ProbeKind.TCP}
    assert tcp_of["slow.example"]["median_ms"] == 150.0
    assert tcp_of["slow.example"]["quiet_samples_ms"] == [12.0, 12.0, 12.0]
    assert tcp_of["slow.example"]["quiet_median_ms"] == 12.0
    assert "quiet_median_ms" not in tcp_of["fast.example"]


def test_a_probe_that_raises_is_a_fault_with_a_crash_log_not_a_failure_nor_a_traceback(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A bug in one probe (here the TCP probe raises NameError) must not sink the check: its results say
    ``error`` with ``netcheck_fault`` (so the verdict leaves them out rather than calling the host
    unreachable), the traceback goes to a crash log under the cache directory, and nothing is logged at a
    level that reaches the terminal when no handler is set (issue 9's lab run printed a traceback to stderr)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    async def dns(target: Target, spec: ProbeSpec, deadline: Deadline) -> ProbeResult:
        return ProbeResult(ProbeKind.DNS, target, Outcome.OK, "resolved", detail={"ipv4": [V4]})

    async def broken(target: Target, spec: ProbeSpec, deadline: Deadline) -> ProbeResult:
        raise NameError("name 'longest_run' is not defined")

    async def ok(target: Target, spec: ProbeSpec, deadline: Deadline) -> ProbeResult:
        return ProbeResult(ProbeKind.HTTP, target, Outcome.OK, "ok")

    monkeypatch.setattr(netcheck.probes, "PROBES", {ProbeKind.DNS: dns, ProbeKind.TCP: broken, ProbeKind.TLS: ok,
                                                    ProbeKind.HTTP: ok})
    the_plan = plan(("a.example", Category.ALLOW, (80,)))
    results = asyncio.run(run_plan(the_plan, ProbeSpec(), Deadline.after(10), RunSettings(families=("ipv4",)),
                                   lambda _: None))
    tcp = [r for r in results if r.kind is ProbeKind.TCP]
    assert tcp and all(r.outcome is Outcome.ERROR and r.faulted for r in tcp)
    assert tcp[0].detail == {"netcheck_fault": "NameError"}
    assert not any(r.faulted for r in results if r.kind is not ProbeKind.TCP)
    logs = list((tmp_path / "netcheck" / "crashes").glob("crash-*.log"))
    assert logs and "NameError: name 'longest_run' is not defined" in logs[0].read_text()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # logging's last resort prints those
