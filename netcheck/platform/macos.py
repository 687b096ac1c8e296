"""macOS: ``route -n get``, ``ifconfig``, ``networksetup -listallhardwareports``,
``scutil --nwi``, ``scutil --dns``, ``netstat -rn`` and ``scutil --proxy``.

Thin runners plus pure parsers tested on captured output. ``route`` cannot look up
many destinations in one process, so lookups run a few at a time in threads.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from netcheck.platform._run import Runner, ToolResult, default_runner
from netcheck.platform.base import (
    ONEDRIVE_URL_KEYS,
    UNKNOWN,
    UNREACHABLE,
    Egress,
    Interface,
    InterfaceFacts,
    Route,
    batch_egress,
)
from netcheck.platform.portable import PortablePlatform, source_address
from netcheck.proxy.settings import TOOL_TIMEOUT, ProxySettings, clean_proxy_url

METHOD = "route -n get"
_PARALLEL = 8
_NOT_FOUND = ("not in table", "has not been found", "no such process")


# --- pure parsers ------------------------------------------------------------------

def parse_route_get(stdout: str, stderr: str, destination: str) -> Egress:
    """``route -n get [-inet6] ADDR`` output (Apple network_cmds route.c print_getmsg)."""
    err = stderr.strip()
    if any(s in err.lower() or s in stdout.lower() for s in _NOT_FOUND):
        first = (err or stdout.strip()).splitlines()[0]
        return Egress(destination, None, None, None, UNREACHABLE, None, METHOD,
                      first.removeprefix("route: "))
    fields: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("route to", "destination", "mask", "gateway", "interface", "flags"):
            fields[key.strip()] = value.strip()
    iface = fields.get("interface")
    flags = set(fields.get("flags", "").strip("<>").split(","))
    if flags & {"REJECT", "BLACKHOLE"}:
        return Egress(destination, iface, None, None, UNREACHABLE, None, METHOD,
                      f"the route is marked {'REJECT' if 'REJECT' in flags else 'BLACKHOLE'}")
    if not iface:
        return Egress(destination, None, None, None, UNKNOWN, None, METHOD,
                      err.splitlines()[0] if err else "route -n get named no interface")
    gateway: str | None = (fields.get("gateway") or "").split("%", 1)[0]
    try:
        gateway = str(ipaddress.ip_address(gateway)) if gateway else None
    except ValueError:  # link#17, a MAC address: no next-hop router
        gateway = None
    return Egress(destination, iface, None, gateway, UNKNOWN, None, METHOD)


_IF_HEADER = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+): flags=[0-9a-fA-F]+<(?P<flags>[^>]*)>")


def parse_ifconfig(text: str) -> tuple[InterfaceFacts, ...]:
    """``ifconfig -a`` (BSD format)."""
    out: list[InterfaceFacts] = []
    name: str | None = None
    flags: tuple[str, ...] = ()
    addrs: list[str] = []
    status: str | None = None

    def flush() -> None:
        if name is None:
            return
        up = "UP" in flags and "RUNNING" in flags and status != "inactive"
        out.append(InterfaceFacts(name=name, addresses=tuple(addrs), is_up=up, flags=flags,
                                  loopback="LOOPBACK" in flags, point_to_point="POINTOPOINT" in flags))

    for raw in text.splitlines():
        m = _IF_HEADER.match(raw)
        if m:
            flush()
            name, flags, addrs, status = m.group("name"), tuple(m.group("flags").split(",")), [], None
            continue
        words = raw.split()
        if name is None or not words:
            continue
        if words[0] in ("inet", "inet6") and len(words) > 1:
            addrs.append(words[1].split("%", 1)[0])
        elif words[0] == "status:" and len(words) > 1:
            status = words[1]
    flush()
    return tuple(f for f in out if f.flags != ("",) or f.addresses)


def parse_hardware_ports(text: str) -> dict[str, str]:
    """``networksetup -listallhardwareports``: device -> hardware port name."""
    out: dict[str, str] = {}
    port: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Hardware Port:"):
            port = line.split(":", 1)[1].strip()
        elif line.startswith("Device:") and port:
            out[line.split(":", 1)[1].strip()] = port
            port = None
    return out


def parse_nwi(text: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """``scutil --nwi``: (interfaces in order, interface -> flags text)."""
    order: tuple[str, ...] = ()
    flags: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Network interfaces:"):
            order = tuple(line.split(":", 1)[1].split())
            continue
        m = re.match(r"^(?P<name>\S+)\s*:\s*flags\s*:\s*(?P<flags>.*)$", line)
        if m:
            prev = flags.get(m.group("name"))
            value = m.group("flags").strip()
            flags[m.group("name")] = value if prev is None or prev == value else f"{prev}; {value}"
    return order, flags


def parse_scutil_dns(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``scutil --dns``: (nameservers, search domains) of the unscoped resolvers,
    the default resolver (#1) first; the scoped section is ignored."""
    servers: list[str] = []
    search: list[str] = []
    section_scoped = False
    resolver_no = 0
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("DNS configuration"):
            section_scoped = "scoped" in line
            continue
        if section_scoped:
            continue
        m = re.match(r"^resolver #(\d+)", line)
        if m:
            resolver_no = int(m.group(1))
            continue
        key, sep, value = line.partition(" : ")
        if not sep:
            continue
        key = key.strip()
        if key.startswith("nameserver["):
            servers.append(value.strip().split("%", 1)[0])
        elif key.startswith("search domain[") and resolver_no == 1:
            search.append(value.strip().rstrip("."))
    return tuple(dict.fromkeys(servers)), tuple(dict.fromkeys(search))


def _netstat_dst(dst: str, family: int) -> str:
    if dst == "default":
        return "0.0.0.0/0" if family == 4 else "::/0"
    addr, _, bits = dst.partition("/")
    addr = addr.split("%", 1)[0]
    if family == 4:
        parts = addr.split(".")
        if not bits:
            bits = str(8 * len(parts)) if len(parts) < 4 else "32"
        addr = ".".join((parts + ["0", "0", "0"])[:4])
    elif not bits:
        bits = "128"
    try:
        return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))
    except ValueError:
        return dst


def parse_netstat_rn(text: str) -> tuple[Route, ...]:
    """``netstat -rn`` (macOS): Internet and Internet6 sections."""
    out: list[Route] = []
    family = 0
    for raw in text.splitlines():
        line = raw.strip()
        if line == "Internet:":
            family = 4
            continue
        if line == "Internet6:":
            family = 6
            continue
        words = line.split()
        if not family or len(words) < 4 or words[0] == "Destination":
            continue
        dst, gateway, flags, netif = words[0], words[1], words[2], words[3]
        rtype = "blackhole" if "B" in flags else "reject" if "R" in flags else "unicast"
        gw = gateway.split("%", 1)[0] if "G" in flags and not gateway.startswith("link#") else None
        out.append(Route(destination=_netstat_dst(dst, family), gateway=gw, interface=netif, type=rtype))
    return tuple(out)


# --- OneDrive accounts ----------------------------------------------------------------

#: The OneDrive client's preferences, relative to the home directory: the standalone app's
#: group container first, then the App Store app's preferences.
ONEDRIVE_PLISTS = (
    "Library/Group Containers/UBF8T346G9.OneDriveStandaloneSuite/Library/Preferences/"
    "UBF8T346G9.OneDriveStandaloneSuite.plist",
    "Library/Preferences/com.microsoft.OneDrive.plist",
)


def parse_onedrive_plist(data: bytes) -> tuple[str, ...]:
    """SharePoint URLs from the OneDrive client's preferences (a binary or XML property list).

    Business accounts are dictionaries named ``Business1``, ``Business2``, ...; their
    ``SPOResourceId``, ``TeamSiteSPOResourceId`` and ``ServiceEndpointUri`` are read, nothing
    else. A damaged file gives no URL.
    """
    import plistlib

    try:
        doc = plistlib.loads(data)
    except Exception:  # plistlib raises several types (InvalidFileException, ValueError, ...) for damage
        return ()
    wanted = {k.lower() for k in ONEDRIVE_URL_KEYS}
    out: dict[str, None] = {}
    stack: list[tuple[object, int]] = [(doc, 0)]
    while stack:
        node, level = stack.pop(0)
        if not isinstance(node, dict) or level > 4:
            continue
        for key, value in node.items():
            if isinstance(value, dict):
                if re.fullmatch(r"Business\d+", str(key), re.IGNORECASE):
                    out.update((str(v), None) for k, v in value.items() if str(k).lower() in wanted
                               and isinstance(v, str) and v.lower().startswith("https://"))
                else:
                    stack.append((value, level + 1))
    return tuple(out)


# --- proxy settings: scutil --proxy --------------------------------------------------

def parse_scutil_dict(text: str) -> dict[str, Any]:
    """Parse scutil's ``<dictionary> { key : value ... }`` text (arrays become lists)."""
    root: dict[str, Any] = {}
    stack: list[dict[str, Any] | list[Any]] = [root]
    started = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not started:
            if line.startswith("<dictionary>"):
                started = True
            continue
        if line == "}":
            if len(stack) > 1:
                stack.pop()
            continue
        key, sep, value = line.partition(" : ")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        top = stack[-1]
        child: dict[str, Any] | list[Any] | None = None
        if value.startswith("<dictionary>"):
            child = {}
        elif value.startswith("<array>"):
            child = []
        item: Any = child if child is not None else value
        if isinstance(top, list):
            top.append(item)
        else:
            top[key] = item
        if child is not None:
            stack.append(child)
    return root


def _flag(d: Mapping[str, Any], key: str) -> bool:
    return str(d.get(key, "0")).strip() == "1"


def scutil_settings(d: Mapping[str, Any]) -> ProxySettings:
    """Settings from a parsed ``scutil --proxy`` dictionary."""
    proxies: dict[str, str] = {}
    evidence: list[str] = []
    for prefix, scheme, url_scheme in (("HTTP", "http", "http"), ("HTTPS", "https", "http"),
                                       ("SOCKS", "socks", "socks5"), ("FTP", "ftp", "http")):
        if not _flag(d, f"{prefix}Enable"):
            continue
        host = str(d.get(f"{prefix}Proxy", "")).strip()
        if not host or host == "<NULL>":
            continue
        port = str(d.get(f"{prefix}Port", "")).strip()
        url, _ = clean_proxy_url(f"{host}:{port}" if port.isdigit() and port != "0" else host,
                                  url_scheme)
        if url:
            proxies[scheme] = url
            evidence.append(f"{prefix}Enable=1, {prefix}Proxy={host}:{port or '?'}")
    pac_url = None
    if _flag(d, "ProxyAutoConfigEnable"):
        pac = str(d.get("ProxyAutoConfigURLString", "")).strip()
        if pac:
            pac_url = pac
            evidence.append(f"ProxyAutoConfigURLString={pac}")
    auto = _flag(d, "ProxyAutoDiscoveryEnable")
    if auto:
        evidence.append("ProxyAutoDiscoveryEnable=1 (WPAD)")
    exceptions = d.get("ExceptionsList", [])
    bypass = tuple(str(x) for x in exceptions) if isinstance(exceptions, list) else ()
    settings = ProxySettings(source="scutil", proxies=proxies, bypass=bypass, pac_url=pac_url,
                             auto_detect=auto, bypass_local=_flag(d, "ExcludeSimpleHostnames"),
                             evidence=tuple(evidence))
    return settings if settings.configured else replace(settings, source="none")


def read_macos(run: Runner) -> ProxySettings:
    res = run(["scutil", "--proxy"], TOOL_TIMEOUT)
    if not res.ok:
        return ProxySettings(source="scutil", error=res.problem)
    return scutil_settings(parse_scutil_dict(res.stdout))


# --- the platform ---------------------------------------------------------------------

class MacPlatform(PortablePlatform):
    name = "darwin"

    def __init__(self, run: Runner = default_runner, overrides: Mapping[str, str] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        super().__init__(overrides, environ)
        self._run = run

    def interface_facts(self) -> tuple[InterfaceFacts, ...]:
        res = self._run(["ifconfig", "-a"], 5.0)
        facts = parse_ifconfig(res.stdout) if res.ok else ()
        if not facts:
            facts = super().interface_facts()
        ports = self._run(["networksetup", "-listallhardwareports"], 5.0)
        by_dev = parse_hardware_ports(ports.stdout) if ports.ok else {}
        nwi = self._run(["scutil", "--nwi"], 5.0)
        _order, nwi_flags = parse_nwi(nwi.stdout) if nwi.ok else ((), {})
        out = []
        for f in facts:
            port = by_dev.get(f.name)
            desc = port or (f"scutil --nwi: {nwi_flags[f.name]}" if f.name in nwi_flags else None)
            out.append(replace(f, hardware_port=port, description=desc))
        return tuple(out)

    def _one(self, address: str) -> Egress | None:
        """What `route -n get` says for one address; None when there is no route command."""
        family = ["-inet6"] if ipaddress.ip_address(address).version == 6 else []
        res: ToolResult = self._run(["route", "-n", "get", *family, address], 3.0)
        if res.missing:
            return None
        if res.timed_out:
            return Egress(address, None, None, None, UNKNOWN, None, METHOD, "route -n get timed out")
        e = parse_route_get(res.stdout, res.stderr, address)
        if e.interface and e.kind != UNREACHABLE:
            src, _err = source_address(address)
            e = replace(e, source=src)
        return e

    def egress_many(self, addresses: Sequence[str],
                    interfaces: Sequence[Interface] | None = None) -> Mapping[str, Egress]:
        return batch_egress(addresses, METHOD, self._route_get,
                            self.interfaces if interfaces is None else interfaces)

    def _route_get(self, unique: list[str]) -> Mapping[str, Egress]:
        with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
            found = dict(zip(unique, pool.map(self._one, unique), strict=True))
        if any(e is None for e in found.values()):  # no route command: the portable way, once for all
            return dict(super().egress_many(unique))
        return {a: e for a, e in found.items() if e is not None}

    def routes(self) -> tuple[Route, ...]:
        res = self._run(["netstat", "-rn"], 5.0)
        return parse_netstat_rn(res.stdout) if res.ok else ()

    def _dns(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        res = self._run(["scutil", "--dns"], 5.0)
        if res.ok:
            servers, search = parse_scutil_dns(res.stdout)
            if servers:
                return servers, search
        return super()._dns()

    def _os_proxy_settings(self) -> ProxySettings:
        return read_macos(self._run)

    def onedrive_urls(self) -> tuple[str, ...]:
        from pathlib import Path

        from netcheck.errors import ConfigError
        from netcheck.files import read_user_file

        out: dict[str, None] = {}
        for rel in ONEDRIVE_PLISTS:
            try:
                data = read_user_file(Path.home() / rel, limit=4_000_000, what="the OneDrive preferences")
            except ConfigError:
                continue  # not installed, or not readable: nothing learnt
            out.update(dict.fromkeys(parse_onedrive_plist(data)))
        return tuple(out)
