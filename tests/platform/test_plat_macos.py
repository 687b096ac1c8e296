"""macOS parsers on captured output, and the thin layer driven by replayed captures."""

from __future__ import annotations

from collections.abc import Sequence

from plat_support import MISSING, TIMED_OUT, Replay, ok, read_fixture

from netcheck.platform import macos
from netcheck.platform._run import ToolResult
from netcheck.platform.base import UNKNOWN, UNREACHABLE


def test_route_get_default_route() -> None:
    e = macos.parse_route_get(read_fixture("macos/route-get-default-en0.txt"), "", "52.112.0.1")
    assert (e.interface, e.gateway, e.method, e.error) == ("en0", "192.168.68.1", "route -n get", None)


def test_route_get_through_a_vpn_utun() -> None:
    e = macos.parse_route_get(read_fixture("macos/route-get-utun-vpn.txt"), "", "10.20.30.40")
    assert (e.interface, e.gateway) == ("utun4", None)
    e = macos.parse_route_get(read_fixture("macos/route-get-utun-linkgw.txt"), "", "52.113.4.5")
    assert (e.interface, e.gateway) == ("utun8", None)


def test_route_get_ipv6_gateway_loses_its_scope() -> None:
    e = macos.parse_route_get(read_fixture("macos/route-get-inet6.txt"), "", "2603:1063::1")
    assert (e.interface, e.gateway) == ("en0", "fe80::1a2b:3cff:fe4d:5e6f")


def test_route_get_failures() -> None:
    e = macos.parse_route_get("", read_fixture("macos/route-get-not-in-table.stderr"), "198.51.100.1")
    assert e.kind == UNREACHABLE and e.error == "writing to routing socket: not in table"
    e = macos.parse_route_get(read_fixture("macos/route-get-reject.txt"), "", "198.51.100.9")
    assert e.kind == UNREACHABLE and e.error == "the route is marked REJECT"
    e = macos.parse_route_get(read_fixture("macos/route-get-no-interface.txt"), "", "203.0.113.9")
    assert e.kind == UNKNOWN and e.error == "route -n get named no interface"
    e = macos.parse_route_get("", "route: bad address: x\n", "203.0.113.9")
    assert e.error == "route: bad address: x"
    e = macos.parse_route_get("   route to: 192.0.2.9\n  interface: lo0\n      flags: <UP,BLACKHOLE>\n", "",
                              "192.0.2.9")
    assert e.error == "the route is marked BLACKHOLE"


def test_ifconfig() -> None:
    facts = {f.name: f for f in macos.parse_ifconfig(read_fixture("macos/ifconfig-a.txt"))}
    assert facts["lo0"].loopback and "127.0.0.1" in facts["lo0"].addresses
    assert facts["en0"].is_up and facts["en0"].addresses == ("fe80::1c2b:3d4e:5f60:7a8b", "192.168.68.61",
                                                             "2001:db8:68::61")
    assert not facts["en5"].is_up  # status: inactive
    assert not facts["gif0"].is_up and "stf0" not in facts  # flags=0<> and no address: dropped
    assert facts["utun4"].point_to_point and facts["utun4"].addresses[0] == "10.251.1.7"
    assert macos.parse_ifconfig("") == ()


def test_hardware_ports_nwi_dns_netstat() -> None:
    ports = macos.parse_hardware_ports(read_fixture("macos/networksetup-listallhardwareports.txt"))
    assert ports == {"en0": "Wi-Fi", "en5": "USB 10/100/1000 LAN", "bridge0": "Thunderbolt Bridge"}
    order, flags = macos.parse_nwi(read_fixture("macos/scutil-nwi-vpn.txt"))
    assert order == ("en0", "utun4")
    assert flags["en0"] == "0x5 (IPv4,DNS); 0x6 (IPv6,DNS)" and flags["utun4"] == "0x5 (IPv4,DNS)"
    servers, search = macos.parse_scutil_dns(read_fixture("macos/scutil-dns-split.txt"))
    assert servers == ("192.168.68.1", "2001:db8:68::1", "10.251.0.53") and search == ("home.example",)
    routes = {r.destination: r for r in macos.parse_netstat_rn(read_fixture("macos/netstat-rn.txt"))}
    assert routes["0.0.0.0/0"].gateway == "192.168.68.1" and routes["0.0.0.0/0"].interface == "en0"
    assert routes["10.0.0.0/8"].interface == "utun4" and routes["10.0.0.0/8"].gateway is None
    assert routes["203.0.113.10/32"].gateway == "192.168.68.1"
    assert routes["127.0.0.0/8"].interface == "lo0" and routes["169.254.0.0/16"].interface == "en0"
    assert routes["198.51.100.0/24"].type == "blackhole"
    assert routes["::/0"].gateway == "fe80::1a2b:3cff:fe4d:5e6f"
    assert routes["fe80::/64"].interface == "utun0" and routes["::1/128"].gateway is None
    assert routes["192.168.68.1/32"].gateway is None
    assert macos._netstat_dst("bogus/99", 4) == "bogus/99"


def _mac(extra: dict[tuple[str, ...], object] | None = None) -> tuple[macos.MacPlatform, Replay]:
    def route(args: Sequence[str], _stdin: str | None) -> ToolResult:
        target = args[-1]
        name = {"52.112.0.1": "route-get-default-en0.txt", "10.20.30.40": "route-get-utun-vpn.txt",
                "2603:1063::1": "route-get-inet6.txt"}.get(target)
        if name is None:
            return ToolResult(tuple(args), 0, "", read_fixture("macos/route-get-not-in-table.stderr"))
        return ToolResult(tuple(args), 0, read_fixture(f"macos/{name}"), "")

    answers: dict[tuple[str, ...], object] = {
        ("route", "-n", "get"): route,
        ("ifconfig", "-a"): ok(read_fixture("macos/ifconfig-a.txt")),
        ("networksetup", "-listallhardwareports"): ok(read_fixture("macos/networksetup-listallhardwareports.txt")),
        ("scutil", "--nwi"): ok(read_fixture("macos/scutil-nwi-vpn.txt")),
        ("scutil", "--dns"): ok(read_fixture("macos/scutil-dns-split.txt")),
        ("scutil", "--proxy"): ok(read_fixture("macos/scutil-proxy-pac.txt")),
        ("netstat", "-rn"): ok(read_fixture("macos/netstat-rn.txt")),
        **(extra or {}),
    }
    replay = Replay(answers)  # type: ignore[arg-type]
    return macos.MacPlatform(run=replay, environ={"NETCHECK_PAC_URL": "http://192.0.2.80/test.pac"}), replay


def test_mac_platform_end_to_end_on_captures() -> None:
    plat, replay = _mac()
    got = plat.egress_many(["52.112.0.1", "10.20.30.40", "2603:1063::1", "198.51.100.1", "nope", "52.112.0.1"])
    assert got["52.112.0.1"].kind == "physical" and got["52.112.0.1"].gateway == "192.168.68.1"
    assert got["10.20.30.40"].kind == "vpn" and got["10.20.30.40"].interface == "utun4"
    assert got["2603:1063::1"].kind == "physical"
    assert got["198.51.100.1"].kind == UNREACHABLE
    assert got["nope"].kind == UNKNOWN
    assert ("route", "-n", "get", "-inet6", "2603:1063::1") in replay.calls
    assert sum(1 for c in replay.calls if c[:3] == ("route", "-n", "get")) == 4  # duplicates asked once
    ifaces = {i.name: i for i in plat.interfaces()}
    assert ifaces["en0"].kind == "physical" and ifaces["en0"].description == "Wi-Fi"
    assert ifaces["utun4"].kind == "vpn" and ifaces["utun4"].description == "scutil --nwi: 0x5 (IPv4,DNS)"
    assert ifaces["bridge0"].kind == "virtual" and ifaces["awdl0"].kind == "virtual"
    assert plat.dns_servers()[0] == "192.168.68.1" and plat.search_domains() == ("home.example",)
    assert any(r.destination == "203.0.113.10/32" for r in plat.routes())
    proxy = plat.proxy_settings()
    assert proxy.source == "scutil" and proxy.pac_url == "http://192.0.2.80/test.pac" and proxy.auto_detect


def test_mac_platform_when_tools_fail() -> None:
    plat, _ = _mac({("route", "-n", "get"): MISSING, ("ifconfig", "-a"): MISSING,
                    ("networksetup", "-listallhardwareports"): MISSING, ("scutil", "--nwi"): MISSING,
                    ("scutil", "--dns"): MISSING, ("scutil", "--proxy"): MISSING, ("netstat", "-rn"): MISSING})
    e = plat.egress_for("127.0.0.1")
    assert e.method == "udp-connect" and e.kind == "loopback"  # fell back to the portable way
    assert plat.routes() == ()
    assert plat.proxy_settings().error == "scutil is not available on this system"
    plat, _ = _mac({("route", "-n", "get"): TIMED_OUT})
    assert plat.egress_for("192.0.2.1").error == "route -n get timed out"


def test_without_route_every_address_falls_back_in_one_portable_pass() -> None:
    plat, replay = _mac({("route", "-n", "get"): MISSING})
    got = plat.egress_many(["127.0.0.1", "127.0.0.2", "127.0.0.3", "::1"])
    assert {e.method for e in got.values()} == {"udp-connect"} and got["127.0.0.1"].kind == "loopback"
    # the interfaces are read once for the portable pass and once to name the kinds: not once per address
    assert sum(1 for c in replay.calls if c[:2] == ("ifconfig", "-a")) == 2
