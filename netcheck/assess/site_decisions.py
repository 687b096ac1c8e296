"""The decisions about the laptop's network that the outage prediction starts from (pure).

Whether the laptop is on the office network, how what was seen at the office would be routed
from home with a VPN profile ("as from home"), which prefixes a split-tunnel profile excludes,
and Microsoft's split-tunnel class of each workload. :mod:`netcheck.site_facts` gathers the
facts (routes, proxy settings, PAC answers, DNS) and calls these; they take data and return
data, and are tested without a network (tests/test_site_decisions.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import replace

from netcheck.assess.outage import (
    Assumption,
    Dependency,
    FactsPatch,
    ProxyPath,
    Resolver,
    Route,
    SplitTunnelRow,
    World,
    is_internal,
)
from netcheck.m365.catalog import Catalog, EndpointSet, Network, in_networks
from netcheck.models import Category
from netcheck.platform.base import UNKNOWN, UNREACHABLE, Egress, Interface
from netcheck.platform.base import Route as TableRoute
from netcheck.site_profile import SiteProfile

#: Split-tunnel classes, as Microsoft's connectivity test names them, plus "no_route": the laptop has no
#: route to the family at all (e.g. IPv6 on an IPv4-only home), so it is neither direct nor tunneled.
SPLIT_OUT, SELECTIVE, TUNNELED, NO_VPN, NOT_TESTED = "split_out", "selective", "tunneled", "no_vpn", "not_tested"
NO_ROUTE = "no_route"



def route_of(egress: Egress) -> Route:
    """The outage model's view of one egress: a family with no route stays "unreachable"."""
    if egress.kind == UNREACHABLE:
        return Route(egress.destination, egress.interface, UNREACHABLE, egress.error or "no route")
    if egress.error is not None:
        return Route(egress.destination, egress.interface, UNKNOWN, egress.error)
    return Route(egress.destination, egress.interface, egress.kind)


def representative(network: Network) -> str:
    return str(network.network_address + (1 if network.num_addresses > 2 else 0))


def classify_split(kinds: Sequence[str]) -> str:
    """Microsoft's classes from the egress kinds of a workload's Optimize prefixes."""
    if not kinds:
        return NOT_TESTED
    usable = [k for k in kinds if k not in (UNREACHABLE, UNKNOWN)]
    if not usable:
        return NO_ROUTE if UNREACHABLE in kinds else NOT_TESTED
    kinds = usable
    tunneled = sum(1 for k in kinds if k == "vpn")
    if tunneled == 0:
        return SPLIT_OUT
    return TUNNELED if tunneled == len(kinds) else SELECTIVE


#: Stand-ins for the laptop at home, when the prediction is made on the office network.
HOME_UPLINK = "home connection"
VPN_PROFILE = "VPN (profile)"
#: The VPN profiles a laptop may use from home, when no site profile says which (label, mode, exclusions):
#: the two ends (no VPN, everything tunneled) and Microsoft's recommended split.
HOME_VPNS: tuple[tuple[str, str, tuple[str | int, ...]], ...] = (
    ("with no VPN from home", "none", ()),
    ("with a full tunnel from home", "full", ()),
    ("with a split tunnel excluding Optimize", "split", ("Optimize",)),
)


BOTH: tuple[str, ...] = ("ipv4", "ipv6")


def tunnel_families(mode: str) -> tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]:
    """How a tunnel of ``mode`` may treat the two families, which no site profile key states and the office
    network cannot show (label, families it carries, families its exclusions cover): both; IPv4 only (IPv6
    goes around it, as with many VPN clients); for a split tunnel, IPv4-only exclusions (IPv6 stays in)."""
    if mode == "none":
        return (("", BOTH, BOTH),)
    out: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
        ("", BOTH, BOTH), ("an IPv4-only tunnel (IPv6 goes around it)", ("ipv4",), BOTH)]
    if mode == "split":
        out.append(("exclusions for IPv4 only", BOTH, ("ipv4",)))
    return tuple(out)


def home_assumptions(office: tuple[list[Dependency], tuple[Resolver, ...]], catalog: Catalog,
                     profile: SiteProfile, home_router: Resolver) -> tuple[Assumption, ...]:
    """On the office network, what the prediction "as from home" hangs on: the VPN profile used from home
    (unless the profile states ``vpn_mode``) and the families its tunnel and exclusions cover (no profile
    key states them), and whether the VPN client keeps the home router's resolver.
    Each answer is a :class:`FactsPatch` (data: the report carries it)."""
    out: tuple[Assumption, ...] = ()
    stated = profile.vpn_mode is not None
    worlds: list[tuple[str, World]] = []
    for label, mode, exclude in (((f"with the stated {profile.vpn_mode} tunnel", profile.vpn_mode,
                                   profile.vpn_exclude),) if profile.vpn_mode is not None else HOME_VPNS):
        for how, families, excluded in tunnel_families(mode):
            deps, dns, vpn = as_from_home(*office, catalog, replace(profile, vpn_mode=mode, vpn_exclude=exclude),
                                          families, excluded)
            worlds.append((f"{label}, {how}" if how else label,
                           FactsPatch(vpn_interfaces=vpn, resolvers=dns, dependencies=tuple(deps))))
    if len(worlds) > 1:  # the VPN profile used from home cannot be read here
        out = (Assumption("the families the VPN tunnel from home carries and excludes" if stated
                          else "the VPN profile used away from the office", "" if stated else "vpn_mode",
                          tuple(worlds)),)
    return (*out, Assumption(
        "whether the VPN client also keeps the home network's resolver", "",
        (("with the home router's resolver as well", FactsPatch()),
         ("with only the resolvers it sets", FactsPatch(drop_resolver=home_router.address)))))


def excluded_networks(catalog: Catalog, exclude: Sequence[str | int]) -> tuple[Network, ...]:
    """The prefixes a split-tunnel profile sends direct: categories, set ids or prefixes."""
    out: dict[Network, None] = {}
    for item in exclude:
        if isinstance(item, int):
            out.update(dict.fromkeys(n for s in catalog.sets if s.id == item for n in s.ips))
        elif item in ("Optimize", "Allow", "Default"):
            out.update(dict.fromkeys(catalog.networks(Category(item))))
        else:
            out[ipaddress.ip_network(item, strict=False)] = None
    return tuple(out)


def as_from_home(deps: list[Dependency], resolvers: tuple[Resolver, ...], catalog: Catalog, profile: SiteProfile,
                 families: Sequence[str] = BOTH, exclude_families: Sequence[str] = BOTH,
                 ) -> tuple[list[Dependency], tuple[Resolver, ...], tuple[str, ...]]:
    """Re-route what was observed at the office as it would go from home with the VPN profile, whose tunnel
    carries ``families`` and whose exclusions cover ``exclude_families``."""
    mode = profile.vpn_mode or "none"
    excluded = excluded_networks(catalog, profile.vpn_exclude) if mode == "split" else ()

    def home(route: Route) -> Route:
        try:
            ip = ipaddress.ip_address(route.address)
        except ValueError:
            return route
        at_site = is_internal(route.address) or profile.holds_address(route.address)
        family = "ipv6" if ip.version == 6 else "ipv4"
        if mode == "none" or family not in families:  # no tunnel for it: the home connection, never the site
            return Route(route.address, HOME_UPLINK, "unreachable" if at_site else "physical")
        if not at_site and family in exclude_families and in_networks(route.address, excluded):
            return Route(route.address, HOME_UPLINK, "physical")
        return Route(route.address, VPN_PROFILE, "vpn")

    def proxy(p: ProxyPath) -> ProxyPath:
        return ProxyPath(p.source, p.proxy, home(p.proxy_route) if p.proxy_route else None, p.pac_url,
                         home(p.pac_route) if p.pac_route else None, pac_unread=p.pac_unread)

    moved = [Dependency(d.workload, d.role, d.host, tuple(home(r) for r in d.routes), proxy(d.proxy), d.resolved,
                        d.measured) for d in deps]
    at_home = (*(Resolver(r.address, home(r.route)) for r in resolvers),
               Resolver("the home router", Route("the home router", HOME_UPLINK, "physical")))
    return moved, at_home, ((VPN_PROFILE,) if mode != "none" else ())


def own_address(interfaces: Sequence[Interface]) -> str | None:
    """What a PAC file's myIpAddress() returns when it is evaluated "as if from home": the laptop's own
    IPv4 address on a physical (non-VPN) interface, as a browser there would see it; None (the PAC
    engine's own answer) when it has none. The home network's address cannot be known in advance."""
    for want_v4 in (True, False):
        for i in interfaces:
            if i.kind != "physical" or not i.is_up:
                continue
            for a in i.addresses:
                addr = a.split("/")[0]
                try:
                    ip = ipaddress.ip_address(addr.split("%")[0])
                except ValueError:
                    continue
                if (ip.version == 4) == want_v4 and not ip.is_link_local and not ip.is_loopback:
                    return addr
    return None


def split_tunnel(catalog: Catalog, optimize: Sequence[tuple[EndpointSet, Network]],
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
        cls = {f: (classify_split([k for _, k in v]) if has_vpn or classify_split([k for _, k in v]) == NO_ROUTE
                   else (NO_VPN if v else NOT_TESTED))
               for f, v in fams.items()}
        t = tuple(p for v in fams.values() for p, k in v if k == "vpn")
        tunneled.update(dict.fromkeys(t))
        rows.append(SplitTunnelRow(wid, cls["ipv4"], cls["ipv6"], t))
    return tuple(rows), tuple(tunneled)


def is_on_site(vpn: tuple[str, ...], resolvers: Sequence[str], egress: Mapping[str, Egress],
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


def office_resolver(vpn: tuple[str, ...], resolvers: Sequence[str], egress: Mapping[str, Egress],
                    interfaces: Sequence[Interface]) -> str | None:
    """Without a profile and without a tunnel up, a sign that this may be an organisation's network, not a
    home: the first resolver at an internal address beyond the laptop's own networks, reached directly
    (None: no such resolver).

    A home router is its network's resolver (on the laptop's own link) or hands out its ISP's public ones;
    an office's DHCP hands out resolvers in a server network of their own, reached through a router, as
    directory servers are. It is a sign, not proof (a home behind two routers looks the same), so the
    caller hedges over it: the place the laptop is in is a question it cannot answer alone."""
    if vpn:
        return None
    on_link = _on_link(interfaces)  # where the OS gives prefix lengths; else the route's next hop tells
    for address in resolvers:
        e = egress.get(address)
        if (e is not None and is_internal(address) and e.kind not in ("vpn", "loopback", UNREACHABLE, UNKNOWN)
                and _next_hop(e) and not in_networks(address, on_link)):
            return address
    return None


def _next_hop(e: Egress) -> bool:
    """Is ``e`` reached through a router (a next hop that is an address other than the destination), not on
    the laptop's own link? Linux and macOS give no next hop on-link ("link#11" on macOS), Windows 0.0.0.0."""
    hop = (e.gateway or "").split("%")[0]
    if not _is_interface_address(hop) or "/" in hop:
        return False
    ip = ipaddress.ip_address(hop)
    return not ip.is_unspecified and ip != ipaddress.ip_address(e.destination.split("%")[0])


def place_assumption(resolver: str, seen: FactsPatch) -> Assumption:
    """What the prediction hangs on when only :func:`office_resolver` says this may be an office: the
    office's answer (the base facts, as from home) or another network's (the paths as ``seen``)."""
    return Assumption(f"whether this network is one of your organisation's offices (its resolver {resolver} is at "
                      "a private address beyond your own network, as an office's are) or another network, such as "
                      "a home", "networks",
                      (("if it is an office", FactsPatch()),
                       ("if it is another network", replace(seen, on_site=False))))


def _on_link(interfaces: Sequence[Interface]) -> list[Network]:
    """The networks the laptop's own interfaces are on."""
    return [ipaddress.ip_interface(a.split("%")[0]).network for i in interfaces for a in i.addresses
            if _is_interface_address(a)]


def vpn_gateway(routes: Sequence[TableRoute], interfaces: Sequence[Interface],
                published: Sequence[Network] = ()) -> str | None:
    """The VPN concentrator's address, read from the routing table without admin rights, or None.

    While a tunnel is up, most VPN clients (OpenVPN, AnyConnect, GlobalProtect, Windows' own) add a host
    route to their server through the physical interface, so the tunnel's own packets do not enter it.
    The one host route (a /32 or /128) with a next hop, through an interface that is not the VPN's, to an
    address that is not the laptop's own nor in Microsoft's ``published`` ranges (a split tunnel's
    exclusions may be host routes), is taken as that server's. None when there is no tunnel, no such
    route (WireGuard marks its packets instead: its endpoint is not readable unprivileged) or several.
    """
    up = {i.name: i for i in interfaces if i.is_up}
    if not any(i.kind == "vpn" for i in up.values()):
        return None
    on_link = _on_link(interfaces)
    found: dict[str, None] = {}
    for r in routes:
        address, _, length = r.destination.partition("/")
        if not (_is_interface_address(address) and _is_interface_address((r.gateway or "").split("%")[0])):
            continue  # not an address, or no next hop (on-link, a MAC address, "link#11")
        ip, hop = ipaddress.ip_address(address), ipaddress.ip_address((r.gateway or "").split("%")[0])
        via = up.get(r.interface or "")
        if (r.type != "unicast" or length != str(ip.max_prefixlen) or via is None or via.kind == "vpn"
                or hop.is_unspecified or ip == hop or ip.is_multicast or ip.is_link_local or ip.is_loopback
                or in_networks(address, (*on_link, *published))):
            continue
        found[str(ip)] = None
    return next(iter(found)) if len(found) == 1 else None


def _is_interface_address(text: str) -> bool:
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return False
    return True
