"""A9 backoff and A11 spurious 401s, against a real collector behind the fault proxy.

Time is simulated (an injected clock drives the agent's network lane), the HTTP is
real: the proxy answers the uploads itself (503, 401) while everything else goes
through to `netcheck serve`.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import netcheck.agent.config as config_module
from netcheck.agent.loop import Agent, build_agent
from netcheck.agent.schedule import Schedule
from netcheck.deadline import Deadline
from netcheck.paths import atomic_write
from tests.agent.conftest import Real, Rig
from tests.agent.helpers import FakeClock, fake_report, simulate
from tests.collector.conftest import sql
from tests.faultproxy import FaultProxy, Forward, HttpRequest, RequestFault, Respond, http_response

ERROR_503 = json.dumps({"error": {"code": "unavailable", "message": "maintenance"}})
ERROR_401 = json.dumps({"error": {"code": "unauthorized", "message": "unknown token"}})


@contextmanager
def proxied(collector: Real, decide: Callable[[HttpRequest], RequestFault]) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", int(collector.url.rsplit(":", 1)[1]))) as proxy:
        proxy.request_fault = decide
        yield proxy


def _net_only_agent(rig: Rig, clock: FakeClock) -> Agent:
    return build_agent(run_check=lambda req: fake_report(), spool=rig.spool, client=rig.client,
                       uploader=rig.uploader, schedule=Schedule(86400, 0), pinned_schedule=True, clock=clock,
                       wall=clock, rng=random.Random(9), first_check_at=float("inf"))


def _attempt_times(agent: Agent, clock: FakeClock) -> list[float]:
    times: list[float] = []
    original = agent.net_lane.uploader.drain

    def drain(*args: Any, **kwargs: Any) -> Any:
        times.append(clock.now)
        return original(*args, **kwargs)

    agent.net_lane.uploader.drain = drain  # type: ignore[method-assign]
    return times


def test_a9_an_hour_of_503_costs_at_most_20_attempts_growing_to_a_15_minute_cap(
        real: Callable[..., Real], rigs: Callable[..., Rig]) -> None:
    collector = real()
    clock = FakeClock()

    def unavailable(req: HttpRequest) -> RequestFault:
        return Respond(http_response(503, ERROR_503)) if req.path == "/api/v1/reports" else Forward()

    with proxied(collector, unavailable) as proxy:
        rig = rigs(collector.url, collector.secret, upload_url=proxy.url, wall=clock)
        rig.spool.append(fake_report())
        agent = _net_only_agent(rig, clock)
        times = _attempt_times(agent, clock)
        start = clock.now
        simulate(clock, [agent.net_lane], until=start + 3 * 3600)
        uploads = [r for r in proxy.requests if r.path == "/api/v1/reports"]

    in_first_hour = [t for t in times if t < start + 3600]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    print(f"\nA9: attempts in the first hour={len(in_first_hour)}, in 3 h={len(times)}; "
          f"gaps (s)={[round(g) for g in gaps]}")
    assert len(uploads) == len(times)  # every attempt really reached the (simulated) collector
    assert len(in_first_hour) <= 20
    for i, gap in enumerate(gaps):
        assert 1.0 <= gap <= min(900.0, 30.0 * 2 ** i) + 1e-6  # exponential ceiling, full jitter, cap
    assert statistics.mean(gaps[-5:]) > 3 * statistics.mean(gaps[:3])  # it really grows
    assert len(rig.spool.pending()) == 1  # still kept


def test_a9_retry_after_is_honoured_within_ten_percent(real: Callable[..., Real],
                                                        rigs: Callable[..., Rig]) -> None:
    collector = real()
    clock = FakeClock()

    def busy(req: HttpRequest) -> RequestFault:
        if req.path == "/api/v1/reports":
            return Respond(http_response(503, ERROR_503, headers={"Retry-After": "300"}))
        return Forward()

    with proxied(collector, busy) as proxy:
        rig = rigs(collector.url, collector.secret, upload_url=proxy.url, wall=clock)
        rig.spool.append(fake_report())
        agent = _net_only_agent(rig, clock)
        times = _attempt_times(agent, clock)
        simulate(clock, [agent.net_lane], until=clock.now + 3600)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    print(f"\nA9 Retry-After 300: gaps (s)={[round(g, 1) for g in gaps]}")
    assert len(gaps) >= 8
    assert all(300 <= g <= 330 for g in gaps)


# -- A11 ----------------------------------------------------------------------------

def _refuse_token(token: str) -> Callable[[HttpRequest], RequestFault]:
    """The collector 'refuses' this one token (every other request goes through)."""

    def decide(req: HttpRequest) -> RequestFault:
        if req.headers.get("authorization") == f"Bearer {token}" and req.path == "/api/v1/reports":
            return Respond(http_response(401, ERROR_401))
        return Forward()

    return decide


def _tokens(collector: Real, device_id: str) -> int:
    return len(sql(collector.database_url, "SELECT id FROM device_tokens WHERE device_id = :d", d=device_id))


def test_a11_one_spurious_401_keeps_the_credential(real: Callable[..., Real], rigs: Callable[..., Rig],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    collector = real()
    monkeypatch.setenv("NETCHECK_ENROLL_SECRET", collector.secret)  # re-enrolling would be possible
    seen = {"n": 0}

    def once(req: HttpRequest) -> RequestFault:
        if req.path == "/api/v1/reports" and seen["n"] == 0:
            seen["n"] += 1
            return Respond(http_response(401, ERROR_401))
        return Forward()

    with proxied(collector, once) as proxy:
        rig = rigs(collector.url, collector.secret, upload_url=proxy.url)
        token_before = rig.store.token_path.read_bytes()
        device = rig.store.load_config().device_id
        rig.spool.append(fake_report())
        first = rig.uploader.drain(Deadline.after(10))
        assert first.failure is not None and first.failure.status == 401 and first.remaining == 1
        assert rig.store.token_path.read_bytes() == token_before
        second = rig.uploader.drain(Deadline.after(10))
    assert second.stored == 1
    assert rig.store.token_path.read_bytes() == token_before
    assert _tokens(collector, device) == 1  # no re-enrollment
    assert rig.spool.get_value("auth_401_count") is None  # the count reset on success


def test_a11_reenroll_only_after_k_refusals_spread_over_m_minutes(real: Callable[..., Real],
                                                                   rigs: Callable[..., Rig],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    collector = real()
    clock = FakeClock()
    rig = rigs(collector.url, collector.secret, wall=clock)
    old_token = rig.store.load_token()
    device = rig.store.load_config().device_id
    monkeypatch.setenv("NETCHECK_ENROLL_SECRET", collector.secret)
    with proxied(collector, _refuse_token(old_token)) as proxy:
        rig.client.base_url = proxy.url
        rig.spool.append(fake_report())
        # 10 refusals one minute apart: many, but not spread over 30 minutes -> keep the token
        for _ in range(10):
            got = rig.uploader.drain(Deadline.after(10))
            assert got.failure is not None and got.failure.status == 401 and not got.reenrolled
            clock.advance(60)
        assert rig.store.load_token() == old_token and _tokens(collector, device) == 1
        # the refusals go on past 30 minutes: now it re-enrolls, stores the new token, and delivers
        for _ in range(30):
            clock.advance(60)
            got = rig.uploader.drain(Deadline.after(10))
            if got.reenrolled:
                break
        assert got.reenrolled and got.stored == 1
    new_token = rig.store.load_token()
    assert new_token != old_token and rig.client.token == new_token
    assert rig.store.load_config().device_id == device  # same device, new credential
    assert _tokens(collector, device) == 2


def test_a11_no_secret_no_reenrollment(real: Callable[..., Real], rigs: Callable[..., Rig],
                                       caplog: pytest.LogCaptureFixture) -> None:
    collector = real()
    clock = FakeClock()
    rig = rigs(collector.url, collector.secret, wall=clock)
    old_token = rig.store.load_token()
    with proxied(collector, _refuse_token(old_token)) as proxy:
        rig.client.base_url = proxy.url
        rig.spool.append(fake_report())
        with caplog.at_level(logging.ERROR):
            for _ in range(40):
                got = rig.uploader.drain(Deadline.after(10))
                assert not got.reenrolled
                clock.advance(120)
    assert rig.store.load_token() == old_token and len(rig.spool.pending()) == 1
    assert "run `netcheck enroll` again" in caplog.text


def test_a11_failed_reenrollment_keeps_the_old_token(real: Callable[..., Real], rigs: Callable[..., Rig],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    collector = real()
    clock = FakeClock()
    rig = rigs(collector.url, collector.secret, wall=clock)
    old_token = rig.store.load_token()
    monkeypatch.setenv("NETCHECK_ENROLL_SECRET", "revoked-or-wrong")
    with proxied(collector, _refuse_token(old_token)) as proxy:
        rig.client.base_url = proxy.url
        rig.spool.append(fake_report())
        for _ in range(40):
            assert not rig.uploader.drain(Deadline.after(10)).reenrolled
            clock.advance(120)
    assert rig.store.load_token() == old_token and len(rig.spool.pending()) == 1


def test_a11_the_new_token_is_stored_before_the_old_one_is_replaced(rigs: Callable[..., Rig],
                                                                      real: Callable[..., Real],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    collector = real()
    rig = rigs(collector.url, collector.secret)
    old = rig.store.load_token()
    observed: list[tuple[str, str]] = []
    original = atomic_write

    def spy(path: Any, data: bytes, mode: int = 0o644) -> None:
        observed.append((path.name, rig.store.token_path.read_text().strip()))  # what is on disk before
        original(path, data, mode)

    monkeypatch.setattr(config_module, "atomic_write", spy)
    from netcheck.agent.enrollment import reenroll
    new = reenroll(rig.store, rig.store.load_config(), collector.secret, rig.client)
    # the token file is written first, and until that rename the old token is intact on disk
    assert observed[0] == ("token", old)
    assert observed[1] == ("agent.toml", new)
    assert rig.store.load_token() == new != old
