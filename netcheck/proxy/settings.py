"""Proxy settings as data, and the rules that read them: environment, matching, WPAD.

:class:`ProxySettings` is what every source yields: the environment here
(``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``/``NO_PROXY``, and ``NETCHECK_PAC_URL``,
netcheck's own override for a PAC URL), the OS's own settings in
``netcheck/platform/<os>.py`` (Windows WinINET and WinHTTP, macOS ``scutil --proxy``,
GNOME ``gsettings`` and KDE ``kioslaverc``), each behind ``Platform.proxy_settings()``.
Nothing here raises for odd input: a value no client can use is evidence, not an error.

Which proxy a URL goes through is decided in one place, :mod:`netcheck.proxy.decision`.
Credentials that appear in a proxy URL are dropped, never recorded.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit, urlunsplit

from netcheck.names import ascii_host

#: The environment variable that names a PAC URL to use instead of the OS's.
PAC_ENV = "NETCHECK_PAC_URL"

SOURCES = ("environment", "WinINET", "WinHTTP", "scutil", "gsettings", "kde", "none")

#: Time for one OS tool that reads proxy settings (reg, netsh, scutil, gsettings, kreadconfig).
TOOL_TIMEOUT = 5.0
_UNUSABLE = " but is not a usable proxy URL"
#: The port a URL without one goes to (a ``host:port`` bypass entry matches it).
DEFAULT_PORTS = {"http": 80, "https": 443}


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

        PAC and auto-detection are not evaluated here (see :mod:`netcheck.proxy.pac`).
        """
        if not self.proxies:
            return None
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
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


def clean_proxy_url(value: str, default_scheme: str = "http") -> tuple[str | None, bool]:
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
    return clean_proxy_url(value)[0]


def unusable_proxy_settings(settings: ProxySettings) -> tuple[str, ...]:
    """The evidence lines saying a proxy variable is set but cannot be used."""
    return tuple(e for e in settings.evidence if e.endswith(_UNUSABLE))



def split_list(text: str, seps: str = ";,") -> tuple[str, ...]:
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
        url, creds = clean_proxy_url(raw)
        if url is None:
            evidence.append(f"{var} is set{_UNUSABLE}")
            continue
        proxies[scheme] = url
        evidence.append(f"{var}={url}")
        if creds:
            evidence.append(f"credentials in {var} were not recorded")
    bypass = split_list(get("NO_PROXY"), ",")
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
