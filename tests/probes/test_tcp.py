"""The TCP probe: connect samples against listeners, closed ports and a full backlog."""

from __future__ import annotations

import asyncio
import socket
import statistics
import sys
from collections.abc import Iterator

import pytest

from netcheck.deadline import Deadline
from netcheck.models import Outcome, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes import PROBES
from netcheck.probes.tcp import family_of, probe_tcp, probe_tcp_quiet
from tests import servers
from tests.probes.conftest import Servers, eventually, run
from tests.probes.test_timing import BLOCK_S, busy_loop
from tests.servers import V4, V6, StreamServer, closed_port, tls_only


def test_registered() -> None:
    assert PROBES[ProbeKind.TCP] is probe_tcp


def test_samples(srv: Servers) -> None:
    before = srv.http_200.accepted
    r = run(probe_tcp(Target("web.test", port=srv.http_200.port, address=V4), ProbeSpec(tcp_samples=4),
                      Deadline.after(10)))
    assert r.outcome is Outcome.OK and r.kind is ProbeKind.TCP and r.family == "ipv4"
    samples = r.detail["samples_ms"]
    assert isinstance(samples, list) and len(samples) == 4
    assert r.detail["loss_pct"] == 0.0 and r.detail["attempted"] == 4
    assert r.detail["median_ms"] == round(statistics.median(samples), 2)
    assert isinstance(r.detail["jitter_ms"], float)
    assert r.detail["local_address"] == V4
    assert r.phases["connect"] == r.detail["median_ms"]
    assert eventually(lambda: srv.http_200.accepted - before == 4)  # really four connections


def test_samples_say_which_clock_timed_them(srv: Servers) -> None:
    target = Target("web.test", port=srv.http_200.port, address=V4)
    r = run(probe_tcp(target, ProbeSpec(tcp_samples=2), Deadline.after(10)))
    if sys.platform == "linux":
        assert r.detail["rtt_source"] == "kernel"
    else:  # macOS counts whole milliseconds (loopback reads 0: the wall clock); Windows has no figure
        assert r.detail["rtt_source"] in ("kernel", "wall")
    r = run(probe_tcp(target, ProbeSpec(tcp_samples=2), Deadline.after(10), kernel_clock=False))
    assert r.outcome is Outcome.OK and r.detail["rtt_source"] == "wall"


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's handshake RTT is checked live on Linux")
def test_busy_event_loop_does_not_inflate_kernel_samples(srv: Servers) -> None:
    """The loop is blocked for 40 ms at every turn while both probes connect side by side."""
    target = Target("web.test", port=srv.http_200.port, address=V4)
    spec = ProbeSpec(tcp_samples=5)

    async def go() -> tuple[ProbeResult, ProbeResult]:
        async with busy_loop() as blocks:
            kernel, wall = await asyncio.gather(probe_tcp(target, spec, Deadline.after(30)),
                                                probe_tcp(target, spec, Deadline.after(30), kernel_clock=False))
        assert blocks[0] >= 5
        return kernel, wall

    kernel, wall = asyncio.run(go())
    assert kernel.outcome is Outcome.OK and wall.outcome is Outcome.OK
    assert kernel.detail["rtt_source"] == "kernel" and wall.detail["rtt_source"] == "wall"
    k, w = kernel.detail["samples_ms"], wall.detail["samples_ms"]
    assert isinstance(k, list) and isinstance(w, list) and len(k) == len(w) == 5
    assert max(k) < BLOCK_S * 1000.0                   # the loop's stalls are not in the kernel's figure
    assert statistics.median(k) < statistics.median(w)  # they are in the wall clock's
    assert kernel.detail["median_ms"] == round(statistics.median(k), 2)
    assert kernel.phases["connect"] == kernel.detail["median_ms"]


def test_one_sample_has_no_jitter(srv: Servers) -> None:
    r = run(probe_tcp(Target("web.test", port=srv.http_200.port, address=V4), ProbeSpec(tcp_samples=1),
                      Deadline.after(10)))
    assert r.outcome is Outcome.OK and r.detail["jitter_ms"] is None


def test_refused() -> None:
    r = run(probe_tcp(Target("web.test", port=closed_port(), address=V4), ProbeSpec(), Deadline.after(10)))
    assert r.outcome is Outcome.CONNECT_REFUSED
    assert r.detail["loss_pct"] == 100.0 and r.detail["samples_ms"] == []
    assert r.detail["rtt_source"] is None
    assert r.phases == {}


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A listener that never accepts, its queue filled: further SYNs go unanswered."""
    with servers.full_backlog() as listener:
        yield listener.getsockname()[1]


@pytest.mark.timeout(30)
def test_unanswered_connect_ends_by_the_step_cap(full_backlog: int) -> None:
    r = run(probe_tcp(Target("x", port=full_backlog, address=V4),
                      ProbeSpec(tcp_samples=2, step_timeout_s=0.3), Deadline.after(60)))
    assert r.outcome is Outcome.CONNECT_TIMEOUT
    assert r.detail["attempted"] == 2 and r.detail["loss_pct"] == 100.0


@pytest.mark.timeout(30)
def test_unanswered_connect_ends_by_the_deadline(full_backlog: int) -> None:
    r = run(probe_tcp(Target("x", port=full_backlog, address=V4), ProbeSpec(tcp_samples=5),
                      Deadline.after(0.5)))
    assert r.outcome is Outcome.CONNECT_TIMEOUT
    attempted = r.detail["attempted"]
    assert isinstance(attempted, int) and attempted < 5  # the deadline cut the series short


def test_deadline_already_passed(srv: Servers) -> None:
    before = srv.http_200.accepted
    r = run(probe_tcp(Target("x", port=srv.http_200.port, address=V4), ProbeSpec(), Deadline.after(0)))
    assert r.outcome is Outcome.TIMEOUT
    assert srv.http_200.accepted == before


def test_no_port() -> None:
    r = run(probe_tcp(Target("x", address=V4), ProbeSpec(), Deadline.after(1)))
    assert r.outcome is Outcome.ERROR


def test_name_without_address_resolved_by_the_os() -> None:
    first = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)[0][4][0]
    with StreamServer(tls_only, str(first)) as server:
        r = run(probe_tcp(Target("localhost", port=server.port), ProbeSpec(tcp_samples=1),
                          Deadline.after(10)))
    assert r.outcome is Outcome.OK
    assert r.detail["remote_address"] == first


def test_ipv6(need_ipv6: None) -> None:
    with StreamServer(tls_only, V6) as server:
        r = run(probe_tcp(Target("v6.test", port=server.port, address=V6), ProbeSpec(tcp_samples=2),
                          Deadline.after(10)))
    assert r.outcome is Outcome.OK and r.family == "ipv6"
    assert r.detail["local_address"] == V6


@pytest.mark.parametrize(("address", "family"), [
    ("192.0.2.1", "ipv4"), ("2001:db8::1", "ipv6"), ("fe80::1%eth0", "ipv6"), ("name.test", None),
    (None, None), ("", None)])
def test_family_of(address: str | None, family: str | None) -> None:
    assert family_of(address) == family


def test_measured_again_after_the_burst_keeps_the_first_samples(srv: Servers) -> None:
    """The confirmation of a slow workload (issue 9): ``tcp_samples`` more connects to a real server, at once,
    added beside the first ones."""
    target = Target("web.test", port=srv.http_200.port, address=V4)
    before = srv.http_200.accepted
    first = run(probe_tcp(target, ProbeSpec(tcp_samples=3), Deadline.after(10)))
    again = run(probe_tcp_quiet(first, ProbeSpec(tcp_samples=3), Deadline.after(10)))
    assert again.detail["samples_ms"] == first.detail["samples_ms"]
    assert again.detail["median_ms"] == first.detail["median_ms"]
    quiet = again.detail["quiet_samples_ms"]
    assert isinstance(quiet, list) and len(quiet) == 3
    assert again.detail["quiet_median_ms"] == round(statistics.median(quiet), 2)
    assert eventually(lambda: srv.http_200.accepted - before == 6)  # really three more connections


def test_measured_again_where_nothing_answers_adds_no_figure() -> None:
    target = Target("web.test", port=closed_port(), address=V4)
    first = ProbeResult(ProbeKind.TCP, target, Outcome.OK, "tcp", {}, {"median_ms": 150.0})
    again = run(probe_tcp_quiet(first, ProbeSpec(tcp_samples=2), Deadline.after(10)))
    assert again.detail["quiet_samples_ms"] == [] and again.detail["quiet_median_ms"] is None
    assert again.detail["median_ms"] == 150.0 and again.outcome is Outcome.OK
