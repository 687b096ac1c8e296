"""The decisions site_facts no longer makes itself: on the office network or not, routes as from home,
split-tunnel exclusions. Hand-built data, no network; and the module imports nothing that does I/O."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

from netcheck.assess.outage import Dependency, FactsPatch, Fate, ProxyPath, Resolver, Route, SiteFacts, predict
from netcheck.assess.site_decisions import (
    HOME_UPLINK,
    VPN_PROFILE,
    as_from_home,
    excluded_networks,
    home_assumptions,
    is_on_site,
    office_resolver,
    place_assumption,
)
from netcheck.m365.catalog import load_catalog
from netcheck.models import Category
from netcheck.platform.base import Egress, Interface
from netcheck.site_profile import SiteProfile

OFFICE = SiteProfile(name="Paris", networks=(ipaddress.ip_network("10.20.0.0/16"),))


def iface(name: str, kind: str, *addresses: str) -> Interface:
    return Interface(name, kind, None, (), addresses, True)


def egress(address: str, kind: str = "physical", via: str | None = None) -> Egress:
    return Egress(address, "eth0", None, via, kind, None, "ip route get", None)


def test_on_site_by_the_profiles_networks_or_by_site_systems_reached_directly() -> None:
    lan = [iface("eth0", "physical", "10.20.0.100/24")]
    home = [iface("eth0", "physical", "192.168.1.10/24")]
    assert is_on_site((), [], {}, {}, None, {}, OFFICE, lan)
    assert not is_on_site((), [], {}, {}, None, {}, OFFICE, home)
    assert not is_on_site(("wg0",), [], {}, {}, None, {}, OFFICE, lan)  # a VPN up: away from the office
    # no profile: a proxy at an internal address, reached without the VPN
    proxy = {"proxy.corp.example": ["10.9.0.8"]}
    assert is_on_site((), [], {"10.9.0.8": egress("10.9.0.8")}, proxy, None, {}, SiteProfile(), home)
    assert not is_on_site((), [], {"10.9.0.8": egress("10.9.0.8", "vpn")}, proxy, None, {}, SiteProfile(), home)
    adfs = {"adfs.corp.example": ["10.9.0.20"]}
    assert is_on_site((), [], {"10.9.0.20": egress("10.9.0.20")}, {}, "adfs.corp.example", adfs, SiteProfile(), home)


def test_a_private_resolver_beyond_the_laptops_own_network_is_an_offices_sign() -> None:
    """A home router is its own network's resolver (or hands out its ISP's public ones); an office hands out
    resolvers in a server network, reached through a router."""
    lan = [iface("eth0", "physical", "10.20.0.100/24")]
    home = [iface("eth0", "physical", "192.168.1.10/24")]
    bare = [iface("eth0", "physical", "192.168.1.10")]  # Linux's `ip -j addr` as read: no prefix length

    def via(address: str, hop: str | None, kind: str = "physical") -> dict[str, Egress]:
        return {address: egress(address, kind, hop)}

    assert office_resolver((), ["10.20.1.53"], via("10.20.1.53", "10.20.0.1"), lan) == "10.20.1.53"
    # the home router: on the laptop's own link, no next hop (Linux, macOS "link#11", Windows 0.0.0.0)
    for hop in (None, "link#11", "0.0.0.0", "192.168.1.1"):
        assert office_resolver((), ["192.168.1.1"], via("192.168.1.1", hop), bare) is None, hop
    assert office_resolver((), ["192.168.1.1"], via("192.168.1.1", "192.168.1.254"), home) is None  # on-link
    assert office_resolver((), ["9.9.9.9"], via("9.9.9.9", "192.168.1.1"), home) is None  # a public resolver
    assert office_resolver((), ["fd00:1::53"], via("fd00:1::53", "fe80::1%eth0"), home) == "fd00:1::53"
    assert office_resolver(("wg0",), ["10.20.1.53"], via("10.20.1.53", "10.20.0.1"), lan) is None
    assert office_resolver((), ["10.20.1.53"], via("10.20.1.53", "10.66.0.1", "vpn"), lan) is None
    assert office_resolver((), ["127.0.0.53"], via("127.0.0.53", None, "loopback"), lan) is None


def test_maybe_an_office_is_hedged_between_the_office_and_another_network() -> None:
    """Without a profile, a laptop whose only sign of an office is its resolver: the site's loss is
    predicted as from the office (the person goes home, the VPN carries the site's part) and as from
    another network (nothing here depends on the site); where they differ the fate is uncertain, with the
    place named as the question, never a confident "you would be fine"."""
    catalog = load_catalog("Worldwide")
    intranet = Dependency("exchange", "service", "outlook.office365.com",
                          (Route("10.20.7.7", "eth0", "physical"),))
    dns = (Resolver("10.20.1.53", Route("10.20.1.53", "eth0", "physical")),)
    office = ([intranet], dns)
    full = SiteProfile(vpn_mode="full")
    deps, home_dns, vpn = as_from_home(*office, catalog, full)
    seen = FactsPatch(vpn_interfaces=(), resolvers=dns, dependencies=(intranet,))
    facts = SiteFacts(True, vpn, home_dns, tuple(deps), office=seen)
    place = place_assumption("10.20.1.53", seen)
    assert place.settle == "networks" and "10.20.1.53" in place.question
    told = predict(facts, full, ("exchange",), {}, ())
    assert told.workloads[0].if_vpn_stays is Fate.FAILS  # as an office: the site's part is lost from home
    hedged = predict(facts, full, ("exchange",), {}, (place,))
    w = hedged.workloads[0]
    assert (w.if_vpn_stays, w.possible["stays"]) == (Fate.UNCERTAIN, (Fate.WORKS, Fate.FAILS))
    assert any(place.question in c.text for c in w.causes)
    assert hedged.notes and hedged.notes[0].startswith("This looks like an office network")


def test_excluded_networks_take_categories_set_ids_and_prefixes() -> None:
    catalog = load_catalog("Worldwide")
    optimize = excluded_networks(catalog, ["Optimize"])
    assert optimize and set(optimize) == set(catalog.networks(Category.OPTIMIZE))
    by_id = excluded_networks(catalog, [11])
    assert set(by_id) == {n for s in catalog.sets if s.id == 11 for n in s.ips}
    assert excluded_networks(catalog, ["203.0.113.0/24"]) == (ipaddress.ip_network("203.0.113.0/24"),)


def test_as_from_home_routes_what_the_office_saw_as_the_vpn_profile_would() -> None:
    catalog = load_catalog("Worldwide")
    teams = next(n for s in catalog.sets if s.id == 11 for n in s.ips if n.version == 4)
    teams_addr = str(teams.network_address + 1)
    office_route = Route(teams_addr, "eth0", "physical")
    adfs = Dependency("identity", "federation", "adfs.corp.example", (Route("10.20.0.20", "eth0", "physical"),))
    media = Dependency("teams_media", "media", "relay", (office_route,),
                       ProxyPath("pac", None, None, "http://pac/p.pac", Route("10.20.0.9", "eth0", "physical")))
    dns = (Resolver("10.20.0.53", Route("10.20.0.53", "eth0", "physical")),)

    deps, resolvers, vpn = as_from_home([adfs, media], dns, catalog, SiteProfile(vpn_mode="none"))
    assert vpn == () and deps[0].routes[0].kind == "unreachable" and deps[1].routes[0].kind == "physical"
    assert deps[1].proxy.pac_route is not None and deps[1].proxy.pac_route.kind == "unreachable"
    assert resolvers[-1].address == "the home router" and resolvers[-1].route.interface == HOME_UPLINK

    deps, _, vpn = as_from_home([adfs, media], dns, catalog, SiteProfile(vpn_mode="full"))
    assert vpn == (VPN_PROFILE,) and [d.routes[0].kind for d in deps] == ["vpn", "vpn"]

    split = SiteProfile(vpn_mode="split", vpn_exclude=("Optimize",))
    deps, _, _ = as_from_home([adfs, media], dns, catalog, split)
    assert [d.routes[0].kind for d in deps] == ["vpn", "physical"]  # the site through the tunnel, Teams direct


def test_from_the_office_the_families_a_stated_tunnel_carries_are_an_assumption() -> None:
    """A told profile says "split, excluding Optimize" but no key says whether the tunnel carries IPv6: with
    an IPv4-only tunnel, IPv6 goes around it and sign-in keeps working if the VPN stays (the generated
    matrix found "fails" where the truth was "works")."""
    catalog = load_catalog("Worldwide")
    login = next(n for s in catalog.sets if s.id == 56 for n in s.ips if n.version == 6)
    login_v4 = next(n for s in catalog.sets if s.id == 56 for n in s.ips if n.version == 4)
    routes = (Route(str(login_v4.network_address + 1), "eth0", "physical"),
              Route(str(login.network_address + 1), "eth0", "physical"))
    office = ([Dependency("identity", "service", "login.microsoftonline.com", routes)],
              (Resolver("10.20.0.53", Route("10.20.0.53", "eth0", "physical")),))
    split = SiteProfile(vpn_mode="split", vpn_exclude=("Optimize",))
    deps, dns, vpn = as_from_home(*office, catalog, split)
    facts = SiteFacts(True, vpn, dns, tuple(deps), home_link_slow=False)
    assumptions = home_assumptions(office, catalog, split, dns[-1])
    assert assumptions[0].question == "the families the VPN tunnel from home carries and excludes"
    w = predict(facts, split, ("identity",), {}, assumptions).workloads[0]
    assert (w.if_vpn_stays, w.possible["stays"]) == (Fate.UNCERTAIN, (Fate.WORKS, Fate.FAILS))
    v4_only, _, _ = as_from_home(*office, catalog, split, ("ipv4",))
    assert [r.kind for r in v4_only[0].routes] == ["vpn", "physical"]
    full = SiteProfile(vpn_mode="none")
    assert home_assumptions(office, catalog, full, dns[-1])[0].question != assumptions[0].question


def test_the_decisions_import_nothing_that_does_io() -> None:
    code = ("import sys, netcheck.assess.site_decisions; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'socket', 'subprocess', 'httpx', 'dns', 'psutil', 'asyncio'} or m == 'netcheck.site_facts'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- the VPN concentrator's host route ----------------------------------------------------------------------------

def test_the_vpn_concentrators_host_route_is_read_from_each_oss_routing_table() -> None:
    """Captured tables: macOS (`netstat -rn`, a split tunnel on utun4) and Windows (Get-NetRoute, GlobalProtect)
    keep the concentrator 203.0.113.10 on Wi-Fi with a host route; Linux's WireGuard marks its packets (table
    51820), so there is none to read and the answer stays unknown."""
    from netcheck.assess.site_decisions import vpn_gateway
    from netcheck.platform import linux, macos, windows
    from tests.platform.plat_support import read_fixture

    mac = macos.parse_netstat_rn(read_fixture("macos/netstat-rn.txt"))
    mac_ifaces = (iface("en0", "physical", "192.168.68.57/22"), iface("utun4", "vpn", "10.251.1.7/32"))
    assert vpn_gateway(mac, mac_ifaces) == "203.0.113.10"
    assert vpn_gateway(mac, mac_ifaces[:1]) is None  # no tunnel up: a host route is nobody's concentrator
    win = windows.parse_routes(read_fixture("windows/get-netroute.json"))
    win_ifaces = (iface("Wi-Fi", "physical", "192.168.1.20/24"), iface("Ethernet 2", "vpn", "10.8.0.5/24"))
    assert vpn_gateway(win, win_ifaces) == "203.0.113.10"
    assert vpn_gateway(win, win_ifaces, (ipaddress.ip_network("203.0.113.0/24"),)) is None  # a published range
    wg = linux.parse_ip_route_show_json(read_fixture("linux/ip-j-4-route-show-all.json"), 4)
    assert vpn_gateway(wg, (iface("eth0", "physical", "192.0.2.10/24"), iface("wg0", "vpn", "10.66.0.2/32"))) is None


def test_two_host_routes_through_the_physical_interface_name_no_concentrator() -> None:
    from netcheck.assess.site_decisions import vpn_gateway
    from netcheck.platform.base import Route as TableRoute

    ifaces = (iface("eth0", "physical", "192.168.1.20/24"), iface("tun0", "vpn", "10.8.0.5/24"))
    gw = TableRoute("198.51.100.7/32", "192.168.1.1", "eth0")
    assert vpn_gateway((gw, TableRoute("0.0.0.0/1", None, "tun0")), ifaces) == "198.51.100.7"
    assert vpn_gateway((gw, TableRoute("203.0.113.9/32", "192.168.1.1", "eth0")), ifaces) is None
    on_link = TableRoute("192.168.1.1/32", "192.168.1.254", "eth0")  # a neighbour on the LAN
    assert vpn_gateway((gw, on_link, TableRoute("198.51.100.8/32", "10.8.0.1", "tun0")), ifaces) == "198.51.100.7"
