"""Sites inferred without a profile (grouping by network) and the hedged prediction over them; and the
two-site told fixes (a dual-stack internal host, a VPN that drops while its site is up). No network."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace

from netcheck.assess.outage import (
    CauseKind,
    Dependency,
    Fate,
    ModelInput,
    ProxyPath,
    Resolver,
    Route,
    SiteFacts,
    predict,
)
from netcheck.assess.site_cases import known_sites, predict_case, site_cases
from netcheck.assess.site_infer import QUESTION, VPN_END, group_network, infer_sites, inferred
from netcheck.site_profile import SiteProfile

W = ("exchange", "identity")
NAMES = {"exchange": "Exchange Online (Outlook)", "identity": "Sign-in"}
HOME_DNS = Resolver("192.168.1.1", Route("192.168.1.1", "eth0", "physical"))


def tunnel(addr: str) -> Route:
    return Route(addr, "wg0", "vpn")


def direct(addr: str) -> Route:
    return Route(addr, "eth0", "physical")


OFFICE_DNS = Resolver("10.20.1.53", tunnel("10.20.1.53"))
EXCHANGE = Dependency("exchange", "service", "outlook.office365.com", (direct("198.18.0.10"),))
LOGIN = Dependency("identity", "service", "login.microsoftonline.com", (direct("198.18.2.1"),))
#: AD FS in the datacentre, dual stack, both families through the office's tunnel.
ADFS = Dependency("identity", "federation", "adfs.corp.example", (tunnel("10.30.1.43"), tunnel("2001:db8:d0ff::43")))


def lab_like(*deps: Dependency, vpn: bool = True) -> SiteFacts:
    return SiteFacts(False, ("wg0",) if vpn else (), (OFFICE_DNS, HOME_DNS), deps or (EXCHANGE, LOGIN, ADFS))


def nets(site: SiteProfile) -> list[str]:
    return [str(n) for n in site.networks]


# --- the grouping rule ---------------------------------------------------------------------------------------------

def test_internal_v4_by_16_ula_by_48_public_through_the_tunnel_by_24_and_nothing_direct() -> None:
    assert str(group_network("10.20.1.53", tunneled=True)) == "10.20.0.0/16"
    assert str(group_network("172.16.9.1", tunneled=False)) == "172.16.0.0/16"
    assert str(group_network("fd12:3456:789a:1::5", tunneled=True)) == "fd12:3456:789a::/48"
    assert str(group_network("203.0.113.7", tunneled=True)) == "203.0.113.0/24"
    assert str(group_network("2001:db8:d0ff::43", tunneled=True)) == "2001:db8:d0ff::/48"
    assert group_network("203.0.113.7", tunneled=False) is None  # public and direct: not a site's
    assert group_network("127.0.0.1", tunneled=True) is None and group_network("not an address", True) is None


def test_systems_fall_into_one_inferred_site_per_network_and_a_hosts_addresses_join() -> None:
    sites = infer_sites(lab_like())
    assert [s.name for s in sites] == ["unnamed site 10.20.0.0/16", "unnamed site 10.30.0.0/16", VPN_END]
    assert nets(sites[0]) == ["10.20.0.0/16"] and nets(sites[2]) == []  # where the VPN ends: unseen
    assert nets(sites[1]) == ["10.30.0.0/16", "2001:db8:d0ff::/48"]  # AD FS's two families: one site
    assert all(not s.from_file for s in sites) and inferred(sites)
    proxy = ProxyPath(source="environment", proxy="proxy.corp.example:3128", proxy_route=tunnel("10.30.1.31"))
    with_proxy = infer_sites(lab_like(replace(EXCHANGE, proxy=proxy), LOGIN, ADFS))
    assert len(with_proxy) == 3 and nets(with_proxy[1])[0] == "10.30.0.0/16"  # the proxy joins the DC


def test_public_addresses_alone_are_no_site_a_cloud_idp_stays_an_assumption() -> None:
    """cloud-idp-split without a profile: the federation host is on the internet (reached through the
    tunnel), which may be the site's or a cloud service's. It is no inferred site of its own: one internal
    group is left, and the site where the VPN ends beside it."""
    idp = Dependency("identity", "federation", "sts.cloudidp.example",
                     (tunnel("198.19.255.43"), tunnel("2001:db8:fc1d::43")))
    assert [s.name for s in infer_sites(lab_like(EXCHANGE, LOGIN, idp))] == ["unnamed site 10.20.0.0/16", VPN_END]
    # beside two internal sites it is still no site of its own
    sites = infer_sites(lab_like(EXCHANGE, LOGIN, ADFS, idp))
    assert [s.name for s in sites] == ["unnamed site 10.20.0.0/16", "unnamed site 10.30.0.0/16", VPN_END]


def test_one_ipv4_only_and_one_ipv6_only_group_are_one_dual_stack_site() -> None:
    v6_dns = Resolver("2001:db8:c0ff::53", tunnel("2001:db8:c0ff::53"))
    one = SiteFacts(False, ("wg0",), (OFFICE_DNS, v6_dns, HOME_DNS), (EXCHANGE, LOGIN))
    assert [nets(s) for s in infer_sites(one)] == [["10.20.0.0/16", "2001:db8:c0ff::/48"], []]  # one seen site
    two = SiteFacts(False, ("wg0",), (OFFICE_DNS, v6_dns, HOME_DNS), (EXCHANGE, LOGIN, ADFS))
    sites = infer_sites(two)  # AD FS joins the DC's families; the office's two resolvers pair up
    assert [nets(s) for s in sites] == [["10.30.0.0/16", "2001:db8:d0ff::/48"], ["10.20.0.0/16", "2001:db8:c0ff::/48"],
                                        []]
    other = Resolver("10.40.0.53", tunnel("10.40.0.53"))
    three = SiteFacts(False, ("wg0",), (OFFICE_DNS, other, v6_dns), (EXCHANGE, LOGIN))
    assert len(infer_sites(three)) == 4  # two IPv4 groups: which one the IPv6 one belongs to is unknown


def test_a_proxy_hosts_other_addresses_join_its_networks() -> None:
    """The proxy is reached on its IPv6 address; its IPv4 one (host_addresses) puts both in one site, so the
    office's lone IPv4 resolver is not paired with the datacentre's IPv6 network."""
    proxy = ProxyPath(source="environment", proxy="proxy.corp.example:3128", proxy_route=tunnel("2001:db8:d0ff::31"))
    base = SiteFacts(False, ("wg0",), (OFFICE_DNS, HOME_DNS), (replace(EXCHANGE, proxy=proxy), LOGIN))
    assert len(infer_sites(base)) == 2  # no address tells the proxy's network from the resolver's site apart
    facts = replace(base, host_addresses=(("proxy.corp.example", ("10.30.1.31", "2001:db8:d0ff::31")),))
    assert [nets(s) for s in infer_sites(facts)] == [["10.20.0.0/16"], ["10.30.0.0/16", "2001:db8:d0ff::/48"], []]


def test_one_group_without_a_vpn_or_none_infers_nothing_and_a_home_resolver_is_no_site() -> None:
    assert infer_sites(lab_like(EXCHANGE, LOGIN, vpn=False)) == ()  # only the office's resolver, no tunnel
    assert infer_sites(SiteFacts(False, ("wg0",), (HOME_DNS,), (EXCHANGE, LOGIN))) == ()  # nothing seen
    assert infer_sites(SiteFacts(False, (), (HOME_DNS,), (EXCHANGE, LOGIN))) == ()
    told = (SiteProfile(name="Paris", from_file=True), SiteProfile(name="unnamed site 10.0.0.0/16"))
    assert not inferred(told)


# --- the hedged prediction -----------------------------------------------------------------------------------------

def model() -> ModelInput:
    facts = lab_like()
    return ModelInput(facts, SiteProfile(), infer_sites(facts), W)


def row(p: object, wid: str) -> object:
    return next(w for w in p.workloads if w.id == wid)  # type: ignore[attr-defined]


def test_where_the_vpn_concentrator_is_cannot_be_read_so_the_office_case_is_uncertain() -> None:
    m = model()
    office, dc, _ = (s.name for s in m.sites)
    p = predict_case(m, {office})
    ident = row(p, "identity")
    # stays: black-holed if the concentrator is at the office, through it otherwise
    assert ident.if_vpn_stays is Fate.UNCERTAIN and ident.possible["stays"] == (Fate.WORKS, Fate.FAILS)
    assert QUESTION in ident.assumptions
    assert any(c.kind is CauseKind.ASSUMPTION and "vpn_gateways" in c.subject for c in ident.causes_by["stays"])
    # drops: if the concentrator is at the office the tunnel is gone and AD FS (an internal address at the
    # DC) is out of reach; at the DC the tunnel stays (its gateway's site is up) and AD FS works
    assert ident.if_vpn_drops is Fate.UNCERTAIN and ident.possible["drops"] == (Fate.WORKS, Fate.FAILS)
    assert row(p, "exchange").if_vpn_stays is Fate.WORKS  # nothing it needs hangs on the concentrator
    lost = row(predict_case(m, {dc}), "identity")
    assert (lost.if_vpn_stays, lost.if_vpn_drops) == (Fate.FAILS, Fate.FAILS)  # AD FS is there, whatever


def test_every_inferred_site_down_still_hedges_a_concentrator_at_none_of_them() -> None:
    every = predict_case(model(), None)
    assert row(every, "identity").if_vpn_stays is Fate.FAILS  # AD FS is down in every answer
    assert row(every, "exchange").if_vpn_stays is Fate.WORKS  # the home resolver answers
    assert every.down == tuple(sorted(s.name for s in model().sites))


def test_without_a_vpn_nothing_hangs_on_the_concentrator() -> None:
    facts = SiteFacts(True, (), (Resolver("10.20.1.53", direct("10.20.1.53")),),
                      (EXCHANGE, LOGIN, Dependency("identity", "federation", "adfs.corp.example",
                                                   (direct("10.30.1.43"),))))
    m = ModelInput(facts, SiteProfile(), infer_sites(facts), W)
    assert len(m.sites) == 2
    assert all(QUESTION not in w.assumptions for w in predict_case(m, {m.sites[0].name}).workloads)


def test_cases_views_and_what_if_for_inferred_sites() -> None:
    from netcheck.assess.outage import assess_outage
    from netcheck.assess.what_if import what_if
    from netcheck.render.json import report_to_dict
    from tests.sample_report import sample_report

    m = model()
    everything = predict_case(m, None)
    views = known_sites(m, everything)
    assert [(v.name, v.told) for v in views] == [(s.name, False) for s in m.sites]
    assert views[1].networks[:2] == ("10.30.0.0/16", "2001:db8:d0ff::/48")
    assert (views[2].networks, views[2].systems) == ((), (("vpn", "wg0"),))  # where the VPN ends: no networks
    cases = site_cases(m, views, NAMES, list(W), everything)
    office, dc, end = (s.name for s in m.sites)
    assert [c.down for c in cases] == [(office,), (dc,), (end,), (office, dc), (office, dc, end)]
    assert "you might lose Sign-in" in cases[0].answer
    section = replace(assess_outage(everything, NAMES, list(W), several_sites=True), sites=views, model=m,
                      cases=cases)
    data = json.loads(json.dumps(report_to_dict(replace(sample_report(), outage=section))))
    for case in data["outage"]["cases"]:
        rows = what_if(data, case["down"])
        assert [(r["id"], r["stays"], r["drops"]) for r in rows] == [
            (w["id"], w["if_vpn_stays"], w["if_vpn_drops"]) for w in case["workloads"]]


def test_site_down_takes_the_inferred_sites_names_as_the_report_shows_them() -> None:
    """``netcheck check --site-down NAME`` without a profile: the names are the inferred sites' (any case),
    and the one case is the same prediction as that site's case among all of them."""
    import pytest

    from netcheck.assess.site_cases import one_case, site_down_names
    from netcheck.errors import ConfigError

    m = model()
    office, dc, _ = (s.name for s in m.sites)
    assert site_down_names([" Unnamed Site 10.30.0.0/16 ", office], m.sites) == (dc, office)
    with pytest.raises(ConfigError, match="the sites are: unnamed site 10.20.0.0/16, unnamed site 10.30.0.0/16"):
        site_down_names(["Paris"], m.sites)
    case = one_case(m, site_down_names([dc.upper()], m.sites), NAMES, list(W))
    assert case.down == (dc,) and case.prediction == predict_case(m, {dc})
    assert case.answer.startswith(f"If {dc} went down: you would lose Sign-in")


# --- the told misses of the two-site lab ---------------------------------------------------------------------------

PARIS = SiteProfile(name="Paris", networks=(ipaddress.ip_network("10.20.0.0/16"),),
                    vpn_gateways=("vpn.paris.example",), from_file=True)
DUBLIN = SiteProfile(name="Dublin DC", networks=(ipaddress.ip_network("10.30.0.0/16"),
                                                 ipaddress.ip_network("2001:db8:d0ff::/48")), from_file=True)


def test_a_dual_stack_internal_host_is_out_of_reach_in_both_families_once_the_vpn_drops() -> None:
    """dc-adfs, office down, VPN drops: AD FS's IPv6 address is not internal, but the host is (its IPv4
    one is): its name is in the organisation's DNS, which went with the tunnel."""
    p = predict(lab_like(), PARIS, W, sites=(PARIS, DUBLIN), down={"Paris"})
    ident = row(p, "identity")
    assert ident.if_vpn_drops is Fate.FAILS
    assert {(c.kind, c.subject) for c in ident.causes_by["drops"]} == {(CauseKind.VPN_ONLY, "adfs.corp.example")}


def test_a_proxy_with_an_internal_address_is_out_of_reach_once_the_vpn_drops() -> None:
    """dc-proxy-office-vpn, office down, VPN drops: the DC's proxy, reached on its IPv6 address through the
    office's tunnel, is a host with an internal address too."""
    proxy = ProxyPath(source="environment", proxy="proxy.corp.example:3128",
                      proxy_route=tunnel("2001:db8:d0ff::31"))
    dep = Dependency("exchange", "service", "outlook.office365.com", (tunnel("198.18.0.10"),), proxy)
    facts = SiteFacts(False, ("wg0",), (OFFICE_DNS, HOME_DNS), (dep, LOGIN),
                      internal_hosts=frozenset({"proxy.corp.example"}))
    p = predict(facts, PARIS, W, sites=(PARIS, DUBLIN), down={"Paris"})
    assert row(p, "exchange").if_vpn_drops is Fate.FAILS


def test_the_tunnel_stays_in_both_behaviours_while_its_gateways_site_is_up() -> None:
    """The VPN behaviours say what the client does when its gateway's site is lost. Dublin DC down,
    Paris (the gateway) up: the tunnel is there in both, and AD FS at Paris's internal address works."""
    adfs = Dependency("identity", "federation", "adfs.corp.example", (tunnel("10.20.1.43"),))
    p = predict(lab_like(EXCHANGE, LOGIN, adfs), PARIS, W, sites=(PARIS, DUBLIN), down={"Dublin DC"})
    assert (row(p, "identity").if_vpn_stays, row(p, "identity").if_vpn_drops) == (Fate.WORKS, Fate.WORKS)

def test_a_hosts_other_address_is_at_the_site_that_holds_one_of_them() -> None:
    """AD FS at Dublin on 10.30.1.43 through the tunnel, and on a public IPv6 address the profile's networks
    do not list, reached direct: one machine, one site, so losing Dublin loses both families."""
    adfs = Dependency("identity", "federation", "adfs.corp.example",
                      (tunnel("10.30.1.43"), direct("2001:db8:d1ff::43")))
    dublin = replace(DUBLIN, networks=(ipaddress.ip_network("10.30.0.0/16"),))
    p = predict(lab_like(EXCHANGE, LOGIN, adfs), PARIS, W, sites=(PARIS, dublin), down={"Dublin DC"})
    assert (row(p, "identity").if_vpn_stays, row(p, "identity").if_vpn_drops) == (Fate.FAILS, Fate.FAILS)
    assert not any("2001:db8:d1ff::43" in e and "does not depend" in e for e in row(p, "identity").evidence)
    up = predict(lab_like(EXCHANGE, LOGIN, adfs), PARIS, W, sites=(PARIS, dublin), down={"Paris"})
    assert row(up, "identity").if_vpn_drops is Fate.WORKS  # the IPv6 address is still there once the VPN drops


# --- a laptop on an inferred site's network ------------------------------------------------------------------------

def at_a_branch_of_the_dc() -> SiteFacts:
    """On a LAN numbered out of the datacentre's block (no VPN), its resolver in the DC, AD FS at the office:
    the paths seen there (office), and as from home (internal addresses out of reach, the home router)."""
    from netcheck.assess.outage import FactsPatch

    out_of_reach = Route("10.30.1.53", "home connection", "unreachable")
    adfs_home = Dependency("identity", "federation", "adfs.corp.example",
                           (Route("10.20.1.43", "home connection", "unreachable"),))
    router = Resolver("the home router", Route("the home router", "home connection", "physical"))
    office = FactsPatch(vpn_interfaces=(), resolvers=(Resolver("10.30.1.53", direct("10.30.1.53")),),
                        dependencies=(EXCHANGE, LOGIN, replace(adfs_home, routes=(direct("10.20.1.43"),))))
    return SiteFacts(True, (), (Resolver("10.30.1.53", out_of_reach), router), (EXCHANGE, LOGIN, adfs_home),
                     office=office, home_link_slow=False)


def test_losing_the_inferred_site_a_laptop_stands_on_is_hedged_between_home_and_cut_off() -> None:
    """Without a profile, a network numbered out of the DC's block may be the DC's own (the person works from
    home) or a branch behind it (the person stays there, cut off): both answers, the question named."""
    from netcheck.assess.site_infer import place_question

    facts = at_a_branch_of_the_dc()
    sites = infer_sites(facts)
    office, dc = "unnamed site 10.20.0.0/16", "unnamed site 10.30.0.0/16"
    assert sorted(s.name for s in sites) == [office, dc]
    m = ModelInput(replace(facts, site_here=dc), SiteProfile(), sites, W)
    for down in ({dc}, {office, dc}):
        ex = row(predict_case(m, down), "exchange")
        assert ex.if_vpn_stays is Fate.UNCERTAIN and ex.possible["stays"] == (Fate.WORKS, Fate.FAILS)
        assert place_question(dc) in ex.assumptions
    cut = predict(replace(m.facts, stays_cut_off=True), SiteProfile(), W, sites=sites, down={dc})
    assert all(w.if_vpn_stays is Fate.FAILS for w in cut.workloads)
    assert any(f"you stay at {dc}, which is down: cut off" in e for e in row(cut, "exchange").evidence)
    lost_office = predict_case(m, {office})  # the DC, where the laptop is, stays up: no hedge, it stays
    assert row(lost_office, "exchange").if_vpn_stays is Fate.WORKS
    assert row(lost_office, "identity").if_vpn_stays is Fate.FAILS  # AD FS is at the office


def test_a_branch_told_as_a_site_of_its_own_stays_at_the_branch_and_has_a_case_for_every_other_site() -> None:
    """The same branch with a profile: it is a site whose internet goes out through the DC. Losing the DC, or
    the DC and the office, the person stays at the branch and loses everything; losing the branch itself,
    they work from home. The cases: each site, every site but the branch, every site."""
    from netcheck.assess.outage import SiteView

    branch = SiteProfile(name="Branch", networks=(ipaddress.ip_network("10.30.0.0/24"),), internet_via="Dublin DC",
                         from_file=True)
    dublin = replace(DUBLIN, networks=(ipaddress.ip_network("10.30.0.0/16"),))
    sites = (PARIS, dublin, branch)
    m = ModelInput(replace(at_a_branch_of_the_dc(), site_here="Branch"), branch, sites, W)
    for down in ({"Dublin DC"}, {"Paris", "Dublin DC"}):
        assert all(w.if_vpn_stays is Fate.FAILS for w in predict_case(m, down).workloads)
    assert row(predict_case(m, {"Paris", "Dublin DC", "Branch"}), "exchange").if_vpn_stays is Fate.WORKS  # home
    views = tuple(SiteView(s.name, True, (), ()) for s in sites)
    cases = site_cases(m, views, NAMES, list(W))
    assert [c.down for c in cases] == [("Paris",), ("Dublin DC",), ("Branch",), ("Paris", "Dublin DC"),
                                       ("Paris", "Dublin DC", "Branch")]
    assert cases[3].answer.startswith("If Paris and Dublin DC both went down: you would lose")


# --- the VPN concentrator's address, when the routing table shows it ----------------------------------------------

def test_a_readable_concentrator_address_is_a_site_of_its_own_and_settles_where_the_tunnel_ends() -> None:
    """dc-resolver with a VPN client that adds a host route to its server: the only resolver is in the DC,
    the concentrator on the office's public network. Two sites, no hedge over the concentrator: losing the DC
    loses name resolution whatever the VPN client does (its tunnel, to the office, stays)."""
    told = replace(dc_resolver(), vpn_gateway="203.0.113.10")
    sites = infer_sites(told)
    assert [nets(s) for s in sites] == [["10.30.0.0/16"], ["203.0.113.0/24"]]
    m = ModelInput(told, SiteProfile(), sites, W)
    dc, office = (s.name for s in sites)
    lost_dc = row(predict_case(m, {dc}), "exchange")
    assert (lost_dc.if_vpn_stays, lost_dc.if_vpn_drops) == (Fate.FAILS, Fate.FAILS)
    assert QUESTION not in lost_dc.assumptions
    lost_office = row(predict_case(m, {office}), "exchange")
    assert (lost_office.if_vpn_stays, lost_office.if_vpn_drops) == (Fate.FAILS, Fate.WORKS)  # black-holed / home
    assert QUESTION not in lost_office.assumptions


def dc_resolver() -> SiteFacts:
    """dc-resolver: the only resolver the VPN hands out is in the DC (10.30.1.53); Exchange and sign-in direct."""
    return SiteFacts(False, ("wg0",), (Resolver("10.30.1.53", tunnel("10.30.1.53")),), (EXCHANGE, LOGIN))


def test_one_seen_site_and_an_unread_concentrator_infer_the_site_where_the_vpn_ends() -> None:
    """dc-resolver without a profile, its WireGuard server unread: one group of systems (the DC's) is seen, and
    the concentrator may be there or at a site of its own. Losing the seen site alone: the resolver is gone,
    and if the VPN drops, whether the tunnel went with it is the question (hedged). Losing the site where the
    VPN ends alone: the tunnel goes with it whichever answer holds (black-holed / direct), no hedge."""
    facts = dc_resolver()
    sites = infer_sites(facts)
    assert [(s.name, nets(s), s.vpn_gateways) for s in sites] == [
        ("unnamed site 10.30.0.0/16", ["10.30.0.0/16"], ()), (VPN_END, [], ())]
    assert inferred(sites)
    m = ModelInput(facts, SiteProfile(), sites, W)
    dc, end = (s.name for s in sites)
    lost_dc = row(predict_case(m, {dc}), "exchange")
    assert lost_dc.if_vpn_stays is Fate.FAILS  # the only resolver is gone, whatever the tunnel does
    assert lost_dc.if_vpn_drops is Fate.UNCERTAIN and lost_dc.possible["drops"] == (Fate.WORKS, Fate.FAILS)
    assert QUESTION in lost_dc.assumptions
    assert any("if it is at a site of its own" in e for e in lost_dc.evidence)
    lost_end = row(predict_case(m, {end}), "exchange")
    assert (lost_end.if_vpn_stays, lost_end.if_vpn_drops) == (Fate.FAILS, Fate.WORKS)
    both = row(predict_case(m, None), "exchange")
    assert (both.if_vpn_stays, both.if_vpn_drops) == (Fate.FAILS, Fate.WORKS)


def test_the_cases_and_the_employees_words_for_the_site_where_the_vpn_ends() -> None:
    facts = dc_resolver()
    m = ModelInput(facts, SiteProfile(), infer_sites(facts), W)
    everything = predict_case(m, None)
    views = known_sites(m, everything)
    assert [(v.name, v.told, v.networks, v.systems) for v in views] == [
        ("unnamed site 10.30.0.0/16", False, ("10.30.0.0/16", "10.30.1.53/32"), (("dns", "10.30.1.53"),)),
        (VPN_END, False, (), (("vpn", "wg0"),))]
    cases = site_cases(m, views, NAMES, list(W), everything)
    dc = "unnamed site 10.30.0.0/16"
    assert [c.down for c in cases] == [(dc,), (VPN_END,), (dc, VPN_END)]
    # a reason several workloads share is said once
    assert cases[1].answer == (
        "If the site where your VPN ends went down: you would lose Exchange Online and Sign-in (the servers that look "
        "up names are reached through your VPN, and the site where it ends is down; if your VPN stays connected).")
    assert cases[0].answer.startswith("If unnamed site 10.30.0.0/16 went down: you would lose Exchange Online and "
                                      "Sign-in (the servers that look up names are in unnamed site 10.30.0.0/16")
    hang = next(c for c in row(cases[0].prediction, "exchange").causes if c.kind is CauseKind.ASSUMPTION)
    assert "vpn_gateways" in hang.subject  # the fix: a site profile naming the VPN gateways


def test_a_read_concentrator_address_in_the_one_seen_group_leaves_nothing_to_infer() -> None:
    """The routing table shows the concentrator and it is at the one site seen: that site is the corporate
    site netcheck has always reasoned about, no site where the VPN ends, no hedge over it."""
    facts = replace(dc_resolver(), vpn_gateway="10.30.0.1")
    assert infer_sites(facts) == ()
    p = predict(facts, SiteProfile(), W)
    assert all(QUESTION not in w.assumptions for w in p.workloads)
    assert (row(p, "exchange").if_vpn_stays, row(p, "exchange").if_vpn_drops) == (Fate.FAILS, Fate.WORKS)
