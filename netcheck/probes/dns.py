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
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver

from netcheck.deadline import Deadline
from netcheck.models import DetailValue, Outcome, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes import _dnswire, _pace
from netcheck.probes._errors import classify, failure, ms, nameserver_text, too_late

#: Where the OS's resolver configuration is read from (not used on Windows).
RESOLV_CONF = "/etc/resolv.conf"

_RCODE_OF = {Outcome.NXDOMAIN: "NXDOMAIN", Outcome.SERVFAIL: "SERVFAIL",
             Outcome.DNS_REFUSED: "REFUSED", Outcome.NO_ANSWER: "NOERROR", Outcome.OK: "NOERROR"}



@dataclass(frozen=True)
class _Answered:
    """What a probe keeps of an answer, from dnspython or from :mod:`netcheck.probes._dnswire`."""

    addresses: list[str]  # sorted: an RRset has no order, the output is stable from run to run
    cnames: list[str]
    ttl: int | None
    nameserver: str | None

    @classmethod
    def of(cls, answer: dns.resolver.Answer) -> _Answered:
        addresses = [] if answer.rrset is None else [str(rdata.address) for rdata in answer.rrset]
        return cls(sorted(addresses, key=ipaddress.ip_address),
                   [str(rrset[0].target).rstrip(".") for rrset in answer.chaining_result.cnames if len(rrset)],
                   None if answer.rrset is None else answer.rrset.ttl, answer.nameserver or None)


_Result = _Answered | Exception

#: Questions asked at most for one record type (the first and its retries).
_ASKS = 4
#: How often an unanswered question looks at the retry timer again (it shortens as answers arrive).
_RECHECK_S = 0.25


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


def _only_server(resolver: dns.asyncresolver.Resolver) -> tuple[str, int] | None:
    """The address and port of the one nameserver, when there is one and it speaks plain DNS.

    With several, dnspython asks them (the next one after each's timeout), as the OS would.
    """
    if len(resolver.nameservers) != 1:
        return None
    first = resolver.nameservers[0]
    if isinstance(first, dns.nameserver.Do53Nameserver):
        return first.address, first.port
    if isinstance(first, str):
        return first, resolver.port
    return None


async def _ask(resolver: dns.asyncresolver.Resolver, name: str, rdtype: dns.rdatatype.RdataType,
               lifetime: float) -> _Result:
    """One question: over UDP by :mod:`~netcheck.probes._dnswire` to the only nameserver (the
    common case, NOERROR or NXDOMAIN), else (several nameservers; no usable answer in dnspython's
    time per server; another rcode, a truncated reply) by dnspython's resolver, with what is left
    of ``lifetime``."""
    server = _only_server(resolver)
    if server is not None:
        start = time.perf_counter()
        reply = await _dnswire.ask(server[0], server[1], name, int(rdtype), min(lifetime, resolver.timeout))
        if reply is not None and reply.rcode == _dnswire.NXDOMAIN:
            return dns.resolver.NXDOMAIN(qnames=[dns.name.from_text(name)], responses={})  # type: ignore[no-untyped-call]
        if reply is not None:
            return _Answered(sorted(reply.addresses, key=ipaddress.ip_address), list(reply.cnames), reply.ttl,
                             server[0])
        lifetime -= time.perf_counter() - start
        if lifetime <= 0:
            return dns.resolver.LifetimeTimeout(timeout=time.perf_counter() - start, errors=[])  # type: ignore[no-untyped-call]
    try:
        return _Answered.of(await resolver.resolve(name, rdtype, lifetime=lifetime, search=False,
                                                   raise_on_no_answer=False))
    except Exception as exc:  # every failure becomes an outcome, see _errors.classify
        return exc


async def _resolve(resolver: dns.asyncresolver.Resolver, name: str, rdtype: dns.rdatatype.RdataType,
                   lifetime: float) -> _Result:
    """One question, asked again while unanswered: the first answer (or DNS error) wins.

    The check's DNS retry timer (:meth:`~netcheck.probes._pace.Pace.dns_retry_s`,
    from the answer times measured so far) decides when to ask again, doubling
    after each retry; earlier questions stay open, so a late answer still counts.
    Each answer's time feeds the timer; each retry counts as a loss.
    """
    pace = _pace.current()
    loop = asyncio.get_running_loop()
    end = time.perf_counter() + lifetime
    sent: dict[asyncio.Task[_Result], float] = {}

    def ask() -> None:
        now = time.perf_counter()
        sent[loop.create_task(_ask(resolver, name, rdtype, max(0.0, end - now)))] = now

    ask()
    pending = set(sent)
    try:
        while True:
            retry_at = max(sent.values()) + pace.dns_retry_s() * 2 ** (len(sent) - 1)
            can_retry = len(sent) < _ASKS and retry_at < end
            wait = max(0.0, min(retry_at - time.perf_counter(), _RECHECK_S)) if can_retry else None
            done, pending = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if done:
                task = done.pop()
                result = task.result()
                if not isinstance(result, dns.exception.Timeout):
                    pace.dns_answered(time.perf_counter() - sent[task])
                if not pending or not isinstance(result, dns.exception.Timeout):
                    return result
            elif time.perf_counter() >= retry_at:
                pace.dns_lost()
                ask()
                pending = {t for t in sent if not t.done()}
    finally:
        for task in pending:
            task.cancel()


def _addresses(result: _Result) -> list[str]:
    return [] if isinstance(result, Exception) else result.addresses


def _cname_chain(result: _Result) -> list[str]:
    return [] if isinstance(result, Exception) else result.cnames


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
    ttls = [a.ttl for a in answers if a.ttl is not None]
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
