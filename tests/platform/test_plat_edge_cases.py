"""Odd inputs for the pure parsers: blank lines, junk rows, values that are not what they seem."""

from __future__ import annotations

from netcheck.platform import classify, linux, macos, windows
from netcheck.platform.base import InterfaceFacts


def test_utun_with_a_non_address_is_not_called_a_system_tunnel() -> None:
    i = classify.classify(InterfaceFacts("utun9", addresses=("fe80::1", "garbage")))
    assert i.kind == "vpn" and not any("link-local" in e for e in i.evidence)


def test_linux_parsers_skip_blank_and_junk_lines() -> None:
    assert linux.parse_batch_errors("\n\nRTNETLINK answers: Network is unreachable\n\nCommand failed -:1\n") == {
        1: "Network is unreachable"}
    got = linux.parse_route_get_batch('[{"dst": "not-an-ip", "dev": "x"}]\n', "", ["192.0.2.1"])
    assert got["192.0.2.1"].error == "ip route get gave no answer"
    assert linux.parse_resolvectl("junk\nGlobal: 192.0.2.53\n") == {"Global": ("192.0.2.53",)}


def test_macos_ifconfig_ignores_text_before_the_first_interface() -> None:
    facts = macos.parse_ifconfig("\n\tinet 192.0.2.1 netmask 0xffffff00\nen0: flags=8863<UP,RUNNING> mtu 1500\n\n")
    assert [f.name for f in facts] == ["en0"] and facts[0].addresses == ()


def test_windows_parsers_skip_rows_without_names() -> None:
    text = '{"adapters": [{"Name": ""}, 3], "addresses": [], "ipinterfaces": [{"InterfaceAlias": "X"}], "vpn": [{}]}'
    facts = windows.parse_interfaces(text)
    assert [f.name for f in facts] == ["X"] and facts[0].is_up is False
    assert windows.parse_routes('[{"NextHop": "1.2.3.4"}, {"DestinationPrefix": "10.0.0.0/8", "NextHop": "::"}]')[0] \
        .gateway is None


def test_proxy_parsers_skip_junk() -> None:
    assert windows.parse_proxy_server("http=http://:8080") == {}
    assert macos.parse_scutil_dict("<dictionary> {\n\n  A : 1\n}\n") == {"A": "1"}
    assert linux.parse_gsettings("org.gnome.system.proxy mode\nother.schema key 'v'\n"
                             "org.gnome.system.proxy mode 'none'\n").source == "none"
