"""The site-outage prediction: if the corporate site went down now, what would still work?

Pure: it reasons over facts the agent gathered with the site up (where each
destination's traffic leaves, which resolvers, proxy and PAC are used, where
sign-in is federated to) and an optional site profile. Tested without a network
in tests/test_outage.py and proven against measured truth in the lab.

The model, per VPN behaviour when the site is lost:
- ``stays``: the tunnel stays up with its routes (always-on VPN) but leads
  nowhere: whatever is routed into it is black-holed.
- ``drops``: the tunnel goes away; its routes and DNS settings go with it and
  traffic takes the local network's default path and resolver.
A system that lives at the site (its address is in the site's networks, or a
private address reached through the tunnel or on the office LAN) is down in
both cases.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from urllib.parse import urlsplit

from netcheck.models import Finding, Severity, Verdict
from netcheck.site_profile import SiteProfile

BEHAVIOURS = ("stays", "drops")


class Fate(StrEnum):
    WORKS = "works"
    DEGRADED = "degraded"
    #: The answer hangs on something netcheck cannot read (see ``Assumption``): two or more fates are
    #: possible, listed in ``WorkloadOutage.possible``.
    UNCERTAIN = "uncertain"
    FAILS = "fails"

    @property
    def rank(self) -> int:
        return {"works": 0, "degraded": 1, "uncertain": 2, "fails": 3}[self.value]


def worst(fates: Iterable[Fate]) -> Fate:
    return max(fates, key=lambda f: f.rank, default=Fate.WORKS)


@dataclass(frozen=True)
class Route:
    """Where traffic to one address leaves the laptop (site up)."""

    address: str
    interface: str | None
    kind: str  # "vpn" | "physical" | "virtual" | "loopback" | "unreachable" | "unknown"
    #: Why the OS gave no usable route (e.g. "no route to this network"), when it did not.
    note: str | None = None


@dataclass(frozen=True)
class Resolver:
    address: str
    route: Route


@dataclass(frozen=True)
class ProxyPath:
    """How one URL is fetched: DIRECT or through a proxy, and where that was decided."""

    source: str = "none"  # "none" | "environment" | "os" | "pac"
    proxy: str | None = None  # "host:port" when a proxy is used
    proxy_route: Route | None = None
    pac_url: str | None = None
    pac_route: Route | None = None


@dataclass(frozen=True)
class Dependency:
    """One destination a workload needs, with how it is reached."""

    workload: str
    role: str  # "service" | "media" | "federation"
    host: str
    routes: tuple[Route, ...]
    proxy: ProxyPath = ProxyPath()
    resolved: bool = True


@dataclass(frozen=True)
class SiteFacts:
    on_site: bool
    vpn_interfaces: tuple[str, ...]
    resolvers: tuple[Resolver, ...]
    dependencies: tuple[Dependency, ...]
    identity: str = "unknown"  # "managed" | "federated" | "unknown"
    #: Hosts with an internal address among their addresses (a site system, whichever family is used).
    internal_hosts: frozenset[str] = frozenset()
    #: Without a profile's networks: is a federation server, or a resolver, proxy or PAC server reached
    #: through the VPN, on a public address the site's own? Unknowable from the laptop; both answers are
    #: evaluated (``public_systems_assumption``), True is the base world.
    public_site_systems: bool = True
    #: Is the home connection (the path traffic takes once the VPN drops) impaired? From the workloads
    #: that go direct now; None when nothing does (see ``home_link_assumption``).
    home_link_slow: bool | None = None


@dataclass(frozen=True)
class WorkloadOutage:
    id: str
    if_vpn_stays: Fate
    if_vpn_drops: Fate
    evidence: tuple[str, ...]
    #: The links of the evidence that break, for the worse VPN behaviour.
    causes: tuple[str, ...] = ()
    #: For a behaviour whose fate is UNCERTAIN: the fates it could have, best first.
    possible: Mapping[str, tuple[Fate, ...]] = field(default_factory=dict)
    #: What the uncertain fates hang on (questions netcheck cannot answer from the laptop).
    assumptions: tuple[str, ...] = ()


#: One answer to an assumption: how it changes the facts and the profile the model reasons over.
World = Callable[[SiteFacts, SiteProfile], tuple[SiteFacts, SiteProfile]]


@dataclass(frozen=True)
class Assumption:
    """Something the prediction hangs on that netcheck cannot read from the laptop.

    ``worlds`` are the answers it could have: (label, how that answer changes facts and profile).
    """

    question: str
    settle: str  # how IT settles it (a site-profile key)
    worlds: tuple[tuple[str, World], ...]


@dataclass(frozen=True)
class SiteSystem:
    kind: str  # "vpn" | "dns" | "proxy" | "pac" | "federation"
    name: str
    evidence: str


@dataclass(frozen=True)
class OutagePrediction:
    workloads: tuple[WorkloadOutage, ...]
    site_systems: tuple[SiteSystem, ...]
    behaviours: tuple[str, ...]
    on_site: bool
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: The paths the prediction reasoned over (drawn in the HTML report).
    dependencies: tuple[Dependency, ...] = ()

    def fate(self, workload: str) -> Fate:
        for w in self.workloads:
            if w.id == workload:
                return worst(getattr(w, f"if_vpn_{b}") for b in self.behaviours)
        return Fate.WORKS


#: Internal (organisation-assigned) address space: RFC 1918, RFC 6598 shared address space
#: (100.64.0.0/10: carrier-grade NAT, and the tunnel and resolver addresses of many VPNs) and
#: IPv6 unique local. None of it is reachable on the internet. Deliberately not
#: ``ipaddress.is_private``, which also covers documentation and benchmarking ranges that are
#: routed on the internet of the lab.
_INTERNAL = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                    "100.64.0.0/10", "fc00::/7"))


def is_internal(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    return any(ip.version == n.version and ip in n for n in _INTERNAL)


def no_route(route: Route) -> str:
    """Evidence text for an address the laptop has no route to (e.g. IPv6 on an IPv4-only laptop)."""
    why = f" ({route.note})" if route.note else ""
    return f"no route from this laptop{why}: this address is not usable, even with the site up"


def internal_hosts(facts: SiteFacts) -> frozenset[str]:
    """Hosts with an internal address among their addresses: a site system, whichever address is used."""
    return facts.internal_hosts | {d.host for d in facts.dependencies if any(is_internal(r.address) for r in d.routes)}


class _Model:
    def __init__(self, facts: SiteFacts, profile: SiteProfile, current: Mapping[str, Fate]):
        self.facts, self.profile, self.current = facts, profile, current
        self.internal_hosts = internal_hosts(facts)

    def at_site(self, route: Route, host: str | None = None, role: str = "service") -> bool:
        """Does this destination live at the site (so it is down with it)?

        A federation server (AD FS) is taken to be on premises unless a site
        profile lists the site's networks and it is not in them. Without such a
        profile, a resolver, proxy or PAC server reached through the VPN is
        taken to be the site's own.
        """
        if self.profile.holds_address(route.address) or (host and self.profile.names_host(host)):
            return True
        if not self.profile.networks and (role == "federation" or (
                role in ("dns", "proxy", "pac") and route.kind == "vpn")):
            internal = is_internal(route.address) or bool(host and host in self.internal_hosts)
            return internal or self.facts.public_site_systems
        if route.kind == "vpn" and is_internal(route.address):
            return True
        return self.facts.on_site and is_internal(route.address) and route.kind != "loopback"

    def reach(self, route: Route, behaviour: str, host: str | None = None, role: str = "service"
              ) -> tuple[bool, str]:
        """Can ``route``'s destination be reached with the site down? And why."""
        where = f"{route.address} via {route.interface or 'the default route'}"
        if self.at_site(route, host, role):
            return False, f"{where}: it is at the site, which is down"
        if route.kind == "unreachable" and not self.facts.on_site:
            return False, f"{route.address}: {no_route(route)}, so it is no way around the site"
        if route.kind == "vpn":
            if behaviour == "stays":
                return False, f"{where}: leaves through the VPN to the site, which is down"
            return True, f"{where}: the VPN drops, so it goes direct"
        if self.facts.on_site and not self.facts.vpn_interfaces:
            return True, f"{where}: from home this goes direct through the home connection"
        if route.kind == "unreachable":
            return False, f"{route.address}: {no_route(route)}"
        if route.kind == "unknown":
            return True, (f"{route.address}: the route could not be read ({route.note or 'no answer'}); "
                          "assumed direct, not depending on the site")
        return True, f"{where}: direct, does not depend on the site"

    def dns(self, behaviour: str) -> tuple[Fate, str]:
        resolvers = self.facts.resolvers
        if not resolvers:
            return Fate.WORKS, "no resolver listed; the OS's default is assumed"
        fates = [self.reach(r.route, behaviour, role="dns")[0] for r in resolvers]
        names = ", ".join(r.address for r in resolvers)
        if all(fates):
            return Fate.WORKS, f"DNS ({names}) does not depend on the site"
        site_ones = [r.address for r, ok in zip(resolvers, fates, strict=True) if not ok]
        if behaviour == "drops" and all(self.at_site(r.route, role="dns")
                                        for r, ok in zip(resolvers, fates, strict=True) if not ok):
            if any(fates):
                return Fate.WORKS, f"DNS: the VPN's resolvers ({', '.join(site_ones)}) go with the tunnel"
            return Fate.WORKS, (f"DNS: the VPN's resolvers ({', '.join(site_ones)}) go with the tunnel and the "
                                "home network's own resolver takes over")
        if fates[0] is False and any(fates):
            return Fate.WORKS, (f"DNS: the first resolver ({site_ones[0]}) is at the site; lookups wait for it "
                                "to time out, then the next resolver answers (slower, but it works)")
        if not any(fates):
            return Fate.FAILS, f"DNS: every resolver ({names}) is at the site or reached through it"
        return Fate.WORKS, f"DNS: {', '.join(site_ones)} unreachable, the others answer"

    def path(self, dep: Dependency, behaviour: str) -> tuple[Fate, list[str], list[str]]:
        """(fate, the chain of evidence, the links of it that break) for one dependency."""
        why: list[str] = []
        p = dep.proxy
        via_proxy = p.proxy is not None
        if p.source == "pac" and p.pac_route is not None:
            ok, reason = self.reach(p.pac_route, behaviour, _url_host(p.pac_url), role="pac")
            if not ok:
                why.append(f"PAC file {p.pac_url}: {reason}")
                if self.profile.pac_unreachable is None:
                    why.append("without its PAC file the browser is assumed to go direct (not stated: see the "
                               "assumptions)")
                    via_proxy = False
                elif self.profile.pac_unreachable == "cached":
                    why.append("the OS keeps using the copy of the PAC file it fetched earlier")
                elif self.profile.pac_unreachable == "fail":
                    why.append("without its PAC file the browser does not connect (fail-closed)")
                    return Fate.FAILS, why, why[-2:]
                else:
                    why.append("without its PAC file the browser goes direct")
                    via_proxy = False
        if via_proxy and p.proxy_route is not None:
            ok, reason = self.reach(p.proxy_route, behaviour, (p.proxy or "").rsplit(":", 1)[0], role="proxy")
            why.append(f"{dep.host} goes through the proxy {p.proxy}: {reason}")
            return (Fate.WORKS, why, []) if ok else (Fate.FAILS, why, why[-1:])
        if not dep.routes:
            why.append(f"{dep.host}: did not resolve even with the site up")
            return Fate.FAILS, why, why[-1:]
        reach = [self.reach(r, behaviour, dep.host, dep.role) for r in dep.routes]
        why.extend(f"{dep.host} {reason}" for _, reason in reach)
        if all(ok for ok, _ in reach):
            return Fate.WORKS, why, []
        if any(ok for ok, _ in reach):
            why.append("one address family is cut off; applications fall back to the other")
            return Fate.WORKS, why, []
        return Fate.FAILS, why, [f"{dep.host} {reason}" for _, reason in reach]

    def workload(self, wid: str, deps: Sequence[Dependency]) -> WorkloadOutage:
        fates: dict[str, Fate] = {}
        causes: dict[str, list[str]] = {}
        evidence: list[str] = []
        for behaviour in BEHAVIOURS:
            fate, dns_why = self.dns(behaviour)
            lines, broken = [dns_why], [dns_why] if fate is not Fate.WORKS else []
            for dep in deps:
                f, why, cause = self.path(dep, behaviour)
                fate = worst((fate, f))
                lines.extend(why)
                broken.extend(cause)
            now = self.current.get(wid, Fate.WORKS)
            tunneled = any(r.kind == "vpn" for d in deps for r in d.routes)
            if now is not Fate.WORKS and not tunneled:
                fate = worst((fate, now))  # the path does not change with the site: what is broken stays broken
                lines.append(f"measured now, on a path the site does not change: {now.value}")
                broken.append(lines[-1])
            elif self.facts.on_site and self.facts.home_link_slow and fate is Fate.WORKS:
                fate = Fate.DEGRADED
                lines.append("from home, over an impaired home connection")
                broken.append(lines[-1])
            elif (now is Fate.DEGRADED and behaviour == "drops" and fate is Fate.WORKS
                  and self.facts.home_link_slow):
                fate = Fate.DEGRADED  # impaired through the VPN now, and the home connection is itself slow
                lines.append("impaired now through the VPN, and the home connection it falls back to is impaired "
                             "too (measured on the paths that go direct now)")
                broken.append(lines[-1])
            fates[behaviour], causes[behaviour] = fate, broken
            evidence.extend(f"[VPN {behaviour}] {line}" if self.facts.vpn_interfaces else line for line in lines)
        worse = "stays" if fates["stays"].rank >= fates["drops"].rank else "drops"
        return WorkloadOutage(wid, fates["stays"], fates["drops"], tuple(dict.fromkeys(evidence)),
                              tuple(dict.fromkeys(causes[worse])))

    def site_systems(self) -> tuple[SiteSystem, ...]:
        out: list[SiteSystem] = []
        if self.facts.vpn_interfaces:
            out.append(SiteSystem("vpn", ", ".join(self.facts.vpn_interfaces),
                                  "a VPN tunnel to the site carries part of the traffic"))
        for r in self.facts.resolvers:
            if self.at_site(r.route, role="dns"):
                out.append(SiteSystem("dns", r.address, f"resolver reached via {r.route.interface or '?'}"))
        seen: set[str] = set()
        for d in self.facts.dependencies:
            p = d.proxy
            if p.pac_route and p.pac_url and p.pac_url not in seen and self.at_site(p.pac_route, _url_host(p.pac_url),
                                                                                     "pac"):
                seen.add(p.pac_url)
                out.append(SiteSystem("pac", p.pac_url, f"PAC file served from {p.pac_route.address}"))
            if p.proxy and p.proxy_route and p.proxy not in seen and self.at_site(p.proxy_route, p.proxy, "proxy"):
                seen.add(p.proxy)
                out.append(SiteSystem("proxy", p.proxy, f"proxy at {p.proxy_route.address}"))
            if d.role == "federation" and d.host not in seen and any(self.at_site(r, d.host, d.role)
                                                                      for r in d.routes):
                seen.add(d.host)
                out.append(SiteSystem("federation", d.host, "sign-in is federated to a server at the site"))
        return tuple(out)


_PAC_WORLDS = (("direct", "goes direct"), ("cached", "keeps using its cached copy"), ("fail", "fails closed"))


def pac_assumption(facts: SiteFacts, profile: SiteProfile) -> Assumption | None:
    """When the PAC file lives at the site and no profile says what the OS does without it."""
    if profile.pac_unreachable is not None:
        return None
    model = _Model(facts, profile, {})
    if not any(d.proxy.source == "pac" and d.proxy.pac_route is not None
               and any(not model.reach(d.proxy.pac_route, b, _url_host(d.proxy.pac_url), role="pac")[0]
                       for b in BEHAVIOURS)
               for d in facts.dependencies):
        return None
    def world(value: str) -> World:
        return lambda f, p: (f, replace(p, pac_unreachable=value))

    return Assumption("what the OS does when it cannot fetch the PAC file", "pac_unreachable",
                      tuple((f"if it {label}", world(value)) for value, label in _PAC_WORLDS))


def _url_host(url: str | None) -> str | None:
    return urlsplit(url).hostname if url else None


def public_systems_assumption(facts: SiteFacts, profile: SiteProfile) -> Assumption | None:
    """Without a profile's networks: a federation server, or a resolver, proxy or PAC server reached through
    the VPN, on a public address may be the site's (published from it) or a cloud service's."""
    if profile.networks:
        return None
    public: dict[str, None] = {}
    internal = internal_hosts(facts)

    def check(route: Route | None, host: str | None, role: str) -> None:
        if route is None or is_internal(route.address) or (host and host in internal):
            return
        if role == "federation" or route.kind == "vpn":
            public[host or route.address] = None

    for resolver in facts.resolvers:
        check(resolver.route, None, "dns")
    for d in facts.dependencies:
        if d.role == "federation":
            for r in d.routes:
                check(r, d.host, "federation")
        check(d.proxy.proxy_route, _host_of(d.proxy.proxy), "proxy")
        check(d.proxy.pac_route, _url_host(d.proxy.pac_url), "pac")
    if not public:
        return None
    names = ", ".join(public)
    return Assumption(f"whether {names} (on a public address) is at the site or a cloud service", "networks",
                      (("if it is at the site", lambda f, p: (replace(f, public_site_systems=True), p)),
                       ("if it is a cloud service", lambda f, p: (replace(f, public_site_systems=False), p))))


def home_link(facts: SiteFacts, current: Mapping[str, Fate]) -> bool | None:
    """Whether the home connection is impaired, judged from the workloads whose paths go direct now."""
    direct = {d.workload for d in facts.dependencies if d.routes} - {
        d.workload for d in facts.dependencies if any(r.kind == "vpn" for r in d.routes)}
    if not facts.vpn_interfaces or facts.on_site or not direct:
        return None
    return any(current.get(w) is Fate.DEGRADED for w in direct)


def home_link_assumption(facts: SiteFacts, current: Mapping[str, Fate]) -> Assumption | None:
    """A workload impaired now through the VPN, and no direct path to tell whether the home connection it
    falls back to when the VPN drops is the cause."""
    if facts.home_link_slow is not None:
        return None
    if facts.on_site:  # nothing here crosses the home connection: its quality cannot be measured
        return Assumption("the quality of the home connection (this runs on the office network)", "",
                          (("over a good home connection", lambda f, p: (replace(f, home_link_slow=False), p)),
                           ("over an impaired one", lambda f, p: (replace(f, home_link_slow=True), p))))
    if not facts.vpn_interfaces:
        return None
    tunneled = {d.workload for d in facts.dependencies if any(r.kind == "vpn" for r in d.routes)}
    if not any(current.get(w) is Fate.DEGRADED for w in tunneled):
        return None
    return Assumption("whether the home connection or the path through the site makes it slow now", "",
                      (("if the site's path is the slow part", lambda f, p: (replace(f, home_link_slow=False), p)),
                       ("if the home connection is", lambda f, p: (replace(f, home_link_slow=True), p))))


def _host_of(proxy: str | None) -> str | None:
    return urlsplit(f"//{proxy}").hostname if proxy else None


def _behaviours(facts: SiteFacts, profile: SiteProfile) -> tuple[str, ...]:
    if not facts.vpn_interfaces:
        return ("drops",)  # no tunnel: both behaviours are the same
    if profile.vpn_on_site_down:
        return (profile.vpn_on_site_down,)
    return BEHAVIOURS


def _rows(facts: SiteFacts, profile: SiteProfile, workloads: Sequence[str], current: Mapping[str, Fate]
          ) -> dict[str, WorkloadOutage]:
    model = _Model(facts, profile, current)
    rows = {}
    for wid in workloads:
        deps = [d for d in facts.dependencies if d.workload == wid]
        if deps:
            rows[wid] = model.workload(wid, deps)
    return rows


def _hedge(base: dict[str, WorkloadOutage], assumptions: Sequence[Assumption], facts: SiteFacts,
           profile: SiteProfile, workloads: Sequence[str], current: Mapping[str, Fate]) -> dict[str, WorkloadOutage]:
    """Each workload's fate in every world the assumptions allow (their cross product): where the worlds
    disagree, the fate is UNCERTAIN, with the possible fates and the assumption named in the evidence."""
    worlds: list[tuple[list[str], SiteFacts, SiteProfile]] = [([], facts, profile)]
    for a in assumptions:
        worlds = [([*labels, label], *change(wf, wp)) for labels, wf, wp in worlds for label, change in a.worlds]
    outcomes = [(labels, _rows(wf, wp, workloads, current)) for labels, wf, wp in worlds]
    out = {}
    for wid, row in base.items():
        possible: dict[str, tuple[Fate, ...]] = {}
        lines: list[str] = []
        fates = {"stays": row.if_vpn_stays, "drops": row.if_vpn_drops}
        for b in BEHAVIOURS:
            seen = {getattr(rows[wid], f"if_vpn_{b}") for _, rows in outcomes if wid in rows}
            if len(seen) > 1:
                possible[b] = tuple(sorted(seen, key=lambda f: f.rank))
                fates[b] = Fate.UNCERTAIN
        if not possible:
            out[wid] = row
            continue
        for labels, rows in outcomes:
            if wid in rows:
                w = rows[wid]
                lines.append(f"{'; '.join(labels)}: {w.if_vpn_stays.value} if the VPN stays, "
                             f"{w.if_vpn_drops.value} if it drops")
        questions = tuple(f"{a.question} (netcheck cannot read it from this laptop" + (
            f"; IT can state it in the site profile: {a.settle})" if a.settle else ")") for a in assumptions)
        evidence = (*row.evidence, *(f"[assumption] this hangs on {q}" for q in questions),
                    *(f"[assumption] {line}" for line in dict.fromkeys(lines)))
        out[wid] = replace(row, if_vpn_stays=fates["stays"], if_vpn_drops=fates["drops"], evidence=evidence,
                           causes=(*row.causes, *(f"it hangs on {q}" for q in questions)), possible=possible,
                           assumptions=tuple(a.question for a in assumptions))
    return out


def predict(facts: SiteFacts, profile: SiteProfile, workloads: Sequence[str],
            current: Mapping[str, Fate] | None = None, assumptions: Sequence[Assumption] = ()) -> OutagePrediction:
    """Each workload's fate, for both VPN behaviours, with the chain of evidence.

    ``current`` holds what was measured now for workloads whose state carries over
    when their path does not depend on the site (e.g. Teams media quality on a
    lossy home link). ``assumptions`` are things the answer may hang on that the
    caller could not read (e.g. the VPN profile used from home, seen from the
    office); what the OS does without its PAC file is added here when it matters
    and no profile states it. Where they change a fate, it is UNCERTAIN.
    """
    current = current or {}
    if facts.home_link_slow is None:
        facts = replace(facts, home_link_slow=home_link(facts, current))
    model = _Model(facts, profile, current)
    base = _rows(facts, profile, workloads, current)
    pac = pac_assumption(facts, profile)
    public = public_systems_assumption(facts, profile)
    home = home_link_assumption(facts, current)
    hedges = [*assumptions, *(a for a in (pac, public, home) if a)]
    rows = list((_hedge(base, hedges, facts, profile, workloads, current) if hedges else base).values())
    behaviours = _behaviours(facts, profile)
    for a in hedges:
        for _, change in a.worlds:
            if len(_behaviours(*change(facts, profile))) > len(behaviours):
                behaviours = _behaviours(*change(facts, profile))
    notes = []
    if facts.on_site:
        notes.append("You are on the office network now: this prediction is made from your configuration "
                     "(VPN, DNS, proxy and PAC settings as they would be used from home), not from a live path.")
    return OutagePrediction(tuple(rows), model.site_systems(), behaviours, facts.on_site, tuple(notes),
                            facts.dependencies)


def outage_severity(fate: Fate) -> Severity:
    return {Fate.WORKS: Severity.INFO, Fate.DEGRADED: Severity.WARNING, Fate.UNCERTAIN: Severity.WARNING,
            Fate.FAILS: Severity.CRITICAL}[fate]


@dataclass(frozen=True)
class SplitTunnelRow:
    """Microsoft's split-tunnel class of a workload's Optimize prefixes, per family."""

    workload: str
    ipv4: str
    ipv6: str
    tunneled_prefixes: tuple[str, ...]


@dataclass(frozen=True)
class OutageSection:
    """The answer to "could this person keep working if the site went down?"."""

    verdict: Verdict
    summary: str
    prediction: OutagePrediction
    split_tunnel: tuple[SplitTunnelRow, ...]
    remediation: tuple[str, ...]
    findings: tuple[Finding, ...]


_FIXES = {
    "dns": ("Microsoft 365 names must resolve without the site: let the VPN client fall back to the local "
            "network's resolver, or give laptops a resolver that does not depend on the site."),
    "pac": ("The PAC file is served from the site: host it where it does not depend on the site (or deploy it "
            "with the laptop), and make sure clients go direct when it cannot be fetched."),
    "proxy": ("Microsoft 365 goes through a proxy at the site: send Optimize and Allow endpoints direct "
              "(PAC \"DIRECT\" or proxy bypass), as Microsoft recommends."),
    "federation": ("Sign-in is federated to a server at the site (AD FS): enable password hash sync as a "
                   "backup sign-in method so people can sign in when the site is down."),
}


_FATE_WORDS = {Fate.FAILS: "stops working", Fate.DEGRADED: "is impaired",
               Fate.UNCERTAIN: "may stop working (it depends on something netcheck cannot read)"}


def _short(names: Mapping[str, str], wid: str) -> str:
    return names.get(wid, wid).split(" (")[0]


def _fix_for(wid: str, causes: Sequence[str], names: Mapping[str, str], tunneled: Sequence[str]) -> str:
    """The remedy for one workload, from what breaks it."""
    text = " ".join(causes)
    fixes: list[str] = []
    if "through the VPN" in text:
        if tunneled:
            shown = ", ".join(tunneled[:12]) + (f" and {len(tunneled) - 12} more" if len(tunneled) > 12 else "")
            fixes.append(f"Exclude the Microsoft 365 prefixes of {_short(names, wid)} from the VPN tunnel (current "
                         f"endpoint data): {shown}; or let the VPN client disconnect when the site is unreachable.")
        else:
            fixes.append(f"{_short(names, wid)} goes through the VPN to the site: let the VPN client disconnect when "
                         "the site is unreachable, or send this traffic direct.")
    if "DNS:" in text:
        fixes.append(_FIXES["dns"])
    if "PAC file" in text:
        fixes.append(_FIXES["pac"])
    if "proxy" in text and "PAC file" not in text:
        fixes.append(_FIXES["proxy"])
    if "at the site, which is down" in text and wid == "identity":
        fixes.append(_FIXES["federation"])
    if "it hangs on" in text:
        fixes.append("State what netcheck cannot read in the site profile (--site-profile or the collector's "
                     "policy) where it has a key, or remove the dependency: " + "; ".join(
                         c.split("it hangs on ", 1)[1] for c in causes if "it hangs on " in c) + ".")
    if "measured now" in text:
        fixes.append("This is already impaired from here, independently of the site: see the other findings.")
    return " ".join(dict.fromkeys(fixes)) or "Remove this workload's dependency on the site."


def assess_outage(prediction: OutagePrediction, names: Mapping[str, str], core: Sequence[str],
                  split_tunnel: Sequence[SplitTunnelRow] = (), tunneled_optimize: Sequence[str] = (),
                  identity_split_egress: bool = False,
                  tunneled_by_workload: Mapping[str, Sequence[str]] | None = None) -> OutageSection:
    """Verdict, summary, fixes and findings for a prediction (pure)."""
    tunneled_by_workload = tunneled_by_workload or {}
    fates = {w.id: prediction.fate(w.id) for w in prediction.workloads}
    failed = [wid for wid in core if fates.get(wid) is Fate.FAILS]
    degraded = [wid for wid in core if fates.get(wid) is Fate.DEGRADED]
    uncertain = [wid for wid in core if fates.get(wid) is Fate.UNCERTAIN]
    verdict = Verdict.NOT_READY if failed else Verdict.AT_RISK if degraded or uncertain else Verdict.READY

    def listing(ids: Sequence[str]) -> str:
        words = [_short(names, i) for i in ids]
        return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]

    only_if_stays = len(prediction.behaviours) == 2 and all(
        w.if_vpn_drops is not Fate.FAILS for w in prediction.workloads if w.id in failed)
    if failed:
        summary = f"If the site went down, you would lose {listing(failed)}"
        summary += (" (if the VPN stays connected to the dead site; if it drops, they keep working)."
                    if only_if_stays else ".")
    elif degraded:
        summary = f"If the site went down, you could keep working, but {listing(degraded)} would be impaired."
    elif not uncertain:
        summary = "If the site went down, you could keep working from where you are."
    else:
        summary = "If the site went down, you might not be able to keep working."
    if uncertain:
        asked = sorted({a for w in prediction.workloads if w.id in uncertain for a in w.assumptions})
        summary += (f" Whether you keep {listing(uncertain)} depends on {'; '.join(asked)}, which netcheck "
                    "cannot read from this laptop.")
    fixes: list[str] = []
    if tunneled_optimize:
        fixes.append("Add these Optimize prefixes to the VPN's split-tunnel exclusions (from the current "
                     "endpoint data): " + ", ".join(tunneled_optimize))
    kinds = {s.kind for s in prediction.site_systems}
    fixes.extend(_FIXES[k] for k in ("dns", "pac", "proxy", "federation") if k in kinds)
    findings: list[Finding] = []
    for w in prediction.workloads:
        fate = prediction.fate(w.id)
        if fate is Fate.WORKS:
            continue
        both = {w.if_vpn_stays, w.if_vpn_drops}
        when = (" if the VPN stays connected to the site" if len(prediction.behaviours) == 2 and len(both) == 2
                else "")
        findings.append(Finding(
            code=f"outage.{w.id}", severity=outage_severity(fate),
            title=(f"If the site goes down, {_short(names, w.id)} "
                   f"{_FATE_WORDS[fate]}{when}"),
            detail=(w.causes[0] + (f" (and {len(w.causes) - 1} more)" if len(w.causes) > 1 else "") + "."
                    if w.causes else "It depends on the site."),
            remediation=_fix_for(w.id, w.causes, names, tunneled_by_workload.get(w.id, ())),
            workload=w.id, principle=3, evidence=w.causes))
    for row in split_tunnel:
        if row.ipv4 == "split_out" and row.ipv6 in ("tunneled", "selective"):
            findings.append(Finding(
                code="vpn.ipv6_tunneled", severity=Severity.WARNING,
                title=f"{names.get(row.workload, row.workload).split(' (')[0]}: IPv6 bypasses the IPv4-only exclusions",
                detail=("The VPN excludes this workload's IPv4 Optimize prefixes but its IPv6 prefixes still go "
                        "into the tunnel; applications that prefer IPv6 send it through the VPN."),
                remediation="Add the IPv6 Optimize prefixes to the exclusions too (or disable IPv6 in the tunnel).",
                workload=row.workload, principle=2, evidence=tuple(p for p in row.tunneled_prefixes if ":" in p)))
    if identity_split_egress:
        findings.append(Finding(
            code="identity.split_egress", severity=Severity.WARNING,
            title="Sign-in and Microsoft 365 traffic leave from different addresses",
            detail=("Sign-in goes through the VPN while Optimize traffic goes direct: Continuous Access Evaluation "
                    "and location-based Conditional Access may see two different IP addresses."),
            remediation=("IT: include the VPN egress and the users' direct egress in Conditional Access named "
                         "locations, or route sign-in the same way as Optimize traffic."),
            workload="identity", principle=1))
    return OutageSection(verdict, summary, prediction, tuple(split_tunnel), tuple(fixes), tuple(findings))
