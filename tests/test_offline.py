"""`netcheck check` with no network at all: an empty network namespace, as a standard user.

The laptop with Wi-Fi off: the check must end quickly with exit 3 and one plain
sentence, not a wall of failures and not a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

NOBODY = 65534


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if not shutil.which("ip") or not shutil.which("setpriv"):
        return "needs iproute2 and setpriv"
    return None


pytestmark = pytest.mark.skipif(_can_make_namespaces() is not None, reason=str(_can_make_namespaces()))


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the standard user can reach (pytest's own tmp dirs are root-only)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="nc-off-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def empty_netns() -> Iterator[str]:
    name = f"nc-off-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _run(netns: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    os.chown(home, NOBODY, NOBODY)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    cmd = ["ip", "netns", "exec", netns, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
           sys.executable, "-m", "netcheck", "check", "--no-progress", "--deadline", "10", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def test_no_network_exits_3_with_one_plain_sentence(empty_netns: str, shared_dir: Path) -> None:
    proc = _run(empty_netns, shared_dir)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.splitlines()[0] == "netcheck verdict: COULD NOT ASSESS"
    assert "There is no network connection" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(proc.stdout.strip().splitlines()) <= 4  # a sentence, not a table of failures


def test_no_network_json_report_is_valid_and_says_unknown(empty_netns: str, shared_dir: Path) -> None:
    import jsonschema

    from netcheck.render.json import SCHEMA_PATH

    proc = _run(empty_netns, shared_dir, "--json")
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(report)
    assert report["verdict"] == "UNKNOWN" and report["exit_code"] == 3
    assert report["probes"] == [] and report["network"]["online"] is False
    assert all(w["status"] == "not_tested" for w in report["workloads"])


def test_bad_option_is_a_usage_error_exit_4(empty_netns: str, shared_dir: Path) -> None:
    proc = _run(empty_netns, shared_dir, "--tenant", "not a tenant!")
    assert proc.returncode == 4
    assert "is not a tenant name" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_malformed_endpoint_file_is_exit_4_naming_file_and_set(empty_netns: str, shared_dir: Path) -> None:
    bad = shared_dir / "endpoints.json"
    bad.write_text('[{"id": 7, "serviceArea": "Exchange", "category": "Fast", "urls": ["a.example"], '
                   '"tcpPorts": "443"}]')
    os.chmod(bad, 0o644)
    proc = _run(empty_netns, shared_dir, "--endpoints-file", str(bad))
    assert proc.returncode == 4
    assert proc.stderr.strip() == f"Error: {bad}: endpoint set 7: unknown category 'Fast'"


def test_endpoint_file_the_user_may_not_read_is_exit_4(empty_netns: str, shared_dir: Path) -> None:
    secret = shared_dir / "private.json"
    secret.write_text("[]")
    os.chmod(secret, 0o600)
    proc = _run(empty_netns, shared_dir, "--endpoints-file", str(secret))
    assert proc.returncode == 4
    assert "is not readable" in proc.stderr and "Traceback" not in proc.stderr
