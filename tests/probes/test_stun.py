"""STUN probe: the wire format (RFC 5769 vectors) and real UDP against a loopback responder."""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netcheck.assess.media import (
    assess_media,
    clean_sample_size,
    loss_unshown,
    sample_plan,
    stats_from_detail,
    thresholds_of,
)
from netcheck.check import CheckOptions, media_probe
from netcheck.deadline import Deadline
from netcheck.models import Outcome, ProbeKind, ProbeResult, ProbeSpec, Target, interarrival_jitter
from netcheck.policy import load_policy
from netcheck.probes import _pace
from netcheck.probes import stun as stun_module
from netcheck.probes.stun import MAGIC_COOKIE, STRETCH, binding_request, parse_response, probe_stun
from tests.probes.conftest import checked
from tests.probes.test_timing import BLOCK_S, burn, busy_loop, run_without_add_reader
from tests.stun_server import StunResponder, encode_address, message

# RFC 5769 section 2.2, "Sample IPv4 Response", byte for byte (its MESSAGE-INTEGRITY
# and FINGERPRINT check out against the RFC's password and CRC-32).
RFC5769_IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96")
# RFC 5769 section 2.3, "Sample IPv6 Response", without its integrity attributes
# (the header length is adjusted accordingly).
RFC5769_IPV6_RESPONSE = bytes.fromhex(
    "010100282112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9")
RFC5769_TXID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

SPEC = ProbeSpec()
FAST = {"window_s": 0.3, "interval_s": 0.02, "answer_wait_s": 0.3, "grace_s": 0.3}


def _target(address: str = "127.0.0.1") -> Target:
    return Target("relay.example.test", address=address, workloads=("teams_media",))


def _floats(result: ProbeResult, key: str) -> list[float]:
    value = result.detail[key]
    assert isinstance(value, list)
    return [float(v) for v in value]


def _closed_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# --- wire format -------------------------------------------------------------------

def test_rfc5769_ipv4_response() -> None:
    answer = parse_response(RFC5769_IPV4_RESPONSE)
    assert answer is not None
    assert answer.transaction_id == RFC5769_TXID
    assert answer.success
    assert answer.mapped == ("192.0.2.1", 32853)


def test_rfc5769_ipv6_response() -> None:
    answer = parse_response(RFC5769_IPV6_RESPONSE)
    assert answer is not None
    assert answer.mapped == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)


def test_mapped_address_from_an_old_server() -> None:
    txid = bytes(range(12))
    answer = parse_response(message(0x0101, txid, encode_address(0x0001, "198.51.100.7", 4000, txid, False)))
    assert answer is not None and answer.mapped == ("198.51.100.7", 4000)


def test_xor_mapped_address_wins_over_mapped_address() -> None:
    txid = bytes(range(12))
    attrs = (encode_address(0x0001, "198.51.100.7", 4000, txid, False)
             + encode_address(0x0020, "203.0.113.9", 5000, txid, True))
    answer = parse_response(message(0x0101, txid, attrs))
    assert answer is not None and answer.mapped == ("203.0.113.9", 5000)


def test_error_response_is_an_answer_without_address() -> None:
    txid = bytes(range(12))
    answer = parse_response(message(0x0111, txid))
    assert answer is not None and not answer.success and answer.mapped is None


@pytest.mark.parametrize("data", [
    b"",
    RFC5769_IPV4_RESPONSE[:19],                                     # short header
    RFC5769_IPV4_RESPONSE[:-4],                                     # length field disagrees
    RFC5769_IPV4_RESPONSE[:4] + b"\xde\xad\xbe\xef" + RFC5769_IPV4_RESPONSE[8:],  # not the cookie
    b"\x00\x01" + RFC5769_IPV4_RESPONSE[2:],                        # a request
    bytes.fromhex("010100062112a442") + RFC5769_TXID + bytes.fromhex("002000080001"),  # length not /4
    bytes.fromhex("010100042112a442") + RFC5769_TXID + bytes.fromhex("00200008"),  # value missing
], ids=["empty", "short", "length", "cookie", "request", "unaligned", "truncated-attribute"])
def test_malformed_responses_are_rejected(data: bytes) -> None:
    assert parse_response(data) is None


def test_binding_request_layout() -> None:
    txid = bytes(range(12))
    req = binding_request(txid)
    assert len(req) == 20
    assert struct.unpack("!HHI", req[:8]) == (0x0001, 0, MAGIC_COOKIE)
    assert req[8:] == txid
    with pytest.raises(ValueError):
        binding_request(b"short")


@settings(database=None, max_examples=300)
@given(st.binary(max_size=120))
def test_parse_never_raises_on_noise(data: bytes) -> None:
    parse_response(data)


@settings(database=None, max_examples=300)
@given(st.integers(min_value=0, max_value=len(RFC5769_IPV4_RESPONSE) - 1), st.integers(0, 255))
def test_parse_never_raises_on_a_corrupted_answer(index: int, value: int) -> None:
    data = bytearray(RFC5769_IPV4_RESPONSE)
    data[index] = value
    parse_response(bytes(data))


# --- the probe against a real responder ------------------------------------------------

def test_answers_give_statistics_and_the_mapped_address() -> None:
    async def go() -> tuple[ProbeResult, StunResponder]:
        async with StunResponder() as stun:
            result = await probe_stun(_target(), SPEC, Deadline.after(10), ports=stun.ports, **FAST)
        return result, stun

    result, stun = asyncio.run(go())
    checked(result)
    d = result.detail
    assert result.kind is ProbeKind.STUN and result.outcome is Outcome.OK, result.reason
    assert d["port"] == stun.ports[0]
    assert d["sent"] == d["received"] == stun.requests
    assert d["loss_pct"] == 0.0
    assert d["mapped_address"] == d["local_address"] == "127.0.0.1"
    assert d["mapped_port"] == d["local_port"]
    samples = _floats(result, "samples_ms")
    assert len(samples) == d["received"]
    assert d["rtt_ms"] == pytest.approx(statistics.median(samples), abs=0.01)
    assert result.family == "ipv4"
    assert result.target.address == "127.0.0.1"
    assert f"UDP {stun.ports[0]}" in result.reason


def test_round_trips_say_which_clock_timed_them() -> None:
    async def go(kernel_clock: bool) -> ProbeResult:
        async with StunResponder() as stun:
            return await probe_stun(_target(), SPEC, Deadline.after(10), ports=stun.ports,
                                    kernel_clock=kernel_clock, **FAST)

    result = checked(asyncio.run(go(True)))
    assert result.outcome is Outcome.OK
    assert result.detail["rtt_source"] == ("kernel" if sys.platform in ("linux", "darwin") else "wall")
    result = checked(asyncio.run(go(False)))
    assert result.outcome is Outcome.OK and result.detail["rtt_source"] == "wall"


def test_on_a_loop_without_readiness_callbacks() -> None:
    """Windows' proactor loop has no add_reader: answers are read in a task, on the loop's clock."""
    async def go() -> tuple[ProbeResult, StunResponder]:
        async with StunResponder(drop_every=4) as stun:
            result = await probe_stun(_target(), SPEC, Deadline.after(10), ports=stun.ports, **FAST)
        return result, stun

    result, stun = run_without_add_reader(go())
    checked(result)
    d = result.detail
    assert result.outcome is Outcome.OK and d["rtt_source"] == "wall"
    assert d["received"] == stun.answered and d["sent"] == stun.requests
    assert d["mapped_address"] == "127.0.0.1"


_SERVE = """
import socket, sys
from tests.stun_server import encode_address, message
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
while True:
    data, addr = sock.recvfrom(2048)
    txid = data[8:20]
    sock.sendto(message(0x0101, txid, encode_address(0x0020, addr[0], addr[1], txid, True)), addr)
"""


@contextmanager
def process_responder() -> Iterator[int]:
    """A STUN responder in a process of its own: neither a blocked event loop nor the probe's
    sender threads (which share this interpreter's lock) hold its answers."""
    server = subprocess.Popen([sys.executable, "-c", _SERVE], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parents[2])
    try:
        assert server.stdout is not None
        yield int(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()


@pytest.mark.skipif(sys.platform != "linux", reason="kernel receive time stamps are checked live on Linux")
def test_busy_event_loop_does_not_inflate_kernel_round_trips() -> None:
    """The loop is blocked for 40 ms at every turn while two probes sample side by side."""
    async def sample(port: int, kernel_clock: bool) -> ProbeResult:
        return await probe_stun(_target(), SPEC, Deadline.after(30), ports=[port], window_s=0.6,
                                interval_s=0.02, answer_wait_s=2.0, grace_s=0.5, kernel_clock=kernel_clock)

    async def go(port: int) -> tuple[ProbeResult, ProbeResult]:
        async with busy_loop() as blocks:
            kernel, wall = await asyncio.gather(sample(port, True), sample(port, False))
        assert blocks[0] >= 5
        return kernel, wall

    with process_responder() as port:
        kernel, wall = asyncio.run(go(port))
    checked(kernel)
    checked(wall)
    assert kernel.outcome is Outcome.OK and wall.outcome is Outcome.OK, (kernel.reason, wall.reason)
    assert kernel.detail["rtt_source"] == "kernel" and wall.detail["rtt_source"] == "wall"
    k, w = _floats(kernel, "samples_ms"), _floats(wall, "samples_ms")
    assert k and w
    assert max(k) < BLOCK_S * 1000.0                   # the loop's stalls are not in the kernel's figure
    assert statistics.median(k) < statistics.median(w)  # they are in the wall clock's
    assert kernel.detail["rtt_ms"] == pytest.approx(statistics.median(k), abs=0.01)
    assert kernel.detail["jitter_ms"] == pytest.approx(interarrival_jitter(k), abs=0.01)


def _sender_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("netcheck-stun-")]


def test_a_blocked_event_loop_does_not_starve_the_sending() -> None:
    """The loop is held by CPU work for 0.6 s of the 1 s window: the requests still go out.

    Paced by the loop's timers, the window sent one request in those 0.6 s (about 20 of 50
    in all); the sender thread keeps sending while the loop is held.
    """
    async def go(port: int) -> ProbeResult:
        asyncio.get_running_loop().call_later(0.1, burn, 0.6)
        return await probe_stun(_target(), SPEC, Deadline.after(10), ports=[port], window_s=1.0,
                                interval_s=0.02, answer_wait_s=1.0, grace_s=0.5)

    with process_responder() as port:
        result = checked(asyncio.run(go(port)))
    d = result.detail
    assert result.outcome is Outcome.OK, result.reason
    sent = d["sent"]
    assert isinstance(sent, int) and 40 <= sent <= 51, sent
    assert d["received"] == sent  # loopback loses nothing: every request sent was matched
    assert d["window_s"] == 1.0 and d["interval_ms"] == 20.0
    assert not _sender_threads()


def test_answers_that_waited_in_the_socket_while_the_loop_was_held_are_not_lost() -> None:
    """The loop is held from early in the window until past the wait for late answers, while the sender
    thread keeps sending: the answers to some 250 requests arrive in time and wait in the socket. They are read
    before anything is counted, not called lost because the loop took them up late (a busy laptop read
    2.6 % loss on a clean path, issue 9); and what is lost, with when it was sent, is in the report."""
    async def go(port: int) -> ProbeResult:
        asyncio.get_running_loop().call_later(0.1, time.sleep, 0.8)  # held, the interpreter's lock free
        return await probe_stun(_target(), SPEC, Deadline.after(10), ports=[port], window_s=0.6,
                                interval_s=0.002, answer_wait_s=1.0, grace_s=0.25, grace_rtts=None)

    with process_responder() as port:
        result = checked(asyncio.run(go(port)))
    d = result.detail
    sent = d["sent"]
    assert isinstance(sent, int) and sent > 200, sent
    assert d["received"] == sent and d["lost_at_ms"] == [], (sent, d["received"], d["lost_at_ms"])
    late = d["sender_late_ms"]
    assert isinstance(late, float) and late >= 0


def test_a_window_short_of_its_least_requests_stretches_up_to_half_again() -> None:
    """``least``: a window that has not sent that many by its end goes on at the same pace until it has
    (a laptop that held the sender up skipped slots), at most to ``STRETCH`` of the window; one that has is
    not stretched. A 0.2 s window at 10 ms plans 20: ``least`` 25 sends 25, about 50 ms past it; ``least``
    100 stops at 0.3 s, about 30."""
    async def go(least: int) -> ProbeResult:
        async with StunResponder() as stun:
            return await probe_stun(_target(), SPEC, Deadline.after(10), ports=stun.ports, window_s=0.2,
                                    interval_s=0.01, answer_wait_s=0.5, grace_s=0.3, least=least)

    plain, short, capped = (checked(asyncio.run(go(n))).detail for n in (0, 25, 100))
    assert isinstance(plain["sent"], int) and plain["sent"] <= 21 and plain["stretched_ms"] == 0.0
    assert short["sent"] == 25 and short["received"] == 25, short["sent"]
    assert isinstance(short["stretched_ms"], float) and 0 < short["stretched_ms"] <= 100.0
    assert isinstance(capped["sent"], int) and 25 < capped["sent"] <= 31, capped["sent"]
    assert isinstance(capped["stretched_ms"], float) and capped["stretched_ms"] <= 1000 * 0.2 * (STRETCH - 1) + 1
    assert checked(asyncio.run(probe_stun(_target(), SPEC, Deadline.after(1), ports=[3478], least=-1))
                   ).outcome is Outcome.ERROR


def test_cancelled_mid_window_leaves_no_sender_and_closes_the_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    sockets: list[socket.socket] = []
    connected = stun_module._connected_socket

    def recorded(*args: Any) -> socket.socket:
        sockets.append(connected(*args))
        return sockets[-1]

    monkeypatch.setattr(stun_module, "_connected_socket", recorded)

    async def go() -> tuple[int, int, int]:
        async with StunResponder() as stun:
            task = asyncio.create_task(probe_stun(_target(), SPEC, Deadline.after(10), ports=stun.ports,
                                                  window_s=5.0, interval_s=0.02, answer_wait_s=5.0))
            await asyncio.sleep(0.3)
            alive = len(_sender_threads())
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            after_cancel = stun.requests
            await asyncio.sleep(0.1)
            return alive, after_cancel, stun.requests

    alive, after_cancel, later = asyncio.run(go())
    assert alive == 1  # the window was being sent from its thread
    assert not _sender_threads()
    assert len(sockets) == 1 and sockets[0].fileno() == -1
    assert after_cancel >= 1 and later == after_cancel  # nothing sent after the cancellation


def test_sampling_stays_within_the_window() -> None:
    async def go() -> ProbeResult:
        async with StunResponder() as stun:
            return await probe_stun(_target(), SPEC, Deadline.after(10), ports=stun.ports,
                                    window_s=0.2, interval_s=0.02, grace_s=0.3)

    sent = checked(asyncio.run(go())).detail["sent"]
    assert isinstance(sent, int) and 1 <= sent <= 11


def test_dropped_requests_are_counted_as_loss() -> None:
    async def go() -> tuple[ProbeResult, StunResponder]:
        async with StunResponder(drop_every=4) as stun:
            result = await probe_stun(_target(), SPEC, Deadline.after(10), ports=stun.ports, **FAST)
        return result, stun

    result, stun = asyncio.run(go())
    checked(result)
    d = result.detail
    assert result.outcome is Outcome.OK
    sent, received = d["sent"], d["received"]
    assert isinstance(sent, int) and isinstance(received, int)
    assert stun.dropped >= 1
    assert sent - received == stun.dropped
    assert d["loss_pct"] == pytest.approx(100.0 * stun.dropped / sent, abs=0.001)
    stats = stats_from_detail(d)
    assert stats is not None and stats.sent == sent


def test_the_full_sample_counts_every_request_and_keeps_the_round_trips_at_the_stride() -> None:
    """The 1-second window as the check plans it (a request every 2.5 ms, round trips kept for every 8th)
    against a real UDP STUN server on loopback that ignores every 25th request (4 %): the loss is counted
    over every request sent, the samples are the stride's only, and the verdict follows the counts. The grace
    is long (the wait ends when the last answer is in) so that a loaded machine's late answers are not loss."""
    policy = load_policy()
    thresholds = thresholds_of(policy)
    interval, every = sample_plan(thresholds, 1.0, policy.media_stride_ms / 1000)
    assert every > 1

    async def go(drop_every: int) -> tuple[ProbeResult, StunResponder]:
        async with StunResponder(drop_every=drop_every) as stun:
            result = await probe_stun(_target(), SPEC, Deadline.after(10), window_s=1.0, interval_s=interval,
                                      every=every, ports=stun.ports, answer_wait_s=1.0, grace_s=2.0,
                                      grace_rtts=None)
        return result, stun

    for drop_every in (25, 0):
        result, stun = asyncio.run(go(drop_every))
        checked(result)
        d = result.detail
        assert result.outcome is Outcome.OK and d["every"] == every and d["interval_ms"] == 2.5
        sent, received = d["sent"], d["received"]
        assert isinstance(sent, int) and isinstance(received, int)
        assert sent == stun.requests and sent - received == stun.dropped  # every request counted
        assert stun.dropped == sent // drop_every if drop_every else stun.dropped == 0
        samples = _floats(result, "samples_ms")
        # the stride's slots only: at most one a stride of the window, fewer than the answers
        assert 0 < len(samples) <= math.ceil(1.0 / (interval * every)) + 1 and len(samples) < received
        assert d["rtt_ms"] == pytest.approx(statistics.median(samples), abs=0.01)
        stats = stats_from_detail(d)
        assert stats is not None and (stats.sent, stats.received) == (sent, received)
        passed, _ = assess_media(stats, thresholds)
        unshown = loss_unshown(stats, thresholds)
        if drop_every:  # 4 % of a full sample shows loss over the mark; of a stalled one it may only hedge
            assert not passed or unshown is not None
        else:  # none lost: ok, hedged only when a loaded machine stalled the window under 299
            assert passed and (unshown is None) is (sent >= clean_sample_size(thresholds))


def test_the_wait_for_late_answers_follows_the_round_trips_measured() -> None:
    """After the window the probe waits ``GRACE_RTTS`` of the slowest round trip it measured (at least
    ``GRACE_FLOOR_S``, at most ``grace_s``) for the answers in flight: on a lossy link one is lost in most
    windows, and a fixed wait was the lossy check's extra wall time. An answer held 1.5 s on loopback (round
    trips well under a millisecond) is then lost; with a fixed 2 s wait (``grace_rtts=None``) it counts."""
    assert stun_module._grace([], 0.5, 4) == 0.5  # nothing measured: the most
    assert stun_module._grace([0.4, 12.0], 0.5, 4) == stun_module.GRACE_FLOOR_S
    assert stun_module._grace([30.0, 100.0], 0.5, 4) == pytest.approx(0.4)
    assert stun_module._grace([300.0], 0.5, 4) == 0.5

    async def go(grace_rtts: float | None) -> tuple[ProbeResult, StunResponder]:
        async with StunResponder(delays_s=(0.0,) * 5 + (1.5,)) as stun:  # every 6th answer 1.5 s late
            result = await probe_stun(_target(), SPEC, Deadline.after(10), window_s=0.3, interval_s=0.02,
                                      answer_wait_s=0.3, grace_s=2.0, grace_rtts=grace_rtts, ports=stun.ports)
        return result, stun

    for grace_rtts, late_lost in ((stun_module.GRACE_RTTS, True), (None, False)):
        result, stun = asyncio.run(go(grace_rtts))
        d = checked(result).detail
        sent, received = d["sent"], d["received"]
        assert isinstance(sent, int) and isinstance(received, int) and sent == stun.requests
        assert sent - received == (sent // 6 if late_lost else 0), (grace_rtts, sent, received)


def test_delay_shows_in_the_round_trip() -> None:
    async def go() -> ProbeResult:
        async with StunResponder(delays_s=(0.05,)) as stun:
            return await probe_stun(_target(), SPEC, Deadline.after(10), ports=stun.ports, **FAST)

    result = checked(asyncio.run(go()))
    samples = _floats(result, "samples_ms")
    assert result.outcome is Outcome.OK and samples
    # The responder holds every answer for 50 ms, so no round trip can be shorter.
    assert min(samples) >= 50.0
    rtt = result.detail["rtt_ms"]
    assert isinstance(rtt, float) and rtt >= 50.0


def test_uneven_delays_show_as_jitter() -> None:
    async def go() -> ProbeResult:
        async with StunResponder(delays_s=(0.0, 0.04)) as stun:
            return await probe_stun(_target(), SPEC, Deadline.after(10), ports=stun.ports, **FAST)

    result = checked(asyncio.run(go()))
    samples = _floats(result, "samples_ms")
    assert result.outcome is Outcome.OK
    assert max(samples) >= 40.0
    jitter = result.detail["jitter_ms"]
    assert isinstance(jitter, float) and jitter > 0.0
    assert jitter == pytest.approx(interarrival_jitter(samples), abs=0.01)


def test_silent_relay_means_udp_blocked() -> None:
    async def go() -> ProbeResult:
        async with StunResponder(ports=4, silent=True) as stun:
            return await probe_stun(_target(), SPEC, Deadline.after(10), ports=stun.ports, **FAST)

    result = checked(asyncio.run(go()))
    assert result.outcome is Outcome.UDP_BLOCKED
    assert "No answer over UDP" in result.reason
    assert "fall back to TCP 443" in result.reason
    assert len(result.detail["ports_tried"]) == 4  # type: ignore[arg-type]
    assert result.detail["ports_untested"] == []


def test_falls_back_to_the_next_port() -> None:
    async def go() -> tuple[ProbeResult, StunResponder]:
        async with StunResponder(ports=3, answer_on={1}) as stun:
            result = await probe_stun(_target(), SPEC, Deadline.after(10), ports=stun.ports, **FAST)
        return result, stun

    result, stun = asyncio.run(go())
    checked(result)
    assert result.outcome is Outcome.OK, result.reason
    assert result.detail["port"] == stun.ports[1]
    assert result.detail["ports_tried"] == stun.ports[:2]
    assert f"no answer on UDP {stun.ports[0]}" in result.reason


def test_refused_port_is_skipped_at_once() -> None:
    closed = _closed_udp_port()

    async def go() -> tuple[ProbeResult, StunResponder]:
        async with StunResponder() as stun:
            result = await probe_stun(_target(), SPEC, Deadline.after(10), ports=[closed, *stun.ports],
                                      **FAST)
        return result, stun

    result, stun = asyncio.run(go())
    checked(result)
    assert result.outcome is Outcome.OK
    assert result.detail["port"] == stun.ports[0]
    if sys.platform == "linux":  # loopback ICMP port unreachable is reported as ECONNREFUSED
        assert result.detail["ports_refused"] == [closed]


def test_all_refused_is_udp_blocked() -> None:
    closed = [_closed_udp_port(), _closed_udp_port()]
    result = checked(asyncio.run(probe_stun(_target(), SPEC, Deadline.after(10), ports=closed, **FAST)))
    assert result.outcome is Outcome.UDP_BLOCKED
    assert set(result.detail["ports_tried"]) == set(closed)  # type: ignore[arg-type]


def test_junk_datagrams_are_ignored() -> None:
    async def go() -> ProbeResult:
        async with StunResponder(junk=True) as stun:
            return await probe_stun(_target(), SPEC, Deadline.after(10), ports=stun.ports, **FAST)

    result = checked(asyncio.run(go()))
    d = result.detail
    assert result.outcome is Outcome.OK
    assert d["sent"] == d["received"]
    assert d["loss_pct"] == 0.0
    received = d["received"]
    assert isinstance(received, int) and d["ignored"] == 5 * received


def test_mapped_address_attribute_from_an_old_server() -> None:
    async def go() -> ProbeResult:
        async with StunResponder(xor=False) as stun:
            return await probe_stun(_target(), SPEC, Deadline.after(10), ports=stun.ports, **FAST)

    result = checked(asyncio.run(go()))
    assert result.outcome is Outcome.OK and result.detail["mapped_address"] == "127.0.0.1"


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_loopback() -> None:
    async def go() -> ProbeResult:
        async with StunResponder("::1") as stun:
            return await probe_stun(_target("::1"), SPEC, Deadline.after(10), ports=stun.ports, **FAST)

    result = checked(asyncio.run(go()))
    assert result.outcome is Outcome.OK, result.reason
    assert result.family == "ipv6"
    assert result.detail["mapped_address"] == "::1"


def test_host_is_resolved_when_there_is_no_address() -> None:
    async def go() -> ProbeResult:
        async with StunResponder() as stun:
            return await probe_stun(Target("127.0.0.1"), SPEC, Deadline.after(10), ports=stun.ports,
                                    **FAST)

    result = checked(asyncio.run(go()))
    assert result.outcome is Outcome.OK
    assert result.target.address == "127.0.0.1"
    assert "resolve" in result.phases


@pytest.mark.skipif(sys.platform != "linux", reason="Linux refuses UDP to broadcast without SO_BROADCAST")
def test_os_refusing_to_send_is_network_unreachable() -> None:
    # connect() to the broadcast address fails with EACCES before any packet leaves.
    result = checked(asyncio.run(probe_stun(_target("255.255.255.255"), SPEC, Deadline.after(10),
                                    ports=[3478], **FAST)))
    assert result.outcome is Outcome.NETWORK_UNREACHABLE
    assert "refused to send" in result.reason


def test_expired_deadline_sends_nothing() -> None:
    async def go() -> tuple[ProbeResult, StunResponder]:
        async with StunResponder() as stun:
            result = await probe_stun(_target(), SPEC, Deadline.after(0), ports=stun.ports, **FAST)
            await asyncio.sleep(0.05)
        return result, stun

    result, stun = asyncio.run(go())
    checked(result)
    assert result.outcome is Outcome.TIMEOUT
    assert stun.requests == 0


def test_deadline_before_the_ports_are_done_is_not_called_blocked() -> None:
    async def go() -> ProbeResult:
        async with StunResponder(ports=4, silent=True) as stun:
            return await probe_stun(_target(), SPEC, Deadline.after(0.5), ports=stun.ports,
                                    window_s=0.3, interval_s=0.02, answer_wait_s=0.4, grace_s=0.3)

    result = checked(asyncio.run(go()))
    assert result.outcome is Outcome.TIMEOUT
    assert result.detail["ports_untested"]
    assert "deadline" in result.reason


@pytest.mark.parametrize("ports", [(), (0,), (70000,)])
def test_bad_settings_are_an_error(ports: tuple[int, ...]) -> None:
    result = checked(asyncio.run(probe_stun(_target(), SPEC, Deadline.after(1), ports=ports)))
    assert result.outcome is Outcome.ERROR


def test_not_an_ip_address() -> None:
    result = checked(asyncio.run(probe_stun(_target("relay"), SPEC, Deadline.after(1), ports=[3478])))
    assert result.outcome is Outcome.ERROR


# --- the check's window, taken again after its own burst (issue 9) ------------------------------------------

class _QueuedUntilTheBurstIsOver:
    """Answer delays: up to 80 ms in a cycle (queues) until :meth:`clear`, none after."""

    def __init__(self) -> None:
        self.cycle, self.queued = itertools.cycle([0.0, 0.0, 0.08]), True

    def __iter__(self) -> Iterator[float]:
        return self

    def __next__(self) -> float:
        return next(self.cycle) if self.queued else 0.0

    def clear(self) -> None:
        self.queued = False


class _DropOutUntilTheBurstIsOver(_QueuedUntilTheBurstIsOver):
    """Answer delays: the 101st to 140th request in a row answered too late to count (a drop-out) until
    :meth:`clear`, none after."""

    def __init__(self) -> None:
        super().__init__()
        self.cycle = itertools.chain([0.0] * 100, [30.0] * 40, itertools.repeat(0.0))


def _check_window(delays: Iterator[float], *, burst_over: bool = True, deadline_s: float = 10.0
                  ) -> tuple[ProbeResult, StunResponder]:
    """The check's media probe (:func:`netcheck.check.media_probe`: the policy's 1-second window of 400
    requests) against a real relay whose answers are delayed by ``delays``, one per request. The check's burst
    ends once the first window has (the relay has heard nothing for 0.3 s; a queued relay is then cleared)
    when ``burst_over``, else never."""
    probe = media_probe(CheckOptions())
    assert probe is not None

    async def burst(pace: _pace.Pace, stun: StunResponder) -> None:
        heard = -1
        while heard != stun.requests or not heard:
            heard = stun.requests
            await asyncio.sleep(0.3)
        if isinstance(delays, _QueuedUntilTheBurstIsOver):
            delays.clear()
        pace.burst_over.set()

    async def go() -> tuple[ProbeResult, StunResponder]:
        pace = _pace.Pace()
        with _pace.use(pace):
            async with StunResponder() as stun:
                stun.delays = delays
                ending = asyncio.ensure_future(burst(pace, stun)) if burst_over else None
                result = await probe(_target(), SPEC, Deadline.after(deadline_s), tuple(stun.ports))
                if ending is not None:
                    ending.cancel()
                    await asyncio.gather(ending, return_exceptions=True)
        return result, stun

    return asyncio.run(go())


def test_a_queued_window_is_taken_again_once_the_burst_is_over_and_both_are_kept() -> None:
    result, stun = _check_window(_QueuedUntilTheBurstIsOver())
    d = checked(result).detail
    assert d["quiet_window"] is True
    loaded, sent = d["loaded_sent"], d["sent"]
    assert isinstance(loaded, int) and isinstance(sent, int) and stun.requests >= loaded + sent
    assert max(_floats(result, "loaded_samples_ms")) >= 80.0 > max(_floats(result, "samples_ms"))
    stats = stats_from_detail(d)
    assert stats is not None and assess_media(stats, thresholds_of(load_policy()))[0]  # the quiet one passes


def test_a_clean_window_is_not_taken_again() -> None:
    result, stun = _check_window(itertools.repeat(0.0))
    d = checked(result).detail
    assert "quiet_window" not in d and "loaded_sent" not in d
    assert stun.requests == d["sent"]  # one window, nothing more


def test_a_window_with_a_drop_out_is_taken_again_and_one_that_loses_here_and_there_is_not() -> None:
    """40 requests in a row lost while the check's burst runs: the window is taken again once it is over,
    and the status follows the quiet one. Loss spread over the window (every 10th request) is a lossy line:
    one window, degraded."""
    result, stun = _check_window(_DropOutUntilTheBurstIsOver())
    d = checked(result).detail
    assert d["quiet_window"] is True and d["loaded_dropout_lost"] == 40, d.get("loaded_dropout_lost")
    assert d["received"] == d["sent"] and stun.requests > d["sent"]
    lossy, stun = _check_window(itertools.cycle([0.0] * 9 + [30.0]))
    d = checked(lossy).detail
    assert "quiet_window" not in d and stun.requests == d["sent"] and d["dropout_lost"] == 1
    stats = stats_from_detail(d)
    assert stats is not None and not assess_media(stats, thresholds_of(load_policy()))[0]


def test_a_queued_window_is_marked_unconfirmed_when_the_burst_never_ends_before_the_deadline() -> None:
    result, stun = _check_window(itertools.cycle([0.0, 0.0, 0.08]), burst_over=False, deadline_s=3.0)
    d = checked(result).detail
    assert d["quiet_window"] is False and "loaded_sent" not in d and stun.requests == d["sent"]
