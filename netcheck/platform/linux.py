"""Linux: ``ip route get`` (honours policy routing: fwmark rules, extra tables, as
wg-quick and many VPN clients use them), ``ip -d addr``, sysfs, resolv.conf, and the
desktop's proxy settings (GNOME ``gsettings``, KDE ``kreadconfig``).

Split into thin runners (``LinuxPlatform``) and pure parsers (``parse_*``),
tested on output captured from real iproute2. Everything works unprivileged.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from netcheck.platform._run import Runner, default_runner
from netcheck.platform.base import (
    UNKNOWN,
    UNREACHABLE,
    Egress,
    Interface,
    InterfaceFacts,
    Route,
    batch_egress,
    normalize_address,
)
from netcheck.platform.portable import PortablePlatform
from netcheck.proxy.settings import TOOL_TIMEOUT, ProxySettings, clean_proxy_url, split_list

METHOD = "ip route get"
#: Route types that mean "the kernel will not send it".
_DEAD_TYPES = {"unreachable", "blackhole", "prohibit", "throw"}
_SYS_NET = Path("/sys/class/net")


# --- pure parsers ---------------------------------------------------------------

def iter_json_values(text: str) -> Iterator[Any]:
    """Every JSON value in ``text`` (``ip -j -batch`` prints one array per command)."""
    decoder = json.JSONDecoder()
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            nl = text.find("\n", i)
            if nl < 0:
                break
            i = nl + 1
            continue
        yield value
        i = end


def egress_from_route_json(obj: Mapping[str, Any], destination: str | None = None) -> Egress:
    """One ``ip -j route get`` object as an Egress (kind still "unknown")."""
    dst = str(obj.get("dst") or destination or "")
    rtype = str(obj.get("type") or "unicast")
    metric = obj.get("metric")
    if rtype in _DEAD_TYPES:
        return Egress(dst, None, None, None, UNREACHABLE, obj.get("table"), METHOD,
                      f"the route is of type {rtype}", metric if isinstance(metric, int) else None)
    return Egress(
        destination=dst, interface=obj.get("dev"), source=obj.get("prefsrc"),
        gateway=obj.get("gateway"), kind=UNKNOWN, table=obj.get("table"), method=METHOD,
        metric=metric if isinstance(metric, int) else None,
    )


_BATCH_FAIL = re.compile(r"^Command failed (?P<file>\S+):(?P<line>\d+)\s*$")


def parse_batch_errors(stderr: str) -> dict[int, str]:
    """Line number (1-based) -> error message, from ``ip -force -batch`` stderr."""
    out: dict[int, str] = {}
    pending: list[str] = []
    for raw in stderr.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _BATCH_FAIL.match(line)
        if m:
            msg = pending[-1] if pending else "ip reported an error"
            msg = re.sub(r"^(RTNETLINK answers|Error):\s*", "", msg)
            out[int(m.group("line"))] = msg
            pending = []
        else:
            pending.append(line)
    return out


#: What the kernel's answers to ``ip route get`` mean (errno text -> route kind).
_ROUTE_ERRORS = {
    "network is unreachable": "no route to this network",
    "no route to host": "an unreachable route",
    "invalid argument": "a blackhole route",
    "permission denied": "a prohibit route",
}


def _error_egress(address: str, message: str) -> Egress:
    low = message.lower()
    for text, meaning in _ROUTE_ERRORS.items():
        if text in low:
            return Egress(address, None, None, None, UNREACHABLE, None, METHOD, f"{meaning} ({message})")
    return Egress(address, None, None, None, UNKNOWN, None, METHOD, message)


def parse_route_get_batch(stdout: str, stderr: str, addresses: Sequence[str]) -> dict[str, Egress]:
    """Results of ``ip -j -force -batch -`` fed one ``route get ADDR`` per line.

    Answers are matched to addresses by their ``dst``; failed lines by number.
    """
    by_dst: dict[str, Mapping[str, Any]] = {}
    for value in iter_json_values(stdout):
        for obj in value if isinstance(value, list) else [value]:
            if isinstance(obj, dict) and obj.get("dst"):
                try:
                    by_dst.setdefault(normalize_address(str(obj["dst"])), obj)
                except ValueError:
                    continue
    errors = parse_batch_errors(stderr)
    out: dict[str, Egress] = {}
    for line_no, address in enumerate(addresses, start=1):
        obj = by_dst.get(address)
        if obj is not None:
            out[address] = egress_from_route_json(obj, address)
        elif line_no in errors:
            out[address] = _error_egress(address, errors[line_no])
        else:
            out[address] = Egress(address, None, None, None, UNKNOWN, None, METHOD,
                                  "ip route get gave no answer")
    return out


def parse_route_get_text(text: str, destination: str) -> Egress:
    """Plain ``ip route get ADDR`` output (iproute2 without JSON support)."""
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln[0].isspace()), "")
    words = first.split()
    if not words:
        return _error_egress(destination, "ip route get gave no answer")
    rtype = "unicast"
    if words[0] in _DEAD_TYPES | {"local", "broadcast", "multicast", "anycast"}:
        rtype, words = words[0], words[1:]
    fields: dict[str, str] = {}
    i = 1  # words[0] is the destination
    while i < len(words):
        key = words[i]
        if key in ("via", "dev", "src", "table", "metric", "from", "mark", "uid", "proto") \
                and i + 1 < len(words):
            fields[key] = words[i + 1]
            i += 2
        else:
            i += 1
    gateway = fields.get("via")
    if gateway and gateway.startswith("inet"):  # "via inet6 fe80::1" form
        gateway = None
    obj: dict[str, Any] = {"dst": words[0] if words else destination, "type": rtype,
                           "dev": fields.get("dev"), "prefsrc": fields.get("src"),
                           "gateway": gateway, "table": fields.get("table")}
    if fields.get("metric", "").isdigit():
        obj["metric"] = int(fields["metric"])
    return egress_from_route_json(obj, destination)


def parse_ip_addr_json(text: str) -> tuple[InterfaceFacts, ...]:
    """``ip -j -d addr show``: names, addresses, state and link kinds."""
    try:
        data = json.loads(text or "[]")
    except json.JSONDecodeError:
        return ()
    out: list[InterfaceFacts] = []
    for link in data if isinstance(data, list) else []:
        if not isinstance(link, dict) or not link.get("ifname"):
            continue
        flags = tuple(str(f) for f in link.get("flags", []))
        addrs = tuple(str(a["local"]) for a in link.get("addr_info", [])
                      if isinstance(a, dict) and a.get("local") and a.get("family") in ("inet", "inet6"))
        info = link.get("linkinfo") or {}
        kind = info.get("info_kind") if isinstance(info, dict) else None
        operstate = str(link.get("operstate", "")).upper()
        up = "UP" in flags and operstate != "DOWN" and "NO-CARRIER" not in flags
        if operstate == "UNKNOWN" and "UP" in flags and "LOWER_UP" in flags:
            up = True
        out.append(InterfaceFacts(
            name=str(link["ifname"]), addresses=addrs, is_up=up, index=link.get("ifindex"),
            link_kind=str(kind) if kind else None, link_type=link.get("link_type"), flags=flags,
            loopback="LOOPBACK" in flags, point_to_point="POINTOPOINT" in flags))
    return tuple(out)


def _route_dst(dst: str, family: int) -> str:
    if dst == "default":
        return "0.0.0.0/0" if family == 4 else "::/0"
    if "/" in dst:
        return dst
    try:
        return f"{dst}/{ipaddress.ip_address(dst).max_prefixlen}"
    except ValueError:
        return dst


def parse_ip_route_show_json(text: str, family: int) -> tuple[Route, ...]:
    """``ip -j [-6] route show table all``."""
    try:
        data = json.loads(text or "[]")
    except json.JSONDecodeError:
        return ()
    out: list[Route] = []
    for r in data if isinstance(data, list) else []:
        if not isinstance(r, dict) or "dst" not in r:
            continue
        metric = r.get("metric")
        out.append(Route(destination=_route_dst(str(r["dst"]), family), gateway=r.get("gateway"),
                         interface=r.get("dev"), table=r.get("table"),
                         metric=metric if isinstance(metric, int) else None,
                         type=str(r.get("type") or "unicast")))
    return tuple(out)


def parse_resolv_conf(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(nameservers, search domains) from resolv.conf text."""
    servers: list[str] = []
    search: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            servers.append(words[1].split("%", 1)[0])
        elif words and words[0] in ("search", "domain"):
            search = words[1:]  # the last one wins, as in the resolver
    return tuple(dict.fromkeys(servers)), tuple(s.rstrip(".") for s in search)


_LINK_LINE = re.compile(r"^(?:Global|Link \d+ \((?P<name>[^)]+)\))\s*:\s*(?P<rest>.*)$")


def parse_resolvectl(text: str) -> dict[str, tuple[str, ...]]:
    """``resolvectl dns`` or ``resolvectl domain``: scope ("Global" or link name) -> values."""
    out: dict[str, tuple[str, ...]] = {}
    for raw in text.splitlines():
        m = _LINK_LINE.match(raw.strip())
        if not m:
            continue
        scope = m.group("name") or "Global"
        values = tuple(v.split("#", 1)[0].split("%", 1)[0].rstrip(".")
                       for v in m.group("rest").split() if not v.startswith("~"))
        out[scope] = tuple(v for v in values if v)
    return out


def _stub_only(servers: Sequence[str]) -> bool:
    return bool(servers) and all(s.startswith("127.0.0.53") or s == "127.0.0.54" for s in servers)


def read_sysfs(facts: InterfaceFacts, root: Path = _SYS_NET) -> InterfaceFacts:
    """Add what /sys/class/net says about one interface."""
    base = root / facts.name
    if not base.is_dir():
        return facts
    tun: int | None = None
    try:
        tun = int((base / "tun_flags").read_text().strip(), 16)
    except (OSError, ValueError):
        tun = None
    return replace(facts, tun_flags=tun, has_device=(base / "device").exists(),
                   wireless=(base / "wireless").exists() or (base / "phy80211").exists())


# --- proxy settings: GNOME (gsettings) and KDE (kioslaverc) --------------------------

def _gvariant(text: str) -> Any:
    """A GVariant text value as printed by gsettings: 'str', 8080, true, ['a', 'b'], @as []."""
    value = text.strip()
    value = re.sub(r"^@[a-z]+\s+", "", value)
    value = re.sub(r"^(?:u?int(?:16|32|64)|byte|double)\s+", "", value)
    if value in ("true", "false"):
        return value == "true"
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def parse_gsettings(text: str) -> ProxySettings:
    """``gsettings list-recursively org.gnome.system.proxy`` output."""
    values: dict[str, Any] = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 2)
        if len(parts) < 3 or not parts[0].startswith("org.gnome.system.proxy"):
            continue
        sub = parts[0][len("org.gnome.system.proxy"):].lstrip(".")
        values[f"{sub}.{parts[1]}" if sub else parts[1]] = _gvariant(parts[2])
    if "mode" not in values:
        return ProxySettings(source="gsettings", error="gsettings has no org.gnome.system.proxy schema")
    mode = str(values["mode"])
    ignore = values.get("ignore-hosts", [])
    bypass = tuple(str(x) for x in ignore) if isinstance(ignore, list) else ()
    evidence = [f"GNOME proxy mode '{mode}'"]
    if mode == "auto":
        pac = str(values.get("autoconfig-url", "")).strip()
        return ProxySettings(source="gsettings", pac_url=pac or None, auto_detect=not pac,
                             bypass=bypass, evidence=(*evidence, f"autoconfig-url={pac}" if pac
                                                      else "no autoconfig-url: WPAD"))
    if mode != "manual":
        return ProxySettings(source="none", evidence=tuple(evidence))
    proxies: dict[str, str] = {}
    for section, scheme, url_scheme in (("http", "http", "http"), ("https", "https", "http"),
                                        ("ftp", "ftp", "http"), ("socks", "socks", "socks5")):
        host = str(values.get(f"{section}.host", "")).strip()
        port = values.get(f"{section}.port", 0)
        if host:
            url, _ = clean_proxy_url(f"{host}:{port}" if port else host, url_scheme)
            if url:
                proxies[scheme] = url
                evidence.append(f"{section}.host={host} port={port}")
    settings = ProxySettings(source="gsettings", proxies=proxies, bypass=bypass, evidence=tuple(evidence))
    return settings if settings.configured else replace(settings, source="none")


KDE_KEYS = ("ProxyType", "httpProxy", "httpsProxy", "ftpProxy", "socksProxy", "NoProxyFor",
            "Proxy Config Script", "ReversedException")


def _kde_proxy(value: str, scheme: str) -> str | None:
    """KDE writes ``http://proxy.example.com 8080`` (a space before the port)."""
    text = value.strip()
    m = re.match(r"^(.*\S)\s+(\d+)$", text)
    if m:
        text = f"{m.group(1)}:{m.group(2)}"
    url, _ = clean_proxy_url(text, scheme)
    return url


def kde_settings(values: Mapping[str, str]) -> ProxySettings:
    """Settings from kioslaverc's [Proxy Settings] values (as kreadconfig prints them)."""
    kind = values.get("ProxyType", "").strip() or "0"
    names = {"0": "no proxy", "1": "manual", "2": "PAC script", "3": "WPAD", "4": "environment variables"}
    evidence = [f"KDE ProxyType={kind} ({names.get(kind, 'unknown')})"]
    bypass = split_list(values.get("NoProxyFor", ""), ",")
    reversed_ = values.get("ReversedException", "").strip().lower() == "true"
    if kind == "1":
        proxies: dict[str, str] = {}
        for key, scheme, url_scheme in (("httpProxy", "http", "http"), ("httpsProxy", "https", "http"),
                                        ("ftpProxy", "ftp", "http"), ("socksProxy", "socks", "socks5")):
            url = _kde_proxy(values.get(key, ""), url_scheme)
            if url:
                proxies[scheme] = url
                evidence.append(f"{key}={url}")
        if reversed_:
            evidence.append("ReversedException: only the listed hosts use the proxy")
        return ProxySettings(source="kde" if proxies else "none", proxies=proxies, bypass=bypass,
                             bypass_reversed=reversed_, evidence=tuple(evidence))
    if kind == "2":
        pac = values.get("Proxy Config Script", "").strip()
        return ProxySettings(source="kde", pac_url=pac or None, evidence=(*evidence, f"script {pac}"),
                             error=None if pac else "KDE is set to use a PAC script but names none")
    if kind == "3":
        return ProxySettings(source="kde", auto_detect=True, evidence=tuple(evidence))
    if kind == "4":
        return ProxySettings(source="none", evidence=(*evidence, "KDE defers to the environment"))
    return ProxySettings(source="none", evidence=tuple(evidence))


def read_linux_desktop(run: Runner, environ: Mapping[str, str]) -> ProxySettings:
    """KDE when the session is KDE, GNOME's gsettings otherwise; "none" if neither answers."""
    desktop = (environ.get("XDG_CURRENT_DESKTOP", "") + ":" + environ.get("DESKTOP_SESSION", "")).lower()
    if "kde" in desktop or "plasma" in desktop:
        for tool in ("kreadconfig6", "kreadconfig5"):
            values: dict[str, str] = {}
            for key in KDE_KEYS:
                res = run([tool, "--file", "kioslaverc", "--group", "Proxy Settings", "--key", key],
                          TOOL_TIMEOUT)
                if res.missing:
                    break
                values[key] = res.stdout.strip()
            else:
                return kde_settings(values)
    res = run(["gsettings", "list-recursively", "org.gnome.system.proxy"], TOOL_TIMEOUT)
    if res.missing:
        return ProxySettings(source="none", evidence=("no desktop proxy settings tool (gsettings, kreadconfig)",))
    if not res.ok:
        return ProxySettings(source="gsettings", error=res.problem)
    return parse_gsettings(res.stdout)


# --- the platform -------------------------------------------------------------------

class LinuxPlatform(PortablePlatform):
    name = "linux"

    def __init__(self, run: Runner = default_runner, overrides: Mapping[str, str] | None = None,
                 environ: Mapping[str, str] | None = None, sysfs: Path = _SYS_NET,
                 resolv_conf: Path = Path("/etc/resolv.conf")) -> None:
        super().__init__(overrides, environ)
        self._run = run
        self._sysfs = sysfs
        self._resolv_conf = resolv_conf

    # interfaces ------------------------------------------------------------------
    def interface_facts(self) -> tuple[InterfaceFacts, ...]:
        res = self._run(["ip", "-j", "-d", "addr", "show"], 5.0)
        facts = parse_ip_addr_json(res.stdout) if res.ok else ()
        if not facts:
            facts = super().interface_facts()
        return tuple(read_sysfs(f, self._sysfs) for f in facts)

    # egress ------------------------------------------------------------------------
    def egress_many(self, addresses: Sequence[str],
                    interfaces: Sequence[Interface] | None = None) -> Mapping[str, Egress]:
        return batch_egress(addresses, METHOD, self._lookup_or_portable,
                            self.interfaces if interfaces is None else interfaces)

    def _lookup_or_portable(self, addresses: list[str]) -> Mapping[str, Egress]:
        found = self._lookup(addresses)
        return dict(super().egress_many(addresses)) if found is None else found  # no usable ip

    def _lookup(self, addresses: Sequence[str]) -> dict[str, Egress] | None:
        script = "".join(f"route get {a}\n" for a in addresses)
        timeout = 3.0 + 0.01 * len(addresses)
        res = self._run(["ip", "-j", "-force", "-batch", "-"], timeout, script)
        if res.missing:
            return None
        if res.timed_out:
            return {a: Egress(a, None, None, None, UNKNOWN, None, METHOD, "ip route get timed out")
                    for a in addresses}
        if res.stdout.strip() or "Command failed" in res.stderr:
            return parse_route_get_batch(res.stdout, res.stderr, addresses)
        # iproute2 without JSON: one plain call per address.
        out: dict[str, Egress] = {}
        for a in addresses:
            one = self._run(["ip", "route", "get", a], 3.0)
            if one.ok:
                out[a] = parse_route_get_text(one.stdout, a)
            else:
                out[a] = _error_egress(a, (one.problem or "ip route get failed").split(": ", 1)[-1])
        return out

    # routes, DNS, proxies ----------------------------------------------------------------
    def routes(self) -> tuple[Route, ...]:
        out: list[Route] = []
        for family, flag in ((4, "-4"), (6, "-6")):
            res = self._run(["ip", "-j", flag, "route", "show", "table", "all"], 5.0)
            if res.ok:
                out.extend(parse_ip_route_show_json(res.stdout, family))
        return tuple(out)

    def _dns(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        try:
            servers, search = parse_resolv_conf(self._resolv_conf.read_text(encoding="utf-8"))
        except OSError:
            servers, search = (), ()
        if _stub_only(servers):
            dns = self._run(["resolvectl", "dns"], 3.0)
            if dns.ok:
                links = parse_resolvectl(dns.stdout)
                real = tuple(dict.fromkeys(s for v in links.values() for s in v))
                if real:
                    servers = real
            dom = self._run(["resolvectl", "domain"], 3.0)
            if dom.ok:
                doms = tuple(dict.fromkeys(d for v in parse_resolvectl(dom.stdout).values() for d in v))
                search = doms or search
        return servers, search

    def _os_proxy_settings(self) -> ProxySettings:
        return read_linux_desktop(self._run, self._environ)
