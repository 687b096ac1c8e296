"""Kernel time stamps: the parsers on packed structs, and real sockets on loopback.

The busy-loop helpers here are shared with the TCP and STUN probe tests: a
coroutine that blocks the event loop with CPU work (no sleeping) again and
again, as hundreds of concurrent probes do on a small laptop.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import struct
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from netcheck.probes import _timing
from netcheck.probes._timing import (
    LINUX_TCP_INFO_SIZE,
    MACOS_TCP_CONNECTION_INFO_SIZE,
    RxStampOption,
    Stamp,
    UdpChannel,
    darwin_timeval_ns,
    elapsed_ms,
    handshake_rtt_ms,
    linux_handshake_rtt_ms,
    macos_handshake_rtt_ms,
    pick,
    rtt_source,
    rx_timestamp_ns,
    timespec_ns,
)
from tests.servers import V4, StreamServer, tls_only

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="kernel time stamps checked live on Linux")

#: How long the busy loop holds the event loop each time (longer than any loopback round trip).
BLOCK_S = 0.04


def burn(seconds: float) -> None:
    """Hold the CPU (and the event loop) for ``seconds``, without sleeping."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@asynccontextmanager
async def busy_loop(block_s: float = BLOCK_S) -> AsyncIterator[list[int]]:
    """While inside, the loop is blocked for ``block_s`` at every turn; yields [blocks so far]."""
    blocks = [0]
    stop = asyncio.Event()

    async def hog() -> None:
        while not stop.is_set():
            burn(block_s)
            blocks[0] += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(hog())
    try:
        yield blocks
    finally:
        stop.set()
        await task


class NoReaderLoop(asyncio.SelectorEventLoop):
    """A real event loop without readiness callbacks, like Windows' proactor loop."""

    def add_reader(self, fd: Any, callback: Any, *args: Any) -> None:  # type: ignore[override]
        raise NotImplementedError


def run_without_add_reader(coro: Any) -> Any:
    with asyncio.Runner(loop_factory=NoReaderLoop) as runner:
        return runner.run(coro)


# --- Linux struct tcp_info -------------------------------------------------------------

def _linux_tcp_info(rtt_us: int, total_retrans: int = 0, state: int = 1) -> bytes:
    raw = bytearray(LINUX_TCP_INFO_SIZE)
    raw[0] = state
    struct.pack_into("=I", raw, 68, rtt_us)                # tcpi_rtt
    struct.pack_into("=I", raw, 64, 64_000)                # tcpi_rcv_ssthresh, not read
    struct.pack_into("=I", raw, 72, 25_000)                # tcpi_rttvar, not read
    struct.pack_into("=I", raw, 96, 65_483)                # tcpi_rcv_space, not read
    struct.pack_into("=I", raw, 100, total_retrans)        # tcpi_total_retrans
    return bytes(raw)


def test_linux_rtt_is_read_in_microseconds() -> None:
    assert linux_handshake_rtt_ms(_linux_tcp_info(50_123)) == pytest.approx(50.123)


def test_linux_retransmitted_syn_gives_no_kernel_figure() -> None:
    # Measured in a lab namespace with the first SYN dropped: tcpi_rtt 50000, total_retrans 1,
    # while connect() took 1055 ms; the wall clock is the truthful figure then.
    assert linux_handshake_rtt_ms(_linux_tcp_info(50_000, total_retrans=1)) is None


def test_linux_no_rtt_or_short_struct() -> None:
    assert linux_handshake_rtt_ms(_linux_tcp_info(0)) is None
    assert linux_handshake_rtt_ms(_linux_tcp_info(50_000)[:100]) is None
    assert linux_handshake_rtt_ms(b"") is None


def test_linux_struct_from_a_newer_kernel_is_read_the_same() -> None:
    assert linux_handshake_rtt_ms(_linux_tcp_info(7_500) + bytes(128)) == pytest.approx(7.5)


# --- macOS struct tcp_connection_info -----------------------------------------------------

#: xnu bsd/netinet/tcp.h, field by field: state, snd_wscale, rcv_wscale, pad, options, flags, rto,
#: maxseg, snd_ssthresh, snd_cwnd, snd_wnd, snd_sbbytes, rcv_wnd, rttcur, srtt, rttvar, tfo bits
#: (ending at 56, so no padding before) then seven u_int64_t aligned to 8 (txretransmitpackets last).
_MACOS_LAYOUT = struct.Struct("=BBBx13I7Q")


def _macos_info(srtt_ms: int, retransmitted: int = 0, flags: int = 0) -> bytes:
    return _MACOS_LAYOUT.pack(4, 6, 6, 0x7, flags, 230, 1448, 1 << 30, 14480, 131072, 0, 131072,
                              srtt_ms + 1, srtt_ms, 4, 0, 3, 200, 0, 2, 300, 0, retransmitted)


def test_macos_layout_matches_the_header() -> None:
    assert _MACOS_LAYOUT.size == MACOS_TCP_CONNECTION_INFO_SIZE == 112


def test_macos_srtt_is_in_milliseconds() -> None:
    assert macos_handshake_rtt_ms(_macos_info(48)) == 48.0


@pytest.mark.parametrize("info", [
    _macos_info(0),                                 # below a millisecond, or no sample
    _macos_info(48, retransmitted=1),               # the SYN went twice
    _macos_info(48, flags=0x1),                     # TCPCI_FLAG_LOSSRECOVERY
    _macos_info(48)[:104],                          # short
], ids=["no-rtt", "retransmitted", "loss-recovery", "short"])
def test_macos_no_clean_figure(info: bytes) -> None:
    assert macos_handshake_rtt_ms(info) is None


# --- receive time stamps -----------------------------------------------------------------

def test_timespec() -> None:
    assert timespec_ns(struct.pack("@ll", 1_700_000_000, 123_456_789)) == 1_700_000_000_123_456_789
    assert timespec_ns(struct.pack("@ll", 1_700_000_000, 1_000_000_000)) is None
    assert timespec_ns(struct.pack("@ll", 0, 5)) is None
    assert timespec_ns(b"\x00" * 4) is None


def test_darwin_timeval() -> None:
    # 16 bytes on the wire (tv_usec is an int32 followed by padding).
    data = struct.pack("@li", 1_700_000_000, 654_321) + bytes(4)
    assert darwin_timeval_ns(data) == 1_700_000_000_654_321_000
    assert darwin_timeval_ns(struct.pack("@li", 1_700_000_000, 1_000_000)) is None
    assert darwin_timeval_ns(b"\x01") is None


def test_timestamp_found_among_other_control_messages() -> None:
    option = RxStampOption(level=1, option=35, cmsg_type=35, parse=timespec_ns, size=16)
    stamp = struct.pack("@ll", 1_700_000_000, 42)
    ancdata = [(0, 8, b"\x00" * 4), (1, 35, stamp)]
    assert rx_timestamp_ns(ancdata, option) == 1_700_000_000_000_000_042
    assert rx_timestamp_ns([(0, 8, b"\x00" * 4)], option) is None
    assert rx_timestamp_ns([], option) is None


# --- choosing a clock -----------------------------------------------------------------------

@pytest.mark.parametrize(("wall", "kernel", "expected"), [
    (120.0, 50.0, (50.0, True)),        # the loop was late: the kernel's figure
    (50.2, 50.9, (50.9, True)),         # within the clock granularity
    (50.0, 52.0, (50.0, False)),        # longer than the interval around it: not a measurement
    (50.0, -3.0, (50.0, False)),        # the realtime clock stepped back
    (50.0, None, (50.0, False)),        # nothing from the kernel
])
def test_pick(wall: float, kernel: float | None, expected: tuple[float, bool]) -> None:
    assert pick(wall, kernel) == expected


def test_elapsed_prefers_the_kernel_stamps() -> None:
    sent = Stamp(10.000, 1_700_000_000_000_000_000)
    received = Stamp(10.120, 1_700_000_000_050_000_000)  # read 120 ms later, arrived after 50 ms
    for stamps, figure, from_kernel in [((sent, received), 50.0, True),
                                        ((sent, Stamp(10.120)), 120.0, False),
                                        ((Stamp(10.0), received), 120.0, False)]:
        rtt, kernel = elapsed_ms(*stamps)
        assert rtt == pytest.approx(figure) and kernel is from_kernel


@pytest.mark.parametrize(("kernel", "total", "source"), [
    (3, 3, "kernel"), (0, 3, "wall"), (2, 3, "mixed"), (0, 0, None)])
def test_rtt_source(kernel: int, total: int, source: str | None) -> None:
    assert rtt_source(kernel, total) == source


# --- live: TCP -------------------------------------------------------------------------------

async def _connect(port: int) -> tuple[float, float | None, bytes]:
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setblocking(False)
        start = time.perf_counter()
        await loop.sock_connect(sock, (V4, port))
        wall_ms = (time.perf_counter() - start) * 1000.0
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, LINUX_TCP_INFO_SIZE)
        return wall_ms, handshake_rtt_ms(sock), raw


@linux_only
def test_kernel_handshake_rtt_on_loopback() -> None:
    with StreamServer(tls_only) as server:
        wall_ms, kernel_ms, raw = asyncio.run(_connect(server.port))
    assert raw[0] == 1  # tcpi_state: TCP_ESTABLISHED, so the struct is read where it should be
    assert kernel_ms is not None
    assert 0.0 < kernel_ms <= wall_ms


@linux_only
def test_kernel_handshake_rtt_ignores_a_busy_loop() -> None:
    async def go() -> list[tuple[float, float | None, bytes]]:
        async with busy_loop() as blocks:
            samples = [await _connect(server.port) for _ in range(5)]
        assert blocks[0] >= 5
        return samples

    with StreamServer(tls_only) as server:
        samples = asyncio.run(go())
    walls = [w for w, _, _ in samples]
    kernels = [k for _, k, _ in samples]
    assert all(k is not None for k in kernels)
    kernel = [k for k in kernels if k is not None]
    assert max(kernel) < BLOCK_S * 1000.0                    # the blocks are not in the kernel's figure
    assert statistics.median(kernel) < statistics.median(walls)  # they are in the wall clock's


# --- live: UDP -------------------------------------------------------------------------------

class _Echo:
    """A UDP echo on loopback, read from the same event loop (so it answers when the loop lets it)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((V4, 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data, addr = await loop.sock_recvfrom(self.sock, 2048)
            self.sock.sendto(data, addr)


async def _exchange(kernel_clock: bool, count: int = 5) -> tuple[list[tuple[Stamp, Stamp, Stamp]], bool]:
    """Send ``count`` datagrams to an echo: (sent, arrived, read back) stamps per datagram."""
    echo = _Echo()
    server = asyncio.create_task(echo.serve())
    received: dict[bytes, Stamp] = {}
    got = asyncio.Event()
    errors: list[OSError] = []

    def on_datagram(data: bytes, arrived: Stamp) -> None:
        received[data] = arrived
        got.set()

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect((V4, echo.port))
    channel = UdpChannel(sock, on_datagram, errors.append, kernel_clock=kernel_clock)
    channel.start()
    out: list[tuple[Stamp, Stamp, Stamp]] = []
    try:
        for i in range(count):
            data = str(i).encode()
            got.clear()
            sent = channel.send(data)
            assert sent is not None
            await asyncio.wait_for(got.wait(), 5)
            out.append((sent, received[data], Stamp.now()))
    finally:
        await channel.aclose()
        server.cancel()
        await asyncio.wait({server})
        echo.sock.close()
    assert not errors
    return out, channel.kernel_clock


@linux_only
def test_udp_arrival_stamped_by_the_kernel() -> None:
    exchanges, kernel = asyncio.run(_exchange(kernel_clock=True))
    assert kernel
    for sent, arrived, after in exchanges:
        assert sent.kernel_ns is not None and arrived.kernel_ns is not None and after.kernel_ns is not None
        # On one clock (CLOCK_REALTIME): sent, then arrived, then read back by us.
        assert sent.kernel_ns <= arrived.kernel_ns <= after.kernel_ns
        rtt, from_kernel = elapsed_ms(sent, arrived)
        assert from_kernel and rtt <= (arrived.wall - sent.wall) * 1000.0 + 1.0


def test_udp_on_the_loop_clock_when_asked() -> None:
    exchanges, kernel = asyncio.run(_exchange(kernel_clock=False))
    assert not kernel
    assert all(arrived.kernel_ns is None for _, arrived, _ in exchanges)
    assert all(elapsed_ms(sent, arrived)[1] is False for sent, arrived, _ in exchanges)


def test_udp_on_a_loop_without_readiness_callbacks() -> None:
    exchanges, kernel = run_without_add_reader(_exchange(kernel_clock=True))
    assert not kernel and len(exchanges) == 5
    assert all(arrived.kernel_ns is None and arrived.wall >= sent.wall for sent, arrived, _ in exchanges)


@pytest.mark.parametrize("no_reader", [False, True], ids=["selector", "no-add_reader"])
@pytest.mark.skipif(sys.platform != "linux", reason="loopback port unreachable reported as ECONNREFUSED")
def test_udp_port_unreachable_is_reported(no_reader: bool) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((V4, 0))
        closed = int(probe.getsockname()[1])

    async def go() -> list[OSError]:
        errors: list[OSError] = []
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect((V4, closed))
        channel = UdpChannel(sock, lambda data, arrived: None, errors.append)
        channel.start()
        try:
            for _ in range(20):
                channel.send(b"x")
                await asyncio.sleep(0.02)
                if errors:
                    break
        finally:
            await channel.aclose()
        return errors

    errors = run_without_add_reader(go()) if no_reader else asyncio.run(go())
    assert errors and isinstance(errors[0], ConnectionRefusedError)


def test_platform_options_are_consistent() -> None:
    # The per-OS fence either names both options or none (Windows).
    assert (_timing._TCP_INFO is None) == (_timing._RX_STAMP is None)
    if sys.platform == "linux":
        assert _timing._TCP_INFO is not None and _timing._TCP_INFO.option == socket.TCP_INFO
