"""`netcheck enroll`, `netcheck agent --once` and the long-running `netcheck agent`, end to end.

Run inside a private network namespace holding only loopback, with a real
collector in it: the agent runs its real check (which finds no route and reports
UNKNOWN) and nothing can leave the host. Needs root (unshare); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def netns_flow(tmp_path: Path) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip for a private network namespace")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"unshare -n is not allowed here: {probe.stderr.decode().strip()}")
    work = tmp_path / "flow"
    work.mkdir()
    got = subprocess.run(["unshare", "-n", sys.executable, "-m", "tests.agent.netns_flow", str(work)],
                         capture_output=True, text=True, cwd=REPO, timeout=280, check=False,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert got.returncode == 0, got.stderr[-3000:]
    result: dict[str, Any] = json.loads(got.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.timeout(300)
def test_enroll_once_and_service_mode_end_to_end(netns_flow: dict[str, Any]) -> None:
    r = netns_flow
    code, out, err = r["enroll"]
    assert code == 0 and "Enrolled with" in out and err == ""
    assert r["token_mode"] == "0o600"
    code, out, err = r["once"]
    assert code == 0 and "1 uploaded, 0 waiting" in err, err
    devices = r["devices"]
    assert isinstance(devices, list) and len(devices) == 1 and devices[0]["tags"] == {"site": "paris"}
    assert devices[0]["name"] is None
    code, out, err = r["agent"]
    assert code == 0 and "Traceback" not in err, err
    assert r["stopped"], r["log_tail"]
    reports = r["reports"]
    assert isinstance(reports, list) and len(reports) >= 4
    assert [seq for _, seq in reports] == sorted(seq for _, seq in reports)
    assert {verdict for verdict, _ in reports} == {"UNKNOWN"}  # no route: could not assess
    assert r["log_has_token"] is False and r["log_has_secret"] is False
