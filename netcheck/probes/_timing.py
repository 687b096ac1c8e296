"""Round trips timed by the kernel, so a busy event loop does not inflate them.

netcheck runs hundreds of probes in one event loop. A time stamp taken when a
callback finally runs includes however long the loop took to get there (tens
of milliseconds on a loaded loop), so round trips timed that way grow with the
load on the laptop, not with the network. The kernel notes the time as packets
arrive, independently of the loop:

* TCP: the kernel times the handshake itself (SYN sent, SYN-ACK received) as
  the connection's first RTT sample, readable once ``connect`` completes:
  Linux ``TCP_INFO`` (``struct tcp_info``, ``tcpi_rtt`` in microseconds),
  macOS ``TCP_CONNECTION_INFO`` (``struct tcp_connection_info``, ``tcpi_srtt``
  in milliseconds). See :func:`handshake_rtt_ms`.
* UDP: each datagram's arrival time, in the ancillary data of ``recvmsg``:
  Linux ``SO_TIMESTAMPNS`` (``struct timespec``), macOS ``SO_TIMESTAMP``
  (``struct timeval``), both on CLOCK_REALTIME, compared with
  :func:`time.time_ns` read immediately before sending. See :class:`UdpChannel`.

Where the kernel has no figure (Windows; an option refused; a handshake whose
SYN was retransmitted, where the wall clock is the truthful connect time) the
loop's clock (:func:`time.perf_counter`) is used, and results say which clock
each figure came from (:func:`rtt_source`). A kernel figure is only trusted
if it fits inside the wall-clock interval around it (:func:`pick`).

The parsers are pure (bytes in, figure out) and tested on packed structs; the
per-OS part is only which socket option to ask for, fenced below.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

KERNEL = "kernel"
WALL = "wall"
MIXED = "mixed"

#: How far a kernel figure may exceed the wall-clock interval around it (clock
#: granularity: macOS reports the handshake RTT in whole milliseconds).
SLACK_MS = 1.0

#: Datagrams read per readiness callback, so a flood cannot hold the loop.
_READS_PER_WAKE = 64
_DATAGRAM_MAX = 65535


# --- parsers (pure) ---------------------------------------------------------------

_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")

#: Linux ``struct tcp_info`` (include/uapi/linux/tcp.h), native byte order:
#: ``tcpi_rtt`` (smoothed RTT, microseconds) at 68, ``tcpi_total_retrans`` at 100.
#: Both exist since Linux 2.6; checked with offsetof() against this machine's header.
LINUX_TCP_INFO_SIZE = 104
_LINUX_RTT_AT = 68
_LINUX_TOTAL_RETRANS_AT = 100

#: macOS ``struct tcp_connection_info`` (xnu bsd/netinet/tcp.h), native byte order:
#: ``tcpi_flags`` at 8, ``tcpi_srtt`` (milliseconds) at 44, ``tcpi_txretransmitpackets``
#: (u_int64_t, aligned to 8) at 104; 112 bytes in all.
MACOS_TCP_CONNECTION_INFO_SIZE = 112
_MACOS_FLAGS_AT = 8
_MACOS_SRTT_AT = 44
_MACOS_TXRETRANSMITPACKETS_AT = 104
_TCPCI_FLAG_LOSSRECOVERY = 0x1


def linux_handshake_rtt_ms(info: bytes) -> float | None:
    """The RTT in ms from a Linux ``struct tcp_info`` read right after connect.

    None when the kernel has no clean sample: too short a struct, no RTT yet, or
    a retransmitted SYN (the connect then took a retransmission timeout longer
    than the kernel's figure says).
    """
    if len(info) < LINUX_TCP_INFO_SIZE:
        return None
    rtt_us: int = _U32.unpack_from(info, _LINUX_RTT_AT)[0]
    retransmitted: int = _U32.unpack_from(info, _LINUX_TOTAL_RETRANS_AT)[0]
    if rtt_us == 0 or retransmitted:
        return None
    return rtt_us / 1000.0


def macos_handshake_rtt_ms(info: bytes) -> float | None:
    """The RTT in ms from a macOS ``struct tcp_connection_info`` read right after connect.

    None as for Linux: short struct, no RTT (sub-millisecond RTTs read as 0 ms and
    are left to the wall clock), a retransmission or a retransmission under way.
    """
    if len(info) < MACOS_TCP_CONNECTION_INFO_SIZE:
        return None
    flags: int = _U32.unpack_from(info, _MACOS_FLAGS_AT)[0]
    srtt_ms: int = _U32.unpack_from(info, _MACOS_SRTT_AT)[0]
    retransmitted: int = _U64.unpack_from(info, _MACOS_TXRETRANSMITPACKETS_AT)[0]
    if srtt_ms == 0 or retransmitted or flags & _TCPCI_FLAG_LOSSRECOVERY:
        return None
    return float(srtt_ms)


_TIMESPEC = struct.Struct("@ll")  # struct timespec {time_t tv_sec; long tv_nsec;} (Linux)
_DARWIN_TIMEVAL = struct.Struct("@li")  # struct timeval {time_t tv_sec; int32 tv_usec;} (macOS)


def timespec_ns(data: bytes) -> int | None:
    """A native ``struct timespec`` (``SCM_TIMESTAMPNS``) as nanoseconds."""
    if len(data) < _TIMESPEC.size:
        return None
    sec, nsec = _TIMESPEC.unpack_from(data)
    if sec <= 0 or not 0 <= nsec < 1_000_000_000:
        return None
    return int(sec) * 1_000_000_000 + int(nsec)


def darwin_timeval_ns(data: bytes) -> int | None:
    """A macOS ``struct timeval`` (``SCM_TIMESTAMP``) as nanoseconds."""
    if len(data) < _DARWIN_TIMEVAL.size:
        return None
    sec, usec = _DARWIN_TIMEVAL.unpack_from(data)
    if sec <= 0 or not 0 <= usec < 1_000_000:
        return None
    return int(sec) * 1_000_000_000 + int(usec) * 1000


@dataclass(frozen=True)
class RxStampOption:
    """The socket option that asks for receive time stamps, and the control message carrying them."""

    level: int
    option: int
    cmsg_type: int
    parse: Callable[[bytes], int | None]
    size: int  # bytes of the payload, for the ancillary buffer


def rx_timestamp_ns(ancdata: list[tuple[int, int, bytes]], stamp: RxStampOption) -> int | None:
    """The kernel's arrival time (ns, CLOCK_REALTIME) from ``recvmsg`` ancillary data, if there."""
    for level, kind, data in ancdata:
        if level == stamp.level and kind == stamp.cmsg_type:
            return stamp.parse(data)
    return None


def pick(wall_ms: float, kernel_ms: float | None) -> tuple[float, bool]:
    """The kernel's figure when there is a plausible one, else the wall clock's; and which was taken.

    The kernel's interval lies inside the wall-clock one (the SYN leaves after the
    first wall reading, the answer arrives before the second), so a kernel figure
    that is negative or longer than the wall figure is a clock step or a misread,
    not a measurement.
    """
    if kernel_ms is None or kernel_ms < 0.0 or kernel_ms > wall_ms + SLACK_MS:
        return wall_ms, False
    return kernel_ms, True


def rtt_source(from_kernel: int, samples: int) -> str | None:
    """``"kernel"`` when every sample is the kernel's, ``"wall"`` when none is, else ``"mixed"``."""
    if samples <= 0:
        return None
    if from_kernel >= samples:
        return KERNEL
    return WALL if from_kernel <= 0 else MIXED


# --- per OS: which socket options carry the kernel's clock ----------------------------
# The only sys.platform reads in netcheck/probes: everything above is portable.

@dataclass(frozen=True)
class _TcpInfoOption:
    level: int
    option: int
    size: int
    parse: Callable[[bytes], float | None]


_TCP_INFO: _TcpInfoOption | None
_RX_STAMP: RxStampOption | None
if sys.platform == "linux":
    # TCP_INFO = 11; SO_TIMESTAMPNS = SCM_TIMESTAMPNS = 35 (asm-generic/socket.h)
    _TCP_INFO = _TcpInfoOption(socket.IPPROTO_TCP, 11, LINUX_TCP_INFO_SIZE, linux_handshake_rtt_ms)
    _RX_STAMP = RxStampOption(socket.SOL_SOCKET, 35, 35, timespec_ns, _TIMESPEC.size)
elif sys.platform == "darwin":
    # TCP_CONNECTION_INFO = 0x106 (netinet/tcp.h); SO_TIMESTAMP = 0x400, SCM_TIMESTAMP = 0x02 (sys/socket.h)
    _TCP_INFO = _TcpInfoOption(socket.IPPROTO_TCP, 0x106, MACOS_TCP_CONNECTION_INFO_SIZE, macos_handshake_rtt_ms)
    _RX_STAMP = RxStampOption(socket.SOL_SOCKET, 0x400, 0x02, darwin_timeval_ns, 16)
else:  # Windows and the rest: the loop's clock
    _TCP_INFO = None
    _RX_STAMP = None
# --- end of per-OS part ---------------------------------------------------------------


def handshake_rtt_ms(sock: socket.socket) -> float | None:
    """The kernel's RTT of a TCP handshake just completed on ``sock``, or None (see module doc)."""
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(_TCP_INFO.level, _TCP_INFO.option, _TCP_INFO.size)
    except OSError:
        return None
    return _TCP_INFO.parse(info)


# --- UDP ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stamp:
    """One instant on the loop's clock (perf_counter, s) and, when known, the kernel's (ns)."""

    wall: float
    kernel_ns: int | None = None

    @classmethod
    def now(cls) -> Stamp:
        """Both clocks read now (the kernel's clock for received datagrams is CLOCK_REALTIME)."""
        return cls(time.perf_counter(), time.time_ns())


def elapsed_ms(sent: Stamp, received: Stamp) -> tuple[float, bool]:
    """Milliseconds from ``sent`` to ``received``, on the kernel's clock where both have it."""
    wall_ms = (received.wall - sent.wall) * 1000.0
    if sent.kernel_ns is None or received.kernel_ns is None:
        return wall_ms, False
    return pick(wall_ms, (received.kernel_ns - sent.kernel_ns) / 1e6)


class UdpChannel:
    """A connected, non-blocking UDP socket read from the event loop, every datagram time-stamped.

    ``on_datagram(data, arrived)`` gets each datagram with its arrival :class:`Stamp`
    (the kernel's time when ``kernel_clock`` and the OS give one); ``on_error(exc)``
    gets what the socket reports (an ICMP port unreachable arrives as
    ConnectionRefusedError). Selector loops read with ``recvmsg`` from an
    ``add_reader`` callback; loops without readiness callbacks (Windows' proactor)
    read with ``loop.sock_recv`` in a task, on the loop's clock.
    """

    def __init__(self, sock: socket.socket, on_datagram: Callable[[bytes, Stamp], None],
                 on_error: Callable[[OSError], None], *, kernel_clock: bool = True) -> None:
        self.sock = sock
        self._on_datagram = on_datagram
        self._on_error = on_error
        self._stamp = _RX_STAMP if kernel_clock and hasattr(sock, "recvmsg") else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._task: asyncio.Task[None] | None = None
        self._ancbufsize = 0

    @property
    def kernel_clock(self) -> bool:
        """Whether arrivals carry the kernel's time stamps."""
        return self._stamp is not None

    def start(self) -> None:
        """Turn on time stamps (if any) and start reading; call from the running loop."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self._stamp is not None:
            try:
                self.sock.setsockopt(self._stamp.level, self._stamp.option, 1)
                self._ancbufsize = socket.CMSG_SPACE(self._stamp.size)
            except (OSError, AttributeError):
                self._stamp = None
        try:
            loop.add_reader(self.sock.fileno(), self._readable)
            self._reading = True
        except NotImplementedError:
            self._stamp = None
            self._task = loop.create_task(self._receive_loop())

    def send(self, data: bytes) -> Stamp | None:
        """Send one datagram; its :class:`Stamp` is read immediately before ``send``.

        None if it was not sent: the socket buffer is full, or the socket reported
        an error (passed to ``on_error``).
        """
        try:
            return self.send_or_raise(data)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            self._on_error(exc)
            return None

    def send_or_raise(self, data: bytes) -> Stamp:
        """:meth:`send` for callers off the loop: OSError (BlockingIOError when the buffer is full) raises.

        The clocks are read last thing before ``send`` (the kernel's nearest to it) and
        the :class:`Stamp` is built after, so no Python frame runs between the reading
        and the sending where another thread could take the interpreter's lock (GIL).
        """
        if self._stamp is not None:
            wall = time.perf_counter()
            kernel_ns: int | None = time.time_ns()
        else:
            kernel_ns, wall = None, time.perf_counter()
        self.sock.send(data)
        return Stamp(wall, kernel_ns)

    async def aclose(self) -> None:
        """Stop reading and close the socket."""
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False
        task, self._task = self._task, None
        try:
            if task is not None:
                # Let the pending read unregister itself before its socket goes.
                task.cancel()
                await asyncio.wait({task})
        finally:
            self.sock.close()

    def drain(self) -> None:
        """Read every datagram the kernel already holds for the socket, now (selector loops; the proactor's
        reading task reads as they come). An answer waiting there arrived while the loop was busy elsewhere
        (its time stamp says when): it was not lost."""
        if self._reading:
            while self._read(_READS_PER_WAKE):
                pass

    def _readable(self) -> None:
        self._read(_READS_PER_WAKE)

    def _read(self, most: int) -> bool:
        """Read up to ``most`` datagrams; True when that many were read (more may be waiting)."""
        for _ in range(most):
            try:
                if self._stamp is not None:
                    data, ancdata, _flags, _addr = self.sock.recvmsg(_DATAGRAM_MAX, self._ancbufsize)
                    arrived = Stamp(time.perf_counter(), rx_timestamp_ns(ancdata, self._stamp))
                else:
                    data = self.sock.recv(_DATAGRAM_MAX)
                    arrived = Stamp(time.perf_counter())
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:
                self._on_error(exc)
                return False
            self._on_datagram(data, arrived)
        return True

    async def _receive_loop(self) -> None:
        assert self._loop is not None
        while True:
            try:
                data = await self._loop.sock_recv(self.sock, _DATAGRAM_MAX)
            except OSError as exc:
                self._on_error(exc)
                if not isinstance(exc, ConnectionError):
                    return
                continue
            self._on_datagram(data, Stamp(time.perf_counter()))

