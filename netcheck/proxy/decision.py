"""The one proxy decision: for a URL, DIRECT or which proxy this laptop's settings or PAC file choose,
where that was decided, and what happens when the PAC file is gone.

Probes (:func:`netcheck.probes.http.choose_proxy`, used by the realm probe too), the facts the
outage prediction reasons over (:mod:`netcheck.site_facts`), the check's own proxy map
(:mod:`netcheck.check`) and the agent's uploads (:func:`proxy_choice`) all call
:func:`decide`. It is pure: the PAC file is fetched (:func:`find_pac`) and evaluated
(:func:`evaluate_pac`) first, once for every URL, in the sandboxed child of :mod:`netcheck.proxy.pac`.

The rules are the browsers' (Chromium's, which follows WinINET's; libcurl's for the environment):

1. Automatic settings before manual ones. "Detect settings automatically" (WPAD) is tried first,
   then the configured PAC URL; the first PAC file that is fetched and loads decides.
2. A PAC file that cannot be fetched or does not load (or WPAD that finds none) is an
   initialisation failure: the manual settings apply, with their bypass list, else DIRECT.
3. A PAC file that loads but fails for one URL (``FindProxyForURL`` throws, returns a non-string,
   or a list with no valid entry) means DIRECT for that URL, whatever the manual settings say.
4. A PAC answer is a list (``"PROXY a:1; DIRECT"``): the first valid entry is the decision, the rest
   is the browser's failover. ``PROXY``/``HTTP`` are HTTP proxies, ``HTTPS`` a TLS proxy,
   ``SOCKS``/``SOCKS4``/``SOCKS5`` SOCKS proxies (decided as such, even though netcheck's probes
   cannot speak SOCKS: the probe then says so), ``DIRECT`` is direct; an entry that is not one of
   these or has no usable ``host[:port]`` is skipped.
5. Manual settings and the environment are scheme-specific: an ``https`` URL takes the ``https``
   proxy (``HTTPS_PROXY``), then ``all`` (``ALL_PROXY``), then a SOCKS proxy; an ``http`` URL never
   takes ``HTTPS_PROXY``. The bypass list (``NO_PROXY`` and the OS's exceptions) applies only to
   manual settings, never to a PAC file's answer. ``NO_PROXY`` entries match the host and its
   subdomains (``corp.example`` and ``.corp.example`` both cover ``a.corp.example`` and
   ``corp.example``), ``*`` matches everything, CIDR blocks match IP literals, ``host:port``
   matches that port only (:meth:`netcheck.proxy.settings.ProxySettings.bypasses`).
6. A proxy given without a port uses the scheme's default: 80 for ``http``, 443 for ``https``,
   1080 for SOCKS (Chromium, WinINET, Python; libcurl alone assumes 1080 for every scheme).

What happens when the PAC file is gone is a policy, not a rule: the site profile's
``pac_unreachable`` (``direct``: the manual settings or DIRECT, as rule 2; ``fail``: the browser does
not connect; ``cached``: the OS keeps the copy it fetched). Without a profile that says so it is
``unknown``, stated as such, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from netcheck.names import url_host
from netcheck.proxy.settings import DEFAULT_PORTS, ProxySettings, clean_proxy_url, usable_proxy_url

if TYPE_CHECKING:  # pragma: no cover - typing only
    from netcheck.deadline import Deadline
    from netcheck.models import DetailValue
    from netcheck.platform import Platform
    from netcheck.proxy.pac import PacDecision, PacFetch

#: Where a decision was made.
SOURCES = ("none", "environment", "os", "pac")
#: What the OS does when the PAC file cannot be fetched (``pac_unreachable``), or "unknown".
PAC_GONE = ("direct", "fail", "cached", "unknown")

#: PAC keywords and the proxy URL scheme each names (None: DIRECT).
_PAC_SCHEMES: Mapping[str, str | None] = {
    "DIRECT": None, "PROXY": "http", "HTTP": "http", "HTTPS": "https",
    "SOCKS": "socks4", "SOCKS4": "socks4", "SOCKS5": "socks5",
}
_NO_PROXY = "DIRECT (no proxy)"


@dataclass(frozen=True)
class PacState:
    """The PAC file as this laptop got it, for the URLs it was asked about.

    ``problem`` set: it is not in use (not fetched, does not load, WPAD found none), and
    ``answers`` is empty. Otherwise ``answers`` holds ``FindProxyForURL``'s answer per URL.
    """

    url: str | None
    answers: Mapping[str, PacDecision] = field(default_factory=dict)
    problem: str | None = None
    #: The PAC file was fetched but does not load (a JavaScript error, no FindProxyForURL, hangs).
    load_error: str | None = None


@dataclass(frozen=True)
class ProxyDecision:
    """How one URL is fetched: DIRECT or through ``proxy``, decided by ``source``."""

    url: str
    #: ``scheme://host:port`` of the proxy (no credentials), or None for DIRECT.
    proxy: str | None
    source: str  # one of SOURCES
    #: Plain words: what decided it (for logs and reports).
    why: str
    #: The PAC file the settings name (or WPAD found), whether or not it answered.
    pac_url: str | None = None
    #: The settings use a PAC file but it gave no answer for this URL: why.
    pac_problem: str | None = None
    #: With a PAC file in the settings: what the manual settings choose without it (None: DIRECT).
    without_pac: str | None = None
    #: With a PAC file in the settings: ``pac_unreachable`` (one of PAC_GONE); None without a PAC.
    when_pac_gone: str | None = None

    @property
    def endpoint(self) -> str | None:
        """The proxy as ``host:port`` (the scheme's default port filled in), or None for DIRECT."""
        return endpoint(self.proxy) if self.proxy else None


def endpoint(proxy: str) -> str:
    """``http://p.example`` -> ``p.example:80``; ``socks5://[::1]`` -> ``[::1]:1080``."""
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host = parts.hostname or ""
    shown = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:
        port = None
    scheme = parts.scheme.lower()
    return f"{shown}:{port or DEFAULT_PORTS.get(scheme, 1080)}"


def url_for(scheme: str, host: str, port: int | None = None) -> str:
    """The URL a probe of ``scheme://host:port`` fetches, as the PAC file and the map see it."""
    scheme = scheme.lower()
    name = host.strip().rstrip(".").lower()
    shown = f"[{name}]" if ":" in name and not name.startswith("[") else name
    default = DEFAULT_PORTS.get(scheme)
    return f"{scheme}://{shown}/" if port in (None, default) else f"{scheme}://{shown}:{port}/"


def pac_entry(entry: str) -> tuple[bool, str | None]:
    """One PAC list entry: (valid, proxy URL or None for DIRECT). ``"PROXY a:1"`` -> (True, "http://a:1")."""
    word, _, where = entry.strip().partition(" ")
    keyword = word.upper()
    if keyword not in _PAC_SCHEMES:
        return False, None
    scheme = _PAC_SCHEMES[keyword]
    if scheme is None:
        return not where.strip(), None
    target = where.strip()
    if not target or "/" in target or "@" in target:
        return False, None
    url, _ = clean_proxy_url(target, scheme)
    return (url is not None), url


def _manual(url: str, settings: ProxySettings) -> tuple[str | None, str]:
    """(proxy or None, source) from the manual settings and the environment (rules 5 and 6)."""
    chosen = settings.proxy_for(url)
    proxy = usable_proxy_url(chosen) if chosen else None
    if proxy is None:
        return None, "none"
    return proxy, "environment" if settings.source == "environment" else "os"


def _settings_words(source: str) -> str:
    return "the environment's proxy settings" if source == "environment" else "the system's proxy settings"


def _manual_words(proxy: str | None, source: str) -> str:
    return "going direct" if proxy is None else f"using {_settings_words(source)} instead ({proxy})"


def decide(url: str, settings: ProxySettings, pac: PacState | None = None,
           pac_unreachable: str | None = None) -> ProxyDecision:
    """The proxy this laptop's ``settings`` choose for ``url`` (see the module docstring for the rules).

    ``pac``: the PAC file as fetched and evaluated (:func:`evaluate_pac`), None when none was
    fetched. ``pac_unreachable``: the site profile's policy for a PAC file that is gone.
    """
    manual, manual_source = _manual(url, settings)
    if not (settings.pac_url or settings.auto_detect or (pac is not None and pac.url)):
        if manual is None:
            return ProxyDecision(url, None, "none", "direct (no proxy configured for it)")
        return ProxyDecision(url, manual, manual_source, f"{_settings_words(manual_source)} ({settings.source}) "
                             f"say {manual}")
    gone = pac_unreachable if pac_unreachable in PAC_GONE else "unknown"
    pac_url = (pac.url if pac is not None else None) or settings.pac_url
    if pac is None or pac.problem is not None:  # rule 2: an initialisation failure
        problem = (pac.problem if pac is not None and pac.problem
                   else f"the PAC file {pac_url} was not consulted" if pac_url
                   else "no PAC file was found (automatic detection)")
        return ProxyDecision(url, manual, manual_source, f"{problem}; {_manual_words(manual, manual_source)}",
                             pac_url, problem, manual, gone)
    answer = pac.answers.get(url)
    if answer is None:
        failure = "it was not asked about this URL"
    elif answer.error:
        failure = f"FindProxyForURL failed ({answer.error})"
    else:
        for entry in answer.proxies:
            valid, proxy = pac_entry(entry)
            if valid:  # rule 4
                return ProxyDecision(url, proxy, "pac", f"the PAC file {pac_url} says {entry}", pac_url,
                                     None, manual, gone)
        failure = f"FindProxyForURL gave no usable answer ({answer.raw!r})"
    # rule 3: a runtime failure is DIRECT, whatever the manual settings say
    return ProxyDecision(url, None, "pac", f"the PAC file {pac_url}: {failure}; going direct", pac_url,
                         failure, manual, gone)


# --- the I/O around it: find the PAC file, evaluate it once for every URL ---------------------------

@dataclass(frozen=True)
class PacLookup:
    """The PAC file rule 1 found (None: none), and every WPAD address tried on the way."""

    fetch: PacFetch | None
    wpad_tried: tuple[PacFetch, ...] = ()
    #: Whether automatic detection (WPAD) was asked for and tried.
    detected: bool = False


def find_pac(settings: ProxySettings, search_domains: Callable[[], Sequence[str]],
             deadline: Deadline) -> PacLookup:
    """WPAD first when the settings ask for automatic detection, then the configured PAC URL (rule 1).

    A configured PAC file that cannot be fetched is returned as fetched (its failure is the finding);
    never raises for a network failure.
    """
    from netcheck.proxy.pac import discover_wpad, fetch_pac
    from netcheck.proxy.settings import wpad_urls

    tried: tuple[PacFetch, ...] = ()
    if settings.auto_detect:
        tried = discover_wpad(wpad_urls(search_domains()), deadline.sooner(5.0))
        hit = next((f for f in tried if f.ok and f.looks_like_pac), None)
        if hit is not None:
            return PacLookup(hit, tried, True)
    if settings.pac_url:
        return PacLookup(fetch_pac(settings.pac_url, deadline.sooner(5.0)), tried, settings.auto_detect)
    return PacLookup(None, tried, settings.auto_detect)


def evaluate_pac(fetch: PacFetch | None, urls: Sequence[str], deadline: Deadline,
                 my_ip: str | None = None) -> PacState | None:
    """``fetch`` evaluated once for every URL (None: no PAC file was found). ``my_ip`` pins what
    ``myIpAddress()`` returns (to evaluate it "as if from home"). Never raises."""
    if fetch is None:
        return None
    if not fetch.ok or fetch.text is None:
        return PacState(fetch.url, problem=f"the PAC file {fetch.url} could not be fetched "
                                           f"({fetch.error or fetch.outcome})")
    from netcheck.proxy.pac import PacError, evaluate_each

    try:
        answers = evaluate_each(fetch.text, list(urls), my_ip=my_ip, deadline=deadline.sooner(5.0))
    except PacError as exc:
        return PacState(fetch.url, problem=f"the PAC file {fetch.url} could not be evaluated ({exc})",
                        load_error=str(exc))
    return PacState(fetch.url, answers)


def decide_all(urls: Sequence[str], settings: ProxySettings, fetch: PacFetch | None, deadline: Deadline,
               my_ip: str | None = None, pac_unreachable: str | None = None) -> dict[str, ProxyDecision]:
    """:func:`decide` for every URL, the PAC file (if any) evaluated once for all of them."""
    pac = evaluate_pac(fetch, urls, deadline, my_ip) if urls else None
    return {u: decide(u, settings, pac, pac_unreachable) for u in dict.fromkeys(urls)}


def decide_now(url: str, deadline: Deadline, plat: Platform | None = None) -> ProxyDecision:
    """Everything at once for one URL: read the settings, find and evaluate the PAC file, decide."""
    from netcheck.platform import current as current_platform

    plat = plat or current_platform()
    settings = plat.proxy_settings()
    found = find_pac(settings, lambda: plat.search_domains(), deadline)
    return decide_all([url], settings, found.fetch, deadline)[url]


def pac_facts(lookup: PacLookup, pac: PacState | None, decisions: Mapping[str, ProxyDecision],
              settings: ProxySettings) -> dict[str, DetailValue]:
    """The network facts the check's PAC findings (``pac.*``, ``network.pac_fallback``) are made from:
    where the PAC file came from, how fetching and loading it went, and which decision was used instead."""
    out: dict[str, DetailValue] = {}
    fetch = lookup.fetch
    wpad_hit = fetch is not None and any(f is fetch for f in lookup.wpad_tried)
    if lookup.detected:
        out["wpad"] = fetch.url if wpad_hit and fetch is not None else \
            f"no PAC file found ({len(lookup.wpad_tried)} WPAD address(es) tried)"
    if fetch is None or pac is None:
        return out
    if not wpad_hit:
        out["pac_url"] = fetch.url
    out["pac_fetch"] = str(fetch.outcome)
    if not fetch.ok:
        out["pac_error"] = (fetch.error or str(fetch.outcome))[:500]
    if pac.problem is not None:  # rule 2: the file is not in use; the manual settings or DIRECT are
        out["pac_fallback"] = "the explicit proxy settings" if settings.proxies else _NO_PROXY
        if pac.load_error:
            out["pac_load_error"] = pac.load_error[:500]
        return out
    bad = [f"{url_host(d.url)}: {d.pac_problem}"[:300] for d in decisions.values() if d.pac_problem]
    if bad:  # rule 3: those URLs went direct
        out["pac_bad_results"] = bad[:50]
        out["pac_fallback"] = _NO_PROXY
    return out


@dataclass(frozen=True)
class ProxyChoice:
    """:func:`decide_now` shaped for :mod:`netcheck.agent.transport`: how the agent reaches its collector."""

    #: the proxy URL to use (``http://proxy.example:3128``), or None to go direct
    proxy: str | None
    #: where that choice came from, in plain words (for the agent's log)
    how: str


def proxy_choice(url: str, deadline: Deadline, plat: Platform | None = None) -> ProxyChoice:
    """The proxy (or none) this laptop's settings choose for ``url``: the decision a browser on the
    laptop makes. Never raises for a network or PAC failure; takes at most ``deadline``."""
    decision = decide_now(url, deadline, plat)
    return ProxyChoice(decision.proxy, decision.why)
