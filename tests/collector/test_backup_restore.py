"""The restore drill (packaging/collector/backup.sh, restore.sh) on PostgreSQL: a backup taken
while devices upload, restored into a new cluster, holds every report acknowledged before the
backup started, nothing that was never sent, and serves the same devices with their tokens."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from netcheck import __version__
from tests.collector.conftest import NO_LIMITS, Device, check_log, make_fleet, sample_report, sql, upload
from tests.collector.harness import CollectorProcess, PgCluster

pytestmark = pytest.mark.postgres

SCRIPTS = Path(__file__).resolve().parents[2] / "packaging" / "collector"
DEVICES = 6
#: bounds of the load: it stops by itself
MAX_REPORTS = 3000
MAX_SECONDS = 120.0


class Load:
    """Devices uploading in a loop; records when each report was acknowledged."""

    def __init__(self, proc: CollectorProcess, devices: list[Device]) -> None:
        self.proc = proc
        self.devices = devices
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent: set[str] = set()
        self.acked: dict[str, float] = {}  # report_id -> monotonic time of the 200
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(d,), daemon=True) for d in devices]

    def run(self, device: Device) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        with self.proc.client() as client:
            seq = 0
            while not self.stop.is_set() and time.monotonic() < deadline and len(self.sent) < MAX_REPORTS:
                seq += 1
                report = sample_report()
                with self.lock:
                    self.sent.add(report["report_id"])
                response = client.post("/api/v1/reports", json=upload(report, seq=seq), headers=device.auth)
                if response.status_code == 200:
                    with self.lock:
                        self.acked[report["report_id"]] = time.monotonic()
                else:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 60
        while len(self.acked) < count and time.monotonic() < deadline and not self.failures:
            time.sleep(0.05)
        assert len(self.acked) >= count, f"only {len(self.acked)} reports acknowledged: {self.failures[:3]}"


def _env(cluster: PgCluster) -> dict[str, str]:
    return {**os.environ, "PATH": f"{cluster.bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def test_restore_drill_under_load(pg_cluster: PgCluster, tmp_path: Path) -> None:
    source_url = pg_cluster.create_database("drill")
    (tmp_path / "source").mkdir()
    (tmp_path / "restored").mkdir()
    proc = CollectorProcess(source_url, env=NO_LIMITS, workdir=tmp_path / "source")
    fleet = make_fleet(proc)
    devices = [fleet.enroll() for _ in range(DEVICES)]
    load = Load(proc, devices)
    for t in load.threads:
        t.start()
    try:
        load.wait_for(60)
        backup = tmp_path / "collector.dump"
        started = time.monotonic()
        subprocess.run(["bash", str(SCRIPTS / "backup.sh"), source_url, str(backup)], env=_env(pg_cluster),
                       check=True, capture_output=True, timeout=300)
        finished = time.monotonic()
        load.wait_for(len(load.acked) + 20)  # the load went on during and after the backup
    finally:
        load.stop.set()
        for t in load.threads:
            t.join(timeout=60)
        fleet.client.close()
        proc.stop()
    check_log(proc)
    assert not load.failures, load.failures[:5]
    before = {r for r, t in load.acked.items() if t < started}
    during = {r for r, t in load.acked.items() if started <= t <= finished}
    assert before and backup.stat().st_size > 0

    target = PgCluster(pg_cluster.bindir)  # a new cluster, as after losing the old one
    try:
        target_url = target.create_database("restored")
        subprocess.run(["bash", str(SCRIPTS / "restore.sh"), str(backup), target_url], env=_env(target),
                       check=True, capture_output=True, timeout=300)
        restored = {row.report_id for row in sql(target_url, "SELECT report_id FROM reports")}
        missing = before - restored
        assert not missing, f"{len(missing)} acknowledged reports are not in the backup"
        assert restored <= load.sent, "the backup holds reports that were never sent"
        print(f"restore drill: {len(before)} reports acknowledged before the backup, {len(during)} during it "
              f"({len(during & restored)} of those in it), {len(load.acked)} in all; backup "
              f"{backup.stat().st_size / 1e6:.1f} MB in {finished - started:.1f} s")
        assert sql(target_url, "SELECT count(*) FROM devices")[0][0] == DEVICES

        # the restored collector serves the same devices, with the tokens they hold
        with CollectorProcess(target_url, env=NO_LIMITS, workdir=tmp_path / "restored") as restored_proc:
            with restored_proc.client() as client:
                ready = client.get("/readyz").json()
                assert ready["status"] == "ready" and ready["version"] == __version__
                report = sample_report()
                response = client.post("/api/v1/reports", json=upload(report, seq=10**6), headers=devices[0].auth)
                assert response.status_code == 200, response.text
        check_log(restored_proc)
    finally:
        target.close()
