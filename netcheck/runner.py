"""Run every probe of a check concurrently, under one deadline.

The runner owns everything around a probe (concurrency, the deadline, turning
an unexpected exception into an ERROR outcome, progress callbacks); probes only
probe. It never prints. How many probes and DNS lookups are in flight follows
the network (:mod:`netcheck.probes._pace`): the check's :class:`Pace` is
current for every probe, which feeds it the round trips it measures.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netcheck.deadline import Deadline
from netcheck.m365.catalog import MediaTarget, Network, TargetPlan
from netcheck.models import Category, Outcome, ProbeKind, ProbeResult, ProbeSpec, Target

if TYPE_CHECKING:
    from netcheck.probes._pace import Pace

log = logging.getLogger(__name__)

#: File descriptors kept for everything but probes (the interpreter, logs, the resolver's own).
_FD_RESERVE = 64
#: The descriptor limit asked for when the OS's soft limit is lower (macOS starts at 256).
_FD_WANTED = 4096

OnResult = Callable[[ProbeResult], None]
#: Given the results once the check's burst is over, the TCP probes to take again without it
#: (:func:`netcheck.assess.verdict.latency_to_confirm`).
ToConfirm = Callable[[Sequence[ProbeResult]], Sequence[Target]]
#: A media probe also gets the UDP ports published for the media endpoints.
MediaProbe = Callable[[Target, ProbeSpec, Deadline, tuple[int, ...]], Awaitable[ProbeResult]]


def _noop(_: ProbeResult) -> None:
    return None


@dataclass(frozen=True)
class RunSettings:
    #: Probes in flight at first; then the limit follows the network, up to what the
    #: process's file descriptors allow (:func:`probe_ceiling`).
    concurrency: int = 96
    #: Most DNS lookups in flight (home routers refuse floods of forwarded queries): the
    #: limit starts here, backs off on loss and regrows, never above.
    dns_concurrency: int = 40
    #: Address families this laptop can route ("ipv4", "ipv6").
    families: tuple[str, ...] = ("ipv4",)
    #: Teams media relay host name (STUN), if the catalog names one.
    media_relay: str | None = None


def family_of(address: str) -> str:
    return "ipv6" if ":" in address else "ipv4"


def routable_families(probe_addresses: Sequence[str]) -> tuple[tuple[str, ...], str]:
    """Which address families have a route to these addresses, without sending a packet.

    A UDP ``connect()`` asks the OS for a route and nothing more. Returns the
    families with a route and, when there is none at all, the OS's reason.
    """
    families: list[str] = []
    reason = ""
    for address in probe_addresses:
        fam = family_of(address)
        if fam in families:
            continue
        af = socket.AF_INET6 if fam == "ipv6" else socket.AF_INET
        try:
            with socket.socket(af, socket.SOCK_DGRAM) as s:
                s.connect((address, 443))
                local = s.getsockname()[0]
            if not ipaddress.ip_address(local.split("%")[0]).is_loopback:
                families.append(fam)
        except OSError as exc:
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                reason = reason or "This device has no network route (no Wi-Fi, cable or mobile connection is up)."
            else:
                reason = reason or f"The network is not usable ({exc.strerror or exc})."
    return tuple(families), ("" if families else reason)


def probe_ceiling(start: int, dns: int) -> int:
    """Most probes in flight: what the descriptor limit allows, never below ``start``.

    A probe holds up to two sockets (a connect and its retry, or Happy Eyeballs'
    two families) and a DNS lookup up to four (A and AAAA, each asked again once);
    the soft limit is raised towards the hard one first (POSIX; Windows has no
    such limit for sockets).
    """
    try:
        import resource
    except ImportError:  # Windows
        return max(start, (_FD_WANTED - _FD_RESERVE) // 2)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _FD_WANTED if hard == resource.RLIM_INFINITY else min(hard, _FD_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    budget = _FD_WANTED if soft == resource.RLIM_INFINITY else soft
    return max(start, (budget - _FD_RESERVE - 4 * dns) // 2)


def sample_addresses(networks: Sequence[Network]) -> tuple[str, ...]:
    """One representative address per family from published prefixes."""
    out: dict[int, str] = {}
    for n in networks:
        if n.version not in out:
            out[n.version] = str(n.network_address + (1 if n.num_addresses > 1 else 0))
    return tuple(out[v] for v in sorted(out))


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def planned_count(plan: TargetPlan, settings: RunSettings, extra: int = 0) -> int:
    """How many results a run will produce (for a progress bar)."""
    n = extra
    fams = len(settings.families)
    for t in plan.hosts:
        ports = plan.ports.get(t.host, ())
        n += 1 + len(ports)
        if t.category is not Category.DEFAULT:
            n += ((1 if 443 in ports else 0) + 1) * fams
    if settings.media_relay and plan.media:
        n += 1
    return n


async def _together(aws: Sequence[Awaitable[object]]) -> None:
    """Await all of ``aws`` at once: the first in this task, each other in a task of its own (one
    task less than ``gather``, for each of a check's ~170 hosts). Guarded probes do not raise."""
    tasks = [asyncio.ensure_future(aw) for aw in aws[1:]]
    try:
        if aws:
            await aws[0]
        for task in tasks:
            await task
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()


class _Run:
    def __init__(self, spec: ProbeSpec, deadline: Deadline, settings: RunSettings, on_result: OnResult,
                 probes: dict[ProbeKind, Callable[[Target, ProbeSpec, Deadline], Awaitable[ProbeResult]]],
                 pace: Pace):
        self.spec, self.deadline, self.settings = spec, deadline, settings
        self.on_result = on_result
        self.probes = probes
        self.sem = pace.probes
        self.dns_sem = pace.dns
        self.results: list[ProbeResult] = []

    async def guarded(self, kind: ProbeKind, target: Target,
                      call: Callable[[], Awaitable[ProbeResult]]) -> ProbeResult:
        return (await self.guarded_all(((kind, target),), call))[0]

    async def guarded_all(self, probes: tuple[tuple[ProbeKind, Target], ...],
                          call: Callable[[], Awaitable[ProbeResult | tuple[ProbeResult, ...]]]
                          ) -> tuple[ProbeResult, ...]:
        """``call`` makes the results of ``probes`` (one, or a pair on one connection), in one slot.

        A single probe's ``call`` returns its result itself: no coroutine wrapping it into a tuple
        (one frame fewer for each of a check's ~400 probes)."""
        async with self.sem:
            if self.deadline.expired:
                results = tuple(ProbeResult(kind, target, Outcome.TIMEOUT,
                                            "not started: the check's deadline had passed")
                                for kind, target in probes)
            else:
                try:
                    # asyncio.timeout, not wait_for: no extra task per probe (405 of them in a check)
                    async with asyncio.timeout(self.deadline.remaining() + 0.25):
                        made = await call()
                    results = (made,) if isinstance(made, ProbeResult) else made
                except TimeoutError:
                    results = tuple(ProbeResult(kind, target, Outcome.TIMEOUT,
                                                "did not finish before the check's deadline")
                                    for kind, target in probes)
                except Exception as exc:  # a bug in a probe must not sink the check, nor print a traceback
                    from netcheck.crash import write_crash_log

                    where = write_crash_log(exc, ["check"])
                    log.debug("probe %s %s failed (crash log %s)", probes[0][0], probes[0][1].label, where,
                              exc_info=True)
                    results = tuple(ProbeResult(kind, target, Outcome.ERROR,
                                                f"netcheck could not run this probe ({type(exc).__name__})",
                                                detail={"netcheck_fault": type(exc).__name__})
                                    for kind, target in probes)
        for result in results:
            self.results.append(result)
            self.on_result(result)
        return results

    def probe(self, kind: ProbeKind, target: Target) -> Awaitable[ProbeResult]:
        fn = self.probes[kind]
        return self.guarded(kind, target, lambda: fn(target, self.spec, self.deadline))

    async def host(self, target: Target, ports: tuple[int, ...]) -> None:
        """DNS first; then TLS, TCP samples and HTTP to the address it gave, all at once.

        HTTP goes to the resolved address (as the OS would pick it) rather than
        resolving again: half the DNS load, and the same critical path. When the
        name did not resolve, HTTP resolves by itself, as an application would.
        A front door's HTTPS probe and its TLS probe of the same address go as a
        pair, in one in-flight slot, on one connection when that changes neither
        result (:func:`netcheck.probes.http.probe_tls_and_https`).
        """
        async with self.dns_sem:
            dns = await self.probe(ProbeKind.DNS, target)
        http_target = target
        if dns.ok:
            preferred = [a for fam in ("ipv6", "ipv4") if fam in self.settings.families
                         for a in _strings(dns.detail.get(fam))]
            if preferred:
                http_target = target.with_address(preferred[0])
        https = [http_target.with_port(443, "https")] if 443 in ports else []
        follow: list[Awaitable[object]] = [
            self.probe(ProbeKind.HTTP, http_target.with_port(p, "http")) for p in ports if p != 443]
        if dns.ok:
            # Front doors (Optimize and Allow): certificate and interception check and
            # latency samples per address family, as Microsoft's test does. Default
            # endpoints (often third-party CDNs) get their TLS checked by the HTTPS probe.
            for fam in self.settings.families if target.category is not Category.DEFAULT else ():
                addrs = dns.detail.get(fam)
                if not isinstance(addrs, list) or not addrs:
                    continue
                addressed = target.with_address(str(addrs[0]))
                if 443 in ports:
                    tls = addressed.with_port(443)
                    if https and https[0].address == tls.address:  # one connection may serve both
                        follow.append(self.pair(tls, https.pop()))
                    else:
                        follow.append(self.probe(ProbeKind.TLS, tls))
                follow.append(self.probe(ProbeKind.TCP, addressed.with_port(443 if 443 in ports else 80)))
        follow.extend(self.probe(ProbeKind.HTTP, t) for t in https)
        await _together(follow)

    def pair(self, tls: Target, https: Target) -> Awaitable[tuple[ProbeResult, ...]]:
        """A front door's TLS and HTTPS probes of one address (:func:`~netcheck.probes.http.probe_tls_and_https`)."""
        from netcheck.probes.http import probe_tls_and_https

        return self.guarded_all(((ProbeKind.TLS, tls), (ProbeKind.HTTP, https)),
                                lambda: probe_tls_and_https(tls, https, self.spec, self.deadline))

    async def confirm(self, targets: Sequence[Target]) -> None:
        """The TCP probes of ``targets`` taken again (:func:`netcheck.probes.tcp.probe_tcp_quiet`), each
        result replaced by itself with the quiet samples added; no new results, no progress reported."""
        from netcheck.probes.tcp import probe_tcp_quiet

        wanted = set(targets)
        at = {i: r for i, r in enumerate(self.results) if r.kind is ProbeKind.TCP and r.target in wanted}
        if not at or self.deadline.expired:
            return
        try:
            async with asyncio.timeout(self.deadline.remaining() + 0.25):
                again = await asyncio.gather(*(probe_tcp_quiet(r, self.spec, self.deadline) for r in at.values()))
        except TimeoutError:
            return
        for i, r in zip(at, again, strict=True):
            self.results[i] = r

    async def media(self, media: MediaTarget, relay: str, probe: MediaProbe) -> None:
        target = Target(host=relay, category=media.category, workloads=media.workloads,
                        endpoint_sets=media.endpoint_sets)
        await self.guarded(ProbeKind.STUN, target,
                           lambda: probe(target, self.spec, self.deadline, media.udp_ports))


async def run_plan(plan: TargetPlan, spec: ProbeSpec, deadline: Deadline, settings: RunSettings,
                   on_result: OnResult = _noop, media_probe: MediaProbe | None = None,
                   extra: Sequence[tuple[ProbeKind, Target, Callable[[], Awaitable[ProbeResult]]]] = (),
                   to_confirm: ToConfirm | None = None) -> list[ProbeResult]:
    """Probe every target of ``plan``; returns when all are done or the deadline passed.

    The media window runs beside the rest. When the rest (the check's burst) is over, the TCP probes
    ``to_confirm`` names are taken again, while the media window may still run (a confirmation costs
    wall time only where a first sample was bad); then the pace's ``burst_over`` is set."""
    from netcheck.probes import PROBES, _pace

    pace = _pace.Pace(settings.concurrency, probe_ceiling(settings.concurrency, settings.dns_concurrency),
                      settings.dns_concurrency)
    run = _Run(spec, deadline, settings, on_result, dict(PROBES), pace)
    burst: list[Awaitable[object]] = [run.host(t, plan.ports.get(t.host, ())) for t in plan.hosts]
    burst.extend(run.guarded(kind, target, call) for kind, target, call in extra)

    async def burst_then_confirm() -> None:
        try:
            await asyncio.gather(*burst)
            if to_confirm is not None:
                await run.confirm(to_confirm(run.results))
        finally:  # the media window's second take (if any) starts on a path this check no longer loads
            pace.burst_over.set()

    jobs: list[Awaitable[object]] = [burst_then_confirm()]
    if settings.media_relay and media_probe is not None:
        jobs.extend(run.media(m, settings.media_relay, media_probe) for m in plan.media)
    with _pace.use(pace):  # every probe's task starts inside: they all share the check's pace
        try:
            await asyncio.wait_for(asyncio.gather(*jobs), timeout=deadline.remaining() + 1.0)
        except TimeoutError:
            log.warning("the check's deadline passed with probes still running")
    log.debug("in-flight limits: probes %s, DNS lookups %s", pace.probes.history, pace.dns.history)
    return run.results
