"""Which proxy this laptop's own settings choose for one URL: how the agent reaches its collector.

The same decision a browser on the laptop makes and the check makes for Microsoft's endpoints,
:func:`netcheck.proxy_decision.decide_now` (PAC file by WPAD or URL, else the manual settings or
the environment, else DIRECT); this module only shapes it for :mod:`netcheck.agent.transport`.
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
    from netcheck.proxy_decision import decide_now

    decision = decide_now(url, deadline, plat)
    return ProxyChoice(decision.proxy, decision.why)
