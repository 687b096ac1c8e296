"""STUN responder standing in for the Teams transport relay (UDP 3478-3481).

Answers RFC 5389 Binding requests with XOR-MAPPED-ADDRESS (and
MAPPED-ADDRESS, for RFC 3489 clients), which is all a relay-reachability
check needs.  Binds to the relay's exact addresses so that replies leave
from the address the client sent to.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import struct
import sys
from pathlib import Path
from typing import Any, cast

MAGIC = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
ATTR_MAPPED = 0x0001
ATTR_XOR_MAPPED = 0x0020
ATTR_SOFTWARE = 0x8022


def _attr(kind: int, value: bytes) -> bytes:
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * pad


def _address(ip: str, port: int, xor_with: bytes | None) -> bytes:
    addr = ipaddress.ip_address(ip)
    raw = addr.packed
    family = 1 if addr.version == 4 else 2
    if xor_with is not None:
        port ^= MAGIC >> 16
        raw = bytes(a ^ b for a, b in zip(raw, xor_with, strict=True))
    return struct.pack("!BBH", 0, family, port) + raw


def respond(data: bytes, ip: str, port: int) -> bytes | None:
    """The Binding response for ``data`` from (ip, port), or None to ignore it."""
    if len(data) < 20:
        return None
    kind, _length, cookie = struct.unpack("!HHI", data[:8])
    if kind != BINDING_REQUEST:
        return None
    txid = data[8:20]
    ip = ip.split("%")[0]
    mapped = ipaddress.ip_address(ip)
    if mapped.version == 6 and mapped.ipv4_mapped:
        ip = str(mapped.ipv4_mapped)
    attrs = _attr(ATTR_MAPPED, _address(ip, port, None))
    if cookie == MAGIC:
        key = struct.pack("!I", MAGIC) + txid
        attrs += _attr(ATTR_XOR_MAPPED, _address(ip, port, key[: 4 if ":" not in ip else 16]))
    attrs += _attr(ATTR_SOFTWARE, b"netcheck-lab relay")
    return struct.pack("!HHI", BINDING_SUCCESS, len(attrs), cookie) + txid + attrs


class _Protocol(asyncio.DatagramProtocol):
    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        reply = respond(data, addr[0], addr[1])
        if reply:
            self.transport.sendto(reply, addr)


async def serve(addresses: list[str], ports: list[int], ready: Path | None) -> None:
    loop = asyncio.get_running_loop()
    for addr in addresses:
        for port in ports:
            await loop.create_datagram_endpoint(_Protocol, local_addr=(addr, port))
    if ready:
        ready.write_text("ready\n")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="lab STUN responder")
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--port", action="append", type=int, required=True)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.listen, args.port, args.ready_file))
    except OSError as exc:
        print(f"stun: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
