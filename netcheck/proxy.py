"""Proxy configuration discovery: environment, Windows, macOS, GNOME and KDE.

Each source has a pure parser (tested on captured output of the real tool) and
a thin reader that runs the tool through a :class:`~netcheck.platform._run.Runner`.
Nothing here raises for a missing tool or odd output: the answer is a
:class:`ProxySettings` whose ``error`` says what could not be read.

Sources and their tools:

- environment: ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``/``NO_PROXY`` (any OS), and
  ``NETCHECK_PAC_URL``, netcheck's own override for a PAC URL.
- Windows WinINET (what Edge, Outlook and Teams use for user traffic): ``reg query`` of
  ``HKCU\\...\\Internet Settings`` (``ProxyEnable``, ``ProxyServer``, ``ProxyOverride``,
  ``AutoConfigURL``, ``AutoDetect``), its Group Policy twin, and the flags byte of
  ``Connections\\DefaultConnectionSettings``.
- Windows WinHTTP (services, some Office background traffic): ``netsh winhttp show proxy``.
- macOS: ``scutil --proxy``.
- GNOME: ``gsettings list-recursively org.gnome.system.proxy``.
- KDE: ``kreadconfig6``/``kreadconfig5 --file kioslaverc --group "Proxy Settings" --key K``.

Credentials that appear in a proxy URL are dropped, never recorded.
"""

from __future__ import annotations

import ast
import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from netcheck.names import ascii_host

if TYPE_CHECKING:  # pragma: no cover - typing only
    from netcheck.platform._run import Runner

#: The environment variable that names a PAC URL to use instead of the OS's.
PAC_ENV = "NETCHECK_PAC_URL"

SOURCES = ("environment", "WinINET", "WinHTTP", "scutil", "gsettings", "kde", "none")

_TOOL_TIMEOUT = 5.0
_UNUSABLE = " but is not a usable proxy URL"


@dataclass(frozen=True)
class ProxySettings:
    """One source's proxy configuration.

    ``proxies`` maps a URL scheme (``http``, ``https``, ``ftp``, ``socks``, ``all``)
    to a proxy URL such as ``http://10.0.0.5:3128``. ``bypass`` holds the source's
    exception patterns; ``bypass_style`` says how they match: ``"suffix"``
    (``NO_PROXY``, GNOME, KDE, macOS: ``contoso.com`` also covers its subdomains) or
    ``"wildcard"`` (Windows: ``*.contoso.com``, ``10.*``, ``<local>``).
    """

    source: str
    proxies: Mapping[str, str] = field(default_factory=dict)
    bypass: tuple[str, ...] = ()
    pac_url: str | None = None
    auto_detect: bool = False
    bypass_style: str = "suffix"
    #: Plain host names (no dot) bypass the proxy (``<local>``, ExcludeSimpleHostnames).
    bypass_local: bool = False
    #: KDE's ReversedException: the list names the only hosts that use the proxy.
    bypass_reversed: bool = False
    evidence: tuple[str, ...] = ()
    error: str | None = None
    #: Other sources that also apply (e.g. WinHTTP next to WinINET).
    others: tuple[ProxySettings, ...] = ()

    @property
    def configured(self) -> bool:
        """Anything set: explicit proxies, a PAC URL or auto-detection."""
        return bool(self.proxies or self.pac_url or self.auto_detect)

    def bypasses(self, host: str, port: int | None = None) -> bool:
        """Whether ``host`` is in the exception list (ignoring ``bypass_reversed``)."""
        name = host.strip().strip("[]").rstrip(".").lower()
        if self.bypass_local and _is_plain(name):
            return True
        return any(_bypass_match(p, name, port, self.bypass_style) for p in self.bypass)

    def proxy_for(self, url: str) -> str | None:
        """The explicit proxy this source sends ``url`` to, or None for direct.

        PAC and auto-detection are not evaluated here (see :mod:`netcheck.pac`).
        """
        if not self.proxies:
            return None
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError:
            port = None
        listed = self.bypasses(host, port)
        if listed != self.bypass_reversed:
            return None
        scheme = parts.scheme.lower()
        return self.proxies.get(scheme) or self.proxies.get("all") or self.proxies.get("socks")


NO_PROXY_SETTINGS = ProxySettings(source="none")


# --- matching ------------------------------------------------------------------

def _is_plain(host: str) -> bool:
    return bool(host) and "." not in host and ":" not in host


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A CIDR, accepting macOS's short IPv4 form ``169.254/16``."""
    addr, _, bits = text.partition("/")
    if ":" not in addr and addr.count(".") < 3 and addr.replace(".", "").isdigit():
        addr = ".".join((addr.split(".") + ["0", "0", "0"])[:4])
    try:
        return ipaddress.ip_network(f"{addr}/{bits}", strict=False)
    except ValueError:
        return None


def _bypass_match(pattern: str, host: str, port: int | None, style: str) -> bool:
    p = pattern.strip().lower()
    if not p or not host:
        return False
    if p == "*":
        return True
    if p == "<local>":
        return _is_plain(host)
    if "/" in p:
        net = _network(p)
        if net is None:
            return False
        try:
            return ipaddress.ip_address(host) in net
        except ValueError:
            return False
    if p.startswith("[") and "]" in p:  # [::1] or [::1]:443
        addr, _, rest = p[1:].partition("]")
        want_port = rest[1:] if rest.startswith(":") else ""
        return addr == host and (not want_port or port is None or want_port == str(port))
    if p.count(":") == 1:  # host:port
        p, _, want = p.partition(":")
        if port is not None and want.isdigit() and int(want) != port:
            return False
    if "*" in p or "?" in p or style == "wildcard":
        return fnmatch.fnmatchcase(host, p)
    p = p.lstrip(".")
    return host == p or host.endswith("." + p)


# --- proxy URL handling --------------------------------------------------------

def redact(url: str) -> str:
    """A proxy URL without its credentials."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))



def _clean_proxy_url(value: str, default_scheme: str = "http") -> tuple[str | None, bool]:
    """``value`` as ``scheme://host:port`` without credentials; (url, had_credentials)."""
    text = value.strip()
    if not text:
        return None, False
    if "://" not in text:
        text = f"{default_scheme}://{text}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None, False
    host = parts.hostname
    if not host or ascii_host(host) is None:
        return None, False
    had_creds = parts.username is not None or parts.password is not None
    shown = f"[{host}]" if ":" in host else host
    netloc = f"{shown}:{port}" if port is not None else shown
    return f"{parts.scheme.lower()}://{netloc}", had_creds


def usable_proxy_url(value: str) -> str | None:
    """``value`` (a proxy URL or ``host:port``) as ``scheme://host:port``; None if no client could use it
    (``http://[::1``, a 300-character host name, an empty host)."""
    return _clean_proxy_url(value)[0]


def unusable_proxy_settings(settings: ProxySettings) -> tuple[str, ...]:
    """The evidence lines saying a proxy variable is set but cannot be used."""
    return tuple(e for e in settings.evidence if e.endswith(_UNUSABLE))


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
            url, _ = _clean_proxy_url(target, "socks" if scheme == "socks" else "http")
            if url and scheme and scheme not in out:
                out[scheme] = url
        else:
            plain.append(part)
    if plain:
        url, _ = _clean_proxy_url(plain[0])
        if url:
            for scheme in ("http", "https", "ftp"):
                out.setdefault(scheme, url)
    return out


def _split_list(text: str, seps: str = ";,") -> tuple[str, ...]:
    return tuple(p.strip() for p in re.split(f"[{re.escape(seps)}\\s]+", text) if p.strip())


# --- environment ---------------------------------------------------------------

def from_environment(environ: Mapping[str, str]) -> ProxySettings:
    """``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY`` (lower case wins)."""
    def get(name: str) -> str:
        return (environ.get(name.lower()) or environ.get(name.upper()) or "").strip()

    proxies: dict[str, str] = {}
    evidence: list[str] = []
    for scheme, var in (("http", "HTTP_PROXY"), ("https", "HTTPS_PROXY"), ("all", "ALL_PROXY")):
        raw = get(var)
        if not raw:
            continue
        url, creds = _clean_proxy_url(raw)
        if url is None:
            evidence.append(f"{var} is set{_UNUSABLE}")
            continue
        proxies[scheme] = url
        evidence.append(f"{var}={url}")
        if creds:
            evidence.append(f"credentials in {var} were not recorded")
    bypass = _split_list(get("NO_PROXY"), ",")
    if bypass:
        evidence.append(f"NO_PROXY has {len(bypass)} entries")
    if not proxies:
        return ProxySettings(source="none", bypass=bypass, evidence=tuple(evidence))
    return ProxySettings(source="environment", proxies=proxies, bypass=bypass,
                         evidence=tuple(evidence))


def combine(env_settings: ProxySettings, os_settings: ProxySettings,
            environ: Mapping[str, str]) -> ProxySettings:
    """The settings netcheck uses: the environment's proxies win over the OS's (as
    for command-line tools), the OS's stay in ``others``; ``NETCHECK_PAC_URL``
    replaces the PAC URL."""
    if env_settings.proxies:
        others = tuple(s for s in (os_settings, *os_settings.others) if s.configured or s.error)
        primary = replace(env_settings, others=others)
    else:
        primary = os_settings
    pac = (environ.get(PAC_ENV) or "").strip()
    if pac:
        source = primary.source if primary.source != "none" else "environment"
        primary = replace(primary, source=source, pac_url=pac,
                          evidence=(*primary.evidence, f"PAC URL from {PAC_ENV}: {pac}"))
    return primary


# --- Windows: reg query and netsh winhttp ----------------------------------------

REG_LINE = _REG_LINE = re.compile(r"^\s{2,}(?P<name>.*?)\s{2,}(?P<type>REG_[A-Z_]+)(?:\s{2,}(?P<value>.*))?$")


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
        m = _REG_LINE.match(line)
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
    bypass = _split_list(override, ";") if isinstance(override, str) else ()
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
    bypass = () if not bypass_text or bypass_text.startswith("(") else _split_list(bypass_text, ";")
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
    user = run(["reg", "query", _INET_KEY], _TOOL_TIMEOUT)
    if not user.ok:
        wininet = ProxySettings(source="WinINET", error=user.problem)
    else:
        policy = run(["reg", "query", _INET_POLICY_KEY], _TOOL_TIMEOUT)
        conn = run(["reg", "query", _INET_CONN_KEY, "/v", "DefaultConnectionSettings"], _TOOL_TIMEOUT)
        blob = parse_reg_query(conn.stdout).get("DefaultConnectionSettings") if conn.ok else None
        wininet = wininet_settings(parse_reg_query(user.stdout),
                                   parse_reg_query(policy.stdout) if policy.ok else None,
                                   blob if isinstance(blob, str) else None)
    netsh = run(["netsh", "winhttp", "show", "proxy"], _TOOL_TIMEOUT)
    winhttp = (parse_netsh_winhttp(netsh.stdout) if netsh.ok
               else ProxySettings(source="WinHTTP", error=netsh.problem))
    others = (winhttp,) if winhttp.configured or winhttp.error else ()
    if not wininet.configured and not wininet.error and winhttp.configured:
        return replace(winhttp, others=())
    return replace(wininet, others=others)


# --- macOS: scutil --proxy -----------------------------------------------------------

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
        url, _ = _clean_proxy_url(f"{host}:{port}" if port.isdigit() and port != "0" else host,
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
    res = run(["scutil", "--proxy"], _TOOL_TIMEOUT)
    if not res.ok:
        return ProxySettings(source="scutil", error=res.problem)
    return scutil_settings(parse_scutil_dict(res.stdout))


# --- GNOME and KDE -------------------------------------------------------------------

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
            url, _ = _clean_proxy_url(f"{host}:{port}" if port else host, url_scheme)
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
    url, _ = _clean_proxy_url(text, scheme)
    return url


def kde_settings(values: Mapping[str, str]) -> ProxySettings:
    """Settings from kioslaverc's [Proxy Settings] values (as kreadconfig prints them)."""
    kind = values.get("ProxyType", "").strip() or "0"
    names = {"0": "no proxy", "1": "manual", "2": "PAC script", "3": "WPAD", "4": "environment variables"}
    evidence = [f"KDE ProxyType={kind} ({names.get(kind, 'unknown')})"]
    bypass = _split_list(values.get("NoProxyFor", ""), ",")
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
                          _TOOL_TIMEOUT)
                if res.missing:
                    break
                values[key] = res.stdout.strip()
            else:
                return kde_settings(values)
    res = run(["gsettings", "list-recursively", "org.gnome.system.proxy"], _TOOL_TIMEOUT)
    if res.missing:
        return ProxySettings(source="none", evidence=("no desktop proxy settings tool (gsettings, kreadconfig)",))
    if not res.ok:
        return ProxySettings(source="gsettings", error=res.problem)
    return parse_gsettings(res.stdout)


# --- WPAD -----------------------------------------------------------------------------

def wpad_urls(domains: Iterable[str]) -> tuple[str, ...]:
    """DNS WPAD candidates: ``http://wpad.<domain>/wpad.dat`` for each search domain
    and its parents, never above the registrable domain (``wpad.co.uk`` is never tried)."""
    from publicsuffixlist import PublicSuffixList

    psl = PublicSuffixList()
    out: dict[str, None] = {}
    for domain in domains:
        name = domain.strip().strip(".").lower()
        if not name or "." not in name:
            continue
        floor = psl.privatesuffix(name) or ".".join(name.split(".")[-2:])
        labels = name.split(".")
        for i in range(len(labels)):
            candidate = ".".join(labels[i:])
            out.setdefault(f"http://wpad.{candidate}/wpad.dat", None)
            if candidate == floor:
                break
    return tuple(out)


def describe(settings: ProxySettings) -> Sequence[str]:
    """Plain-language lines for a report."""
    if settings.error:
        return [f"{settings.source}: could not be read ({settings.error})"]
    if not settings.configured:
        return [f"{settings.source}: no proxy"]
    lines = [f"{settings.source}: {scheme} -> {url}" for scheme, url in sorted(settings.proxies.items())]
    if settings.pac_url:
        lines.append(f"{settings.source}: PAC {settings.pac_url}")
    if settings.auto_detect:
        lines.append(f"{settings.source}: automatic detection (WPAD)")
    return lines
