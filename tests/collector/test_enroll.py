"""C6 enrollment: secrets, rotation, re-enrollment, rate limits checked before parsing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from netcheck.collector import store
from netcheck.collector.db import make_engine
from tests.collector.conftest import Fleet, create_secret, hardware_id, sample_report, sql, upload
from tests.collector.harness import CollectorProcess


def _revoke(database_url: str, secret_id: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            assert store.revoke_secret(conn, secret_id, store.utcnow())
    finally:
        engine.dispose()


def test_wrong_secret_is_401(fleet: Fleet) -> None:
    for secret in ("wrong", "ncs_" + "A" * 43, fleet.secret + "x", fleet.secret.upper()):
        response = fleet.enroll_raw(secret=secret)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "invalid_secret"


def test_rotation_old_secret_fails_new_works_tokens_survive(fleet: Fleet) -> None:
    device = fleet.enroll()
    new_id, new_secret = create_secret(fleet.database_url)
    _revoke(fleet.database_url, fleet.secret_id)
    assert fleet.enroll_raw().status_code == 401  # the old secret
    assert fleet.enroll_raw(secret=new_secret).status_code == 200
    assert fleet.post(device, upload(sample_report())).status_code == 200  # enrolled before: still fine
    assert new_id != fleet.secret_id


def test_reenrolling_the_same_hardware_id_is_the_same_device(fleet: Fleet) -> None:
    hw = hardware_id()
    first = fleet.enroll(hw=hw, tags={"site": "paris", "department": "finance"}, name="LT-0042")
    second = fleet.enroll(hw=hw.upper(), tags={"site": "lyon"})
    assert second.device_id == first.device_id and second.token != first.token
    assert fleet.count("SELECT count(*) FROM devices WHERE hardware_id = :h", h=hw) == 1
    tags = sql(fleet.database_url, "SELECT key, value FROM device_tags WHERE device_id = :d", d=first.device_id)
    assert {(t.key, t.value) for t in tags} == {("site", "lyon")}
    # acquire, then replace: the old token works until the new one is used once
    assert fleet.post(first, upload(sample_report())).status_code == 200
    assert fleet.post(second, upload(sample_report())).status_code == 200
    assert fleet.post(first, upload(sample_report())).status_code == 401
    assert fleet.post(second, upload(sample_report())).status_code == 200


def test_a_site_secret_applies_its_site_tag(fleet: Fleet) -> None:
    _, site_secret = create_secret(fleet.database_url, site="berlin")
    response = fleet.enroll_raw(secret=site_secret, tags={"site": "paris", "department": "it"})
    assert response.status_code == 200
    device_id = response.json()["device_id"]
    tags = sql(fleet.database_url, "SELECT key, value FROM device_tags WHERE device_id = :d", d=device_id)
    assert {(t.key, t.value) for t in tags} == {("site", "berlin"), ("department", "it")}


@pytest.mark.parametrize(("device", "field"), [
    ({"hardware_id": "abc", "os": "linux", "agent_version": "1"}, "device.hardware_id"),
    ({"hardware_id": "a" * 64, "os": "beos", "agent_version": "1"}, "device.os"),
    ({"hardware_id": "a" * 64, "os": "linux"}, "device.agent_version"),
    ({"hardware_id": "a" * 64, "os": "linux", "agent_version": "1", "hostname": "x"}, "device.hostname"),
    ({"hardware_id": "a" * 64, "os": "linux", "agent_version": "1",
      "tags": {f"t{i}": "v" for i in range(17)}}, "device.tags"),
    ({"hardware_id": "a" * 64, "os": "linux", "agent_version": "1", "tags": {"site": 5}}, "device.tags.site"),
])
def test_invalid_enrollment_names_the_field(fleet: Fleet, device: dict[str, object], field: str) -> None:
    response = fleet.client.post("/api/v1/enroll", json={"secret": fleet.secret, "device": device})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field


def test_enrollment_is_rate_limited_per_address_before_parsing(start_collector: Callable[..., CollectorProcess],
                                                              fleet_factory: Callable[[CollectorProcess], Fleet]
                                                              ) -> None:
    proc = start_collector(env={"NETCHECK_RATE_ENROLL_ADDRESS": "3", "NETCHECK_RATE_ENROLL_GLOBAL": "0"},
                           args=("--trusted-proxy-header", "X-Forwarded-For"))
    fleet = fleet_factory(proc)
    here = {"X-Forwarded-For": "198.51.100.7"}
    assert [fleet.enroll_raw(headers=here).status_code for _ in range(3)] == [200, 200, 200]
    limited = fleet.enroll_raw(headers=here)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["error"]["code"] == "rate_limited"
    # not parsed: garbage gets 429 too, not 400
    garbage = fleet.client.post("/api/v1/enroll", content=b"{not json", headers={
        **here, "Content-Type": "application/json"})
    assert garbage.status_code == 429
    # another address is not affected; the proxy's own hop is ignored, its last entry counts
    other = fleet.enroll_raw(headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.9"})
    assert other.status_code == 200


def test_enrollment_is_rate_limited_globally(start_collector: Callable[..., CollectorProcess],
                                             fleet_factory: Callable[[CollectorProcess], Fleet]) -> None:
    proc = start_collector(env={"NETCHECK_RATE_ENROLL_ADDRESS": "100", "NETCHECK_RATE_ENROLL_GLOBAL": "4"},
                           args=("--trusted-proxy-header", "X-Forwarded-For"))
    fleet = fleet_factory(proc)
    codes = [fleet.enroll_raw(headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(1, 7)]
    assert codes[:4] == [200] * 4 and codes[4:] == [429, 429]


def test_enrollment_default_limit_is_ten_a_minute_per_address(start_collector: Callable[..., CollectorProcess],
                                                              fleet_factory: Callable[[CollectorProcess], Fleet]
                                                              ) -> None:
    proc = start_collector(env={"NETCHECK_RATE_ENROLL_ADDRESS": "", "NETCHECK_RATE_ENROLL_GLOBAL": ""})
    fleet = fleet_factory(proc)
    minute = int(dt.datetime.now(dt.UTC).timestamp() // 60)
    codes = [fleet.enroll_raw().status_code for _ in range(11)]
    if int(dt.datetime.now(dt.UTC).timestamp() // 60) == minute:  # all in one window (almost always)
        assert codes == [200] * 10 + [429]
    else:
        assert codes.count(429) <= 1
