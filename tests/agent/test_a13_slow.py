"""A13 slow or half-open collector: uploads give up within their timeouts, one at a time, and
checks go on regardless.

The fault proxy sits between the agent and a real collector: accept-and-never-reply,
10 s of latency, 128 B/s (the test report is about 1 KB once gzipped). Elapsed times are
printed, not asserted (machines are noisy); a hang fails through the per-test timeout.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest

from netcheck.agent.loop import CheckRequest, LoopSettings, build_agent, run_forever
from netcheck.agent.schedule import Schedule
from netcheck.agent.spool import Spool
from netcheck.agent.transport import Timeouts
from netcheck.agent.uploader import Uploader
from netcheck.deadline import Deadline
from tests.agent.conftest import Real, Rig
from tests.agent.helpers import fake_report
from tests.collector.conftest import sql
from tests.faultproxy import ConnFault, FaultProxy

SHORT = Timeouts(connect_s=2, read_s=2, write_s=2, total_s=4)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", ["accept and never reply", "10 s latency", "128 B/s"])
def test_a13_each_upload_gives_up_and_the_report_stays(fault: str, real: Callable[..., Real],
                                                       rigs: Callable[..., Rig]) -> None:
    collector = real()
    with FaultProxy(("127.0.0.1", _port(collector.url))) as proxy:
        if fault == "accept and never reply":
            proxy.connection_fault = ConnFault.BLACKHOLE
        elif fault == "10 s latency":
            proxy.delay_s = 10.0
        else:
            proxy.rate_bps = 128  # the gzipped test report is about 1 KB: 8 s, twice the total timeout
        rig = rigs(collector.url, collector.secret, upload_url=proxy.url, timeouts=SHORT)
        rid = rig.spool.append(fake_report()).report_id
        started = time.monotonic()
        got = rig.uploader.drain(Deadline.after(60))
        elapsed = time.monotonic() - started
        print(f"\nA13 {fault}: gave up after {elapsed:.1f} s (timeouts connect/read {SHORT.connect_s}/"
              f"{SHORT.read_s} s, total {SHORT.total_s} s): {got.failure.reason if got.failure else None}")
        assert got.failure is not None and "timed out" in got.failure.reason
        assert got.remaining == 1
        proxy.connection_fault, proxy.delay_s, proxy.rate_bps = ConnFault.PASS, 0.0, None
        proxy.drop_all_connections()
        assert rig.uploader.drain(Deadline.after(30)).stored == 1
    assert [r.report_id for r in sql(collector.database_url, "SELECT report_id FROM reports")] == [rid]


@pytest.mark.timeout(90)
def test_a13_only_one_upload_in_flight_per_agent(real: Callable[..., Real], rigs: Callable[..., Rig]) -> None:
    collector = real()
    with FaultProxy(("127.0.0.1", _port(collector.url))) as proxy:
        proxy.connection_fault = ConnFault.BLACKHOLE
        rig = rigs(collector.url, collector.secret, upload_url=proxy.url, timeouts=SHORT)
        rig.spool.append(fake_report())
        blocked = threading.Thread(target=rig.uploader.drain, args=(Deadline.after(30),))
        blocked.start()
        while proxy.connections == 0:
            time.sleep(0.01)
        # a second uploader on the same spool (as `netcheck check --upload` in another process would be)
        other = Uploader(Spool(rig.spool.root), rig.client)
        second = other.drain(Deadline.after(30))
        blocked.join()
        assert second.busy and second.sent == 0
        assert proxy.connections == 1


@pytest.mark.timeout(90)
def test_a13_checks_keep_their_schedule_while_an_upload_hangs(real: Callable[..., Real],
                                                              rigs: Callable[..., Rig]) -> None:
    collector = real()
    with FaultProxy(("127.0.0.1", _port(collector.url))) as proxy:
        proxy.connection_fault = ConnFault.BLACKHOLE
        rig = rigs(collector.url, collector.secret, upload_url=proxy.url,
                   timeouts=Timeouts(connect_s=2, read_s=6, write_s=6, total_s=6))
        check_times: list[float] = []
        upload_spans: list[tuple[float, float]] = []

        def check(_: CheckRequest) -> dict[str, object]:
            check_times.append(time.monotonic())
            return fake_report()

        agent = build_agent(run_check=check, spool=rig.spool, client=rig.client, uploader=rig.uploader,
                            schedule=Schedule(0.5, 0.0), pinned_schedule=True, clock=time.monotonic,
                            rng=random.Random(1), settings=LoopSettings(sweep_poll_s=3600, policy_refresh_s=3600),
                            first_check_at=time.monotonic())
        original = agent.net_lane.uploader.drain

        def timed_drain(*args: object, **kwargs: object) -> object:
            start = time.monotonic()
            try:
                return original(*args, **kwargs)  # type: ignore[arg-type]
            finally:
                upload_spans.append((start, time.monotonic()))

        agent.net_lane.uploader.drain = timed_drain  # type: ignore[method-assign,assignment]
        stop = threading.Event()
        runner = threading.Thread(target=run_forever, args=(agent, stop, time.monotonic))
        runner.start()
        give_up = time.monotonic() + 30
        while not upload_spans and time.monotonic() < give_up:
            time.sleep(0.05)
        stop.set()
        runner.join(30)
    start, end = upload_spans[0]
    during = [t for t in check_times if start < t < end]
    gaps = [b - a for a, b in zip(check_times, check_times[1:], strict=False)]
    print(f"\nA13 decoupling: upload blocked {end - start:.1f} s; {len(during)} checks ran meanwhile; "
          f"largest gap between checks {max(gaps):.2f} s for a 0.5 s schedule")
    assert len(during) >= 3  # checks went on while the upload hung
    assert len(rig.spool.pending()) >= len(check_times) - 1
