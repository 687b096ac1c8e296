"""Sites inferred without a site profile, and the prediction over them, hedged where it must be (pure).

Without a profile netcheck still sees the systems the laptop depends on at a site: resolvers, proxies,
PAC servers and federation (AD FS) hosts reached through the VPN, and any destination at an internal
address reached through the VPN or on the office LAN. :func:`infer_sites` groups them by network, with
a rule that holds in real organisations, not in one lab:

- an internal IPv4 address (RFC 1918, RFC 6598) by its /16: organisations number a site, or a
  datacentre, out of one /16 of 10.0.0.0/8 far more often than they split a /16 across sites;
- an IPv6 unique local address (fc00::/7) by its /48, the prefix RFC 4193 gives one site;
- a public address of a system reached through the tunnel by its /24 (IPv4) or /48 (IPv6): the
  smallest block routed on the internet, and the usual site assignment; a group of public
  addresses alone is a site only if a resolver reached through the tunnel is in it (a federation
  host or proxy on the internet may be a cloud service: that stays an assumption, see
  ``netcheck.assess.outage.public_systems_assumption``);
- the addresses of one host (IPv4 and IPv6) are one site, so the networks they fall in are joined;
- one group of IPv4 networks only and one of IPv6 networks only, left unjoined, are taken as one
  site (a dual-stack site whose systems were seen in one family each). This errs towards fewer
  sites: losing the joined site loses both, the cautious answer. With more such groups on either
  side they stay apart, since nothing tells which pairs with which.

Each group is an inferred site, named after its first network ("unnamed site 10.20.0.0/16"), not told
(``from_file`` False), with its networks.

Which site hosts the VPN concentrator: most VPN clients add a host route to their server through the
physical interface, which the routing table shows without admin rights
(:func:`netcheck.assess.site_decisions.vpn_gateway`); the concentrator's public network then groups like
a resolver's, and its site is known. Where it cannot be read (WireGuard marks its packets instead; a
client that adds no such route), the laptop uses a VPN and at least one group is seen, the inferred
sites end with :data:`VPN_END`, "the site where your VPN ends": unseen (no networks), it may be one of
the seen sites or a site of its own, which the laptop cannot tell. :func:`predict_inferred` evaluates
every answer (the concentrator at a site of its own, or at each seen site, the two names then one site)
and where they disagree the fate is ``uncertain`` with the fates it could have and the assumption named;
the fix is a site profile (``vpn_gateways``). So a laptop that sees one group of systems is no longer
taken to have its concentrator there: losing that site alone, or the site where the VPN ends alone, is
hedged where the answers differ.

One group and the concentrator known to be there (or no VPN), or no group: nothing is inferred, and
netcheck reasons about "the corporate site" as it always has.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace

from netcheck.assess.outage import (
    Cause,
    CauseKind,
    Fate,
    ModelInput,
    OutagePrediction,
    SiteFacts,
    is_internal,
    predict,
)
from netcheck.names import proxy_host, url_host
from netcheck.site_profile import SiteProfile

#: The name of every inferred site starts with this.
PREFIX = "unnamed site "

#: A stand-in gateway name for a world where a site hosts the VPN concentrator.
_GATEWAY = "the VPN concentrator (assumed)"

#: The inferred site the VPN tunnel ends at when the concentrator's address cannot be read: no networks.
VPN_END = "the site where your VPN ends"

QUESTION = "which of your sites hosts the VPN concentrator"


def group_network(address: str, tunneled: bool) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The network an address is grouped by (see the module docstring), or None: not a site's."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return None
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return None
    if is_internal(address):
        return ipaddress.ip_network(f"{ip}/{16 if ip.version == 4 else 48}", strict=False)
    if tunneled:
        return ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 48}", strict=False)
    return None


def _systems(facts: SiteFacts) -> dict[str, list[tuple[str, bool]]]:
    """Per system (``dns ADDRESS`` for a resolver, else its host), its addresses and whether each is
    reached through the tunnel."""
    out: dict[str, list[tuple[str, bool]]] = {}

    def add(key: str, address: str, kind: str) -> None:
        tunneled = kind == "vpn" or (facts.on_site and kind not in ("loopback", "unreachable"))
        if kind == "vpn" or is_internal(address) and (tunneled or facts.on_site):
            out.setdefault(key, []).append((address, tunneled))

    for resolver in facts.resolvers:
        add(f"dns {resolver.address}", resolver.route.address, resolver.route.kind)
    if facts.vpn_gateway:  # the concentrator is the organisation's: its public network is a site's
        out.setdefault(f"vpn {facts.vpn_gateway}", []).append((facts.vpn_gateway, True))
    others = dict(facts.host_addresses)
    for d in facts.dependencies:
        p = d.proxy
        for host, route in ((proxy_host(p.proxy), p.proxy_route), (url_host(p.pac_url), p.pac_route)):
            if host and route:  # the host's other addresses are reached the way its route is
                for address in dict.fromkeys((route.address, *others.get(host, ()))):
                    add(host, address, route.kind)
        internal = any(is_internal(r.address) for r in d.routes)
        for r in d.routes:
            if d.role == "federation" or internal:
                add(d.host, r.address, r.kind)
    return out


def infer_sites(facts: SiteFacts) -> tuple[SiteProfile, ...]:
    """The inferred sites, when the systems fall in two or more groups, or in one while the laptop uses a
    VPN whose concentrator's address could not be read (then :data:`VPN_END` comes last); else ()."""
    groups: list[list[str]] = []  # each: networks, in the order seen
    resolver_nets: set[str] = set()  # networks of resolvers reached through the tunnel: the organisation's
    for key, addresses in _systems(facts).items():
        nets = [str(n) for a, tunneled in addresses if (n := group_network(a, tunneled)) is not None]
        if key.startswith(("dns ", "vpn ")):
            resolver_nets.update(nets)
        joined = [g for g in groups if set(g) & set(nets)]
        merged = list(dict.fromkeys(n for g in [*joined, nets] for n in g))
        groups = [g for g in groups if g not in joined]
        if merged:
            groups.append(merged)
    v4 = [g for g in groups if all(":" not in n for n in g)]
    v6 = [g for g in groups if all(":" in n for n in g)]
    if len(v4) == 1 and len(v6) == 1:  # one site's two families, no dual-stack host to join them
        groups = [g for g in groups if g not in (v4[0], v6[0])] + [v4[0] + v6[0]]
    # Public addresses alone do not make a site, unless a resolver the VPN hands out, or the VPN
    # concentrator, is there: a
    # federation host or proxy on the internet reached through the tunnel may be the site's or a cloud
    # service's, which the laptop cannot tell; it stays under the assumption that says so
    # (netcheck.assess.outage.public_systems_assumption).
    groups = [g for g in groups if any(is_internal(n.split("/")[0]) or n in resolver_nets for n in g)]
    unseen = bool(groups and facts.vpn_interfaces and not facts.vpn_gateway)
    if len(groups) < 2 and not unseen:
        return ()
    out = []
    for nets in groups:
        first = next((n for n in nets if ":" not in n), nets[0])
        out.append(SiteProfile(name=PREFIX + first,
                               networks=tuple(ipaddress.ip_network(n) for n in dict.fromkeys((first, *nets)))))
    return (*out, *((SiteProfile(name=VPN_END),) if unseen else ()))


def inferred(sites: Sequence[SiteProfile]) -> bool:
    """Are these sites inferred ones (several, none told)?"""
    return len(sites) > 1 and all(not s.from_file and (s.name.startswith(PREFIX) or s.name == VPN_END)
                                  for s in sites)


def gateway_worlds(sites: Sequence[SiteProfile], gateway: str | None = None
                   ) -> list[tuple[str, tuple[SiteProfile, ...], str | None]]:
    """The answers to :data:`QUESTION`, each (label, the sites with the concentrator placed, the seen site
    that is also :data:`VPN_END` in that answer, else None): with :data:`VPN_END` among the sites, the
    concentrator at a site of its own (first) or at each seen site; without it, at each site or at none of
    them; only the one whose site holds ``gateway``, the concentrator's address, when the routing table
    showed it."""
    def at(site: SiteProfile, name: str = _GATEWAY) -> tuple[SiteProfile, ...]:
        return tuple(replace(x, vpn_gateways=(name,)) if x is site else x for x in sites)

    known = next((s for s in sites if gateway and s.holds_address(gateway)), None)
    if known is not None:
        return [(f"it is at {known.name}", at(known, gateway or _GATEWAY), None)]
    end = next((s for s in sites if s.name == VPN_END), None)
    seen = [(f"if it is at {s.name}", at(s), s.name if end else None) for s in sites if s is not end]
    if end is not None:
        return [("if it is at a site of its own", at(end), None), *seen]
    return [*seen, ("if it is at none of them", tuple(sites), None)]


def place_question(site: str) -> str:
    """What a laptop on an inferred site's network cannot tell when that site is lost."""
    return (f"whether your network is {site} itself (you would work from home) or a place, such as a branch, "
            "that reaches everything through it (you would stay there, cut off)")


def predict_inferred(model: ModelInput, down: Collection[str] | None) -> OutagePrediction:
    """The prediction for the inferred sites ``down`` (None: all of them), hedged over where the VPN
    concentrator is when the laptop uses a VPN, and, when the site whose networks hold the laptop's own
    address is among them, over whether the person goes home or stays where they are, cut off: a network
    numbered out of a site's block may be that site's own or a branch behind it (a profile tells: a
    branch is a site of its own, with ``internet_via``)."""
    names = frozenset(s.name for s in model.sites) if down is None else frozenset(down)

    def one(facts: SiteFacts, sites: tuple[SiteProfile, ...]) -> OutagePrediction:
        return predict(facts, model.profile, model.workloads, model.current, model.assumptions,
                       sites=sites, down=names, possible_now=model.possible_now)

    def at_seen(facts: SiteFacts, sites: tuple[SiteProfile, ...], same: str) -> OutagePrediction:
        """The concentrator at the seen site ``same``: the two names are one site. Of one seen site, that is
        the one site netcheck has always reasoned about (its systems as a single site's)."""
        lost = names | ({same, VPN_END} if names & {same, VPN_END} else set())
        if len(sites) == 2:
            return predict(facts, model.profile, model.workloads, model.current, model.assumptions,
                           down=None if lost else (), possible_now=model.possible_now)
        return predict(facts, model.profile, model.workloads, model.current, model.assumptions,
                       sites=sites, down=lost, possible_now=model.possible_now)

    def over_gateways(facts: SiteFacts) -> OutagePrediction:
        if not facts.vpn_interfaces:
            return one(facts, model.sites)
        worlds = gateway_worlds(model.sites, facts.vpn_gateway)
        if len(worlds) == 1:
            return one(facts, worlds[0][1])
        return merge_worlds([(label, at_seen(facts, sites, same) if same else one(facts, sites))
                             for label, sites, same in worlds], QUESTION, "vpn_gateways")

    here = model.facts.site_here
    if not (model.facts.on_site and model.facts.office is not None and here in names):
        return over_gateways(model.facts)
    return merge_worlds([("if it is that site", over_gateways(model.facts)),
                         ("if it is a place behind it", over_gateways(replace(model.facts, stays_cut_off=True)))],
                        place_question(here), "networks, and a branch as a site of its own with internet_via")


def merge_worlds(worlds: Sequence[tuple[str, OutagePrediction]], question: str, settle: str) -> OutagePrediction:
    """One prediction from the predictions of each answer to ``question``: a fate the answers disagree on
    is UNCERTAIN, with the fates possible and the question named (the first world is the base)."""
    base = worlds[0][1]
    asked = (f"{question} (netcheck cannot read it from this laptop; IT can state it in the site profile: "
             f"{settle})")
    rows = []
    for row in base.workloads:
        others = [(label, next(w for w in p.workloads if w.id == row.id)) for label, p in worlds]
        possible = dict(row.possible)
        fates = {"stays": row.if_vpn_stays, "drops": row.if_vpn_drops}
        for b in fates:
            seen = _fates(getattr(w, f"if_vpn_{b}") if getattr(w, f"if_vpn_{b}") is not Fate.UNCERTAIN
                          else w.possible.get(b, ()) for _, w in others)
            if len(seen) > 1:
                possible[b] = tuple(sorted(seen, key=lambda f: f.rank))
                fates[b] = Fate.UNCERTAIN
        if possible == dict(row.possible):
            rows.append(row)
            continue
        hang = Cause(CauseKind.ASSUMPTION, asked, None, f"it hangs on {asked}")
        lines = [f"[assumption] {label}: {w.if_vpn_stays.value} if the VPN stays, {w.if_vpn_drops.value} if it "
                 "drops" for label, w in others]
        by = {b: (*row.causes_by.get(b, ()), replace(hang, behaviour=b)) for b in possible}
        rows.append(replace(row, if_vpn_stays=fates["stays"], if_vpn_drops=fates["drops"],
                            evidence=(*row.evidence, f"[assumption] this hangs on {asked}", *lines),
                            causes=(*row.causes, hang), causes_by={**row.causes_by, **by}, possible=possible,
                            assumptions=(*row.assumptions, question)))
    return replace(base, workloads=tuple(rows))


def _fates(items: Iterable[Fate | tuple[Fate, ...]]) -> set[Fate]:
    out: set[Fate] = set()
    for f in items:
        out |= set(f) if isinstance(f, tuple) else {f}
    return out
