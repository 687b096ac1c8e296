"""A1 outage soak: 50 agents report every 60 s; the collector is down for 10 minutes, then back.

Simulated time (one clock for all agents, moved by a discrete-event loop), real
everything else: each agent is `netcheck agent`'s two lanes with its own spool and
credential, talking HTTP through a fault proxy to a real `netcheck serve` process,
which is stopped (connections refused) for the outage and started again on the
same database. Per-device rate limiting stays on (60/min, the default).

Pass: the database holds every report generated, exactly once, in per-device
sequence order, and the outage backlog is drained within 15 simulated minutes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from netcheck.agent.loop import Agent, CheckRequest, LoopSettings, build_agent
from netcheck.agent.schedule import Schedule
from tests.agent.conftest import Real, Rig
from tests.agent.helpers import FakeClock, fake_report, simulate
from tests.collector.conftest import sql
from tests.faultproxy import FaultProxy

AGENTS = 50
INTERVAL_S = 60.0
UP_BEFORE_S = 600.0
OUTAGE_S = 600.0
DRAIN_LIMIT_S = 900.0


def _agent(rig: Rig, clock: FakeClock, seed: int) -> Agent:
    rng = random.Random(seed)

    def check(_: CheckRequest) -> dict[str, object]:
        return fake_report(measured_at=clock.now)

    return build_agent(run_check=check, spool=rig.spool, client=rig.client, uploader=rig.uploader,
                       schedule=Schedule(INTERVAL_S, 5.0), pinned_schedule=True, clock=clock, wall=clock,
                       rng=rng, settings=LoopSettings(sweep_poll_s=600.0, policy_refresh_s=3600.0),
                       first_check_at=clock.now + rng.uniform(0, INTERVAL_S))


def test_a1_outage_soak_every_report_exactly_once_in_order(real: Callable[..., Real],
                                                           rigs: Callable[..., Rig], tmp_path: Path) -> None:
    collector = real(env={"NETCHECK_RATE_DEVICE": "60"})
    clock = FakeClock()
    with FaultProxy(("127.0.0.1", int(collector.url.rsplit(":", 1)[1]))) as proxy:
        fleet = [rigs(collector.url, collector.secret, upload_url=proxy.url, wall=clock) for _ in range(AGENTS)]
        agents = [_agent(rig, clock, seed) for seed, rig in enumerate(fleet)]
        lanes = [lane for a in agents for lane in (a.check_lane, a.net_lane)]
        start = clock.now

        simulate(clock, lanes, until=start + UP_BEFORE_S)
        # the outage: the collector process stops; connections are refused
        proxy.refuse()
        collector.proc.stop()
        simulate(clock, lanes, until=start + UP_BEFORE_S + OUTAGE_S)
        in_outage = {a.spool.load(ref).report_id for a in agents for ref in a.spool.pending()}  # type: ignore[union-attr]
        recovered_at = clock.now
        # the collector comes back (a new process on the same database)
        back = real(env={"NETCHECK_RATE_DEVICE": "60"}, database_url=collector.database_url)
        proxy.upstream = ("127.0.0.1", int(back.url.rsplit(":", 1)[1]))
        proxy.accept()

        def drained() -> bool:
            acked = {rid for a in agents for rid in a.net_lane.totals.acked_ids}
            return in_outage <= acked

        simulate(clock, lanes, until=recovered_at + 2 * DRAIN_LIMIT_S, stop=drained)
        drain_s = clock.now - recovered_at
        # one more minute so that the last checks' reports go too, then stop checking
        simulate(clock, [a.net_lane for a in agents], until=clock.now + 60)

    generated = sum(a.check_lane.checks for a in agents)
    left = sum(len(a.spool.pending()) for a in agents)
    sent = sum(a.net_lane.totals.sent for a in agents)
    stored = sum(a.net_lane.totals.stored for a in agents)
    duplicates = sum(a.net_lane.totals.duplicates for a in agents)
    rows = sql(back.database_url, "SELECT device_id, report_id, seq FROM reports ORDER BY id")
    db_ids = [r.report_id for r in rows]
    print(f"\nA1 soak: agents={AGENTS} outage={OUTAGE_S / 60:.0f} min (simulated) generated={generated} "
          f"backlog_at_recovery={len(in_outage)} sent={sent} stored={stored} duplicates={duplicates} "
          f"db_rows={len(rows)} left_in_spools={left} drained_in={drain_s / 60:.1f} min (simulated)")

    assert len(in_outage) >= AGENTS * (OUTAGE_S / INTERVAL_S - 1)  # the outage really built a backlog
    assert left == 0
    assert len(db_ids) == len(set(db_ids)) == generated  # 0 lost, 0 duplicates
    assert stored == generated
    assert drain_s <= DRAIN_LIMIT_S
    by_device: dict[str, list[int]] = {}
    for r in rows:
        by_device.setdefault(r.device_id, []).append(r.seq)
    assert len(by_device) == AGENTS
    for seqs in by_device.values():
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

