"""Item 6: names and settings that crashed: a 300-character or empty label, a broken HTTPS_PROXY,
``--deadline nan``. Each is exit 4, or one finding; no JSON ever holds NaN or Infinity."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from netcheck.models import ProbeResult
from netcheck.names import ascii_host, host_problem, listed_host, proxy_host, url_host
from netcheck.proxy.settings import from_environment, unusable_proxy_settings, usable_proxy_url
from netcheck.render.json import render_json
from tests.hostile.sandbox import needs_sandbox, run_sandboxed
from tests.sample_report import sample_report

LONG_LABEL = "a" * 300 + ".example.com"


@pytest.mark.parametrize(("name", "problem"), [
    (LONG_LABEL, "312 characters long"), ("", "empty"), ("relay..example.com", "empty part"),
    ("a b.example", "characters"), ("x" * 70 + ".example", "longer than 63")])
def test_hostile_bad_host_names_are_refused_with_a_reason(name: str, problem: str) -> None:
    assert ascii_host(name) is None
    assert problem in (host_problem(name) or "")


def test_hostile_bad_proxy_urls_are_unusable() -> None:
    for value in ("http://[::1", f"http://{LONG_LABEL}:8080", "http://:8080"):
        assert usable_proxy_url(value) is None
    env = from_environment({"HTTPS_PROXY": "http://[::1"})
    assert unusable_proxy_settings(env) == ("HTTPS_PROXY is set but is not a usable proxy URL",)


def test_hostile_json_never_holds_nan_or_infinity() -> None:
    report = sample_report()
    probe = report.probes[0]
    bad: ProbeResult = replace(probe, phases={"resolve": math.nan}, detail={**probe.detail, "x": math.inf})
    text = render_json(replace(report, probes=(bad, *report.probes[1:]), duration_s=math.nan))

    def refuse(name: str) -> object:
        raise AssertionError(f"{name} in the JSON")

    doc = json.loads(text, parse_constant=refuse)
    assert doc["duration_s"] is None and doc["probes"][0]["phases"]["resolve"] is None


@needs_sandbox
@pytest.mark.timeout(120)
@pytest.mark.parametrize("args", [
    ["--teams-relay", LONG_LABEL], ["--teams-relay", ""], ["--teams-relay", "relay..example.com"],
    ["--whoami-name", LONG_LABEL], ["--deadline", "nan"], ["--deadline", "inf"], ["--deadline", "-nan"]],
    ids=["relay-300", "relay-empty", "relay-empty-label", "whoami-300", "nan", "inf", "minus-nan"])
def test_hostile_bad_option_exits_4_with_one_line(tmp_path: Path, args: list[str]) -> None:
    proc = run_sandboxed(["-m", "netcheck", "check", "--no-progress", *args], tmp_path)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Error:")


@needs_sandbox
@pytest.mark.timeout(120)
def test_hostile_bad_relay_in_the_environment_exits_4(tmp_path: Path) -> None:
    proc = run_sandboxed(["-m", "netcheck", "check", "--no-progress"], tmp_path,
                         env={"NETCHECK_TEAMS_RELAY": LONG_LABEL})
    assert proc.returncode == 4 and "NETCHECK_TEAMS_RELAY" in proc.stderr and "Traceback" not in proc.stderr


@needs_sandbox
@pytest.mark.timeout(180)
@pytest.mark.parametrize("value", ["http://[::1", f"http://{LONG_LABEL}:8080"], ids=["ipv6-unclosed", "label-300"])
def test_hostile_unusable_https_proxy_is_one_finding(tmp_path: Path, value: str) -> None:
    proc = run_sandboxed(["-m", "netcheck", "check", "--no-progress", "--json", "--deadline", "5"], tmp_path,
                         env={"HTTPS_PROXY": value})
    assert proc.returncode in (1, 2), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) <= 2
    report = json.loads(proc.stdout)
    codes = [f["code"] for f in report["findings"]]
    assert codes.count("proxy.unusable_setting") == 1


def test_url_and_proxy_hosts() -> None:
    assert url_host("https://[::1]:443/x") == "::1" and url_host("http://[bad/") is None and url_host(None) is None
    assert url_host("http://PAC.corp.example:8080/proxy.pac") == "pac.corp.example"
    assert proxy_host("[2001:db8::1]:3128") == "2001:db8::1" and proxy_host("proxy.corp:8080") == "proxy.corp"
    assert proxy_host(None) is None and proxy_host("") is None


def test_a_listed_systems_host_keeps_an_ipv6_address_whole() -> None:
    assert listed_host("2001:DB8::53") == "2001:db8::53" and listed_host("[2001:db8::53]:53") == "2001:db8::53"
    assert listed_host(" VPN.corp.example.:443 ") == "vpn.corp.example" and listed_host("10.20.0.53") == "10.20.0.53"
