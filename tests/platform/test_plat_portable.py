"""The portable egress lookup (UDP connect + getsockname) on this machine, the tool
runner, and the choice of platform."""

from __future__ import annotations

import socket
import sys

import pytest

from netcheck.errors import ConfigError
from netcheck.platform import current, for_os
from netcheck.platform._run import ToolResult, run_tool
from netcheck.platform.base import Interface
from netcheck.platform.portable import PortablePlatform, egress_from_source, source_address


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.connect(("::1", 9))
        return True
    except OSError:
        return False


def test_loopback_egress_on_this_machine() -> None:
    plat = PortablePlatform(environ={})
    e = plat.egress_for("127.0.0.1")
    assert (e.interface, e.source, e.kind, e.method, e.gateway) == ("lo", "127.0.0.1", "loopback", "udp-connect", None)
    if _has_ipv6_loopback():
        assert plat.egress_for("::1").kind == "loopback"
    assert plat.egress_many(["x"])["x"].error == "'x' is not an IP address"
    assert any(i.kind == "loopback" for i in plat.interfaces())
    assert plat.routes() == ()
    assert isinstance(plat.dns_servers(), tuple) and isinstance(plat.search_domains(), tuple)
    assert plat.proxy_settings().source == "none"
    env = PortablePlatform(environ={"HTTPS_PROXY": "http://192.0.2.8:3128"}).proxy_settings()
    assert env.source == "environment"


def test_source_address() -> None:
    src, err = source_address("127.0.0.1")
    assert src == "127.0.0.1" and err is None


IFACES = (
    Interface("en0", "physical", None, ("x",), ("192.0.2.10", "2001:db8:1::10"), True),
    Interface("utun4", "vpn", None, ("x",), ("10.66.0.2",), True),
)
GW = {socket.AF_INET: ("192.0.2.1", "en0"), socket.AF_INET6: ("fe80::1", "en0")}
PREFIXES = {"en0": ["192.0.2.10/24", "not-a-prefix", "2001:db8:1::10/64"]}


def test_egress_from_source_is_pure() -> None:
    off_link = egress_from_source("52.112.0.1", "192.0.2.10", None, IFACES, GW, PREFIXES)
    assert (off_link.interface, off_link.kind, off_link.gateway) == ("en0", "physical", "192.0.2.1")
    on_link = egress_from_source("192.0.2.77", "192.0.2.10", None, IFACES, GW, PREFIXES)
    assert on_link.gateway is None
    v6 = egress_from_source("2603:1063::1", "2001:db8:1::10", None, IFACES, GW, PREFIXES)
    assert v6.gateway == "fe80::1"
    vpn = egress_from_source("52.112.0.1", "10.66.0.2", None, IFACES, GW, PREFIXES)
    assert (vpn.interface, vpn.kind, vpn.gateway) == ("utun4", "vpn", None)
    lost = egress_from_source("52.112.0.1", "203.0.113.1", None, IFACES, GW, PREFIXES)
    assert lost.kind == "unknown" and "no interface holds" in (lost.error or "")
    dead = egress_from_source("52.112.0.1", None, "Network is unreachable", IFACES, GW, PREFIXES)
    assert dead.kind == "unreachable" and dead.error == "Network is unreachable" and not dead.ok
    assert egress_from_source("52.112.0.1", None, None, IFACES, GW, PREFIXES).error == "no route"


def test_platform_choice() -> None:
    assert for_os("linux", {}).name == "linux"
    assert for_os("darwin", {}).name == "darwin"
    assert for_os("win32", {}).name == "win32"
    assert for_os("freebsd14", {}).name == "portable"
    assert current({}).name == ("linux" if sys.platform.startswith("linux") else current({}).name)
    with pytest.raises(ConfigError):
        for_os("linux", {"NETCHECK_INTERFACE_KINDS": "up0"})


def test_run_tool() -> None:
    r = run_tool([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"], 30, "abc")
    assert r.ok and r.stdout.strip() == "ABC" and r.problem is None
    bad = run_tool([sys.executable, "-c", "import sys; sys.stderr.write('nope\\n'); sys.exit(3)"], 30)
    assert not bad.ok and bad.problem == f"{sys.executable} failed (exit 3): nope"
    quiet = run_tool([sys.executable, "-c", "import sys; sys.exit(2)"], 30)
    assert quiet.problem and quiet.problem.endswith("no output")
    slow = run_tool([sys.executable, "-c", "import time; time.sleep(30)"], 0.3)
    assert slow.timed_out and slow.problem and "did not answer in time" in slow.problem
    gone = run_tool(["netcheck-no-such-tool"], 1)
    assert gone.missing and gone.problem == "netcheck-no-such-tool is not available on this system"
    assert run_tool([], 1).missing
    assert ToolResult(("x",), None, "", "", missing=True).ok is False
