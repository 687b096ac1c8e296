"""Interface classification: the adapter table and the evidence it produces."""

from __future__ import annotations

from pathlib import Path

import pytest

from netcheck.errors import ConfigError
from netcheck.platform import classify as c
from netcheck.platform.base import InterfaceFacts, InterfaceIndex


def kind(facts: InterfaceFacts) -> tuple[str, str | None, tuple[str, ...]]:
    i = c.classify(facts)
    return i.kind, i.vpn_product, i.evidence


@pytest.mark.parametrize(("facts", "want", "product", "evidence"), [
    (InterfaceFacts("lo", loopback=True), "loopback", None, "loopback interface"),
    (InterfaceFacts("Ethernet 2", description="PANGP Virtual Ethernet Adapter Secure #2"), "vpn", "GlobalProtect",
     "description 'PANGP Virtual Ethernet Adapter Secure #2'"),
    (InterfaceFacts("Ethernet 3", description="Cisco AnyConnect Secure Mobility Client Virtual Miniport Adapter "
                                              "for Windows x64"), "vpn", "Cisco Secure Client (AnyConnect)", None),
    (InterfaceFacts("Ethernet 4", description="Cisco Secure Client Virtual Miniport Adapter"), "vpn",
     "Cisco Secure Client (AnyConnect)", None),
    (InterfaceFacts("cscotun0", link_kind="tun", tun_flags=0x1001), "vpn", "Cisco Secure Client (AnyConnect)",
     "name matches cscotun*"),
    (InterfaceFacts("gpd0", link_kind="tun"), "vpn", "GlobalProtect", "name matches gpd*"),
    (InterfaceFacts("Ethernet 5", description="Fortinet SSL VPN Virtual Ethernet Adapter"), "vpn", "FortiClient", None),
    (InterfaceFacts("Ethernet 6", description="Juniper Networks Virtual Adapter"), "vpn",
     "Ivanti Secure Access (Pulse Secure)", None),
    (InterfaceFacts("Ethernet 7", description="Zscaler Network Adapter 1.0.2.0"), "vpn", "Zscaler Client Connector",
     None),
    (InterfaceFacts("corp", link_kind="wireguard"), "vpn", "WireGuard", "link kind 'wireguard'"),
    (InterfaceFacts("wg-home", description="WireGuard Tunnel"), "vpn", "WireGuard", None),
    (InterfaceFacts("OpenVPN Wintun", description="Wintun Userspace Tunnel"), "vpn", "OpenVPN", None),
    (InterfaceFacts("OpenVPN Data Channel Offload", description="OpenVPN Data Channel Offload"), "vpn", "OpenVPN",
     None),
    (InterfaceFacts("Local Area Connection", component_id="tap0901"), "vpn", "OpenVPN", "component id 'tap0901'"),
    (InterfaceFacts("Contoso VPN", windows_vpn_connection="Contoso VPN (Ikev2, Connected)", if_type=23), "vpn",
     "Windows built-in VPN", "Get-VpnConnection lists 'Contoso VPN (Ikev2, Connected)'"),
    (InterfaceFacts("WAN Miniport (SSTP)", description="WAN Miniport (SSTP)"), "vpn", "Windows built-in VPN", None),
    (InterfaceFacts("tun0", tun_flags=0x1001, point_to_point=True), "vpn", None,
     "Linux: /sys/class/net/tun0/tun_flags exists (a tun device)"),
    (InterfaceFacts("tap9", tun_flags=0x1002), "vpn", None,
     "Linux: /sys/class/net/tap9/tun_flags exists (a tap device)"),
    (InterfaceFacts("ppp0", link_type="ppp"), "vpn", None, "name matches ppp*"),
    (InterfaceFacts("ipsec0"), "vpn", None, "name matches ipsec*"),
    (InterfaceFacts("PPP adapter", if_type=23), "vpn", None, "ifType 23 (ppp)"),
    (InterfaceFacts("gre1", link_kind="gre"), "vpn", None, "link kind 'gre'"),
    (InterfaceFacts("utun4", addresses=("10.251.1.7",), point_to_point=True), "vpn", None, "point-to-point link"),
    (InterfaceFacts("utun0", addresses=("fe80::1",)), "vpn", None,
     "only link-local addresses (often a macOS system tunnel, not a VPN)"),
    (InterfaceFacts("docker0", link_kind="bridge"), "virtual", None, "name matches docker*"),
    (InterfaceFacts("vEthernet (WSL)", description="Hyper-V Virtual Ethernet Adapter"), "virtual", None,
     "name matches vEthernet*"),
    (InterfaceFacts("Ethernet 9", description="VirtualBox Host-Only Ethernet Adapter #2"), "virtual", None,
     "description 'VirtualBox Host-Only Ethernet Adapter #2'"),
    (InterfaceFacts("up0", link_kind="veth"), "virtual", None, "link kind 'veth'"),
    (InterfaceFacts("vnet3", tun_flags=0x1002), "virtual", None, "name matches vnet*"),
    (InterfaceFacts("Mystery", virtual=True), "virtual", None, "Windows: Virtual is True"),
    (InterfaceFacts("Mystery 2", hardware_interface=False), "virtual", None, "Windows: HardwareInterface is False"),
    (InterfaceFacts("wlp2s0", has_device=True, wireless=True), "physical", None,
     "Linux: /sys/class/net/wlp2s0/wireless exists (Wi-Fi)"),
    (InterfaceFacts("enp0s31f6", has_device=True), "physical", None,
     "Linux: /sys/class/net/enp0s31f6/device exists (a bus device)"),
    (InterfaceFacts("Wi-Fi", hardware_interface=True, media_type="Native 802.11"), "physical", None,
     "media type 'Native 802.11' (Wi-Fi)"),
    (InterfaceFacts("en0", hardware_port="Wi-Fi"), "physical", None, "macOS hardware port 'Wi-Fi'"),
    (InterfaceFacts("mystery0", has_device=False), "virtual", None,
     "Linux: /sys/class/net/mystery0/device is absent (no bus device)"),
    (InterfaceFacts("en7"), "physical", None, "name matches en*"),
    (InterfaceFacts("zz9"), "virtual", None, "no evidence of a physical device"),
])
def test_classification(facts: InterfaceFacts, want: str, product: str | None, evidence: str | None) -> None:
    got_kind, got_product, got_evidence = kind(facts)
    assert (got_kind, got_product) == (want, product)
    assert got_evidence
    if evidence is not None:
        assert evidence in got_evidence


def test_product_match_keeps_the_generic_tunnel_evidence_too() -> None:
    _k, product, ev = kind(InterfaceFacts("wg0", tun_flags=0x1001, link_kind="tun", point_to_point=True))
    assert product == "WireGuard"
    assert ev[0] == "name matches wg*"
    assert "Linux: /sys/class/net/wg0/tun_flags exists (a tun device)" in ev and "link kind 'tun'" in ev


def test_override_wins_but_not_over_loopback() -> None:
    assert c.classify(InterfaceFacts("up0", link_kind="veth"), override="physical").kind == "physical"
    assert c.classify(InterfaceFacts("lo", loopback=True), override="vpn").kind == "loopback"
    got = c.classify_all([InterfaceFacts("a"), InterfaceFacts("b")], overrides={"b": "vpn"})
    assert [i.kind for i in got] == ["virtual", "vpn"]


def test_overrides_parse() -> None:
    assert c.parse_overrides(" up0=physical, tun7=VPN ,") == {"up0": "physical", "tun7": "vpn"}
    assert c.parse_overrides("") == {}
    for bad in ("up0", "=vpn", "up0=fast"):
        with pytest.raises(ConfigError, match="NETCHECK_INTERFACE_KINDS"):
            c.parse_overrides(bad)


def test_the_bundled_table_loads_once() -> None:
    assert c.default_table() is c.default_table()
    assert any(r.product == "GlobalProtect" for r in c.default_table().vpn)


@pytest.mark.parametrize(("text", "message"), [
    ("[surprise]\n", "unknown section 'surprise'"),
    ("[[vpn]]\nnames = ['x*']\n", "[[vpn]] #1: 'product' is missing"),
    ("[[vpn]]\nproduct = 'X'\nnicknames = ['x']\n", "unknown key 'nicknames'"),
    ("[[vpn]]\nproduct = 'X'\nnames = 'x*'\n", "'names' must be a list of non-empty strings"),
    ("[tunnel]\nif_types = ['ppp']\n", "'if_types' must be a list of integers"),
    ("[virtual]\nnames = ['']\n", "[virtual]: 'names' must be a list"),
    ("not toml [", "is not valid TOML"),
])
def test_invalid_adapter_tables(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "adapters.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        c.load_table(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_interface_index() -> None:
    ifaces = c.classify_all([InterfaceFacts("en0", addresses=("192.0.2.5", "fe80::1"), hardware_port="Wi-Fi"),
                             InterfaceFacts("bad", addresses=("not-an-ip",))])
    idx = InterfaceIndex.of(ifaces)
    assert idx.kind_of("en0") == "physical" and idx.kind_of("nope") == "unknown" and idx.kind_of(None) == "unknown"
    owner = idx.owner_of("192.0.2.5")
    assert owner is not None and owner.name == "en0"
    assert idx.owner_of("fe80::1%en0") is not None
    assert idx.owner_of("192.0.2.99") is None and idx.owner_of("junk") is None


@pytest.mark.parametrize("pattern", ["wg*", "WAN Miniport (IKEv2)*", "ap?", "root\\tap0901", "[ab]r*", "x*y*", "*", ""])
@pytest.mark.parametrize("name", ["wg0", "wan miniport (ikev2)", "wan miniport (ikev2) #2", "ap1", "ap12",
                                  "root\\tap0901", "ar0", "br-1", "xqy", "x", "", "WG0"])
def test_a_pattern_matches_as_fnmatch_says(pattern: str, name: str) -> None:
    """Prefix and plain patterns are tested without a regular expression, with fnmatch's answer."""
    import fnmatch

    assert c._matcher(pattern)(name.lower()) is fnmatch.fnmatchcase(name.lower(), pattern.lower())
