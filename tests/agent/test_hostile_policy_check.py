"""A real check under a hostile policy (issue 10, item 10): the agent, enrolled with a real
collector whose database holds a value it cannot use for every key, runs its real check with its
own values instead, and the report arrives with its probes. Inside a private network namespace
(tests/agent/hostile_policy_flow.py); needs root, unshare and ip, skipped otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.hostile_policy_flow import HOSTILE_THRESHOLDS, HOSTILE_TOP

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_hostile_policy_never_stops_a_real_check(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip for a private network namespace")
    work = tmp_path / "flow"
    work.mkdir()
    got = subprocess.run(["unshare", "-n", sys.executable, "-m", "tests.agent.hostile_policy_flow", str(work)],
                         capture_output=True, text=True, cwd=REPO, timeout=280, check=False,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert got.returncode == 0, got.stderr[-3000:]
    r = json.loads(got.stdout.strip().splitlines()[-1])
    assert r["enroll"][0] == 0, r["enroll"]
    code, log = r["once"]
    assert code == 0 and "1 uploaded, 0 waiting" in log and "Traceback" not in log, log
    # every hostile value was named and left out
    for table, entries in HOSTILE_THRESHOLDS.items():
        for key in entries:
            assert f"thresholds.{table}" in log and (table == "no_such_table" or f"{table}.{key}:" in log), key
    for key in ("tenant", "instance", "user_domain", "schedule.interval_s", "schedule.jitter_s"):
        assert f"{key}:" in log, key
    assert "could not be updated from file:" not in log  # the unusable endpoints_url was not even tried
    # and the check ran with the agent's own values: probes, the default instance, no tenant
    (report,) = r["reports"]
    assert report["probes"] > 50 and {"dns", "http"} <= set(report["kinds"])
    assert report["instance"] == "Worldwide" and report["tenant"] is None
    assert report["deadline_s"] == HOSTILE_TOP["deadline_s"]  # the one usable value was used
