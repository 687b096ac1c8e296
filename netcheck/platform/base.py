"""The per-OS seam: what every platform module provides, and the values it returns.

Everything here is data or a Protocol; no module in this file touches the OS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from netcheck.proxy.settings import ProxySettings

#: Interface kinds.
PHYSICAL, VPN, VIRTUAL, LOOPBACK = "physical", "vpn", "virtual", "loopback"
INTERFACE_KINDS = (PHYSICAL, VPN, VIRTUAL, LOOPBACK)
#: Egress kinds: an interface kind, or one of these two.
UNREACHABLE, UNKNOWN = "unreachable", "unknown"
EGRESS_KINDS = (*INTERFACE_KINDS, UNREACHABLE, UNKNOWN)


@dataclass(frozen=True)
class Interface:
    """A network interface, classified, with the evidence for the classification."""

    name: str
    kind: str  # "physical" | "vpn" | "virtual" | "loopback"
    vpn_product: str | None
    evidence: tuple[str, ...]
    addresses: tuple[str, ...]
    is_up: bool
    #: The OS's description (Windows InterfaceDescription, macOS hardware port).
    description: str | None = None
    index: int | None = None


@dataclass(frozen=True)
class Egress:
    """Where the OS would send a packet for ``destination``."""

    destination: str
    interface: str | None
    source: str | None
    gateway: str | None
    kind: str  # an interface kind, "unreachable" or "unknown"
    table: str | None
    method: str  # "ip route get" | "route -n get" | "Find-NetRoute" | "udp-connect"
    error: str | None = None
    metric: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.kind not in (UNREACHABLE, UNKNOWN)


@dataclass(frozen=True)
class Route:
    """One entry of a routing table (for finding a VPN concentrator's host route)."""

    destination: str  # a prefix, "default" written as 0.0.0.0/0 or ::/0
    gateway: str | None
    interface: str | None
    table: str | None = None
    metric: int | None = None
    type: str = "unicast"  # unicast | blackhole | unreachable | prohibit | local | ...


@dataclass(frozen=True)
class InterfaceFacts:
    """What an OS module observed about one interface, before classification.

    ``None`` means "not observed on this OS", which is different from False.
    """

    name: str
    addresses: tuple[str, ...] = ()
    is_up: bool = False
    index: int | None = None
    description: str | None = None
    #: Linux rtnetlink link kind (``linkinfo.info_kind``): tun, wireguard, veth, bridge, ...
    link_kind: str | None = None
    link_type: str | None = None  # Linux link_type (ether, none, loopback, ppp, ...)
    flags: tuple[str, ...] = ()
    loopback: bool = False
    point_to_point: bool = False
    #: Linux: /sys/class/net/X/tun_flags exists (a tun/tap device), and its value.
    tun_flags: int | None = None
    #: Linux: /sys/class/net/X/device exists (backed by a bus device).
    has_device: bool | None = None
    #: Linux: /sys/class/net/X/wireless or phy80211 exists.
    wireless: bool | None = None
    #: macOS: the hardware port from ``networksetup -listallhardwareports``.
    hardware_port: str | None = None
    #: Windows: Get-NetAdapter's HardwareInterface / Virtual, PhysicalMediaType, ifType.
    hardware_interface: bool | None = None
    virtual: bool | None = None
    media_type: str | None = None
    if_type: int | None = None
    component_id: str | None = None
    #: Windows: the built-in VPN connection (Get-VpnConnection) with this name, and its tunnel type.
    windows_vpn_connection: str | None = None


class RouteTable(Protocol):
    def egress_for(self, address: str) -> Egress: ...


class Platform(Protocol):
    """What :func:`netcheck.platform.current` returns."""

    name: str

    def interfaces(self) -> tuple[Interface, ...]: ...

    def egress_for(self, address: str) -> Egress: ...

    def egress_many(self, addresses: Sequence[str],
                    interfaces: Sequence[Interface] | None = None) -> Mapping[str, Egress]:
        """The egress of each address; ``interfaces``: the classified interfaces when the caller
        already read them (a check reads them once), else read here."""
        ...

    def proxy_settings(self) -> ProxySettings:
        """The proxy settings this laptop's programs follow: the environment's proxies first, then
        the OS's own (read by each OS module: ``reg query``/``netsh winhttp``, ``scutil --proxy``,
        ``gsettings``/``kreadconfig``). Which proxy a URL takes is :mod:`netcheck.proxy.decision`'s."""
        ...

    def dns_servers(self) -> tuple[str, ...]: ...

    def search_domains(self) -> tuple[str, ...]: ...

    def routes(self) -> tuple[Route, ...]: ...

    def onedrive_urls(self) -> tuple[str, ...]: ...


#: The OneDrive client's per-account values that hold the organisation's SharePoint URLs (never the
#: user's e-mail or folders): the same names in the Windows registry and the macOS preferences.
ONEDRIVE_URL_KEYS = ("SPOResourceId", "TeamSiteSPOResourceId", "ServiceEndpointUri")


def normalize_address(text: str) -> str:
    """``text`` as the canonical form of an IP address; ValueError if it is not one."""
    value = text.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    value = value.split("%", 1)[0]
    return str(ipaddress.ip_address(value))


def invalid_egress(address: str, method: str) -> Egress:
    return Egress(destination=address, interface=None, source=None, gateway=None, kind=UNKNOWN,
                  table=None, method=method, error=f"{address!r} is not an IP address")


@dataclass(frozen=True)
class InterfaceIndex:
    """Interfaces by name, for turning an egress interface name into a kind."""

    by_name: Mapping[str, Interface] = field(default_factory=dict)

    @classmethod
    def of(cls, interfaces: Sequence[Interface]) -> InterfaceIndex:
        return cls({i.name: i for i in interfaces})

    def kind_of(self, name: str | None) -> str:
        if name is None:
            return UNKNOWN
        iface = self.by_name.get(name)
        return iface.kind if iface else UNKNOWN

    def owner_of(self, address: str) -> Interface | None:
        """The interface holding ``address``, if any."""
        try:
            want = normalize_address(address)
        except ValueError:
            return None
        for iface in self.by_name.values():
            for a in iface.addresses:
                try:
                    if normalize_address(a.split("/", 1)[0]) == want:
                        return iface
                except ValueError:
                    continue
        return None


def batch_egress(addresses: Sequence[str], method: str,
                 lookup: Callable[[list[str]], Mapping[str, Egress]],
                 interfaces: Callable[[], Sequence[Interface]] | Sequence[Interface]) -> dict[str, Egress]:
    """The frame every OS's ``egress_many`` shares: canonicalise the addresses (an
    invalid one gets an error Egress), ask ``lookup`` once for the distinct ones, and
    fill in the interface kind the OS tool did not give from the classified interfaces (given, or
    a function that reads them, called only when needed)."""
    canon: dict[str, str] = {}
    out: dict[str, Egress] = {}
    for a in addresses:
        try:
            canon[a] = normalize_address(a)
        except ValueError:
            out[a] = invalid_egress(a, method)
    unique = list(dict.fromkeys(canon.values()))
    if not unique:
        return out
    found = lookup(unique)
    index = InterfaceIndex.of(interfaces() if callable(interfaces) else interfaces)
    for original, c in canon.items():
        e = found[c]
        if e.kind == UNKNOWN and e.interface:
            e = replace(e, kind=index.kind_of(e.interface))
        out[original] = e
    return out
