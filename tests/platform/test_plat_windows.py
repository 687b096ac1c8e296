"""Windows parsers on captured PowerShell JSON, and the thin layer driven by replayed captures."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import pytest
from plat_support import MISSING, Replay, ok, read_fixture

from netcheck.platform import windows
from netcheck.platform._run import ToolResult
from netcheck.platform.base import UNKNOWN, UNREACHABLE

ADDRS = ["52.112.0.1", "40.97.1.1", "2603:1063::1", "198.51.100.1"]


def test_find_netroute() -> None:
    got = windows.parse_find_netroute(read_fixture("windows/find-netroute.json"), [*ADDRS, "192.0.2.4"])
    direct = got["52.112.0.1"]
    assert (direct.interface, direct.source, direct.gateway, direct.metric) == ("Wi-Fi", "192.168.1.23",
                                                                               "192.168.1.1", 1)
    vpn = got["40.97.1.1"]
    assert (vpn.interface, vpn.gateway, vpn.method) == ("Ethernet 2", None, "Find-NetRoute")
    assert got["2603:1063::1"].gateway == "fe80::1"
    assert got["198.51.100.1"].kind == UNREACHABLE and "cannot be reached" in (got["198.51.100.1"].error or "")
    assert got["192.0.2.4"].error == "Find-NetRoute gave no answer"
    single = windows.parse_find_netroute(read_fixture("windows/find-netroute-single.json"), ["10.99.1.1"])
    assert single["10.99.1.1"].interface == "Contoso VPN"
    assert windows.parse_find_netroute("", ["10.0.0.1"])["10.0.0.1"].kind == UNKNOWN
    text = '[{"Destination": "x"}, {"Destination": "10.0.0.2", "Error": "Access is denied"}]'
    odd = windows.parse_find_netroute(text, ["10.0.0.2"])
    assert odd["10.0.0.2"].kind == UNKNOWN and odd["10.0.0.2"].error == "Access is denied"


def test_interfaces_and_their_classes() -> None:
    facts = windows.parse_interfaces(read_fixture("windows/interfaces.json"))
    from netcheck.platform.classify import classify_all

    by = {i.name: i for i in classify_all(facts)}
    assert by["Wi-Fi"].kind == "physical" and by["Wi-Fi"].addresses[-1] == "192.168.1.23"
    assert by["Ethernet"].kind == "physical" and not by["Ethernet"].is_up
    assert (by["Ethernet 2"].kind, by["Ethernet 2"].vpn_product) == ("vpn", "GlobalProtect")
    assert by["vEthernet (WSL)"].kind == "virtual"
    assert by["OpenVPN TAP-Windows6"].vpn_product == "OpenVPN"
    assert by["wg-corp"].vpn_product == "WireGuard" and by["wg-corp"].is_up
    assert by["Ethernet 3"].vpn_product == "Cisco Secure Client (AnyConnect)"
    assert by["WAN Miniport (IKEv2)"].vpn_product == "Windows built-in VPN"
    assert by["Local Area Connection* 1"].kind == "virtual"
    assert by["Mystery Adapter"].kind == "virtual"
    assert by["Loopback Pseudo-Interface 1"].kind == "loopback"
    ras = by["Contoso VPN"]
    assert ras.kind == "vpn" and ras.vpn_product == "Windows built-in VPN" and ras.is_up and ras.index == 45
    assert "Get-VpnConnection lists 'Contoso VPN (Ikev2, Connected)'" in ras.evidence
    assert windows.parse_interfaces("[]") == () and windows.parse_interfaces("{oops") == ()


def test_routes_and_dns() -> None:
    routes = windows.parse_routes(read_fixture("windows/get-netroute.json"))
    by = {(r.destination, r.interface): r for r in routes}
    assert by[("203.0.113.10/32", "Wi-Fi")].gateway == "192.168.1.1"
    assert by[("0.0.0.0/0", "Ethernet 2")].gateway is None
    assert by[("ff00::/8", "Loopback Pseudo-Interface 1")].gateway is None
    servers, search = windows.parse_dns(read_fixture("windows/dns.json"))
    assert servers == ("10.128.0.53", "10.128.0.54", "192.168.1.1")
    assert search == ("corp.example", "home.example")
    assert windows.parse_dns("null") == ((), ())


def test_the_route_script_only_accepts_ip_addresses() -> None:
    script = windows.route_script(["52.112.0.1", "2603:1063:0::1"])
    assert "@('52.112.0.1','2603:1063::1')" in script
    with pytest.raises(ValueError):
        windows.route_script(["1.1.1.1'; Remove-Item C:\\ -Recurse; '"])
    decoded = base64.b64decode(windows.encode_script("Get-Date")).decode("utf-16-le")
    assert decoded == "Get-Date"


def _ps_answer(args: Sequence[str], _stdin: str | None) -> ToolResult:
    script = base64.b64decode(args[-1]).decode("utf-16-le")
    if "Find-NetRoute" in script:
        return ToolResult(tuple(args), 0, read_fixture("windows/find-netroute.json"), "")
    if "Get-NetAdapter" in script:
        return ToolResult(tuple(args), 0, read_fixture("windows/interfaces.json"), "")
    if "Get-NetRoute" in script:
        return ToolResult(tuple(args), 0, read_fixture("windows/get-netroute.json"), "")
    if "Get-DnsClientServerAddress" in script:
        return ToolResult(tuple(args), 0, read_fixture("windows/dns.json"), "")
    return ToolResult(tuple(args), 1, "", "unexpected script")


def _reg(args: Sequence[str], _stdin: str | None) -> ToolResult:
    key = args[2]
    if "Policies" in key:
        return ToolResult(tuple(args), 1, "", read_fixture("windows/reg-query-missing.stderr"))
    if key.endswith("Connections"):
        return ToolResult(tuple(args), 0, read_fixture("windows/reg-query-connections.txt"), "")
    return ToolResult(tuple(args), 0, read_fixture("windows/reg-query-internet-settings.txt"), "")


def test_windows_platform_end_to_end_on_captures() -> None:
    replay = Replay({("powershell",): _ps_answer, ("reg", "query"): _reg,  # type: ignore[dict-item]
                     ("netsh", "winhttp"): ok(read_fixture("windows/netsh-winhttp-proxy.txt"))})
    plat = windows.WindowsPlatform(run=replay, environ={})
    got = plat.egress_many([*ADDRS, "junk"])
    assert got["52.112.0.1"].kind == "physical" and got["40.97.1.1"].kind == "vpn"
    assert got["198.51.100.1"].kind == UNREACHABLE and got["junk"].kind == UNKNOWN
    assert sum(1 for c in replay.calls if c[0] == "powershell") == 2  # one route batch, one interface list
    assert plat.egress_many([]) == {}
    assert any(r.destination == "203.0.113.10/32" for r in plat.routes())
    assert plat.dns_servers()[0] == "10.128.0.53" and plat.search_domains()[0] == "corp.example"
    proxy = plat.proxy_settings()
    assert proxy.source == "WinINET" and proxy.pac_url == "http://pac.corp.example/proxy.pac"
    assert proxy.auto_detect and proxy.others[0].source == "WinHTTP"


def test_windows_platform_without_powershell() -> None:
    replay = Replay({("reg",): MISSING})
    plat = windows.WindowsPlatform(run=replay, environ={})
    e = plat.egress_for("127.0.0.1")
    assert e.method == "udp-connect" and e.kind == "loopback"
    assert plat.routes() == ()
    settings = plat.proxy_settings()
    assert settings.error == "reg is not available on this system"
    failing = Replay({("powershell",): ok("", "Find-NetRoute : Access denied", 1)})
    e = windows.WindowsPlatform(run=failing, environ={}).egress_for("192.0.2.1")
    assert e.kind == UNKNOWN and "Access denied" in (e.error or "")
