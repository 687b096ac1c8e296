"""The lab's authoritative DNS server (every public lab name), on UDP and TCP.

Zone data comes from a JSON file written by the runner (see
``catalog.LabCatalog.zone``): exact names with A/AAAA/CNAME records, and
patterns (regular expressions) for the catalog's wildcards.  CNAME chains
are followed and returned whole, as an authoritative server for all the
zones involved would.  The *whoami* name answers with the address of the
resolver that asked (A for an IPv4 source, AAAA for IPv6, TXT for both),
TTL 0 so that no cache keeps it.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 300
NEG_TTL = 60
MAX_CHAIN = 8


@dataclass
class Zone:
    exact: dict[str, dict[str, Any]]
    patterns: list[tuple[re.Pattern[str], dict[str, Any]]]
    whoami: str

    @classmethod
    def load(cls, path: Path) -> Zone:
        data = json.loads(path.read_text())
        return cls(
            exact={k.lower(): v for k, v in data["exact"].items()},
            patterns=[(re.compile(p["regex"]), p) for p in data["patterns"]],
            whoami=data["whoami"].lower(),
        )

    def lookup(self, name: str) -> dict[str, Any] | None:
        if name in self.exact:
            return self.exact[name]
        for regex, records in self.patterns:
            if regex.match(name):
                return records
        return None


def _soa(qname: dns.name.Name) -> dns.rrset.RRset:
    labels = qname.labels
    apex = dns.name.Name(labels[-3:]) if len(labels) >= 3 else dns.name.root
    return dns.rrset.from_text(
        apex, NEG_TTL, "IN", "SOA", f"ns1.lab.example. hostmaster.lab.example. 1 3600 600 86400 {NEG_TTL}"
    )


def answer(zone: Zone, wire: bytes, client: str) -> bytes | None:
    """Build the response to one query (None if the query cannot be parsed)."""
    try:
        query = dns.message.from_wire(wire)
    except Exception:  # malformed packet: ignore, as servers do
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if not query.question:
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
    q = query.question[0]
    name = q.name.to_text(omit_final_dot=True).lower()
    if name == zone.whoami:
        _whoami(response, q.name, q.rdtype, client)
        return response.to_wire()
    found = False
    owner = q.name
    for _ in range(MAX_CHAIN):
        records = zone.lookup(owner.to_text(omit_final_dot=True).lower())
        if records is None:
            break
        found = True
        target = records.get("CNAME")
        if target and q.rdtype != dns.rdatatype.CNAME:
            response.answer.append(dns.rrset.from_text(owner, TTL, "IN", "CNAME", target.rstrip(".") + "."))
            owner = dns.name.from_text(target)
            continue
        rtype = dns.rdatatype.to_text(q.rdtype)
        values = records.get(rtype, [])
        if values:
            response.answer.append(dns.rrset.from_text_list(owner, TTL, "IN", rtype, values))
        break
    if not found:
        response.set_rcode(dns.rcode.NXDOMAIN)
    if not response.answer or not found:
        response.authority.append(_soa(q.name))
    return response.to_wire()


def _whoami(response: dns.message.Message, qname: dns.name.Name, rdtype: int, client: str) -> None:
    ip = ipaddress.ip_address(client.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if rdtype == dns.rdatatype.TXT:
        response.answer.append(dns.rrset.from_text(qname, 0, "IN", "TXT", f'"{ip}"'))
    elif (rdtype == dns.rdatatype.A and ip.version == 4) or (rdtype == dns.rdatatype.AAAA and ip.version == 6):
        response.answer.append(
            dns.rrset.from_text(qname, 0, "IN", dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype)), str(ip))
        )
    else:
        response.authority.append(_soa(qname))


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, zone: Zone) -> None:
        self.zone = zone

    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        reply = answer(self.zone, data, addr[0])
        if reply:
            self.transport.sendto(reply, addr)


async def _tcp(zone: Zone, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")[0]
    try:
        while True:
            size = int.from_bytes(await reader.readexactly(2), "big")
            reply = answer(zone, await reader.readexactly(size), peer)
            if reply is None:
                break
            writer.write(len(reply).to_bytes(2, "big") + reply)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(zone: Zone, addresses: list[str], port: int, ready: Path | None) -> None:
    loop = asyncio.get_running_loop()
    for addr in addresses:
        await loop.create_datagram_endpoint(lambda: _Udp(zone), local_addr=(addr, port))
        await asyncio.start_server(lambda r, w: _tcp(zone, r, w), addr, port)
    if ready:
        ready.write_text("ready\n")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="lab authoritative DNS server")
    parser.add_argument("--zone", type=Path, required=True)
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(Zone.load(args.zone), args.listen, args.port, args.ready_file))
    except OSError as exc:
        print(f"authdns: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
