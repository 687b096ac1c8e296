"""What changed between two copies of Microsoft's endpoint data. Pure: no I/O.

``diff_sets(old, new) -> EndpointDiff`` compares endpoint sets by id: sets added
and removed, and per changed set the URLs, IP prefixes and ports added or
removed, and category / required / ExpressRoute / notes changes. Changes are
ordered Optimize first, then Allow, then Default (a set that moved between
categories counts under the higher-priority one), then by set id.

``EndpointDiff.exclusions_added`` / ``exclusions_removed`` are what a VPN admin
copies into (or out of) split-tunnel exclusions: the Optimize IP prefixes, IPv4
then IPv6, compared over the whole data (a prefix that moves from one Optimize
set to another is not a change to the exclusions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from netcheck.m365.catalog import EndpointSet, Network, PortRange
from netcheck.models import Category


class ChangeKind(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True)
class SetChange:
    """One endpoint set's difference. For an added set everything is "added"; for a
    removed one everything is "removed"."""

    id: int
    kind: ChangeKind
    service_area: str
    display_name: str
    category: Category                      # the new category (the old one if removed)
    is_required: bool                       # the new flag (the old one if removed)
    previous_category: Category | None = None  # set only when the category changed
    urls_added: tuple[str, ...] = ()
    urls_removed: tuple[str, ...] = ()
    ips_added: tuple[Network, ...] = ()
    ips_removed: tuple[Network, ...] = ()
    tcp_added: tuple[PortRange, ...] = ()
    tcp_removed: tuple[PortRange, ...] = ()
    udp_added: tuple[PortRange, ...] = ()
    udp_removed: tuple[PortRange, ...] = ()
    required: tuple[bool, bool] | None = None       # (old, new) when it changed
    express_route: tuple[bool, bool] | None = None  # (old, new) when it changed
    notes: tuple[str, str] | None = None            # (old, new) when they changed

    @property
    def rank_category(self) -> Category:
        """The category this change is listed under: the higher-priority of old and new."""
        if self.previous_category and self.previous_category.rank < self.category.rank:
            return self.previous_category
        return self.category


@dataclass(frozen=True)
class EndpointDiff:
    changes: tuple[SetChange, ...]
    exclusions_added: tuple[Network, ...]     # Optimize prefixes new in NEW
    exclusions_removed: tuple[Network, ...]   # Optimize prefixes gone from NEW
    optimize_urls_added: tuple[str, ...]
    optimize_urls_removed: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.changes or self.exclusions_added or self.exclusions_removed)

    def count(self, category: Category) -> int:
        return sum(1 for c in self.changes if c.rank_category is category)


def _net_key(net: Network) -> tuple[int, int, int]:
    return (net.version, int(net.network_address), net.prefixlen)


def _sorted_nets(nets: Iterable[Network]) -> tuple[Network, ...]:
    return tuple(sorted(set(nets), key=_net_key))


def _ports(ranges: Iterable[PortRange]) -> set[int]:
    return {p for r in ranges for p in r.ports()}


def compress_ports(ports: Iterable[int]) -> tuple[PortRange, ...]:
    """``{80, 443, 3478, 3479, 3480}`` -> ``80, 443, 3478-3480``."""
    out: list[PortRange] = []
    for port in sorted(set(ports)):
        if out and out[-1].high == port - 1:
            out[-1] = PortRange(out[-1].low, port)
        else:
            out.append(PortRange(port, port))
    return tuple(out)


def _port_diff(old: Iterable[PortRange], new: Iterable[PortRange]
               ) -> tuple[tuple[PortRange, ...], tuple[PortRange, ...]]:
    a, b = _ports(old), _ports(new)
    return compress_ports(b - a), compress_ports(a - b)


def _whole(s: EndpointSet, kind: ChangeKind) -> SetChange:
    added = kind is ChangeKind.ADDED
    fields: dict[str, Any] = {
        "urls": tuple(sorted(s.urls)), "ips": _sorted_nets(s.ips),
        "tcp": compress_ports(_ports(s.tcp_ports)), "udp": compress_ports(_ports(s.udp_ports)),
    }
    suffix = "added" if added else "removed"
    return SetChange(id=s.id, kind=kind, service_area=s.service_area, display_name=s.display_name,
                     category=s.category, is_required=s.required,
                     **{f"{key}_{suffix}": value for key, value in fields.items()})


def _changed(a: EndpointSet, b: EndpointSet) -> SetChange | None:
    tcp_added, tcp_removed = _port_diff(a.tcp_ports, b.tcp_ports)
    udp_added, udp_removed = _port_diff(a.udp_ports, b.udp_ports)
    change = SetChange(
        id=b.id, kind=ChangeKind.CHANGED, service_area=b.service_area, display_name=b.display_name,
        category=b.category, is_required=b.required,
        previous_category=a.category if a.category is not b.category else None,
        urls_added=tuple(sorted(set(b.urls) - set(a.urls))),
        urls_removed=tuple(sorted(set(a.urls) - set(b.urls))),
        ips_added=_sorted_nets(set(b.ips) - set(a.ips)),
        ips_removed=_sorted_nets(set(a.ips) - set(b.ips)),
        tcp_added=tcp_added, tcp_removed=tcp_removed, udp_added=udp_added, udp_removed=udp_removed,
        required=(a.required, b.required) if a.required != b.required else None,
        express_route=(a.express_route, b.express_route) if a.express_route != b.express_route else None,
        notes=(a.notes, b.notes) if a.notes != b.notes else None,
    )
    unchanged = SetChange(id=b.id, kind=ChangeKind.CHANGED, service_area=b.service_area,
                          display_name=b.display_name, category=b.category,
                          is_required=b.required)
    return None if change == unchanged else change


def _optimize(sets: Sequence[EndpointSet]) -> tuple[set[Network], set[str]]:
    nets: set[Network] = set()
    urls: set[str] = set()
    for s in sets:
        if s.category is Category.OPTIMIZE:
            nets.update(s.ips)
            urls.update(s.urls)
    return nets, urls


def diff_sets(old: Sequence[EndpointSet], new: Sequence[EndpointSet]) -> EndpointDiff:
    """Compare two copies of one instance's endpoint sets (by id)."""
    before = {s.id: s for s in old}
    after = {s.id: s for s in new}
    changes: list[SetChange] = []
    for set_id in sorted(before.keys() | after.keys()):
        a, b = before.get(set_id), after.get(set_id)
        if a is None and b is not None:
            changes.append(_whole(b, ChangeKind.ADDED))
        elif b is None and a is not None:
            changes.append(_whole(a, ChangeKind.REMOVED))
        elif a is not None and b is not None:
            change = _changed(a, b)
            if change is not None:
                changes.append(change)
    changes.sort(key=lambda c: (c.rank_category.rank, c.id))
    old_nets, old_urls = _optimize(old)
    new_nets, new_urls = _optimize(new)
    return EndpointDiff(
        changes=tuple(changes),
        exclusions_added=_sorted_nets(new_nets - old_nets),
        exclusions_removed=_sorted_nets(old_nets - new_nets),
        optimize_urls_added=tuple(sorted(new_urls - old_urls)),
        optimize_urls_removed=tuple(sorted(old_urls - new_urls)),
    )


# --- renderers (return strings) -------------------------------------------------

def _ports_text(ranges: Sequence[PortRange]) -> str:
    return ",".join(map(str, ranges))


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _change_lines(c: SetChange) -> list[str]:
    lines: list[str] = []
    if c.previous_category is not None:
        lines.append(f"    category {c.previous_category} -> {c.category}")
    for sign, urls, ips, tcp, udp in (
        ("+", c.urls_added, c.ips_added, c.tcp_added, c.udp_added),
        ("-", c.urls_removed, c.ips_removed, c.tcp_removed, c.udp_removed),
    ):
        lines += [f"    {sign} url  {u}" for u in urls]
        lines += [f"    {sign} ip   {n}" for n in ips]
        if tcp:
            lines.append(f"    {sign} tcp  {_ports_text(tcp)}")
        if udp:
            lines.append(f"    {sign} udp  {_ports_text(udp)}")
    if c.required is not None:
        lines.append(f"    required {_yes(c.required[0])} -> {_yes(c.required[1])}")
    if c.express_route is not None:
        lines.append(f"    ExpressRoute {_yes(c.express_route[0])} -> {_yes(c.express_route[1])}")
    if c.notes is not None:
        lines.append(f"    notes: {c.notes[1]!r} (was {c.notes[0]!r})")
    return lines


def _prefix_lines(nets: Sequence[Network]) -> list[str]:
    return [f"    IPv{n.version}  {n}" for n in nets]


def render_diff_text(d: EndpointDiff, old_label: str, new_label: str) -> str:
    """The diff for a person: split-tunnel exclusions first, then per category."""
    out = ["Comparing Microsoft 365 endpoint data", f"  old: {old_label}", f"  new: {new_label}", ""]
    out.append("Split-tunnel VPN exclusions (Optimize IP prefixes):")
    if not (d.exclusions_added or d.exclusions_removed):
        out.append("  no change")
    if d.exclusions_added:
        out.append("  add to the exclusions:")
        out += _prefix_lines(d.exclusions_added)
    if d.exclusions_removed:
        out.append("  remove from the exclusions:")
        out += _prefix_lines(d.exclusions_removed)
    if d.optimize_urls_added or d.optimize_urls_removed:
        out.append("Optimize URLs (PAC file / proxy bypass):")
        out += [f"  + {u}" for u in d.optimize_urls_added]
        out += [f"  - {u}" for u in d.optimize_urls_removed]
    out.append("")
    if not d.changes:
        out.append("No endpoint set changed.")
        return "\n".join(out)
    n = len(d.changes)
    counts = ", ".join(f"{d.count(cat)} {cat}" for cat in Category)
    out.append(f"{n} endpoint set{'s' if n != 1 else ''} changed ({counts}):")
    for cat in Category:
        group = [c for c in d.changes if c.rank_category is cat]
        if not group:
            continue
        out += ["", f"{cat}"]
        for c in group:
            req = "required" if c.is_required else "optional"
            out.append(f"  set {c.id} {c.kind}: {c.display_name} ({c.service_area}, {req})")
            out += _change_lines(c)
    return "\n".join(out)


def _nets_json(nets: Sequence[Network]) -> dict[str, list[str]]:
    return {"ipv4": [str(n) for n in nets if n.version == 4],
            "ipv6": [str(n) for n in nets if n.version == 6]}


def _pair(p: tuple[Any, Any] | None) -> dict[str, Any] | None:
    return None if p is None else {"old": p[0], "new": p[1]}


def diff_to_json(d: EndpointDiff, old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The diff as JSON-ready data; ``old`` / ``new`` describe the two inputs."""
    return {
        "old": dict(old), "new": dict(new),
        "splitTunnelExclusions": {"add": _nets_json(d.exclusions_added),
                                  "remove": _nets_json(d.exclusions_removed)},
        "optimizeUrls": {"add": list(d.optimize_urls_added), "remove": list(d.optimize_urls_removed)},
        "changes": [
            {"id": c.id, "change": str(c.kind), "category": str(c.category), "required": c.is_required,
             "previousCategory": str(c.previous_category) if c.previous_category else None,
             "serviceArea": c.service_area, "displayName": c.display_name,
             "urls": {"add": list(c.urls_added), "remove": list(c.urls_removed)},
             "ips": {"add": [str(n) for n in c.ips_added], "remove": [str(n) for n in c.ips_removed]},
             "tcpPorts": {"add": _ports_text(c.tcp_added), "remove": _ports_text(c.tcp_removed)},
             "udpPorts": {"add": _ports_text(c.udp_added), "remove": _ports_text(c.udp_removed)},
             "requiredChange": _pair(c.required), "expressRoute": _pair(c.express_route),
             "notes": _pair(c.notes)}
            for c in d.changes
        ],
    }

