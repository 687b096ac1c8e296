"""C8 per-device and per-address rate limits: 429 with Retry-After, before parsing, shared
by every collector process through the database."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.collector.conftest import Fleet, sample_report, upload
from tests.collector.harness import CollectorProcess


def _same_window(run: Callable[[], list[int]]) -> list[int]:
    """Run a burst inside one rate-limit minute (wait for the next one if this one is ending)."""
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    return run()


def test_a_device_over_its_limit_gets_429_and_others_do_not(start_collector: Callable[..., CollectorProcess],
                                                            fleet_factory: Callable[[CollectorProcess], Fleet]
                                                            ) -> None:
    proc = start_collector(env={"NETCHECK_RATE_DEVICE": "5"})
    fleet = fleet_factory(proc)
    noisy, quiet = fleet.enroll(), fleet.enroll()

    def burst() -> list[int]:
        return [fleet.post(noisy, upload(sample_report())).status_code for _ in range(5)]

    assert _same_window(burst) == [200] * 5
    limited = fleet.post(noisy, upload(sample_report()))
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["error"]["code"] == "rate_limited"
    for path in ("/api/v1/policy", "/api/v1/sweeps/pending"):
        assert fleet.client.get(path, headers=noisy.auth).status_code == 429
    # refused before the body is parsed: invalid JSON gets 429, not 400
    garbage = fleet.client.post("/api/v1/reports", content=b"[[[", headers={
        **noisy.auth, "Content-Type": "application/json"})
    assert garbage.status_code == 429
    assert fleet.post(quiet, upload(sample_report())).status_code == 200
    assert fleet.client.get("/api/v1/policy", headers=quiet.auth).status_code == 200


def test_an_address_with_too_many_failed_authentications_gets_429(
        start_collector: Callable[..., CollectorProcess], fleet_factory: Callable[[CollectorProcess], Fleet]) -> None:
    proc = start_collector(env={"NETCHECK_RATE_ADDRESS": "4"}, args=("--trusted-proxy-header", "X-Real-IP"))
    fleet = fleet_factory(proc)
    device = fleet.enroll()
    office = {"X-Real-IP": "2001:db8::7"}
    guess = {**office, "Authorization": "Bearer nct_" + "A" * 43}

    def burst() -> list[int]:
        healthy = [fleet.client.get("/api/v1/policy", headers={**device.auth, **office}).status_code
                   for _ in range(10)]  # healthy requests from a shared address are not counted
        return healthy + [fleet.client.get("/api/v1/policy", headers=guess).status_code for _ in range(5)]

    assert _same_window(burst) == [200] * 10 + [401] * 4 + [429]
    # now bad tokens from the address wait; a valid device behind it is limited only per device
    blocked = fleet.client.get("/api/v1/policy", headers=guess)
    assert blocked.status_code == 429 and 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert fleet.client.get("/api/v1/policy", headers={**device.auth, **office}).status_code == 200
    assert fleet.post(device, upload(sample_report()), headers=office).status_code == 200
    other = {"Authorization": "Bearer nct_" + "B" * 43, "X-Real-IP": "2001:db8::8"}
    assert fleet.client.get("/api/v1/policy", headers=other).status_code == 401


def test_limits_are_shared_by_collector_processes(start_collector: Callable[..., CollectorProcess],
                                                 fleet_factory: Callable[[CollectorProcess], Fleet]) -> None:
    env = {"NETCHECK_RATE_DEVICE": "6"}
    first = start_collector(env=env)
    second = start_collector(env=env, database_url=first.database_url)
    fleet = fleet_factory(first)
    device = fleet.enroll()

    def burst() -> list[int]:
        codes = []
        with httpx.Client(base_url=second.url, timeout=30) as other:
            for i in range(8):
                client = fleet.client if i % 2 == 0 else other
                codes.append(client.get("/api/v1/policy", headers=device.auth).status_code)
        return codes

    assert _same_window(burst) == [200] * 6 + [429, 429]


def test_uploads_refused_for_their_report_id_count_towards_the_devices_limit(
        start_collector: Callable[..., CollectorProcess], fleet_factory: Callable[[CollectorProcess], Fleet]) -> None:
    """An upload let through on a recently accepted token (``app._Accepted``) is counted in the
    store's transaction; one refused for reusing a report id rolls that back, so it is counted
    again on its own: a device cannot upload past its limit by sending conflicting reports."""
    proc = start_collector(env={"NETCHECK_RATE_DEVICE": "4"})
    fleet = fleet_factory(proc)
    device = fleet.enroll()
    report = sample_report()

    def burst() -> list[int]:
        first = fleet.post(device, upload(report)).status_code
        return [first, *(fleet.post(device, upload({**report, "summary": f"other {i}"})).status_code
                         for i in range(4))]

    assert _same_window(burst) == [200, 422, 422, 422, 429]
