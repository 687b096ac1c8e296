"""The admin command line (run for real, as a subprocess) and C12 output safety of exports."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.collector.conftest import Fleet, make_fleet, sample_report, upload
from tests.collector.harness import CollectorProcess

FORMULAS = ["=HYPERLINK(\"http://evil.invalid\",\"x\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(1)", " =1+1",
            "\tTAB", "\rCR"]


def netcheck(*args: str, database_url: str | None = None, env: dict[str, str] | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NETCHECK_")}
    full_env.update(env or {})
    db = ("--database-url", database_url) if database_url else ()
    result = subprocess.run([sys.executable, "-m", "netcheck", *args, *db], capture_output=True, text=True,
                            env=full_env, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_secret_create_list_revoke(fleet: Fleet) -> None:
    url = fleet.database_url
    created = netcheck("admin", "secret", "create", "--site", "paris", "--note", "sent to Paris IT",
                       database_url=url)
    secret = created.stdout.strip()
    assert secret.startswith("ncs_") and len(secret.splitlines()) == 1
    assert "shown only this once" in created.stderr
    secret_id = created.stderr.split()[3]
    listing = netcheck("admin", "secret", "list", "--json", database_url=url)
    assert secret not in listing.stdout
    row = next(r for r in json.loads(listing.stdout) if r["id"] == secret_id)
    assert row["site"] == "paris" and row["revoked_at"] is None
    assert fleet.enroll_raw(secret=secret).status_code == 200
    netcheck("admin", "secret", "revoke", secret_id, database_url=url)
    assert fleet.enroll_raw(secret=secret).status_code == 401
    again = netcheck("admin", "secret", "revoke", secret_id, database_url=url, check=False)
    assert again.returncode == 4 and len(again.stderr.strip().splitlines()) == 1


def test_devices_and_revoke_device(fleet: Fleet) -> None:
    device = fleet.enroll(tags={"site": "lyon"}, name="LT-7")
    listing = json.loads(netcheck("admin", "devices", "--json", database_url=fleet.database_url).stdout)
    row = next(r for r in listing if r["device_id"] == device.device_id)
    assert row["name"] == "LT-7" and row["tags"] == {"site": "lyon"} and row["active_tokens"] == 1
    table = netcheck("admin", "devices", database_url=fleet.database_url).stdout
    assert device.device_id in table and "site=lyon" in table
    netcheck("admin", "revoke-device", device.device_id, database_url=fleet.database_url)
    assert fleet.client.get("/api/v1/policy", headers=device.auth).status_code == 401


def test_csv_export_neutralises_formulas(fleet: Fleet, tmp_path: Path) -> None:
    devices = []
    for i, evil in enumerate(FORMULAS):
        device = fleet.enroll(name=evil.strip("\t\r") if i == 0 else evil.replace("\t", " ").replace("\r", " "),
                              tags={"site": f"x{i}", "dept": evil.replace("\t", "").replace("\r", "") or "z"})
        report = sample_report()
        report["workloads"][0]["id"] = "exchange"
        assert fleet.post(device, upload(report)).status_code == 200
        devices.append(device)
    out = tmp_path / "fleet.csv"
    netcheck("admin", "export", "--format", "csv", "--output", str(out), database_url=fleet.database_url)
    rows = list(csv.DictReader(io.StringIO(out.read_text("utf-8"))))
    ours = [r for r in rows if r["device_id"] in {d.device_id for d in devices}]
    assert len(ours) == len(FORMULAS)
    for row in rows:
        for cell in row.values():
            assert not cell.lstrip(" ").startswith(("=", "+", "-", "@", "\t", "\r")), row
    first = next(r for r in ours if r["device_id"] == devices[0].device_id)
    assert first["name"] == "'" + FORMULAS[0]
    assert first["verdict"] == "AT_RISK" and first["workload:exchange"] == "ok"
    assert first["workload:teams_media"] == "degraded"


def test_json_export_holds_the_latest_report_per_device(fleet: Fleet) -> None:
    device = fleet.enroll(tags={"site": "paris"}, name="=1+1")
    assert fleet.post(device, upload(sample_report(verdict="NOT_READY", exit_code=2), seq=1)).status_code == 200
    latest = sample_report(verdict="READY", exit_code=0)
    assert fleet.post(device, upload(latest, seq=2)).status_code == 200
    data = json.loads(netcheck("admin", "export", "--format", "json", database_url=fleet.database_url).stdout)
    row = next(d for d in data["devices"] if d["device_id"] == device.device_id)
    assert row["verdict"] == "READY" and row["report_id"] == latest["report_id"]
    assert row["name"] == "=1+1"  # JSON is data: no neutralisation needed or wanted
    assert row["tags"] == {"site": "paris"} and row["workloads"] == {"exchange": "ok", "teams_media": "degraded"}


def test_policy_set_and_show(start_collector: Callable[..., CollectorProcess],
                             fleet_factory: Callable[[CollectorProcess], Fleet]) -> None:
    fleet = fleet_factory(start_collector())  # its own database: the policy is collector-wide
    url = fleet.database_url
    netcheck("admin", "policy", "set", "tenant", "contoso", database_url=url)
    netcheck("admin", "policy", "set", "schedule.jitter_s", "600", database_url=url)
    netcheck("admin", "policy", "set", "site_profiles", '[{"name": "paris", "vpn_mode": "split"}]', database_url=url)
    refused = netcheck("admin", "policy", "set", "site_profiles", '[{"site": "paris"}]', database_url=url, check=False)
    assert refused.returncode == 4 and "site_profiles" in refused.stderr
    shown = json.loads(netcheck("admin", "policy", "show", database_url=url).stdout)
    assert shown["tenant"] == "contoso" and shown["schedule"]["jitter_s"] == 600
    device = fleet.enroll()
    served = fleet.client.get("/api/v1/policy", headers=device.auth).json()
    assert served == shown
    bad = netcheck("admin", "policy", "set", "schedule.interval_s", "5", database_url=url, check=False)
    assert bad.returncode == 4 and "interval_s" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    netcheck("admin", "policy", "set", "tenant", "null", database_url=url)


def test_sweep_create_and_list(fleet: Fleet) -> None:
    url = fleet.database_url
    paris = fleet.enroll(tags={"site": "paris"})
    sweep_id = netcheck("admin", "sweep", "create", "--tag", "site=paris", "--expires", "2h", "--thorough",
                        database_url=url).stdout.strip()
    pending = fleet.client.get("/api/v1/sweeps/pending", headers=paris.auth).json()["sweeps"]
    assert sweep_id in [s["id"] for s in pending]
    assert fleet.post(paris, upload(sample_report(), sweep_id=sweep_id)).status_code == 200
    listed = json.loads(netcheck("admin", "sweep", "list", "--json", database_url=url).stdout)
    row = next(s for s in listed if s["id"] == sweep_id)
    assert row["answers"] == 1 and row["tag"] == "site=paris" and row["thorough"] is True
    bad = netcheck("admin", "sweep", "create", "--expires", "soon", database_url=url, check=False)
    assert bad.returncode == 4


def test_serve_with_no_arguments_uses_sqlite_in_the_data_dir(backend: str, tmp_path: Path,
                                                             start_collector: Callable[..., CollectorProcess]
                                                             ) -> None:
    if backend != "sqlite":
        pytest.skip("the zero-configuration default is SQLite")
    proc = CollectorProcess(None, workdir=tmp_path)
    try:
        assert proc.first_line.count("\n") == 1 and proc.url.startswith("http://127.0.0.1:")
        assert Path(proc.database_url.removeprefix("sqlite:///")).exists()
        fleet = make_fleet(proc)
        device = fleet.enroll()
        assert fleet.post(device, upload(sample_report())).status_code == 200
        fleet.client.close()
        env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
        listing = json.loads(netcheck("admin", "devices", "--json", env=env).stdout)
        assert [d["device_id"] for d in listing] == [device.device_id]
    finally:
        proc.stop()


@pytest.mark.parametrize("url", ["mysql://localhost/x", "postgresql://netcheck@127.0.0.1:1/nothing",
                                 "not a url"])
def test_a_bad_database_url_is_one_line_and_exit_4(backend: str, url: str) -> None:
    if backend != "sqlite":
        pytest.skip("does not depend on the backend")
    for args in (("serve", "--port", "0"), ("admin", "devices")):
        result = netcheck(*args, database_url=url, check=False)
        assert result.returncode == 4, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_empty_device_list_says_which_database_it_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/elsewhere.db"
    result = netcheck("admin", "devices", database_url=url)
    assert result.stdout == ""
    assert "No device has enrolled in" in result.stderr and "elsewhere.db" in result.stderr
