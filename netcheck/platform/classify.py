"""Classify interfaces as physical, VPN, virtual or loopback, with evidence.

Pure: takes :class:`~netcheck.platform.base.InterfaceFacts` gathered by an OS module
and the adapter table in ``adapters.toml`` (loaded once).
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netcheck.errors import ConfigError
from netcheck.files import load_user_toml
from netcheck.platform.base import LOOPBACK, PHYSICAL, VIRTUAL, VPN, Interface, InterfaceFacts

ADAPTERS_FILE = Path(__file__).with_name("adapters.toml")
#: Linux tun_flags bits (include/uapi/linux/if_tun.h).
IFF_TUN, IFF_TAP = 0x0001, 0x0002


@dataclass(frozen=True)
class VpnRule:
    product: str
    descriptions: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    link_kinds: tuple[str, ...] = ()
    component_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdapterTable:
    vpn: tuple[VpnRule, ...]
    tunnel_names: tuple[str, ...]
    tunnel_kinds: tuple[str, ...]
    tunnel_if_types: tuple[int, ...]
    virtual_names: tuple[str, ...]
    virtual_descriptions: tuple[str, ...]
    virtual_kinds: tuple[str, ...]
    physical_names: tuple[str, ...]
    wifi_names: tuple[str, ...]
    wifi_media: tuple[str, ...]
    wifi_ports: tuple[str, ...]


def _strs(section: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    raw = section.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise ConfigError(f"{where}: {key!r} must be a list of non-empty strings")
    return tuple(raw)


def parse_table(doc: Mapping[str, Any], origin: str) -> AdapterTable:
    """Validate a parsed adapters.toml; errors name the file and the key."""
    known = {"vpn", "tunnel", "virtual", "physical"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ConfigError(f"{origin}: unknown section {unknown[0]!r}")
    rules = []
    for i, raw in enumerate(doc.get("vpn", [])):
        where = f"{origin}: [[vpn]] #{i + 1}"
        if not isinstance(raw, dict) or not isinstance(raw.get("product"), str) or not raw["product"]:
            raise ConfigError(f"{where}: 'product' is missing")
        extra = sorted(set(raw) - {"product", "descriptions", "names", "link_kinds", "component_ids"})
        if extra:
            raise ConfigError(f"{where}: unknown key {extra[0]!r}")
        rules.append(VpnRule(raw["product"], _strs(raw, "descriptions", where), _strs(raw, "names", where),
                             _strs(raw, "link_kinds", where), _strs(raw, "component_ids", where)))
    tunnel, virtual, physical = (doc.get(k, {}) for k in ("tunnel", "virtual", "physical"))
    if_types = tunnel.get("if_types", [])
    if not isinstance(if_types, list) or not all(isinstance(x, int) for x in if_types):
        raise ConfigError(f"{origin}: [tunnel] 'if_types' must be a list of integers")
    return AdapterTable(
        vpn=tuple(rules),
        tunnel_names=_strs(tunnel, "names", f"{origin}: [tunnel]"),
        tunnel_kinds=_strs(tunnel, "link_kinds", f"{origin}: [tunnel]"),
        tunnel_if_types=tuple(if_types),
        virtual_names=_strs(virtual, "names", f"{origin}: [virtual]"),
        virtual_descriptions=_strs(virtual, "descriptions", f"{origin}: [virtual]"),
        virtual_kinds=_strs(virtual, "link_kinds", f"{origin}: [virtual]"),
        physical_names=_strs(physical, "names", f"{origin}: [physical]"),
        wifi_names=_strs(physical, "wifi_names", f"{origin}: [physical]"),
        wifi_media=_strs(physical, "wifi_media", f"{origin}: [physical]"),
        wifi_ports=_strs(physical, "hardware_ports_wifi", f"{origin}: [physical]"),
    )


def load_table(path: Path = ADAPTERS_FILE) -> AdapterTable:
    return parse_table(load_user_toml(path, limit=1_000_000, what="the adapter table"), str(path))


@functools.lru_cache(maxsize=1)
def default_table() -> AdapterTable:
    """The bundled adapter table, loaded once."""
    return load_table()


def _match(value: str | None, patterns: Iterable[str]) -> str | None:
    """The first of ``patterns`` (shell-style, any case) that ``value`` matches."""
    if not value:
        return None
    low = value.lower()
    for p in patterns:
        if _matcher(p)(low):
            return p
    return None


@functools.lru_cache(maxsize=1024)
def _matcher(pattern: str) -> Callable[[str], bool]:
    """A lower-case name's test for ``pattern``. Nearly every pattern of the table is a prefix
    (``"wg*"``), tested as one: compiling each of them to a regular expression, as ``fnmatch``
    does, cost about 5 ms of CPU in every check."""
    low = pattern.lower()
    head = low[:-1] if low.endswith("*") else None
    if head is not None and not any(c in head for c in "*?["):
        return lambda name: name.startswith(head)
    if not any(c in low for c in "*?["):
        return low.__eq__
    return functools.partial(fnmatch.fnmatchcase, pat=low)


def _only_link_local(addresses: Iterable[str]) -> bool:
    seen = False
    for a in addresses:
        seen = True
        try:
            if not ipaddress.ip_address(a.split("/")[0].split("%")[0]).is_link_local:
                return False
        except ValueError:
            return False
    return seen


def _tunnel_evidence(f: InterfaceFacts, t: AdapterTable) -> list[str]:
    ev: list[str] = []
    if f.tun_flags is not None:
        what = "tap" if f.tun_flags & IFF_TAP else "tun"
        ev.append(f"Linux: /sys/class/net/{f.name}/tun_flags exists (a {what} device)")
    if f.link_kind and f.link_kind in t.tunnel_kinds:
        ev.append(f"link kind {f.link_kind!r}")
    if f.if_type is not None and f.if_type in t.tunnel_if_types:
        ev.append(f"ifType {f.if_type} ({'ppp' if f.if_type == 23 else 'tunnel'})")
    pat = _match(f.name, t.tunnel_names)
    if pat:
        ev.append(f"name matches {pat}")
    if f.point_to_point and ev:
        ev.append("point-to-point link")
    return ev


def _physical_evidence(f: InterfaceFacts, t: AdapterTable) -> tuple[list[str], bool]:
    """Evidence of a physical NIC, and whether it is Wi-Fi."""
    ev: list[str] = []
    wifi = False
    if f.wireless:
        ev.append(f"Linux: /sys/class/net/{f.name}/wireless exists (Wi-Fi)")
        wifi = True
    if f.has_device:
        ev.append(f"Linux: /sys/class/net/{f.name}/device exists (a bus device)")
    if f.hardware_interface:
        ev.append("Windows: HardwareInterface is True")
    if f.media_type and _match(f.media_type, t.wifi_media):
        ev.append(f"media type {f.media_type!r} (Wi-Fi)")
        wifi = True
    if f.hardware_port:
        ev.append(f"macOS hardware port {f.hardware_port!r}")
        wifi = wifi or bool(_match(f.hardware_port, t.wifi_ports))
    return ev, wifi


def classify(facts: InterfaceFacts, table: AdapterTable | None = None,
             override: str | None = None) -> Interface:
    """One interface's kind, VPN product and the evidence used."""
    t = table or default_table()
    f = facts

    def done(kind: str, evidence: Iterable[str], product: str | None = None) -> Interface:
        return Interface(name=f.name, kind=kind, vpn_product=product, evidence=tuple(evidence),
                         addresses=f.addresses, is_up=f.is_up, description=f.description, index=f.index)

    if f.loopback or f.link_type == "loopback" or f.if_type == 24 or f.name in ("lo", "lo0"):
        return done(LOOPBACK, ["loopback interface"])
    if override:
        return done(override, [f"set to {override} by configuration (NETCHECK_INTERFACE_KINDS)"])
    tunnel = _tunnel_evidence(f, t)
    if f.windows_vpn_connection:
        return done(VPN, [f"Get-VpnConnection lists {f.windows_vpn_connection!r}", *tunnel],
                    "Windows built-in VPN")
    for rule in t.vpn:
        ev: list[str] = []
        p = _match(f.description, rule.descriptions)
        if p:
            ev.append(f"description {f.description!r}")
        p = _match(f.component_id, rule.component_ids)
        if p:
            ev.append(f"component id {f.component_id!r}")
        if f.link_kind and f.link_kind in rule.link_kinds:
            ev.append(f"link kind {f.link_kind!r}")
        p = _match(f.name, rule.names)
        if p:
            ev.append(f"name matches {p}")
        if ev:
            extra = [e for e in tunnel if e not in ev]
            return done(VPN, [*ev, *extra], rule.product)
    p = _match(f.name, t.virtual_names)
    if p:
        return done(VIRTUAL, [f"name matches {p}"])
    p = _match(f.description, t.virtual_descriptions)
    if p:
        return done(VIRTUAL, [f"description {f.description!r}"])
    if f.link_kind and f.link_kind in t.virtual_kinds:
        return done(VIRTUAL, [f"link kind {f.link_kind!r}"])
    if tunnel:
        if f.name.startswith("utun") and _only_link_local(f.addresses):
            tunnel.append("only link-local addresses (often a macOS system tunnel, not a VPN)")
        return done(VPN, tunnel)
    if f.virtual or f.hardware_interface is False:
        reason = "Windows: Virtual is True" if f.virtual else "Windows: HardwareInterface is False"
        return done(VIRTUAL, [reason])
    physical, _wifi = _physical_evidence(f, t)
    if physical:
        return done(PHYSICAL, physical)
    if f.has_device is False:
        return done(VIRTUAL, [f"Linux: /sys/class/net/{f.name}/device is absent (no bus device)"])
    p = _match(f.name, t.physical_names)
    if p:
        return done(PHYSICAL, [f"name matches {p}"])
    return done(VIRTUAL, ["no evidence of a physical device"])


def classify_all(facts: Iterable[InterfaceFacts], table: AdapterTable | None = None,
                 overrides: Mapping[str, str] | None = None) -> tuple[Interface, ...]:
    o = overrides or {}
    return tuple(classify(f, table, o.get(f.name)) for f in facts)


def parse_overrides(text: str) -> dict[str, str]:
    """``"up0=physical,wg1=vpn"`` (the NETCHECK_INTERFACE_KINDS value)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        name, sep, kind = part.strip().partition("=")
        if not part.strip():
            continue
        kind = kind.strip().lower()
        if not sep or not name.strip() or kind not in (PHYSICAL, VPN, VIRTUAL, LOOPBACK):
            raise ConfigError(f"NETCHECK_INTERFACE_KINDS: {part.strip()!r} is not NAME=KIND "
                              f"(KIND one of physical, vpn, virtual, loopback)")
        out[name.strip()] = kind
    return out
