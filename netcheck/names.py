"""Host names given by a user, a setting or a PAC file: usable, or refused with a reason.

Python's resolver raises ``UnicodeError`` (not ``OSError``) for a label longer
than 63 characters or an empty one, so a name is checked here before it goes
anywhere near ``getaddrinfo`` or a probe.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


def ascii_host(name: str) -> str | None:
    """``name`` as an ASCII host name (lower case) or IP address literal; None if it is neither."""
    text = name.strip().rstrip(".")
    if not text or len(text) > 253 or any(c.isspace() for c in text):
        return None
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    try:
        ascii_name = text.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    if len(ascii_name) > 253 or not all(_LABEL.match(label) for label in ascii_name.split(".")):
        return None
    return ascii_name


def host_problem(name: str) -> str | None:
    """Why ``name`` cannot be used as a host name, or None when it can."""
    if ascii_host(name) is not None:
        return None
    text = name.strip()
    if not text:
        return "it is empty"
    if len(text) > 253:
        return f"it is {len(text)} characters long (at most 253)"
    if any(len(label) > 63 for label in text.split(".")):
        return "a part between dots is longer than 63 characters"
    if any(not label for label in text.rstrip(".").split(".")):
        return "it has an empty part between dots"
    return "it holds characters a host name cannot hold"


def url_host(url: str | None) -> str | None:
    """The host of a URL (``http://pac.corp:8080/x.pac`` -> ``pac.corp``), None for none or a URL that
    does not parse."""
    try:
        return urlsplit(url).hostname if url else None
    except ValueError:
        return None


def proxy_host(proxy: str | None) -> str | None:
    """The host of a proxy given as ``host:port`` (``[2001:db8::1]:3128`` -> ``2001:db8::1``), None for none."""
    return url_host(f"//{proxy}") if proxy else None


def listed_host(text: str) -> str:
    """A system as a profile lists it, without its port, in lower case: ``vpn.corp:443`` -> ``vpn.corp``,
    ``2001:db8::53`` -> itself (an IPv6 address has colons of its own), ``[2001:db8::53]:53`` -> ``2001:db8::53``."""
    text = text.strip().lower()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return (proxy_host(text) or text).rstrip(".")


__all__ = ["ascii_host", "host_problem", "listed_host", "proxy_host", "url_host"]
