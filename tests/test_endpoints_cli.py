"""`netcheck endpoints update|show|diff` through click's test runner, and the pure
diff logic behind `diff`.

HOME and the XDG directories point into tmp_path, so the cache, the config and
the ClientRequestId are the test's own. `update` talks to the local web-service
double (tests/webservice_double.py), never to Microsoft.
"""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from netcheck.cli import cli, main
from netcheck.m365.catalog import data_dir, load_versions, read_endpoint_file
from netcheck.m365.diff import ChangeKind, compress_ports, diff_sets
from netcheck.models import Category
from tests.webservice_double import WebServiceDouble

BUNDLED = load_versions(data_dir())["Worldwide"]
NEW = "2026090100"
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "endpoints-reference"
WORLDWIDE = data_dir() / "worldwide.json"
_REAL: list[dict[str, Any]] = json.loads(WORLDWIDE.read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                "all_proxy", "no_proxy", "NETCHECK_ENDPOINTS_URL", "SSL_CERT_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


@pytest.fixture
def ws() -> Iterator[WebServiceDouble]:
    with WebServiceDouble() as double:
        yield double


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["endpoints", *args], catch_exceptions=False)


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Through netcheck.cli.main, as the console script runs (usage errors exit 4)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["endpoints", *args])
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


def dataset(changes: dict[int, dict[str, Any]] | None = None, drop: tuple[int, ...] = (),
            add: tuple[dict[str, Any], ...] = ()) -> list[dict[str, Any]]:
    """The real Worldwide data with some sets changed, dropped or added."""
    out = []
    for s in copy.deepcopy(_REAL):
        if s["id"] in drop:
            continue
        out.append({**s, **(changes or {}).get(s["id"], {})})
    return out + list(add)


def write(path: Path, data: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


# --- update ------------------------------------------------------------------------

def test_update_downloads_a_new_version_then_show_uses_it(ws: WebServiceDouble, env: Path) -> None:
    served = json.dumps(dataset(add=({**_REAL[0], "id": 999, "urls": ["new.example.test"]},))).encode()
    ws.publish("Worldwide", NEW, served)
    result = run("update", "--base-url", ws.url)
    assert result.exit_code == 0, result.output
    cached = env / "cache" / "netcheck" / "endpoints" / "worldwide.json"
    assert result.stdout == (
        f"Updated the Worldwide endpoint data to version {NEW} (was {BUNDLED}, bundled snapshot); "
        f"saved in {cached}.\n")
    assert cached.read_bytes() == served
    assert ws.paths() == ["/version/Worldwide", "/endpoints/Worldwide"]
    guid = (env / "config" / "netcheck" / "client-request-id").read_text().strip()
    assert {r.guid for r in ws.requests} == {guid}
    assert all(r.headers["user-agent"].startswith("netcheck/") for r in ws.requests)

    show = run("show", "--category", "Optimize")
    assert show.exit_code == 0
    assert show.stdout.splitlines()[0] == (
        f"Worldwide endpoint data, version {NEW} (cached update): 4 of 64 endpoint sets")
    assert "new.example.test" in show.stdout


def test_update_checks_at_most_once_an_hour(ws: WebServiceDouble) -> None:
    ws.publish("Worldwide", BUNDLED, b"[]")
    first = run("update", "--base-url", ws.url)
    assert first.exit_code == 0
    assert first.stdout == (f"The Worldwide endpoint data is up to date; using the bundled snapshot, "
                            f"version {BUNDLED} (no cached data yet).\n")
    second = run("update", "--base-url", ws.url)
    assert second.exit_code == 0
    assert second.stdout.startswith("Checked the endpoint web service less than a minute ago (at most "
                                    "once an hour; --force checks now)")
    assert len(ws.requests) == 1
    assert run("update", "--base-url", ws.url, "--force").exit_code == 0
    assert len(ws.requests) == 2


def test_update_takes_the_url_from_the_environment(ws: WebServiceDouble,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ws.publish("China", load_versions(data_dir())["China"], b"[]")
    monkeypatch.setenv("NETCHECK_ENDPOINTS_URL", ws.url)
    result = run("update", "--instance", "china")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("The China endpoint data is up to date")
    assert ws.paths() == ["/version/China"]


def test_update_offline_says_which_data_it_uses() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    result = run("update", "--base-url", url)
    assert result.exit_code == 0  # the bundled data is usable
    assert result.stdout == (
        "Could not reach the endpoint web service (connection refused); using the bundled snapshot, "
        f"version {BUNDLED} (no cached data yet).\n")


def test_update_429_exits_0_and_says_so(ws: WebServiceDouble) -> None:
    ws.publish("Worldwide", NEW, b"[]")
    ws.endpoints_status = 429
    result = run("update", "--base-url", ws.url)
    assert result.exit_code == 0
    assert "asked netcheck to slow down (HTTP 429); not asking again before" in result.stdout
    assert run("update", "--base-url", ws.url, "--force").exit_code == 0
    assert len(ws.requests) == 2


def test_update_with_a_bad_url_is_a_usage_error() -> None:
    result = run("update", "--base-url", "ftp://mirror.example.test")
    assert result.exit_code == 4
    assert result.stderr == ("Error: the endpoint web service URL 'ftp://mirror.example.test' must "
                             "start with https:// (or http://) and name a host\n")


def test_update_with_an_unknown_instance_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main(capsys, "update", "--instance", "Germany")
    assert code == 4
    assert "Invalid value for '--instance': 'Germany' is not one of" in err


# --- show ----------------------------------------------------------------------------

def _table_ids(output: str) -> list[int]:
    return [int(line.split()[0]) for line in output.splitlines()[3:]
            if line.strip() and line.split()[0].isdigit()]


def test_show_optimize() -> None:
    result = run("show", "--category", "Optimize")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"Worldwide endpoint data, version {BUNDLED} (bundled snapshot): 3 of 63 endpoint sets"
    assert lines[2].split() == ["ID", "Workloads", "Category", "Required", "URLs", "IPs", "Ports"]
    assert _table_ids(result.stdout) == [1, 11, 31]
    assert "outlook.office365.com" in result.stdout and "*.sharepoint.com" in result.stdout
    assert "UDP 3478,3479,3480,3481" in result.stdout
    assert "teams, teams_media" in result.stdout
    assert not any(line != line.rstrip() for line in lines)


def test_show_fills_tenant_wildcards() -> None:
    result = run("show", "--category", "optimize", "--workload", "sharepoint", "--tenant", "Contoso")
    assert result.exit_code == 0
    assert _table_ids(result.stdout) == [31]
    assert "contoso.sharepoint.com" in result.stdout and "contoso-my.sharepoint.com" in result.stdout
    assert "*.sharepoint.com" not in result.stdout


def test_show_filters_combine_and_take_comma_lists() -> None:
    result = run("show", "--category", "Optimize,Allow", "--workload", "teams", "--json")
    doc = json.loads(result.stdout)
    assert [s["id"] for s in doc["sets"]] == [11, 12]
    assert all("teams" in s["workloads"] for s in doc["sets"])
    repeated = json.loads(run("show", "--category", "Optimize", "--category", "Allow",
                              "--workload", "teams", "--json").stdout)
    assert repeated == doc


def test_show_json() -> None:
    result = run("show", "--json", "--workload", "identity", "--tenant", "contoso")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert (doc["instance"], doc["version"], doc["source"], doc["tenant"]) == (
        "Worldwide", BUNDLED, "bundled", "contoso")
    assert [s["id"] for s in doc["sets"]] == [56, 59]
    first = doc["sets"][0]
    assert first["category"] == "Allow" and first["tcpPorts"] == "80,443"
    assert first["workloads"] == ["identity"]
    assert "login.microsoftonline.com" in first["urls"]


def test_show_another_instance() -> None:
    doc = json.loads(run("show", "--instance", "usgovdod", "--category", "Optimize", "--json").stdout)
    assert doc["instance"] == "USGovDoD"
    assert [s["id"] for s in doc["sets"]] == [1, 7, 9]


def test_show_with_nothing_matching() -> None:
    result = run("show", "--instance", "China", "--category", "Optimize", "--workload", "identity")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[1] == "No endpoint set matches the filters."


def test_show_warns_about_a_corrupt_cache_and_uses_the_bundled_data(env: Path) -> None:
    cache = env / "cache" / "netcheck" / "endpoints"
    cache.mkdir(parents=True)
    (cache / "worldwide.json").write_text("[{")
    (cache / "worldwide.meta.json").write_text(json.dumps({"version": NEW}))
    result = run("show", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["source"] == "bundled"  # stdout stays pure JSON
    assert result.stderr.startswith("Warning: the cached Worldwide endpoint data is unusable (")


@pytest.mark.parametrize(("args", "message"), [
    (("--category", "Optimise"), "Invalid value for --category: 'Optimise' is not one of Optimize, "
                                 "Allow, Default"),
    (("--workload", "email"), "Invalid value for --workload: 'email' is not one of exchange, "
                              "sharepoint, teams, teams_media, identity, office"),
    (("--tenant", "contoso.onmicrosoft.com"), "Invalid value for --tenant: 'contoso.onmicrosoft.com' "
                                              "is not a tenant name"),
    (("--instance", "Germany"), "Invalid value for '--instance'"),
])
def test_show_usage_errors_exit_4(capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                                  message: str) -> None:
    code, err = run_main(capsys, "show", *args)
    assert code == 4
    assert message in err
    assert "Traceback" not in err


# --- diff: the real change between two published versions ----------------------------------

def test_diff_of_two_real_versions() -> None:
    # Microsoft's Worldwide data of 2026-07-31 (see shared/endpoints-reference/SOURCES.md).
    previous = Path(__file__).parent / "testdata" / "endpoints" / "worldwide-previous.json"
    result = run("diff", str(previous), str(WORLDWIDE))
    assert result.exit_code == 0
    assert result.stdout == f"""\
Comparing Microsoft 365 endpoint data
  old: {previous} (version unknown)
  new: {WORLDWIDE} (version unknown)

Split-tunnel VPN exclusions (Optimize IP prefixes):
  no change

2 endpoint sets changed (0 Optimize, 0 Allow, 2 Default):

Default
  set 184 changed: Microsoft 365 Common and Office Online (Common, required)
    - url  *.static.microsoft
    - url  *.usercontent.microsoft
  set 193 added: Microsoft 365 Common and Office Online (Common, required)
    + url  *.static.microsoft
    + url  *.usercontent.microsoft
    + tcp  443
    + udp  443
"""
    as_json = json.loads(run("diff", str(previous), "worldwide", "--json").stdout)
    assert as_json["new"] == {"source": "bundled", "instance": "Worldwide", "version": BUNDLED}
    assert as_json["splitTunnelExclusions"] == {"add": {"ipv4": [], "ipv6": []},
                                                "remove": {"ipv4": [], "ipv6": []}}
    assert [(c["id"], c["change"]) for c in as_json["changes"]] == [(184, "changed"), (193, "added")]
    assert as_json["changes"][0]["urls"] == {"add": [],
                                             "remove": ["*.static.microsoft", "*.usercontent.microsoft"]}


def _synthetic(tmp_path: Path) -> tuple[Path, Path]:
    set1 = next(s for s in _REAL if s["id"] == 1)
    set11 = next(s for s in _REAL if s["id"] == 11)
    set31 = next(s for s in _REAL if s["id"] == 31)
    new = dataset(
        changes={
            # Teams media: one prefix gone, two new (documentation ranges)
            11: {"ips": [i for i in set11["ips"] if i != "52.122.0.0/15"]
                 + ["203.0.113.0/24", "2001:db8:1::/48"]},
            # a prefix moves from one Optimize set to another: not an exclusion change
            1: {"ips": [i for i in set1["ips"] if i != "13.107.6.152/31"]},
            31: {"ips": set31["ips"] + ["13.107.6.152/31"], "tcpPorts": "443"},
            12: {"category": "Default"},  # Teams signalling: Allow -> Default
        },
        drop=(193,))
    return WORLDWIDE, write(tmp_path / "new.json", new)


def test_diff_puts_optimize_first_and_lists_exclusions(tmp_path: Path) -> None:
    old, new = _synthetic(tmp_path)
    (tmp_path / "new.meta.json").write_text(json.dumps({"version": NEW}))
    result = run("diff", "Worldwide", str(new))
    assert result.exit_code == 0
    assert result.stdout == f"""\
Comparing Microsoft 365 endpoint data
  old: Worldwide version {BUNDLED} (bundled snapshot)
  new: {new} (version {NEW})

Split-tunnel VPN exclusions (Optimize IP prefixes):
  add to the exclusions:
    IPv4  203.0.113.0/24
    IPv6  2001:db8:1::/48
  remove from the exclusions:
    IPv4  52.122.0.0/15

5 endpoint sets changed (3 Optimize, 1 Allow, 1 Default):

Optimize
  set 1 changed: Exchange Online (Exchange, required)
    - ip   13.107.6.152/31
  set 11 changed: Microsoft Teams (Skype, required)
    + ip   203.0.113.0/24
    + ip   2001:db8:1::/48
    - ip   52.122.0.0/15
  set 31 changed: SharePoint Online and OneDrive for Business (SharePoint, required)
    + ip   13.107.6.152/31
    - tcp  80

Allow
  set 12 changed: Microsoft Teams (Skype, required)
    category Allow -> Default

Default
  set 193 removed: Microsoft 365 Common and Office Online (Common, required)
    - url  *.static.microsoft
    - url  *.usercontent.microsoft
    - tcp  443
    - udp  443
"""
    doc = json.loads(run("diff", str(old), str(new), "--json").stdout)
    assert doc["splitTunnelExclusions"] == {
        "add": {"ipv4": ["203.0.113.0/24"], "ipv6": ["2001:db8:1::/48"]},
        "remove": {"ipv4": ["52.122.0.0/15"], "ipv6": []}}
    assert [c["id"] for c in doc["changes"]] == [1, 11, 31, 12, 193]
    assert doc["changes"][3]["previousCategory"] == "Allow"
    assert doc["changes"][3]["category"] == "Default"


def test_diff_of_identical_data(tmp_path: Path) -> None:
    result = run("diff", str(WORLDWIDE), "worldwide")
    assert result.exit_code == 0
    assert result.stdout.endswith("  no change\n\nNo endpoint set changed.\n")


@pytest.mark.parametrize("bad", ["nowhere.json", "Germany"])
def test_diff_of_something_that_is_neither_file_nor_instance(bad: str) -> None:
    result = run("diff", bad, "Worldwide")
    assert result.exit_code == 4
    assert result.stderr == (f"Error: {bad}: no such file, and not an instance name "
                             "(Worldwide, China, USGovDoD, USGovGCCHigh)\n")


def test_diff_of_a_malformed_file_names_file_and_set(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.json", dataset(changes={31: {"tcpPorts": "80;443"}}))
    result = run("diff", "Worldwide", str(bad))
    assert result.exit_code == 4
    assert result.stderr == f"Error: {bad}: endpoint set 31: bad port '80;443'\n"


# --- the diff logic, without the CLI ------------------------------------------------

def test_a_set_moving_into_optimize_adds_its_prefixes() -> None:
    old = read_endpoint_file(WORLDWIDE)
    new = [s if s.id != 56 else s.__class__(**{**s.__dict__, "category": Category.OPTIMIZE})
           for s in old]
    d = diff_sets(old, new)
    (change,) = d.changes
    assert change.kind is ChangeKind.CHANGED
    assert (change.previous_category, change.category) == (Category.ALLOW, Category.OPTIMIZE)
    assert change.rank_category is Category.OPTIMIZE
    assert set(d.exclusions_added) == set(next(s for s in old if s.id == 56).ips)
    assert [n.version for n in d.exclusions_added] == sorted(n.version for n in d.exclusions_added)
    assert d.exclusions_removed == ()
    assert "login.microsoftonline.com" in d.optimize_urls_added
    assert d.count(Category.OPTIMIZE) == 1 and d.count(Category.ALLOW) == 0


def test_port_lists_are_compared_as_ports(tmp_path: Path) -> None:
    base = [{"id": 1, "serviceArea": "Skype", "ips": ["52.112.0.0/14"], "udpPorts": "3478-3481",
             "category": "Optimize", "required": True, "expressRoute": True}]
    same = write(tmp_path / "a.json", base)
    spelled = write(tmp_path / "b.json", [{**base[0], "udpPorts": "3481, 3480,3479,3478"}])
    assert diff_sets(read_endpoint_file(same), read_endpoint_file(spelled)).empty
    wider = write(tmp_path / "c.json", [{**base[0], "udpPorts": "3478-3482", "required": False,
                                         "notes": "now optional"}])
    (change,) = diff_sets(read_endpoint_file(same), read_endpoint_file(wider)).changes
    assert [str(p) for p in change.udp_added] == ["3482"] and change.udp_removed == ()
    assert change.required == (True, False) and change.notes == ("", "now optional")


def test_compress_ports() -> None:
    assert [str(r) for r in compress_ports([443, 80, 3479, 3478, 3480, 81])] == [
        "80-81", "443", "3478-3480"]
    assert compress_ports([]) == ()
