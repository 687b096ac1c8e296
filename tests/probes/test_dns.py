"""The DNS probe and resolver identification against a real nameserver on loopback."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from netcheck.deadline import Deadline
from netcheck.models import Outcome, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes import PROBES, _pace
from netcheck.probes import dns as dnsprobe
from netcheck.probes._errors import nameserver_text
from netcheck.probes.dns import (
    configured_nameservers,
    probe_dns,
    read_resolv_conf,
    resolver_cache_size,
    resolver_identity,
)
from tests.probes.conftest import checked, run
from tests.servers import V4, V6, DnsServer, closed_port


def spec_for(server: DnsServer, **kw: object) -> ProbeSpec:
    return ProbeSpec(nameservers=(server.host,), nameserver_port=server.port, **kw)  # type: ignore[arg-type]


def resolve(server: DnsServer, name: str, seconds: float = 10.0, **kw: object) -> ProbeResult:
    return run(probe_dns(Target(name), spec_for(server, **kw), Deadline.after(seconds)))


def test_registered() -> None:
    assert PROBES[ProbeKind.DNS] is probe_dns


def test_a_and_aaaa(dns_server: DnsServer) -> None:
    r = resolve(dns_server, "a.test")
    assert r.outcome is Outcome.OK and r.kind is ProbeKind.DNS
    assert r.detail["ipv4"] == ["198.18.0.10", "198.18.0.11"]
    assert r.detail["ipv6"] == ["2001:db8::10"]
    assert r.detail["addresses"] == ["198.18.0.10", "198.18.0.11", "2001:db8::10"]
    assert r.detail["cname_chain"] == []
    assert r.detail["rcode"] == "NOERROR"
    assert r.detail["resolver"] == V4
    assert r.detail["ttl"] == 300
    assert "resolve" in r.phases
    asked = [(n, t) for n, t, _ in dns_server.queries if n == "a.test."]
    assert ("a.test.", "A") in asked and ("a.test.", "AAAA") in asked


def test_cname_chain(dns_server: DnsServer) -> None:
    r = resolve(dns_server, "www.test")
    assert r.outcome is Outcome.OK
    assert r.detail["cname_chain"] == ["edge.test", "a.test"]
    assert r.detail["ipv4"] == ["198.18.0.10", "198.18.0.11"]


def test_one_family_only(dns_server: DnsServer) -> None:
    v4 = resolve(dns_server, "v4only.test")
    assert v4.outcome is Outcome.OK and v4.detail["ipv6"] == [] and v4.detail["ttl"] == 60
    v6 = resolve(dns_server, "v6only.test")
    assert v6.outcome is Outcome.OK and v6.detail["ipv4"] == [] and v6.detail["ipv6"] == ["2001:db8::20"]


def test_no_answer(dns_server: DnsServer) -> None:
    r = resolve(dns_server, "empty.test")
    assert r.outcome is Outcome.NO_ANSWER
    assert r.detail["rcode"] == "NOERROR" and r.detail["addresses"] == []


def test_nxdomain(dns_server: DnsServer) -> None:
    r = resolve(dns_server, "missing.test")
    assert r.outcome is Outcome.NXDOMAIN
    assert r.detail["rcode"] == "NXDOMAIN"
    assert "does not exist" in r.reason


def test_servfail(dns_server: DnsServer) -> None:
    r = resolve(dns_server, "servfail.test")
    assert r.outcome is Outcome.SERVFAIL
    assert r.detail["rcode"] == "SERVFAIL"
    assert f"{V4}:{dns_server.port}" in r.reason


def test_refused(dns_server: DnsServer) -> None:
    r = resolve(dns_server, "refused.test")
    assert r.outcome is Outcome.DNS_REFUSED
    assert r.detail["rcode"] == "REFUSED"


@pytest.mark.timeout(30)
def test_silent_server_ends_by_the_deadline(dns_server: DnsServer) -> None:
    r = resolve(dns_server, "silent.test", seconds=0.6)
    assert r.outcome is Outcome.DNS_TIMEOUT
    assert "did not answer" in r.reason


@pytest.mark.timeout(30)
def test_silent_server_ends_by_the_step_cap(dns_server: DnsServer) -> None:
    # The overall deadline is far away: the per-step cap ends the lookup.
    r = resolve(dns_server, "silent.test", seconds=120, step_timeout_s=0.5)
    assert r.outcome is Outcome.DNS_TIMEOUT


def test_truncated_answer_retried_over_tcp(dns_server: DnsServer) -> None:
    r = resolve(dns_server, "tcp.test")
    assert r.outcome is Outcome.OK and r.detail["ipv4"] == ["198.18.0.30"]
    assert ("tcp.test.", "A", "tcp") in dns_server.queries


def test_deadline_already_passed(dns_server: DnsServer) -> None:
    before = len(dns_server.queries)
    r = resolve(dns_server, "a.test", seconds=0)
    assert r.outcome is Outcome.TIMEOUT
    assert len(dns_server.queries) == before  # nothing was sent


@pytest.mark.timeout(30)
def test_nobody_listening(dns_server: DnsServer) -> None:
    spec = ProbeSpec(nameservers=(V4,), nameserver_port=closed_port(), step_timeout_s=0.5)
    r = run(probe_dns(Target("a.test"), spec, Deadline.after(10)))
    # dnspython's unconnected UDP socket never sees the ICMP refusal; the probe's own knock does.
    assert r.outcome is Outcome.NO_RESOLVER
    assert "refused" in r.reason


def test_malformed_nameserver() -> None:
    r = run(probe_dns(Target("a.test"), ProbeSpec(nameservers=("not-an-address",)), Deadline.after(2)))
    assert r.outcome is Outcome.ERROR
    assert "not-an-address" in r.reason


def test_concurrent_probes_share_one_resolver(dns_server: DnsServer) -> None:
    spec = spec_for(dns_server)

    async def many() -> list[ProbeResult]:
        deadline = Deadline.after(10)
        names = ["a.test", "www.test", "missing.test", "v4only.test"] * 25
        return list(await asyncio.gather(*(probe_dns(Target(n), spec, deadline) for n in names)))

    results = [checked(r) for r in asyncio.run(many())]
    assert [r.outcome for r in results].count(Outcome.OK) == 75
    assert [r.outcome for r in results].count(Outcome.NXDOMAIN) == 25
    assert resolver_cache_size() == 1


def test_ipv6_nameserver(need_ipv6: None, dns_server6: DnsServer) -> None:
    r = resolve(dns_server6, "a.test")
    assert r.outcome is Outcome.OK and r.detail["resolver"] == V6


# --- the OS's configuration ---------------------------------------------------------------

@pytest.fixture
def resolv_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "resolv.conf"
    monkeypatch.setattr(dnsprobe, "RESOLV_CONF", str(path))
    return path


def test_no_nameserver_configured(resolv_conf: Path) -> None:
    resolv_conf.write_text("# nothing here\nsearch corp.example\n")
    r = run(probe_dns(Target("a.test"), ProbeSpec(), Deadline.after(2)))
    assert r.outcome is Outcome.NO_RESOLVER
    assert "no DNS servers configured" in r.reason


def test_no_resolver_configuration_file(resolv_conf: Path) -> None:
    r = run(probe_dns(Target("a.test"), ProbeSpec(), Deadline.after(2)))
    assert r.outcome is Outcome.NO_RESOLVER


def test_os_configuration_is_read_once_and_used(resolv_conf: Path, dns_server: DnsServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    resolv_conf.write_text(f"nameserver {V4}\noptions timeout:1\n")
    # resolv.conf cannot name a port: the test server's stands in for 53
    monkeypatch.setattr(dnsprobe, "OS_PORT", dns_server.port)
    servers = configured_nameservers()
    assert servers.only == (V4, dns_server.port)
    r = run(probe_dns(Target("a.test"), ProbeSpec(), Deadline.after(5)))
    assert r.outcome is Outcome.OK and r.detail["nameservers"] == [f"{V4}:{dns_server.port}"]
    # ... and the configuration is read once, not per probe.
    resolv_conf.write_text("nameserver 127.0.0.2\n")
    assert configured_nameservers() is servers


def test_several_os_nameservers_are_dnspythons(resolv_conf: Path) -> None:
    resolv_conf.write_text(f"nameserver {V4}\nnameserver 127.0.0.2\n")
    servers = configured_nameservers()
    assert servers.only is None and servers.shown == (V4, "127.0.0.2")
    assert servers.plain == ((V4, 53), ("127.0.0.2", 53))


@pytest.mark.parametrize(("text", "servers"), [
    ("nameserver 10.0.0.1\n", ["10.0.0.1"]),
    ("# nameserver 10.0.0.9\n; nameserver 10.0.0.8\nnameserver 10.0.0.1 # home\nsearch a.example\n",
     ["10.0.0.1"]),
    ("nameserver\noptions rotate timeout:3 edns0\nnameserver ::1\n", ["::1"]),
    ("options timeout:x ndots:2\n", []),
])
def test_resolv_conf_read_as_dnspython_reads_it(text: str, servers: list[str]) -> None:
    import dns.resolver

    assert read_resolv_conf(text) == servers
    theirs = dns.resolver.Resolver(configure=False)
    try:
        theirs.read_resolv_conf(io.StringIO(text))
    except dns.resolver.NoResolverConfiguration:
        assert servers == []
    else:
        assert [nameserver_text(ns) for ns in theirs.nameservers] == servers


def test_one_nameserver_is_asked_without_dnspython(dns_server: DnsServer) -> None:
    """Importing dnspython costs a tenth of a check's CPU: the common case does without it."""
    code = textwrap.dedent(f"""
        import asyncio, sys
        from netcheck.deadline import Deadline
        from netcheck.models import ProbeSpec, Target
        from netcheck.probes import probe_dns
        spec = ProbeSpec(nameservers=("{V4}",), nameserver_port={dns_server.port})
        ok = asyncio.run(probe_dns(Target("a.test"), spec, Deadline.after(5)))
        missing = asyncio.run(probe_dns(Target("missing.test"), spec, Deadline.after(5)))
        print(ok.outcome, missing.outcome, missing.reason, "dns" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split(" ", 2)
    assert out[:2] == ["ok", "nxdomain"]
    assert out[2].rsplit(" ", 1) == ["the name does not exist (NXDOMAIN)", "False\n"]


# --- whoami -------------------------------------------------------------------------------

def test_resolver_identity(dns_server: DnsServer) -> None:
    r = checked(asyncio.run(resolver_identity(spec_for(dns_server, whoami_name="whoami.test"),
                                              Deadline.after(5))))
    assert r.kind is ProbeKind.WHOAMI and r.outcome is Outcome.OK
    assert r.detail["resolver_address"] == V4
    assert r.target.host == "whoami.test"


def test_resolver_identity_ipv6(need_ipv6: None, dns_server6: DnsServer) -> None:
    r = checked(asyncio.run(resolver_identity(spec_for(dns_server6, whoami_name="whoami.test"),
                                              Deadline.after(5))))
    assert r.outcome is Outcome.OK and r.detail["resolver_address"] == V6


def test_resolver_identity_not_configured() -> None:
    r = checked(asyncio.run(resolver_identity(ProbeSpec(), Deadline.after(5))))
    assert r.kind is ProbeKind.WHOAMI and r.outcome is Outcome.NOT_TESTABLE
    assert "whoami" in r.reason


def test_resolver_identity_failure(dns_server: DnsServer) -> None:
    r = checked(asyncio.run(resolver_identity(spec_for(dns_server, whoami_name="missing.test"),
                                              Deadline.after(5))))
    assert r.outcome is Outcome.NXDOMAIN and r.detail["resolver_address"] is None


def test_a_lost_query_is_asked_again_after_the_measured_round_trip(dns_server: DnsServer) -> None:
    """The server drops the first query of each type: the probe asks again after the check's
    DNS retry timer (measured round trips: the floor here), not dnspython's 2 s, and gets its answer."""
    pace = _pace.Pace()
    pace.dns_answered(0.001)  # a round trip measured earlier in this check

    async def probe() -> ProbeResult:
        with _pace.use(pace):
            return await probe_dns(Target("lossy.test"), spec_for(dns_server), Deadline.after(10))

    before = len(dns_server.queries)
    r = run(probe())
    assert r.outcome is Outcome.OK and r.detail["ipv4"] == ["198.18.0.40"] and r.detail["ipv6"] == ["2001:db8::40"]
    asked = [t for n, t, _ in dns_server.queries[before:] if n == "lossy.test."]
    assert asked.count("A") == 2 and asked.count("AAAA") == 2
    # asked again as it was (the same ID from the same port): a forwarder forwards a retry again
    # at once, where dnsmasq makes a new ID or port wait for the first question's answer
    for rdtype in ("A", "AAAA"):
        senders = [(p, i) for n, t, p, i in dns_server.udp_senders if n == "lossy.test." and t == rdtype]
        assert len(senders) == 2 and senders[0] == senders[1]
    # the retry counted as a loss: the DNS limit backed off (x0.7)
    assert pace.dns.history[:2] == [40, 28]
    # both answers fed the timer (timed from their questions' first send)
    assert pace.dns.estimate.samples == 3


def test_a_silent_server_is_asked_a_bounded_number_of_times(dns_server: DnsServer) -> None:
    pace = _pace.Pace()
    pace.dns_answered(0.001)
    before = len(dns_server.queries)

    async def probe() -> ProbeResult:
        with _pace.use(pace):
            return await probe_dns(Target("silent.test"), spec_for(dns_server, step_timeout_s=2.0),
                                   Deadline.after(10))

    r = run(probe())
    assert r.outcome is Outcome.DNS_TIMEOUT
    asked = [t for n, t, _ in dns_server.queries[before:] if n == "silent.test."]
    # the first question and its retries, doubling from 0.1 s: 0.1, 0.2, 0.4 s, then no more
    assert asked.count("A") == dnsprobe._ASKS and asked.count("AAAA") == dnsprobe._ASKS
