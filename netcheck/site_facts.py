"""Gather, with the site up, the facts the site-outage prediction reasons over.

Thin and impure: asks the platform where traffic leaves, reads the proxy and PAC
settings, and reuses the probe results (DNS answers, the realm answer). All the
reasoning is in :mod:`netcheck.outage` (pure).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from netcheck.catalog import Catalog, EndpointSet, Network
from netcheck.deadline import Deadline
from netcheck.models import Category, ProbeKind, ProbeResult
from netcheck.outage import Dependency, ProxyPath, Resolver, Route, SiteFacts, SplitTunnelRow, is_internal
from netcheck.platform.base import Egress, Interface, Platform
from netcheck.proxy import ProxySettings
from netcheck.site_profile import SiteProfile

log = logging.getLogger(__name__)

#: Split-tunnel classes, as Microsoft's connectivity test names them.
SPLIT_OUT, SELECTIVE, TUNNELED, NO_VPN, NOT_TESTED = "split_out", "selective", "tunneled", "no_vpn", "not_tested"


@dataclass(frozen=True)
class GatheredFacts:
    facts: SiteFacts
    interfaces: tuple[Interface, ...]
    split_tunnel: tuple[SplitTunnelRow, ...]
    #: Optimize prefixes whose traffic enters the VPN (for the remediation).
    tunneled_optimize: tuple[str, ...]
    #: Sign-in leaves through the VPN while Optimize traffic goes direct.
    identity_split_egress: bool


def _route(egress: Egress) -> Route:
    kind = egress.kind if egress.error is None else "unknown"
    return Route(egress.destination, egress.interface, kind)


def _addresses(result: ProbeResult | None) -> list[str]:
    if result is None or not result.ok:
        return []
    out: list[str] = []
    for fam in ("ipv4", "ipv6"):
        values = result.detail.get(fam)
        if isinstance(values, list):
            out.extend(str(v) for v in values[:1])
    return out


def representative(network: Network) -> str:
    return str(network.network_address + (1 if network.num_addresses > 2 else 0))


def classify_split(kinds: Sequence[str]) -> str:
    """Microsoft's classes from the egress kinds of a workload's Optimize prefixes."""
    if not kinds:
        return NOT_TESTED
    tunneled = sum(1 for k in kinds if k == "vpn")
    if tunneled == 0:
        return SPLIT_OUT
    return TUNNELED if tunneled == len(kinds) else SELECTIVE


def _lookup(host: str, results: Iterable[ProbeResult]) -> ProbeResult | None:
    for r in results:
        if r.kind is ProbeKind.DNS and r.target.host == host:
            return r
    return None


def _resolve(host: str, deadline: Deadline) -> list[str]:
    """The OS's answer for ``host`` (one address per family), as applications would get it."""
    import socket

    if not host:
        return []
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    seen: dict[int, str] = {}
    for family, _, _, _, sockaddr in infos:
        seen.setdefault(int(family), str(sockaddr[0]))
    return list(seen.values())


def gather(results: Sequence[ProbeResult], catalog: Catalog, tenant: str | None, platform: Platform,
           profile: SiteProfile, deadline: Deadline, pac_text: str | None = None,
           proxy_settings: ProxySettings | None = None) -> GatheredFacts:
    interfaces = platform.interfaces()
    vpn = tuple(i.name for i in interfaces if i.kind == "vpn" and i.is_up)
    settings = proxy_settings if proxy_settings is not None else platform.proxy_settings()
    key_hosts = catalog.key_hosts(tenant)

    # Every address we need a route for, looked up in one batch.
    wanted: dict[str, list[str]] = {}
    for hosts in key_hosts.values():
        for host in hosts:
            wanted[host] = _addresses(_lookup(host, results))
    stun = [r for r in results if r.kind is ProbeKind.STUN]
    relay = stun[0].target.host if stun else catalog.media_relay
    if relay:
        addrs = [str(r.detail.get("address") or r.target.address or "") for r in stun]
        wanted[relay] = [a for a in addrs if a] or _resolve(relay, deadline)
    federation: str | None = None
    identity = "unknown"
    for r in results:
        if r.kind is ProbeKind.REALM and r.ok:
            identity = str(r.detail.get("account_type") or "unknown")
            if identity == "federated" and r.detail.get("federation_host"):
                federation = str(r.detail["federation_host"])
                wanted[federation] = _resolve(federation, deadline)
    resolvers = platform.dns_servers()
    proxy_paths = _proxy_paths(settings, key_hosts, pac_text, deadline)
    proxy_hosts = {p: _resolve(p, deadline) for p in {*(x[0] for x in proxy_paths.values() if x[0]),
                                                     *(x[1] for x in proxy_paths.values() if x[1])}}
    optimize = [(s, n) for s in catalog.sets if s.category is Category.OPTIMIZE and s.required for n in s.ips]
    samples = [representative(n) for _, n in optimize]
    everything = [*resolvers, *(a for v in wanted.values() for a in v),
                  *(a for v in proxy_hosts.values() for a in v), *samples]
    egress = platform.egress_many(list(dict.fromkeys(everything)))

    def routes(addrs: Iterable[str]) -> tuple[Route, ...]:
        return tuple(_route(egress[a]) for a in addrs if a in egress)

    def proxy_path(host: str) -> ProxyPath:
        proxy, pac_host, source, pac_url = proxy_paths.get(host, (None, None, "none", None))
        p_route = next(iter(routes(proxy_hosts.get(proxy.split(":")[0], []) if proxy else [])), None)
        pac_route = next(iter(routes(proxy_hosts.get(pac_host, []) if pac_host else [])), None)
        return ProxyPath(source=source, proxy=proxy, proxy_route=p_route, pac_url=pac_url, pac_route=pac_route)

    deps: list[Dependency] = []
    for wid, hosts in key_hosts.items():
        for host in hosts:
            deps.append(Dependency(wid, "service", host, routes(wanted.get(host, [])), proxy_path(host),
                                   resolved=bool(wanted.get(host))))
    media_workloads = {w for m in catalog.plan(tenant).media for w in m.workloads}
    if relay:
        for wid in sorted(media_workloads):
            deps.append(Dependency(wid, "media", relay, routes(wanted.get(relay, []))))
    if federation:
        deps.append(Dependency("identity", "federation", federation, routes(wanted.get(federation, [])),
                               proxy_path(federation)))

    split_rows, tunneled = _split_tunnel(catalog, optimize, egress, bool(vpn))
    on_site = _on_site(vpn, resolvers, egress, proxy_hosts, federation, wanted, profile, interfaces)
    identity_route = [r for d in deps if d.workload == "identity" and d.role == "service" for r in d.routes]
    opt_direct = any(row.ipv4 == SPLIT_OUT or row.ipv6 == SPLIT_OUT for row in split_rows)
    identity_split = bool(vpn) and opt_direct and any(r.kind == "vpn" for r in identity_route)
    facts = SiteFacts(on_site=on_site, vpn_interfaces=vpn,
                      resolvers=tuple(Resolver(a, _route(egress[a])) for a in resolvers if a in egress),
                      dependencies=tuple(deps), identity=identity)
    return GatheredFacts(facts, interfaces, split_rows, tunneled, identity_split)


def _proxy_paths(settings: ProxySettings, key_hosts: Mapping[str, tuple[str, ...]], pac_text: str | None,
                 deadline: Deadline) -> dict[str, tuple[str | None, str | None, str, str | None]]:
    """host -> (proxy "host:port" or None, PAC host or None, source, PAC URL)."""
    out: dict[str, tuple[str | None, str | None, str, str | None]] = {}
    hosts = [h for hs in key_hosts.values() for h in hs]
    if settings.pac_url:
        pac_host = urlsplit(settings.pac_url).hostname
        decisions: Mapping[str, list[str]] = {}
        if pac_text is not None:
            from netcheck.pac import evaluate

            try:
                decisions = evaluate(pac_text, [f"https://{h}/" for h in hosts])
            except Exception as exc:  # a broken PAC file is a finding, not a crash
                log.warning("PAC evaluation failed: %s", exc)
        for h in hosts:
            first = (decisions.get(f"https://{h}/") or ["DIRECT"])[0]
            proxy = first.split(None, 1)[1] if first.upper().startswith(("PROXY ", "HTTPS ")) else None
            out[h] = (proxy, pac_host, "pac", settings.pac_url)
        return out
    for h in hosts:
        url = settings.proxy_for(f"https://{h}/")
        if url:
            parts = urlsplit(url if "://" in url else f"http://{url}")
            proxy = f"{parts.hostname}:{parts.port or 8080}"
            out[h] = (proxy, None, "environment" if settings.source == "environment" else "os", None)
    return out


def _split_tunnel(catalog: Catalog, optimize: Sequence[tuple[EndpointSet, Network]],
                  egress: Mapping[str, Egress], has_vpn: bool) -> tuple[tuple[SplitTunnelRow, ...], tuple[str, ...]]:
    per: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for s, n in optimize:
        e = egress.get(representative(n))
        if e is None:
            continue
        fam = "ipv6" if n.version == 6 else "ipv4"
        for wid in catalog.workloads_of(s):
            per.setdefault(wid, {"ipv4": [], "ipv6": []})[fam].append((str(n), e.kind))
    rows = []
    tunneled: dict[str, None] = {}
    for wid, fams in per.items():
        cls = {f: (classify_split([k for _, k in v]) if has_vpn else (NO_VPN if v else NOT_TESTED))
               for f, v in fams.items()}
        t = tuple(p for v in fams.values() for p, k in v if k == "vpn")
        tunneled.update(dict.fromkeys(t))
        rows.append(SplitTunnelRow(wid, cls["ipv4"], cls["ipv6"], t))
    return tuple(rows), tuple(tunneled)


def _on_site(vpn: tuple[str, ...], resolvers: Sequence[str], egress: Mapping[str, Egress],
             proxy_hosts: Mapping[str, list[str]], federation: str | None, wanted: Mapping[str, list[str]],
             profile: SiteProfile, interfaces: Sequence[Interface]) -> bool:
    """On the office network: a local address in the site's networks, or (no profile) site systems
    such as a proxy, PAC host or federation server reached directly at internal addresses."""
    if vpn:
        return False
    local = [a.split("/")[0] for i in interfaces if i.kind != "loopback" for a in i.addresses]
    if profile.networks:
        return any(profile.holds_address(a) for a in local)
    site_hosts = [a for v in proxy_hosts.values() for a in v]
    if federation:
        site_hosts.extend(wanted.get(federation, []))
    return any(is_internal(a) and a in egress and egress[a].kind != "vpn" for a in site_hosts)
