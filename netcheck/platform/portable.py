"""The egress lookup that works on every OS.

A UDP ``connect()`` sends no packet, but makes the OS choose a route and a
source address; ``getsockname()`` reveals the source, and the interface that
holds that address is the egress interface. The gateway is only reported when
the egress interface carries the default route and the destination is not on
one of its connected networks.

The interface readers (:mod:`netcheck.platform._ifaces`: psutil and netifaces, about
12 ms of CPU to import) load only when a method below needs them: on Linux the
``ip`` tool answers, and a check never does.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping, Sequence

from netcheck.platform.base import (
    UNKNOWN,
    UNREACHABLE,
    Egress,
    Interface,
    InterfaceFacts,
    InterfaceIndex,
    Route,
    invalid_egress,
    normalize_address,
)
from netcheck.platform.classify import classify_all
from netcheck.proxy.settings import ProxySettings, combine, from_environment

METHOD = "udp-connect"
_PROBE_PORT = 9  # discard; nothing is sent


def source_address(address: str) -> tuple[str | None, str | None]:
    """(source address the OS picks for ``address``, error)."""
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((str(ip), _PROBE_PORT))
            return str(s.getsockname()[0]).split("%", 1)[0], None
    except OSError as exc:
        return None, exc.strerror or str(exc)


def egress_from_source(address: str, source: str | None, error: str | None,
                       interfaces: Sequence[Interface],
                       gateways: Mapping[int, tuple[str, str]],
                       prefixes: Mapping[str, Sequence[str]]) -> Egress:
    """Pure: turn a source address into an Egress using the interface list."""
    if source is None:
        return Egress(address, None, None, None, UNREACHABLE, None, METHOD, error or "no route")
    index = InterfaceIndex.of(interfaces)
    owner = index.owner_of(source)
    if owner is None:
        return Egress(address, None, source, None, UNKNOWN, None, METHOD,
                      f"no interface holds the source address {source}")
    dest = ipaddress.ip_address(address)
    family = socket.AF_INET6 if dest.version == 6 else socket.AF_INET
    gateway = None
    gw = gateways.get(family)
    if gw and gw[1] == owner.name:
        on_link = False
        for prefix in prefixes.get(owner.name, ()):
            try:
                if dest in ipaddress.ip_network(prefix, strict=False):
                    on_link = True
            except ValueError:
                continue
        gateway = None if on_link else gw[0]
    return Egress(address, owner.name, source, gateway, owner.kind, None, METHOD)


def _prefixes() -> dict[str, list[str]]:
    from netcheck.platform import _ifaces

    out: dict[str, list[str]] = {}
    for a in _ifaces.local_addresses():
        if a.prefixlen is not None:
            out.setdefault(a.interface, []).append(f"{a.address}/{a.prefixlen}")
    return out


class PortablePlatform:
    """Works wherever Python does; the per-OS platforms are built on it.

    A per-OS platform (``linux``, ``macos``, ``windows``) subclasses it and overrides
    ``interface_facts``, ``egress_many``, ``routes``, ``_dns`` and ``_os_proxy_settings`` with
    what its OS's own tools say, falling back to these (``super()``) where the tools are
    missing; classification, one-address egress, the DNS accessors and the order of proxy
    sources (the environment first) are shared.
    """

    name = "portable"

    def __init__(self, overrides: Mapping[str, str] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self._overrides = dict(overrides or {})
        self._environ = dict(os.environ if environ is None else environ)

    def interface_facts(self) -> tuple[InterfaceFacts, ...]:
        from netcheck.platform import _ifaces

        return _ifaces.facts()

    def interfaces(self) -> tuple[Interface, ...]:
        return classify_all(self.interface_facts(), overrides=self._overrides)

    def egress_for(self, address: str) -> Egress:
        return self.egress_many([address])[address]

    def egress_many(self, addresses: Sequence[str],
                    interfaces: Sequence[Interface] | None = None) -> Mapping[str, Egress]:
        from netcheck.platform import _ifaces

        interfaces = self.interfaces() if interfaces is None else interfaces
        gateways = _ifaces.default_gateways()
        prefixes = _prefixes()
        out: dict[str, Egress] = {}
        for address in addresses:
            try:
                canon = normalize_address(address)
            except ValueError:
                out[address] = invalid_egress(address, METHOD)
                continue
            source, error = source_address(canon)
            out[address] = egress_from_source(canon, source, error, interfaces, gateways, prefixes)
        return out

    def proxy_settings(self) -> ProxySettings:
        return combine(from_environment(self._environ), self._os_proxy_settings(), self._environ)

    def _os_proxy_settings(self) -> ProxySettings:
        """The OS's own proxy configuration (none known here)."""
        return ProxySettings(source="none")

    def _dns(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(nameservers, search domains) as the OS's resolver uses them."""
        return _system_resolver()

    def dns_servers(self) -> tuple[str, ...]:
        return self._dns()[0]

    def search_domains(self) -> tuple[str, ...]:
        return self._dns()[1]

    def routes(self) -> tuple[Route, ...]:
        return ()

    def onedrive_urls(self) -> tuple[str, ...]:
        """The SharePoint URLs the OneDrive client's business accounts use (none known here)."""
        return ()


def _system_resolver() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Nameservers and search domains as dnspython reads them (resolv.conf, registry)."""
    import dns.resolver

    try:
        r = dns.resolver.Resolver(configure=True)
    except (dns.resolver.NoResolverConfiguration, OSError):
        return (), ()
    servers = tuple(str(s) for s in r.nameservers)
    search = tuple(str(n).rstrip(".") for n in r.search)
    return servers, search
