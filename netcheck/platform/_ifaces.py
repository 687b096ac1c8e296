"""Interface enumeration: the only module that imports netifaces or calls
psutil.net_if_addrs / net_if_stats.

netifaces-plus provides ``import netifaces``; replacing it touches this file only.
psutil gives interface names as the OS shows them (friendly names on Windows);
netifaces gives default gateways.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import netifaces
import psutil

from netcheck.platform.base import InterfaceFacts


@dataclass(frozen=True)
class LocalAddress:
    interface: str
    address: str  # without a %scope suffix
    prefixlen: int | None


def _prefixlen(family: int, netmask: str | None) -> int | None:
    if not netmask:
        return None
    try:
        if family == socket.AF_INET:
            return ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen
        return ipaddress.IPv6Network(f"::/{netmask.split('/')[0]}").prefixlen
    except ValueError:
        return None


def local_addresses() -> tuple[LocalAddress, ...]:
    """Every IPv4/IPv6 address of every interface."""
    out: list[LocalAddress] = []
    for name, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6) or not a.address:
                continue
            out.append(LocalAddress(name, a.address.split("%", 1)[0], _prefixlen(a.family, a.netmask)))
    return tuple(out)


def link_state() -> Mapping[str, tuple[bool, tuple[str, ...]]]:
    """Interface name -> (is up, flags as psutil reports them)."""
    out: dict[str, tuple[bool, tuple[str, ...]]] = {}
    for name, st in psutil.net_if_stats().items():
        flags = tuple(f for f in str(getattr(st, "flags", "") or "").split(",") if f)
        out[name] = (bool(st.isup), flags)
    return out


def facts() -> tuple[InterfaceFacts, ...]:
    """Portable facts: names, addresses, up/down, loopback and point-to-point flags."""
    addrs: dict[str, list[str]] = {}
    for a in local_addresses():
        addrs.setdefault(a.interface, []).append(a.address)
    state = link_state()
    names = list(dict.fromkeys([*addrs, *state]))
    out = []
    for name in names:
        up, flags = state.get(name, (False, ()))
        out.append(InterfaceFacts(
            name=name, addresses=tuple(addrs.get(name, ())), is_up=up, flags=flags,
            loopback="loopback" in flags, point_to_point="pointopoint" in flags))
    return tuple(out)


def default_gateways() -> Mapping[int, tuple[str, str]]:
    """Address family -> (gateway, interface) of the default route, as netifaces sees it.

    On Windows netifaces names interfaces by GUID, so the interface may not match
    psutil's names there.
    """
    try:
        table = netifaces.gateways()
    except (OSError, ValueError):
        return {}
    out: dict[int, tuple[str, str]] = {}
    default = table.get("default", {}) if isinstance(table, dict) else {}
    for family in (netifaces.AF_INET, netifaces.AF_INET6):
        entry = default.get(family) if isinstance(default, dict) else None
        if isinstance(entry, tuple) and len(entry) >= 2:
            fam = socket.AF_INET if family == netifaces.AF_INET else socket.AF_INET6
            out[fam] = (str(entry[0]).split("%", 1)[0], str(entry[1]))
    return out
