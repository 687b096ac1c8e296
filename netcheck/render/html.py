"""The HTML report: one self-contained page a helpdesk can read, keep and print.

Rendered from the JSON report dict (what ``netcheck.render.json.report_to_dict``
returns and what the collector stores), so a stored report renders exactly as
the agent renders it. Self-contained: inline CSS and inline SVG, no scripts, no
fonts, images or styles from anywhere else. Reports can be hostile (they come
from laptops), so every string taken from the report goes through ``_e``, and
nothing from the report ever becomes a tag, an attribute name, a class or a URL.
Unknown or missing values render as text or are left out; they never raise.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from netcheck.models import Verdict
from netcheck.policy import Policy

#: Drawn at most, so that a report with thousands of probes stays readable.
MAX_PATHS_PER_WORKLOAD = 4
MAX_ROUTES_PER_PATH = 4
MAX_LATENCY_BARS = 40
MAX_MEDIA_PROBES = 3

_VERDICT_TONE = {"READY": "good", "AT_RISK": "warn", "NOT_READY": "bad", "UNKNOWN": "unknown"}
_STATUS = {"ok": ("OK", "good"), "degraded": ("Degraded", "warn"), "failed": ("Failed", "bad"),
           "not_tested": ("Not tested", "muted"), "no_route": ("No route from this laptop", "muted")}
_FATE = {"works": ("Works", "good"), "degraded": ("Degraded", "warn"), "uncertain": ("Uncertain", "warn"),
         "fails": ("Fails", "bad")}
_SEVERITY = {"critical": ("Critical", "bad", 0), "warning": ("Warning", "warn", 1), "info": ("Note", "info", 2)}
_SPLIT = {"split_out": ("Direct (split out)", "good"), "selective": ("Partly direct (selective)", "warn"),
          "tunneled": ("Through the VPN (tunneled)", "warn"), "no_vpn": ("No VPN", "muted"),
          "not_tested": ("Not tested", "muted")}
_SITE_KIND = {"vpn": "VPN tunnel", "dns": "DNS server", "proxy": "Web proxy",
              "pac": "Proxy configuration (PAC) file", "federation": "Sign-in server (federation)"}
_ROUTE_KIND = {"physical": "physical network", "vpn": "VPN", "virtual": "virtual adapter",
               "loopback": "loopback", "unreachable": "no route", "unknown": "route not analysed"}
_PROXY_SOURCE = {"pac": "set by the PAC file", "environment": "set in the environment",
                 "os": "set in system settings", "none": ""}
_ROLE = {"service": "service", "media": "calls (media)", "federation": "sign-in (federation)"}
_BEHAVIOUR = {"stays": "If the VPN stays connected", "drops": "If the VPN disconnects"}


def render_html(report: Mapping[str, Any], *, policy: Policy | None = None) -> str:
    """Render a JSON report dict as one self-contained HTML page.

    ``policy`` supplies the marks drawn on the charts (100 ms latency, Teams
    media RTT/loss/jitter); the defaults are ``endpoints/policy.toml``'s.
    """
    marks = policy or Policy()
    outage = _map(report.get("outage"))
    names = _workload_names(report)
    sections = [
        _verdict_banner(report),
        _outage_section(outage, names) if outage else "",
        _sites_section(outage) if outage else "",
        _workloads_section(report),
        _todo_section(report, outage, names),
        _paths_section(report, outage, names),
        _latency_section(report, names, marks),
        _media_section(report, marks),
        _split_tunnel_section(outage, names) if outage else "",
        _site_systems_section(outage) if outage else "",
        _technical_section(report),
    ]
    verdict = _verdict_words(report.get("verdict"))
    title = f"netcheck: {verdict}, {_when(report.get('measured_at'))}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "".join(s for s in sections if s)
        + "</main>\n" + _footer(report) + "</body>\n</html>\n"
    )


# --- small helpers ---------------------------------------------------------------------------------------------


def _e(value: object) -> str:
    """Escape any value for HTML text and attribute values (also inside inline SVG)."""
    return html.escape("" if value is None else str(value), quote=True)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _maps(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in _list(value) if isinstance(v, Mapping)]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def _fit(text: str, chars: int) -> str:
    """Shorten ``text`` to ``chars`` characters for a diagram box (the full text is in its <title>)."""
    return text if len(text) <= chars else text[: max(chars - 1, 1)] + "\u2026"


def _pill(label: str, tone: str) -> str:
    return f'<span class="pill tone-{tone}">{_e(label)}</span>'


def _verdict_words(value: Any) -> str:
    try:
        return Verdict(value).words
    except ValueError:
        return _text(value) or "UNKNOWN"


def _when(value: Any) -> str:
    """``2026-11-28T16:00:00Z`` -> ``2026-11-28 16:00 UTC``; anything unparsable is shown as given."""
    text = _text(value)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if moment.utcoffset() == timedelta(0):
        return moment.strftime("%Y-%m-%d %H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M %z").strip()


def _workload_names(report: Mapping[str, Any]) -> dict[str, str]:
    return {_text(w.get("id")): _text(w.get("name")) or _text(w.get("id")) for w in _maps(report.get("workloads"))}


def _name(names: Mapping[str, str], wid: Any) -> str:
    key = _text(wid)
    return names.get(key) or key.replace("_", " ").capitalize()


def _short(name: str) -> str:
    """"Exchange Online (Outlook, mail, calendar)" -> "Exchange Online", for diagrams and charts."""
    return name.split(" (")[0]


def _section(ident: str, heading: str, body: str, intro: str = "") -> str:
    lead = f'<p class="intro">{intro}</p>\n' if intro else ""
    return (f'<section id="{ident}" aria-labelledby="{ident}-h">\n<h2 id="{ident}-h">{_e(heading)}</h2>\n'
            f"{lead}{body}</section>\n")


def _items(lines: Iterable[Any], cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<ul{attr}>" + "".join(f"<li>{_e(line)}</li>" for line in lines) + "</ul>\n"


# --- verdict and the site-outage answer -------------------------------------------------------------------------


def _verdict_banner(report: Mapping[str, Any]) -> str:
    verdict = _text(report.get("verdict"))
    tone = _VERDICT_TONE.get(verdict, "unknown")
    tenant = _text(report.get("tenant"))
    about = f" for {_e(tenant)}" if tenant else ""
    return (f'<header class="verdict tone-{tone}">\n'
            f'<p class="kicker">Can this laptop work on Microsoft 365{about}? '
            f"Checked {_e(_when(report.get('measured_at')))}</p>\n"
            f'<h1 id="verdict">{_e(_verdict_words(verdict))}</h1>\n'
            f'<p class="summary">{_e(report.get("summary"))}</p>\n</header>\n')


def _behaviour_label(behaviour: str, outage: Mapping[str, Any]) -> str:
    behaviours = [_text(b) for b in _list(outage.get("behaviours"))]
    has_vpn = any(_text(s.get("kind")) == "vpn" for s in _maps(outage.get("site_systems")))
    if behaviours == [behaviour] and not has_vpn:
        return "If the site went down"
    return _BEHAVIOUR.get(behaviour, f"If the VPN {behaviour}")


def _outage_section(outage: Mapping[str, Any], names: Mapping[str, str]) -> str:
    behaviours = [b for b in (_text(b) for b in _list(outage.get("behaviours"))) if b in _BEHAVIOUR]
    verdict = _text(outage.get("verdict"))
    parts = [f'<p class="answer">{_pill(_verdict_words(verdict), _VERDICT_TONE.get(verdict, "unknown"))} '
             f"{_e(outage.get('summary'))}</p>\n"]
    parts.extend(f'<p class="note">{_e(n)}</p>\n' for n in _list(outage.get("notes")))
    heads = "".join(f'<th scope="col">{_e(_behaviour_label(b, outage))}</th>' for b in behaviours)
    rows = []
    for w in _maps(outage.get("workloads")):
        name = _name(names, w.get("id"))
        cells = ""
        for b in behaviours:
            label, tone = _FATE.get(_text(w.get(f"if_vpn_{b}")), (_text(w.get(f"if_vpn_{b}")), "muted"))
            cells += f"<td>{_pill(label, tone)}</td>"
        rows.append(f'<tr class="fate"><th scope="row">{_e(name)}</th>{cells}</tr>\n')
        evidence = _list(w.get("evidence"))
        if evidence:
            rows.append(f'<tr class="why"><td colspan="{len(behaviours) + 1}"><details><summary>'
                        f"{_e(_fate_sentence(_short(name), w, behaviours, outage))} <b>Why?</b></summary>\n"
                        f"{_evidence(evidence, outage)}</details></td></tr>\n")
    parts.append(f'<table class="outage">\n<caption class="sr-only">Prediction per workload if the corporate site '
                 f'went down</caption>\n<thead><tr><th scope="col">Workload</th>{heads}</tr></thead>\n'
                 f"<tbody>\n{''.join(rows)}</tbody>\n</table>\n")
    if len(_maps(outage.get("sites"))) > 1:
        return _section("outage", "If all your sites went down", "".join(parts),
                        "What would still work if every office and data centre this laptop depends on went "
                        "offline at once.")
    return _section("outage", "If the site went down", "".join(parts),
                    "What would still work if the office or data centre this laptop depends on went offline.")


def _sites_section(outage: Mapping[str, Any]) -> str:
    """With several sites: one plain answer per site, then all together."""
    sites = _maps(outage.get("sites"))
    cases = _maps(outage.get("cases"))
    if len(sites) < 2 or not cases:
        return ""
    items = []
    for c in cases:
        verdict = _text(c.get("verdict"))
        items.append(f"<li>{_pill(_verdict_words(verdict), _VERDICT_TONE.get(verdict, 'unknown'))} "
                     f"{_e(c.get('answer'))}</li>\n")
    guessed = [s for s in sites if s.get("told") is not True]
    held = [f"{_text(s.get('name'))}: "
            + (", ".join(_text(x.get("name")) for x in _maps(s.get("systems"))) or "nothing this laptop uses")
            for s in sites]
    addresses = ", ".join(_text(n) for s in guessed for n in _list(s.get("networks")))
    unnamed = (f'<p class="note">Some systems this laptop uses are at a site no profile names ({_e(addresses)}): '
               "IT can name that site in a site profile.</p>\n") if guessed and addresses else ""
    body = (f'<ul class="cases">\n{"".join(items)}</ul>\n{unnamed}'
            f"<details><summary>What each site holds</summary>{_items(held)}</details>\n")
    return _section("sites", "If one of your sites went down", body,
                    "Each of your organisation's sites taken down alone, then all of them together.")


def _fate_sentence(name: str, workload: Mapping[str, Any], behaviours: Sequence[str],
                   outage: Mapping[str, Any]) -> str:
    """"If the site went down: Teams fails if the VPN stays connected and works if the VPN disconnects."""
    clauses = []
    for b in behaviours:
        fate = _FATE.get(_text(workload.get(f"if_vpn_{b}")), (_text(workload.get(f"if_vpn_{b}")), ""))[0].lower()
        label = _behaviour_label(b, outage)
        clauses.append(fate if label == "If the site went down" else f"{fate} {label[0].lower()}{label[1:]}")
    return f"If the site went down: {name} {' and '.join(clauses)}."


def _evidence(lines: Sequence[Any], outage: Mapping[str, Any]) -> str:
    """Evidence lines, grouped by the ``[VPN stays]``/``[VPN drops]`` prefix the prediction writes."""
    groups: dict[str, list[str]] = {}
    for line in (_text(x) for x in lines):
        key = ""
        for behaviour in _BEHAVIOUR:
            prefix = f"[VPN {behaviour}] "
            if line.startswith(prefix):
                key, line = behaviour, line[len(prefix):]
                break
        groups.setdefault(key, []).append(line)
    out = []
    for key, group in groups.items():
        if key:
            out.append(f'<p class="evh">{_e(_behaviour_label(key, outage))}:</p>\n')
        out.append(_items(group, "evidence"))
    return "".join(out)


# --- the current state: workloads and what to do ---------------------------------------------------------------


def _workload_status(w: Mapping[str, Any]) -> tuple[str, str]:
    """The status pill's words and tone; a hedged status (``possible``: the check could not tell) names
    every status it could be, in the tone of a warning at least, as the text report does."""
    status = _text(w.get("status"))
    label, tone = _STATUS.get(status, (status, "muted"))
    others = [_text(p) for p in _list(w.get("possible")) if _text(p) != status]
    if not others:
        return label, tone
    words = " or ".join([label, *(_STATUS.get(p, (p, ""))[0] for p in others)])
    return words, tone if tone == "bad" else "warn"


def _workloads_section(report: Mapping[str, Any]) -> str:
    rows = []
    for w in _maps(report.get("workloads")):
        label, tone = _workload_status(w)
        latency = _num(w.get("latency_ms"))
        score = _num(w.get("score"))
        ok, total = _num(w.get("probes_ok")), _num(w.get("probes_total"))
        reach = f"{ok:.0f} of {total:.0f}" if ok is not None and total else "\u2013"
        reasons = _list(w.get("reasons"))
        rows.append(f'<tr><th scope="row">{_e(w.get("name") or w.get("id"))}</th><td>{_pill(label, tone)}</td>'
                    f'<td class="num">{_e(_ms(latency)) if latency is not None else "&ndash;"}</td>'
                    f'<td class="num">{f"{score:.0f}/100" if score is not None else "&ndash;"}</td>'
                    f'<td class="num">{_e(reach)}</td>'
                    f"<td>{_items(reasons, 'plain') if reasons else ''}</td></tr>\n")
    if not rows:
        return _section("workloads", "Right now, from here", '<p class="muted">No workload was assessed.</p>\n')
    table = ('<table>\n<thead><tr><th scope="col">Workload</th><th scope="col">Status</th>'
             '<th scope="col" class="num">Latency</th><th scope="col" class="num">Score</th>'
             '<th scope="col" class="num">Endpoints</th><th scope="col">Why</th></tr></thead>\n'
             f"<tbody>\n{''.join(rows)}</tbody>\n</table>\n")
    return _section("workloads", "Right now, from here", table,
                    "How each Microsoft 365 service works from this laptop at the moment of the check.")


def _todo_section(report: Mapping[str, Any], outage: Mapping[str, Any], names: Mapping[str, str]) -> str:
    parts = []
    remediation = _list(outage.get("remediation"))
    if remediation:
        parts.append('<h3>For IT: so that people can keep working if the site goes down</h3>\n'
                     + _items(remediation, "todo"))
    findings = sorted(_maps(report.get("findings")),
                      key=lambda f: _SEVERITY.get(_text(f.get("severity")), ("", "", 3))[2])
    if findings:
        parts.append("<h3>Findings</h3>\n" + "".join(_finding(f, names) for f in findings))
    if not parts and report.get("verdict") == "UNKNOWN":
        parts.append("<p>Nothing could be tested, so nothing is known to be fine either: connect to a network "
                     "and run netcheck again.</p>\n")
    elif not parts:
        parts.append('<p class="muted">Nothing to fix.</p>\n')
    return _section("todo", "What to do", "".join(parts))


def _finding(finding: Mapping[str, Any], names: Mapping[str, str]) -> str:
    label, tone, _ = _SEVERITY.get(_text(finding.get("severity")), (_text(finding.get("severity")), "muted", 3))
    workload = finding.get("workload")
    about = f' <span class="muted">({_e(_name(names, workload))})</span>' if workload else ""
    evidence = _list(finding.get("evidence"))
    more = (f"<details><summary>Evidence ({len(evidence)})</summary>\n{_items(evidence, 'evidence')}</details>\n"
            if evidence else "")
    remediation = _text(finding.get("remediation"))
    fix = f'<p class="fix"><strong>Fix:</strong> {_e(remediation)}</p>\n' if remediation else ""
    return (f'<div class="finding">\n<p class="ftitle">{_pill(label, tone)} <strong>{_e(finding.get("title"))}'
            f"</strong>{about}</p>\n<p>{_e(finding.get('detail'))}</p>\n{fix}{more}</div>\n")


# --- path diagrams ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hop:
    address: str
    interface: str | None
    kind: str
    local_address: str | None = None


@dataclass(frozen=True)
class _Path:
    workload: str
    role: str
    host: str
    proxy: str | None
    proxy_source: str
    pac_url: str | None
    hops: tuple[_Hop, ...]
    analysed: bool


@dataclass(frozen=True)
class _Node:
    title: str
    sub: str
    width: int
    tone: str = ""  # "", "site" (depends on the site) or "bad"


_NODE_H, _GAP, _ROW_H, _DIAGRAM_W = 50, 34, 66, 1010


def _outage_paths(outage: Mapping[str, Any]) -> list[_Path]:
    paths = []
    for p in _maps(outage.get("paths")):
        hops = tuple(_Hop(_text(r.get("address")), _text(r.get("interface")) or None, _text(r.get("kind")))
                     for r in _maps(p.get("routes")))
        paths.append(_Path(_text(p.get("workload")), _text(p.get("role")), _text(p.get("host")),
                           _text(p.get("proxy")) or None, _text(p.get("proxy_source")) or "none",
                           _text(p.get("pac_url")) or None, hops, True))
    return paths


def _probe_paths(report: Mapping[str, Any]) -> list[_Path]:
    """Without an outage section: the direct paths the probes took (address, local address, proxy)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for p in _maps(report.get("probes")):
        workloads = _list(p.get("workloads"))
        host = _text(p.get("host"))
        if _text(p.get("kind")) not in ("tcp", "tls", "http", "stun") or not workloads or not host:
            continue
        detail = _map(p.get("detail"))
        entry = found.setdefault((_text(workloads[0]), host), {"hops": {}, "proxy": None, "source": "none",
                                                              "role": "service"})
        if _text(p.get("kind")) == "stun":
            entry["role"] = "media"
        address = _text(p.get("address"))
        local = _text(detail.get("local_address")) or None
        if address or local:
            key = address or "via proxy"
            entry["hops"][key] = entry["hops"].get(key) or local
        if _text(p.get("kind")) == "http" and detail.get("via_proxy") is True:
            entry["proxy"] = _text(detail.get("proxy")) or "a proxy"
            entry["source"] = _text(detail.get("proxy_source")) or "os"
    return [_Path(wid, e["role"], host, e["proxy"], e["source"], None,
                  tuple(_Hop("" if a == "via proxy" else a, None, "unknown", loc) for a, loc in e["hops"].items()),
                  False)
            for (wid, host), e in found.items()]


def _site_names(outage: Mapping[str, Any]) -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for s in _maps(outage.get("site_systems")):
        names.setdefault(_text(s.get("kind")), set()).add(_text(s.get("name")))
    return names


def _proxy_at_site(path: _Path, site: Mapping[str, set[str]]) -> bool:
    return bool(path.proxy) and path.proxy in site.get("proxy", set())


def _pac_at_site(path: _Path, site: Mapping[str, set[str]]) -> bool:
    return bool(path.pac_url) and path.pac_url in site.get("pac", set())


def _host_at_site(path: _Path, site: Mapping[str, set[str]]) -> bool:
    return path.host in site.get("federation", set())


def _crosses_site(path: _Path, site: Mapping[str, set[str]]) -> bool:
    return (any(h.kind == "vpn" for h in path.hops) or _proxy_at_site(path, site) or _pac_at_site(path, site)
            or _host_at_site(path, site))


def _interface_label(hop: _Hop, kinds: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
    if hop.interface:
        info = kinds.get(hop.interface, {})
        product = _text(info.get("vpn_product"))
        kind = _ROUTE_KIND.get(hop.kind, hop.kind)
        return hop.interface, (f"VPN \u00b7 {product}" if hop.kind == "vpn" and product else kind)
    if hop.local_address:
        return hop.local_address, "local address"
    if hop.kind == "unreachable":
        return "no interface", "no route"
    return "network", "not recorded" if hop.kind == "unknown" else _ROUTE_KIND.get(hop.kind, hop.kind)


def _path_nodes(path: _Path, hop: _Hop, site: Mapping[str, set[str]],
                kinds: Mapping[str, Mapping[str, Any]], where: str) -> list[_Node]:
    iface, iface_sub = _interface_label(hop, kinds)
    nodes = [_Node("This laptop", where, 150), _Node(iface, iface_sub, 150, "site" if hop.kind == "vpn" else "")]
    if hop.kind == "vpn":
        nodes.append(_Node("VPN tunnel", "to the site", 140, "site"))
    elif hop.kind == "unreachable":
        nodes.append(_Node("No route", "not reachable", 140, "bad"))
    else:
        nodes.append(_Node("Direct", "over the internet" if path.analysed else "route not analysed", 140))
    if path.proxy:
        source = _PROXY_SOURCE.get(path.proxy_source, path.proxy_source)
        where_proxy = "at the site" if _proxy_at_site(path, site) else source or "proxy"
        nodes.append(_Node(f"Proxy {path.proxy}", where_proxy, 180, "site" if _proxy_at_site(path, site) else ""))
    dest_sub = hop.address or ("resolved by the proxy" if path.proxy else "address not recorded")
    if hop.kind == "unreachable":
        dest_tone = "bad"
    elif _host_at_site(path, site):
        dest_tone, dest_sub = "site", f"{dest_sub} \u00b7 at the site"
    else:
        dest_tone = ""
    nodes.append(_Node(path.host, dest_sub, 250, dest_tone))
    return nodes


def _node_svg(node: _Node, x: int, y: int) -> str:
    cx = x + node.width / 2
    tip = f"{node.title} ({node.sub})" if node.sub else node.title
    sub = (f'<text x="{cx:g}" y="{y + 39}" text-anchor="middle" class="ns">'
           f"{_e(_fit(node.sub, int((node.width - 12) / 6.6)))}</text>") if node.sub else ""
    return (f'<g class="node {node.tone}"><title>{_e(tip)}</title>'
            f'<rect x="{x}" y="{y}" width="{node.width}" height="{_NODE_H}" rx="8"/>'
            f'<text x="{cx:g}" y="{y + (21 if node.sub else 30)}" text-anchor="middle" class="nt">'
            f"{_e(_fit(node.title, int((node.width - 14) / 7.8)))}</text>{sub}</g>")


def _arrow_svg(x1: int, x2: int, y: int, site: bool) -> str:
    cls = "link site" if site else "link"
    return (f'<g class="{cls}"><line x1="{x1 + 2}" y1="{y}" x2="{x2 - 8}" y2="{y}"/>'
            f'<polygon points="{x2 - 9},{y - 5} {x2 - 1},{y} {x2 - 9},{y + 5}"/></g>')


def _path_text(path: _Path, hop: _Hop, nodes: Sequence[_Node]) -> str:
    return " \u2192 ".join(f"{n.title} ({n.sub})" if n.sub else n.title for n in nodes)


def _path_figure(index: int, path: _Path, site: Mapping[str, set[str]], kinds: Mapping[str, Mapping[str, Any]],
                 names: Mapping[str, str], where: str, pac_fallback: str = "") -> str:
    hops = path.hops[:MAX_ROUTES_PER_PATH] or (_Hop("", None, "unknown"),)
    crosses = _crosses_site(path, site)
    rows, texts = [], []
    for r, hop in enumerate(hops):
        nodes = _path_nodes(path, hop, site, kinds, where)
        y, x = 6 + r * _ROW_H, 2
        for i, node in enumerate(nodes):
            rows.append(_node_svg(node, x, y))
            if i + 1 < len(nodes):
                rows.append(_arrow_svg(x + node.width, x + node.width + _GAP, y + _NODE_H // 2, crosses))
            x += node.width + _GAP
        texts.append(_path_text(path, hop, nodes))
    height = 12 + len(hops) * _ROW_H - (_ROW_H - _NODE_H)
    name = _name(names, path.workload)
    verdict = ("Depends on the site (VPN tunnel, proxy, PAC file or server at the site)." if crosses
               else "Does not depend on the site." if path.analysed else "")
    label = f"{name}, {path.host}: " + "; ".join(texts) + (f". {verdict}" if verdict else ".")
    badge = (_pill("Goes through the site", "warn") if crosses
             else _pill("Direct, independent of the site", "good") if path.analysed else "")
    extra = []
    if len(path.hops) > MAX_ROUTES_PER_PATH:
        extra.append(f"{len(path.hops) - MAX_ROUTES_PER_PATH} more address(es) not drawn.")
    if path.pac_url:
        at = " The PAC file is at the site." if _pac_at_site(path, site) else ""
        extra.append(f"The PAC file {path.pac_url} could not be used: tested with {pac_fallback} instead.{at}"
                     if pac_fallback else f"Proxy chosen by the PAC file {path.pac_url}.{at}")
    notes = "".join(f'<p class="pnote">{_e(x)}</p>' for x in extra)
    role = _ROLE.get(path.role, path.role)
    return (f'<figure class="path{" crosses" if crosses else ""}">\n<figcaption><strong>{_e(_short(name))}</strong> '
            f'<span class="muted">{_e(role)} \u00b7 {_e(path.host)}</span> {badge}</figcaption>\n'
            f'<svg viewBox="0 0 {_DIAGRAM_W} {height}" width="{_DIAGRAM_W}" height="{height}" role="img" '
            f'aria-label="{_e(label)}" preserveAspectRatio="xMinYMin meet">'
            f'<title id="path-{index}-t">{_e(label)}</title>{"".join(rows)}</svg>\n{notes}</figure>\n')


def _paths_section(report: Mapping[str, Any], outage: Mapping[str, Any], names: Mapping[str, str]) -> str:
    paths = _outage_paths(outage) if outage else _probe_paths(report)
    interfaces = _maps(report.get("interfaces"))
    if not paths and not interfaces:
        return ""
    kinds = {_text(i.get("name")): i for i in interfaces}
    site = _site_names(outage)
    order = {wid: n for n, wid in enumerate(names)}
    paths.sort(key=lambda p: order.get(p.workload, len(order)))
    if not outage:
        where = ""
    else:
        where = "at the office" if outage.get("on_site") is True else "away from the office"
    network = report.get("network")
    pac_fallback = _text(network.get("pac_fallback")) if isinstance(network, Mapping) else ""
    figures: list[str] = []
    shown: dict[str, int] = {}
    skipped = 0
    for path in paths:
        if shown.get(path.workload, 0) >= MAX_PATHS_PER_WORKLOAD:
            skipped += 1
            continue
        shown[path.workload] = shown.get(path.workload, 0) + 1
        figures.append(_path_figure(len(figures), path, site, kinds, names, where, pac_fallback))
    if skipped:
        figures.append(f'<p class="muted">{skipped} more destination(s) not drawn.</p>\n')
    if outage:
        legend = ('<p class="legend"><span class="key site"></span> Amber: this step depends on the site '
                  "(a VPN tunnel to it, or a proxy, PAC file or server there).</p>\n")
    else:
        legend = ('<p class="legend">Drawn from the connections the check made. Whether they went through a VPN '
                  "was not analysed in this report.</p>\n")
    body = (legend if paths else "") + "".join(figures) + _interfaces_table(interfaces)
    return _section("paths", "How each workload's traffic travels", body,
                    "From this laptop, through a network interface, directly or through the VPN tunnel and a "
                    "proxy, to the Microsoft 365 destination.")


def _interfaces_table(interfaces: Sequence[Mapping[str, Any]]) -> str:
    if not interfaces:
        return ""
    rows = []
    for i in interfaces:
        kind = _ROUTE_KIND.get(_text(i.get("kind")), _text(i.get("kind")))
        evidence = "; ".join(_text(x) for x in _list(i.get("evidence")))
        rows.append(f'<tr><th scope="row"><code>{_e(i.get("name"))}</code></th><td>{_e(kind)}</td>'
                    f'<td>{_e(i.get("vpn_product") or "")}</td><td>{_e(evidence)}</td></tr>\n')
    return ('<h3>Network interfaces on this laptop</h3>\n<table>\n<thead><tr><th scope="col">Interface</th>'
            '<th scope="col">Kind</th><th scope="col">VPN product</th><th scope="col">How it was recognised</th>'
            f"</tr></thead>\n<tbody>\n{''.join(rows)}</tbody>\n</table>\n")


# --- charts ----------------------------------------------------------------------------------------------------


def _nice_max(value: float) -> float:
    for step in (50, 100, 250, 500, 1000, 2500, 5000):
        if value <= step * 8:
            return float(math.ceil(value / step) * step)
    return float(math.ceil(value / 10000) * 10000)


def _latency_section(report: Mapping[str, Any], names: Mapping[str, str], marks: Policy) -> str:
    bars: list[tuple[str, float | None, str]] = []
    seen: set[tuple[str, str]] = set()
    for p in _maps(report.get("probes")):
        if _text(p.get("kind")) != "tcp":
            continue
        key = (_text(p.get("host")), _text(p.get("address")))
        if key in seen:
            continue
        seen.add(key)
        workloads = _list(p.get("workloads"))
        who = _short(_name(names, workloads[0])) if workloads else ""
        family = " (IPv6)" if _text(p.get("family")) == "ipv6" else ""
        label = f"{who} \u00b7 {key[0]}{family}" if who else f"{key[0]}{family}"
        median = _num(_map(p.get("detail")).get("median_ms")) if _text(p.get("outcome")) == "ok" else None
        bars.append((label, median, _text(p.get("reason"))))
    if not bars:
        return ""
    mark = marks.slow_latency_ms
    omitted = max(len(bars) - MAX_LATENCY_BARS, 0)
    bars = bars[:MAX_LATENCY_BARS]
    values = [v for _, v, _ in bars if v is not None]
    top = _nice_max(max([*values, mark * 1.5]))
    label_w, plot_w, row_h, top_pad = 370, 500, 26, 26
    width = label_w + plot_w + 90
    height = top_pad + len(bars) * row_h + 10

    def x_of(v: float) -> float:
        return label_w + min(v, top) / top * plot_w

    out = [f'<line class="axis" x1="{label_w}" y1="{top_pad - 6}" x2="{label_w}" y2="{height - 6}"/>']
    for tick in (0.0, mark, top):
        out.append(f'<text class="tick" x="{x_of(tick):.1f}" y="{top_pad - 10}" text-anchor="middle">'
                   f"{_e(_ms(tick)) if tick else '0'}</text>")
    texts = []
    for i, (label, value, reason) in enumerate(bars):
        y = top_pad + i * row_h
        out.append(f'<text class="bl" x="{label_w - 10}" y="{y + 17}" text-anchor="end">'
                   f"<title>{_e(label)}</title>{_e(_fit(label, 52))}</text>")
        if value is None:
            out.append(f'<text class="bv bad" x="{label_w + 8}" y="{y + 17}">no connection</text>')
            texts.append(f"{label}: no connection ({reason})")
            continue
        tone = "good" if value < mark else "warn"
        out.append(f'<rect class="bar {tone}" x="{label_w}" y="{y + 5}" width="{max(x_of(value) - label_w, 2):.1f}" '
                   f'height="{row_h - 10}" rx="3"><title>{_e(label)}: {_e(_ms(value))}</title></rect>')
        out.append(f'<text class="bv" x="{x_of(value) + 6:.1f}" y="{y + 17}">{_e(_ms(value))}</text>')
        texts.append(f"{label}: {_ms(value)}")
    mx = x_of(mark)
    out.append(f'<line class="mark" x1="{mx:.1f}" y1="{top_pad - 4}" x2="{mx:.1f}" y2="{height - 6}"/>')
    label = (f"TCP connection time (median) per front door, against the {_ms(mark)} mark. " + "; ".join(texts))
    svg = (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{_e(label)}" preserveAspectRatio="xMinYMin meet"><title>{_e(label)}</title>'
           f"{''.join(out)}</svg>\n")
    more = f'<p class="muted">{omitted} more front door(s) not drawn.</p>\n' if omitted else ""
    return _section("latency", "How fast Microsoft 365 answers", svg + more,
                    f"Time to open a connection to each Microsoft 365 front door (median of the samples). "
                    f"Under {_e(_ms(mark))} is good; the dashed line marks {_e(_ms(mark))}.")


def _media_section(report: Mapping[str, Any], marks: Policy) -> str:
    probes = [p for p in _maps(report.get("probes")) if _text(p.get("kind")) == "stun"][:MAX_MEDIA_PROBES]
    if not probes:
        return ""
    parts = []
    for n, p in enumerate(probes):
        detail = _map(p.get("detail"))
        where = f"{_text(p.get('host'))} {_text(p.get('address'))}".strip()
        rtt = _num(detail.get("rtt_ms"))
        if _text(p.get("outcome")) != "ok" or rtt is None:
            parts.append(f'<p>{_pill("No media over UDP", "bad")} <span class="muted">{_e(where)}</span></p>\n'
                         f"<p>{_e(p.get('reason'))}</p>\n")
            continue
        metrics = [("Round trip", rtt, marks.media_rtt_ms, "ms"),
                   ("Jitter", _num(detail.get("jitter_ms")), marks.media_jitter_ms, "ms"),
                   ("Packet loss", _num(detail.get("loss_pct")), marks.media_loss_pct, "%")]
        parts.append(f'<p class="muted">Teams media relay {_e(where)}</p>\n' + _media_chart(n, metrics))
    return _section("media", "Teams calls: audio and video quality", "".join(parts),
                    "Measured to the Teams media relay over UDP, against Microsoft's marks: round trip under "
                    f"{_e(_ms(marks.media_rtt_ms))}, jitter under {_e(_ms(marks.media_jitter_ms))}, "
                    f"packet loss under {marks.media_loss_pct:g} %.")


def _media_chart(index: int, metrics: Sequence[tuple[str, float | None, float, str]]) -> str:
    """One row per metric, each scaled so that Microsoft's mark sits on the same dashed line."""
    label_w, plot_w, row_h, top_pad = 130, 460, 34, 24
    mark_x = label_w + plot_w * 0.6
    width, height = label_w + plot_w + 240, top_pad + len(metrics) * row_h + 8
    out = [f'<text class="tick" x="{mark_x:.1f}" y="{top_pad - 10}" text-anchor="middle">Microsoft\'s mark</text>']
    texts = []
    for i, (name, value, mark, unit) in enumerate(metrics):
        y = top_pad + i * row_h
        shown = "not measured" if value is None else (f"{value:.1f} {unit}" if unit == "%" else _ms(value))
        limit = f"{mark:g} {unit}" if unit == "%" else _ms(mark)
        out.append(f'<text class="bl" x="{label_w - 10}" y="{y + 21}" text-anchor="end">{_e(name)}</text>')
        if value is None:
            out.append(f'<text class="bv muted" x="{label_w + 8}" y="{y + 21}">not measured</text>')
            texts.append(f"{name}: not measured")
            continue
        ok = value < mark
        w = min(value / mark * (mark_x - label_w), plot_w) if mark > 0 else plot_w
        out.append(f'<rect class="bar {"good" if ok else "warn"}" x="{label_w}" y="{y + 7}" '
                   f'width="{max(w, 2):.1f}" height="{row_h - 14}" rx="3"/>')
        verdict = f"under {limit}" if ok else f"not under {limit}"
        out.append(f'<text class="bv" x="{label_w + plot_w + 10}" y="{y + 21}">{_e(shown)} '
                   f'<tspan class="{"okt" if ok else "badt"}">{_e(verdict)}</tspan></text>')
        texts.append(f"{name}: {shown}, {verdict}")
    out.append(f'<line class="mark" x1="{mark_x:.1f}" y1="{top_pad - 4}" x2="{mark_x:.1f}" y2="{height - 4}"/>')
    label = "Teams media quality against Microsoft's marks. " + "; ".join(texts)
    return (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{_e(label)}" preserveAspectRatio="xMinYMin meet">'
            f'<title id="media-{index}-t">{_e(label)}</title>{"".join(out)}</svg>\n')


# --- outage details: split tunnel, site systems ----------------------------------------------------------------


def _split_tunnel_section(outage: Mapping[str, Any], names: Mapping[str, str]) -> str:
    rows = []
    for s in _maps(outage.get("split_tunnel")):
        cells = ""
        for family in ("ipv4", "ipv6"):
            label, tone = _SPLIT.get(_text(s.get(family)), (_text(s.get(family)), "muted"))
            cells += f"<td>{_pill(label, tone)}</td>"
        prefixes = _list(s.get("tunneled_prefixes"))
        listed = " ".join(f"<code>{_e(x)}</code>" for x in prefixes) or '<span class="muted">none</span>'
        rows.append(f'<tr><th scope="row">{_e(_name(names, s.get("workload")))}</th>{cells}'
                    f'<td class="prefixes">{listed}</td></tr>\n')
    if not rows:
        return ""
    table = ('<table>\n<thead><tr><th scope="col">Workload</th><th scope="col">IPv4</th><th scope="col">IPv6</th>'
             '<th scope="col">Microsoft 365 ranges still sent into the VPN</th></tr></thead>\n'
             f"<tbody>\n{''.join(rows)}</tbody>\n</table>\n")
    return _section("split-tunnel", "VPN split tunnel", table,
                    "Microsoft recommends sending its Optimize ranges directly to the internet, not through the "
                    "VPN. Ranges listed here still go through the tunnel.")


def _site_systems_section(outage: Mapping[str, Any]) -> str:
    systems = _maps(outage.get("site_systems"))
    if not systems:
        return ""
    rows = "".join(f'<tr><th scope="row">{_e(_SITE_KIND.get(_text(s.get("kind")), s.get("kind")))}</th>'
                   f'<td><code>{_e(s.get("name"))}</code></td><td>{_e(s.get("evidence"))}</td></tr>\n'
                   for s in systems)
    table = ('<table>\n<thead><tr><th scope="col">System</th><th scope="col">Name</th><th scope="col">Why it '
             f"counts as at the site</th></tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n")
    return _section("site-systems", "Systems at the site this laptop depends on", table,
                    "If the site goes down, these go down with it.")


# --- technical details and footer ------------------------------------------------------------------------------


def _technical_section(report: Mapping[str, Any]) -> str:
    facts = _map(report.get("network"))
    probes = _maps(report.get("probes"))
    counts: dict[str, int] = {}
    for p in probes:
        counts[_text(p.get("outcome"))] = counts.get(_text(p.get("outcome")), 0) + 1
    rows = "".join(
        f"<tr><th scope=\"row\"><code>{_e(k)}</code></th><td>"
        f"{_e(', '.join(_text(v) for v in value) if isinstance(value, list) else value)}</td></tr>\n"
        for k, value in facts.items())
    outcomes = ", ".join(f"{k or '?'} {v}" for k, v in sorted(counts.items()))
    probe_line = f"<p>{len(probes)} probes: {_e(outcomes)}.</p>\n" if probes else ""
    if not rows and not probe_line:
        return ""
    table = f'<table class="facts">\n<tbody>\n{rows}</tbody>\n</table>\n' if rows else ""
    return _section("technical", "Technical details",
                    f"<details><summary>Network facts and probe outcomes</summary>\n{probe_line}{table}</details>\n")


def _footer(report: Mapping[str, Any]) -> str:
    catalog, tool, host = _map(report.get("catalog")), _map(report.get("tool")), _map(report.get("host"))
    duration = _num(report.get("duration_s"))
    took = f" in {duration:.1f} s" if duration is not None else ""
    return (
        '<footer>\n<p>Microsoft 365 endpoint data: '
        f"{_e(catalog.get('instance'))}, version {_e(catalog.get('version'))} ({_e(catalog.get('source'))}).</p>\n"
        f"<p>Report <code>{_e(report.get('report_id'))}</code>, measured {_e(report.get('measured_at'))}{_e(took)} "
        f"by {_e(tool.get('name') or 'netcheck')} {_e(tool.get('version'))} on {_e(host.get('os'))} "
        f"{_e(host.get('os_version'))}.</p>\n</footer>\n"
    )


_CSS = """
:root{--ink:#1f2328;--muted:#59636e;--line:#d8dee4;--bg:#f4f5f7;--card:#fff;--node:#8c959f;
--good:#1a7f37;--good-bg:#e9f6ed;--warn:#8a5300;--warn-bg:#fff4dc;--warn-line:#d4901a;
--bad:#b42318;--bad-bg:#fdeceb;--unknown:#6639ba;--unknown-bg:#f3eefc;--info:#0b5cad;--info-bg:#eaf2fb;
--muted-bg:#eef0f3}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"DejaVu Sans",sans-serif}
main{max-width:1060px;margin:0 auto;padding:24px 20px 4px}
section,header.verdict{background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:18px 24px;margin:0 0 16px}
h1,h2,h3{line-height:1.25;margin:0 0 .5em}
h2{font-size:1.3rem}
h3{font-size:1.05rem;margin-top:1em}
p{margin:.4em 0}
.intro{color:var(--muted);margin-top:-.2em}
.tone-good{--tone:var(--good);--tone-bg:var(--good-bg)}
.tone-warn{--tone:var(--warn);--tone-bg:var(--warn-bg)}
.tone-bad{--tone:var(--bad);--tone-bg:var(--bad-bg)}
.tone-unknown{--tone:var(--unknown);--tone-bg:var(--unknown-bg)}
.tone-info{--tone:var(--info);--tone-bg:var(--info-bg)}
.tone-muted{--tone:var(--muted);--tone-bg:var(--muted-bg)}
header.verdict{border-left:12px solid var(--tone);background:var(--tone-bg);padding:22px 28px}
header.verdict .kicker{margin:0;color:var(--muted);font-size:.85rem;letter-spacing:.03em}
header.verdict h1{font-size:2.8rem;color:var(--tone);letter-spacing:.02em;margin:.1em 0 .15em}
header.verdict .summary{font-size:1.25rem;margin:0;max-width:52em}
.pill{display:inline-block;padding:0 10px;border-radius:999px;font-size:.82rem;font-weight:600;line-height:1.7;
color:var(--tone);background:var(--tone-bg);border:1px solid var(--tone);white-space:nowrap;vertical-align:1px}
.answer{font-size:1.1rem}
.note{background:var(--info-bg);border-radius:6px;padding:6px 10px}
table{width:100%;border-collapse:collapse;font-size:.93rem;margin:.3em 0 .6em}
th,td{text-align:left;vertical-align:top;padding:7px 10px;border-bottom:1px solid var(--line)}
thead th{font-size:.78rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);font-weight:600;
border-bottom:2px solid var(--line)}
tbody th{font-weight:600}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.fate th,tr.fate td{border-bottom:none;padding-bottom:2px}
tr.why td{padding-top:0}
ul{margin:.2em 0;padding-left:1.2em}
ul.plain{list-style:none;padding:0}
ul.evidence{font-size:.88rem;color:var(--muted)}
ul.todo li{margin:.3em 0}
.evh{font-size:.85rem;font-weight:600;margin:.5em 0 0}
details>summary{cursor:pointer;color:var(--muted);font-size:.9rem}
details>summary b{color:var(--info);font-weight:600}
code{font-family:"DejaVu Sans Mono",ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.86em;
overflow-wrap:anywhere}
td.prefixes code{display:inline-block;background:var(--muted-bg);border-radius:4px;padding:0 5px;margin:1px 2px}
.muted{color:var(--muted)}
.finding{border-top:1px solid var(--line);padding:10px 0 6px}
.finding:first-of-type{border-top:none}
.ftitle{margin:0}
.fix{background:var(--info-bg);border-radius:6px;padding:6px 10px}
figure{margin:0 0 18px;break-inside:avoid;overflow-x:auto}
figcaption{margin-bottom:6px}
figure svg{display:block;width:100%;min-width:720px;max-width:1010px;height:auto}
section>svg{display:block;width:100%;max-width:940px;height:auto}
.pnote{font-size:.85rem;color:var(--muted);margin:4px 0 0}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"DejaVu Sans",sans-serif;
fill:var(--ink)}
.node rect{fill:#fff;stroke:var(--node);stroke-width:1.3}
.node.site rect{fill:var(--warn-bg);stroke:var(--warn-line);stroke-width:2}
.node.bad rect{fill:var(--bad-bg);stroke:var(--bad);stroke-width:2}
.node .nt{font-size:13px;font-weight:600}
.node .ns{font-size:11.5px;fill:var(--muted)}
.link line{stroke:var(--node);stroke-width:2}
.link polygon{fill:var(--node)}
.link.site line{stroke:var(--warn-line);stroke-dasharray:6 4}
.link.site polygon{fill:var(--warn-line)}
.legend{font-size:.88rem;color:var(--muted)}
.key{display:inline-block;width:14px;height:14px;border-radius:3px;vertical-align:-2px}
.key.site{background:var(--warn-bg);border:2px solid var(--warn-line)}
.axis{stroke:var(--line);stroke-width:1}
.mark{stroke:var(--bad);stroke-width:1.5;stroke-dasharray:5 4}
.bar.good{fill:#4aa564}
.bar.warn{fill:#e0a030}
.bl{font-size:12.5px}
.bv{font-size:12.5px;font-variant-numeric:tabular-nums}
.tick{font-size:11.5px;fill:var(--muted)}
.bad{fill:var(--bad)}
.okt{fill:var(--good);font-weight:600}
.badt{fill:var(--bad);font-weight:600}
footer{max-width:1060px;margin:0 auto;padding:4px 24px 32px;color:var(--muted);font-size:.85rem}
footer p{margin:.2em 0}
.sr-only{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
@media print{
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
body{background:#fff;font-size:10.5pt}
main{max-width:none;padding:0}
section,header.verdict{border-color:#bbb;border-radius:0;break-inside:avoid-page}
section{break-inside:auto}
tr,.finding,figure{break-inside:avoid}
details::details-content{content-visibility:visible;display:block}
figure{overflow:visible}
figure svg{min-width:0}
details>summary{color:var(--ink)}
footer{padding:8px 0}
}
"""
