"""Which proxy this laptop's own settings choose for one URL: how the agent reaches its collector.

The same settings a browser on the laptop follows, in the same order as the check reads them
for Microsoft's endpoints: a PAC file (configured, or found by WPAD when the OS says "detect
settings automatically"), else fixed proxies with their bypass list (the OS's, or
``HTTPS_PROXY``/``NO_PROXY``), else direct. A PAC file that cannot be fetched or evaluated
means direct, as browsers do; the reason travels with the answer so the agent can log it.

Never raises for a network or PAC failure; takes at most the deadline it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from netcheck.deadline import Deadline

if TYPE_CHECKING:
    from netcheck.platform import Platform


@dataclass(frozen=True)
class ProxyChoice:
    #: the proxy URL to use (``http://proxy.example:3128``), or None to go direct
    proxy: str | None
    #: where that choice came from, in plain words (for the agent's log)
    how: str


def proxy_choice(url: str, deadline: Deadline, plat: Platform | None = None) -> ProxyChoice:
    """The proxy (or none) this laptop's settings choose for ``url``."""
    from netcheck.pac import PacError, discover_wpad, evaluate, fetch_pac, proxy_url
    from netcheck.platform import current as current_platform
    from netcheck.proxy import wpad_urls

    plat = plat or current_platform()
    settings = plat.proxy_settings()
    pac = None
    if settings.pac_url:
        pac = fetch_pac(settings.pac_url, deadline.sooner(5.0))
        if not pac.ok:
            return ProxyChoice(None, f"the PAC file {settings.pac_url} could not be fetched "
                               f"({pac.error or pac.outcome}); going direct")
    elif settings.auto_detect:
        tried = discover_wpad(wpad_urls(plat.search_domains()), deadline.sooner(5.0))
        pac = next((f for f in tried if f.ok and f.looks_like_pac), None)
    if pac is not None and pac.text:
        try:
            choices = evaluate(pac.text, [url], deadline=deadline.sooner(5.0))[url]
        except PacError as exc:
            return ProxyChoice(None, f"the PAC file {pac.url} could not be evaluated ({exc}); going direct")
        first = choices[0] if choices else "DIRECT"
        return ProxyChoice(proxy_url(first), f"the PAC file {pac.url} says {first}")
    proxy = settings.proxy_for(url)
    if proxy:
        return ProxyChoice(proxy, "the proxy settings")
    return ProxyChoice(None, "direct (no proxy configured for it)")
