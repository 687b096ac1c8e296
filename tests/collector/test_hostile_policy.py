"""Hostile policy values (issue 10, item 10): refused by the collector at `admin policy set`, for
every key, and ignored key by key by the agent, which keeps its own value: no policy can stop a check.

The collector side runs against a real collector's database on SQLite and PostgreSQL, through
``store.set_policy`` (what the CLI calls) for the whole table and through the real CLI for a few;
the agent side through ``check_options``, the function that turns a collector's policy into a
check's options. tests/agent/test_hostile_policy_check.py runs a real check with a hostile policy.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import jsonschema_rs
import pytest

from netcheck.agent.loop import CheckRequest, Shared, check_options
from netcheck.agent.schedule import Schedule
from netcheck.collector import store
from netcheck.collector.db import make_engine
from netcheck.errors import ConfigError
from netcheck.fleet_policy import DEFAULTS, KEYS, SCHEMA
from netcheck.policy import THRESHOLDS, load_policy
from tests.collector.conftest import Fleet, sql
from tests.collector.harness import CollectorProcess

#: values no agent can use, for every threshold (key as in endpoints/policy.toml)
HOSTILE: dict[str, list[Any]] = {
    "check.deadline_s": [-5, 0, 1, 3601, 1e308, "30", True, None, [], {}],
    "check.concurrency": [-5, 0, 513, 10**12, 1.5, "96", True, None, [96]],
    "check.dns_concurrency": [-1, 0, 151, 2.5, "40", False, None],
    "check.tcp_samples": [0, -3, 21, 3.5, "3", True, {}],
    "check.tcp_samples_thorough": [0, 51, "10", None, -10],
    "check.whoami_name": [42, "", "x", "a b.example", "evil..example", "a" * 300, ["whoami.akamai.net"], True],
    "exchange_score.points": [[], [[10, 100]], [[10, 100], [10, 50]], [[100, 50], [10, 100]],
                              [[10, 100], [25, "80"]], [[10, 100, 1], [25, 80]], [[10, 101], [20, 0]],
                              [[-1, 100], [10, 0]], "[[10, 100], [20, 0]]", None, [[i, 50] for i in range(33)]],
    "exchange_score.degraded_below": [-1, 101, 50.5, "60", None],
    "latency.slow_ms": [0, -100, 60001, "100", None, True],
    "dns.slow_ms": [0, -1, 1e9, "150", []],
    "teams_media.rtt_ms": [0, -1, 1e9, "100", None],
    "teams_media.loss_pct": [-0.1, 100.1, "1", None],
    "teams_media.jitter_ms": [0, -30, 1e9, "30"],
    "teams_media.window_s": [0, -1, 0.1, 61, 1e308, "1"],
    "teams_media.window_s_thorough": [0, -10, 301, "10"],
    "teams_media.stride_ms": [0, 4.9, 200.1, -20, 1e9, "20", None, True],
}
#: what JSON cannot carry but a careless client's parser (Python's) can
NON_FINITE = [math.nan, math.inf, -math.inf]
#: the other keys of the policy document
HOSTILE_TOP: dict[str, list[Any]] = {
    "tenant": ["Contoso Corp", "../etc", "a" * 64, 42, ["contoso"]],
    "instance": ["Mars", "worldwide", 5, None],
    "user_domain": ["a b", 42, "x" * 254],
    "schedule.interval_s": [-5, 0, 59, 7 * 86400 + 1, "3600", 60.5, None],
    "schedule.jitter_s": [-1, 86401, "60", None],
    "deadline_s": [-1, 0, 4, 3601, "30", True, None],
    "endpoints_url": ["http://endpoints.example", "file:///etc/passwd", "https://a b", 5],
    "site_profiles": [{"name": "paris"}, ["paris"], [{"name": "x", "networks": ["10.0.0.0/33"]}],
                      [{"name": "x", "vpn_exclude": ["Optimize"]}], [{"name": "x", "color": "red"}]],
}


def test_every_threshold_key_has_hostile_values() -> None:
    assert set(HOSTILE) == {f"{t}.{k}" for t, k in THRESHOLDS}
    assert set(HOSTILE_TOP) | {"thresholds"} | {f"thresholds.{k}" for k in HOSTILE} == set(KEYS)


def test_the_policy_schema_is_json_schema_and_the_defaults_fit_it() -> None:
    """The schema the collector publishes (OpenAPI) is real JSON Schema; the defaults and the
    bundled policy.toml fit it."""
    validator = jsonschema_rs.validator_for(SCHEMA)
    bundled = json.loads(json.dumps({table: {key: getattr(load_policy(), field) for (t, key), (field, _) in
                                             THRESHOLDS.items() if t == table}
                                     for table in {t for t, _ in THRESHOLDS}}))
    validator.validate({**DEFAULTS, "thresholds": bundled})
    assert not validator.is_valid({**DEFAULTS, "thresholds": {"check": {"concurrency": -5}}})
    assert not validator.is_valid({**DEFAULTS, "thresholds": {"concurrency": 96}})  # policy.toml's names only


@pytest.fixture
def policy_db(start_collector: Callable[..., CollectorProcess]) -> CollectorProcess:
    return start_collector()


def _set(database_url: str, key: str, value: Any) -> None:
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with engine.begin() as conn:
            store.set_policy(conn, key, json.dumps(value), store.utcnow())
    finally:
        engine.dispose()


def _served(proc: CollectorProcess) -> dict[str, Any]:
    engine = make_engine(proc.database_url, pool_size=1, max_overflow=0)
    try:
        with engine.begin() as conn:
            return store.get_policy(conn)
    finally:
        engine.dispose()


def test_hostile_policy_values_are_refused_by_the_collector(policy_db: CollectorProcess) -> None:
    url = policy_db.database_url
    before = _served(policy_db)
    refused = 0
    for key, values in {**{f"thresholds.{k}": v for k, v in HOSTILE.items()}, **HOSTILE_TOP}.items():
        for value in values:
            with pytest.raises(ConfigError, match=f"invalid policy value for {key}"):
                _set(url, key, value)
            refused += 1
    # whole objects: unknown tables and keys, the flat names, non-objects
    for value in ({"concurrency": -5}, {"check": {"concurrency": 0}}, {"check": {"nope": 1}}, {"nope": {}},
                  {"check": 5}, [1], "fast"):
        with pytest.raises(ConfigError, match="invalid policy value for thresholds"):
            _set(url, "thresholds", value)
        refused += 1
    with pytest.raises(ConfigError, match="unknown policy key"):
        _set(url, "thresholds.check.nope", 1)
    assert refused == sum(map(len, HOSTILE.values())) + sum(map(len, HOSTILE_TOP.values())) + 7
    assert _served(policy_db) == before
    # and good values are kept, under policy.toml's names
    _set(url, "thresholds.check.concurrency", 64)
    _set(url, "thresholds.teams_media.loss_pct", 0)
    _set(url, "thresholds", {"check": {"concurrency": 64, "dns_concurrency": 20},
                             "exchange_score": {"points": [[10, 100], [400, 0]]}})
    assert _served(policy_db)["thresholds"] == {"check": {"concurrency": 64, "dns_concurrency": 20},
                                                "exchange_score": {"points": [[10, 100], [400, 0]]}}


def _admin(proc: CollectorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netcheck", "admin", "policy", *args,
                           "--database-url", proc.database_url], capture_output=True, text=True, timeout=60,
                          check=False)


def test_hostile_policy_set_on_the_command_line_is_one_line_and_exit_4(policy_db: CollectorProcess) -> None:
    for args, said in [
        (("thresholds", '{"concurrency": -5}'), "thresholds.concurrency: unknown key (known: check, exchange_score"),
        (("thresholds.check.concurrency", "-5"), "thresholds.check.concurrency: -5 is below the minimum 1"),
        (("thresholds.check.concurrency", "0"), "below the minimum 1"),
        (("thresholds.check.concurrency", "NaN"), "NaN is not a number"),
        (("thresholds.latency.slow_ms", "Infinity"), "Infinity is not a number"),
        (("thresholds.check.dns_concurrency", "forty"), "'forty' is not a whole number"),
        (("deadline_s", "-Infinity"), "-Infinity is not a number"),
    ]:
        got = _admin(policy_db, "set", *args)
        assert got.returncode == 4, (args, got.stderr)
        assert said in got.stderr and got.stderr.count("\n") == 1 and "Traceback" not in got.stderr
    got = _admin(policy_db, "set", "thresholds.check.concurrency", "64")
    assert got.returncode == 0, got.stderr
    shown = json.loads(_admin(policy_db, "show").stdout)
    assert shown["thresholds"] == {"check": {"concurrency": 64}}


def test_hostile_stored_values_that_are_not_json_leave_the_served_policy_whole(
        policy_db: CollectorProcess, fleet_factory: Callable[[CollectorProcess], Fleet]) -> None:
    """A hand edit of the database (NaN, broken JSON) must not turn GET /policy into a 500."""
    sql(policy_db.database_url, "INSERT INTO policy (key, value_json, updated_at) VALUES ('deadline_s', 'NaN', "
        ":t), ('tenant', '{broken', :t)", t=dt.datetime.now(dt.UTC))
    fleet = fleet_factory(policy_db)
    device = fleet.enroll()
    got = fleet.client.get("/api/v1/policy", headers=device.auth)
    assert got.status_code == 200
    assert got.json()["deadline_s"] == DEFAULTS["deadline_s"] and got.json()["tenant"] is None


# --- the agent -------------------------------------------------------------------------------------

def _field(key: str) -> str:
    table, name = key.split(".")
    return THRESHOLDS[(table, name)][0]


@pytest.mark.parametrize("key", sorted(HOSTILE))
def test_hostile_thresholds_leave_the_agents_own_value(key: str, caplog: pytest.LogCaptureFixture) -> None:
    local = load_policy()
    table, name = key.split(".")
    good_table, good_key = ("dns", "slow_ms") if key != "dns.slow_ms" else ("latency", "slow_ms")
    for value in [*HOSTILE[key], *NON_FINITE]:
        caplog.clear()
        thresholds: dict[str, dict[str, Any]] = {good_table: {good_key: 123}}
        thresholds.setdefault(table, {})[name] = value
        options = check_options(CheckRequest(policy={"thresholds": thresholds}))
        assert getattr(options.policy, _field(key)) == getattr(local, _field(key)), (key, value)
        assert getattr(options.policy, _field(f"{good_table}.{good_key}")) == 123  # the good one still applies
        assert f"thresholds.{key}" in caplog.text


def test_hostile_top_level_policy_values_leave_the_agents_defaults() -> None:
    for value in [*HOSTILE_TOP["tenant"], *NON_FINITE]:
        assert check_options(CheckRequest(policy={"tenant": value})).tenant is None
    for value in [*HOSTILE_TOP["instance"], *NON_FINITE]:
        assert check_options(CheckRequest(policy={"instance": value})).instance == "Worldwide"
    for value in [*HOSTILE_TOP["deadline_s"], *NON_FINITE]:
        assert _shared_with({"deadline_s": value}).request(None).deadline_s is None
    for name in ("interval_s", "jitter_s"):
        for value in [*HOSTILE_TOP[f"schedule.{name}"], *NON_FINITE]:
            assert _shared_with({"schedule": {name: value}}).schedule == Schedule(), (name, value)
    assert _shared_with({"schedule": "hourly"}).schedule == Schedule()
    for doc in (None, [], "policy", 5, {"tenant": None, "nope": 1}):
        options = check_options(CheckRequest(policy=doc))  # type: ignore[arg-type]
        assert options.instance == "Worldwide" and options.policy == load_policy()


def _tmp_state() -> Any:
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix="nc-hostile-"))


def _shared_with(policy: dict[str, Any]) -> Shared:
    shared = Shared(Schedule(), _tmp_state())
    shared.set_policy(policy)
    return shared


def test_hostile_local_policy_toml_is_one_error_naming_the_file_and_key(tmp_path: Any) -> None:
    from pathlib import Path

    from netcheck.m365.catalog import data_dir

    bundled = (data_dir() / "policy.toml").read_text("utf-8")
    path = Path(tmp_path) / "policy.toml"
    for old, new, said in [("concurrency = 96", "concurrency = -5", "check.concurrency: -5 is below the minimum 1"),
                           ("slow_ms = 100.0", "slow_ms = nan", "latency.slow_ms: nan is not a finite number"),
                           ("[dns]", "[nope]\nx = 1\n[dns]", "nope.x: unknown setting (known: check.deadline_s")]:
        assert old in bundled
        path.write_text(bundled.replace(old, new, 1), "utf-8")
        with pytest.raises(ConfigError) as info:
            load_policy(path)
        assert str(info.value).startswith(f"{path}: ") and said in str(info.value), str(info.value)


def test_a_schema_keyword_the_validator_does_not_enforce_is_refused() -> None:
    from netcheck.policy import check_schema

    with pytest.raises(AssertionError, match="multipleOf"):
        check_schema({"type": "object", "properties": {"x": {"type": "integer", "multipleOf": 2}}})
