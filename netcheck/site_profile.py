"""The site profile: what IT knows about its corporate sites (optional TOML).

Example (every key optional)::

    [site]
    name = "Paris HQ"
    networks = ["10.20.0.0/16", "203.0.113.0/28"]   # the site's LAN and public ranges
    vpn_gateways = ["vpn.contoso.example"]          # concentrators at the site
    dns_servers = ["10.20.0.53"]
    proxies = ["proxy.contoso.example:3128"]
    pac_hosts = ["pac.contoso.example"]
    federation_hosts = ["adfs.contoso.example"]
    vpn_on_site_down = "stays"       # "stays" (always-on, black-holes) or "drops"; omit: predict both
    vpn_failover = ["Dublin DC"]     # sites (or their VPN gateways) the client fails over to, in order
    internet_via = "Dublin DC"       # this site reaches the internet only through that site (a branch office
                                     # without its own breakout); omit: its own link, or what the laptop's
                                     # public address (STUN) says
    pac_unreachable = "direct"       # when the PAC file cannot be fetched: "direct" (no PAC: the laptop's manual
                                     # proxy settings, or DIRECT if it has none, as browsers do), "fail" or
                                     # "cached" (old copy); omit: the prediction names it as an assumption
    # The VPN profile laptops use away from the office, for predictions made on site:
    vpn_mode = "split"               # "none", "full" or "split"
    vpn_exclude = ["Optimize", "203.0.113.0/24"]  # categories, endpoint-set ids or prefixes sent direct

Several sites: a file with several ``[[site]]`` tables (each with the keys above and a
``name``), or the collector's policy's ``site_profiles`` (a list of objects with the same
keys). Each is a site the outage prediction can take down, alone or with the others; the
laptop's settings (vpn_on_site_down, pac_unreachable, vpn_mode, vpn_exclude) come from the
profile :func:`select_site_profile` picks, else the first. ``vpn_failover`` and ``internet_via``
name other profiles.

A laptop on a site's network stays where it is when a *different* site is lost (losing the site
its internet goes out through, ``internet_via``, then costs it the internet where it stands);
the person goes home when their *own* site is lost. The laptop's site is the profile with the most
specific network holding its address: a branch numbered out of a datacentre's block is written as a
site of its own (its ``networks``, ``internet_via`` the datacentre), so its people stay at the branch,
cut off, when the datacentre is lost.

Without a profile netcheck infers the site's systems from the laptop's own
configuration (see ``netcheck.assess.outage``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from netcheck.errors import ConfigError
from netcheck.files import load_user_toml
from netcheck.m365.catalog import Network, in_networks
from netcheck.names import listed_host

_KEYS = {"name", "networks", "vpn_gateways", "dns_servers", "proxies", "pac_hosts", "federation_hosts",
         "vpn_on_site_down", "pac_unreachable", "vpn_mode", "vpn_exclude", "vpn_failover", "internet_via"}
_CATEGORIES = ("Optimize", "Allow", "Default")


@dataclass(frozen=True)
class SiteProfile:
    name: str = "the corporate site"
    networks: tuple[Network, ...] = ()
    vpn_gateways: tuple[str, ...] = ()
    dns_servers: tuple[str, ...] = ()
    proxies: tuple[str, ...] = ()
    pac_hosts: tuple[str, ...] = ()
    federation_hosts: tuple[str, ...] = ()
    vpn_on_site_down: str | None = None
    #: None: not stated, so the prediction names it as an assumption (see netcheck.assess.outage.pac_assumption)
    pac_unreachable: str | None = None
    vpn_mode: str | None = None
    vpn_exclude: tuple[str | int, ...] = ()
    #: The sites (by name) whose VPN gateways the client fails over to when this site's are gone, in order.
    vpn_failover: tuple[str, ...] = ()
    #: The site (by name) this site's internet traffic goes out through (a branch without its own breakout).
    internet_via: str | None = None
    #: IT stated it (a file or the collector's policy); False for the inferred default
    from_file: bool = False

    def holds_address(self, address: str) -> bool:
        return in_networks(address, self.networks)

    def names_host(self, host: str) -> bool:
        host = listed_host(host)
        listed = {listed_host(h) for h in (*self.vpn_gateways, *self.dns_servers, *self.proxies,
                                                    *self.pac_hosts, *self.federation_hosts)}
        return host in listed


def _strings(doc: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: [site] {key} must be a list of strings")
    return tuple(value)

#: Site profiles larger than this are refused (a real one is a few kB).
MAX_PROFILE_BYTES = 1_000_000


def load_site_profile(path: Path) -> SiteProfile:
    """The profile in a TOML file with one ``[site]`` table."""
    profiles = load_site_profiles(path)
    if len(profiles) != 1:
        raise ConfigError(f"{path}: a site profile has one [site] table and nothing else")
    return profiles[0]


def load_site_profiles(path: Path) -> tuple[SiteProfile, ...]:
    """The profiles in a TOML file (``--site-profile FILE``): one ``[site]`` table, or several
    ``[[site]]`` tables, each naming its site (the names differ)."""
    doc = load_user_toml(path, limit=MAX_PROFILE_BYTES, what="the site profile")
    site = doc.get("site")
    if set(doc) - {"site"} or not (isinstance(site, dict) or (
            isinstance(site, list) and site and all(isinstance(s, dict) for s in site))):
        raise ConfigError(f"{path}: a site profile has one [site] table, or several [[site]] tables, and nothing "
                          "else")
    if isinstance(site, dict):
        return check_site_names([site_profile_from_mapping(site, str(path))], str(path))
    return check_site_names([site_profile_from_mapping(s, f"{path}: [[site]] {i + 1}")
                             for i, s in enumerate(site)], str(path))


def check_site_names(profiles: Sequence[SiteProfile], where: str) -> tuple[SiteProfile, ...]:
    """Several profiles: each names its site, no two alike; a failover or ``internet_via`` names another."""
    if len(profiles) > 1:
        names = [p.name.casefold() for p in profiles]
        twice = next((p.name for p, n in zip(profiles, names, strict=True) if names.count(n) > 1), None)
        if twice:
            raise ConfigError(f"{where}: two site profiles are named {twice!r}; give each site its own name")
        canonical = {p.name.casefold(): p.name for p in profiles}
        # a failover entry names a site, or a VPN gateway that a site's profile lists (as the VPN
        # client's own configuration names it)
        gateways: dict[str, str] = {}
        for p in profiles:
            for g in p.vpn_gateways:
                gateways.setdefault(listed_host(g), p.name)
        for p in profiles:
            unknown = [n for n in p.vpn_failover if n.casefold() not in canonical
                       and listed_host(n) not in gateways]
            if unknown:
                raise ConfigError(f"{where}: [site] {p.name!r} vpn_failover names {unknown[0]!r}, which is neither "
                                  "a site profile's name nor a VPN gateway a profile lists")
            if p.internet_via and p.internet_via.casefold() not in canonical:
                raise ConfigError(f"{where}: [site] {p.name!r} internet_via names {p.internet_via!r}, which no "
                                  "profile is named")
        profiles = [replace(p, vpn_failover=tuple(dict.fromkeys(
                                canonical.get(n.casefold()) or gateways[listed_host(n)]
                                for n in p.vpn_failover)),
                            internet_via=canonical[p.internet_via.casefold()] if p.internet_via else None)
                    for p in profiles]
    for p in profiles:
        if p.internet_via and p.internet_via.casefold() == p.name.casefold():
            raise ConfigError(f"{where}: [site] {p.name!r} internet_via names the site itself; omit it for a site "
                              "with its own internet link")
    return tuple(profiles)


def site_profile_from_mapping(site: object, where: str) -> SiteProfile:
    """A profile from the keys of a ``[site]`` table, however it arrived (a TOML file, an entry
    of the collector's ``site_profiles`` policy). ``where`` starts every error message."""
    if not isinstance(site, Mapping):
        raise ConfigError(f"{where}: a site profile must be a table of [site] keys (a JSON object)")
    unknown = sorted(str(k) for k in set(site) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: [site] has unknown key {unknown[0]!r}")
    name = site.get("name", "the corporate site")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: [site] name must be a non-empty string")
    networks = []
    for text in _strings(site, "networks", where):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(f"{where}: [site] networks: {text!r} is not an IP prefix") from None
    behaviour = site.get("vpn_on_site_down")
    if behaviour not in (None, "stays", "drops"):
        raise ConfigError(f"{where}: [site] vpn_on_site_down must be \"stays\" or \"drops\"")
    pac = site.get("pac_unreachable")
    if pac not in (None, "direct", "fail", "cached"):
        raise ConfigError(f"{where}: [site] pac_unreachable must be \"direct\", \"fail\" or \"cached\"")
    via = site.get("internet_via")
    if via is not None and (not isinstance(via, str) or not via.strip()):
        raise ConfigError(f"{where}: [site] internet_via must be the name of another site")
    mode = site.get("vpn_mode")
    if mode not in (None, "none", "full", "split"):
        raise ConfigError(f"{where}: [site] vpn_mode must be \"none\", \"full\" or \"split\"")
    items = site.get("vpn_exclude", [])
    if not isinstance(items, list):
        raise ConfigError(f"{where}: [site] vpn_exclude must be a list")
    exclude: list[str | int] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            exclude.append(item)
            continue
        if isinstance(item, str) and item in _CATEGORIES:
            exclude.append(item)
            continue
        try:
            ipaddress.ip_network(str(item), strict=False)
        except ValueError:
            raise ConfigError(f"{where}: [site] vpn_exclude: {item!r} is not a category "
                              "(Optimize, Allow, Default), an endpoint-set id or an IP prefix") from None
        exclude.append(str(item))
    if exclude and mode != "split":
        raise ConfigError(f"{where}: [site] vpn_exclude needs vpn_mode = \"split\"")
    return SiteProfile(
        name=name.strip(), networks=tuple(networks), vpn_mode=mode, vpn_exclude=tuple(exclude),
        vpn_gateways=_strings(site, "vpn_gateways", where), dns_servers=_strings(site, "dns_servers", where),
        proxies=_strings(site, "proxies", where), pac_hosts=_strings(site, "pac_hosts", where),
        federation_hosts=_strings(site, "federation_hosts", where),
        vpn_failover=tuple(n.strip() for n in _strings(site, "vpn_failover", where)),
        internet_via=via.strip() if via else None, vpn_on_site_down=behaviour, pac_unreachable=pac,
        from_file=True)


def select_site_profile(profiles: Sequence[SiteProfile], addresses: Iterable[str],
                        site_tag: str | None = None) -> SiteProfile | None:
    """The profile that applies to this laptop, chosen from several (the collector's policy).

    ``addresses`` are the laptop's own addresses and, when known, its public egress address.
    For the first address a profile's ``networks`` hold, the profile with the most specific network
    holding it wins (a branch numbered out of a datacentre's block is the branch; the first profile on a
    tie); failing that, the first whose ``name`` equals the device's ``site`` tag (ignoring case and
    surrounding spaces); else None.
    """
    for address in addresses:
        holding = [(max(n.prefixlen for n in p.networks if in_networks(address, (n,))), -i, p)
                   for i, p in enumerate(profiles) if p.holds_address(address)]
        if holding:
            return max(holding, key=lambda h: h[:2])[2]
    tag = (site_tag or "").strip().casefold()
    if tag:
        return next((p for p in profiles if p.name.strip().casefold() == tag), None)
    return None
