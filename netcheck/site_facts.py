"""Gather, with the site up, the facts the site-outage prediction reasons over.

Thin and impure: asks the platform where traffic leaves, reads the proxy and PAC
settings, and reuses the probe results (DNS answers, the realm answer). The decisions
(on the office network or not, routes as from home, split-tunnel classes) are in
:mod:`netcheck.assess.site_decisions`, the prediction in :mod:`netcheck.assess.outage` (both pure).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from netcheck.assess.outage import (
    MEDIA,
    PARTIAL,
    Assumption,
    Dependency,
    FactsPatch,
    ProxyPath,
    Resolver,
    Route,
    SiteFacts,
    SplitTunnelRow,
    is_internal,
)
from netcheck.assess.site_decisions import (
    SPLIT_OUT,
    as_from_home,
    home_assumptions,
    is_on_site,
    office_resolver,
    own_address,
    place_assumption,
    representative,
    route_of,
    split_tunnel,
    vpn_gateway,
)
from netcheck.deadline import Deadline
from netcheck.m365.catalog import Catalog
from netcheck.models import Category, ProbeKind, ProbeResult
from netcheck.names import proxy_host, url_host
from netcheck.platform.base import Interface, Platform
from netcheck.proxy.decision import decide_all, endpoint, url_for
from netcheck.proxy.pac import PacFetch
from netcheck.proxy.settings import ProxySettings
from netcheck.site_profile import SiteProfile

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class GatheredFacts:
    facts: SiteFacts
    interfaces: tuple[Interface, ...]
    split_tunnel: tuple[SplitTunnelRow, ...]
    #: Optimize prefixes whose traffic enters the VPN (for the remediation).
    tunneled_optimize: tuple[str, ...]
    #: Sign-in leaves through the VPN while Optimize traffic goes direct.
    identity_split_egress: bool
    #: Per workload, its Optimize and Allow prefixes whose traffic enters the VPN.
    tunneled_by_workload: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: What the facts hang on that could not be read (e.g. on the office network without a profile:
    #: the VPN profile used from home), with the facts of each possible answer.
    assumptions: tuple[Assumption, ...] = ()


def _addresses(result: ProbeResult | None) -> list[str]:
    if result is None or not result.ok:
        return []
    out: list[str] = []
    for fam in ("ipv4", "ipv6"):
        values = result.detail.get(fam)
        if isinstance(values, list):
            out.extend(str(v) for v in values[:1])
    return out


def _host(proxy: str) -> str:
    """The host of a "host:port" proxy (IPv6 in brackets allowed)."""
    return proxy_host(proxy) or proxy


def _lookup(host: str, results: Iterable[ProbeResult]) -> ProbeResult | None:
    for r in results:
        if r.kind is ProbeKind.DNS and r.target.host == host:
            return r
    return None


def _resolve(host: str, deadline: Deadline) -> list[str]:
    """The OS's answer for ``host`` (one address per family), as applications would get it,
    within the check's deadline."""
    from netcheck.proxy.pac import resolve_within

    if not host:
        return []
    addresses, _, why = resolve_within(host, deadline.remaining())
    if why:
        log.debug("%s", why)
    return addresses


def gather(results: Sequence[ProbeResult], catalog: Catalog, tenant: str | None, platform: Platform,
           profile: SiteProfile, deadline: Deadline, pac: PacFetch | None = None,
           proxy_settings: ProxySettings | None = None,
           interfaces: Sequence[Interface] | None = None) -> GatheredFacts:
    interfaces = tuple(interfaces) if interfaces is not None else platform.interfaces()
    vpn = tuple(i.name for i in interfaces if i.kind == "vpn" and i.is_up)
    settings = proxy_settings if proxy_settings is not None else platform.proxy_settings()
    key_hosts = catalog.key_hosts(tenant)
    category_hosts = catalog.category_hosts(tenant)

    # Every address we need a route for, looked up in one batch.
    wanted: dict[str, list[str]] = {}
    for hosts in (*key_hosts.values(), *category_hosts.values()):
        for host in hosts:
            wanted[host] = _addresses(_lookup(host, results))
    stun = [r for r in results if r.kind is ProbeKind.STUN]
    relay = stun[0].target.host if stun else catalog.media_relay
    if relay:
        wanted[relay] = _resolve(relay, deadline)
    federation: str | None = None
    identity = "unknown"
    for r in results:
        if r.kind is ProbeKind.REALM and r.ok:
            identity = str(r.detail.get("account_type") or "unknown")
            if identity == "federated" and r.detail.get("federation_host"):
                federation = str(r.detail["federation_host"])
                wanted[federation] = _resolve(federation, deadline)
    resolvers = platform.dns_servers()
    proxied = [h for hosts in (*key_hosts.values(), *category_hosts.values()) for h in hosts]
    proxied += [federation] if federation else []
    proxy_paths = _proxy_paths(settings, proxied, pac, deadline, profile)
    proxy_hosts = {h: _resolve(h, deadline) for h in {*(_host(x[0]) for x in proxy_paths.values() if x[0]),
                                                     *(x[1] for x in proxy_paths.values() if x[1]),
                                                     *(_host(x[4]) for x in proxy_paths.values() if x[4])}}
    ranges = [(s, n) for s in catalog.sets if s.category is not Category.DEFAULT and s.required for n in s.ips]
    optimize = [(s, n) for s, n in ranges if s.category is Category.OPTIMIZE]
    samples = [representative(n) for _, n in ranges]
    everything = [*resolvers, *(a for v in wanted.values() for a in v),
                  *(a for v in proxy_hosts.values() for a in v), *samples]
    egress = platform.egress_many(list(dict.fromkeys(everything)), interfaces)

    def routes(addrs: Iterable[str]) -> tuple[Route, ...]:
        return tuple(route_of(egress[a]) for a in addrs if a in egress)

    def first_route(host: str | None) -> Route | None:
        return next(iter(routes(proxy_hosts.get(host, []) if host else [])), None)

    def proxy_path(host: str) -> ProxyPath:
        proxy, pac_host, source, pac_url, manual = proxy_paths.get(host, (None, None, "none", None, None))
        return ProxyPath(source=source, proxy=proxy, proxy_route=first_route(_host(proxy) if proxy else None),
                         pac_url=pac_url, pac_route=first_route(pac_host),
                         without_pac=manual if pac_url else None,
                         without_pac_route=first_route(_host(manual)) if manual and pac_url else None,
                         pac_unread=bool(pac_url and source != "pac" and pac is not None and pac.url == pac_url
                                         and pac.timed_out))

    deps: list[Dependency] = []
    for role, hosts_of in (("service", key_hosts), (PARTIAL, category_hosts)):
        for wid, hosts in hosts_of.items():
            for host in hosts:
                deps.append(Dependency(wid, role, host, routes(wanted.get(host, [])), proxy_path(host),
                                       resolved=bool(wanted.get(host))))
    media_workloads = {w for m in catalog.plan(tenant).media for w in m.workloads}
    sampled = stun[0].target.address if stun else None  # the address the media sample went to
    if relay:
        for wid in sorted(media_workloads):
            deps.append(Dependency(wid, MEDIA, relay, routes(wanted.get(relay, [])),
                                   measured=sampled if sampled in wanted.get(relay, []) else None))
    sign_in = catalog.workloads.sign_in
    if federation and sign_in:
        deps.append(Dependency(sign_in, "federation", federation, routes(wanted.get(federation, [])),
                               proxy_path(federation)))

    assumptions: tuple[Assumption, ...] = ()
    split_rows, tunneled = split_tunnel(catalog, optimize, egress, bool(vpn))
    on_site = is_on_site(vpn, resolvers, egress, proxy_hosts, federation, wanted, profile, interfaces)
    # No site system seen here, and no profile's networks to tell: a resolver only an organisation's network
    # hands out makes this maybe an office, predicted as one and hedged over "or another network".
    office_sign = (office_resolver(vpn, resolvers, egress, interfaces)
                   if not on_site and not profile.networks else None)
    on_site = on_site or office_sign is not None
    resolver_facts = tuple(Resolver(a, route_of(egress[a])) for a in resolvers if a in egress)
    relay_routes = routes(wanted.get(relay, [])) if relay else ()
    mapped = stun[0].detail.get("mapped_address") if stun else None
    #: The public address a server saw, when that path did not enter the VPN (else it is the VPN's exit).
    public_egress = str(mapped) if mapped and relay_routes and all(r.kind != "vpn" for r in relay_routes) else None
    office_paths: FactsPatch | None = None  # on a site's network: the paths seen there
    if on_site:
        office_paths = FactsPatch(vpn_interfaces=(), resolvers=resolver_facts, dependencies=tuple(deps))
        if pac is not None and pac.ok:  # the PAC file as it answers a laptop at home
            proxy_paths.update(_proxy_paths(settings, proxied, pac, deadline, profile,
                                            my_ip=own_address(interfaces)))
            new = {_host(p) for p, _, _, _, _ in proxy_paths.values() if p} - set(proxy_hosts)
            proxy_hosts.update({h: _resolve(h, deadline) for h in new})
            extra = [a for h in new for a in proxy_hosts[h] if a not in egress]
            if extra:
                egress = {**egress, **platform.egress_many(extra, interfaces)}
            deps = [replace(d, proxy=proxy_path(d.host) if d.role != MEDIA else d.proxy) for d in deps]
        office = (deps, resolver_facts)
        deps, resolver_facts, vpn = as_from_home(*office, catalog, profile)
        assumptions = home_assumptions(office, catalog, profile, resolver_facts[-1])
        if office_sign is not None:
            assumptions = (*assumptions, place_assumption(office_sign, office_paths))
    identity_route = [r for d in deps if d.workload == sign_in and d.role == "service" for r in d.routes]
    opt_direct = any(row.ipv4 == SPLIT_OUT or row.ipv6 == SPLIT_OUT for row in split_rows)
    identity_split = bool(vpn) and opt_direct and any(r.kind == "vpn" for r in identity_route)
    internal = frozenset(h for h, addrs in (*wanted.items(), *proxy_hosts.items()) if any(map(is_internal, addrs)))
    gateway = vpn_gateway(platform.routes(), interfaces, catalog.networks()) if vpn and not on_site else None
    facts = SiteFacts(on_site=on_site, vpn_interfaces=vpn, resolvers=resolver_facts,
                      dependencies=tuple(deps), identity=identity, internal_hosts=internal,
                      public_egress=public_egress, office=office_paths, vpn_gateway=gateway,
                      host_addresses=tuple((h, tuple(a)) for h, a in sorted(proxy_hosts.items()) if h))
    by_workload: dict[str, dict[str, None]] = {}
    for s, n in ranges:
        e = egress.get(representative(n))
        if e is not None and e.kind == "vpn":
            for wid in catalog.workloads_of(s):
                by_workload.setdefault(wid, {})[str(n)] = None
    return GatheredFacts(facts, interfaces, split_rows, tunneled, identity_split,
                         {w: tuple(p) for w, p in by_workload.items()}, assumptions)


def _proxy_paths(settings: ProxySettings, hosts: Sequence[str], pac: PacFetch | None, deadline: Deadline,
                 profile: SiteProfile, my_ip: str | None = None
                 ) -> dict[str, tuple[str | None, str | None, str, str | None, str | None]]:
    """host -> (proxy "host:port" or None, PAC host or None, source, PAC URL, the manual settings' proxy
    "host:port" without the PAC file or None) for ``https://host/``, as
    :func:`netcheck.proxy.decision.decide` decides it."""
    urls = {h: url_for("https", h) for h in hosts}
    decided = decide_all(list(urls.values()), settings, pac, deadline, my_ip, profile.pac_unreachable)
    out: dict[str, tuple[str | None, str | None, str, str | None, str | None]] = {}
    for h, url in urls.items():
        d = decided[url]
        out[h] = (d.endpoint, url_host(d.pac_url), d.source, d.pac_url,
                  endpoint(d.without_pac) if d.without_pac else None)
    return out


