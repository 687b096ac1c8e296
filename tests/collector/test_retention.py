"""Retention: reports are deleted some days after they arrived, never a device's latest one.

Against real collector processes on both databases: the admin command, and the pruning that
every ``netcheck serve`` process does on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.collector.conftest import Device, Fleet, make_fleet, sample_report, sql, upload
from tests.collector.harness import CollectorProcess
from tests.collector.test_admin_cli import netcheck


@pytest.fixture
def fleet_with(start_collector: Callable[..., CollectorProcess]) -> Iterator[Callable[..., Fleet]]:
    """A fleet on a dedicated collector started with ``env``."""
    fleets: list[Fleet] = []

    def make(env: dict[str, str] | None = None) -> Fleet:
        fleets.append(make_fleet(start_collector(env=env)))
        return fleets[-1]

    yield make
    for fleet in fleets:
        fleet.client.close()


def _reports(fleet: Fleet, device: Device, count: int) -> list[str]:
    """Upload ``count`` reports (seq 1..count); returns their report ids, oldest first."""
    ids = []
    for seq in range(1, count + 1):
        report = sample_report()
        assert fleet.post(device, upload(report, seq=seq)).status_code == 200
        ids.append(report["report_id"])
    return ids


def _age(fleet: Fleet, report_ids: list[str], days: int) -> None:
    for rid in report_ids:
        sql(fleet.database_url, f"UPDATE reports SET received_at = received_at - INTERVAL '{days} days' "
                                "WHERE report_id = :r" if "postgresql" in fleet.database_url else
            f"UPDATE reports SET received_at = datetime(received_at, '-{days} days') WHERE report_id = :r", r=rid)


def _left(fleet: Fleet, device: Device) -> list[str]:
    rows = sql(fleet.database_url, "SELECT report_id FROM reports WHERE device_id = :d ORDER BY seq",
               d=device.device_id)
    return [r.report_id for r in rows]


def test_admin_prune_deletes_old_reports_and_keeps_each_devices_latest(fleet_with: Callable[..., Fleet]) -> None:
    fleet = fleet_with()
    busy, silent = fleet.enroll(), fleet.enroll()
    busy_ids = _reports(fleet, busy, 4)
    silent_ids = _reports(fleet, silent, 2)
    _age(fleet, busy_ids[:2], 100)
    _age(fleet, silent_ids, 100)  # a laptop that stopped reporting 100 days ago
    workloads_before = fleet.count("SELECT count(*) FROM report_workloads WHERE device_id = :d", d=busy.device_id)

    result = netcheck("admin", "prune", database_url=fleet.database_url)  # the default: 90 days

    assert "Deleted 3 report(s)" in result.stdout
    assert _left(fleet, busy) == busy_ids[2:]
    assert _left(fleet, silent) == silent_ids[1:]  # its latest report stays, however old
    workloads_after = fleet.count("SELECT count(*) FROM report_workloads WHERE device_id = :d", d=busy.device_id)
    assert workloads_after == workloads_before // 2  # the deleted reports' workload rows went with them
    again = netcheck("admin", "prune", "--older-than", "7d", database_url=fleet.database_url)
    assert "Deleted 0 report(s)" in again.stdout


def test_admin_prune_with_retention_off_deletes_nothing(fleet_with: Callable[..., Fleet]) -> None:
    fleet = fleet_with()
    device = fleet.enroll()
    ids = _reports(fleet, device, 2)
    _age(fleet, ids, 400)
    result = netcheck("admin", "prune", database_url=fleet.database_url, env={"NETCHECK_RETENTION_DAYS": "0"})
    assert "Retention is off" in result.stdout
    assert _left(fleet, device) == ids
    bad = netcheck("admin", "prune", "--older-than", "soon", database_url=fleet.database_url, check=False)
    assert bad.returncode == 4 and "is not a duration" in bad.stderr  # a usage error


def test_every_collector_process_prunes_on_its_own(fleet_with: Callable[..., Fleet]) -> None:
    fleet = fleet_with({"NETCHECK_RETENTION_DAYS": "30", "NETCHECK_PRUNE_INTERVAL_S": "0.5"})
    device = fleet.enroll()
    ids = _reports(fleet, device, 3)
    _age(fleet, ids[:2], 31)
    deadline = time.monotonic() + 30
    while _left(fleet, device) != ids[2:] and time.monotonic() < deadline:
        time.sleep(0.25)
    assert _left(fleet, device) == ids[2:]
    # and uploads carry on meanwhile
    assert fleet.post(device, upload(sample_report(), seq=4)).status_code == 200


def _forms(fleet: Fleet, device: Device) -> list[str]:
    return [r.form for r in sql(fleet.database_url, "SELECT form FROM reports WHERE device_id = :d ORDER BY id",
                                d=device.device_id)]


def test_every_collector_process_compacts_after_pruning(fleet_with: Callable[..., Fleet]) -> None:
    fleet = fleet_with({"NETCHECK_FULL_HISTORY": "1", "NETCHECK_PRUNE_INTERVAL_S": "0.5"})
    device = fleet.enroll()
    _reports(fleet, device, 3)
    deadline = time.monotonic() + 30
    while _forms(fleet, device) != ["reduced", "reduced", "zlib"] and time.monotonic() < deadline:
        time.sleep(0.25)
    assert _forms(fleet, device) == ["reduced", "reduced", "zlib"]


def test_admin_compact(fleet_with: Callable[..., Fleet]) -> None:
    fleet = fleet_with()
    device = fleet.enroll()
    _reports(fleet, device, 4)
    result = netcheck("admin", "compact", "--full-history", "2", database_url=fleet.database_url)
    assert "Compacted 4 report(s)" in result.stdout
    assert _forms(fleet, device) == ["reduced", "reduced", "zlib", "zlib"]
    assert "Compacted 0 report(s)" in netcheck("admin", "compact", database_url=fleet.database_url).stdout
    bad = netcheck("admin", "compact", "--full-history", "0", database_url=fleet.database_url, check=False)
    assert bad.returncode == 4 and "Traceback" not in bad.stderr
