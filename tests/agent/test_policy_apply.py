"""The collector's user_domain and site_profiles reach the agent's check."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

import netcheck.check as check_module
from netcheck.agent.loop import CheckRequest, build_agent, check_options, default_run_check, refresh_endpoints, run_once
from netcheck.agent.schedule import Schedule
from netcheck.check import CheckOptions, choose_site_profile
from netcheck.platform import Interface
from tests.agent.conftest import Real, Rig
from tests.agent.test_loop import _admin
from tests.collector.conftest import sql
from tests.sample_report import sample_report

LOG = "netcheck.agent.loop"


def _at(address: str) -> list[Interface]:
    return [Interface("lo", "loopback", None, (), ("127.0.0.1/8",), True),
            Interface("eth0", "physical", None, (), (address,), True)]


def test_user_domain_becomes_the_realm_discovery_user() -> None:
    assert check_options(CheckRequest(policy={"user_domain": "Contoso.com"})).user == "Contoso.com"
    assert check_options(CheckRequest(policy={"user_domain": None})).user is None
    assert check_options(CheckRequest()).user is None


@pytest.mark.parametrize("value", ["contoso", "alice@contoso.com", "-bad-.example", 42, ["contoso.com"]])
def test_a_user_domain_the_agent_cannot_use_is_logged_and_left_out(value: object,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOG):
        assert check_options(CheckRequest(policy={"user_domain": value})).user is None
    assert "user_domain" in caplog.text


def test_site_profiles_and_the_site_tag_become_check_options(caplog: pytest.LogCaptureFixture) -> None:
    policy = {"site_profiles": [
        {"name": "paris", "networks": ["10.20.0.0/16"], "vpn_on_site_down": "stays"},
        "lyon",
        {"name": "broken", "networks": ["10.30.0.0/33"]},
        {"networks": ["10.40.0.0/16"], "vpn_mode": "sometimes"},
        {"name": "lab", "pac_unreachable": "fail"},
    ]}
    with caplog.at_level(logging.WARNING, logger=LOG):
        options = check_options(CheckRequest(policy=policy, tags={"site": "lab", "department": "sales"}))
    assert [p.name for p in options.site_profiles] == ["paris", "lab"]
    assert options.site_profiles[0].vpn_on_site_down == "stays" and options.site_tag == "lab"
    assert options.site_profile is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert "site_profiles[1]: a site profile must be a table" in warnings[0]
    assert "site_profiles[2] ('broken'): [site] networks: '10.30.0.0/33' is not an IP prefix" in warnings[1]
    assert "site_profiles[3]: [site] vpn_mode must be" in warnings[2]


def test_no_or_malformed_site_profiles_never_fail_the_check(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOG):
        empty: tuple[object, ...] = (None, [], {})
        for value in empty:
            assert check_options(CheckRequest(policy={"site_profiles": value})).site_profiles == ()
        assert not caplog.records
        assert check_options(CheckRequest(policy={"site_profiles": {"name": "paris"}})).site_profiles == ()
    assert "a list of profiles was expected" in caplog.text
    assert check_options(CheckRequest(tags={"department": "sales"})).site_tag is None


def test_the_policy_set_on_a_real_collector_reaches_the_check(real: Callable[..., Real], rigs: Callable[..., Rig],
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    collector = real()
    _admin(collector.database_url, "policy", "set", "user_domain", "contoso.com")
    profiles = [{"name": "paris", "networks": ["10.20.0.0/16", "203.0.113.0/28"], "vpn_mode": "full"},
                {"name": "broken", "vpn_exclude": ["Optimize"]},  # vpn_exclude without vpn_mode = "split"
                {"name": "lab", "networks": ["198.18.40.0/24"], "pac_unreachable": "fail"}]
    # the collector refuses the broken entry; one in the database already (an older collector
    # let it in) is skipped by the agent, and the other profiles still apply
    refused = subprocess.run([sys.executable, "-m", "netcheck", "admin", "policy", "set", "site_profiles",
                              json.dumps(profiles), "--database-url", collector.database_url],
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 4 and "site_profiles[1]: [site] vpn_exclude needs vpn_mode" in refused.stderr
    _admin(collector.database_url, "policy", "set", "site_profiles", json.dumps(profiles[:1]))
    sql(collector.database_url, "UPDATE policy SET value_json = :v WHERE key = 'site_profiles'",
        v=json.dumps(profiles))
    rig = rigs(collector.url, collector.secret)  # enrolled with --tag site=lab
    seen: list[CheckOptions] = []

    def perform(options: CheckOptions, **kwargs: Any) -> Any:
        seen.append(options)
        return sample_report()

    monkeypatch.setattr(check_module, "perform_check", perform)
    agent = build_agent(run_check=default_run_check, spool=rig.spool, client=rig.client, uploader=rig.uploader,
                        schedule=Schedule(), tags=rig.store.load_config().tags)
    with caplog.at_level(logging.WARNING, logger=LOG):
        result = run_once(agent, upload_deadline_s=30)
    assert (result.checks, result.spooled, result.upload.stored) == (1, 1, 1)
    options = seen[0]
    assert options.user == "contoso.com"
    assert [p.name for p in options.site_profiles] == ["paris", "lab"] and options.site_tag == "lab"
    assert "site_profiles[1] ('broken'): [site] vpn_exclude needs vpn_mode" in caplog.text
    # which profile the check then uses: the network the laptop is on, else its site tag
    assert choose_site_profile(options, _at("10.20.5.5/16"), []) is options.site_profiles[0]
    chosen = choose_site_profile(options, _at("192.168.1.20/24"), [])
    assert chosen is not None and chosen.name == "lab" and chosen.pac_unreachable == "fail"


def test_with_an_endpoints_url_the_agent_refreshes_its_endpoint_data_before_a_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from netcheck.m365.catalog import data_dir
    from netcheck.m365.webservice import EndpointCache
    from tests.servers import closed_port
    from tests.webservice_double import WebServiceDouble

    published = (data_dir() / "worldwide.json").read_bytes()
    seen: list[CheckOptions] = []

    def perform(options: CheckOptions, **kwargs: Any) -> Any:
        seen.append(options)
        return sample_report()

    monkeypatch.setattr(check_module, "perform_check", perform)
    with WebServiceDouble() as ws:
        ws.publish("Worldwide", "2099010100", published)
        default_run_check(CheckRequest(policy={"endpoints_url": ws.url, "instance": "Worldwide"}))
        assert ws.paths() == ["/version/Worldwide", "/endpoints/Worldwide"]
        catalog, fetched_at, problem = EndpointCache().load("Worldwide")
        assert catalog is not None and problem is None and catalog.version == "2099010100"
        # the next check within the hour asks no one (Microsoft's once-an-hour rule)
        default_run_check(CheckRequest(policy={"endpoints_url": ws.url}))
        assert len(ws.paths()) == 2
    assert len(seen) == 2
    # an unreachable service is one line, and the check still runs on the data it has
    said = refresh_endpoints({"endpoints_url": f"http://127.0.0.1:{closed_port()}"}, "USGovDoD")
    assert said is not None and said.startswith("Could not reach the endpoint web service")
    assert refresh_endpoints({"endpoints_url": None}, "Worldwide") is None
    assert refresh_endpoints({"endpoints_url": "not a url"}, "Worldwide") is not None  # logged, never raised
