"""The lean A/AAAA question: queries and replies as bytes (replies built by dnspython), then
against the loopback nameserver."""

from __future__ import annotations

import asyncio

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from netcheck.probes._dnswire import (
    NOERROR,
    NXDOMAIN,
    RDTYPE_A,
    RDTYPE_AAAA,
    Question,
    Reply,
    Unreadable,
    parse,
    query,
)
from tests.servers import V4, DnsServer, closed_port


def reply(name: str, rdtype: str, *records: tuple[str, str, str], rcode: int = dns.rcode.NOERROR,
          ttl: int = 300, qid: int = 7) -> bytes:
    q = dns.message.make_query(name, rdtype)
    q.id = qid
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    for owner, kind, value in records:
        r.answer.append(dns.rrset.from_text(owner, ttl, "IN", kind, value))
    return r.to_wire()


def test_the_query_is_what_dnspython_sends() -> None:
    wire = query(0x1234, "outlook.office365.com", RDTYPE_AAAA)
    expected = dns.message.make_query("outlook.office365.com", "AAAA")
    expected.id = 0x1234
    assert wire == expected.to_wire()
    assert query(1, "outlook.office365.com.", RDTYPE_A) == query(1, "outlook.office365.com", RDTYPE_A)


@pytest.mark.parametrize("name", ["bücher.example", "a..b", "x" * 64 + ".example", "a\\.b.example", ""])
def test_names_only_dnspython_can_encode_are_left_to_it(name: str) -> None:
    assert query(1, name, RDTYPE_A) is None


def test_addresses_ttl_and_the_cname_chain() -> None:
    wire = reply("www.test.", "A", ("www.test.", "CNAME", "Edge.test."), ("edge.test.", "CNAME", "a.test."),
                 ("a.test.", "A", "198.18.0.11"), ("a.test.", "A", "198.18.0.10"))
    assert parse(wire, 7, "WWW.test", RDTYPE_A) == Reply(NOERROR, ("edge.test", "a.test"),
                                                        ("198.18.0.11", "198.18.0.10"), 300)
    six = reply("a.test.", "AAAA", ("a.test.", "AAAA", "2001:DB8:0:0::10"), ttl=60)
    assert parse(six, 7, "a.test", RDTYPE_AAAA) == Reply(NOERROR, (), ("2001:db8::10",), 60)


def test_no_records_and_nxdomain() -> None:
    assert parse(reply("empty.test.", "A"), 7, "empty.test", RDTYPE_A) == Reply(NOERROR)
    assert parse(reply("gone.test.", "A", rcode=dns.rcode.NXDOMAIN), 7, "gone.test", RDTYPE_A) == Reply(NXDOMAIN)
    # records of another type or name are not the answer
    other = reply("a.test.", "A", ("a.test.", "AAAA", "2001:db8::1"), ("b.test.", "A", "198.18.0.1"))
    assert parse(other, 7, "a.test", RDTYPE_A) == Reply(NOERROR)


def test_datagrams_for_another_question_are_ignored() -> None:
    wire = reply("a.test.", "A", ("a.test.", "A", "198.18.0.10"))
    assert parse(wire, 8, "a.test", RDTYPE_A) is None  # another id
    assert parse(wire, 7, "b.test", RDTYPE_A) is None  # another name
    assert parse(wire, 7, "a.test", RDTYPE_AAAA) is None  # another type
    assert parse(query(7, "a.test", RDTYPE_A) or b"", 7, "a.test", RDTYPE_A) is None  # a query, not a reply
    assert parse(b"\x00\x07", 7, "a.test", RDTYPE_A) is None


@pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.FORMERR])
def test_other_rcodes_are_left_to_dnspython(rcode: int) -> None:
    with pytest.raises(Unreadable):
        parse(reply("a.test.", "A", rcode=rcode), 7, "a.test", RDTYPE_A)


def test_truncated_and_malformed_replies_are_left_to_dnspython() -> None:
    q = dns.message.make_query("a.test.", "A")
    q.id = 7
    r = dns.message.make_response(q)
    r.flags |= dns.flags.TC
    with pytest.raises(Unreadable, match="truncated"):
        parse(r.to_wire(), 7, "a.test", RDTYPE_A)
    wire = reply("a.test.", "A", ("a.test.", "A", "198.18.0.10"))
    with pytest.raises(Unreadable):
        parse(wire[:-2], 7, "a.test", RDTYPE_A)  # the record's data cut short
    looped = bytearray(wire)
    at = len(query(7, "a.test", RDTYPE_A) or b"")  # the answer's owner name: a pointer to itself
    looped[at:at + 2] = bytes((0xC0 | (at >> 8), at & 0xFF))
    with pytest.raises(Unreadable):
        parse(bytes(looped), 7, "a.test", RDTYPE_A)


def test_asking_a_real_nameserver(dns_server: DnsServer) -> None:
    """Over UDP to the loopback nameserver: the answers this module reads; the rest raise for dnspython."""
    async def ask(name: str, rdtype: int, timeout: float = 5.0, port: int = dns_server.port) -> Reply:
        question = Question.open(V4, port, name, rdtype)
        assert question is not None
        try:
            question.send()
            return await question.reply(timeout)
        finally:
            question.close()

    www = asyncio.run(ask("www.test", RDTYPE_A))
    assert www.cnames == ("edge.test", "a.test") and www.ttl == 300
    assert sorted(www.addresses) == ["198.18.0.10", "198.18.0.11"]  # an RRset has no order
    assert asyncio.run(ask("nothing.test", RDTYPE_AAAA)) == Reply(NXDOMAIN)
    with pytest.raises(Unreadable):
        asyncio.run(ask("servfail.test", RDTYPE_A))  # dnspython's to read
    with pytest.raises(Unreadable):
        asyncio.run(ask("tcp.test", RDTYPE_A))  # truncated: dnspython retries over TCP
    with pytest.raises(TimeoutError):
        asyncio.run(ask("silent.test", RDTYPE_A, timeout=0.2))
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(ask("a.test", RDTYPE_A, port=closed_port()))  # port unreachable
    assert Question.open(V4, dns_server.port, "bücher.example", RDTYPE_A) is None  # dnspython encodes IDNs


def test_a_question_sent_again_is_the_same_datagram() -> None:
    async def twice(dns_server: DnsServer) -> Reply:
        question = Question.open(V4, dns_server.port, "lossy.test", RDTYPE_A)  # the first query is dropped
        assert question is not None
        try:
            question.send()
            with pytest.raises(TimeoutError):
                await question.reply(0.2)
            question.send()
            return await question.reply(5.0)
        finally:
            question.close()

    with DnsServer() as dns_server:  # its own: the shared one drops only the first query of each name
        assert asyncio.run(twice(dns_server)).addresses == ("198.18.0.40",)
    senders = [(p, i) for n, t, p, i in dns_server.udp_senders if (n, t) == ("lossy.test.", "A")]
    assert len(senders) == 2 and senders[0] == senders[1]
