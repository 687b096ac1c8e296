"""Teams media path: STUN Binding Requests over UDP to a media relay.

RFC 5389 is small enough to write by hand: a 20-byte header (type, length,
magic cookie 0x2112A442, 96-bit transaction id) and type-length-value
attributes; the answer carries the address the relay saw us come from in
XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS from older servers).

The probe tries the ports in order (3478 first) and samples the first one that
answers: it sends a request every ``interval_s`` for ``window_s``, matches the
answers by transaction id and reports RTT, jitter and loss (computed by
:mod:`netcheck.assess.media`). Loss is counted over every request; round trips
are kept only for every ``every``-th send slot (Teams' packet stride, when the
window sends several requests per stride: :func:`netcheck.assess.media.sample_plan`),
so jitter keeps its meaning and the report carries no more samples than before.
The requests are sent from a thread of their own (:class:`_Pacer`, one per
port sampled, stopped and joined before the socket closes), so a loop busy
with hundreds of other probes does not thin the window out (it sent 8-9 of 50
requests in a full check when the loop's timers paced
it); the answers are read on the event loop. A round trip runs from just before ``send`` to the
kernel's time stamp of the answer's arrival (``SO_TIMESTAMPNS`` /
``SO_TIMESTAMP``, see :mod:`netcheck.probes._timing`), not to when the busy
event loop got round to reading it; where the OS has no such stamp, the
loop's clock is used. ``rtt_source`` says which (``kernel``, ``wall``, ``mixed``).
A port that stays silent for ``answer_wait_s`` (or refuses with ICMP) is
given up for the next. Judging the figures against Microsoft's pass marks is
:func:`netcheck.assess.media.assess_media`, not this module.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from netcheck.deadline import Deadline
from netcheck.models import MediaStats, Outcome, Phase, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes._errors import classify, ms, too_late
from netcheck.probes._timing import Stamp, UdpChannel, elapsed_ms, rtt_source

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111
_MAPPED_ADDRESS = 0x0001
_XOR_MAPPED_ADDRESS = 0x0020
_XOR_MAPPED_ADDRESS_DRAFT = 0x8020  # pre-RFC servers
_HEADER = struct.Struct("!HHI12s")

#: The OS refusing to send for a reason _errors.classify does not cover (it maps "no route"):
#: policy forbids the packet (a local firewall, broadcast), or no source address fits.
#: POSIX values plus their WinSock equivalents.
_REFUSED_TO_SEND = frozenset({errno.EACCES, errno.EPERM, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT,
                              10013, 10047, 10049})

BLOCKED_CONSEQUENCE = "Teams would fall back to TCP 443 and audio and video would be impaired"


# --- wire format ----------------------------------------------------------------

def new_transaction_id() -> bytes:
    return os.urandom(12)


def binding_request(transaction_id: bytes) -> bytes:
    """A Binding Request without attributes."""
    if len(transaction_id) != 12:
        raise ValueError("a STUN transaction id is 12 bytes")
    return _HEADER.pack(BINDING_REQUEST, 0, MAGIC_COOKIE, transaction_id)


@dataclass(frozen=True)
class StunAnswer:
    transaction_id: bytes
    success: bool
    mapped: tuple[str, int] | None


def _address(value: bytes, xor_with: bytes | None) -> tuple[str, int] | None:
    if len(value) < 4:
        return None
    family, port = value[1], struct.unpack("!H", value[2:4])[0]
    raw = value[4:]
    if family == 0x01 and len(raw) == 4:
        pass
    elif family == 0x02 and len(raw) == 16:
        pass
    else:
        return None
    if xor_with is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, xor_with, strict=False))
    return str(ipaddress.ip_address(raw)), port


def parse_response(data: bytes) -> StunAnswer | None:
    """A Binding success or error response, or None for anything else (malformed, a request...)."""
    if len(data) < _HEADER.size:
        return None
    msg_type, length, cookie, txid = _HEADER.unpack_from(data)
    if cookie != MAGIC_COOKIE or msg_type not in (BINDING_SUCCESS, BINDING_ERROR) \
            or length % 4 or length != len(data) - _HEADER.size:
        return None
    xor_key = struct.pack("!I", MAGIC_COOKIE) + txid
    xor_mapped: tuple[str, int] | None = None
    mapped: tuple[str, int] | None = None
    offset = _HEADER.size
    while offset + 4 <= len(data):
        attr_type, attr_len = struct.unpack_from("!HH", data, offset)
        value = data[offset + 4:offset + 4 + attr_len]
        if len(value) != attr_len:
            return None
        if attr_type in (_XOR_MAPPED_ADDRESS, _XOR_MAPPED_ADDRESS_DRAFT) and xor_mapped is None:
            xor_mapped = _address(value, xor_key)
        elif attr_type == _MAPPED_ADDRESS and mapped is None:
            mapped = _address(value, None)
        offset += 4 + attr_len + (-attr_len % 4)
    if offset != len(data):
        return None
    return StunAnswer(txid, msg_type == BINDING_SUCCESS, xor_mapped or mapped)


# --- one port ---------------------------------------------------------------------

@dataclass(eq=False)
class _Session:
    """Requests in flight and the answers matched to them.

    ``pending`` and ``received`` are shared with the sender thread (:class:`_Pacer`) and
    changed only under ``lock``; the rest belongs to the event loop.
    """

    #: Each request in flight, by txid: when it went, whether at the stride (its round trip is kept),
    #: and its place in the order sent.
    pending: dict[bytes, tuple[Stamp, bool, int]] = field(default_factory=dict)
    samples_ms: list[float] = field(default_factory=list)  # round trips of the answers sent at the stride
    received: int = 0  # every answer matched
    from_kernel: int = 0  # samples timed by the kernel
    mapped: tuple[str, int] | None = None
    ignored: int = 0
    refused: bool = False
    error: OSError | None = None
    #: Set by the loop once the window is over: from then on the last answer in flight wakes it.
    draining: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def datagram(self, data: bytes, arrived: Stamp) -> None:
        answer = parse_response(data)
        with self.lock:
            sent = None if answer is None else self.pending.pop(answer.transaction_id, None)
            if sent is not None:
                self.received += 1
        if answer is None or sent is None:
            self.ignored += 1
            return
        if sent[1]:
            rtt_ms, kernel_timed = elapsed_ms(sent[0], arrived)
            self.samples_ms.append(rtt_ms)
            self.from_kernel += kernel_timed
        if answer.mapped is not None and self.mapped is None:
            self.mapped = answer.mapped
        # The loop waits for the first answer (a silent port) or, after the window, for the last one; waking
        # it for every answer in between would cost a task and a timer for each of hundreds.
        if self.received == 1 or (self.draining and not self.pending):
            self.wake.set()

    def failed(self, exc: OSError) -> None:
        if isinstance(exc, ConnectionRefusedError):
            self.refused = True
        elif self.error is None:
            self.error = exc
        self.wake.set()

    async def wait(self, seconds: float) -> None:
        if seconds > 0:
            try:
                await asyncio.wait_for(self.wake.wait(), seconds)
            except TimeoutError:
                pass
        self.wake.clear()


class _Pacer:
    """Sends the window's requests from a thread of its own, so a busy event loop cannot starve them.

    A request goes at ``start + k * interval_s`` until ``send_until`` (after a stall,
    the next slot still ahead: no burst to catch up), and on past it, up to ``stretch_until``,
    while fewer than ``least`` have gone (a laptop that held the sender up); slot ``k`` is at the stride
    when ``k % every == 0``, so those keep Teams' spacing whatever was skipped. It
    stops early for a port silent since
    ``give_up_at``, or until :meth:`stop`. Its transaction id and the stamp read just
    before ``send`` go into ``session.pending`` under ``session.lock``, which
    :meth:`_Session.datagram` takes too, so no answer can be looked up before its
    request is there. A send error ends the thread and reaches the loop through
    ``session.failed`` (``call_soon_threadsafe``); the thread needs only ``sock.send``,
    so loops without ``add_reader`` (Windows' proactor) work the same.
    """

    def __init__(self, channel: UdpChannel, session: _Session, start: float, interval_s: float, every: int,
                 send_until: float, give_up_at: float, least: int = 0, stretch_until: float = 0.0) -> None:
        self._channel, self._session = channel, session
        self._start, self._interval_s, self._every = start, interval_s, every
        self._send_until, self._give_up_at = send_until, give_up_at
        self._least, self._stretch_until = least, max(send_until, stretch_until)
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self.sent = 0
        self.last_send = start  # time.monotonic() of the last request sent
        self.late_s = 0.0  # the most a request went after its slot: how long the laptop held the sender up
        self.failure: OSError | None = None
        port = channel.sock.getpeername()[1]
        self._thread = threading.Thread(target=self._run, name=f"netcheck-stun-{port}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def sending(self) -> bool:
        """Still sending (the thread ends by itself at its end)."""
        return self._thread.is_alive()

    def end(self) -> float:
        """When the sending ends: ``send_until``, or ``stretch_until`` while fewer than ``least`` have gone."""
        return self._send_until if self.sent >= self._least else self._stretch_until

    def stop(self) -> None:
        """Stop sending and wait for the thread: at most one sleep, no longer than ``interval_s``."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()

    def _run(self) -> None:
        session, slot = self._session, 0
        while not self._stop.is_set():
            now, end = time.monotonic(), self.end()
            if now >= end or (now >= self._give_up_at and not session.received):
                return
            due = self._start + slot * self._interval_s
            if now < due:
                time.sleep(min(due, end) - now)  # cheaper than an Event: 100s a window
                continue
            if not self._send(binding_request(new_transaction_id()), now, slot % self._every == 0):
                return
            self.late_s = max(self.late_s, now - due)
            # Keep the pace; after a stall, the next slot ahead, not a burst to catch up.
            slot = max(slot + 1, int((now - self._start) / self._interval_s) + 1)

    def _send(self, request: bytes, now: float, at_stride: bool) -> bool:
        """One request; False when the socket failed (the thread then ends)."""
        txid, session = request[8:], self._session
        try:
            with session.lock:  # the answer cannot be matched before its txid is pending
                session.pending[txid] = (self._channel.send_or_raise(request), at_stride, self.sent)
        except (BlockingIOError, InterruptedError):  # buffer full: this one is not sent
            return True
        except OSError as exc:
            self.failure = exc
            self._loop.call_soon_threadsafe(session.failed, exc)
            return False
        self.sent, self.last_send = self.sent + 1, now
        return True


@dataclass(frozen=True)
class _PortRun:
    stats: MediaStats
    local: tuple[str, int] | None
    mapped: tuple[str, int] | None
    refused: bool
    #: The silence was waited out in full (False: the deadline cut it short).
    conclusive: bool
    ignored: int
    rtt_source: str | None
    #: When each request that went unanswered was sent, in ms from the window's start.
    lost_at_ms: tuple[float, ...] = ()
    #: The most a request went after its slot (the laptop holding the sender up), in ms.
    late_ms: float = 0.0
    #: The longest run of requests sent one after another and all unanswered, and the time it spans (ms).
    dropout_lost: int = 0
    dropout_ms: float = 0.0
    #: How far past the window the sender went to get ``least`` requests out (ms).
    stretched_ms: float = 0.0


def _connected_socket(family: socket.AddressFamily, address: str, port: int) -> socket.socket:
    """A non-blocking UDP socket connected to (address, port); OSError if the OS will not."""
    sockaddr = socket.getaddrinfo(address, port, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)[0][4]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


#: How long after the window an answer still counts, in round trips measured in it (the slowest one), and
#: its floor: an answer held up by a busy laptop (its event loop, the CPU) is late, not lost. On a lossy
#: link a request is lost in most windows, and the probe waits out the whole grace: a fixed 0.5 s was
#: most of the wall time a lossy check spent beyond its critical path (issue 16).
GRACE_RTTS = 4
GRACE_FLOOR_S = 0.25
#: The longest wait for late answers after a window (the probe's ``grace_s`` default): what a window costs
#: beyond itself, which the check counts before it takes one again.
GRACE_MOST_S = 0.5
#: The unanswered requests whose send times a report keeps (``lost_at_ms``): enough to tell loss spread over
#: the window (a lossy line) from a run of it (a stall, a drop-out), and a report stays small.
LOST_AT_KEPT = 50
#: How far a window may stretch, as a share of it, to get ``least`` requests out when the laptop held its
#: sender up (a stall skips slots rather than bursting to catch up): a busy laptop's 1-second window sent
#: 200-300 of its 400 in the lab, too few to show loss under 1 % (299), and hedged the media status.
STRETCH = 1.5
#: How often the probe looks whether a stretched window's sender is done.
_STRETCH_LOOK_S = 0.01


def _grace(samples_ms: Sequence[float], most_s: float, rtts: float) -> float:
    """The wait for the answers in flight after the window: ``rtts`` of the slowest round trip measured,
    at least ``GRACE_FLOOR_S``, at most ``most_s`` (the probe's ``grace_s``); ``most_s`` when nothing was
    measured."""
    if not samples_ms:
        return most_s
    return min(most_s, max(GRACE_FLOOR_S, rtts * max(samples_ms) / 1000))


def _longest_run(order: Sequence[int]) -> range:
    """Where in ``order`` (ascending places in the order sent) the longest run of consecutive places is:
    requests lost one after another, a drop-out rather than loss spread over the window; empty for none."""
    best = start = 0
    found = range(0)
    for i in range(1, len(order) + 1):
        if i == len(order) or order[i] != order[i - 1] + 1:
            if i - start > best:
                best, found = i - start, range(start, i)
            start = i
    return found


async def _sample_port(family: socket.AddressFamily, address: str, port: int, deadline: Deadline,
                       window_s: float, interval_s: float, every: int, answer_wait_s: float, grace_s: float,
                       grace_rtts: float | None, kernel_clock: bool, least: int = 0) -> _PortRun:
    """Sample one port; OSError from the OS refusing to send propagates."""
    session = _Session()
    channel = UdpChannel(_connected_socket(family, address, port), session.datagram, session.failed,
                         kernel_clock=kernel_clock)
    pacer: _Pacer | None = None
    try:
        channel.start()
        sockname = channel.sock.getsockname()
        local = (str(sockname[0]), int(sockname[1])) if sockname else None
        start, start_pc = time.monotonic(), time.perf_counter()
        send_until = min(start + window_s, deadline.at)
        give_up_at = start + answer_wait_s  # for a port that stays silent
        pacer = _Pacer(channel, session, start, interval_s, every, send_until, give_up_at, least,
                       min(start + window_s * STRETCH, deadline.at))
        pacer.start()
        while session.error is None and not session.refused:
            now = time.monotonic()
            silent = not session.received
            if now >= pacer.end() or (silent and now >= give_up_at) or (now >= send_until and not pacer.sending):
                break
            # past the window the sender goes on only while short of ``least``: look again soon
            until = send_until if now < send_until else min(pacer.end(), now + _STRETCH_LOOK_S)
            await session.wait(min(until, give_up_at) - now if silent else until - now)
        pacer.stop()
        if pacer.failure is not None:  # its call_soon_threadsafe may not have run yet
            session.failed(pacer.failure)
        sent_count, last_send = pacer.sent, pacer.last_send
        session.draining = True
        grace = grace_s if grace_rtts is None else _grace(session.samples_ms, grace_s, grace_rtts)
        # Let the answers in flight arrive: a silent port until give_up_at, otherwise for the grace.
        while session.pending and not session.refused and session.error is None:
            until = min(deadline.at, give_up_at if not session.received else last_send + grace)
            now = time.monotonic()
            if now >= until:
                break
            await session.wait(until - now)
        channel.drain()  # answers the kernel holds arrived while the loop was busy elsewhere: not lost
        if session.error is not None:
            raise session.error
        now_pc = time.perf_counter()
        # Requests unanswered for longer than the grace are lost; younger ones (the
        # deadline cut the wait short) are left out of the count.
        unresolved = sum(1 for t, _, _ in session.pending.values() if now_pc - t.wall < grace)
        lost = sorted((n, t.wall) for t, _, n in session.pending.values() if now_pc - t.wall >= grace)
        run = _longest_run([n for n, _ in lost])
        received = session.received
        conclusive = session.refused or received > 0 or time.monotonic() >= give_up_at
        stats = MediaStats(max(sent_count - unresolved, received), received, tuple(session.samples_ms))
        return _PortRun(stats, local, session.mapped, session.refused, conclusive, session.ignored,
                        rtt_source(session.from_kernel, len(session.samples_ms)),
                        tuple(round((at - start_pc) * 1000, 1) for _, at in lost),
                        round(pacer.late_s * 1000, 1), len(run),
                        round((lost[run.stop - 1][1] - lost[run.start][1] + interval_s) * 1000, 1) if run else 0.0,
                        round(max(0.0, last_send - send_until) * 1000, 1))
    finally:
        if pacer is not None:  # no socket closed under a sending thread
            pacer.stop()
        await channel.aclose()


# --- the probe ----------------------------------------------------------------------

def _ports_text(ports: Sequence[int]) -> str:
    """``3478-3481`` for a run, ``3478, 3480`` otherwise."""
    parts: list[str] = []
    ordered = sorted(set(ports))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ", ".join(parts)


def _family(address: str) -> tuple[socket.AddressFamily, str]:
    if ipaddress.ip_address(address).version == 6:
        return socket.AF_INET6, "ipv6"
    return socket.AF_INET, "ipv4"


def _send_failure(exc: OSError, address: str, port: int) -> tuple[Outcome, str]:
    code = getattr(exc, "winerror", None) or exc.errno
    if code in _REFUSED_TO_SEND:
        outcome, why = Outcome.NETWORK_UNREACHABLE, exc.strerror or str(exc)
    else:
        outcome, why = classify(exc)
    if outcome is Outcome.NETWORK_UNREACHABLE:
        return outcome, f"the OS refused to send to {address} over UDP {port} ({why})"
    return outcome, f"UDP to {address} port {port} failed: {why}"


async def probe_stun(target: Target, spec: ProbeSpec, deadline: Deadline, *, window_s: float = 1.0,
                     interval_s: float = 0.02, every: int = 1, ports: Sequence[int] = (3478, 3479, 3480, 3481),
                     answer_wait_s: float = 1.0, grace_s: float = GRACE_MOST_S, grace_rtts: float | None = GRACE_RTTS,
                     kernel_clock: bool = True, least: int = 0) -> ProbeResult:
    """STUN Binding Requests to ``target.address`` (or ``target.host`` resolved), one port after another.

    ``target.port`` is not used: the ports tried, in order, are ``ports``. Round trips are kept for every
    ``every``-th request (the check passes :func:`netcheck.assess.media.sample_plan`'s pace and stride).
    After the window, answers in flight are awaited for ``grace_rtts`` of the slowest round trip measured
    (at least ``GRACE_FLOOR_S``), at most ``grace_s``; ``grace_rtts=None``: for ``grace_s``.
    ``kernel_clock=False`` times answers on the loop's clock only (for comparison). ``least``: a window
    whose sender the laptop held up goes on past ``window_s`` (up to ``STRETCH`` of it) until this many
    requests have gone (the check passes what a clean sample needs to show loss under the mark).
    """
    if not ports or not all(isinstance(p, int) and 0 < p < 65536 for p in ports) \
            or window_s <= 0 or interval_s <= 0 or answer_wait_s <= 0 or grace_s < 0 \
            or (grace_rtts is not None and grace_rtts <= 0) \
            or isinstance(every, bool) or not isinstance(every, int) or every < 1 \
            or isinstance(least, bool) or not isinstance(least, int) or least < 0:
        return ProbeResult(ProbeKind.STUN, target, Outcome.ERROR,
                           "STUN probe misconfigured: needs UDP ports and a positive window and interval")
    if deadline.expired:
        return too_late(ProbeKind.STUN, target)
    phases: dict[str, float] = {}
    address = target.address
    if address is None:
        started = time.perf_counter()
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(target.host, None, type=socket.SOCK_DGRAM),
                deadline.step(spec.step_timeout_s))
        except TimeoutError:
            infos, outcome, why = [], Outcome.DNS_TIMEOUT, "name resolution did not finish in time"
        except OSError as exc:
            infos, (outcome, why) = [], classify(exc)
        else:
            outcome, why = Outcome.NO_ANSWER, "the name has no address"
        phases[Phase.RESOLVE.value] = ms(time.perf_counter() - started)
        if not infos:
            return ProbeResult(ProbeKind.STUN, target, outcome, why, phases)
        address = str(infos[0][4][0])
        target = target.with_address(address)
    try:
        family, family_name = _family(address)
    except ValueError:
        return ProbeResult(ProbeKind.STUN, target, Outcome.ERROR, f"{address!r} is not an IP address")

    tried: list[int] = []  # ports found silent or refusing
    refused: list[int] = []
    for port in ports:
        if deadline.expired:
            break
        try:
            run = await _sample_port(family, address, port, deadline, window_s, interval_s, every,
                                     answer_wait_s, grace_s, grace_rtts, kernel_clock, least)
        except OSError as exc:
            outcome, why = _send_failure(exc, address, port)
            return ProbeResult(ProbeKind.STUN, target, outcome, why, phases,
                               {"port": port, "ports_tried": tried}, family_name)
        if run.stats.received:
            return _answered(target, phases, family_name, port, run, tried, refused, window_s, interval_s, every)
        if not run.conclusive:
            break
        tried.append(port)
        if run.refused:
            refused.append(port)

    untested = [p for p in ports if p not in tried]
    detail = {"ports_tried": tried, "ports_refused": refused, "ports_untested": untested}
    refusal = f" ({_ports_text(refused)} refused)" if refused else ""
    if untested:
        silence = f"No answer over UDP {_ports_text(tried)}{refusal}; " if tried else ""
        return ProbeResult(ProbeKind.STUN, target, Outcome.TIMEOUT,
                           f"{silence}the deadline ran out before UDP {_ports_text(untested)} "
                           "could be tested", phases, detail, family_name)
    return ProbeResult(ProbeKind.STUN, target, Outcome.UDP_BLOCKED,
                       f"No answer over UDP {_ports_text(tried)}{refusal}: {BLOCKED_CONSEQUENCE}",
                       phases, detail, family_name)


def _answered(target: Target, phases: dict[str, float], family_name: str, port: int, run: _PortRun,
              tried: list[int], refused: list[int], window_s: float, interval_s: float, every: int
              ) -> ProbeResult:
    stats = run.stats
    rtt, jitter, loss = stats.rtt_ms, stats.jitter_ms, stats.loss_pct
    detail: dict[str, str | int | float | bool | None | list[int] | list[float]] = {
        "port": port,
        "rtt_ms": None if rtt is None else round(rtt, 3),
        "jitter_ms": None if jitter is None else round(jitter, 3),
        "loss_pct": None if loss is None else round(loss, 3),
        "sent": stats.sent,
        "received": stats.received,
        "mapped_address": run.mapped[0] if run.mapped else None,
        "mapped_port": run.mapped[1] if run.mapped else None,
        "local_address": run.local[0] if run.local else None,
        "local_port": run.local[1] if run.local else None,
        "samples_ms": [round(s, 3) for s in stats.samples_ms],
        "ports_tried": [*tried, port],
        "ports_refused": refused,
        "window_s": window_s,
        "interval_ms": round(interval_s * 1000, 3),  # the report keeps 2 decimals: 0.0025 s would read 0.0
        "every": every,  # samples_ms holds the round trips of every this-many-th request
        "ignored": run.ignored,
        "rtt_source": run.rtt_source,
        "lost_at_ms": list(run.lost_at_ms[:LOST_AT_KEPT]),
        "dropout_lost": run.dropout_lost,
        "dropout_ms": run.dropout_ms,
        "sender_late_ms": run.late_ms,
        "stretched_ms": run.stretched_ms,
    }
    fallback = f" (no answer on UDP {_ports_text(tried)})" if tried else ""
    reason = (f"STUN answered on UDP {port}{fallback}: round trip {rtt or 0.0:.1f} ms, "
              f"jitter {jitter or 0.0:.1f} ms, loss {loss or 0.0:.1f} % "
              f"({stats.received} of {stats.sent} answered)")
    return ProbeResult(ProbeKind.STUN, target, Outcome.OK, reason, phases, detail, family_name)
