"""DNS probe: resolve a name's A and AAAA records as the OS's resolvers would.

The nameservers are the OS's (``/etc/resolv.conf`` on Linux and macOS, the
registry on Windows), or those a :class:`~netcheck.models.ProbeSpec` names,
read once per configuration and shared by every probe (no cache of answers:
each probe asks the network). The common case, one nameserver speaking plain
DNS, is asked by :mod:`netcheck.probes._dnswire`; everything else (several
nameservers, the registry, an answer that module does not read) by dnspython's
async stub resolver, imported only then: importing dnspython costs about 50 ms
of CPU, a tenth of a whole check's.

Also here: :func:`resolver_identity`, which asks a "whoami" name whose
authoritative server answers with the address the query came from, i.e. the
egress address of the recursive resolver.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from netcheck.deadline import Deadline
from netcheck.models import DetailValue, Outcome, ProbeKind, ProbeResult, ProbeSpec, Target
from netcheck.probes import _dnswire, _pace
from netcheck.probes._errors import classify, failure, ms, nameserver_text, too_late

if TYPE_CHECKING:
    import dns.asyncresolver
    import dns.resolver

#: Where the OS's resolver configuration is read from (not used on Windows).
RESOLV_CONF = "/etc/resolv.conf"
#: The port the OS's nameservers are asked on (resolv.conf cannot name another).
OS_PORT = 53

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


@dataclass(frozen=True)
class Nameservers:
    """Where a probe's questions go, for one configuration."""

    #: As reasons and details name them (``192.168.1.1``, ``[::1]:5353``).
    shown: tuple[str, ...]
    #: The plain-DNS servers (address, port): where the refusal check knocks; empty when any is not.
    plain: tuple[tuple[str, int], ...]
    #: The one plain-DNS nameserver :mod:`~netcheck.probes._dnswire` asks; None: dnspython asks them all.
    only: tuple[str, int] | None
    #: The configuration of dnspython's resolver (see :func:`dnspython_resolver`): ``(nameservers, port)``,
    #: ``()`` for the OS's.
    source: tuple[tuple[str, ...], int]


def _shown(address: str, port: int) -> str:
    return nameserver_text(f"Do53:{address}@{port}")


def read_resolv_conf(text: str) -> list[str]:
    """The ``nameserver`` entries of resolv.conf text, read as dnspython reads them."""
    servers: list[str] = []
    for line in text.splitlines():
        tokens = line.split()
        if line and line[0] not in "#;" and len(tokens) >= 2 and tokens[0] == "nameserver":
            servers.append(tokens[1])
    return servers


def _plain_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return "%" not in text


def configured_nameservers(nameservers: tuple[str, ...] = (), port: int = 53) -> Nameservers:
    """The configuration's nameservers; ``()`` means the OS's.

    Raises ``ValueError`` for anything but an IP address, and dnspython's
    ``NoResolverConfiguration`` when the OS names no nameserver. Failures are
    not cached; successes are, so the OS configuration is read once per process.
    """
    return _nameservers(tuple(nameservers), port if nameservers else OS_PORT)


@functools.lru_cache(maxsize=32)
def _nameservers(nameservers: tuple[str, ...], port: int) -> Nameservers:
    if nameservers:
        for ns in nameservers:
            ipaddress.ip_address(ns)  # names would be looked up through the OS: refuse them
        plain = tuple((ns, port) for ns in nameservers)
        return Nameservers(tuple(_shown(a, p) for a, p in plain), plain, plain[0] if len(plain) == 1 else None,
                           (nameservers, port))
    if os.name == "posix":  # Windows: the registry, read by dnspython
        try:
            with open(RESOLV_CONF, encoding="utf-8") as f:
                servers = read_resolv_conf(f.read())
        except (OSError, UnicodeDecodeError):
            servers = []
        if len(servers) == 1 and _plain_address(servers[0]):
            only = (servers[0], port)
            return Nameservers((_shown(*only),), (only,), only, ((), port))
    # several nameservers, none, or one dnspython must read: dnspython's configuration
    return _of(dnspython_resolver((), port), ((), port))


def _of(resolver: dns.asyncresolver.Resolver, source: tuple[tuple[str, ...], int]) -> Nameservers:
    import dns.nameserver

    plain = tuple((ns, resolver.port) if isinstance(ns, str) else (ns.address, ns.port)
                  for ns in resolver.nameservers if isinstance(ns, str | dns.nameserver.Do53Nameserver))
    if len(plain) != len(resolver.nameservers):
        plain = ()  # DNS over HTTPS or TLS: no refusal to see
    return Nameservers(tuple(nameserver_text(ns) for ns in resolver.nameservers), plain,
                       plain[0] if len(resolver.nameservers) == 1 and plain else None, source)


@functools.lru_cache(maxsize=32)
def dnspython_resolver(nameservers: tuple[str, ...], port: int) -> dns.asyncresolver.Resolver:
    """dnspython's shared resolver for a configuration (imports dnspython); ``()`` means the OS's."""
    import dns.asyncresolver
    import dns.nameserver

    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(ns, port) for ns in nameservers]
    else:
        resolver = dns.asyncresolver.Resolver(filename=RESOLV_CONF)
    resolver.cache = None
    return resolver


def clear_resolver_cache() -> None:
    """Forget the configured nameservers and resolvers (the OS configuration is read again)."""
    _nameservers.cache_clear()
    dnspython_resolver.cache_clear()


def resolver_cache_size() -> int:
    return _nameservers.cache_info().currsize


def _from_dnspython(exc: Exception) -> _Result:
    """dnspython's failures as this module's: NXDOMAIN, no answer in time (the cause kept for the reason)."""
    import dns.exception
    import dns.resolver

    if isinstance(exc, dns.resolver.NXDOMAIN):
        found: Exception = _dnswire.NameNotFound(str(exc))
    elif isinstance(exc, dns.exception.Timeout):
        found = _dnswire.Unanswered(str(exc))
    elif isinstance(exc, dns.resolver.NoAnswer):
        return _Answered([], [], None, None)
    else:
        return exc
    found.__cause__ = exc
    return found


async def _ask_directly(server: tuple[str, int], name: str, rdtype: int, lifetime: float) -> _Result | None:
    """The question over UDP by :mod:`~netcheck.probes._dnswire` to the one nameserver (the common
    case: NOERROR or NXDOMAIN), sent again as it is (:class:`~netcheck.probes._dnswire.Question`) while
    unanswered, on the check's DNS retry timer (:meth:`~netcheck.probes._pace.Pace.dns_retry_s`, from
    the answer times measured so far), doubling after each retry, at most :data:`_ASKS` times.

    Each answer feeds the timer with its time since the question was first sent (an upper bound
    when a retry was answered); each retry counts as a loss. None when dnspython must answer: a name this module cannot
    encode, a reply it does not read (another rcode, truncated), an error on the socket.
    """
    pace = _pace.current()
    question = _dnswire.Question.open(server[0], server[1], name, rdtype)
    if question is None:
        return None
    try:
        start = time.perf_counter()
        end = start + lifetime
        sent = [start]
        question.send()
        while True:
            retry_at = sent[-1] + pace.dns_retry_s() * 2 ** (len(sent) - 1)
            can_retry = len(sent) < _ASKS and retry_at < end
            until = min(retry_at, time.perf_counter() + _RECHECK_S) if can_retry else end
            try:
                reply = await question.reply(max(0.0, until - time.perf_counter()))
            except TimeoutError:
                now = time.perf_counter()
                if now >= end:
                    return _dnswire.Unanswered(f"no answer from {server[0]}")
                if can_retry and now >= retry_at:
                    pace.dns_lost()
                    question.send()
                    sent.append(now)
                continue
            # From the first send even when the answer followed a retry (Karn's rule would take no
            # sample: answers slower than the timer, a forwarder's upstream ones, would never teach it)
            pace.dns_answered(time.perf_counter() - start)
            if reply.rcode == _dnswire.NXDOMAIN:
                return _dnswire.NameNotFound(f"{name} does not exist")
            return _Answered(sorted(reply.addresses, key=ipaddress.ip_address), list(reply.cnames), reply.ttl,
                             server[0])
    except (OSError, _dnswire.Unreadable):
        return None
    finally:
        question.close()


async def _ask(servers: Nameservers, name: str, rdtype: int, lifetime: float) -> _Result:
    """One question, by dnspython's resolver (it asks each nameserver in turn)."""
    import dns.rdatatype

    try:
        resolver = dnspython_resolver(*servers.source)
        return _Answered.of(await resolver.resolve(name, dns.rdatatype.RdataType(rdtype), lifetime=lifetime,
                                                   search=False, raise_on_no_answer=False))
    except Exception as exc:  # every failure becomes an outcome, see _errors.classify
        return _from_dnspython(exc)


async def _resolve(servers: Nameservers, name: str, rdtype: int, lifetime: float) -> _Result:
    """One question: directly to the only nameserver (:func:`_ask_directly`), else (several
    nameservers, or what only dnspython reads) by dnspython with what is left of ``lifetime``,
    asked again while unanswered: the first answer (or DNS error) wins.

    The check's DNS retry timer (:meth:`~netcheck.probes._pace.Pace.dns_retry_s`)
    decides when dnspython asks again, doubling after each retry; earlier questions stay
    open, so a late answer still counts. Each answer's time feeds the timer; each retry
    counts as a loss.
    """
    if servers.only is not None:
        start = time.perf_counter()
        direct = await _ask_directly(servers.only, name, rdtype, lifetime)
        if direct is not None:
            return direct
        lifetime -= time.perf_counter() - start
        if lifetime <= 0:
            return _dnswire.Unanswered(f"no answer from {servers.only[0]}")
    pace = _pace.current()
    loop = asyncio.get_running_loop()
    end = time.perf_counter() + lifetime
    sent: dict[asyncio.Task[_Result], float] = {}

    def ask() -> None:
        now = time.perf_counter()
        sent[loop.create_task(_ask(servers, name, rdtype, max(0.0, end - now)))] = now

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
                if not isinstance(result, _dnswire.Unanswered):
                    pace.dns_answered(time.perf_counter() - sent[task])
                if not pending or not isinstance(result, _dnswire.Unanswered):
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


def _summary(kind: ProbeKind, target: Target, results: tuple[_Result, _Result], servers: Nameservers,
             elapsed: float) -> ProbeResult:
    ipv4, ipv6 = _addresses(results[0]), _addresses(results[1])
    answers = [r for r in results if not isinstance(r, Exception)]
    errors = [r for r in results if isinstance(r, Exception)]
    detail: dict[str, DetailValue] = {
        "addresses": ipv4 + ipv6, "ipv4": ipv4, "ipv6": ipv6,
        "cname_chain": next((c for c in map(_cname_chain, results) if c), []),
        "resolver": next((str(a.nameserver) for a in answers if a.nameserver), None),
        "nameservers": list(servers.shown),
    }
    ttls = [a.ttl for a in answers if a.ttl is not None]
    detail["ttl"] = min(ttls) if ttls else None
    phases = {"resolve": ms(elapsed)}
    if ipv4 or ipv6:
        outcome, reason = Outcome.OK, f"resolved to {len(ipv4) + len(ipv6)} address(es)"
        if errors:
            detail["errors"] = [f"{t}: {classify(e)[1]}" for t, e in zip(("A", "AAAA"), results, strict=True)
                                if isinstance(e, Exception)]
    elif any(isinstance(e, _dnswire.NameNotFound) for e in errors):
        outcome, reason = classify(next(e for e in errors if isinstance(e, _dnswire.NameNotFound)))
    elif not errors:
        outcome, reason = Outcome.NO_ANSWER, "the name exists but has no address records"
    else:
        outcome, reason = classify(errors[0])
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
        transport.sendto(_dnswire.query(secrets.randbits(16), ".", _dnswire.RDTYPE_NS) or b"")
        return await asyncio.wait_for(done, REFUSAL_WAIT)
    except (TimeoutError, OSError):
        return False
    finally:
        transport.close()


async def _all_refuse(servers: tuple[tuple[str, int], ...]) -> bool:
    return bool(servers) and all(await asyncio.gather(*(_knock(a, p) for a, p in servers)))


def _refused(nameservers: Nameservers) -> asyncio.Task[bool]:
    """Whether every nameserver refuses, asked once per event loop (i.e. per check)."""
    servers = nameservers.plain
    loop = asyncio.get_running_loop()
    key = (id(loop), tuple(f"{a}:{p}" for a, p in servers))
    task = _refusals.get(key)
    if task is None or task.get_loop() is not loop:
        for old in [k for k, t in _refusals.items() if t.done()]:
            del _refusals[old]
        task = _refusals[key] = asyncio.ensure_future(_all_refuse(servers))
    return task


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's outcome as seen (it was given up on: nothing needs it)."""
    if not future.cancelled():
        future.exception()


async def _lookup(kind: ProbeKind, target: Target, spec: ProbeSpec, deadline: Deadline) -> ProbeResult:
    lifetime = deadline.step(spec.step_timeout_s)
    if lifetime <= 0:
        return too_late(kind, target)
    try:
        nameservers = configured_nameservers(tuple(spec.nameservers), spec.nameserver_port)
    except Exception as exc:  # no configuration, malformed address
        return failure(kind, target, exc)
    start = time.perf_counter()
    servers = list(nameservers.shown)
    # The refusal check runs beside the questions, not before them: a listening server's answer
    # to it takes a round trip (through a forwarder, more), which every first lookup waited for.
    refused = asyncio.shield(_refused(nameservers))
    lookup = asyncio.ensure_future(asyncio.gather(
        _resolve(nameservers, target.host, _dnswire.RDTYPE_A, lifetime),
        _resolve(nameservers, target.host, _dnswire.RDTYPE_AAAA, lifetime)))
    try:
        async with asyncio.timeout_at(deadline.at):
            racing: list[asyncio.Future[Any]] = [refused, lookup]
            done, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            if refused in done and refused.result() and not lookup.done():
                return ProbeResult(kind, target, Outcome.NO_RESOLVER,
                                   f"the DNS server ({', '.join(servers)}) refused: nothing listens on its port",
                                   {"resolve": ms(time.perf_counter() - start)},
                                   {"nameservers": servers, "rcode": None})
            results = await lookup
    except TimeoutError:
        return ProbeResult(kind, target, Outcome.DNS_TIMEOUT,
                           f"the DNS server ({', '.join(servers)}) did not answer in time",
                           {"resolve": ms(time.perf_counter() - start)},
                           {"nameservers": servers, "rcode": None})
    finally:
        lookup.cancel()
        # a gather cancelled through its children ends with their CancelledError as its exception: take it,
        # or asyncio logs "exception was never retrieved" with a traceback on the user's terminal
        lookup.add_done_callback(_retrieved)
        refused.cancel()  # the shield only: the check's one refusal task goes on
    return _summary(kind, target, (results[0], results[1]), nameservers, time.perf_counter() - start)


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
