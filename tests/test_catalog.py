"""The endpoint-data loader (netcheck/m365/catalog.py) on Microsoft's real data and on
malformed files.

Malformed inputs are tests/testdata/catalog/invalid-*.json, each paired below
with the exact message it must produce (naming the file, and the endpoint set
where there is one).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from netcheck.errors import CatalogError
from netcheck.m365.catalog import (
    INSTANCES,
    PortRange,
    bundled_path,
    canonical_instance,
    data_dir,
    load_catalog,
    load_versions,
    parse_ports,
    read_endpoint_file,
    sets_to_json,
)
from netcheck.models import Category

TESTDATA = Path(__file__).parent / "testdata" / "catalog"
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "endpoints-reference"

# --- Microsoft's real data, all four instances ------------------------------------

# instance: (sets, Optimize ids, Allow, Default, highest id, IPv4 entries, IPv6 entries, URL entries)
# Counts from shared/endpoints-reference/SOURCES.md, re-counted from the raw JSON below.
REAL = {
    "Worldwide": (63, (1, 11, 31), 7, 53, 193, 51, 78, 199),
    "China": (23, (1, 3), 10, 11, 28, 78, 23, 49),
    "USGovDoD": (24, (1, 7, 9), 6, 15, 31, 26, 13, 84),
    "USGovGCCHigh": (26, (1, 7, 9), 7, 16, 32, 28, 16, 84),
}


@pytest.mark.parametrize("instance", INSTANCES)
def test_every_real_instance_loads(instance: str) -> None:
    n_sets, optimize, n_allow, n_default, top, n_v4, n_v6, n_urls = REAL[instance]
    catalog = load_catalog(instance)
    raw = json.loads(bundled_path(instance).read_text(encoding="utf-8"))
    assert catalog.instance == instance and catalog.source == "bundled"
    assert catalog.version == load_versions(data_dir())[instance]
    assert len(catalog.sets) == len(raw) == n_sets
    assert [s.id for s in catalog.sets] == [r["id"] for r in raw]  # published order kept
    assert tuple(s.id for s in catalog.sets if s.category is Category.OPTIMIZE) == optimize
    assert sum(s.category is Category.ALLOW for s in catalog.sets) == n_allow
    assert sum(s.category is Category.DEFAULT for s in catalog.sets) == n_default
    assert max(s.id for s in catalog.sets) == top
    ips = [n for s in catalog.sets for n in s.ips]
    assert sum(n.version == 4 for n in ips) == n_v4
    assert sum(n.version == 6 for n in ips) == n_v6
    assert sum(len(s.urls) for s in catalog.sets) == n_urls
    for s, r in zip(catalog.sets, raw, strict=True):  # nothing lost or invented per set
        assert s.urls == tuple(u.lower() for u in r.get("urls", ()))
        assert [str(n) for n in s.ips] == [str(ipaddress.ip_network(i)) for i in r.get("ips", ())]
        assert s.required is r["required"] and s.express_route is r["expressRoute"]
        assert s.service_area == r["serviceArea"] and str(s.category) == r["category"]
        assert s.notes == r.get("notes", "")
        assert s.tcp_ports or s.udp_ports


@pytest.mark.parametrize("instance", INSTANCES)
def test_the_bundled_data_is_the_reference_copy(instance: str) -> None:
    reference = REFERENCE / f"{instance.lower()}.json"
    if not reference.exists():
        pytest.skip("shared/endpoints-reference is not beside this checkout")
    assert bundled_path(instance).read_bytes() == reference.read_bytes()


def test_real_quirks_are_normalised() -> None:
    worldwide = load_catalog("Worldwide")
    # "143, 587, 993, 995": spaces after commas
    assert worldwide.set_by_id(2).tcp_ports == tuple(PortRange(p, p) for p in (143, 587, 993, 995))
    # "443,80": not sorted
    assert worldwide.set_by_id(47).tcp_ports == (PortRange(80, 80), PortRange(443, 443))
    # set 11 has no "urls" key at all; IPv4 and IPv6 prefixes
    teams_media = worldwide.set_by_id(11)
    assert teams_media.urls == () and teams_media.tcp_ports == ()
    assert [str(n) for n in teams_media.ips] == ["52.112.0.0/14", "52.122.0.0/15", "2603:1063::/38"]
    assert teams_media.udp_ports == tuple(PortRange(p, p) for p in (3478, 3479, 3480, 3481))
    # set 193: "notes" present but empty
    assert worldwide.set_by_id(193).notes == ""
    # wildcards are kept as published
    assert worldwide.set_by_id(31).urls == ("*.sharepoint.com",)
    china = load_catalog("china")
    assert china.set_by_id(3).udp_ports == tuple(PortRange(p, p) for p in (3478, 3479, 3480, 3481))
    assert china.set_by_id(27).notes == "" and china.set_by_id(28).notes == ""
    assert load_catalog("USGovGCCHigh").set_by_id(31).tcp_ports == (PortRange(80, 80),
                                                                    PortRange(443, 443))


def test_the_tolerated_quirks_file() -> None:
    sets = read_endpoint_file(TESTDATA / "valid-quirks.json")  # CRLF, string booleans, extra keys
    imap, media, unified = sets
    assert imap.urls == ("outlook.office365.com", "smtp.office365.com")  # lower-cased, trimmed
    assert imap.required is True and imap.express_route is False  # "True" / "false" strings
    assert imap.tcp_ports == tuple(PortRange(p, p) for p in (143, 587, 993, 995))
    assert imap.udp_ports == (PortRange(443, 443),)  # "443,443": deduplicated
    assert imap.notes == "trimmed"
    assert imap.display_name == "Exchange Online"
    assert media.udp_ports == (PortRange(3478, 3481),) and 3480 in media.udp_ports[0]
    assert str(media.ips[2]) == "10.0.0.0/8"  # host bits are dropped (strict=False)
    assert unified.display_name == "Common"  # falls back to serviceArea
    assert unified.required is False and unified.notes == ""
    assert sets_to_json(sets)[0]["tcpPorts"] == "143,587,993,995"


def test_parse_ports() -> None:
    assert parse_ports("443,80", "x") == (PortRange(80, 80), PortRange(443, 443))
    assert parse_ports(" 3478 - 3481 ,", "x") == (PortRange(3478, 3481),)
    assert parse_ports("", "x") == ()
    with pytest.raises(CatalogError, match=r"^here: bad port 'http'$"):
        parse_ports("443,http", "here")


def test_instance_names() -> None:
    assert canonical_instance("usgovgcchigh") == "USGovGCCHigh"
    with pytest.raises(CatalogError, match="unknown instance 'Germany'; choose one of Worldwide, China"):
        canonical_instance("Germany")


def test_a_missing_file_is_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"
    with pytest.raises(CatalogError) as err:
        read_endpoint_file(path)
    assert str(err.value) == f"{path}: cannot read the endpoint file (No such file or directory)"


# --- malformed data: one file each, with its exact message --------------------------

INVALID = {
    "invalid-not-json.json": "the endpoint file is not valid JSON (line 11: Unterminated string starting at)",
    "invalid-object-not-array.json": "expected a JSON array of endpoint sets",
    "invalid-empty-array.json": "holds no endpoint sets",
    "invalid-entry-not-object.json": "every entry must be an object",
    "invalid-id-missing.json": "an endpoint set has a missing or bad 'id' (None)",
    "invalid-id-string.json": "an endpoint set has a missing or bad 'id' ('31')",
    "invalid-id-boolean.json": "an endpoint set has a missing or bad 'id' (True)",
    "invalid-id-negative.json": "an endpoint set has a missing or bad 'id' (-4)",
    "invalid-service-area-missing.json": "endpoint set 31: 'serviceArea' is missing",
    "invalid-category-misspelt.json": "endpoint set 31: unknown category 'Optimise'",
    "invalid-category-missing.json": "endpoint set 1: unknown category None",
    "invalid-ipv4-bad.json": "endpoint set 1: bad IP prefix '13.107.6.300/31'",
    "invalid-ipv6-bad-length.json": "endpoint set 1: bad IP prefix '2603:1006::/140'",
    "invalid-ips-not-list.json": "endpoint set 31: 'ips' must be a list of non-empty strings",
    "invalid-url-empty.json": "endpoint set 31: 'urls' must be a list of non-empty strings",
    "invalid-url-blank.json": "endpoint set 31: 'urls' must be a list of non-empty strings",
    "invalid-tcp-ports-number.json": "endpoint set 1: 'tcpPorts' must be a string like \"80,443\"",
    "invalid-port-separator.json": "endpoint set 31: bad port '80;443'",
    "invalid-port-zero.json": "endpoint set 1: port '0' is out of range",
    "invalid-port-too-high.json": "endpoint set 1: port '65536' is out of range",
    "invalid-port-range-reversed.json": "endpoint set 1: port '3481-3478' is out of range",
    "invalid-required-yes.json": "endpoint set 31: 'required' must be true or false",
    "invalid-express-route-number.json": "endpoint set 1: 'expressRoute' must be true or false",
    "invalid-notes-null.json": "endpoint set 31: 'notes' must be a string",
    "invalid-no-urls-no-ips.json": "endpoint set 31: has neither 'urls' nor 'ips'",
    "invalid-no-ports.json": "endpoint set 31: has neither 'tcpPorts' nor 'udpPorts'",
    "invalid-duplicate-id.json": "endpoint set 31 appears twice",
    # PowerShell 5's Out-File writes UTF-16 with a byte-order mark.
    "invalid-utf16.json": "the endpoint file is not UTF-8 text (bad byte at offset 0); save it as UTF-8",
}


def test_every_invalid_file_has_an_expected_message() -> None:
    assert sorted(p.name for p in TESTDATA.glob("invalid-*.json")) == sorted(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_file_gives_its_exact_message(name: str) -> None:
    path = TESTDATA / name
    with pytest.raises(CatalogError) as err:
        read_endpoint_file(path)
    assert str(err.value) == f"{path}: {INVALID[name]}"


@pytest.mark.parametrize("name", ["invalid-ipv4-bad.json", "invalid-duplicate-id.json"])
def test_load_catalog_reports_the_file_it_was_given(name: str) -> None:
    path = TESTDATA / name
    with pytest.raises(CatalogError, match=f"^{path}: "):
        load_catalog("Worldwide", path=path)


def test_in_networks_is_the_one_membership_test() -> None:
    from netcheck.m365.catalog import in_networks

    nets = (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("2001:db8:c0ff::/48"))
    assert in_networks("10.20.3.4", nets) and in_networks("2001:db8:c0ff::5%eth0", nets)
    assert not in_networks("10.21.0.1", nets) and not in_networks("::ffff:10.20.0.1", nets)
    assert not in_networks("not an address", nets) and not in_networks("10.20.0.1", ())


def test_each_workload_stands_for_its_other_categories_by_one_probed_host() -> None:
    catalog = load_catalog("Worldwide")
    plan = catalog.plan("contoso")
    category = {t.host: t.category for t in plan.hosts}
    keys, others = catalog.key_hosts("contoso"), catalog.category_hosts("contoso")
    assert set(others) <= set(keys)
    for wid, hosts in others.items():
        cats = [category[h] for h in hosts]
        assert len(set(cats)) == len(cats) and not set(cats) & {category[h] for h in keys[wid]}, wid
        assert all(wid in next(t.workloads for t in plan.hosts if t.host == h) for h in hosts)
    # Exchange's key host is Optimize; its Default host (autodiscover) needs the tenant's name
    assert category[others["exchange"][0]] is Category.DEFAULT
    assert "sharepoint" not in catalog.category_hosts(None)  # no key host without a tenant: nothing to stand by


def test_the_lab_truth_samples_the_same_hosts_as_the_outage_model() -> None:
    """The lab reads the data files itself (it never imports netcheck): both must pick the same hosts."""
    import tomllib

    from tests.lab.catalog import LabCatalog

    catalog = load_catalog("Worldwide")
    lab = LabCatalog.from_file(bundled_path("Worldwide"), "contoso")
    truth = lab.workload_hosts(tomllib.loads((data_dir() / "workloads.toml").read_text()))
    keys, others = catalog.key_hosts("contoso"), catalog.category_hosts("contoso")
    assert {w: (h.key, h.other) for w, h in truth.items()} == {w: (keys[w], others.get(w, ())) for w in keys}
