"""Per-OS facts behind one interface: interfaces, egress routes, proxies, DNS.

:func:`current` is the only code in netcheck that reads ``sys.platform``.
``NETCHECK_INTERFACE_KINDS`` (``"up0=physical,tun7=vpn"``) overrides the kind of
named interfaces, for labs and for adapters netcheck does not know.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from netcheck.platform.base import (
    EGRESS_KINDS,
    INTERFACE_KINDS,
    Egress,
    Interface,
    Platform,
    Route,
    RouteTable,
)

__all__ = ["EGRESS_KINDS", "INTERFACE_KINDS", "Egress", "Interface", "Platform", "Route",
           "RouteTable", "current", "for_os"]

OVERRIDE_ENV = "NETCHECK_INTERFACE_KINDS"


def for_os(os_name: str, environ: Mapping[str, str] | None = None) -> Platform:
    """The platform for ``os_name`` ("linux", "darwin", "win32", anything else: portable)."""
    from netcheck.platform.classify import parse_overrides

    env = dict(os.environ if environ is None else environ)
    overrides = parse_overrides(env.get(OVERRIDE_ENV, ""))
    if os_name.startswith("linux"):
        from netcheck.platform.linux import LinuxPlatform

        return LinuxPlatform(overrides=overrides, environ=env)
    if os_name == "darwin":
        from netcheck.platform.macos import MacPlatform

        return MacPlatform(overrides=overrides, environ=env)
    if os_name == "win32":
        from netcheck.platform.windows import WindowsPlatform

        return WindowsPlatform(overrides=overrides, environ=env)
    from netcheck.platform.portable import PortablePlatform

    return PortablePlatform(overrides=overrides, environ=env)


def current(environ: Mapping[str, str] | None = None) -> Platform:
    """The platform netcheck is running on."""
    return for_os(sys.platform, environ)
