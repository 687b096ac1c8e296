"""DNS probe: resolve a name's A and AAAA records as the OS's resolvers would.

The resolver is dnspython's async stub resolver configured like the OS
(``/etc/resolv.conf`` on Linux and macOS, the registry on Windows), or with the
nameservers a :class:`~netcheck.models.ProbeSpec` names. It is built once per
configuration and shared by every probe (no cache of answers: each probe asks
the network).

Also here: :func:`resolver_identity`, which asks a "whoami" name whose
authoritative server answers with the address the query came from, i.e. the
egress address of the recursive resolver.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import time

import dns.asyncresolver
import dns.message
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver

from netcheck.deadline import Deadline
from netcheck.models import DetailValue, Outcome, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes._errors import classify, failure, ms, nameserver_text, too_late

#: Where the OS's resolver configuration is read from (not used on Windows).
RESOLV_CONF = "/etc/resolv.conf"

_RCODE_OF = {Outcome.NXDOMAIN: "NXDOMAIN", Outcome.SERVFAIL: "SERVFAIL",
             Outcome.DNS_REFUSED: "REFUSED", Outcome.NO_ANSWER: "NOERROR", Outcome.OK: "NOERROR"}

_Result = dns.resolver.Answer | Exception


def configured_resolver(nameservers: tuple[str, ...] = (), port: int = 53) -> dns.asyncresolver.Resolver:
    """The shared resolver for a configuration; ``()`` means the OS's.

    Raises ``dns.resolver.NoResolverConfiguration`` when the OS names no
    nameserver, ``ValueError`` for anything but an IP address. Failures are not
    cached; successes are, so the OS configuration is read once per process.
    """
    return _resolver(tuple(nameservers), port if nameservers else 53)


@functools.lru_cache(maxsize=32)
def _resolver(nameservers: tuple[str, ...], port: int) -> dns.asyncresolver.Resolver:
    if nameservers:
        for ns in nameservers:
            ipaddress.ip_address(ns)  # names would be looked up through the OS: refuse them
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(ns, port) for ns in nameservers]
    else:
        resolver = dns.asyncresolver.Resolver(filename=RESOLV_CONF)
    resolver.cache = None
    return resolver


def clear_resolver_cache() -> None:
    """Forget the configured resolvers (the OS configuration is read again)."""
    _resolver.cache_clear()


def resolver_cache_size() -> int:
    return _resolver.cache_info().currsize


def _nameserver_list(resolver: dns.asyncresolver.Resolver) -> list[str]:
    return [nameserver_text(ns) for ns in resolver.nameservers]


async def _resolve(resolver: dns.asyncresolver.Resolver, name: str, rdtype: dns.rdatatype.RdataType,
                   lifetime: float) -> _Result:
    try:
        return await resolver.resolve(name, rdtype, lifetime=lifetime, search=False,
                                      raise_on_no_answer=False)
    except Exception as exc:  # every failure becomes an outcome, see _errors.classify
        return exc


def _addresses(result: _Result) -> list[str]:
    if isinstance(result, Exception) or result.rrset is None:
        return []
    # An RRset has no order; sorted output is stable from run to run.
    return sorted((str(rdata.address) for rdata in result.rrset), key=ipaddress.ip_address)


def _cname_chain(result: _Result) -> list[str]:
    if isinstance(result, Exception):
        return []
    return [str(rrset[0].target).rstrip(".")
            for rrset in result.chaining_result.cnames if len(rrset)]


def _summary(kind: ProbeKind, target: Target, results: tuple[_Result, _Result],
             resolver: dns.asyncresolver.Resolver, elapsed: float) -> ProbeResult:
    ipv4, ipv6 = _addresses(results[0]), _addresses(results[1])
    answers = [r for r in results if not isinstance(r, Exception)]
    errors = [r for r in results if isinstance(r, Exception)]
    detail: dict[str, DetailValue] = {
        "addresses": ipv4 + ipv6, "ipv4": ipv4, "ipv6": ipv6,
        "cname_chain": next((c for c in map(_cname_chain, results) if c), []),
        "resolver": next((str(a.nameserver) for a in answers if a.nameserver), None),
        "nameservers": _nameserver_list(resolver),
    }
    ttls = [a.rrset.ttl for a in answers if a.rrset is not None]
    detail["ttl"] = min(ttls) if ttls else None
    phases = {"resolve": ms(elapsed)}
    if ipv4 or ipv6:
        outcome, reason = Outcome.OK, f"resolved to {len(ipv4) + len(ipv6)} address(es)"
        if errors:
            detail["errors"] = [f"{t}: {classify(e)[1]}" for t, e in zip(("A", "AAAA"), results, strict=True)
                                if isinstance(e, Exception)]
    elif any(isinstance(e, dns.resolver.NXDOMAIN) for e in errors):
        outcome, reason = classify(next(e for e in errors if isinstance(e, dns.resolver.NXDOMAIN)))
    elif not errors or all(isinstance(e, dns.resolver.NoAnswer) for e in errors):
        outcome, reason = Outcome.NO_ANSWER, "the name exists but has no address records"
    else:
        outcome, reason = classify(next(e for e in errors if not isinstance(e, dns.resolver.NoAnswer)))
    detail["rcode"] = _RCODE_OF.get(outcome)
    return ProbeResult(kind, target, outcome, reason, phases, detail)


#: How long a nameserver has to refuse (ICMP port unreachable) before it is taken as listening.
REFUSAL_WAIT = 0.3
_refusals: dict[tuple[int, tuple[str, ...]], asyncio.Task[bool]] = {}


class _Knock(asyncio.DatagramProtocol):
    def __init__(self, done: asyncio.Future[bool]) -> None:
        self.done = done

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.done.done():
            self.done.set_result(False)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_result(isinstance(exc, ConnectionRefusedError))


async def _knock(address: str, port: int) -> bool:
    """One query on a connected UDP socket: True if the host says nothing listens on the port.

    dnspython's UDP sockets are not connected, so they never see the refusal and wait out
    the whole deadline; this sees it at once.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()
    try:
        transport, _ = await loop.create_datagram_endpoint(lambda: _Knock(done), remote_addr=(address, port))
    except OSError:
        return False  # unreachable and the like: the resolver's own answer says so
    try:
        transport.sendto(dns.message.make_query(".", dns.rdatatype.NS).to_wire())
        return await asyncio.wait_for(done, REFUSAL_WAIT)
    except (TimeoutError, OSError):
        return False
    finally:
        transport.close()


async def _all_refuse(servers: tuple[tuple[str, int], ...]) -> bool:
    return bool(servers) and all(await asyncio.gather(*(_knock(a, p) for a, p in servers)))


def _refused(resolver: dns.asyncresolver.Resolver) -> asyncio.Task[bool]:
    """Whether every nameserver refuses, asked once per event loop (i.e. per check)."""
    servers = tuple((ns, resolver.port) if isinstance(ns, str) else (ns.address, ns.port)
                    for ns in resolver.nameservers if isinstance(ns, str | dns.nameserver.Do53Nameserver))
    if len(servers) != len(resolver.nameservers):
        servers = ()  # DNS over HTTPS or TLS: no refusal to see
    loop = asyncio.get_running_loop()
    key = (id(loop), tuple(f"{a}:{p}" for a, p in servers))
    task = _refusals.get(key)
    if task is None or task.get_loop() is not loop:
        for old in [k for k, t in _refusals.items() if t.done()]:
            del _refusals[old]
        task = _refusals[key] = asyncio.ensure_future(_all_refuse(servers))
    return task


async def _lookup(kind: ProbeKind, target: Target, spec: ProbeSpec, deadline: Deadline) -> ProbeResult:
    lifetime = deadline.step(spec.step_timeout_s)
    if lifetime <= 0:
        return too_late(kind, target)
    try:
        resolver = configured_resolver(tuple(spec.nameservers), spec.nameserver_port)
    except Exception as exc:  # no configuration, malformed address
        return failure(kind, target, exc)
    start = time.perf_counter()
    if await asyncio.shield(_refused(resolver)):
        servers = _nameserver_list(resolver)
        return ProbeResult(kind, target, Outcome.NO_RESOLVER,
                           f"the DNS server ({', '.join(servers)}) refused: nothing listens on its port",
                           {"resolve": ms(time.perf_counter() - start)}, {"nameservers": servers, "rcode": None})
    try:
        async with asyncio.timeout_at(deadline.at):
            results = await asyncio.gather(
                _resolve(resolver, target.host, dns.rdatatype.A, lifetime),
                _resolve(resolver, target.host, dns.rdatatype.AAAA, lifetime))
    except TimeoutError:
        servers = _nameserver_list(resolver)
        return ProbeResult(kind, target, Outcome.DNS_TIMEOUT,
                           f"the DNS server ({', '.join(servers)}) did not answer in time",
                           {"resolve": ms(time.perf_counter() - start)},
                           {"nameservers": servers, "rcode": None})
    return _summary(kind, target, (results[0], results[1]), resolver, time.perf_counter() - start)


async def probe_dns(target: Target, spec: ProbeSpec, deadline: Deadline) -> ProbeResult:
    """Resolve ``target.host`` (A and AAAA, concurrently)."""
    return await _lookup(ProbeKind.DNS, target, spec, deadline)


async def resolver_identity(spec: ProbeSpec, deadline: Deadline) -> ProbeResult:
    """Which address the recursive resolver asks the internet from (kind WHOAMI).

    Detail ``resolver_address`` is the answer to ``spec.whoami_name``.
    """
    if not spec.whoami_name:
        return ProbeResult(ProbeKind.WHOAMI, Target(host=""), Outcome.NOT_TESTABLE,
                           "no \"whoami\" name is configured, so the resolver's egress address is unknown")
    result = await _lookup(ProbeKind.WHOAMI, Target(host=spec.whoami_name), spec, deadline)
    addresses = result.detail.get("addresses")
    first = addresses[0] if isinstance(addresses, list) and addresses else None
    if result.outcome is Outcome.OK:
        reason = f"the DNS resolver reaches the internet from {first}"
    else:
        reason = result.reason
    return ProbeResult(result.kind, result.target, result.outcome, reason, result.phases,
                       {**result.detail, "resolver_address": first}, result.family)
