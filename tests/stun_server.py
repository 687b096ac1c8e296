"""A loopback STUN responder for the Teams media probe's tests.

Real UDP sockets on the asyncio loop the test runs, answering RFC 5389 Binding
Requests with XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS). The wire format is
written here independently of ``netcheck.probes.stun`` so an encoding bug in
one does not hide the same bug in the other.

Knobs: several ports with only some answering (the others bound but silent),
drop every Nth request, a cycle of answer delays, stay silent, send junk
datagrams before each answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import struct
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType

COOKIE = 0x2112A442


def encode_address(attr_type: int, host: str, port: int, txid: bytes, xor: bool) -> bytes:
    ip = ipaddress.ip_address(host)
    raw = ip.packed
    family = 1 if ip.version == 4 else 2
    if xor:
        port ^= COOKIE >> 16
        key = COOKIE.to_bytes(4, "big") + txid
        raw = bytes(b ^ key[i] for i, b in enumerate(raw))
    value = bytes([0, family]) + port.to_bytes(2, "big") + raw
    return struct.pack("!HH", attr_type, len(value)) + value


def message(msg_type: int, txid: bytes, attributes: bytes = b"", cookie: int = COOKIE) -> bytes:
    return struct.pack("!HHI", msg_type, len(attributes), cookie) + txid + attributes


def software(name: str) -> bytes:
    value = name.encode()
    return struct.pack("!HH", 0x8022, len(value)) + value + b"\x20" * (-len(value) % 4)


class _Port(asyncio.DatagramProtocol):
    def __init__(self, owner: StunResponder, answering: bool) -> None:
        self.owner = owner
        self.answering = answering
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.owner.handle(self, data, (str(addr[0]), int(addr[1])))


class StunResponder:
    """``async with StunResponder(...) as stun: ... stun.ports``."""

    def __init__(self, host: str = "127.0.0.1", *, ports: int = 1, answer_on: Iterable[int] | None = None,
                 drop_every: int = 0, delays_s: Sequence[float] = (0.0,), silent: bool = False,
                 junk: bool = False, xor: bool = True) -> None:
        self.host = host
        self.count = ports
        self.answer_on = set(range(ports)) if answer_on is None else set(answer_on)
        self.drop_every = drop_every
        self.delays: Iterator[float] = itertools.cycle(delays_s)  # a test may set its own sequence
        self.silent = silent
        self.junk = junk
        self.xor = xor
        self.ports: list[int] = []
        self.requests = 0  # Binding Requests seen on answering ports
        self.dropped = 0
        self.answered = 0
        self._protocols: list[_Port] = []
        self._timers: list[asyncio.TimerHandle] = []

    async def __aenter__(self) -> StunResponder:
        loop = asyncio.get_running_loop()
        for index in range(self.count):
            proto = _Port(self, index in self.answer_on and not self.silent)
            transport, _ = await loop.create_datagram_endpoint(lambda p=proto: p,  # type: ignore[misc]
                                                               local_addr=(self.host, 0))
            proto.transport = transport
            self.ports.append(int(transport.get_extra_info("sockname")[1]))
            self._protocols.append(proto)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for timer in self._timers:
            timer.cancel()
        for proto in self._protocols:
            if proto.transport is not None:
                proto.transport.close()
        await asyncio.sleep(0)

    def handle(self, port: _Port, data: bytes, addr: tuple[str, int]) -> None:
        if not port.answering or len(data) < 20:
            return
        msg_type, _length, cookie = struct.unpack("!HHI", data[:8])
        txid = data[8:20]
        if msg_type != 0x0001 or cookie != COOKIE:
            return
        self.requests += 1
        if self.drop_every and self.requests % self.drop_every == 0:
            self.dropped += 1
            return
        attr_type = 0x0020 if self.xor else 0x0001
        answer = message(0x0101, txid, software("netcheck test responder")
                         + encode_address(attr_type, addr[0], addr[1], txid, self.xor))
        datagrams = []
        if self.junk:
            datagrams += [
                answer[:19],                                            # truncated header
                message(0x0101, bytes(12), encode_address(0x0020, addr[0], addr[1], bytes(12), True)),
                message(0x0101, txid, cookie=0xDEADBEEF),               # wrong magic cookie
                answer[:-3],                                            # truncated attribute
                message(0x0001, txid),                                  # a request, not an answer
            ]
        datagrams.append(answer)
        self.answered += 1
        delay = next(self.delays)
        loop = asyncio.get_running_loop()
        for d in datagrams:
            if delay > 0:
                self._timers.append(loop.call_later(delay, self._send, port, d, addr))
            else:
                self._send(port, d, addr)

    @staticmethod
    def _send(port: _Port, data: bytes, addr: tuple[str, int]) -> None:
        if port.transport is not None and not port.transport.is_closing():
            port.transport.sendto(data, addr)
