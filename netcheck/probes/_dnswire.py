"""One A or AAAA question over UDP, built and read without dnspython's resolver.

dnspython's stub resolver costs about 0.7 ms of CPU per question (a datagram
endpoint per query, immutable message objects, enum and name objects for every
record); a worldwide check asks about 200 questions. The common case, one
question answered over UDP with NOERROR or NXDOMAIN, needs none of that: this
module builds the query (as dnspython sends it: recursion desired, no EDNS),
checks the reply answers it, and follows the CNAME chain to the addresses.
Anything else (another rcode, a truncated reply, a malformed one, an error on
the socket) is left to dnspython by the caller (:mod:`netcheck.probes.dns`).

:func:`query` and :func:`parse` are pure; :class:`Question` does the I/O.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import struct
from dataclasses import dataclass

RDTYPE_A = 1
RDTYPE_NS = 2
RDTYPE_CNAME = 5
RDTYPE_AAAA = 28
_CLASS_IN = 1
NOERROR = 0
NXDOMAIN = 3

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_FLAG_QR, _FLAG_TC, _FLAG_RD = 0x8000, 0x0200, 0x0100
_MAX_CHAIN = 16


class Unreadable(ValueError):
    """A reply to the question that this module does not read (dnspython will)."""


class NameNotFound(Exception):
    """The DNS server answered that the name does not exist (NXDOMAIN)."""


class Unanswered(Exception):
    """No answer to the question in the time it had (the DNS probe's timeout, without dnspython)."""


@dataclass(frozen=True)
class Reply:
    """An answer to one question: the rcode, the CNAMEs followed, the addresses at the end."""

    rcode: int
    cnames: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    #: The smallest TTL of the address records (None without any).
    ttl: int | None = None


def _labels(name: str) -> list[bytes] | None:
    """A host name's labels in wire form, or None when only dnspython can encode it (IDN, escapes)."""
    try:
        raw = name.rstrip(".").encode("ascii")
    except UnicodeEncodeError:
        return None
    labels = raw.split(b".")
    if not raw or b"\\" in raw or any(not 0 < len(label) < 64 for label in labels) or len(raw) > 253:
        return None
    return labels


def query(qid: int, name: str, rdtype: int) -> bytes | None:
    """The query for ``name`` (recursion desired, no EDNS; ``"."`` is the root), or None when this
    module cannot encode it."""
    labels = [] if name == "." else _labels(name)
    if labels is None:
        return None
    qname = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    return _HEADER.pack(qid, _FLAG_RD, 1, 0, 0, 0) + qname + struct.pack("!HH", rdtype, _CLASS_IN)


def _name(wire: bytes, pos: int) -> tuple[str, int]:
    """The (possibly compressed) name at ``pos``, lower case, and where the record continues."""
    labels: list[str] = []
    end = -1
    for _ in range(128):  # a pointer loop ends here
        length = wire[pos]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | wire[pos + 1]
            continue
        if length & 0xC0:
            raise ValueError("bad label type")
        pos += 1
        if length == 0:
            return ".".join(labels), (pos if end < 0 else end)
        if pos + length > len(wire):
            raise ValueError("truncated name")
        labels.append(wire[pos:pos + length].decode("ascii").lower())
        pos += length
    raise ValueError("compression loop")


def parse(wire: bytes, qid: int, name: str, rdtype: int) -> Reply | None:
    """The reply to question ``qid`` for ``name``/``rdtype``.

    None for a datagram that answers another question (wrong id, no QR flag, another
    question: keep listening). Raises :class:`Unreadable` for what dnspython must handle:
    a truncated reply, an rcode other than NOERROR or NXDOMAIN, anything malformed.
    """
    try:
        if len(wire) < _HEADER.size:
            return None
        rid, flags, qd, an, _, _ = _HEADER.unpack_from(wire)
        if rid != qid or not flags & _FLAG_QR or flags & 0x7800 or qd != 1:
            return None
        qname, pos = _name(wire, _HEADER.size)
        qtype, qclass = struct.unpack_from("!HH", wire, pos)
        if qname != name.rstrip(".").lower() or qtype != rdtype or qclass != _CLASS_IN:
            return None
        rcode = flags & 0x000F
        if flags & _FLAG_TC or rcode not in (NOERROR, NXDOMAIN):
            raise Unreadable(f"rcode {rcode}" + (", truncated" if flags & _FLAG_TC else ""))
        pos += 4
        records: list[tuple[str, int, int, bytes]] = []
        for _ in range(an):
            owner, pos = _name(wire, pos)
            rtype, rclass, ttl, length = _RR.unpack_from(wire, pos)
            pos += _RR.size
            if pos + length > len(wire):
                raise Unreadable("truncated record")
            if rclass == _CLASS_IN:
                records.append((owner, rtype, ttl, wire[pos:pos + length] if rtype != RDTYPE_CNAME else
                                _name(wire, pos)[0].encode("ascii")))
            pos += length
    except Unreadable:
        raise
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as exc:
        raise Unreadable(f"malformed reply ({exc})") from exc
    if rcode == NXDOMAIN:
        return Reply(NXDOMAIN)
    cnames: list[str] = []
    current = qname
    for _ in range(_MAX_CHAIN):
        target = next((data.decode("ascii") for owner, rtype, _, data in records
                       if owner == current and rtype == RDTYPE_CNAME), None)
        if target is None or rdtype == RDTYPE_CNAME:
            break
        cnames.append(target)
        current = target
    size = 4 if rdtype == RDTYPE_A else 16
    found = [(str(ipaddress.ip_address(data)), ttl) for owner, rtype, ttl, data in records
             if owner == current and rtype == rdtype and len(data) == size]
    if not found:
        return Reply(NOERROR, tuple(cnames))
    return Reply(NOERROR, tuple(cnames), tuple(a for a, _ in found), min(t for _, t in found))


class Question:
    """One question to one nameserver over a connected UDP socket (it hears only that server, and its ICMP errors).

    :meth:`send` sends the question again as it is, with the same ID from the same port, as stub
    resolvers retransmit: a forwarder takes that for a retry and forwards it again, where a new ID
    or port is another client asking the same, whom dnsmasq (2.86 and later, in many home routers)
    makes wait for the first client's answer, forwarding it again only after 2 s.
    """

    def __init__(self, sock: socket.socket, qid: int, wire: bytes, name: str, rdtype: int) -> None:
        self._sock, self._qid, self._wire, self._name, self._rdtype = sock, qid, wire, name, rdtype

    @classmethod
    def open(cls, address: str, port: int, name: str, rdtype: int) -> Question | None:
        """None when this module cannot encode the name or the socket cannot reach ``address``."""
        qid = secrets.randbits(16)
        wire = query(qid, name, rdtype)
        if wire is None:
            return None
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((address, port))
        except OSError:
            sock.close()
            return None
        return cls(sock, qid, wire, name, rdtype)

    def send(self) -> None:
        """Send the question (again). Raises OSError."""
        self._sock.send(self._wire)

    async def reply(self, timeout: float) -> Reply:
        """The reply to the question. Raises TimeoutError after ``timeout`` seconds, :class:`Unreadable`
        for a reply this module does not read and OSError for what the socket reported (both dnspython's)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                reply = parse(await loop.sock_recv(self._sock, 65535), self._qid, self._name, self._rdtype)
                if reply is not None:
                    return reply

    def close(self) -> None:
        self._sock.close()
