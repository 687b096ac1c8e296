"""Site profiles from a mapping (the collector's policy) and the choice among several: no network."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netcheck.check as check_module
from netcheck.check import CheckOptions, choose_site_profile, perform_check
from netcheck.errors import ConfigError
from netcheck.models import Outcome, ProbeKind, ProbeResult, Target
from netcheck.platform import Interface
from netcheck.proxy.settings import ProxySettings
from netcheck.site_profile import (
    SiteProfile,
    load_site_profile,
    load_site_profiles,
    select_site_profile,
    site_profile_from_mapping,
)

FULL: dict[str, Any] = {
    "name": "Paris HQ", "networks": ["10.20.0.0/16", "203.0.113.0/28", "2001:db8:20::/48"],
    "vpn_gateways": ["vpn.contoso.example"], "dns_servers": ["10.20.0.53"],
    "proxies": ["proxy.contoso.example:3128"], "pac_hosts": ["pac.contoso.example"],
    "federation_hosts": ["adfs.contoso.example"], "vpn_on_site_down": "stays", "pac_unreachable": "cached",
    "vpn_mode": "split", "vpn_exclude": ["Optimize", 11, "198.51.100.0/24"],
}


def _toml(site: dict[str, Any]) -> str:
    """The same keys as a [site] table (JSON strings, integers and arrays of them are valid TOML)."""
    return "[site]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in site.items())


def test_a_mapping_gives_the_same_profile_as_the_same_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(_toml(FULL), encoding="utf-8")
    from_mapping = site_profile_from_mapping(FULL, "policy")
    assert from_mapping == load_site_profile(path)
    assert from_mapping.name == "Paris HQ" and from_mapping.from_file
    assert from_mapping.networks[2] == ipaddress.ip_network("2001:db8:20::/48")
    assert from_mapping.vpn_exclude == ("Optimize", 11, "198.51.100.0/24")
    assert (from_mapping.vpn_on_site_down, from_mapping.pac_unreachable, from_mapping.vpn_mode) == \
        ("stays", "cached", "split")


def test_an_empty_mapping_is_the_default_profile_stated_by_it() -> None:
    got = site_profile_from_mapping({}, "policy")
    assert got == SiteProfile(from_file=True)


BAD: list[tuple[dict[str, Any], str]] = [
    ({"site": "paris"}, "[site] has unknown key 'site'"),
    ({"name": "x", "vpn": "split"}, "[site] has unknown key 'vpn'"),
    ({"name": ""}, "[site] name must be a non-empty string"),
    ({"name": 5}, "[site] name must be a non-empty string"),
    ({"networks": "10.0.0.0/8"}, "[site] networks must be a list of strings"),
    ({"networks": ["10.0.0.0/8", 7]}, "[site] networks must be a list of strings"),
    ({"networks": ["10.0.0.0/33"]}, "[site] networks: '10.0.0.0/33' is not an IP prefix"),
    ({"dns_servers": [""]}, "[site] dns_servers must be a list of strings"),
    ({"proxies": [["p"]]}, "[site] proxies must be a list of strings"),
    ({"vpn_on_site_down": "sometimes"}, '[site] vpn_on_site_down must be "stays" or "drops"'),
    ({"pac_unreachable": "retry"}, '[site] pac_unreachable must be "direct", "fail" or "cached"'),
    ({"vpn_mode": "partial"}, '[site] vpn_mode must be "none", "full" or "split"'),
    ({"vpn_mode": "split", "vpn_exclude": "Optimize"}, "[site] vpn_exclude must be a list"),
    ({"vpn_mode": "split", "vpn_exclude": ["Sometimes"]},
     "[site] vpn_exclude: 'Sometimes' is not a category (Optimize, Allow, Default), an endpoint-set id "
     "or an IP prefix"),
    ({"vpn_mode": "split", "vpn_exclude": [-1]}, "[site] vpn_exclude: -1 is not a category"),
    ({"vpn_exclude": ["Optimize"]}, '[site] vpn_exclude needs vpn_mode = "split"'),
]


@pytest.mark.parametrize(("site", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_a_bad_mapping_fails_with_the_toml_loaders_message(site: dict[str, Any], message: str,
                                                            tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as from_mapping:
        site_profile_from_mapping(site, "the collector's site_profiles[3]")
    assert str(from_mapping.value).startswith(f"the collector's site_profiles[3]: {message}")
    path = tmp_path / "site.toml"
    path.write_text(_toml(site), encoding="utf-8")
    with pytest.raises(ConfigError) as from_file:
        load_site_profile(path)
    assert str(from_file.value) == str(from_mapping.value).replace("the collector's site_profiles[3]", str(path))


@pytest.mark.parametrize("entry", [None, "paris", 3, ["name", "paris"]])
def test_an_entry_that_is_not_a_table_is_refused(entry: object) -> None:
    with pytest.raises(ConfigError, match=r"^policy\[0\]: a site profile must be a table"):
        site_profile_from_mapping(entry, "policy[0]")


def test_the_toml_file_keeps_its_own_checks(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[site]\nname = "x"\n[other]\nk = 1\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="one \\[site\\] table, or several \\[\\[site\\]\\] tables, and nothing else"):
        load_site_profile(path)
    path.write_text("[site\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_site_profile(path)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
KEYED = st.dictionaries(st.sampled_from(sorted(FULL) + ["other"]), JSON | st.sampled_from(
    ["10.0.0.0/8", "split", "stays", "cached", "Optimize", ["10.1.0.0/16"], ["Allow", 5]]), max_size=6)


@settings(max_examples=300, deadline=None)
@given(JSON | KEYED)
def test_any_json_value_gives_a_profile_or_a_one_line_config_error(value: object) -> None:
    try:
        got = site_profile_from_mapping(value, "policy")
    except ConfigError as exc:
        assert str(exc).startswith("policy: ") and "\n" not in str(exc)
    else:
        assert isinstance(got, SiteProfile) and got.name


# -- choosing one of several ------------------------------------------------------------------

PARIS = SiteProfile(name="Paris HQ", networks=(ipaddress.ip_network("10.20.0.0/16"),
                                               ipaddress.ip_network("203.0.113.0/28")), from_file=True)
LYON = SiteProfile(name="lyon", networks=(ipaddress.ip_network("10.30.0.0/16"),
                                          ipaddress.ip_network("2001:db8:30::/48")), from_file=True)
LAB = SiteProfile(name="Lab", from_file=True)
ALL = (PARIS, LYON, LAB)


def test_the_profile_holding_one_of_the_laptops_addresses_is_chosen() -> None:
    assert select_site_profile(ALL, ["192.168.1.20", "10.30.4.5"]) is LYON
    assert select_site_profile(ALL, ["fe80::1%eth0", "2001:db8:30::42"]) is LYON
    assert select_site_profile(ALL, ["203.0.113.9"]) is PARIS  # a public egress address


def test_the_most_specific_matching_profile_wins_then_the_first() -> None:
    """As routing does: a branch numbered out of a datacentre's block is the branch, whichever comes first."""
    wide = SiteProfile(name="everything", networks=(ipaddress.ip_network("10.0.0.0/8"),), from_file=True)
    assert select_site_profile((wide, LYON), ["10.30.4.5"]) is LYON
    assert select_site_profile((LYON, wide), ["10.30.4.5"]) is LYON
    branch = SiteProfile(name="branch", networks=(ipaddress.ip_network("10.30.0.0/24"),), from_file=True)
    assert select_site_profile((LYON, branch), ["10.30.0.100"]) is branch
    assert select_site_profile((LYON, branch), ["10.30.1.100"]) is LYON
    twin = SiteProfile(name="twin", networks=LYON.networks, from_file=True)
    assert select_site_profile((twin, LYON), ["10.30.4.5"]) is twin
    assert select_site_profile((wide, LYON), ["10.40.0.1", "10.30.4.5"]) is wide  # the first address held decides


def test_without_a_network_match_the_site_tag_names_the_profile() -> None:
    assert select_site_profile(ALL, ["192.168.1.20"], site_tag="lab") is LAB
    assert select_site_profile(ALL, [], site_tag=" Paris HQ ") is PARIS
    assert select_site_profile(ALL, ["10.20.1.1"], site_tag="lab") is PARIS  # networks first
    assert select_site_profile(ALL, ["192.168.1.20"], site_tag="berlin") is None
    assert select_site_profile(ALL, ["192.168.1.20"]) is None
    assert select_site_profile(ALL, ["not an address"], site_tag="") is None
    assert select_site_profile((), ["10.20.1.1"], site_tag="lab") is None


def _iface(name: str, kind: str, *addresses: str) -> Interface:
    return Interface(name, kind, None, (), addresses, True)


def _stun(mapped: str | None) -> ProbeResult:
    return ProbeResult(ProbeKind.STUN, Target("relay.example", 3478), Outcome.OK, detail={"mapped_address": mapped})


def test_a_check_chooses_by_interface_address_then_stun_public_address_then_tag() -> None:
    options = CheckOptions(site_profiles=ALL, site_tag="lab")
    home = [_iface("lo", "loopback", "127.0.0.1/8"), _iface("eth0", "physical", "192.168.1.20/24")]
    assert choose_site_profile(options, [*home, _iface("eth1", "physical", "10.20.3.4/16")], []) is PARIS
    assert choose_site_profile(options, home, [_stun("203.0.113.5")]) is PARIS
    assert choose_site_profile(options, home, [_stun(None)]) is LAB
    assert choose_site_profile(CheckOptions(site_profiles=ALL), home, []) is None
    loop = SiteProfile(name="loop", networks=(ipaddress.ip_network("127.0.0.0/8"),), from_file=True)
    assert choose_site_profile(CheckOptions(site_profiles=(loop,)), home, []) is None  # loopback never counts


def test_a_branch_whose_internet_goes_out_through_the_datacentre_is_chosen_by_its_own_address() -> None:
    """The public address the relay saw is the datacentre's; the laptop's own address is the branch's."""
    dc = SiteProfile(name="Dublin DC", networks=(ipaddress.ip_network("203.0.113.0/28"),), from_file=True)
    branch = SiteProfile(name="Lyon branch", networks=(ipaddress.ip_network("10.50.0.0/16"),),
                         internet_via="Dublin DC", from_file=True)
    at_branch = [_iface("eth0", "physical", "10.50.1.20/16")]
    assert choose_site_profile(CheckOptions(site_profiles=(dc, branch)), at_branch, [_stun("203.0.113.5")]) is branch


class _Laptop:
    """Just what ``perform_check`` asks of the platform before the outage prediction."""

    def proxy_settings(self) -> ProxySettings:
        return ProxySettings(source="test")

    def interfaces(self) -> tuple[Interface, ...]:
        return (_iface("eth0", "physical", "10.30.7.7/16"),)

    def onedrive_urls(self) -> tuple[str, ...]:
        return ()


@pytest.fixture
def outage_profiles(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[SiteProfile]:
    """perform_check with no probes run; records the profile the outage prediction is given."""
    seen: list[SiteProfile] = []

    async def no_probes(*args: Any, **kwargs: Any) -> list[ProbeResult]:
        return []

    def predict(results: Any, catalog: Any, tenant: Any, plat: Any, found: Any, profile: SiteProfile,
                sites: tuple[SiteProfile, ...], *rest: Any) -> Any:
        seen.append(profile)
        seen.extend(sites)
        return None, ()

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(check_module, "routable_families", lambda addresses: (("ipv4",), ""))
    monkeypatch.setattr(check_module, "current_platform", _Laptop)
    monkeypatch.setattr(check_module, "run_plan", no_probes)
    monkeypatch.setattr(check_module, "_predict_outage", predict)
    return seen


def test_perform_check_predicts_with_the_chosen_profile_and_a_file_still_wins(
        outage_profiles: list[SiteProfile], tmp_path: Path) -> None:
    perform_check(CheckOptions(site_profiles=ALL, site_tag="lab", deadline_s=5))
    settings, *sites = outage_profiles
    assert tuple(sites) == ALL  # several profiles: every one is a site the prediction can take down
    assert settings.name == LYON.name  # the laptop's own settings: from the profile its address picks
    assert set(settings.networks) == {n for p in ALL for n in p.networks}
    outage_profiles.clear()
    perform_check(CheckOptions(site_profiles=(PARIS,), site_tag="berlin", deadline_s=5))
    assert outage_profiles == [PARIS]  # one profile: it is the site, as a --site-profile file is
    path = tmp_path / "site.toml"
    path.write_text(_toml({"name": "from the file"}), encoding="utf-8")
    perform_check(CheckOptions(site_profile=path, site_profiles=ALL, site_tag="lab", deadline_s=5))
    assert outage_profiles[-1].name == "from the file"


class _SlowLaptop(_Laptop):
    """Its OS reads wait on a tool (as gsettings, ip, PowerShell do); its interfaces fail when ``fails``."""

    def __init__(self, fails: bool = False) -> None:
        self.fails = fails
        self.threads: list[str] = []
        self.interfaces_read = threading.Event()

    def proxy_settings(self) -> ProxySettings:
        self.threads.append(threading.current_thread().name)
        return super().proxy_settings()

    def interfaces(self) -> tuple[Interface, ...]:
        self.threads.append(threading.current_thread().name)
        time.sleep(0.05)
        self.interfaces_read.set()
        if self.fails:
            raise RuntimeError("the interfaces tool broke")
        return super().interfaces()


def test_perform_check_reads_the_os_in_threads_while_it_waits_and_hands_back_their_errors(
        outage_profiles: list[SiteProfile], monkeypatch: pytest.MonkeyPatch) -> None:
    laptop = _SlowLaptop()
    monkeypatch.setattr(check_module, "current_platform", lambda: laptop)
    seen_while_probing: list[bool] = []

    async def probes_that_wait(*args: Any, **kwargs: Any) -> list[ProbeResult]:
        # the probes wait on the network: the interfaces are read meanwhile, not after them
        seen_while_probing.append(await asyncio.to_thread(laptop.interfaces_read.wait, 10))
        return []

    monkeypatch.setattr(check_module, "run_plan", probes_that_wait)
    perform_check(CheckOptions(site_profiles=ALL, site_tag="lab", deadline_s=5))
    assert seen_while_probing == [True]
    assert laptop.threads == ["netcheck-proxy-settings", "netcheck-interfaces"]
    assert outage_profiles[0].name == LYON.name  # the interfaces read in the thread chose the profile
    broken = _SlowLaptop(fails=True)
    monkeypatch.setattr(check_module, "current_platform", lambda: broken)
    with pytest.raises(RuntimeError, match="the interfaces tool broke"):
        perform_check(CheckOptions(site_profiles=(PARIS,), deadline_s=5))


def test_vpn_failover_may_name_a_site_or_a_gateway_another_site_lists(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    path.write_text('[[site]]\nname = "Paris"\nvpn_gateways = ["vpn.corp.example"]\n'
                    'vpn_failover = ["vpn2.corp.example:443"]\n\n'
                    '[[site]]\nname = "Dublin DC"\nvpn_gateways = ["vpn2.corp.example"]\n')
    paris, dublin = load_site_profiles(path)
    assert paris.vpn_failover == ("Dublin DC",)
    path.write_text('[[site]]\nname = "Paris"\nvpn_failover = ["vpn9.corp.example"]\n\n[[site]]\nname = "Dublin"\n')
    with pytest.raises(ConfigError, match="neither a site profile's name nor a VPN gateway"):
        load_site_profiles(path)


def test_a_profile_names_an_ipv6_resolver_by_its_whole_address() -> None:
    site = SiteProfile(name="Paris", dns_servers=("2001:db8:c0ff::53", "10.20.0.53"), proxies=("[2001:db8::8]:3128",))
    assert site.names_host("2001:db8:c0ff::53") and site.names_host("2001:DB8:C0FF::53")
    assert not site.names_host("2001:db8:d0ff::53")  # another site's resolver in the same /32
    assert site.names_host("2001:db8::8") and site.names_host("10.20.0.53")
