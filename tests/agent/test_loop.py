"""The unattended agent: policy, sweeps, schedule, uploads; `--once`; the real check wiring."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netcheck.agent.loop import (
    CheckRequest,
    LoopSettings,
    build_agent,
    default_run_check,
    run_once,
)
from netcheck.agent.schedule import Backoff, Schedule
from tests.agent.collector_double import Canned, CollectorDouble
from tests.agent.conftest import Real, Rig
from tests.agent.helpers import FakeClock, fake_report, simulate
from tests.collector.conftest import sql


def _admin(database_url: str, *args: str) -> str:
    got = subprocess.run([sys.executable, "-m", "netcheck", "admin", *args, "--database-url", database_url],
                         capture_output=True, text=True, timeout=60, check=True,
                         env={k: v for k, v in os.environ.items() if not k.startswith("NETCHECK_")})
    return got.stdout.strip()


def test_once_runs_the_pending_sweep_with_its_id_and_uploads_everything(real: Callable[..., Real],
                                                                        rigs: Callable[..., Rig]) -> None:
    collector = real()
    _admin(collector.database_url, "policy", "set", "tenant", "contoso")
    _admin(collector.database_url, "policy", "set", "schedule.interval_s", "1800")
    sweep_id = _admin(collector.database_url, "sweep", "create", "--thorough")
    rig = rigs(collector.url, collector.secret)
    requests: list[CheckRequest] = []

    def check(req: CheckRequest) -> dict[str, Any]:
        requests.append(req)
        return fake_report()

    agent = build_agent(run_check=check, spool=rig.spool, client=rig.client, uploader=rig.uploader,
                        schedule=Schedule())
    result = run_once(agent, upload_deadline_s=30)
    assert (result.checks, result.spooled, result.upload.stored) == (2, 2, 2)
    assert [r.sweep_id for r in requests] == [None, sweep_id]
    assert [r.thorough for r in requests] == [False, True]
    assert all(r.policy["tenant"] == "contoso" for r in requests)
    assert agent.shared.schedule.interval_s == 1800  # the collector's schedule, not pinned
    rows = sql(collector.database_url, "SELECT sweep_id FROM reports ORDER BY id")
    assert [r.sweep_id for r in rows] == [None, sweep_id]
    assert sql(collector.database_url, "SELECT count(*) FROM sweep_responses")[0][0] == 1
    # answered: the collector no longer lists it, and the agent would not run it twice anyway
    again = run_once(agent, upload_deadline_s=30)
    assert again.checks == 1
    assert json.loads((rig.spool.root / "policy.json").read_text())["tenant"] == "contoso"


def test_policy_survives_a_restart_while_the_collector_is_unreachable(double: CollectorDouble,
                                                                       rigs: Callable[..., Rig]) -> None:
    double.policy["schedule"] = {"interval_s": 900, "jitter_s": 30}
    rig = rigs(double.url, double.secret)
    agent = build_agent(run_check=lambda r: fake_report(), spool=rig.spool, client=rig.client,
                        uploader=rig.uploader, schedule=Schedule())
    agent.net_lane.refresh_policy(0.0)
    assert agent.shared.schedule.interval_s == 900
    double.canned.extend([Canned(503)] * 5)
    restarted = build_agent(run_check=lambda r: fake_report(), spool=rig.spool, client=rig.client,
                            uploader=rig.uploader, schedule=Schedule())
    restarted.net_lane.refresh_policy(0.0)
    assert restarted.shared.schedule.interval_s == 900 and restarted.shared.policy["tenant"] == "contoso"


def test_simulated_day_checks_on_schedule_and_uploads_each_report_once(double: CollectorDouble,
                                                                      rigs: Callable[..., Rig]) -> None:
    clock = FakeClock()
    rig = rigs(double.url, double.secret, wall=clock)
    agent = build_agent(run_check=lambda r: fake_report(measured_at=clock.now), spool=rig.spool,
                        client=rig.client, uploader=rig.uploader, schedule=Schedule(3600, 300),
                        pinned_schedule=True, clock=clock, wall=clock, rng=random.Random(4))
    check_times: list[float] = []
    original = agent.check_lane.check_and_spool

    def spy(sweep: Any) -> bool:
        check_times.append(clock.now)
        return original(sweep)

    agent.check_lane.check_and_spool = spy  # type: ignore[method-assign]
    start = clock.now
    # the collector fails for a stretch in the middle of the day
    simulate(clock, [agent.check_lane, agent.net_lane], until=start + 10 * 3600)
    double.canned.extend([Canned(503, b'{"error":{"code":"x","message":"y"}}', {"Retry-After": "600"})] * 6)
    simulate(clock, [agent.check_lane, agent.net_lane], until=start + 24 * 3600)
    gaps = [b - a for a, b in zip(check_times, check_times[1:], strict=False)]
    assert 23 <= len(check_times) <= 25
    assert all(3600 <= g <= 3900 for g in gaps)
    assert len(double.reports) == len(check_times) and not rig.spool.pending()
    assert agent.net_lane.totals.duplicates == 0


def test_net_lane_backs_off_then_resets_after_success(double: CollectorDouble, rigs: Callable[..., Rig]) -> None:
    clock = FakeClock()
    rig = rigs(double.url, double.secret, wall=clock)
    agent = build_agent(run_check=lambda r: fake_report(), spool=rig.spool, client=rig.client,
                        uploader=rig.uploader, schedule=Schedule(86400, 0), pinned_schedule=True, clock=clock,
                        wall=clock, rng=random.Random(1), first_check_at=float("inf"),
                        backoff=Backoff(), settings=LoopSettings(sweep_poll_s=86400, policy_refresh_s=86400))
    rig.spool.append(fake_report())
    simulate(clock, [agent.net_lane], until=clock.now + 1)  # policy, sweeps, upload: all fine
    assert len(double.reports) == 1 and agent.net_lane.backoff.attempt == 0
    double.canned.extend([Canned(500)] * 3)
    rig.spool.append(fake_report())
    agent.net_lane.notify_spooled()
    simulate(clock, [agent.net_lane], until=clock.now + 3600)
    assert len(double.reports) == 2 and agent.net_lane.backoff.attempt == 0
    assert agent.net_lane.attempts >= 5


def test_a_check_that_crashes_or_fails_never_stops_the_agent(double: CollectorDouble,
                                                             rigs: Callable[..., Rig]) -> None:
    from netcheck.errors import ConfigError
    rig = rigs(double.url, double.secret)
    outcomes = iter([ZeroDivisionError, ConfigError("bad tenant"), None])

    def check(req: CheckRequest) -> dict[str, Any]:
        exc = next(outcomes)
        if exc is None:
            return fake_report()
        raise exc if isinstance(exc, Exception) else exc()

    agent = build_agent(run_check=check, spool=rig.spool, client=rig.client, uploader=rig.uploader,
                        schedule=Schedule())
    assert [agent.check_lane.check_and_spool(None) for _ in range(3)] == [False, False, True]
    assert agent.check_lane.failures == 2


def test_default_run_check_passes_the_collectors_policy_to_perform_check(monkeypatch: pytest.MonkeyPatch) -> None:
    import netcheck.check as check_module
    from tests.sample_report import sample_report

    seen: list[Any] = []

    def fake_perform(options: Any, **kwargs: Any) -> Any:
        seen.append(options)
        return sample_report()

    monkeypatch.setattr(check_module, "perform_check", fake_perform)
    policy = {"tenant": "fabrikam", "instance": "USGovDoD", "deadline_s": 45,
              "thresholds": {"latency": {"slow_ms": 150, "no_such_threshold": 1}, "check": {"whoami_name": "x"}}}
    doc = default_run_check(CheckRequest(thorough=True, deadline_s=45, policy=policy))
    opts = seen[0]
    assert (opts.tenant, opts.instance, opts.deadline_s, opts.thorough) == ("fabrikam", "USGovDoD", 45, True)
    assert opts.policy.slow_latency_ms == 150
    assert opts.policy.whoami_name == "whoami.akamai.net"  # "x" is not a DNS name: the default stays
    assert doc["schema_version"] == 2


def test_agent_cli_without_enrollment_says_what_to_do(tmp_path: Path) -> None:
    got = subprocess.run([sys.executable, "-m", "netcheck", "agent", "--once"], capture_output=True, text=True,
                         timeout=60, check=False, env=os.environ.copy())
    assert got.returncode == 4
    assert "not enrolled" in got.stderr and "netcheck enroll" in got.stderr
    assert "Traceback" not in got.stderr
