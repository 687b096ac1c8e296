"""Several sites: which site's loss cuts this laptop off from what (pure).

A case is a set of sites that are down. :func:`site_cases` predicts each site alone and
all of them together, from the same facts (:func:`netcheck.assess.outage.predict`), and
:func:`case_answer` says it plainly for the employee: "If Paris went down: you would lose
Sign-in (the sign-in server adfs.corp.example is in Paris)."

Sites are the profiles IT gave (told) plus, when there are several, the "unnamed site":
the systems no profile claims but that the laptop reaches through the VPN or at internal
addresses. With profiles they are grouped into one unnamed site; without any profile they
are grouped by network into inferred sites (:mod:`netcheck.assess.site_infer`), whose cases are
hedged where the answer hangs on what the laptop cannot read (where the VPN concentrator is).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence

from netcheck.assess.outage import (
    UNNAMED,
    CauseKind,
    Fate,
    ModelInput,
    OutageCase,
    OutagePrediction,
    SiteView,
    all_site_names,
    fallback_site,
    listing,
    outage_verdict,
    predict,
    worst,
)
from netcheck.assess.site_infer import VPN_END, inferred, predict_inferred
from netcheck.errors import ConfigError
from netcheck.site_profile import SiteProfile

#: A profile's keys that name systems, and the kind of system each names.
_SYSTEM_KEYS = (("vpn_gateways", "vpn"), ("dns_servers", "dns"), ("proxies", "proxy"), ("pac_hosts", "pac"),
                ("federation_hosts", "federation"))


def known_sites(model: ModelInput, prediction: OutagePrediction) -> tuple[SiteView, ...]:
    """The sites the cases are about: each profile (told, unless it is the inferred default), the sites
    profiles fail over to, and the unnamed site when it holds something this laptop uses."""
    sites = model.sites or (model.profile,)
    views: dict[str, SiteView] = {}
    for s in sites:
        named = tuple((kind, h) for key, kind in _SYSTEM_KEYS for h in getattr(s, key))
        views[s.name] = SiteView(s.name, s.from_file or (bool(s.networks or named) and not inferred(sites)),
                                 tuple(str(n) for n in s.networks), named)
    for name in all_site_names(sites):
        if name not in views and name != fallback_site(sites):
            views[name] = SiteView(name, True, (), ())
    for system in prediction.site_systems:
        view = views.get(system.site)
        if view is None:
            view = views[system.site] = SiteView(system.site, False, (), ())
        networks = view.networks
        prefix = _host_prefix(system.address)
        if not view.told and prefix:
            networks = (*networks, prefix)
        views[system.site] = SiteView(view.name, view.told, tuple(dict.fromkeys(networks)),
                                      tuple(dict.fromkeys((*view.systems, (system.kind, system.name)))))
    return tuple(views.values())


def _host_prefix(address: str | None) -> str | None:
    """"10.40.0.8" -> "10.40.0.8/32" (None for no address, or a stand-in such as "the home router")."""
    try:
        return str(ipaddress.ip_network(address or "")) if address else None
    except ValueError:
        return None


def predict_case(model: ModelInput, down: Collection[str] | None) -> OutagePrediction:
    """The prediction if the sites ``down`` went down together (None: every site)."""
    if inferred(model.sites):
        return predict_inferred(model, down)
    return predict(model.facts, model.profile, model.workloads, model.current, model.assumptions,
                   sites=model.sites, down=None if down is None else frozenset(down), possible_now=model.possible_now)


def site_cases(model: ModelInput, sites: Sequence[SiteView], names: Mapping[str, str], core: Sequence[str],
               everything: OutagePrediction | None = None) -> tuple[OutageCase, ...]:
    """Each site alone; on a site's network with two or more others, every site but that one together
    (a branch behind a datacentre asks what is left where it stands when the rest is lost); every seen site
    together when two or more are seen beside the site where the VPN ends (unseen: the seen ones are the
    sites IT knows by their systems); then (several sites) all of them together; ``everything``: the
    all-down prediction when the caller already has it."""
    baseline = predict_case(model, ())
    downs: list[tuple[str, ...]] = [(s.name,) for s in sites]
    here = model.facts.site_here if model.facts.on_site else None
    others = tuple(s.name for s in sites if s.name != here)
    if here in {s.name for s in sites} and len(others) > 1:
        downs.append(others)
    seen = tuple(s.name for s in sites if s.name != VPN_END)
    if len(seen) > 1 and len(seen) < len(sites) and seen not in downs:
        downs.append(seen)
    out = [make_case(model, down, predict_case(model, down), baseline, names, core) for down in downs]
    if len(sites) > 1:
        every = tuple(s.name for s in sites)  # with the predict default: every site down, named or not
        out.append(make_case(model, every, everything or predict_case(model, None), baseline, names, core))
    return tuple(out)


def make_case(model: ModelInput, down: Sequence[str], prediction: OutagePrediction, baseline: OutagePrediction,
              names: Mapping[str, str], core: Sequence[str]) -> OutageCase:
    shown = [s for s in down if s != UNNAMED or any(x.site == UNNAMED for x in prediction.site_systems)] or down
    return OutageCase(tuple(down), outage_verdict(prediction, core), prediction,
                      case_answer(shown, prediction, baseline, names, core))


def _place(site: str | None) -> str:
    return "at a site no profile names" if site in (None, UNNAMED) else f"in {site}"


#: Why a workload is lost, in plain words, per kind of cause ("" says nothing more).
_PLAIN: Mapping[CauseKind, str] = {
    CauseKind.SIGN_IN: "the sign-in server {subject} is {place}",
    CauseKind.TUNNEL: "your VPN goes through {site}",
    CauseKind.VPN_ONLY: "{subject} is reachable only through your VPN, which goes through {site}",
    CauseKind.DNS: "the servers that look up names are {place}",
    CauseKind.PAC: "the proxy settings file is {place}",
    CauseKind.PROXY: "the proxy {subject} is {place}",
    CauseKind.HOSTED: "{subject} is {place}",
    CauseKind.INTERNET_VIA: "your way to the internet goes out through {site}",
}


#: The same, when the cause is the site where the VPN ends (inferred, unseen): what is lost there is the tunnel.
_AT_VPN_END: Mapping[CauseKind, str] = {
    CauseKind.TUNNEL: "it goes through your VPN, and the site where it ends is down",
    CauseKind.DNS: "the servers that look up names are reached through your VPN, and the site where it ends is down",
    CauseKind.VPN_ONLY: "{subject} is reachable only through your VPN, and the site where it ends is down",
}


def _why(prediction: OutagePrediction, wid: str) -> str:
    row = next(w for w in prediction.workloads if w.id == wid)
    phrases = [(_AT_VPN_END if c.site == VPN_END and c.kind in _AT_VPN_END else _PLAIN)[c.kind].format(
                   subject=c.subject, place=_place(c.site), site=c.site or "the site")
               for c in row.causes if c.kind in _PLAIN]
    return "; ".join(dict.fromkeys(phrases))


def case_answer(down: Sequence[str], prediction: OutagePrediction, baseline: OutagePrediction,
                names: Mapping[str, str], core: Sequence[str]) -> str:
    """One sentence: what this person would lose (or find impaired) that works with every site up."""
    place = down[0] if len(down) == 1 else " and ".join((", ".join(down[:-1]), down[-1]))
    head = f"If {place} went down" if len(down) == 1 else f"If {place} {'both' if len(down) == 2 else 'all'} went down"
    if down and down[0] == UNNAMED and len(down) == 1:
        head = "If the site no profile names went down"
    # per fate, the workloads by their reason (in order), so a reason several share is said once
    changed: dict[Fate, dict[str, list[str]]] = {Fate.FAILS: {}, Fate.DEGRADED: {}, Fate.UNCERTAIN: {}}
    for wid in core:
        if not any(w.id == wid for w in prediction.workloads):
            continue
        row = next(w for w in prediction.workloads if w.id == wid)
        # Per VPN behaviour against the same behaviour with every site up: a loss the VPN dropping causes
        # whichever site is down is not this case's.
        worse = [b for b in prediction.behaviours if _fate(prediction, wid, b).rank > _fate(baseline, wid, b).rank]
        fate = worst(_fate(prediction, wid, b) for b in worse)
        if worse and fate in changed:
            short = names.get(wid, wid).split(" (")[0]
            why = _why(prediction, wid)
            if len(prediction.behaviours) == 2 and row.if_vpn_stays is fate and row.if_vpn_drops.rank < fate.rank:
                why = "; ".join(x for x in (why, "if your VPN stays connected") if x)
            changed[fate].setdefault(why, []).append(short)

    def said(fate: Fate) -> str:
        return listing([f"{listing(shorts)} ({why})" if why else listing(shorts)
                        for why, shorts in changed[fate].items()])

    parts = []
    if changed[Fate.FAILS]:
        parts.append(f"you would lose {said(Fate.FAILS)}")
    if changed[Fate.DEGRADED]:
        parts.append(f"{said(Fate.DEGRADED)} would be slow or unreliable")
    if changed[Fate.UNCERTAIN]:
        parts.append(f"you might lose {said(Fate.UNCERTAIN)} (it depends on something this check "
                     "could not settle)")
    return f"{head}: " + ("; ".join(parts) if parts else "nothing changes for you") + "."


def _fate(prediction: OutagePrediction, wid: str, behaviour: str) -> Fate:
    row = next((w for w in prediction.workloads if w.id == wid), None)
    return getattr(row, f"if_vpn_{behaviour}") if row else Fate.WORKS


def settings_profile(sites: Sequence[SiteProfile], chosen: SiteProfile | None) -> SiteProfile:
    """The laptop's settings and the networks the gathering needs, from several profiles: the chosen
    profile's settings (else the first's), every profile's networks and named systems (to tell whether
    the laptop is on the office network and which addresses are a site's)."""
    base = chosen or sites[0]
    return SiteProfile(
        name=base.name, networks=tuple(n for s in sites for n in s.networks),
        vpn_gateways=tuple(h for s in sites for h in s.vpn_gateways),
        dns_servers=tuple(h for s in sites for h in s.dns_servers), proxies=tuple(h for s in sites for h in s.proxies),
        pac_hosts=tuple(h for s in sites for h in s.pac_hosts),
        federation_hosts=tuple(h for s in sites for h in s.federation_hosts),
        vpn_on_site_down=base.vpn_on_site_down, pac_unreachable=base.pac_unreachable, vpn_mode=base.vpn_mode,
        vpn_exclude=base.vpn_exclude, vpn_failover=base.vpn_failover, from_file=base.from_file)



def one_case(model: ModelInput, down: Sequence[str], names: Mapping[str, str], core: Sequence[str]) -> OutageCase:
    """The case of the sites ``down`` going down together (``netcheck check --site-down``)."""
    return make_case(model, down, predict_case(model, down), predict_case(model, ()), names, core)


def site_down_names(asked: Sequence[str], sites: Sequence[SiteProfile]) -> tuple[str, ...]:
    """The site names ``asked`` for, as the sites spell them (case and surrounding spaces aside): told
    sites, or the inferred ones (:mod:`netcheck.assess.site_infer`) a check without a profile shows;
    ConfigError naming the known sites for one that is not known."""
    known = all_site_names(sites or (SiteProfile(),))
    by_key = {n.casefold(): n for n in known}
    out = []
    for name in asked:
        found = by_key.get(name.strip().casefold())
        if found is None:
            raise ConfigError(f"--site-down {name!r} is not a site netcheck knows; the sites are: "
                              + ", ".join(known) + " (name them in a site profile: --site-profile FILE)")
        out.append(found)
    return tuple(dict.fromkeys(out))
