"""The outage model over cause records and several sites: hand-built facts, no network."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from netcheck.assess.outage import (
    PARTIAL,
    Cause,
    CauseKind,
    Dependency,
    Fate,
    ProxyPath,
    Resolver,
    Route,
    SiteFacts,
    assess_outage,
    predict,
)
from netcheck.models import Outcome
from netcheck.site_profile import SiteProfile

W = ("exchange", "teams_media", "identity")
NAMES = {"exchange": "Exchange Online (Outlook)", "teams_media": "Teams audio and video", "identity": "Sign-in"}
HOME_DNS = Resolver("192.168.1.1", Route("192.168.1.1", "eth0", "physical"))


def direct(addr: str) -> Route:
    return Route(addr, "eth0", "physical")


def tunnel(addr: str) -> Route:
    return Route(addr, "wg0", "vpn")


def facts(*deps: Dependency, resolvers: tuple[Resolver, ...] = (HOME_DNS,), vpn: bool = True) -> SiteFacts:
    return SiteFacts(False, ("wg0",) if vpn else (), resolvers, deps)


def kinds(causes: tuple[Cause, ...]) -> list[tuple[CauseKind, str, str | None]]:
    return [(c.kind, c.subject, c.site) for c in causes]


# --- causes as data ------------------------------------------------------------------------------------------------

def test_each_broken_link_is_a_cause_record_with_its_kind_subject_and_site() -> None:
    adfs = Dependency("identity", "federation", "adfs.corp.example", (tunnel("10.10.0.20"),))
    media = Dependency("teams_media", "media", "relay", (tunnel("198.18.4.1"),))
    p = predict(facts(adfs, media), SiteProfile(name="Paris"), W)
    ident, med = (next(w for w in p.workloads if w.id == i) for i in ("identity", "teams_media"))
    assert kinds(ident.causes) == [(CauseKind.SIGN_IN, "adfs.corp.example", "Paris")]
    assert kinds(med.causes_by["stays"]) == [(CauseKind.TUNNEL, "relay", "Paris")]
    assert med.causes_by["drops"] == ()
    assert ident.causes[0].as_dict()["kind"] == "sign_in_server"


def test_dns_proxy_and_pac_causes_name_the_system() -> None:
    corp_dns = Resolver("10.10.0.53", tunnel("10.10.0.53"))
    proxy = ProxyPath(source="pac", proxy="10.10.0.8:3128", proxy_route=tunnel("10.10.0.8"),
                      pac_url="http://pac.corp.example/p.pac", pac_route=tunnel("10.10.0.9"))
    dep = Dependency("exchange", "service", "o", (direct("198.18.0.10"),), proxy)
    w = predict(facts(dep, resolvers=(corp_dns,)), SiteProfile(pac_unreachable="cached"), W).workloads[0]
    assert {(c.kind, c.subject) for c in w.causes_by["stays"]} == {
        (CauseKind.DNS, "10.10.0.53"), (CauseKind.PROXY, "10.10.0.8:3128")}
    failing = predict(facts(dep), SiteProfile(pac_unreachable="fail"), W).workloads[0]
    assert {c.kind for c in failing.causes} == {CauseKind.PAC}


def test_remediation_is_looked_up_by_cause_kind_not_by_words() -> None:
    """A host whose name contains words the old text matching looked for changes nothing."""
    dep = Dependency("identity", "federation", "proxy-through-the-vpn-dns.example", (tunnel("10.10.0.20"),))
    section = assess_outage(predict(facts(dep), SiteProfile(), W), NAMES, list(W))
    fix = next(f for f in section.findings if f.code == "outage.identity").remediation
    assert "password hash sync" in fix
    assert "PAC" not in fix and "proxy at the site" not in fix and "resolve without the site" not in fix


# --- several sites -------------------------------------------------------------------------------------------------

PARIS = SiteProfile(name="Paris", networks=(ipaddress.ip_network("10.20.0.0/16"),),
                    vpn_gateways=("vpn.paris.example",), dns_servers=("10.20.0.53",), from_file=True)
DUBLIN = SiteProfile(name="Dublin DC", networks=(ipaddress.ip_network("10.30.0.0/16"),),
                     vpn_gateways=("vpn.dublin.example",), federation_hosts=("adfs.corp.example",), from_file=True)
PARIS_DNS = Resolver("10.20.0.53", tunnel("10.20.0.53"))
EXCHANGE = Dependency("exchange", "service", "outlook.office365.com", (direct("198.18.0.10"),))
LOGIN = Dependency("identity", "service", "login.microsoftonline.com", (direct("198.18.2.1"),))
ADFS = Dependency("identity", "federation", "adfs.corp.example", (tunnel("10.30.0.20"),))


def two_sites() -> SiteFacts:
    return facts(EXCHANGE, LOGIN, ADFS, resolvers=(PARIS_DNS, HOME_DNS))


def fates(p: object, wid: str) -> tuple[Fate, Fate]:
    w = next(x for x in p.workloads if x.id == wid)  # type: ignore[attr-defined]
    return w.if_vpn_stays, w.if_vpn_drops


def test_each_site_alone_and_both_together() -> None:
    f, sites = two_sites(), (PARIS, DUBLIN)
    paris = predict(f, PARIS, W, sites=sites, down={"Paris"})
    assert fates(paris, "exchange") == (Fate.WORKS, Fate.WORKS)  # Paris's resolver first: slower, still works
    assert fates(paris, "identity") == (Fate.FAILS, Fate.FAILS)  # AD FS in Dublin, reached only through Paris
    ident = next(w for w in paris.workloads if w.id == "identity")
    assert kinds(ident.causes_by["stays"]) == [(CauseKind.TUNNEL, "adfs.corp.example", "Paris")]
    assert kinds(ident.causes_by["drops"]) == [(CauseKind.VPN_ONLY, "adfs.corp.example", "Paris")]
    dublin = predict(f, PARIS, W, sites=sites, down={"Dublin DC"})
    assert fates(dublin, "exchange") == (Fate.WORKS, Fate.WORKS)
    assert fates(dublin, "identity") == (Fate.FAILS, Fate.FAILS)
    assert kinds(next(w for w in dublin.workloads if w.id == "identity").causes) == [
        (CauseKind.SIGN_IN, "adfs.corp.example", "Dublin DC")]
    both = predict(f, PARIS, W, sites=sites)  # None: every site down
    assert fates(both, "identity") == (Fate.FAILS, Fate.FAILS) and both.down == ("Dublin DC", "Paris", "unnamed site")
    nothing = predict(f, PARIS, W, sites=sites, down=())
    # nothing down: the VPN's gateway is up, so the tunnel stays whatever the client does when it is lost
    assert all(fates(nothing, w) == (Fate.WORKS, Fate.WORKS) for w in ("exchange", "identity"))


def test_vpn_failover_keeps_the_tunnel_through_the_second_site() -> None:
    paris = replace(PARIS, vpn_failover=("Dublin DC",))
    f, sites = two_sites(), (paris, DUBLIN)
    p = predict(f, paris, W, sites=sites, down={"Paris"})
    assert fates(p, "identity") == (Fate.WORKS, Fate.WORKS)  # the tunnel fails over in both behaviours
    assert any("fails over to the gateway at Dublin DC" in e for w in p.workloads for e in w.evidence)
    assert fates(predict(f, paris, W, sites=sites, down={"Dublin DC"}), "identity") == (Fate.FAILS, Fate.FAILS)
    lost = predict(f, paris, W, sites=sites, down={"Paris", "Dublin DC"})
    assert fates(lost, "identity") == (Fate.FAILS, Fate.FAILS)
    # without failover, losing Paris is losing the tunnel
    assert fates(predict(f, PARIS, W, sites=(PARIS, DUBLIN), down={"Paris"}), "identity") == (Fate.FAILS, Fate.FAILS)


def test_a_system_no_profile_claims_is_at_the_unnamed_site() -> None:
    from netcheck.assess.outage import UNNAMED, ModelInput
    from netcheck.assess.site_cases import known_sites

    proxy = ProxyPath(source="environment", proxy="10.40.0.8:3128", proxy_route=tunnel("10.40.0.8"))
    f = facts(replace(EXCHANGE, proxy=proxy), LOGIN, resolvers=(HOME_DNS,))
    sites = (PARIS, DUBLIN)
    unnamed = predict(f, PARIS, W, sites=sites, down={UNNAMED})
    assert fates(unnamed, "exchange") == (Fate.FAILS, Fate.FAILS)
    assert kinds(next(w for w in unnamed.workloads if w.id == "exchange").causes) == [
        (CauseKind.PROXY, "10.40.0.8:3128", UNNAMED)]
    # Paris's tunnel stays up (its gateway's site is up): through it, in both behaviours
    assert fates(predict(f, PARIS, W, sites=sites, down={"Dublin DC"}), "exchange") == (Fate.WORKS, Fate.WORKS)
    # through Paris's tunnel: losing Paris loses the way to it
    assert fates(predict(f, PARIS, W, sites=sites, down={"Paris"}), "exchange") == (Fate.FAILS, Fate.FAILS)
    views = known_sites(ModelInput(f, PARIS, sites, W), predict(f, PARIS, W, sites=sites))
    shown = {v.name: v for v in views}
    assert shown[UNNAMED].told is False and shown[UNNAMED].networks == ("10.40.0.8/32",)
    assert ("proxy", "10.40.0.8:3128") in shown[UNNAMED].systems
    assert shown["Paris"].told and shown["Paris"].networks == ("10.20.0.0/16",)


def test_one_site_is_the_prediction_netcheck_always_made() -> None:
    f = two_sites()
    assert predict(f, PARIS, W) == predict(f, PARIS, W, sites=(PARIS,), down=None)
    assert predict(f, SiteProfile(), W).down == ("the corporate site",)


def test_cases_answer_per_site_in_plain_words() -> None:
    from netcheck.assess.outage import ModelInput
    from netcheck.assess.site_cases import known_sites, site_cases

    f, sites = two_sites(), (PARIS, DUBLIN)
    model = ModelInput(f, PARIS, sites, W)
    everything = predict(f, PARIS, W, sites=sites)
    cases = site_cases(model, known_sites(model, everything), NAMES, list(W), everything)
    assert [c.down for c in cases] == [("Paris",), ("Dublin DC",), ("Paris", "Dublin DC")]
    assert cases[0].answer == "If Paris went down: you would lose Sign-in (your VPN goes through Paris)."
    assert cases[1].answer == ("If Dublin DC went down: you would lose Sign-in (the sign-in server "
                               "adfs.corp.example is in Dublin DC).")
    assert cases[2].answer.startswith("If Paris and Dublin DC both went down: you would lose Sign-in")
    alone = ModelInput(facts(EXCHANGE), PARIS, sites, W)
    quiet = site_cases(alone, known_sites(alone, predict(alone.facts, PARIS, W, sites=sites)), NAMES, list(W))
    assert quiet[1].answer == "If Dublin DC went down: nothing changes for you."


# --- the report carries the facts: schema v2, what_if ----------------------------------------------------------------

def two_site_section() -> object:
    from netcheck.assess.outage import ModelInput
    from netcheck.assess.site_cases import known_sites, settings_profile, site_cases

    sites = (PARIS, DUBLIN)
    profile = settings_profile(sites, PARIS)
    model = ModelInput(two_sites(), profile, sites, W, {"exchange": Fate.DEGRADED})
    everything = predict(model.facts, profile, W, model.current, sites=sites)
    section = assess_outage(everything, NAMES, list(W), several_sites=True)
    views = known_sites(model, everything)
    return replace(section, sites=views, model=model, cases=site_cases(model, views, NAMES, list(W), everything))


def two_site_report() -> dict[str, object]:
    from netcheck.render.json import report_to_dict
    from tests.sample_report import sample_report

    return report_to_dict(replace(sample_report(), outage=two_site_section()))


def test_a_two_site_report_validates_against_schema_v2_and_the_collector_accepts_v1_and_v2() -> None:
    import json
    from pathlib import Path

    import jsonschema

    from netcheck.collector.validate import ReportValidator
    from netcheck.render.json import SCHEMA_PATH

    data = two_site_report()
    assert data["schema_version"] == 2
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()),
                                    format_checker=jsonschema.FormatChecker()).validate(data)
    outage = data["outage"]
    assert isinstance(outage, dict)
    assert [s["name"] for s in outage["sites"]] == ["Paris", "Dublin DC"]
    assert outage["sites"][1] == {"name": "Dublin DC", "told": True, "networks": ["10.30.0.0/16"],
                                  "systems": [{"kind": "vpn", "name": "vpn.dublin.example"},
                                              {"kind": "federation", "name": "adfs.corp.example"}]}
    assert [c["down"] for c in outage["cases"]] == [["Paris"], ["Dublin DC"], ["Paris", "Dublin DC"]]
    assert outage["facts"]["vpn_sites"] == ["Paris"]
    assert outage["workloads"] == [{k: v for k, v in row.items() if k != "causes"}
                                   for row in outage["cases"][-1]["workloads"]]
    validator = ReportValidator()
    validator.check(data)
    validator.check(json.loads((Path(__file__).parent / "fixtures" / "report-sample.json").read_text()))


def test_what_if_recomputes_any_case_from_the_report_alone() -> None:
    import json

    import pytest

    from netcheck.assess.what_if import FactsError, what_if

    data = json.loads(json.dumps(two_site_report()))  # as the collector stores it
    outage = data["outage"]
    for case in outage["cases"]:
        rows = what_if(data, case["down"])
        assert [(r["id"], r["stays"], r["drops"]) for r in rows] == [
            (w["id"], w["if_vpn_stays"], w["if_vpn_drops"]) for w in case["workloads"]]
        assert [r["causes"] for r in rows] == [w["causes"] for w in case["workloads"]]
    assert {r["id"]: r["stays"] for r in what_if(data, [])}["identity"] == "works"
    assert {r["id"]: r["stays"] for r in what_if(data, ["Dublin DC"])}["exchange"] == "degraded"  # measured now
    with pytest.raises(FactsError):
        what_if({"schema_version": 1, "outage": None}, ["Paris"])


# --- what the employee sees ----------------------------------------------------------------------------------------

def test_text_and_html_answer_per_site() -> None:
    from netcheck.render.html import render_html
    from netcheck.render.json import report_to_dict
    from netcheck.render.text import render_text
    from tests.sample_report import sample_report

    report = replace(sample_report(), outage=two_site_section())
    text = render_text(report, width=200)
    assert "If one of your sites went down" in text
    assert "- If Paris went down: you would lose Sign-in (your VPN goes through Paris)." in text
    assert ("- If Dublin DC went down: you would lose Sign-in (the sign-in server adfs.corp.example is in "
            "Dublin DC).") in text
    data = report_to_dict(report)
    html = render_html(data)
    assert '<section id="sites"' in html and "If Dublin DC went down: you would lose Sign-in" in html
    assert "If all your sites went down, you would lose Sign-in" in data["outage"]["summary"]
    assert "If all your sites went down</h2>" in html
    data["outage"]["cases"][0]["answer"] = "<script>alert(1)</script>"
    data["outage"]["sites"][0]["name"] = "<b>Paris</b>"
    hostile = render_html(data)
    assert "<script>alert(1)" not in hostile and "<b>Paris</b>" not in hostile
    single = replace(sample_report(), outage=replace(two_site_section(), sites=two_site_section().sites[:1]))
    assert "If one of your sites went down" not in render_text(single)


def test_what_if_hedges_an_on_site_laptop_as_the_laptop_did() -> None:
    """On the office network the VPN profile used from home is unknown: the answers travel as fact patches."""
    import json

    from netcheck.assess.outage import ModelInput
    from netcheck.assess.site_cases import known_sites, site_cases
    from netcheck.assess.site_decisions import as_from_home, home_assumptions
    from netcheck.assess.what_if import what_if
    from netcheck.m365.catalog import load_catalog
    from netcheck.render.json import report_to_dict
    from tests.sample_report import sample_report

    catalog = load_catalog("Worldwide")
    office_deps = [Dependency("exchange", "service", "outlook.office365.com", (direct("198.18.0.10"),)),
                   Dependency("identity", "federation", "adfs.corp.example", (direct("10.30.0.20"),))]
    office_dns = (Resolver("10.20.0.53", direct("10.20.0.53")),)
    deps, dns, vpn = as_from_home(office_deps, office_dns, catalog, PARIS)
    facts = SiteFacts(True, vpn, dns, tuple(deps))
    model = ModelInput(facts, PARIS, (PARIS, DUBLIN), W, {},
                       home_assumptions((office_deps, office_dns), catalog, PARIS, dns[-1]))
    everything = predict(facts, PARIS, W, {}, model.assumptions, sites=model.sites)
    views = known_sites(model, everything)
    section = replace(assess_outage(everything, NAMES, list(W)), sites=views, model=model,
                      cases=site_cases(model, views, NAMES, list(W), everything))
    data = json.loads(json.dumps(report_to_dict(replace(sample_report(), outage=section))))
    import jsonschema

    from netcheck.render.json import SCHEMA_PATH

    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(data)
    assert [a["question"] for a in data["outage"]["facts"]["assumptions"]] == [
        "the VPN profile used away from the office", "whether the VPN client also keeps the home network's resolver"]
    for case in data["outage"]["cases"]:
        assert [(r["id"], r["stays"], r["drops"]) for r in what_if(data, case["down"])] == [
            (w["id"], w["if_vpn_stays"], w["if_vpn_drops"]) for w in case["workloads"]]
    assert "uncertain" in {r["stays"] for r in what_if(data, ["Paris"])}  # hedged, not assumed


def test_the_schema_allows_exactly_the_cause_kinds_the_model_emits() -> None:
    import json

    from netcheck.render.json import SCHEMA_PATH

    schema = json.loads(SCHEMA_PATH.read_text())
    assert set(schema["$defs"]["cause"]["properties"]["kind"]["enum"]) == {str(k) for k in CauseKind}
    from netcheck.assess.outage import _REMEDIES

    assert set(_REMEDIES) == set(CauseKind)  # every kind has its remedy (or says it has none)


def test_from_home_without_a_vpn_an_internal_system_of_a_site_that_is_up_is_still_out_of_reach() -> None:
    """Predicted on the office network for a home without VPN: AD FS in Dublin is internal, so losing Paris
    does not cost sign-in (it was never reachable from home), and the answer says so against the baseline."""
    from netcheck.assess.site_decisions import HOME_UPLINK

    adfs = Dependency("identity", "federation", "adfs.corp.example",
                      (Route("10.30.0.20", HOME_UPLINK, "unreachable"),))
    home = SiteFacts(True, (), (Resolver("the home router", Route("the home router", HOME_UPLINK, "physical")),),
                     (EXCHANGE, adfs), home_link_slow=False)
    sites = (PARIS, DUBLIN)
    for down in ((), ("Paris",), ("Dublin DC",)):
        p = predict(home, replace(PARIS, vpn_mode="none"), W, sites=sites, down=down)
        assert fates(p, "identity") == (Fate.FAILS, Fate.FAILS), down
        assert fates(p, "exchange") == (Fate.WORKS, Fate.WORKS), down
    causes = next(w for w in predict(home, replace(PARIS, vpn_mode="none"), W, sites=sites, down=()).workloads
                  if w.id == "identity").causes
    assert kinds(causes) == [(CauseKind.NO_ROUTE, "adfs.corp.example", "Dublin DC")]


# --- a branch office whose internet goes out through a datacentre ----------------------------------------------------

LYON = SiteProfile(name="Lyon branch", networks=(ipaddress.ip_network("10.50.0.0/16"),), internet_via="Dublin DC",
                   from_file=True)
DUBLIN_EXIT = replace(DUBLIN, networks=(*DUBLIN.networks, ipaddress.ip_network("203.0.113.0/28")))
LYON_DNS = Resolver("10.50.0.53", direct("10.50.0.53"))


def at_the_branch(**changes: object) -> SiteFacts:
    """On Lyon's network: the paths seen there (office), and as from home (a tunnel to Dublin's gateway)."""
    from netcheck.assess.outage import FactsPatch

    office = FactsPatch(vpn_interfaces=(), resolvers=(LYON_DNS,), dependencies=(
        EXCHANGE, LOGIN, replace(ADFS, routes=(direct("10.30.0.20"),))))
    router = Resolver("the home router", Route("the home router", "home connection", "physical"))  # as_from_home's
    home = SiteFacts(True, ("wg0",), (router,), (EXCHANGE, LOGIN, ADFS), site_here="Lyon branch", office=office,
                     home_link_slow=False)
    return replace(home, **changes)  # type: ignore[arg-type]


def workload(p: object, wid: str) -> object:
    return next(w for w in p.workloads if w.id == wid)  # type: ignore[attr-defined]


def test_a_branch_laptop_loses_the_internet_where_it_stands_when_the_datacentre_it_goes_out_through_is_lost() -> None:
    sites = (LYON, DUBLIN)
    dc = predict(at_the_branch(), LYON, W, sites=sites, down={"Dublin DC"})
    assert fates(dc, "exchange") == (Fate.FAILS, Fate.FAILS)
    exchange = workload(dc, "exchange")
    assert kinds(exchange.causes) == [(CauseKind.INTERNET_VIA, "outlook.office365.com", "Dublin DC")]  # type: ignore[attr-defined]
    assert any("you stay at Lyon branch, which is up" in e and "goes out through Dublin DC" in e
               for e in exchange.evidence)  # type: ignore[attr-defined]
    assert {c.kind for c in workload(dc, "identity").causes} == {  # type: ignore[attr-defined]
        CauseKind.INTERNET_VIA, CauseKind.SIGN_IN}
    section = assess_outage(dc, NAMES, list(W), several_sites=True)
    fix = next(f for f in section.findings if f.code == "outage.exchange").remediation
    assert "local internet breakout" in fix and "Dublin DC" in fix


def test_a_branch_laptop_goes_home_when_its_own_site_is_lost_and_both_lost_is_both() -> None:
    sites = (LYON, DUBLIN)
    own = predict(at_the_branch(), LYON, W, sites=sites, down={"Lyon branch"})
    assert fates(own, "exchange") == (Fate.WORKS, Fate.WORKS)  # from home, direct through the home connection
    assert fates(own, "identity") == (Fate.WORKS, Fate.WORKS)  # AD FS through the tunnel to Dublin, which is up
    assert any("Lyon branch, where you are, is down: you work from home" in e
               for e in workload(own, "exchange").evidence)  # type: ignore[attr-defined]
    both = predict(at_the_branch(), LYON, W, sites=sites, down={"Lyon branch", "Dublin DC"})
    assert fates(both, "exchange") == (Fate.WORKS, Fate.WORKS)  # at home the internet is the home connection
    assert fates(both, "identity") == (Fate.FAILS, Fate.FAILS)
    assert {c.kind for c in workload(both, "identity").causes} == {CauseKind.SIGN_IN}  # type: ignore[attr-defined]
    nothing = predict(at_the_branch(), LYON, W, sites=sites, down=())
    assert all(fates(nothing, w) == (Fate.WORKS, Fate.WORKS) for w in ("exchange", "identity"))


def test_the_public_address_in_a_sites_networks_says_the_internet_goes_out_through_it() -> None:
    lyon = replace(LYON, internet_via=None)
    sites = (lyon, DUBLIN_EXIT)
    seen = at_the_branch(public_egress="203.0.113.5")
    assert fates(predict(seen, lyon, W, sites=sites, down={"Dublin DC"}), "exchange") == (Fate.FAILS, Fate.FAILS)
    assert fates(predict(at_the_branch(), lyon, W, sites=sites, down={"Dublin DC"}), "exchange") == (
        Fate.WORKS, Fate.WORKS)  # its own breakout: nothing says otherwise
    # a laptop on an office network no profile names, whose public address is Dublin's
    elsewhere = SiteFacts(False, (), (HOME_DNS,), (EXCHANGE,), public_egress="203.0.113.5")
    p = predict(elsewhere, lyon, W, sites=sites, down={"Dublin DC"})
    assert kinds(workload(p, "exchange").causes) == [  # type: ignore[attr-defined]
        (CauseKind.INTERNET_VIA, "outlook.office365.com", "Dublin DC")]
    assert fates(predict(elsewhere, lyon, W, sites=sites, down={"Lyon branch"}), "exchange") == (
        Fate.WORKS, Fate.WORKS)


def test_a_proxy_at_a_branch_goes_out_through_the_datacentre() -> None:
    proxy = ProxyPath(source="os", proxy="10.50.0.8:3128", proxy_route=direct("10.50.0.8"))
    f = SiteFacts(False, (), (HOME_DNS,), (replace(EXCHANGE, proxy=proxy),))
    p = predict(f, LYON, W, sites=(LYON, DUBLIN), down={"Dublin DC"})
    assert kinds(workload(p, "exchange").causes) == [  # type: ignore[attr-defined]
        (CauseKind.INTERNET_VIA, "10.50.0.8:3128", "Dublin DC")]


def test_internet_via_is_checked_when_the_profiles_load(tmp_path: object) -> None:
    from pathlib import Path

    import pytest

    from netcheck.errors import ConfigError
    from netcheck.site_profile import load_site_profiles

    path = Path(str(tmp_path)) / "sites.toml"
    path.write_text('[[site]]\nname = "Lyon branch"\ninternet_via = "dublin dc"\n[[site]]\nname = "Dublin DC"\n')
    assert load_site_profiles(path)[0].internet_via == "Dublin DC"
    path.write_text('[[site]]\nname = "Lyon branch"\ninternet_via = "Paris"\n[[site]]\nname = "Dublin DC"\n')
    with pytest.raises(ConfigError, match="internet_via names 'Paris', which no profile is named"):
        load_site_profiles(path)
    path.write_text('[site]\nname = "Lyon"\ninternet_via = "Lyon"\n')
    with pytest.raises(ConfigError, match="internet_via names the site itself"):
        load_site_profiles(path)


# --- the PAC file gone: the manual proxy settings, else DIRECT --------------------------------------------------------

DC = SiteProfile(name="Dublin DC", networks=(ipaddress.ip_network("10.30.0.0/16"),), pac_unreachable="direct",
                 from_file=True)


def pac_gone(without_pac: str | None) -> Dependency:
    proxy = ProxyPath(source="pac", proxy=None, pac_url="http://pac.corp.example/p.pac",
                      pac_route=direct("10.30.0.9"), without_pac=without_pac,
                      without_pac_route=direct("10.30.0.8") if without_pac else None)
    return replace(EXCHANGE, proxy=proxy)


def test_without_its_pac_file_the_browser_uses_the_manual_proxy_which_is_at_the_lost_site_too() -> None:
    p = predict(facts(pac_gone("10.30.0.8:3128"), vpn=False), DC, W)
    assert fates(p, "exchange") == (Fate.FAILS, Fate.FAILS)
    w = workload(p, "exchange")
    assert kinds(w.causes) == [(CauseKind.PAC, "http://pac.corp.example/p.pac", "Dublin DC"),  # type: ignore[attr-defined]
                               (CauseKind.PROXY, "10.30.0.8:3128", "Dublin DC")]
    assert any("the browser uses the manual proxy settings (10.30.0.8:3128)" in e
               for e in w.evidence)  # type: ignore[attr-defined]


def test_without_its_pac_file_and_no_manual_proxy_the_browser_goes_direct() -> None:
    p = predict(facts(pac_gone(None), vpn=False), DC, W)
    assert fates(p, "exchange") == (Fate.WORKS, Fate.WORKS)
    assert any("DIRECT (no manual proxy settings)" in e for e in workload(p, "exchange").evidence)  # type: ignore[attr-defined]


# --- with several sites the evidence and the fixes name the sites -----------------------------------------------------

def test_with_several_sites_evidence_and_fixes_name_the_site_and_one_site_keeps_its_words() -> None:
    gone = Dependency("exchange", "service", "outlook.office365.com",
                      (Route("2001:db8::10", None, "unreachable", "no IPv6 route"),))
    f = facts(gone, ADFS, resolvers=(PARIS_DNS, HOME_DNS), vpn=True)
    several = predict(f, PARIS, W, sites=(PARIS, DUBLIN), down={"Dublin DC"})
    text = " ".join(workload(several, "exchange").evidence)  # type: ignore[attr-defined]
    assert "so it is no way around Dublin DC" in text and "the site" not in text
    section = assess_outage(several, NAMES, list(W), several_sites=True)
    fix = next(x for x in section.findings if x.code == "outage.identity").remediation
    assert "Sign-in is federated to a server at Dublin DC (AD FS)" in fix and "when Dublin DC is down" in fix
    one = predict(f, PARIS, W)
    assert "so it is no way around the site" in " ".join(workload(one, "exchange").evidence)  # type: ignore[attr-defined]
    fix = next(x for x in assess_outage(one, NAMES, list(W)).findings if x.code == "outage.identity").remediation
    assert "a server at the site (AD FS)" in fix


# --- the report carries the branch, the public address, the office paths and the manual proxy ----------------------

def test_what_if_recomputes_the_branch_and_the_pac_fallback_from_the_report_alone() -> None:
    import json

    import jsonschema

    from netcheck.assess.outage import ModelInput
    from netcheck.assess.site_cases import known_sites, site_cases
    from netcheck.assess.what_if import model_from_dict, what_if
    from netcheck.render.json import SCHEMA_PATH, report_to_dict
    from tests.sample_report import sample_report

    lyon = replace(LYON, pac_unreachable="direct")
    sites = (lyon, DUBLIN_EXIT)
    branch = at_the_branch(public_egress="203.0.113.5")
    assert branch.office is not None and branch.office.dependencies is not None
    office = replace(branch.office, dependencies=(*branch.office.dependencies, replace(
        pac_gone("10.30.0.8:3128"), workload="teams_media", host="teams.microsoft.com")))
    branch = replace(branch, office=office)
    model = ModelInput(branch, lyon, sites, W)
    everything = predict(branch, lyon, W, sites=sites)
    views = known_sites(model, everything)
    section = replace(assess_outage(everything, NAMES, list(W), several_sites=True), sites=views, model=model,
                      cases=site_cases(model, views, NAMES, list(W), everything))
    data = json.loads(json.dumps(report_to_dict(replace(sample_report(), outage=section))))
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(data)
    facts = data["outage"]["facts"]
    assert (facts["site_here"], facts["public_egress"]) == ("Lyon branch", "203.0.113.5")
    assert facts["profiles"][0]["internet_via"] == "Dublin DC"
    assert model_from_dict(facts) == model
    # a status measured now and one the sample could not settle travel too (``measured_now``), and so does a
    # dependency a workload needs to work fully (one per endpoint category: role "category")
    other = Dependency("exchange", PARTIAL, "autodiscover.contoso.onmicrosoft.com", (Route("198.18.0.20", "eth0",
                                                                                           "physical"),))
    current, possible = {"exchange": Fate.DEGRADED}, {"teams_media": (Fate.WORKS, Fate.DEGRADED)}
    hedged = replace(model, facts=replace(branch, dependencies=(*branch.dependencies, other)), current=current,
                     possible_now=possible)
    again_prediction = predict(hedged.facts, lyon, W, current, sites=sites, possible_now=possible)
    again_section = replace(assess_outage(again_prediction, NAMES, list(W), several_sites=True), model=hedged)
    again = json.loads(json.dumps(report_to_dict(replace(sample_report(), outage=again_section))))
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(again)
    assert model_from_dict(again["outage"]["facts"]) == hedged
    assert "category" in {p["role"] for p in again["outage"]["paths"]}
    for case in data["outage"]["cases"]:
        assert [(r["id"], r["stays"], r["drops"], r["causes"]) for r in what_if(data, case["down"])] == [
            (w["id"], w["if_vpn_stays"], w["if_vpn_drops"], w["causes"]) for w in case["workloads"]]
    rows = {r["id"]: r for r in what_if(data, ["Dublin DC"])}
    assert rows["exchange"]["stays"] == "fails"
    assert {c["kind"] for c in rows["exchange"]["causes"]} == {"internet_via_site"}
    assert {c["kind"] for c in rows["teams_media"]["causes"]} == {"pac", "proxy"}  # the manual proxy is in Dublin
    assert {r["id"]: r["stays"] for r in what_if(data, ["Lyon branch"])}["exchange"] == "works"  # gone home


def test_one_site_on_its_network_the_prediction_is_as_from_home_with_or_without_the_office_paths() -> None:
    """With one site, losing it is losing the laptop's own site: the office paths change nothing."""
    with_office = at_the_branch(site_here=None)
    without = replace(with_office, office=None)
    assert predict(with_office, LYON, W) == predict(without, LYON, W)
    assert predict(with_office, PARIS, W, sites=(PARIS,)) == predict(without, PARIS, W, sites=(PARIS,))


def test_one_profile_whose_internet_goes_through_a_site_it_does_not_describe() -> None:
    from netcheck.assess.site_cases import site_down_names

    assert site_down_names(["dublin dc"], (LYON,)) == ("Dublin DC",)
    p = predict(at_the_branch(site_here=None), LYON, W, down={"Dublin DC"})
    assert fates(p, "exchange") == (Fate.FAILS, Fate.FAILS)
    assert fates(predict(at_the_branch(site_here=None), LYON, W, down={"Lyon branch"}), "exchange") == (
        Fate.WORKS, Fate.WORKS)


def test_the_collectors_policy_takes_every_site_profile_key_and_checks_the_names() -> None:
    from netcheck.fleet_policy import DEFAULTS, SCHEMA, document_problem
    from netcheck.site_profile import _KEYS

    assert set(SCHEMA["properties"]["site_profiles"]["items"]["properties"]) == _KEYS
    lyon = {"name": "Lyon branch", "networks": ["10.50.0.0/16"], "internet_via": "Dublin DC"}
    dublin = {"name": "Dublin DC", "vpn_gateways": ["vpn.dublin.example"], "vpn_failover": []}
    assert document_problem({**DEFAULTS, "site_profiles": [lyon, dublin]}) is None
    assert "internet_via names 'Paris'" in str(document_problem(
        {**DEFAULTS, "site_profiles": [{**lyon, "internet_via": "Paris"}, dublin]}))


def test_without_office_paths_an_on_site_laptop_is_taken_home_and_its_site_is_not_said_down() -> None:
    p = predict(at_the_branch(office=None), LYON, W, sites=(LYON, DUBLIN), down={"Dublin DC"})
    assert not any("where you are, is down" in e or "you stay at" in e
                   for w in p.workloads for e in w.evidence)
    assert fates(p, "exchange") == (Fate.WORKS, Fate.WORKS)  # as from home: the home connection


# --- gathering: the office paths, the public address and the manual proxy (a laptop double, no network) -------------

class _BranchLaptop:
    """A laptop on Lyon's network: every address leaves by eth0; a PAC file and a manual proxy in Dublin."""

    def __init__(self, relay_kind: str = "physical") -> None:
        self.relay_kind = relay_kind

    def interfaces(self) -> tuple[object, ...]:
        from netcheck.platform import Interface

        return (Interface("eth0", "physical", None, (), ("10.50.1.20/16",), True),)

    def proxy_settings(self) -> object:
        from netcheck.proxy.settings import ProxySettings

        return ProxySettings(source="os", proxies={"https": "http://10.30.0.8:3128"},
                             pac_url="http://10.30.0.9/p.pac")

    def dns_servers(self) -> tuple[str, ...]:
        return ("10.50.0.53",)

    def egress_many(self, addresses: list[str], interfaces: object = None) -> dict[str, object]:
        from netcheck.platform.base import Egress

        return {a: Egress(a, "eth0", "10.50.1.20", None, self.relay_kind if a == "198.18.4.1" else "physical",
                          None, "double") for a in addresses}


def _gather(laptop: _BranchLaptop, fetched: Outcome = Outcome.OK) -> SiteFacts:
    from netcheck.deadline import Deadline
    from netcheck.m365.catalog import load_catalog
    from netcheck.models import ProbeKind, ProbeResult, Target
    from netcheck.proxy.pac import PacFetch
    from netcheck.site_facts import gather

    catalog = load_catalog("Worldwide")
    exchange = catalog.key_hosts("contoso")["exchange"][0]
    results = [ProbeResult(ProbeKind.DNS, Target(exchange, 443), Outcome.OK, detail={"ipv4": ["198.18.0.10"]}),
               ProbeResult(ProbeKind.STUN, Target("198.18.4.1", 3478, address="198.18.4.1"), Outcome.OK,
                           detail={"mapped_address": "203.0.113.5"})]
    pac = PacFetch("http://10.30.0.9/p.pac", fetched,
                   'function FindProxyForURL(u, h) { return "DIRECT"; }' if fetched is Outcome.OK else None,
                   host="10.30.0.9")
    return gather(results, catalog, "contoso", laptop, replace(LYON, pac_unreachable="direct"),  # type: ignore[arg-type]
                  Deadline.after(20), pac=pac).facts


def test_gathering_on_a_branch_keeps_the_office_paths_the_public_address_and_the_manual_proxy() -> None:
    f = _gather(_BranchLaptop())
    assert f.on_site and f.public_egress == "203.0.113.5"
    assert f.office is not None and f.office.vpn_interfaces == () and f.office.dependencies is not None
    office = next(d for d in f.office.dependencies if d.workload == "exchange" and d.routes)
    assert office.routes == (Route("198.18.0.10", "eth0", "physical"),)
    assert (office.proxy.source, office.proxy.proxy, office.proxy.without_pac) == ("pac", None, "10.30.0.8:3128")
    assert office.proxy.without_pac_route == Route("10.30.0.8", "eth0", "physical")
    sites = (replace(LYON, internet_via=None, pac_unreachable="direct"), DUBLIN_EXIT)
    p = predict(f, sites[0], W, sites=sites, down={"Dublin DC"})
    ex = next(w for w in p.workloads if w.id == "exchange")
    assert ex.if_vpn_drops is Fate.FAILS and {c.kind for c in ex.causes} >= {CauseKind.PAC, CauseKind.PROXY}
    # the media sample's address is kept: its route says whether the measured path changes with the site
    assert {d.measured for d in f.dependencies if d.role == "media"} == {"198.18.4.1"}
    # through the VPN, the relay's address is the VPN's exit: not the laptop's own
    assert _gather(_BranchLaptop(relay_kind="vpn")).public_egress is None


def test_a_pac_fetch_that_ran_out_of_time_is_gathered_as_unread_not_as_gone() -> None:
    """The fetch's outcome reaches the facts: one that ran out of time marks every path the PAC file would have
    decided ``pac_unread`` (the prediction hedges on it); a refused connection does not (issue 9)."""
    for outcome, unread in ((Outcome.TIMEOUT, True), (Outcome.CONNECT_TIMEOUT, True), (Outcome.DNS_TIMEOUT, True),
                            (Outcome.CONNECT_REFUSED, False), (Outcome.NXDOMAIN, False), (Outcome.OK, False)):
        f = _gather(_BranchLaptop(), outcome)
        paths = [d.proxy for d in f.dependencies if d.role != "media"]
        assert paths and all(p.pac_url == "http://10.30.0.9/p.pac" for p in paths), outcome
        assert all(p.pac_unread is unread for p in paths), outcome
        assert all((p.source == "pac") is (outcome is Outcome.OK) for p in paths), outcome


class _UnprofiledLaptop(_BranchLaptop):
    """No proxy, no federation, no profile: only the resolver DHCP handed out tells where the laptop is."""

    def __init__(self, address: str, resolver: str, hop: str | None) -> None:
        super().__init__()
        self.address, self.resolver, self.hop = address, resolver, hop

    def egress_many(self, addresses: list[str], interfaces: object = None) -> dict[str, object]:
        from netcheck.platform.base import Egress

        return {a: Egress(a, "eth0", self.address.split("/")[0], None if a == self.resolver and not self.hop
                          else self.hop, "physical", None, "double") for a in addresses}

    def interfaces(self) -> tuple[object, ...]:
        from netcheck.platform import Interface

        return (Interface("eth0", "physical", None, (), (self.address,), True),)

    def proxy_settings(self) -> object:
        from netcheck.proxy.settings import ProxySettings

        return ProxySettings(source="none")

    def dns_servers(self) -> tuple[str, ...]:
        return (self.resolver,)


def test_without_a_profile_a_resolver_in_a_server_network_makes_the_place_a_hedged_question() -> None:
    """An office's resolver is in a network of its own (reached through a router); a home's is its router,
    on the laptop's own link. The first is predicted as an office, hedged over "or another network"."""
    from netcheck.deadline import Deadline
    from netcheck.m365.catalog import load_catalog
    from netcheck.models import Outcome, ProbeKind, ProbeResult, Target
    from netcheck.site_facts import gather

    catalog = load_catalog("Worldwide")
    relay = [ProbeResult(ProbeKind.STUN, Target("198.18.4.1", 3478), Outcome.OK)]  # an address: no lookup

    def gathered(address: str, resolver: str, hop: str | None) -> tuple[SiteFacts, tuple[str, ...]]:
        g = gather(relay, catalog, "contoso", _UnprofiledLaptop(address, resolver, hop),  # type: ignore[arg-type]
                   SiteProfile(), Deadline.after(20))
        return g.facts, tuple(a.settle for a in g.assumptions)

    # as Linux reads them: addresses without their prefix length; the route's next hop tells the link
    office, settles = gathered("10.20.0.100", "10.20.1.53", "10.20.0.1")
    assert office.on_site and office.office is not None and settles[-1] == "networks"
    home, settles = gathered("192.168.1.10", "192.168.1.1", None)
    assert not home.on_site and "networks" not in settles


def test_a_full_tunnel_to_a_site_whose_internet_goes_through_another_loses_the_internet_with_it() -> None:
    """From home through the tunnel to Dublin, whose internet goes out through Paris: losing Paris loses it."""
    from netcheck.assess.outage import ModelInput
    from netcheck.assess.site_cases import known_sites, site_cases

    dublin = replace(DUBLIN, internet_via="Paris")
    paris = replace(PARIS, vpn_gateways=())
    sites = (dublin, paris)
    home = facts(replace(EXCHANGE, routes=(tunnel("198.18.0.10"),)), ADFS)
    p = predict(home, dublin, W, sites=sites, down={"Paris"})
    ex = workload(p, "exchange")
    assert fates(p, "exchange") == (Fate.FAILS, Fate.FAILS)
    assert kinds(ex.causes) == [(CauseKind.INTERNET_VIA, "outlook.office365.com", "Paris")]  # type: ignore[attr-defined]
    assert fates(p, "identity") == (Fate.WORKS, Fate.WORKS)  # AD FS is in Dublin, inside: no internet needed
    model = ModelInput(home, dublin, sites, W)
    everything = predict(home, dublin, W, sites=sites)
    answers = [c.answer for c in site_cases(model, known_sites(model, everything), NAMES, list(W), everything)]
    assert "If Paris went down: you would lose Exchange Online (your way to the internet goes out through Paris)." \
        in answers


def test_staying_at_the_branch_the_home_connection_does_not_matter() -> None:
    sites = (LYON, DUBLIN)
    for slow in (True, None):  # impaired, or unknown (then hedged)
        stay = predict(at_the_branch(home_link_slow=slow), LYON, W, sites=sites, down=())
        assert fates(stay, "exchange") == (Fate.WORKS, Fate.WORKS), slow
    home = predict(at_the_branch(home_link_slow=True), LYON, W, sites=sites, down={"Lyon branch"})
    assert fates(home, "exchange") == (Fate.DEGRADED, Fate.DEGRADED)  # from home, over the impaired connection
