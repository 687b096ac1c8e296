"""The outage model over cause records and several sites: hand-built facts, no network."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from netcheck.outage import (
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
    assert fates(nothing, "exchange") == (Fate.WORKS, Fate.WORKS)
    # "drops": the VPN is disconnected, whichever site is down: AD FS at an internal address is out of reach
    assert fates(nothing, "identity") == (Fate.WORKS, Fate.FAILS)


def test_vpn_failover_keeps_the_tunnel_through_the_second_site() -> None:
    paris = replace(PARIS, vpn_failover=("Dublin DC",))
    f, sites = two_sites(), (paris, DUBLIN)
    p = predict(f, paris, W, sites=sites, down={"Paris"})
    assert fates(p, "identity") == (Fate.WORKS, Fate.FAILS)  # a client that drops instead: AD FS out of reach
    assert any("fails over to the gateway at Dublin DC" in e for w in p.workloads for e in w.evidence)
    assert fates(predict(f, paris, W, sites=sites, down={"Dublin DC"}), "identity") == (Fate.FAILS, Fate.FAILS)
    lost = predict(f, paris, W, sites=sites, down={"Paris", "Dublin DC"})
    assert fates(lost, "identity") == (Fate.FAILS, Fate.FAILS)
    # without failover, losing Paris is losing the tunnel
    assert fates(predict(f, PARIS, W, sites=(PARIS, DUBLIN), down={"Paris"}), "identity") == (Fate.FAILS, Fate.FAILS)


def test_a_system_no_profile_claims_is_at_the_unnamed_site() -> None:
    from netcheck.outage import UNNAMED, ModelInput
    from netcheck.site_cases import known_sites

    proxy = ProxyPath(source="environment", proxy="10.40.0.8:3128", proxy_route=tunnel("10.40.0.8"))
    f = facts(replace(EXCHANGE, proxy=proxy), LOGIN, resolvers=(HOME_DNS,))
    sites = (PARIS, DUBLIN)
    unnamed = predict(f, PARIS, W, sites=sites, down={UNNAMED})
    assert fates(unnamed, "exchange") == (Fate.FAILS, Fate.FAILS)
    assert kinds(next(w for w in unnamed.workloads if w.id == "exchange").causes) == [
        (CauseKind.PROXY, "10.40.0.8:3128", UNNAMED)]
    # Paris's tunnel up: through it; a client that disconnects anyway is cut off from it
    assert fates(predict(f, PARIS, W, sites=sites, down={"Dublin DC"}), "exchange") == (Fate.WORKS, Fate.FAILS)
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
    from netcheck.outage import ModelInput
    from netcheck.site_cases import known_sites, site_cases

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
    from netcheck.outage import ModelInput
    from netcheck.site_cases import known_sites, settings_profile, site_cases

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

    from netcheck.what_if import FactsError, what_if

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

    from netcheck.catalog import load_catalog
    from netcheck.outage import ModelInput
    from netcheck.render.json import report_to_dict
    from netcheck.site_cases import known_sites, site_cases
    from netcheck.site_decisions import as_from_home, home_assumptions
    from netcheck.what_if import what_if
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
    from netcheck.outage import _REMEDIES

    assert set(_REMEDIES) == set(CauseKind)  # every kind has its remedy (or says it has none)


def test_from_home_without_a_vpn_an_internal_system_of_a_site_that_is_up_is_still_out_of_reach() -> None:
    """Predicted on the office network for a home without VPN: AD FS in Dublin is internal, so losing Paris
    does not cost sign-in (it was never reachable from home), and the answer says so against the baseline."""
    from netcheck.site_decisions import HOME_UPLINK

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
