"""Linux parsers on output captured from real iproute2 and resolver files."""

from __future__ import annotations

from pathlib import Path

import pytest
from plat_support import MISSING, TIMED_OUT, Replay, ok, read_fixture

from netcheck.platform import linux
from netcheck.platform.base import UNKNOWN, UNREACHABLE, InterfaceFacts, normalize_address

BATCH = [line.split()[-1] for line in read_fixture("linux/ip-j-batch-route-get.stdin").splitlines()]


def test_batch_answers_are_matched_by_destination_and_errors_by_line() -> None:
    got = linux.parse_route_get_batch(read_fixture("linux/ip-j-batch-route-get.stdout"),
                                      read_fixture("linux/ip-j-batch-route-get.stderr"), BATCH)
    assert set(got) == set(BATCH)
    plain = got["198.18.1.1"]
    assert (plain.interface, plain.source, plain.gateway, plain.table) == ("wg0", "10.66.0.2", None, None)
    policy = got["52.112.0.1"]
    assert (policy.interface, policy.table, policy.method) == ("wg0", "51820", "ip route get")
    v6 = got["2001:db8:5::1"]
    assert (v6.interface, v6.source, v6.table, v6.metric) == ("wg0", "2001:db8:66::2", "51820", 1024)
    via = got["192.0.2.200"]
    assert (via.interface, via.gateway, via.source) == ("up0", "192.0.2.1", "192.0.2.10")
    assert got["127.0.0.1"].interface == "lo"
    assert got["192.0.2.10"].table == "local"
    # blackhole, unreachable and prohibit routes fail with EINVAL, EHOSTUNREACH and EACCES
    for address, text in (("198.51.100.7", "blackhole"), ("203.0.113.5", "No route to host"),
                          ("203.0.113.200", "prohibit")):
        e = got[address]
        assert e.kind == UNREACHABLE and e.interface is None
        assert text in (e.error or "")
        assert not e.ok
    assert got["198.18.1.1"].kind == UNKNOWN  # the platform fills the kind in


def test_batch_line_with_no_answer_and_no_error() -> None:
    got = linux.parse_route_get_batch("", "", ["192.0.2.77"])
    assert got["192.0.2.77"].error == "ip route get gave no answer"


def test_batch_errors_parser_keeps_the_message_before_each_failure() -> None:
    errs = linux.parse_batch_errors("RTNETLINK answers: Network is unreachable\nCommand failed -:2\n"
                                    "Error: any valid prefix is expected rather than \"x\".\n"
                                    "Command failed -:3\nCommand failed -:9\n")
    assert errs == {2: "Network is unreachable", 3: 'any valid prefix is expected rather than "x".',
                    9: "ip reported an error"}


def test_single_json_answer_from_a_policy_routing_table() -> None:
    text = read_fixture("linux/ip-j-route-get-wg-table.json")
    (obj,) = list(linux.iter_json_values(text))[0]
    e = linux.egress_from_route_json(obj)
    assert (e.destination, e.interface, e.table, e.source) == ("52.112.0.1", "wg0", "51820", "10.66.0.2")


def test_json_stream_skips_garbage_lines() -> None:
    values = list(linux.iter_json_values('[1]\nnot json\n[2] \n{"a": 3}'))
    assert values == [[1], [2], {"a": 3}]
    assert list(linux.iter_json_values("garbage without newline")) == []


def test_route_types_in_json_are_unreachable() -> None:
    e = linux.egress_from_route_json({"type": "blackhole", "dst": "198.51.100.1", "metric": 5})
    assert e.kind == UNREACHABLE and e.metric == 5 and "blackhole" in (e.error or "")


@pytest.mark.parametrize(("name", "dst", "dev", "src", "gw", "table"), [
    ("linux/ip-route-get-wg-table.txt", "52.112.0.1", "wg0", "10.66.0.2", None, "51820"),
    ("linux/ip-route-get-via.txt", "192.0.2.200", "up0", "192.0.2.10", "192.0.2.1", None),
    ("linux/ip-route-get-v6.txt", "2001:db8:5::1", "wg0", "2001:db8:66::2", None, "51820"),
    ("linux/ip-route-get-local.txt", "127.0.0.1", "lo", "127.0.0.1", None, "local"),
])
def test_plain_text_route_get(name: str, dst: str, dev: str, src: str, gw: str | None, table: str | None) -> None:
    e = linux.parse_route_get_text(read_fixture(name), dst)
    assert (e.destination, e.interface, e.source, e.gateway, e.table) == (dst, dev, src, gw, table)


def test_plain_text_edge_cases() -> None:
    assert linux.parse_route_get_text("", "192.0.2.1").error == "ip route get gave no answer"
    e = linux.parse_route_get_text("unreachable 203.0.113.1 table main\n", "203.0.113.1")
    assert e.kind == UNREACHABLE
    e = linux.parse_route_get_text("2001:db8::1 via inet6 fe80::1 dev eth0 src 2001:db8::2 metric 7\n",
                                   "2001:db8::1")
    assert e.gateway is None and e.metric == 7 and e.interface == "eth0"


def test_ip_addr_json_gives_kinds_addresses_and_state() -> None:
    facts = {f.name: f for f in linux.parse_ip_addr_json(read_fixture("linux/ip-j-d-addr.json"))}
    assert {"lo", "up0", "up0p", "wg0", "br0"} <= set(facts)
    assert facts["lo"].loopback and facts["lo"].is_up and "127.0.0.1" in facts["lo"].addresses
    assert facts["up0"].link_kind == "veth" and facts["up0"].is_up
    assert "192.0.2.10" in facts["up0"].addresses and "2001:db8:1::10" in facts["up0"].addresses
    wg = facts["wg0"]
    assert wg.link_kind == "tun" and wg.point_to_point and not wg.is_up  # no process holds the tun
    assert wg.addresses == ("10.66.0.2", "2001:db8:66::2")
    assert facts["br0"].link_kind == "bridge"
    assert linux.parse_ip_addr_json("not json") == ()
    odd = linux.parse_ip_addr_json('[{"ifname": "x", "flags": ["UP", "LOWER_UP"], "operstate": "UNKNOWN"}, 3]')
    assert odd[0].is_up


def test_route_tables() -> None:
    v4 = linux.parse_ip_route_show_json(read_fixture("linux/ip-j-4-route-show-all.json"), 4)
    by = {(r.destination, r.table): r for r in v4}
    assert by[("0.0.0.0/0", "51820")].interface == "wg0"
    assert by[("0.0.0.0/0", None)].gateway == "192.0.2.1"
    assert by[("192.0.2.200/32", None)].gateway == "192.0.2.1"
    assert by[("198.51.100.0/24", None)].type == "blackhole"
    v6 = linux.parse_ip_route_show_json(read_fixture("linux/ip-j-6-route-show-all.json"), 6)
    assert any(r.destination == "::/0" and r.gateway == "2001:db8:1::1" and r.metric == 1024 for r in v6)
    assert linux.parse_ip_route_show_json("oops", 4) == ()
    assert linux.parse_ip_route_show_json('[{"dst": "weird"}, {"no": 1}]', 4)[0].destination == "weird"


def test_resolv_conf() -> None:
    servers, search = linux.parse_resolv_conf(read_fixture("linux/resolv.conf-stub"))
    assert servers == ("127.0.0.53",) and search == ("corp.example", "home.example")
    servers, search = linux.parse_resolv_conf(read_fixture("linux/resolv.conf-plain"))
    assert servers == ("192.0.2.53", "fe80::1") and search == ("corp.example", "lab.example")


def test_resolvectl() -> None:
    dns = linux.parse_resolvectl(read_fixture("linux/resolvectl-dns.txt"))
    assert dns == {"Global": (), "enp0s31f6": ("192.168.1.1", "fe80::1"), "wlp2s0": (),
                   "wg0": ("10.64.0.1", "10.64.0.2")}
    dom = linux.parse_resolvectl(read_fixture("linux/resolvectl-domain.txt"))
    assert dom["wg0"] == ("corp.example",)


def test_sysfs_facts(tmp_path: Path) -> None:
    (tmp_path / "wg0").mkdir()
    (tmp_path / "wg0" / "tun_flags").write_text("0x1001\n")
    (tmp_path / "wlan0" / "device").mkdir(parents=True)
    (tmp_path / "wlan0" / "wireless").mkdir()
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "tun_flags").write_text("zz\n")
    wg = linux.read_sysfs(InterfaceFacts("wg0"), tmp_path)
    assert wg.tun_flags == 0x1001 and wg.has_device is False and wg.wireless is False
    wl = linux.read_sysfs(InterfaceFacts("wlan0"), tmp_path)
    assert wl.has_device and wl.wireless and wl.tun_flags is None
    assert linux.read_sysfs(InterfaceFacts("odd"), tmp_path).tun_flags is None
    assert linux.read_sysfs(InterfaceFacts("gone"), tmp_path) == InterfaceFacts("gone")


# --- the thin layer, driven by replayed captures -------------------------------------------

def _linux(tmp_path: Path, answers: dict[tuple[str, ...], object], resolv: str = "linux/resolv.conf-plain",
           overrides: dict[str, str] | None = None) -> tuple[linux.LinuxPlatform, Replay]:
    conf = tmp_path / "resolv.conf"
    conf.write_text(read_fixture(resolv))
    replay = Replay(answers)  # type: ignore[arg-type]
    return linux.LinuxPlatform(run=replay, overrides=overrides, environ={}, sysfs=tmp_path / "sys",
                               resolv_conf=conf), replay


def test_linux_platform_batches_every_address_in_one_ip_process(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys" / "wg0"
    sysfs.mkdir(parents=True)
    (sysfs / "tun_flags").write_text("0x1001\n")
    plat, replay = _linux(tmp_path, {
        ("ip", "-j", "-force", "-batch", "-"): ok(read_fixture("linux/ip-j-batch-route-get.stdout"),
                                                  read_fixture("linux/ip-j-batch-route-get.stderr"), 1),
        ("ip", "-j", "-d", "addr", "show"): ok(read_fixture("linux/ip-j-d-addr.json")),
    }, overrides={"up0": "physical"})
    got = plat.egress_many([*BATCH, "192.0.2.200", "not-an-ip", "2001:DB8:5:0::1"])
    assert sum(1 for c in replay.calls if c[:2] == ("ip", "-j") and "-batch" in c) == 1
    assert got["52.112.0.1"].kind == "vpn" and got["192.0.2.200"].kind == "physical"
    assert got["127.0.0.1"].kind == "loopback"
    assert got["2001:DB8:5:0::1"].interface == "wg0"
    assert got["not-an-ip"].error and got["not-an-ip"].kind == UNKNOWN
    assert got["203.0.113.5"].kind == UNREACHABLE
    wg = {i.name: i for i in plat.interfaces()}["wg0"]
    assert wg.kind == "vpn" and wg.vpn_product == "WireGuard"
    assert any("tun_flags exists" in e for e in wg.evidence)
    assert plat.egress_many(["nope"])["nope"].error


def test_linux_platform_egress_uses_the_interfaces_it_is_given_without_reading_them_again(tmp_path: Path) -> None:
    plat, replay = _linux(tmp_path, {
        ("ip", "-j", "-force", "-batch", "-"): ok(read_fixture("linux/ip-j-batch-route-get.stdout"),
                                                  read_fixture("linux/ip-j-batch-route-get.stderr"), 1),
        ("ip", "-j", "-d", "addr", "show"): ok(read_fixture("linux/ip-j-d-addr.json")),
    }, overrides={"up0": "physical"})
    found = plat.interfaces()  # a check reads them once
    reads = sum(1 for c in replay.calls if "addr" in c)
    got = plat.egress_many([*BATCH, "192.0.2.200"], found)
    assert sum(1 for c in replay.calls if "addr" in c) == reads == 1
    assert got["52.112.0.1"].kind == "vpn" and got["192.0.2.200"].kind == "physical"
    # interfaces the caller says it has are the ones used, as given
    assert plat.egress_many(["192.0.2.200"], ())["192.0.2.200"].kind == UNKNOWN


def test_linux_platform_without_ip_falls_back_to_udp_connect(tmp_path: Path) -> None:
    plat, _ = _linux(tmp_path, {})
    e = plat.egress_for("127.0.0.1")
    assert e.method == "udp-connect" and e.source == "127.0.0.1" and e.kind == "loopback"


def test_linux_platform_without_json_uses_plain_ip_route_get(tmp_path: Path) -> None:
    plat, _ = _linux(tmp_path, {
        ("ip", "-j", "-force", "-batch", "-"): ok("", 'Option "-j" is unknown, try "ip -help".\n', 255),
        ("ip", "route", "get", "52.112.0.1"): ok(read_fixture("linux/ip-route-get-wg-table.txt")),
        ("ip", "route", "get", "203.0.113.5"): ok("", "RTNETLINK answers: No route to host\n", 2),
    })
    got = plat.egress_many(["52.112.0.1", "203.0.113.5"])
    assert got["52.112.0.1"].table == "51820" and got["52.112.0.1"].interface == "wg0"
    assert got["203.0.113.5"].kind == UNREACHABLE


def test_linux_platform_timeout_is_an_egress_error(tmp_path: Path) -> None:
    plat, _ = _linux(tmp_path, {("ip", "-j", "-force"): TIMED_OUT, ("ip", "-j", "-d"): MISSING})
    e = plat.egress_for("192.0.2.1")
    assert e.kind == UNKNOWN and e.error == "ip route get timed out"


def test_linux_routes_dns_and_search(tmp_path: Path) -> None:
    plat, _ = _linux(tmp_path, {
        ("ip", "-j", "-4", "route"): ok(read_fixture("linux/ip-j-4-route-show-all.json")),
        ("ip", "-j", "-6", "route"): ok(read_fixture("linux/ip-j-6-route-show-all.json")),
    })
    routes = plat.routes()
    assert any(r.destination == "::/0" for r in routes) and any(r.destination == "0.0.0.0/0" for r in routes)
    assert plat.dns_servers() == ("192.0.2.53", "fe80::1")
    assert plat.search_domains() == ("corp.example", "lab.example")


def test_linux_stub_resolver_asks_resolvectl(tmp_path: Path) -> None:
    plat, _ = _linux(tmp_path, {
        ("resolvectl", "dns"): ok(read_fixture("linux/resolvectl-dns.txt")),
        ("resolvectl", "domain"): ok(read_fixture("linux/resolvectl-domain.txt")),
    }, resolv="linux/resolv.conf-stub")
    assert plat.dns_servers() == ("192.168.1.1", "fe80::1", "10.64.0.1", "10.64.0.2")
    assert plat.search_domains() == ("home.example", "corp.example")
    plat, _ = _linux(tmp_path, {}, resolv="linux/resolv.conf-stub")
    assert plat.dns_servers() == ("127.0.0.53",)
    plat._resolv_conf = tmp_path / "missing"
    assert plat.dns_servers() == ()


def test_normalize_address() -> None:
    assert normalize_address(" [2001:DB8::0001] ") == "2001:db8::1"
    assert normalize_address("fe80::1%eth0") == "fe80::1"
    with pytest.raises(ValueError):
        normalize_address("outlook.office.com")
