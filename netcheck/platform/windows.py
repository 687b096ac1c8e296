"""Windows: ``Find-NetRoute``, ``Get-NetAdapter``, ``Get-NetIPAddress``,
``Get-NetIPInterface``, ``Get-VpnConnection``, ``Get-NetRoute``, ``Get-DnsClient*``
(through one Windows PowerShell process per question, output as JSON), plus
``reg query`` and ``netsh winhttp`` for proxies.

The scripts select properties and let ``ConvertTo-Json`` print them; the parsers
read that JSON and are tested on captured output. Addresses are validated as IP
addresses before they are written into a script, so no text from elsewhere is
ever run as PowerShell.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from netcheck.platform._run import Runner, default_runner
from netcheck.platform.base import (
    ONEDRIVE_URL_KEYS,
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

METHOD = "Find-NetRoute"
_PS = ("powershell", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand")
_PRELUDE = "[Console]::OutputEncoding = [Text.Encoding]::UTF8\n$ProgressPreference = 'SilentlyContinue'\n"

ROUTE_SCRIPT = _PRELUDE + r"""
$out = foreach ($a in @(__ADDRESSES__)) {
  try {
    $found = @(Find-NetRoute -RemoteIPAddress $a -ErrorAction Stop)
    $ip = $found | Where-Object { $_.PSObject.Properties.Name -contains 'IPAddress' } | Select-Object -First 1
    $rt = $found | Where-Object { $_.PSObject.Properties.Name -contains 'NextHop' } | Select-Object -First 1
    [pscustomobject]@{ Destination = $a; InterfaceAlias = $rt.InterfaceAlias; InterfaceIndex = $rt.InterfaceIndex;
      SourceAddress = $ip.IPAddress; NextHop = $rt.NextHop; DestinationPrefix = $rt.DestinationPrefix;
      RouteMetric = $rt.RouteMetric; Error = $null }
  } catch {
    [pscustomobject]@{ Destination = $a; Error = $_.Exception.Message }
  }
}
ConvertTo-Json -InputObject @($out) -Depth 3 -Compress
"""

INTERFACES_SCRIPT = _PRELUDE + r"""
$ad = @(Get-NetAdapter -IncludeHidden | Select-Object Name, InterfaceDescription, ifIndex, Status,
  MediaType, PhysicalMediaType, HardwareInterface, Virtual, ComponentID,
  @{n='ifType';e={[int]$_.InterfaceType}})
$ipa = @(Get-NetIPAddress | Select-Object InterfaceAlias, InterfaceIndex, IPAddress,
  @{n='AddressFamily';e={[string]$_.AddressFamily}})
$ipi = @(Get-NetIPInterface | Select-Object InterfaceAlias, ifIndex,
  @{n='AddressFamily';e={[string]$_.AddressFamily}}, @{n='ConnectionState';e={[string]$_.ConnectionState}},
  InterfaceMetric)
$vpn = @()
foreach ($all in @($false, $true)) {
  try {
    $vpn += @(Get-VpnConnection -AllUserConnection:$all -ErrorAction Stop | Select-Object Name,
      @{n='TunnelType';e={[string]$_.TunnelType}}, ConnectionStatus, SplitTunneling, ServerAddress)
  } catch { }
}
$result = [ordered]@{ adapters = $ad; addresses = $ipa; ipinterfaces = $ipi; vpn = $vpn }
ConvertTo-Json -InputObject $result -Depth 4 -Compress
"""

ROUTES_SCRIPT = _PRELUDE + r"""
$r = @(Get-NetRoute | Select-Object DestinationPrefix, NextHop, InterfaceAlias, ifIndex, RouteMetric,
  @{n='AddressFamily';e={[string]$_.AddressFamily}})
ConvertTo-Json -InputObject $r -Depth 3 -Compress
"""

DNS_SCRIPT = _PRELUDE + r"""
$s = @(Get-DnsClientServerAddress | Select-Object InterfaceAlias, InterfaceIndex,
  @{n='AddressFamily';e={[string]$_.AddressFamily}}, ServerAddresses)
$g = @((Get-DnsClientGlobalSetting).SuffixSearchList)
$c = @(Get-DnsClient | Select-Object InterfaceAlias, ConnectionSpecificSuffix)
ConvertTo-Json -InputObject ([ordered]@{ servers = $s; search = $g; suffixes = $c }) -Depth 4 -Compress
"""


def encode_script(script: str) -> str:
    """PowerShell's -EncodedCommand form: base64 of UTF-16LE."""
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


def route_script(addresses: Sequence[str]) -> str:
    """The Find-NetRoute script for validated addresses (ValueError for anything else)."""
    quoted = ",".join(f"'{normalize_address(a)}'" for a in addresses)
    return ROUTE_SCRIPT.replace("__ADDRESSES__", quoted)


# --- pure parsers -------------------------------------------------------------------

def _json(text: str) -> Any:
    body = text.strip().lstrip("\ufeff")
    if not body:
        return None
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return None


def _as_list(value: Any) -> list[Any]:
    """ConvertTo-Json prints a one-element array as a bare object, and $null as null."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _on_link(next_hop: str | None) -> bool:
    return not next_hop or next_hop in ("0.0.0.0", "::")


def parse_find_netroute(text: str, addresses: Sequence[str]) -> dict[str, Egress]:
    """Output of :data:`ROUTE_SCRIPT` (kinds still "unknown")."""
    data = _json(text)
    rows = {}
    for row in _as_list(data):
        if isinstance(row, dict) and row.get("Destination"):
            try:
                rows[normalize_address(str(row["Destination"]))] = row
            except ValueError:
                continue
    out: dict[str, Egress] = {}
    for a in addresses:
        row = rows.get(a)
        if row is None:
            out[a] = Egress(a, None, None, None, UNKNOWN, None, METHOD, "Find-NetRoute gave no answer")
            continue
        if row.get("Error"):
            msg = str(row["Error"]).strip().splitlines()[0]
            low = msg.lower()
            kind = UNREACHABLE if ("unreachable" in low or "no route" in low
                                   or "network location cannot be reached" in low) else UNKNOWN
            out[a] = Egress(a, None, None, None, kind, None, METHOD, msg)
            continue
        hop = row.get("NextHop")
        metric = row.get("RouteMetric")
        out[a] = Egress(
            destination=a, interface=row.get("InterfaceAlias"), source=row.get("SourceAddress"),
            gateway=None if _on_link(hop) else str(hop), kind=UNKNOWN, table=None, method=METHOD,
            metric=metric if isinstance(metric, int) else None)
    return out


def parse_interfaces(text: str) -> tuple[InterfaceFacts, ...]:
    """Output of :data:`INTERFACES_SCRIPT`."""
    data = _json(text)
    if not isinstance(data, dict):
        return ()
    addrs: dict[str, list[str]] = {}
    for a in _as_list(data.get("addresses")):
        if isinstance(a, dict) and a.get("InterfaceAlias") and a.get("IPAddress"):
            addrs.setdefault(str(a["InterfaceAlias"]), []).append(str(a["IPAddress"]).split("%", 1)[0])
    connected: dict[str, bool] = {}
    index: dict[str, int] = {}
    for i in _as_list(data.get("ipinterfaces")):
        if isinstance(i, dict) and i.get("InterfaceAlias"):
            alias = str(i["InterfaceAlias"])
            state = str(i.get("ConnectionState", "")).lower() in ("connected", "1")
            connected[alias] = connected.get(alias, False) or state
            if isinstance(i.get("ifIndex"), int):
                index[alias] = i["ifIndex"]
    vpn_names = {}
    for v in _as_list(data.get("vpn")):
        if isinstance(v, dict) and v.get("Name"):
            status = v.get("ConnectionStatus") or "?"
            tunnel = v.get("TunnelType") or "?"
            vpn_names[str(v["Name"])] = f"{v['Name']} ({tunnel}, {status})"
    out: list[InterfaceFacts] = []
    seen: set[str] = set()
    for ad in _as_list(data.get("adapters")):
        if not isinstance(ad, dict) or not ad.get("Name"):
            continue
        name = str(ad["Name"])
        seen.add(name)
        if_type = ad.get("ifType") if isinstance(ad.get("ifType"), int) else None
        up = str(ad.get("Status", "")).lower() == "up" or connected.get(name, False)
        hw = ad.get("HardwareInterface")
        virt = ad.get("Virtual")
        out.append(InterfaceFacts(
            name=name, addresses=tuple(addrs.get(name, ())), is_up=up,
            index=ad.get("ifIndex") if isinstance(ad.get("ifIndex"), int) else index.get(name),
            description=ad.get("InterfaceDescription"), if_type=if_type,
            hardware_interface=hw if isinstance(hw, bool) else None,
            virtual=virt if isinstance(virt, bool) else None,
            media_type=ad.get("PhysicalMediaType") or ad.get("MediaType"),
            component_id=ad.get("ComponentID"), loopback=if_type == 24,
            windows_vpn_connection=vpn_names.get(name)))
    for alias in list(dict.fromkeys([*connected, *addrs])):
        if alias in seen:
            continue
        out.append(InterfaceFacts(
            name=alias, addresses=tuple(addrs.get(alias, ())), is_up=connected.get(alias, False),
            index=index.get(alias), loopback=fnmatch.fnmatch(alias, "Loopback Pseudo-Interface*"),
            windows_vpn_connection=vpn_names.get(alias)))
    return tuple(out)


def parse_routes(text: str) -> tuple[Route, ...]:
    """Output of :data:`ROUTES_SCRIPT` (Get-NetRoute)."""
    out: list[Route] = []
    for r in _as_list(_json(text)):
        if not isinstance(r, dict) or not r.get("DestinationPrefix"):
            continue
        hop = r.get("NextHop")
        metric = r.get("RouteMetric")
        out.append(Route(destination=str(r["DestinationPrefix"]),
                         gateway=None if _on_link(hop) else str(hop),
                         interface=r.get("InterfaceAlias"),
                         metric=metric if isinstance(metric, int) else None))
    return tuple(out)


_PLACEHOLDER_DNS = {"fec0:0:0:ffff::1", "fec0:0:0:ffff::2", "fec0:0:0:ffff::3"}


def parse_dns(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Output of :data:`DNS_SCRIPT`: (servers, search suffixes)."""
    data = _json(text)
    if not isinstance(data, dict):
        return (), ()
    servers: list[str] = []
    for s in _as_list(data.get("servers")):
        if not isinstance(s, dict) or str(s.get("InterfaceAlias", "")).startswith("Loopback"):
            continue
        for addr in _as_list(s.get("ServerAddresses")):
            if isinstance(addr, str) and addr and addr.lower() not in _PLACEHOLDER_DNS:
                servers.append(addr)
    search = [str(x) for x in _as_list(data.get("search")) if isinstance(x, str) and x]
    for c in _as_list(data.get("suffixes")):
        if isinstance(c, dict) and c.get("ConnectionSpecificSuffix"):
            search.append(str(c["ConnectionSpecificSuffix"]))
    return tuple(dict.fromkeys(servers)), tuple(dict.fromkeys(s.rstrip(".") for s in search))


# --- OneDrive accounts ------------------------------------------------------------------

#: Where the OneDrive client keeps its accounts (Business1, Business2, ... and Personal).
ONEDRIVE_ACCOUNTS_KEY = r"HKCU\Software\Microsoft\OneDrive\Accounts"


def parse_onedrive_accounts(text: str) -> tuple[str, ...]:
    """SharePoint URLs from ``reg query HKCU\\Software\\Microsoft\\OneDrive\\Accounts /s``.

    Only the business accounts' ``SPOResourceId``, ``TeamSiteSPOResourceId`` and
    ``ServiceEndpointUri`` values are read (the user's e-mail and folders are not).
    """
    wanted = {k.lower() for k in ONEDRIVE_URL_KEYS}
    out: dict[str, None] = {}
    business = False
    for raw in text.splitlines():
        line = raw.rstrip("\r\n")
        if line.startswith("HKEY_"):
            leaf = line.rstrip("\\").rsplit("\\", 1)[-1]
            business = bool(re.fullmatch(r"Business\d+", leaf, re.IGNORECASE))
            continue
        m = REG_LINE.match(line)
        if business and m and m.group("type") == "REG_SZ" and m.group("name").lower() in wanted:
            value = (m.group("value") or "").strip()
            if value.lower().startswith("https://"):
                out[value] = None
    return tuple(out)


# --- proxy settings: reg query (WinINET) and netsh winhttp ------------------------------

def parse_proxy_server(value: str) -> dict[str, str]:
    """Windows ``ProxyServer`` syntax: ``host:port`` or ``http=h:p;https=h:p;socks=h:p``."""
    out: dict[str, str] = {}
    plain: list[str] = []
    for part in re.split(r"[;\s]+", value.strip()):
        if not part:
            continue
        if "=" in part:
            scheme, _, target = part.partition("=")
            scheme = scheme.strip().lower()
            url, _ = clean_proxy_url(target, "socks" if scheme == "socks" else "http")
            if url and scheme and scheme not in out:
                out[scheme] = url
        else:
            plain.append(part)
    if plain:
        url, _ = clean_proxy_url(plain[0])
        if url:
            for scheme in ("http", "https", "ftp"):
                out.setdefault(scheme, url)
    return out


#: One value line of ``reg query`` output.
REG_LINE = re.compile(r"^\s{2,}(?P<name>.*?)\s{2,}(?P<type>REG_[A-Z_]+)(?:\s{2,}(?P<value>.*))?$")


def parse_reg_query(text: str) -> dict[str, str | int]:
    """Values of the first key in ``reg query KEY`` output (subkeys ignored).

    ``REG_DWORD``/``REG_QWORD`` become ints, others stay text (``REG_BINARY`` as hex).
    The unnamed default value, ``(Default)``, is skipped.
    """
    values: dict[str, str | int] = {}
    seen_key = False
    for raw in text.splitlines():
        line = raw.rstrip("\r\n")
        if line.startswith("HKEY_"):
            if seen_key:
                break
            seen_key = True
            continue
        m = REG_LINE.match(line)
        if not m:
            continue
        name, kind, value = m.group("name"), m.group("type"), (m.group("value") or "").strip()
        if name == "(Default)":
            continue
        if kind in ("REG_DWORD", "REG_QWORD"):
            try:
                values[name] = int(value, 16) if value.lower().startswith("0x") else int(value)
            except ValueError:
                continue
        else:
            values[name] = value
    return values


#: Flags byte 8 of ``DefaultConnectionSettings`` (the "LAN settings" dialog).
_CONN_PROXY, _CONN_PAC, _CONN_AUTODETECT = 0x02, 0x04, 0x08


def connection_flags(blob_hex: str) -> int | None:
    """The flags of a ``DefaultConnectionSettings`` REG_BINARY, or None if too short."""
    text = re.sub(r"\s+", "", blob_hex)
    if len(text) < 18 or not re.fullmatch(r"[0-9A-Fa-f]+", text):
        return None
    return int(text[16:18], 16)


def wininet_settings(user: Mapping[str, str | int], policy: Mapping[str, str | int] | None = None,
                     connection_blob: str | None = None) -> ProxySettings:
    """WinINET settings from the Internet Settings values (Group Policy values win)."""
    merged: dict[str, str | int] = dict(user)
    evidence: list[str] = []
    if policy:
        for key in ("ProxyEnable", "ProxyServer", "ProxyOverride", "AutoConfigURL", "AutoDetect"):
            if key in policy:
                merged[key] = policy[key]
                evidence.append(f"{key} set by Group Policy")
    flags = connection_flags(connection_blob) if connection_blob else None
    enabled = merged.get("ProxyEnable") == 1
    if flags is not None:
        evidence.append(f"DefaultConnectionSettings flags 0x{flags:02x}")
    proxies: dict[str, str] = {}
    server = merged.get("ProxyServer")
    if enabled and isinstance(server, str) and server:
        proxies = parse_proxy_server(server)
        evidence.append(f"ProxyEnable=1, ProxyServer={server}")
    elif isinstance(server, str) and server:
        evidence.append(f"ProxyServer={server} is present but ProxyEnable is 0")
    override = merged.get("ProxyOverride")
    bypass = split_list(override, ";") if isinstance(override, str) else ()
    pac = merged.get("AutoConfigURL")
    pac_url = pac.strip() if isinstance(pac, str) and pac.strip() else None
    if pac_url and flags is not None and not flags & _CONN_PAC:
        evidence.append("AutoConfigURL is present but the 'use setup script' box is cleared")
        pac_url = None
    elif pac_url:
        evidence.append(f"AutoConfigURL={pac_url}")
    auto = merged.get("AutoDetect") == 1 or bool(flags is not None and flags & _CONN_AUTODETECT)
    if auto:
        evidence.append("automatically detect settings (WPAD) is on")
    settings = ProxySettings(source="WinINET", proxies=proxies, bypass=bypass, pac_url=pac_url,
                             auto_detect=auto, bypass_style="wildcard",
                             bypass_local=any(b.lower() == "<local>" for b in bypass),
                             evidence=tuple(evidence))
    return settings if settings.configured else replace(settings, source="none")


_DIRECT_WORDS = ("direct access", "no proxy server")


def parse_netsh_winhttp(text: str) -> ProxySettings:
    """``netsh winhttp show proxy``. English labels are matched; on a localised
    Windows the two ``label : value`` lines are read by position."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if any(any(w in ln.lower() for w in _DIRECT_WORDS) for ln in lines):
        return ProxySettings(source="none", evidence=("WinHTTP: direct access (no proxy server)",))
    pairs: list[tuple[str, str]] = []
    for ln in lines:
        label, sep, value = ln.partition(" : ")
        if not sep:
            label, sep, value = ln.partition(" :")
        if sep and label.strip() and value.strip():
            pairs.append((label.strip().lower(), value.strip()))
    if not pairs:
        if not lines:
            return ProxySettings(source="WinHTTP", error="netsh winhttp printed nothing")
        return ProxySettings(source="none", evidence=("WinHTTP: no proxy server listed",))
    server = next((v for k, v in pairs if k.startswith("proxy server")), None)
    bypass_text = next((v for k, v in pairs if k.startswith("bypass list")), None)
    evidence: list[str] = []
    if server is None:
        server = pairs[0][1]
        bypass_text = pairs[1][1] if len(pairs) > 1 else None
        evidence.append("WinHTTP output is not in English; read by position")
    bypass = () if not bypass_text or bypass_text.startswith("(") else split_list(bypass_text, ";")
    evidence.insert(0, f"WinHTTP proxy {server}")
    return ProxySettings(source="WinHTTP", proxies=parse_proxy_server(server), bypass=bypass,
                         bypass_style="wildcard",
                         bypass_local=any(b.lower() == "<local>" for b in bypass),
                         evidence=tuple(evidence))


_INET_KEY = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Internet Settings"
_INET_POLICY_KEY = r"HKCU\Software\Policies\Microsoft\Windows\CurrentVersion\Internet Settings"
_INET_CONN_KEY = _INET_KEY + r"\Connections"


def read_windows(run: Runner) -> ProxySettings:
    """WinINET (primary) and WinHTTP (in ``others``) from ``reg query`` and ``netsh``."""
    user = run(["reg", "query", _INET_KEY], TOOL_TIMEOUT)
    if not user.ok:
        wininet = ProxySettings(source="WinINET", error=user.problem)
    else:
        policy = run(["reg", "query", _INET_POLICY_KEY], TOOL_TIMEOUT)
        conn = run(["reg", "query", _INET_CONN_KEY, "/v", "DefaultConnectionSettings"], TOOL_TIMEOUT)
        blob = parse_reg_query(conn.stdout).get("DefaultConnectionSettings") if conn.ok else None
        wininet = wininet_settings(parse_reg_query(user.stdout),
                                   parse_reg_query(policy.stdout) if policy.ok else None,
                                   blob if isinstance(blob, str) else None)
    netsh = run(["netsh", "winhttp", "show", "proxy"], TOOL_TIMEOUT)
    winhttp = (parse_netsh_winhttp(netsh.stdout) if netsh.ok
               else ProxySettings(source="WinHTTP", error=netsh.problem))
    others = (winhttp,) if winhttp.configured or winhttp.error else ()
    if not wininet.configured and not wininet.error and winhttp.configured:
        return replace(winhttp, others=())
    return replace(wininet, others=others)


# --- the platform -----------------------------------------------------------------------

class WindowsPlatform(PortablePlatform):
    name = "win32"

    def __init__(self, run: Runner = default_runner, overrides: Mapping[str, str] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        super().__init__(overrides, environ)
        self._run = run

    def _ps(self, script: str, timeout: float) -> tuple[str | None, str | None]:
        res = self._run([*_PS, encode_script(script)], timeout)
        if res.missing:
            return None, "missing"
        if not res.ok:
            return None, res.problem
        return res.stdout, None

    def interface_facts(self) -> tuple[InterfaceFacts, ...]:
        text, _err = self._ps(INTERFACES_SCRIPT, 20.0)
        facts = parse_interfaces(text) if text else ()
        return facts or super().interface_facts()

    def egress_many(self, addresses: Sequence[str],
                    interfaces: Sequence[Interface] | None = None) -> Mapping[str, Egress]:
        return batch_egress(addresses, METHOD, self._find_netroute,
                            self.interfaces if interfaces is None else interfaces)

    def _find_netroute(self, unique: list[str]) -> Mapping[str, Egress]:
        text, err = self._ps(route_script(unique), 20.0 + 0.05 * len(unique))
        if err == "missing":
            return dict(super().egress_many(unique))
        if text is None:
            return {a: Egress(a, None, None, None, UNKNOWN, None, METHOD, err) for a in unique}
        return parse_find_netroute(text, unique)

    def routes(self) -> tuple[Route, ...]:
        text, _err = self._ps(ROUTES_SCRIPT, 20.0)
        return parse_routes(text) if text else ()

    def _dns(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        text, _err = self._ps(DNS_SCRIPT, 20.0)
        if text:
            servers, search = parse_dns(text)
            if servers:
                return servers, search
        return super()._dns()

    def _os_proxy_settings(self) -> ProxySettings:
        return read_windows(self._run)

    def onedrive_urls(self) -> tuple[str, ...]:
        res = self._run(["reg", "query", ONEDRIVE_ACCOUNTS_KEY, "/s"], 5.0)
        return parse_onedrive_accounts(res.stdout) if res.ok else ()
