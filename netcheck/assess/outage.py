"""The site-outage prediction: if the corporate site went down now, what would still work?

Pure: it reasons over facts the agent gathered with the site up (where each
destination's traffic leaves, which resolvers, proxy and PAC are used, where
sign-in is federated to) and an optional site profile. Tested without a network
in tests/test_outage.py and proven against measured truth in the lab.

The model, per VPN behaviour when the site is lost:
- ``stays``: the tunnel stays up with its routes (always-on VPN) but leads
  nowhere: whatever is routed into it is black-holed.
- ``drops``: the tunnel goes away; its routes and DNS settings go with it and
  traffic takes the local network's default path and resolver. This is what the VPN client
  does when its gateway's site is lost: while a gateway it can reach is up (its own, or one
  it fails over to), the tunnel stays in both behaviours.
A system that lives at the site (its address is in the site's networks, or a
private address reached through the tunnel or on the office LAN) is down in
both cases.

Where the person is when a site is lost (several sites): a laptop on a site's network stays
where it is when a *different* site is lost, and reasons over the paths seen on that network
(``SiteFacts.office``); the person goes home when their *own* site is lost (the paths as from
home). A site whose internet goes out through another (``internet_via``, or the laptop's public
address, seen by STUN, in that site's networks) loses the internet where it stands with that site:
a branch told as a site of its own stays at the branch, cut off, when the site it goes through is
lost. ``SiteFacts.stays_cut_off`` is the other answer for a laptop whose own site is lost (it stays
there, reaching nothing beyond it), which inferred sites hedge over (netcheck.assess.site_infer).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from netcheck.m365.catalog import in_networks
from netcheck.models import Finding, Severity, Verdict
from netcheck.names import proxy_host, url_host
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


def losing(role: str, fate: Fate) -> Fate:
    """What a dependency's ``fate`` does to its workload: a key host's, the federation server's or the media
    relay's is the workload's; a PARTIAL one's is at most degraded (docs/lab.md: key hosts fail, it fails;
    only others fail, it is degraded)."""
    if role == PARTIAL and fate.rank > Fate.DEGRADED.rank:
        return Fate.DEGRADED
    return fate


class CauseKind(StrEnum):
    """What broke a workload, as data: remediation is looked up by kind (``_REMEDIES``)."""

    #: Traffic enters a VPN tunnel whose gateway's site is down (the tunnel stays and black-holes it).
    TUNNEL = "vpn_tunnel"
    #: An internal address, reachable only through the VPN, once the VPN dropped with its gateway's site.
    VPN_ONLY = "vpn_only"
    #: Every resolver (or the ones used) is at a site that is down, or reached through it.
    DNS = "dns"
    PAC = "pac"
    PROXY = "proxy"
    #: The sign-in (federation) server is at a site that is down.
    SIGN_IN = "sign_in_server"
    #: A service or media host is at a site that is down.
    HOSTED = "hosted_at_site"
    NO_ROUTE = "no_route"
    UNRESOLVED = "unresolved"
    #: Impaired now on a path the site does not change.
    MEASURED = "measured_now"
    #: The home connection the traffic falls back to is impaired.
    HOME_LINK = "home_link"
    #: The answer hangs on something netcheck cannot read.
    ASSUMPTION = "assumption"
    #: The internet exit of where the laptop stands (a branch's breakout) is at a site that is down.
    INTERNET_VIA = "internet_via_site"


@dataclass(frozen=True)
class Cause:
    """One link that breaks: its kind, what it is about (a host, address, URL, proxy or question), the site
    that hosts it or that it passes through (None: no site), and the sentence shown to people."""

    kind: CauseKind
    subject: str
    site: str | None
    text: str
    behaviour: str = ""

    def as_dict(self) -> dict[str, str | None]:
        return {"kind": str(self.kind), "subject": self.subject, "site": self.site, "behaviour": self.behaviour,
                "text": self.text}


#: The site that holds the systems no profile claims, when several sites are known.
UNNAMED = "unnamed site"


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
    #: With a PAC file: the proxy "host:port" the manual settings choose when it cannot be fetched (None:
    #: DIRECT), and its route (see ``ProxyDecision.without_pac``).
    without_pac: str | None = None
    without_pac_route: Route | None = None
    #: The PAC file's fetch ran out of time before its server answered (``Outcome.ran_out``): it was not read,
    #: which is no evidence that it is gone (see ``pac_unread_assumption``).
    pac_unread: bool = False


#: The role of a dependency a workload needs to work fully, not to work at all: one host of each endpoint
#: category (Optimize, Allow, Default) its key hosts are not in (``Catalog.category_hosts``).
PARTIAL = "category"
#: The role of the Teams media relay: a workload judged on loss, jitter and round trip, not only latency.
MEDIA = "media"


@dataclass(frozen=True)
class Dependency:
    """One destination a workload needs, with how it is reached."""

    workload: str
    role: str  # "service" (a key host) | PARTIAL | "media" | "federation"
    host: str
    routes: tuple[Route, ...]
    proxy: ProxyPath = ProxyPath()
    resolved: bool = True
    #: The address the status now was measured on (the media sample's), when known: its route, not every
    #: route, says whether the measured path changes with the site.
    measured: str | None = None

    @property
    def measured_routes(self) -> tuple[Route, ...]:
        """The routes the status now was measured on: the measured address's when known, else every route."""
        return tuple(r for r in self.routes if r.address == self.measured) or self.routes


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
    #: Does the home connection lose packets (or add jitter)? The paths that go direct now show its round
    #: trip, not that: only a media sample that goes direct would. Never gathered: set only by the answers to
    #: ``media_loss_assumption`` (None: not asked).
    home_link_lossy: bool | None = None
    #: On a site's network: the site (a profile's name; None: the one site, or not known).
    site_here: str | None = None
    #: The laptop's public address as a server on the internet saw it (STUN's mapped address) on a path
    #: that does not enter the VPN; None: not seen.
    public_egress: str | None = None
    #: On a site's network: the paths as seen there (the other fields are as from home), used while the
    #: site the laptop is on stays up. None: not gathered (the laptop is taken home in every case).
    office: FactsPatch | None = None
    #: Every address of the proxy and PAC hosts (host, addresses): their routes carry one address each,
    #: and the others tell which networks are one site's (see netcheck.assess.site_infer).
    host_addresses: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: On a site's network when that site is lost: the person stays there, cut off with it, instead of going
    #: home. Never gathered: set only by the answer to "is your network that site's own, or a place that
    #: reaches everything through it?" (see netcheck.assess.site_infer), which inferred sites cannot tell.
    stays_cut_off: bool = False
    #: The VPN concentrator's address, when the routing table shows it (the host route most VPN clients add
    #: to their server through the physical interface; see netcheck.assess.site_decisions.vpn_gateway).
    vpn_gateway: str | None = None


@dataclass(frozen=True)
class WorkloadOutage:
    id: str
    if_vpn_stays: Fate
    if_vpn_drops: Fate
    evidence: tuple[str, ...]
    #: The links that break, for the worse VPN behaviour.
    causes: tuple[Cause, ...] = ()
    #: The links that break, per VPN behaviour ("stays", "drops").
    causes_by: Mapping[str, tuple[Cause, ...]] = field(default_factory=dict)
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
class FactsPatch:
    """One answer to an assumption, as data (so the report can carry it, see netcheck.assess.what_if): the facts
    it replaces (None: kept as they are), and a resolver a VPN client drops when it sets its own. A
    patch is a ``World``."""

    vpn_interfaces: tuple[str, ...] | None = None
    resolvers: tuple[Resolver, ...] | None = None
    dependencies: tuple[Dependency, ...] | None = None
    drop_resolver: str | None = None
    #: False: the laptop is not on a site's network after all (the facts are then the paths as seen, with
    #: no office paths); None: kept.
    on_site: bool | None = None

    def __call__(self, facts: SiteFacts, profile: SiteProfile) -> tuple[SiteFacts, SiteProfile]:
        if self.on_site is not None:
            facts = replace(facts, on_site=self.on_site, office=facts.office if self.on_site else None)
        if self.vpn_interfaces is not None:
            facts = replace(facts, vpn_interfaces=self.vpn_interfaces)
        if self.resolvers is not None:
            facts = replace(facts, resolvers=self.resolvers)
        if self.dependencies is not None:
            facts = replace(facts, dependencies=self.dependencies)
        if self.drop_resolver is not None and facts.vpn_interfaces:
            kept = tuple(r for r in facts.resolvers if r.address != self.drop_resolver)
            facts = replace(facts, resolvers=kept or facts.resolvers)
        return facts, profile


@dataclass(frozen=True)
class SiteSystem:
    kind: str  # "vpn" | "dns" | "proxy" | "pac" | "federation"
    name: str
    evidence: str
    #: The site that hosts it (a profile's name, the unnamed site, or the one inferred site).
    site: str = ""
    #: Its address, when known (to give an unnamed site networks a reader can match).
    address: str | None = None


@dataclass(frozen=True)
class OutagePrediction:
    workloads: tuple[WorkloadOutage, ...]
    site_systems: tuple[SiteSystem, ...]
    behaviours: tuple[str, ...]
    on_site: bool
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: The paths the prediction reasoned over (drawn in the HTML report).
    dependencies: tuple[Dependency, ...] = ()
    #: The sites that are down in this prediction.
    down: tuple[str, ...] = ()

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
    return in_networks(address, _INTERNAL)


def no_route(route: Route, up: str = "the site") -> str:
    """Evidence text for an address the laptop has no route to (e.g. IPv6 on an IPv4-only laptop); ``up``:
    what is up even so ("the site", or "every site")."""
    why = f" ({route.note})" if route.note else ""
    return f"no route from this laptop{why}: this address is not usable, even with {up} up"


def listing(items: Sequence[str], word: str = "and") -> str:
    """"a", "a and b", "a, b and c" (``word``: "and" or "or")."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {word} " + items[-1]


def _site_words(site: str) -> str:
    return "the site no profile names" if site == UNNAMED else site


def internal_hosts(facts: SiteFacts) -> frozenset[str]:
    """Hosts with an internal address among their addresses: a site system, whichever address is used."""
    return facts.internal_hosts | {d.host for d in facts.dependencies if any(is_internal(r.address) for r in d.routes)}


@dataclass(frozen=True)
class _Reach:
    ok: bool
    reason: str
    kind: CauseKind | None = None
    site: str | None = None


def vpn_sites(sites: Sequence[SiteProfile], fallback: str) -> tuple[str, ...]:
    """The sites the VPN tunnel goes through, in the order the client tries them: the first site whose
    profile names VPN gateways (else ``fallback``, the site inferred), then that profile's ``vpn_failover``."""
    first = next((s for s in sites if s.vpn_gateways), None)
    if first is None:
        first = next((s for s in sites if s.name == fallback), None)
    names = (first.name if first else fallback, *(first.vpn_failover if first else ()))
    return tuple(dict.fromkeys(names))


def fallback_site(sites: Sequence[SiteProfile]) -> str:
    """The site that holds the site systems no profile claims: the one site when one is known (as netcheck
    has always reasoned: "the site"), else the unnamed site."""
    return sites[0].name if len(sites) == 1 else UNNAMED


def all_site_names(sites: Sequence[SiteProfile]) -> tuple[str, ...]:
    """Every site a case can take down: the profiles, the sites they fail over to or reach the internet
    through, and the unnamed site."""
    fallback = fallback_site(sites)
    return tuple(dict.fromkeys((*(s.name for s in sites), *(n for s in sites for n in s.vpn_failover),
                                *(s.internet_via for s in sites if s.internet_via), fallback)))


class _Model:
    """The prediction for one case: ``down`` (site names; None: every site) and the sites known
    (``sites``; None: ``profile`` is the one site, as a single-site laptop always had)."""

    def __init__(self, facts: SiteFacts, profile: SiteProfile, current: Mapping[str, Fate],
                 sites: Sequence[SiteProfile] | None = None, down: Collection[str] | None = None):
        self.profile, self.current = profile, current
        self.sites = tuple(sites) if sites else (profile,)
        self.single = len(self.sites) == 1
        self.fallback = fallback_site(self.sites)
        self.down = frozenset(all_site_names(self.sites) if down is None else down)
        #: The site whose network the laptop is on (None: not on one).
        self.here = (facts.site_here or self.fallback) if facts.on_site else None
        #: The laptop stays where it is (its site is up, the loss is elsewhere): the paths seen there.
        self.staying = facts.office is not None and (self.here not in self.down or facts.stays_cut_off)
        #: The laptop stays on its own site's network although that site is down: nothing beyond it is reached.
        self.cut_off = self.staying and self.here in self.down
        if self.staying and facts.office is not None:
            facts = facts.office(facts, profile)[0]
        #: The person works from home: the laptop's own site is down (or no office paths were gathered).
        self.from_home = facts.on_site and not self.staying
        self.facts = facts
        self.internal_hosts = internal_hosts(facts)
        self.mapped = any(s.networks for s in self.sites)
        #: The site of each host one of whose addresses a site holds: a host's addresses are one machine (or
        #: one load balancer), at one site, whichever family reaches it.
        self.host_sites: dict[str, str] = {}
        for d in facts.dependencies:
            for r in d.routes:
                holder = next((s.name for s in self.sites if s.holds_address(r.address)), None)
                if holder is not None:
                    self.host_sites.setdefault(d.host, holder)
        self.tunnel_sites = vpn_sites(self.sites, self.fallback)
        self.tunnel_up = bool(facts.vpn_interfaces) and not all(s in self.down for s in self.tunnel_sites)
        self.exit = self.internet_exit()
        #: How the evidence names what is down: "the site" (one), the sites down by name (several).
        #: (The unnamed site is named only when it alone is down: whether it holds anything is not known here,
        #: and a case that takes every site down reads the same whether it is counted or not.)
        self.every = "the site" if self.single else "every site"
        named_down = sorted(self.down - {UNNAMED}) or sorted(self.down)
        self.the = ("the site" if self.single else listing([_site_words(s) for s in named_down], "or")
                    if named_down else "any site")

    def label(self, site: str | None) -> str:
        return "the site" if self.single or site is None else site

    def named(self, *sites: str | None) -> str:
        """The sites something is at, by name ("the site" with one; ``the`` when none is known)."""
        known = sorted({_site_words(s) for s in sites if s is not None})
        return "the site" if self.single else listing(known, "or") if known else self.the

    def internet_exit(self) -> str | None:
        """The site this laptop's direct internet traffic goes out through where it stands (None: a link of
        its own, or not known): its site's ``internet_via``, else the site whose networks hold the public
        address a server on the internet saw. From home: the home connection (None)."""
        if self.from_home:
            return None
        stated = self.via(self.here) if self.staying else None
        if stated:
            return stated
        egress = self.facts.public_egress
        return next((s.name for s in self.sites if egress and s.holds_address(egress)), None)

    def via(self, site: str | None) -> str | None:
        """The site ``site``'s internet goes out through (its profile's ``internet_via``), or None."""
        return next((s.internet_via for s in self.sites if s.name == site), None) if site else None

    def whereabouts(self) -> str | None:
        """The evidence line that says where the person is in this case (None: not on a site's network, one
        site, or the paths seen there were not gathered, so the person is taken home in every case)."""
        if self.here is None or self.single or self.facts.office is None:
            return None
        if self.cut_off:
            return (f"you stay at {self.here}, which is down: cut off with it, nothing beyond its network is "
                    "reached")
        if self.staying:
            exit_words = f"; its internet goes out through {self.exit}" if self.exit and self.exit != self.here else ""
            return (f"you stay at {self.here}, which is up: the paths are those seen on its network{exit_words} "
                    "(a laptop stays where it is when another site is lost)")
        return (f"{self.here}, where you are, is down: you work from home, over the paths as they would be from "
                "home (a person goes home when their own site is lost)")

    def site_of(self, route: Route, host: str | None = None, role: str = "service") -> str | None:
        """The site this destination lives at (so it is down with it), or None.

        A profile that lists its address or names it claims it. Otherwise a federation server (AD FS)
        is taken to be on premises unless a profile lists networks and none holds it. Without networks,
        a resolver, proxy or PAC server reached through the VPN is taken to be a site's own. An internal
        address reached through the VPN, or on the office LAN, is at a site; so is a host with an internal
        address among its addresses (its public IPv6 address is the same system). What no profile claims is
        at the one site (one known) or the unnamed site (several).
        """
        for site in self.sites:
            if site.holds_address(route.address) or (host and site.names_host(host)):
                return site.name
        if host and host in self.host_sites:
            return self.host_sites[host]
        # a host with an internal address among its addresses is a site's, whichever of them is used
        internal = is_internal(route.address) or bool(host and host in self.internal_hosts)
        if not self.mapped and (role == "federation" or (role in ("dns", "proxy", "pac") and route.kind == "vpn")):
            return self.fallback if internal or self.facts.public_site_systems else None
        if route.kind == "vpn" and internal:
            return self.fallback
        if self.facts.on_site and internal and route.kind != "loopback":
            return self.fallback
        return None

    def at_site(self, route: Route, host: str | None = None, role: str = "service") -> bool:
        """Is this destination at a site that is down?"""
        return self.site_of(route, host, role) in self.down

    def reach(self, route: Route, behaviour: str, host: str | None = None, role: str = "service") -> _Reach:
        """Can ``route``'s destination be reached in this case? Why, and what breaks it."""
        where = f"{route.address} via {route.interface or 'the default route'}"
        owner = self.site_of(route, host, role)
        if owner in self.down:
            kind = CauseKind.SIGN_IN if role == "federation" else {
                "dns": CauseKind.DNS, "proxy": CauseKind.PROXY, "pac": CauseKind.PAC}.get(role, CauseKind.HOSTED)
            return _Reach(False, f"{where}: it is at {self.label(owner)}, which is down", kind, owner)
        if self.cut_off and route.kind != "loopback":
            return _Reach(False, f"{where}: beyond {self.here}, where you are and which is down",
                          CauseKind.INTERNET_VIA, self.here)
        via = self.via(owner) if role == "proxy" else None
        if via is not None and via in self.down:
            return _Reach(False, f"{where}: the proxy is at {owner}, whose internet goes out through {via}, which is "
                                 "down", CauseKind.INTERNET_VIA, via)
        if route.kind == "unreachable" and not self.from_home:
            return _Reach(False, f"{route.address}: {no_route(route, self.every)}, so it is no way around {self.the}",
                          CauseKind.NO_ROUTE)
        if route.kind == "vpn":
            gateway = self.tunnel_sites[0]
            if self.tunnel_up:
                up = next(s for s in self.tunnel_sites if s not in self.down)
                how = "" if up == gateway else f" (it fails over to the gateway at {up})"
                via = self.via(up)
                if via is not None and via in self.down and owner is None and not is_internal(route.address):
                    return _Reach(False, f"{where}: through the VPN to {up}{how}, whose internet goes out through "
                                         f"{via}, which is down", CauseKind.INTERNET_VIA, via)
                return _Reach(True, f"{where}: through the VPN, which stays up{how}")
            if behaviour == "stays":
                return _Reach(False, f"{where}: leaves through the VPN to {self.label(gateway)}, which is down",
                              CauseKind.TUNNEL, gateway)
            if owner is not None and (is_internal(route.address) or (host and host in self.internal_hosts)):
                # A host with an internal address is in the organisation's internal DNS: once the tunnel
                # drops with its resolvers, none of its addresses is reached (nor its name resolved).
                return _Reach(False, f"{where}: a system of {owner} with an internal address, reachable only "
                                     f"through the VPN, which is gone", CauseKind.VPN_ONLY, gateway)
            return _Reach(True, f"{where}: the VPN drops, so it goes direct")
        if self.from_home and route.kind == "unreachable":  # as from home: an internal address, no VPN
            return _Reach(False, f"{where}: an internal address of {owner or 'a site'}, out of reach from home "
                                 "without the VPN", CauseKind.NO_ROUTE, owner)
        if self.from_home and not self.facts.vpn_interfaces:
            return _Reach(True, f"{where}: from home this goes direct through the home connection")
        if route.kind == "unreachable":
            return _Reach(False, f"{route.address}: {no_route(route, self.every)}", CauseKind.NO_ROUTE)
        if (self.exit in self.down and owner is None and route.kind in ("physical", "virtual", "unknown")
                and not is_internal(route.address)):
            return _Reach(False, f"{where}: to the internet, which from {self.here or 'where this laptop is'} "
                                 f"goes out through {self.exit}, which is down", CauseKind.INTERNET_VIA, self.exit)
        if route.kind == "unknown":
            return _Reach(True, f"{route.address}: the route could not be read ({route.note or 'no answer'}); "
                                f"assumed direct, not depending on {self.the}")
        if owner is not None:
            return _Reach(True, f"{where}: at {owner}, which is up")
        return _Reach(True, f"{where}: direct, does not depend on {self.the}")

    def dns(self, behaviour: str) -> tuple[Fate, str, list[Cause]]:
        resolvers = self.facts.resolvers
        if not resolvers:
            return Fate.WORKS, "no resolver listed; the OS's default is assumed", []
        reached = [self.reach(r.route, behaviour, role="dns") for r in resolvers]
        fates = [x.ok for x in reached]
        names = ", ".join(r.address for r in resolvers)
        if all(fates):
            return Fate.WORKS, f"DNS ({names}) does not depend on {self.the}", []
        site_ones = [r.address for r, ok in zip(resolvers, fates, strict=True) if not ok]
        if behaviour == "drops" and not self.tunnel_up and all(
                self.site_of(r.route, role="dns") is not None for r, ok in zip(resolvers, fates, strict=True)
                if not ok):
            if any(fates):
                return Fate.WORKS, f"DNS: the VPN's resolvers ({', '.join(site_ones)}) go with the tunnel", []
            return Fate.WORKS, (f"DNS: the VPN's resolvers ({', '.join(site_ones)}) go with the tunnel and the "
                                "home network's own resolver takes over"), []
        if fates[0] is False and any(fates):
            return Fate.WORKS, (f"DNS: the first resolver ({site_ones[0]}) is at {self.named(reached[0].site)}; "
                                "lookups wait for it to time out, then the next resolver answers (slower, but it "
                                "works)"), []
        if not any(fates):
            why = (f"DNS: every resolver ({names}) is at "
                   f"{self.named(*(x.site for x in reached))} or reached through it")
            return Fate.FAILS, why, [Cause(CauseKind.INTERNET_VIA if x.kind is CauseKind.INTERNET_VIA
                                           else CauseKind.DNS, r.address, x.site, why)
                                     for r, x in zip(resolvers, reached, strict=True)]
        return Fate.WORKS, f"DNS: {', '.join(site_ones)} unreachable, the others answer", []

    def path(self, dep: Dependency, behaviour: str) -> tuple[Fate, list[str], list[Cause]]:
        """(fate, the chain of evidence, the links of it that break) for one dependency."""
        why: list[str] = []
        p = dep.proxy
        proxy_name, proxy_route = p.proxy, p.proxy_route
        pac_lost: list[Cause] = []
        if pac_gone_now(p):  # whatever happens to the site: the browser is without its PAC file already
            why.append(f"PAC file {p.pac_url}: its fetch ran out of time before the server answered, even with "
                       f"{self.every} up; taken to be gone (see the assumptions)" if p.pac_unread else
                       f"PAC file {p.pac_url}: could not be fetched or loaded even with {self.every} up")
            if self.profile.pac_unreachable == "fail":
                why.append("without its PAC file the browser does not connect (fail-closed)")
                return Fate.FAILS, why, [Cause(CauseKind.PAC, p.pac_url or "", None, w) for w in why[-2:]]
            why.append("without it the browser is taken to use what the laptop's settings choose now"
                       + ("" if self.profile.pac_unreachable is not None else " (not stated: see the assumptions)"))
        if p.source == "pac" and p.pac_route is not None:
            pac = self.reach(p.pac_route, behaviour, url_host(p.pac_url), role="pac")
            if not pac.ok:
                why.append(f"PAC file {p.pac_url}: {pac.reason}")
                if self.profile.pac_unreachable == "cached":
                    why.append("the OS keeps using the copy of the PAC file it fetched earlier")
                elif self.profile.pac_unreachable == "fail":
                    why.append("without its PAC file the browser does not connect (fail-closed)")
                    return Fate.FAILS, why, [Cause(CauseKind.PAC, p.pac_url or "", pac.site, w) for w in why[-2:]]
                else:  # "direct": no PAC file, so the manual settings (or DIRECT), as browsers do
                    instead = (f"the manual proxy settings ({p.without_pac})" if p.without_pac
                               else "DIRECT (no manual proxy settings)")
                    stated = self.profile.pac_unreachable is not None
                    why.append(f"without its PAC file the browser {'uses' if stated else 'is assumed to use'} "
                               f"{instead}" + ("" if stated else " (not stated: see the assumptions)"))
                    proxy_name, proxy_route = p.without_pac, p.without_pac_route
                    pac_lost = [Cause(CauseKind.PAC, p.pac_url or "", pac.site, why[-2])]
        if proxy_name is not None and proxy_route is not None:
            proxy = self.reach(proxy_route, behaviour, proxy_host(proxy_name), role="proxy")
            why.append(f"{dep.host} goes through the proxy {proxy_name}: {proxy.reason}")
            if proxy.ok:
                return Fate.WORKS, why, []
            kind = CauseKind.INTERNET_VIA if proxy.kind is CauseKind.INTERNET_VIA else CauseKind.PROXY
            return Fate.FAILS, why, [*pac_lost, Cause(kind, proxy_name, proxy.site, why[-1])]
        if not dep.routes:
            why.append(f"{dep.host}: did not resolve even with {self.every} up")
            return Fate.FAILS, why, [Cause(CauseKind.UNRESOLVED, dep.host, None, why[-1])]
        reach = [self.reach(r, behaviour, dep.host, dep.role) for r in dep.routes]
        why.extend(f"{dep.host} {x.reason}" for x in reach)
        if all(x.ok for x in reach):
            return Fate.WORKS, why, []
        if any(x.ok for x in reach):
            why.append("one address family is cut off; applications fall back to the other")
            return Fate.WORKS, why, []
        return Fate.FAILS, why, [Cause(x.kind or CauseKind.HOSTED, dep.host, x.site, f"{dep.host} {x.reason}")
                                 for x in reach]

    def workload(self, wid: str, deps: Sequence[Dependency]) -> WorkloadOutage:
        fates: dict[str, Fate] = {}
        causes: dict[str, tuple[Cause, ...]] = {}
        evidence: list[str] = []
        for behaviour in BEHAVIOURS:
            fate, dns_why, broken = self.dns(behaviour)
            place = self.whereabouts()
            lines = [place, dns_why] if place else [dns_why]
            for dep in deps:
                f, why, cause = self.path(dep, behaviour)
                fate = worst((fate, losing(dep.role, f)))
                lines.extend(why)
                if losing(dep.role, f) is not f:
                    lines.append(f"{dep.host} is not one of {wid}'s key hosts: without it, {wid} is impaired, "
                                 "not stopped")
                broken.extend(cause)
            now = self.current.get(wid, Fate.WORKS)
            key = [d for d in deps if d.role != PARTIAL]  # whether the measured path changes: the key hosts say
            tunneled = any(r.kind == "vpn" for d in key for r in d.measured_routes)
            if now is not Fate.WORKS and (not tunneled or self.tunnel_up):
                fate = worst((fate, now))  # the path does not change with the site: what is broken stays broken
                lines.append(f"measured now, on a path {'the site' if self.single else 'losing ' + self.the} "
                             f"does not change: {now.value}")
                broken.append(Cause(CauseKind.MEASURED, wid, None, lines[-1]))
            elif self.from_home and self.facts.home_link_slow and fate is Fate.WORKS:
                fate = Fate.DEGRADED
                lines.append("from home, over an impaired home connection")
                broken.append(Cause(CauseKind.HOME_LINK, wid, None, lines[-1]))
            elif now is Fate.DEGRADED and behaviour == "drops" and fate is Fate.WORKS and (home := self.home(key)):
                fate = Fate.DEGRADED  # impaired through the VPN now, and the home connection is itself impaired
                lines.append(f"impaired now through the VPN, and the home connection it falls back to is {home}")
                broken.append(Cause(CauseKind.HOME_LINK, wid, None, lines[-1]))
            elif (now is Fate.DEGRADED and fate is Fate.WORKS and (home := self.home(key))
                  and any(r.kind != "vpn" for d in key for r in d.routes)):
                fate = Fate.DEGRADED  # the tunnel black-holes its part: what is left goes over the home connection
                lines.append("impaired now; with the tunnel black-holed, what is left goes around it over the home "
                             f"connection, which is {home}")
                broken.append(Cause(CauseKind.HOME_LINK, wid, None, lines[-1]))
            fates[behaviour] = fate
            causes[behaviour] = tuple(replace(c, behaviour=behaviour) for c in dict.fromkeys(broken))
            evidence.extend(f"[VPN {behaviour}] {line}" if self.facts.vpn_interfaces else line for line in lines)
        worse = "stays" if fates["stays"].rank >= fates["drops"].rank else "drops"
        return WorkloadOutage(wid, fates["stays"], fates["drops"], tuple(dict.fromkeys(evidence)),
                              _unique(causes[worse]), causes_by=causes)

    def home(self, key: Sequence[Dependency]) -> str:
        """How the home connection impairs a workload whose key dependencies are ``key``, as a sentence's end
        ("" when it does not): slow, measured on the paths that go direct now, or, for media, losing the
        packets lost through the tunnel that rides on it (``home_link_lossy``, an answer to
        :func:`media_loss_assumption`)."""
        if self.facts.home_link_slow:
            return "impaired too (measured on the paths that go direct now)"
        if self.facts.home_link_lossy and any(d.role == MEDIA for d in key):
            return ("where the loss or jitter measured through the VPN is (the tunnel rides on the home "
                    "connection)")
        return ""

    def site_systems(self) -> tuple[SiteSystem, ...]:
        """The systems this laptop depends on that live at a site (any site, up or down)."""
        out: list[SiteSystem] = []
        if self.facts.vpn_interfaces:
            out.append(SiteSystem("vpn", ", ".join(self.facts.vpn_interfaces),
                                  f"a VPN tunnel to {self.label(self.tunnel_sites[0])} carries part of the traffic",
                                  self.tunnel_sites[0]))
        for r in self.facts.resolvers:
            site = self.site_of(r.route, role="dns")
            if site is not None:
                out.append(SiteSystem("dns", r.address, f"resolver reached via {r.route.interface or '?'}", site,
                                      r.address))
        seen: set[str] = set()
        for d in self.facts.dependencies:
            p = d.proxy
            pac_site = self.site_of(p.pac_route, url_host(p.pac_url), "pac") if p.pac_route else None
            if p.pac_route and p.pac_url and p.pac_url not in seen and pac_site is not None:
                seen.add(p.pac_url)
                out.append(SiteSystem("pac", p.pac_url, f"PAC file served from {p.pac_route.address}", pac_site,
                                      p.pac_route.address))
            proxy_site = self.site_of(p.proxy_route, proxy_host(p.proxy), "proxy") if p.proxy_route else None
            if p.proxy and p.proxy_route and p.proxy not in seen and proxy_site is not None:
                seen.add(p.proxy)
                out.append(SiteSystem("proxy", p.proxy, f"proxy at {p.proxy_route.address}", proxy_site,
                                      p.proxy_route.address))
            if d.role == "federation" and d.host not in seen:
                owned = [(r, s) for r in d.routes if (s := self.site_of(r, d.host, d.role)) is not None]
                if owned:
                    seen.add(d.host)
                    out.append(SiteSystem("federation", d.host,
                                          f"sign-in is federated to a server at {self.label(owned[0][1])}",
                                          owned[0][1], owned[0][0].address))
        return tuple(out)


def _unique(causes: Iterable[Cause]) -> tuple[Cause, ...]:
    """Causes without repeats of the same sentence (one per link)."""
    out: dict[str, Cause] = {}
    for c in causes:
        out.setdefault(c.text + "\0" + c.subject, c)
    return tuple(out.values())


_PAC_WORLDS = (("direct", "falls back to its manual proxy settings (or DIRECT)"),
               ("cached", "keeps using its cached copy"), ("fail", "fails closed"))


def pac_gone_now(p: ProxyPath) -> bool:
    """The settings name a PAC file, but it could not be fetched or loaded now (the decision came from the
    manual settings, rule 2 of netcheck.proxy.decision): the browser is without it whatever the site does."""
    return bool(p.pac_url) and p.source != "pac"


@dataclass(frozen=True)
class PacLostNow:
    """A PAC file the settings name that cannot be fetched or loaded now, what the OS does without it (the
    profile's ``pac_unreachable``; None: not stated) and the workloads whose traffic it decides."""

    url: str
    unreachable: str | None
    workloads: tuple[str, ...]
    #: Its fetch only ran out of time (``ProxyPath.pac_unread``): not known to be gone.
    unread: bool = False


def pac_lost_now(model: ModelInput) -> PacLostNow | None:
    """The PAC file that is gone already, site up (see :func:`pac_gone_now`), or None."""
    lost = [d for d in model.facts.dependencies if pac_gone_now(d.proxy)]
    if not lost:
        return None
    return PacLostNow(lost[0].proxy.pac_url or "", model.profile.pac_unreachable,
                      tuple(dict.fromkeys(d.workload for d in lost)), all(d.proxy.pac_unread for d in lost))


def pac_assumption(facts: SiteFacts, profile: SiteProfile, sites: Sequence[SiteProfile] | None = None,
                   down: Collection[str] | None = None) -> Assumption | None:
    """When the PAC file lives at a site that is down, or cannot be fetched even now, and no profile says
    what the OS does without it."""
    if profile.pac_unreachable is not None:
        return None
    model = _Model(facts, profile, {}, sites, down)
    if not any(pac_gone_now(d.proxy) or d.proxy.source == "pac" and d.proxy.pac_route is not None
               and any(not model.reach(d.proxy.pac_route, b, url_host(d.proxy.pac_url), role="pac").ok
                       for b in BEHAVIOURS)
               for d in facts.dependencies):
        return None
    def world(value: str) -> World:
        return lambda f, p: (f, replace(p, pac_unreachable=value))

    return Assumption("what the OS does when it cannot fetch the PAC file", "pac_unreachable",
                      tuple((f"if it {label}", world(value)) for value, label in _PAC_WORLDS))


def pac_unread_assumption(facts: SiteFacts) -> Assumption | None:
    """A PAC file whose fetch ran out of time before its server answered: gone now (the browser does without
    it, as the check's probes did), or there, slow to answer (a busy laptop, a lossy link), and then in use
    whatever the check could not wait for. Its answers were not read: in that world the browser is taken to
    go where the probes went (what was measured), through the PAC file, which the site's loss may take away.
    """
    unread = [d for d in facts.dependencies if d.proxy.pac_unread and pac_gone_now(d.proxy)]
    if not unread:
        return None
    urls = ", ".join(dict.fromkeys(d.proxy.pac_url or "" for d in unread))

    def answers(f: SiteFacts, p: SiteProfile) -> tuple[SiteFacts, SiteProfile]:
        return replace(f, dependencies=tuple(
            replace(d, proxy=replace(d.proxy, source="pac", pac_unread=False))
            if d.proxy.pac_unread and pac_gone_now(d.proxy) else d for d in f.dependencies)), p

    return Assumption(f"whether the PAC file {urls} is gone or was only slow: its fetch ran out of time before "
                      "the server answered, which does not show it is gone (its answers were not read)", "",
                      (("if it is gone now", lambda f, p: (f, p)),
                       ("if it answers, choosing what the check measured", answers)))


def public_systems_assumption(facts: SiteFacts, profile: SiteProfile,
                              sites: Sequence[SiteProfile] | None = None) -> Assumption | None:
    """Without a profile's networks: a federation server, or a resolver, proxy or PAC server reached through
    the VPN, on a public address may be the site's (published from it) or a cloud service's."""
    if any(s.networks for s in (sites or (profile,))):
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
        check(d.proxy.proxy_route, proxy_host(d.proxy.proxy), "proxy")
        check(d.proxy.pac_route, url_host(d.proxy.pac_url), "pac")
    if not public:
        return None
    names = ", ".join(public)
    at = "at one of your sites" if sites and len(sites) > 1 else "at the site"
    return Assumption(f"whether {names} (on a public address) is {at} or a cloud service", "networks",
                      ((f"if it is {at}", lambda f, p: (replace(f, public_site_systems=True), p)),
                       ("if it is a cloud service", lambda f, p: (replace(f, public_site_systems=False), p))))


def home_link(facts: SiteFacts, current: Mapping[str, Fate]) -> bool | None:
    """Whether the home connection is impaired, judged from the workloads whose paths go direct now."""
    key = [d for d in facts.dependencies if d.role != PARTIAL]  # the partial hosts' paths can differ
    direct = {d.workload for d in key if d.routes} - {d.workload for d in key if any(r.kind == "vpn" for r in d.routes)}
    if not facts.vpn_interfaces or facts.on_site or not direct:
        return None
    return any(current.get(w) is Fate.DEGRADED for w in direct)


def _impaired_now(workload: str, current: Mapping[str, Fate], possible_now: Mapping[str, tuple[Fate, ...]]) -> bool:
    """Degraded now, or maybe (a status the sample could not settle, see :class:`NowHedge`)."""
    return current.get(workload) is Fate.DEGRADED or Fate.DEGRADED in possible_now.get(workload, ())


def home_link_assumption(facts: SiteFacts, current: Mapping[str, Fate],
                         possible_now: Mapping[str, tuple[Fate, ...]] | None = None) -> Assumption | None:
    """A workload impaired now (or maybe) through the VPN, and no direct path to tell whether the home
    connection it falls back to when the VPN drops is the cause."""
    if facts.home_link_slow is not None:
        return None
    if facts.on_site:  # nothing here crosses the home connection: its quality cannot be measured
        return Assumption("the quality of the home connection (this runs on the office network)", "",
                          (("over a good home connection", lambda f, p: (replace(f, home_link_slow=False), p)),
                           ("over an impaired one", lambda f, p: (replace(f, home_link_slow=True), p))))
    if not facts.vpn_interfaces:
        return None
    tunneled = {d.workload for d in facts.dependencies
                if d.role != PARTIAL and any(r.kind == "vpn" for r in d.measured_routes)}
    if not any(_impaired_now(w, current, possible_now or {}) for w in tunneled):
        return None
    return Assumption("whether the home connection or the path through the site makes it slow now", "",
                      (("if the site's path is the slow part", lambda f, p: (replace(f, home_link_slow=False), p)),
                       ("if the home connection is", lambda f, p: (replace(f, home_link_slow=True), p))))


def media_loss_assumption(facts: SiteFacts, current: Mapping[str, Fate],
                          possible_now: Mapping[str, tuple[Fate, ...]]) -> Assumption | None:
    """Media impaired now (or maybe: a sample that could not settle) on a path into the VPN, while the paths
    that go direct now show a home connection that is not slow: their connect times show its round trip, not
    its loss or jitter. The tunnel rides on the home connection, so loss measured through it may be the home
    connection's (it stays once the media goes around the tunnel) or the tunnel's and the site's path (it
    goes with them). Nothing on the laptop tells which."""
    if facts.home_link_slow is not False or facts.home_link_lossy is not None or facts.on_site \
            or not facts.vpn_interfaces:
        return None  # slow: impaired either way; unmeasured: home_link_assumption asks the wider question
    media = {d.workload for d in facts.dependencies
             if d.role == MEDIA and any(r.kind == "vpn" for r in d.measured_routes)}
    if not any(_impaired_now(w, current, possible_now) for w in media):
        return None
    return Assumption("whether the loss or jitter measured through the VPN is the home connection's (the tunnel "
                      "rides on it) or the tunnel's and the site's path (the paths that go direct now show the "
                      "home connection's round trip only)", "",
                      (("if it is the tunnel's or the site's path",
                        lambda f, p: (replace(f, home_link_lossy=False), p)),
                       ("if it is the home connection's", lambda f, p: (replace(f, home_link_lossy=True), p))))


def _behaviours(facts: SiteFacts, profile: SiteProfile) -> tuple[str, ...]:
    if not facts.vpn_interfaces:
        return ("drops",)  # no tunnel: both behaviours are the same
    if profile.vpn_on_site_down:
        return (profile.vpn_on_site_down,)
    return BEHAVIOURS


def _rows(facts: SiteFacts, profile: SiteProfile, workloads: Sequence[str], current: Mapping[str, Fate],
          sites: Sequence[SiteProfile] | None = None, down: Collection[str] | None = None
          ) -> dict[str, WorkloadOutage]:
    model = _Model(facts, profile, current, sites, down)
    rows = {}
    for wid in workloads:
        deps = [d for d in model.facts.dependencies if d.workload == wid]  # the office's, while staying there
        if deps:
            rows[wid] = model.workload(wid, deps)
    return rows


#: What a prediction hedged by :class:`NowHedge` hangs on. Unlike the other assumptions, this laptop can
#: settle it (a longer sample); it names no workload, since it is said under each hedged one.
NOW_QUESTION = ("what a longer measurement shows (this check could not settle whether the connection is "
                "impaired now: its sample was too short, or taken while its own probes crowded the connection; "
                "netcheck check --thorough measures for longer)")


@dataclass(frozen=True)
class NowHedge:
    """Statuses measured now that the sample could not settle (``WorkloadResult.possible``): the prediction
    is made as measured and with each of them at its worst possible fate, and hedged where they differ."""

    assumption: Assumption
    worlds: tuple[tuple[str, Mapping[str, Fate]], ...]
    workloads: frozenset[str]  # the hedged ones: no other workload's fate reads them

    @staticmethod
    def of(current: Mapping[str, Fate], possible: Mapping[str, tuple[Fate, ...]]) -> NowHedge | None:
        worse = {w: max(fates, key=lambda f: f.rank) for w, fates in possible.items()
                 if fates and max(f.rank for f in fates) > current.get(w, Fate.WORKS).rank}
        if not worse:
            return None
        names = ", ".join(sorted(worse))
        return NowHedge(Assumption(NOW_QUESTION, "", ()),
                        (("as measured now", current),
                         (f"{names} {'/'.join(f.value for f in worse.values())} now", {**current, **worse})),
                        frozenset(worse))


#: The most evidence lines a workload's prediction carries: the report schema's ``maxItems`` for evidence.
EVIDENCE_LIMIT = 200


def _fitted(lines: list[str], room: int) -> list[str]:
    """The world lines (``"<labels>: <fates>"``) of a hedge, within ``room`` lines. Every combination of
    assumptions is a world, and five assumptions with a hedged status now made 192 of them (a report the
    schema refused): when they do not fit, each distinct outcome keeps its first world (as many as the room
    holds), the others fill what room is left, and one line counts the rest."""
    if len(lines) <= room:
        return lines
    first: dict[str, str] = {}
    for line in lines:
        first.setdefault(line.rsplit(": ", 1)[-1], line)
    kept = set(list(first.values())[:max(0, room - 1)])  # more distinct outcomes than room: the first ones
    others = [line for line in lines if line not in kept]
    fill = max(0, room - len(kept) - 1)
    chosen = set(others[:fill]) | kept
    dropped = len(lines) - len(chosen)
    tail = ("each with one of the outcomes above" if len(kept) == len(first)
            else "with outcomes not all shown above")
    return [line for line in lines if line in chosen] + [f"and {dropped} more combinations of the assumptions, {tail}"]


def _hedge(base: dict[str, WorkloadOutage], assumptions: Sequence[Assumption], facts: SiteFacts,
           profile: SiteProfile, workloads: Sequence[str], current: Mapping[str, Fate],
           sites: Sequence[SiteProfile] | None = None, down: Collection[str] | None = None,
           now: NowHedge | None = None) -> dict[str, WorkloadOutage]:
    """Each workload's fate in every world the assumptions allow (their cross product, and with ``now``
    each of them as measured and with the hedged statuses at their worst): where the worlds disagree, the
    fate is UNCERTAIN, with the possible fates and the assumption named in the evidence."""
    worlds: list[tuple[list[str], SiteFacts, SiteProfile, Mapping[str, Fate]]] = [([], facts, profile, current)]
    for a in assumptions:
        worlds = [([*labels, label], *change(wf, wp), c)
                  for labels, wf, wp, c in worlds for label, change in a.worlds]
    if now is not None:
        worlds = [([*labels, label], wf, wp, c) for labels, wf, wp, _ in worlds for label, c in now.worlds]
        assumptions = [*assumptions, now.assumption]
    outcomes = [(labels, _rows(wf, wp, workloads, c, sites, down)) for labels, wf, wp, c in worlds]
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
        mine = [a for a in assumptions if not (now and a is now.assumption and wid not in now.workloads)]
        questions = tuple(a.question if now and a is now.assumption else f"{a.question} (netcheck cannot read it from "
                          "this laptop" + (f"; IT can state it in the site profile: {a.settle})" if a.settle else ")")
                          for a in mine)
        room = EVIDENCE_LIMIT - len(row.evidence) - len(questions)
        evidence = (*row.evidence, *(f"[assumption] this hangs on {q}" for q in questions),
                    *(f"[assumption] {line}" for line in _fitted(list(dict.fromkeys(lines)), room)))
        hangs = tuple(Cause(CauseKind.ASSUMPTION, q, None, f"it hangs on {q}") for q in questions)
        by = {b: (*row.causes_by.get(b, ()), *(replace(c, behaviour=b) for c in hangs)) for b in possible}
        out[wid] = replace(row, if_vpn_stays=fates["stays"], if_vpn_drops=fates["drops"], evidence=evidence,
                           causes=(*row.causes, *hangs), causes_by={**row.causes_by, **by}, possible=possible,
                           assumptions=tuple(a.question for a in mine))
    return out


def predict(facts: SiteFacts, profile: SiteProfile, workloads: Sequence[str],
            current: Mapping[str, Fate] | None = None, assumptions: Sequence[Assumption] = (), *,
            sites: Sequence[SiteProfile] | None = None, down: Collection[str] | None = None,
            possible_now: Mapping[str, tuple[Fate, ...]] | None = None) -> OutagePrediction:
    """Each workload's fate, for both VPN behaviours, with the chain of evidence and the causes.

    ``current`` holds what was measured now for workloads whose state carries over
    when their path does not depend on the site (e.g. Teams media quality on a
    lossy home link). ``assumptions`` are things the answer may hang on that the
    caller could not read (e.g. the VPN profile used from home, seen from the
    office); what the OS does without its PAC file is added here when it matters
    and no profile states it. Where they change a fate, it is UNCERTAIN.

    ``sites``: the sites known (several profiles); None or one: ``profile`` is the one site, and every
    site system belongs to it. ``down``: the names of the sites that are down (None: all of them).
    ``profile`` carries the laptop's settings (VPN behaviour, PAC fallback) either way.
    ``possible_now``: workloads whose status now is hedged (the sample could not tell, e.g. Teams media loss
    on 50 packets), with the fates it allows: the prediction is made both ways (:class:`NowHedge`).
    """
    current = current or {}
    many = tuple(sites) if sites and len(sites) > 1 else None
    if facts.home_link_slow is None:
        facts = replace(facts, home_link_slow=home_link(facts, current))
    model = _Model(facts, profile, current, many, down)
    base = _rows(facts, profile, workloads, current, many, down)
    pac = pac_assumption(facts, profile, many, down)
    public = public_systems_assumption(facts, profile, many)
    home = home_link_assumption(facts, current, possible_now)
    lossy = media_loss_assumption(facts, current, possible_now or {})
    unread = pac_unread_assumption(facts)
    hedges = [*assumptions, *(a for a in (unread, pac, public, home, lossy) if a)]
    now = NowHedge.of(current, possible_now or {})
    rows = list((_hedge(base, hedges, facts, profile, workloads, current, many, down, now) if hedges or now
                 else base).values())
    behaviours = _behaviours(facts, profile)
    for a in hedges:
        for _, change in a.worlds:
            if len(_behaviours(*change(facts, profile))) > len(behaviours):
                behaviours = _behaviours(*change(facts, profile))
    notes = []
    if model.staying:
        notes.append(f"You are on the network of {model.here}, which stays up in this case: this prediction is made "
                     "from the paths seen there (a laptop stays where it is when another site is lost).")
    elif facts.on_site and any(isinstance(w, FactsPatch) and w.on_site is False
                               for a in assumptions for _, w in a.worlds):
        notes.append("This looks like an office network, with no site profile to tell: this prediction is made "
                     "from your configuration as it would be used from home, and hedged over this being another "
                     "network.")
    elif facts.on_site:
        notes.append("You are on the office network now: this prediction is made from your configuration "
                     "(VPN, DNS, proxy and PAC settings as they would be used from home), not from a live path.")
    return OutagePrediction(tuple(rows), model.site_systems(), behaviours, facts.on_site, tuple(notes),
                            model.facts.dependencies, down=tuple(sorted(model.down)))


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
class ModelInput:
    """Everything a prediction is computed from: with it, any case (set of sites down) can be recomputed
    without the laptop (see :mod:`netcheck.assess.what_if`)."""

    facts: SiteFacts
    #: The laptop's settings (VPN behaviour, PAC fallback, VPN profile from home).
    profile: SiteProfile
    #: The sites known (profiles); empty or one: ``profile`` is the one site.
    sites: tuple[SiteProfile, ...]
    workloads: tuple[str, ...]
    current: Mapping[str, Fate] = field(default_factory=dict)
    #: What the facts hang on that could not be read (not carried in the report: see netcheck.assess.what_if).
    assumptions: tuple[Assumption, ...] = ()
    #: Statuses now that the sample could not settle, with the fates they allow (``predict``'s ``possible_now``).
    possible_now: Mapping[str, tuple[Fate, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class SiteView:
    """A site as the report shows it: told (a profile) or inferred, its networks and the systems in it."""

    name: str
    told: bool
    networks: tuple[str, ...]
    systems: tuple[tuple[str, str], ...]  # (kind, name)


@dataclass(frozen=True)
class OutageCase:
    """The prediction if the sites ``down`` went down (together)."""

    down: tuple[str, ...]
    verdict: Verdict
    prediction: OutagePrediction
    #: One plain sentence for the employee ("If Paris went down: you would lose Sign-in (...)").
    answer: str


@dataclass(frozen=True)
class OutageSection:
    """The answer to "could this person keep working if the site went down?"."""

    verdict: Verdict
    summary: str
    prediction: OutagePrediction
    split_tunnel: tuple[SplitTunnelRow, ...]
    remediation: tuple[str, ...]
    findings: tuple[Finding, ...]
    #: The sites known, and the prediction for each alone and all together (the last).
    sites: tuple[SiteView, ...] = ()
    cases: tuple[OutageCase, ...] = ()
    model: ModelInput | None = None
    #: The cases are the one asked for (``--site-down``), not each site alone and all together.
    asked: bool = False


#: The fix for each kind of site system; ``{place}``: "the site" (one site), else the sites by name.
_FIXES = {
    "dns": ("Microsoft 365 names must resolve without {place}: let the VPN client fall back to the local "
            "network's resolver, or give laptops a resolver that does not depend on {place}."),
    "pac": ("The PAC file is served from {place}: host it where it does not depend on {place} (or deploy it "
            "with the laptop), and make sure clients go direct when it cannot be fetched."),
    "proxy": ("Microsoft 365 goes through a proxy at {place}: send Optimize and Allow endpoints direct "
              "(PAC \"DIRECT\" or proxy bypass), as Microsoft recommends."),
    "federation": ("Sign-in is federated to a server at {place} (AD FS): enable password hash sync as a "
                   "backup sign-in method so people can sign in when {place} is down."),
}


def _places(sites: Iterable[str | None], several: bool) -> str:
    """How a fix names where something is: "the site" with one site, else the sites by name."""
    named = list(dict.fromkeys(_site_words(s) for s in sites if s))
    return listing(named, "or") if several and named else "a site that is down" if several else "the site"


_FATE_WORDS = {Fate.FAILS: "stops working", Fate.DEGRADED: "is impaired",
               Fate.UNCERTAIN: "may stop working (it depends on something netcheck cannot read)"}


def _short(names: Mapping[str, str], wid: str) -> str:
    return names.get(wid, wid).split(" (")[0]


@dataclass(frozen=True)
class _FixContext:
    workload: str  # the workload's short name
    tunneled: Sequence[str]  # its Microsoft 365 prefixes that enter the VPN
    causes: Sequence[Cause]  # the causes of the kind being remedied
    several: bool = False  # several sites are known: name them

    @property
    def place(self) -> str:
        return _places((c.site for c in self.causes), self.several)


def _fix_tunnel(c: _FixContext) -> str:
    if c.tunneled:
        shown = ", ".join(c.tunneled[:12]) + (f" and {len(c.tunneled) - 12} more" if len(c.tunneled) > 12 else "")
        return (f"Exclude the Microsoft 365 prefixes of {c.workload} from the VPN tunnel (current endpoint data): "
                f"{shown}; or let the VPN client disconnect when {c.place} is unreachable.")
    return (f"{c.workload} goes through the VPN to {c.place}: let the VPN client disconnect when {c.place} is "
            "unreachable, or send this traffic direct.")


def _fix_vpn_only(c: _FixContext) -> str:
    gateways = ", ".join(dict.fromkeys(x.site or "the site" for x in c.causes))
    return (f"{c.workload} needs a system reachable only through the VPN, whose gateway is at {gateways}: give the "
            "VPN client a gateway at another site to fail over to (site profile key vpn_failover), or publish "
            "the system so it does not depend on the tunnel.")


def _fix_internet_via(c: _FixContext) -> str:
    through = ", ".join(dict.fromkeys(x.site or "another site" for x in c.causes))
    return (f"{c.workload} reaches the internet only through {through}: give the branch (or the VPN's site) whose "
            f"internet goes out through {through} a local internet breakout (its own link, at least for Microsoft "
            "365's Optimize and Allow endpoints), or a second way out through another site.")


def _fix_assumption(c: _FixContext) -> str:
    return ("State what netcheck cannot read in the site profile (--site-profile or the collector's policy) where "
            "it has a key, or remove the dependency: " + "; ".join(x.subject for x in c.causes) + ".")


#: The remedy for each kind of cause, in the order they are offered; "" offers none of its own.
_REMEDIES: Mapping[CauseKind, Callable[[_FixContext], str]] = {
    CauseKind.TUNNEL: _fix_tunnel,
    CauseKind.VPN_ONLY: _fix_vpn_only,
    CauseKind.DNS: lambda c: _FIXES["dns"].format(place=c.place),
    CauseKind.PAC: lambda c: _FIXES["pac"].format(place=c.place),
    CauseKind.PROXY: lambda c: _FIXES["proxy"].format(place=c.place),
    CauseKind.SIGN_IN: lambda c: _FIXES["federation"].format(place=c.place),
    CauseKind.INTERNET_VIA: _fix_internet_via,
    CauseKind.ASSUMPTION: _fix_assumption,
    CauseKind.MEASURED: lambda c: (f"This is already impaired from here, independently of "
                                   f"{'any site' if c.several else 'the site'}: see the other findings."),
    CauseKind.HOSTED: lambda c: "",
    CauseKind.NO_ROUTE: lambda c: "",
    CauseKind.UNRESOLVED: lambda c: "",
    CauseKind.HOME_LINK: lambda c: "",
}


def remedy(kind: CauseKind, workload: str, causes: Sequence[Cause] = ()) -> str:
    """The remedy for one kind of cause of ``workload`` (its short name), as the report offers it ("" if
    that kind has none of its own); for the dashboard, which counts causes by kind across a fleet."""
    return _REMEDIES[kind](_FixContext(workload, (), causes))


def _fix_for(wid: str, causes: Sequence[Cause], names: Mapping[str, str], tunneled: Sequence[str],
             several: bool = False) -> str:
    """The remedy for one workload, looked up by the kinds of what breaks it."""
    fixes = [_REMEDIES[kind](_FixContext(_short(names, wid), tunneled, [c for c in causes if c.kind is kind],
                                         several))
             for kind in _REMEDIES if any(c.kind is kind for c in causes)]
    return (" ".join(dict.fromkeys(f for f in fixes if f))
            or f"Remove this workload's dependency on {_places((c.site for c in causes), several)}.")


def outage_verdict(prediction: OutagePrediction, core: Sequence[str]) -> Verdict:
    """Not ready if a core workload fails, at risk if one is impaired or uncertain, else ready."""
    fates = {prediction.fate(wid) for wid in core if any(w.id == wid for w in prediction.workloads)}
    return (Verdict.NOT_READY if Fate.FAILS in fates else
            Verdict.AT_RISK if fates & {Fate.DEGRADED, Fate.UNCERTAIN} else Verdict.READY)


def assess_outage(prediction: OutagePrediction, names: Mapping[str, str], core: Sequence[str],
                  split_tunnel: Sequence[SplitTunnelRow] = (), tunneled_optimize: Sequence[str] = (),
                  identity_split_egress: bool = False,
                  tunneled_by_workload: Mapping[str, Sequence[str]] | None = None,
                  sign_in: str | None = None, several_sites: bool = False) -> OutageSection:
    """Verdict, summary, fixes and findings for a prediction (pure). ``sign_in``: the sign-in workload's id
    (from endpoints/workloads.toml). ``several_sites``: the prediction is every site of several going down
    (said so: "If all your sites went down")."""
    went, goes = (("all your sites went down", "all your sites go down") if several_sites
                  else ("the site went down", "the site goes down"))
    tunneled_by_workload = tunneled_by_workload or {}
    fates = {w.id: prediction.fate(w.id) for w in prediction.workloads}
    failed = [wid for wid in core if fates.get(wid) is Fate.FAILS]
    degraded = [wid for wid in core if fates.get(wid) is Fate.DEGRADED]
    uncertain = [wid for wid in core if fates.get(wid) is Fate.UNCERTAIN]
    verdict = outage_verdict(prediction, core)

    def workloads_listed(ids: Sequence[str]) -> str:
        return listing([_short(names, i) for i in ids])

    #: The site(s) the tunnel goes to, by name with several sites.
    vpn_to = _places((x.site for x in prediction.site_systems if x.kind == "vpn"), True) if several_sites else None
    only_if_stays = len(prediction.behaviours) == 2 and all(
        w.if_vpn_drops is not Fate.FAILS for w in prediction.workloads if w.id in failed)
    if failed:
        summary = f"If {went}, you would lose {workloads_listed(failed)}"
        summary += (f" (if the VPN stays connected to {vpn_to or 'the dead site'}; if it drops, they keep working)."
                    if only_if_stays else ".")
    elif degraded:
        summary = f"If {went}, you could keep working, but {workloads_listed(degraded)} would be impaired."
    elif not uncertain:
        summary = f"If {went}, you could keep working from where you are."
    else:
        summary = f"If {went}, you might not be able to keep working."
    if uncertain:
        asked = sorted({a for w in prediction.workloads if w.id in uncertain for a in w.assumptions})
        unread = [a for a in asked if a != NOW_QUESTION]
        on = [*([f"{'; '.join(unread)}, which netcheck cannot read from this laptop"] if unread else []),
              *([NOW_QUESTION] if NOW_QUESTION in asked else [])]
        summary += f" Whether you keep {workloads_listed(uncertain)} depends on {', and on '.join(on)}."
    fixes: list[str] = []
    if tunneled_optimize:
        fixes.append("Add these Optimize prefixes to the VPN's split-tunnel exclusions (from the current "
                     "endpoint data): " + ", ".join(tunneled_optimize))
    kinds = {s.kind for s in prediction.site_systems}
    fixes.extend(_FIXES[k].format(place=_places((x.site for x in prediction.site_systems if x.kind == k),
                                                several_sites))
                 for k in ("dns", "pac", "proxy", "federation") if k in kinds)
    findings: list[Finding] = []
    for w in prediction.workloads:
        fate = prediction.fate(w.id)
        if fate is Fate.WORKS:
            continue
        texts = tuple(dict.fromkeys(c.text for c in w.causes))
        both = {w.if_vpn_stays, w.if_vpn_drops}
        when = (f" if the VPN stays connected to {vpn_to or 'the site'}"
                if len(prediction.behaviours) == 2 and len(both) == 2
                else "")
        findings.append(Finding(
            code=f"outage.{w.id}", severity=outage_severity(fate),
            title=(f"If {goes}, {_short(names, w.id)} "
                   f"{_FATE_WORDS[fate]}{when}"),
            detail=(texts[0] + (f" (and {len(texts) - 1} more)" if len(texts) > 1 else "") + "."
                    if texts else "It depends on the site."),
            remediation=_fix_for(w.id, w.causes, names, tunneled_by_workload.get(w.id, ()), several_sites),
            workload=w.id, principle=3, evidence=texts))
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
            workload=sign_in, principle=1))
    return OutageSection(verdict, summary, prediction, tuple(split_tunnel), tuple(fixes), tuple(findings))


def address_sites(model: ModelInput) -> dict[str, str | None]:
    """Address -> the site that hosts it (None: no site), for every address the facts hold."""
    m = _Model(model.facts, model.profile, model.current, model.sites or None)
    out: dict[str, str | None] = {}
    for r in model.facts.resolvers:
        out.setdefault(r.route.address, m.site_of(r.route, role="dns"))
    for d in model.facts.dependencies:
        for route in d.routes:
            out.setdefault(route.address, m.site_of(route, d.host, d.role))
        p = d.proxy
        if p.proxy_route:
            out.setdefault(p.proxy_route.address, m.site_of(p.proxy_route, proxy_host(p.proxy),
                                                            "proxy"))
        if p.pac_route:
            out.setdefault(p.pac_route.address, m.site_of(p.pac_route, url_host(p.pac_url), "pac"))
    return out
