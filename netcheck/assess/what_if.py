"""The facts of a prediction as JSON (``outage.facts`` in report schema v2), and the prediction for any
set of sites recomputed from them, without the laptop and without a network (pure).

The collector (dashboard) calls :func:`what_if` on a stored report::

    from netcheck.assess.what_if import what_if
    rows = what_if(report, {"Paris"})   # [{"id", "stays", "drops", "causes": [...]}, ...]

What the facts hang on that the agent could not read (on the office network: the VPN profile used
from home, whether the VPN client keeps the home router's resolver) travels as ``assumptions``, each
answer a patch of the facts (:class:`netcheck.assess.outage.FactsPatch`), so what_if hedges exactly as the
laptop did. An assumption whose answers are not patches (a caller's own functions) is left out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from typing import Any

from netcheck.assess.outage import (
    Assumption,
    Dependency,
    FactsPatch,
    Fate,
    ModelInput,
    ProxyPath,
    Resolver,
    Route,
    SiteFacts,
    fallback_site,
    vpn_sites,
)
from netcheck.assess.site_cases import predict_case
from netcheck.site_profile import SiteProfile


def _route(r: Route) -> dict[str, Any]:
    return {"address": r.address, "interface": r.interface, "kind": r.kind, "vpn": r.kind == "vpn", "note": r.note}


def _profile(p: SiteProfile) -> dict[str, Any]:
    return {"name": p.name, "told": p.from_file, "networks": [str(n) for n in p.networks],
            "vpn_gateways": list(p.vpn_gateways), "dns_servers": list(p.dns_servers), "proxies": list(p.proxies),
            "pac_hosts": list(p.pac_hosts), "federation_hosts": list(p.federation_hosts),
            "vpn_failover": list(p.vpn_failover), "internet_via": p.internet_via,
            "vpn_on_site_down": p.vpn_on_site_down,
            "pac_unreachable": p.pac_unreachable, "vpn_mode": p.vpn_mode}


def facts_to_dict(model: ModelInput, sites_of: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """``outage.facts``: what the prediction reasons over. ``sites_of``: address -> the site hosting it
    (informational: :func:`what_if` recomputes it from the profiles)."""
    f = model.facts
    where = sites_of or {}

    def route(r: Route) -> dict[str, Any]:
        return {**_route(r), "site": where.get(r.address)}

    def proxy(p: ProxyPath) -> dict[str, Any]:
        return {"source": p.source, "proxy": p.proxy, "proxy_route": route(p.proxy_route) if p.proxy_route else None,
                "pac_url": p.pac_url, "pac_route": route(p.pac_route) if p.pac_route else None,
                "without_pac": p.without_pac,
                "without_pac_route": route(p.without_pac_route) if p.without_pac_route else None,
                **({"pac_unread": True} if p.pac_unread else {})}

    def resolvers(items: tuple[Resolver, ...]) -> list[dict[str, Any]]:
        return [{"address": r.address, "route": route(r.route)} for r in items]

    def dependencies(items: tuple[Dependency, ...]) -> list[dict[str, Any]]:
        return [{"workload": d.workload, "role": d.role, "host": d.host, "resolved": d.resolved,
                 "addresses": [r.address for r in d.routes], "routes": [route(r) for r in d.routes],
                 "proxy": proxy(d.proxy), **({"measured": d.measured} if d.measured else {})} for d in items]

    def patch(w: FactsPatch) -> dict[str, Any]:
        return {"vpn_interfaces": None if w.vpn_interfaces is None else list(w.vpn_interfaces),
                "resolvers": None if w.resolvers is None else resolvers(w.resolvers),
                "dependencies": None if w.dependencies is None else dependencies(w.dependencies),
                "drop_resolver": w.drop_resolver, "on_site": w.on_site}

    carried = [a for a in model.assumptions if all(isinstance(w, FactsPatch) for _, w in a.worlds)]
    return {
        "on_site": f.on_site, "vpn_interfaces": list(f.vpn_interfaces),
        "vpn_sites": list(vpn_sites(model.sites or (model.profile,), fallback_site(model.sites or (model.profile,)))),
        "identity": f.identity,
        "internal_hosts": sorted(f.internal_hosts), "public_site_systems": f.public_site_systems,
        "home_link_slow": f.home_link_slow, "site_here": f.site_here, "public_egress": f.public_egress,
        "vpn_gateway": f.vpn_gateway,
        "office": patch(f.office) if f.office is not None else None, "resolvers": resolvers(f.resolvers),
        "host_addresses": [{"host": h, "addresses": list(a)} for h, a in f.host_addresses],
        "dependencies": dependencies(f.dependencies),
        "workloads": list(model.workloads),
        "measured_now": [{"id": w, "fate": str(model.current.get(w, Fate.WORKS)),
                          **({"possible": [str(f) for f in model.possible_now[w]]} if w in model.possible_now else {})}
                         for w in dict.fromkeys((*model.current, *model.possible_now))],
        "settings": _profile(model.profile),
        "profiles": [_profile(p) for p in model.sites],
        "assumptions": [{"question": a.question, "settle": a.settle,
                         "worlds": [{"label": label, "patch": patch(w)} for label, w in a.worlds
                                    if isinstance(w, FactsPatch)]} for a in carried],
    }


class FactsError(ValueError):
    """``outage.facts`` is missing or not in the shape netcheck writes."""


def _route_from(d: Any) -> Route:
    return Route(str(d["address"]), d.get("interface"), str(d["kind"]), d.get("note"))


def _profile_from(d: Mapping[str, Any]) -> SiteProfile:
    return SiteProfile(
        name=str(d["name"]), networks=tuple(ipaddress.ip_network(n, strict=False) for n in d.get("networks", [])),
        vpn_gateways=tuple(d.get("vpn_gateways", [])), dns_servers=tuple(d.get("dns_servers", [])),
        proxies=tuple(d.get("proxies", [])), pac_hosts=tuple(d.get("pac_hosts", [])),
        federation_hosts=tuple(d.get("federation_hosts", [])), vpn_failover=tuple(d.get("vpn_failover", [])),
        internet_via=d.get("internet_via"), vpn_on_site_down=d.get("vpn_on_site_down"),
        pac_unreachable=d.get("pac_unreachable"),
        vpn_mode=d.get("vpn_mode"), from_file=bool(d.get("told", False)))


def model_from_dict(data: Mapping[str, Any]) -> ModelInput:
    """The inverse of :func:`facts_to_dict`."""
    try:
        def proxy(p: Mapping[str, Any]) -> ProxyPath:
            return ProxyPath(str(p["source"]), p.get("proxy"),
                             _route_from(p["proxy_route"]) if p.get("proxy_route") else None, p.get("pac_url"),
                             _route_from(p["pac_route"]) if p.get("pac_route") else None, p.get("without_pac"),
                             _route_from(p["without_pac_route"]) if p.get("without_pac_route") else None,
                             bool(p.get("pac_unread", False)))

        def resolvers(items: Any) -> tuple[Resolver, ...]:
            return tuple(Resolver(str(r["address"]), _route_from(r["route"])) for r in items)

        def dependencies(items: Any) -> tuple[Dependency, ...]:
            return tuple(Dependency(str(d["workload"]), str(d["role"]), str(d["host"]),
                                    tuple(_route_from(r) for r in d["routes"]), proxy(d["proxy"]),
                                    bool(d.get("resolved", True)), d.get("measured")) for d in items)

        def patch(p: Mapping[str, Any]) -> FactsPatch:
            return FactsPatch(
                vpn_interfaces=None if p.get("vpn_interfaces") is None else tuple(p["vpn_interfaces"]),
                resolvers=None if p.get("resolvers") is None else resolvers(p["resolvers"]),
                dependencies=None if p.get("dependencies") is None else dependencies(p["dependencies"]),
                drop_resolver=p.get("drop_resolver"), on_site=p.get("on_site"))

        facts = SiteFacts(
            on_site=bool(data["on_site"]), vpn_interfaces=tuple(data["vpn_interfaces"]),
            resolvers=resolvers(data["resolvers"]), dependencies=dependencies(data["dependencies"]),
            identity=str(data.get("identity", "unknown")), internal_hosts=frozenset(data.get("internal_hosts", [])),
            public_site_systems=bool(data.get("public_site_systems", True)), home_link_slow=data.get("home_link_slow"),
            site_here=data.get("site_here"), public_egress=data.get("public_egress"),
            vpn_gateway=data.get("vpn_gateway"),
            office=patch(data["office"]) if data.get("office") else None,
            host_addresses=tuple((str(e["host"]), tuple(map(str, e["addresses"])))
                                 for e in data.get("host_addresses", [])))
        assumptions = tuple(Assumption(str(a["question"]), str(a.get("settle", "")),
                                       tuple((str(w["label"]), patch(w["patch"])) for w in a["worlds"]))
                            for a in data.get("assumptions", []))
        return ModelInput(facts, _profile_from(data["settings"]),
                          tuple(_profile_from(p) for p in data.get("profiles", [])), tuple(data["workloads"]),
                          {str(m["id"]): Fate(m["fate"]) for m in data.get("measured_now", [])
                           if m["fate"] != Fate.WORKS.value}, assumptions,
                          {str(m["id"]): tuple(Fate(f) for f in m["possible"]) for m in data.get("measured_now", [])
                           if m.get("possible")})
    except (KeyError, TypeError, ValueError) as exc:
        raise FactsError(f"outage.facts is not in the shape netcheck writes: {exc!r}") from exc


def what_if(report: Mapping[str, Any], down: Collection[str]) -> list[dict[str, Any]]:
    """Per workload, its fate if the sites ``down`` went down together, for each VPN behaviour, with the
    causes that decided it: ``[{"id", "stays", "drops", "causes": [cause records]}]``.

    ``report``: a report of schema version 2 (its ``outage.facts``); raises :class:`FactsError` for one
    without them (version 1, or a laptop offline). ``down``: site names as in ``outage.sites``.
    """
    outage = report.get("outage")
    if not isinstance(outage, Mapping) or not isinstance(outage.get("facts"), Mapping):
        raise FactsError("this report carries no outage facts (schema version 1, or no prediction was made)")
    prediction = predict_case(model_from_dict(outage["facts"]), down)
    return [{"id": w.id, "stays": str(w.if_vpn_stays), "drops": str(w.if_vpn_drops),
             "causes": [c.as_dict() for b in ("stays", "drops") for c in w.causes_by.get(b, ())]}
            for w in prediction.workloads]
