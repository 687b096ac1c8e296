"""The Linux platform for real, inside a lab network namespace (needs root).

The namespace has a veth uplink ``up0`` (192.0.2.10/24, 2001:db8:1::10/64, its peer in a
second "ISP" namespace) and a tun device ``wg0`` set up the way wg-quick does it:
198.18.0.0/16 routed to wg0 in the main table, and a default route in table 51820
selected by ``not fwmark 0xca6c`` with ``suppress_prefixlength 0`` on main, for IPv4
and IPv6. Only lab addresses are used; nothing is sent anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.lab

NS = f"nctest{os.getpid()}"
ISP = f"ncisp{os.getpid()}"

SETUP = [
    ["ip", "netns", "add", NS],
    ["ip", "netns", "add", ISP],
    ["ip", "-n", NS, "link", "set", "lo", "up"],
    ["ip", "-n", NS, "link", "add", "up0", "type", "veth", "peer", "name", "isp0", "netns", ISP],
    ["ip", "-n", NS, "addr", "add", "192.0.2.10/24", "dev", "up0"],
    ["ip", "-n", NS, "addr", "add", "2001:db8:1::10/64", "dev", "up0", "nodad"],
    ["ip", "-n", NS, "link", "set", "up0", "up"],
    ["ip", "-n", ISP, "addr", "add", "192.0.2.1/24", "dev", "isp0"],
    ["ip", "-n", ISP, "addr", "add", "2001:db8:1::1/64", "dev", "isp0", "nodad"],
    ["ip", "-n", ISP, "link", "set", "isp0", "up"],
    ["ip", "-n", NS, "route", "add", "default", "via", "192.0.2.1"],
    ["ip", "-n", NS, "-6", "route", "add", "default", "via", "2001:db8:1::1"],
    ["ip", "-n", NS, "tuntap", "add", "dev", "wg0", "mode", "tun"],
    ["ip", "-n", NS, "addr", "add", "10.66.0.2/32", "dev", "wg0"],
    ["ip", "-n", NS, "addr", "add", "2001:db8:66::2/128", "dev", "wg0", "nodad"],
    ["ip", "-n", NS, "link", "set", "wg0", "up"],
    ["ip", "-n", NS, "route", "add", "198.18.0.0/16", "dev", "wg0"],
    ["ip", "-n", NS, "route", "add", "default", "dev", "wg0", "table", "51820"],
    ["ip", "-n", NS, "-6", "route", "add", "default", "dev", "wg0", "table", "51820"],
    ["ip", "-n", NS, "route", "add", "blackhole", "198.51.100.0/24"],
]
POLICY = [
    ["ip", "-n", NS, fam, "rule", "add", *rule]
    for fam in ("-4", "-6")
    for rule in (["not", "fwmark", "0xca6c", "table", "51820"], ["table", "main", "suppress_prefixlength", "0"])
]

PROBE = """
import json, sys
from netcheck.platform import current
plat = current()
addrs = sys.argv[1:]
out = {"name": plat.name,
       "egress": {a: e.__dict__ for a, e in plat.egress_many(addrs).items()},
       "interfaces": {i.name: i.__dict__ for i in plat.interfaces()}}
out["interface_readers_loaded"] = "netcheck.platform._ifaces" in sys.modules
from netcheck.platform.portable import PortablePlatform
out["portable"] = {a: e.__dict__ for a, e in PortablePlatform().egress_many(addrs).items()}
print(json.dumps(out))
"""


def _sh(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=20)


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (run the suite as root, as CI does)")
    if shutil.which("ip") is None or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs iproute2 and /dev/net/tun")
    try:
        for cmd in SETUP:
            _sh(cmd)
        with_policy = True
        try:
            for cmd in POLICY:
                _sh(cmd)
        except subprocess.CalledProcessError:  # pragma: no cover - kernels without policy routing
            with_policy = False
        if not with_policy:  # pragma: no cover
            pytest.skip("this kernel has no policy routing (ip rule)")
        yield NS
    except subprocess.CalledProcessError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"cannot build the lab namespace: {exc.stderr.decode(errors='replace').strip()}")
    finally:
        for ns in (NS, ISP):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def _probe(ns: str, addrs: list[str], kinds: str | None = None) -> dict[str, object]:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    if kinds:
        env["NETCHECK_INTERFACE_KINDS"] = kinds
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, *addrs],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


ADDRS = ["198.18.1.1", "192.0.2.1", "52.112.0.1", "2001:db8:5::1", "2001:db8:1::1", "198.51.100.9", "127.0.0.1"]


def test_egress_follows_routes_and_policy_routing(lab: str) -> None:
    out = _probe(lab, ADDRS, kinds="up0=physical")
    assert out["name"] == "linux"
    eg = out["egress"]
    assert isinstance(eg, dict)
    # 198.18.0.0/16 is routed to the tun in the main table
    assert eg["198.18.1.1"]["interface"] == "wg0" and eg["198.18.1.1"]["kind"] == "vpn"
    assert eg["198.18.1.1"]["source"] == "10.66.0.2" and eg["198.18.1.1"]["method"] == "ip route get"
    # the uplink's own subnet stays on the uplink (suppress_prefixlength 0 keeps main's /24)
    assert eg["192.0.2.1"]["interface"] == "up0" and eg["192.0.2.1"]["kind"] == "physical"
    assert eg["192.0.2.1"]["table"] is None
    # everything else follows the fwmark rule into table 51820: the tunnel
    assert eg["52.112.0.1"]["interface"] == "wg0" and eg["52.112.0.1"]["table"] == "51820"
    assert eg["2001:db8:5::1"]["interface"] == "wg0" and eg["2001:db8:5::1"]["table"] == "51820"
    assert eg["2001:db8:5::1"]["source"] == "2001:db8:66::2"
    assert eg["2001:db8:1::1"]["interface"] == "up0" and eg["2001:db8:1::1"]["kind"] == "physical"
    # a blackhole route is "unreachable", with the reason
    assert eg["198.51.100.9"]["kind"] == "unreachable" and "blackhole" in eg["198.51.100.9"]["error"]
    assert eg["127.0.0.1"]["kind"] == "loopback"
    # ip answered all of it: psutil and netifaces (~12 ms of imports) never loaded
    assert out["interface_readers_loaded"] is False


def test_interfaces_are_classified_with_evidence(lab: str) -> None:
    out = _probe(lab, ["192.0.2.1"])
    ifaces = out["interfaces"]
    assert isinstance(ifaces, dict)
    wg = ifaces["wg0"]
    assert wg["kind"] == "vpn" and wg["vpn_product"] == "WireGuard"
    assert "Linux: /sys/class/net/wg0/tun_flags exists (a tun device)" in wg["evidence"]
    assert "name matches wg*" in wg["evidence"]
    # without an override, the lab's veth uplink is what it is: a virtual link
    assert ifaces["up0"]["kind"] == "virtual" and "link kind 'veth'" in ifaces["up0"]["evidence"]
    assert ifaces["lo"]["kind"] == "loopback"
    assert "192.0.2.10" in ifaces["up0"]["addresses"]


def test_portable_udp_connect_agrees_on_the_interface(lab: str) -> None:
    out = _probe(lab, ADDRS, kinds="up0=physical")
    port, eg = out["portable"], out["egress"]
    assert isinstance(port, dict) and isinstance(eg, dict)
    for a in ("198.18.1.1", "192.0.2.1", "52.112.0.1", "2001:db8:5::1", "2001:db8:1::1", "127.0.0.1"):
        assert port[a]["method"] == "udp-connect"
        assert port[a]["interface"] == eg[a]["interface"], a
        assert port[a]["source"] == eg[a]["source"], a
    # the portable way reports the default gateway only for the default-route interface, off-link
    assert port["192.0.2.1"]["gateway"] is None
    assert port["52.112.0.1"]["gateway"] is None
    assert port["198.51.100.9"]["kind"] == "unreachable"
