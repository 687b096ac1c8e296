"""Timers and in-flight limits from measured round trips: the decisions without a network, then a
connect whose first SYN goes unanswered against a real listener on loopback."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from netcheck.probes import _pace
from netcheck.probes._connect import connect_socket
from netcheck.probes._pace import Limiter, Pace, RttEstimate, lossy, next_limit, retransmit_after
from netcheck.runner import probe_ceiling
from tests.servers import V4, full_backlog


def estimate(*samples: float) -> RttEstimate:
    est = RttEstimate()
    for s in samples:
        est.observe(s)
    return est


def test_the_estimate_follows_rfc_6298() -> None:
    est = estimate(0.1)
    assert est.srtt == 0.1 and est.rttvar == 0.05 and est.samples == 1
    est.observe(0.2)
    assert est.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.1)
    assert est.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)


def test_timers_start_at_their_initial_value_then_follow_the_round_trip() -> None:
    assert retransmit_after(RttEstimate(), initial=1.0, floor=0.1) == 1.0
    flat = estimate(*[0.2] * 20)  # variation decays: twice the round trip
    assert retransmit_after(flat, initial=1.0, floor=0.1) == pytest.approx(0.4, rel=0.01)
    jumpy = estimate(0.05, 0.3, 0.05, 0.3)  # variation dominates: srtt + 4 rttvar
    assert retransmit_after(jumpy, initial=1.0, floor=0.1) == pytest.approx(jumpy.srtt + 4 * jumpy.rttvar)
    assert retransmit_after(estimate(0.0005), initial=1.0, floor=0.1) == 0.1  # a cache hit: the floor
    assert retransmit_after(estimate(5.0), initial=1.0, floor=0.1) == _pace.RETRY_CEILING_S


def test_a_fresh_pace_has_the_initial_timers() -> None:
    pace = Pace()
    assert pace.dns_retry_s() == _pace.DNS_RETRY_INITIAL_S  # not dnspython's 2 s
    assert pace.connect_retry_s() == _pace.CONNECT_RETRY_INITIAL_S  # RFC 8305's 250 ms
    for _ in range(10):
        pace.connected(0.2)
    assert pace.connect_retry_s() > 0.25  # a 200 ms path: Happy Eyeballs waits for the answer


@pytest.mark.parametrize(("best", "this_round", "lost", "expected"), [
    (0.05, 0.05, False, 80),  # flat: grows (doubles)
    (0.05, 0.06, False, 80),  # within 1.25x + 5 ms: still flat
    (0.05, 0.08, False, 40),  # grown, not doubled: holds
    (0.05, 0.11, False, 34),  # doubled: queues filling, backs off gently
    (0.05, 0.05, True, 28),  # loss backs off whatever the round trip
    (None, None, False, 40),  # nothing measured: holds
])
def test_next_limit(best: float | None, this_round: float | None, lost: bool, expected: int) -> None:
    assert next_limit(40, floor=4, ceiling=400, best_rtt=best, round_rtt=this_round, lost=lost) == expected


def test_next_limit_stays_between_floor_and_ceiling() -> None:
    assert next_limit(300, floor=4, ceiling=400, best_rtt=0.05, round_rtt=0.05, lost=False) == 400
    assert next_limit(5, floor=4, ceiling=400, best_rtt=0.05, round_rtt=0.05, lost=True) == 4
    assert next_limit(1, floor=1, ceiling=1, best_rtt=0.05, round_rtt=0.05, lost=False) == 1


def test_lossy_means_more_than_a_tenth_lost() -> None:
    assert not lossy(0, 0) and not lossy(0, 50)
    assert not lossy(1, 20)  # a home link's random loss: a retry, not a reason to slow down
    assert lossy(1, 0) and lossy(3, 20) and lossy(10, 10)


def test_the_limiter_decides_once_per_round_trip() -> None:
    lim = Limiter(10, floor=2, ceiling=100)
    lim.observe(0.1, now=0.0)
    lim.observe(0.1, now=0.05)  # the same round trip: no decision yet
    assert lim.limit == 10
    lim.observe(0.1, now=0.11)  # a round trip later: flat, grows
    assert lim.limit == 20
    for i in range(19):  # one loss among twenty: tolerated, and the round trips are flat
        lim.observe(0.1, now=0.12 + i * 0.001)
    lim.lost(now=0.15)
    lim.observe(0.1, now=0.22)
    assert lim.limit == 40
    for i in range(5):  # half lost: backs off
        lim.observe(0.1, now=0.23 + i * 0.001)
        lim.lost(now=0.23 + i * 0.001)
    lim.observe(0.1, now=0.33)
    assert lim.history == [10, 20, 40, 28]


def test_the_limiter_admits_up_to_its_limit_and_more_when_it_grows() -> None:
    async def scenario() -> list[int]:
        lim = Limiter(2, floor=1, ceiling=4)
        release = asyncio.Event()
        running: list[int] = []

        async def job(i: int) -> None:
            async with lim:
                running.append(i)
                await release.wait()

        tasks = [asyncio.create_task(job(i)) for i in range(4)]
        await asyncio.sleep(0.01)
        seen = [len(running)]
        lim.observe(0.001, now=0.0)
        lim.observe(0.001, now=1.0)  # a flat round trip: the limit doubles and waiters get in
        await asyncio.sleep(0.01)
        seen.append(len(running))
        release.set()
        await asyncio.gather(*tasks)
        seen.append(lim.in_flight)
        return seen

    assert asyncio.run(scenario()) == [2, 4, 0]


def test_a_waiter_cancelled_gives_its_place_back() -> None:
    async def scenario() -> int:
        lim = Limiter(1, floor=1, ceiling=1)
        async with lim:
            waiter = asyncio.create_task(lim.__aenter__())
            await asyncio.sleep(0)
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        return lim.in_flight

    assert asyncio.run(scenario()) == 0


def test_the_probe_ceiling_leaves_room_for_dns_and_never_falls_below_the_start() -> None:
    ceiling = probe_ceiling(96, 60)
    assert ceiling >= 96
    assert probe_ceiling(10_000, 60) == 10_000


class _DrainOnRetry(Pace):
    """When the connect retry fires, the listener makes room: the second SYN is answered."""

    def __init__(self, listener: socket.socket) -> None:
        super().__init__()
        self.listener = listener
        self.retries = 0

    def connect_lost(self) -> None:
        super().connect_lost()
        self.retries += 1
        self.listener.setblocking(False)
        for _ in range(8):
            try:
                self.listener.accept()[0].close()
            except BlockingIOError:
                break


def test_an_unanswered_syn_is_retried_after_the_measured_round_trip() -> None:
    """The listener's queue is full, so the first SYN goes unanswered (the kernel would send it again
    after 1 s); the connect starts a second attempt after the check's timer, which connects."""
    with full_backlog() as listener:
        port = listener.getsockname()[1]
        pace = _DrainOnRetry(listener)
        pace.connected(0.001)  # a round trip measured earlier in this check: the timer's floor

        async def connect() -> tuple[str, int]:
            with _pace.use(pace):
                sock, _ = await asyncio.wait_for(connect_socket(socket.AF_INET, (V4, port)), 10)
            peer = sock.getpeername()
            sock.close()
            return peer[0], peer[1]

        assert asyncio.run(connect()) == (V4, port)
        assert pace.retries == 1
        assert pace.probes.history[:2] == [96, 67]  # the retry counted as a loss


def test_a_connect_given_up_while_its_retry_runs_closes_both_sockets() -> None:
    """Neither SYN is answered; the caller's time runs out while both attempts are in flight: both
    sockets are closed (an unclosed one would be a ResourceWarning, an error here), the retry counted."""
    import gc

    with full_backlog() as listener:
        port = listener.getsockname()[1]
        pace = Pace()
        pace.connected(0.001)  # the retry starts after the timer's floor

        async def connect() -> None:
            with _pace.use(pace):
                async with asyncio.timeout(0.5):
                    await connect_socket(socket.AF_INET, (V4, port))

        with pytest.raises(TimeoutError):
            asyncio.run(connect())
        gc.collect()
        assert pace.probes.history[:2] == [96, 67]  # the retry started, and counted as a loss


def test_a_refused_connect_fails_at_once_without_a_retry() -> None:
    from tests.servers import closed_port

    pace = Pace()

    async def connect() -> None:
        with _pace.use(pace):
            await connect_socket(socket.AF_INET, (V4, closed_port()))

    with pytest.raises(ConnectionRefusedError):
        asyncio.run(connect())
    assert pace.probes.history == [96]  # no retry, no loss counted


class _FirstFailsLate(asyncio.SelectorEventLoop):
    """The first connect fails after the retry has started; the retry connects, a little later."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        self.attempts += 1
        if self.attempts == 1:
            await asyncio.sleep(0.3)
            raise ConnectionResetError("the first attempt's answer")
        await asyncio.sleep(0.4)
        await super().sock_connect(sock, address)


def test_when_the_first_attempt_fails_the_retry_still_running_is_the_answer() -> None:
    with socket.create_server((V4, 0)) as listener:
        pace = Pace()
        pace.connected(0.001)  # the retry starts after the timer's floor, well before 0.3 s

        async def connect() -> tuple[bool, int]:
            with _pace.use(pace):
                sock, _ = await connect_socket(socket.AF_INET, listener.getsockname())
            await asyncio.sleep(0.05)  # anything scheduled after the connect has run
            try:
                return sock.fileno() != -1, sock.getpeername()[1]
            finally:
                sock.close()

        with asyncio.Runner(loop_factory=_FirstFailsLate) as runner:
            assert runner.run(connect()) == (True, listener.getsockname()[1])
            assert isinstance(runner.get_loop(), _FirstFailsLate) and runner.get_loop().attempts == 2
