"""`netcheck check` with several sites and `--site-down`: a real check in a sandbox that reaches nothing
(tests/hostile/sandbox.py), and the usage error for a site nobody named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile.sandbox import REPO, needs_sandbox, run_sandboxed

PROFILES = """
[[site]]
name = "Paris"
networks = ["10.20.0.0/16"]
vpn_gateways = ["vpn.paris.example"]
vpn_failover = ["Dublin DC"]

[[site]]
name = "Dublin DC"
networks = ["10.30.0.0/16"]
federation_hosts = ["adfs.contoso.example"]
"""


def _profiles(tmp_path: Path) -> Path:
    path = tmp_path / "sites.toml"
    path.write_text(PROFILES)
    return path


def test_an_unknown_site_is_exit_4_naming_the_known_ones(tmp_path: Path) -> None:
    """Refused before any probe: the names are checked against the profiles first."""
    proc = subprocess.run([sys.executable, "-m", "netcheck", "check", "--no-progress", "--site-profile",
                           str(_profiles(tmp_path)), "--site-down", "Lyon"], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 4, proc.stderr
    assert "'Lyon' is not a site netcheck knows; the sites are: Paris, Dublin DC, unnamed site" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_profiles_naming_the_same_site_twice_are_exit_4(tmp_path: Path) -> None:
    path = tmp_path / "twice.toml"
    path.write_text('[[site]]\nname = "Paris"\n\n[[site]]\nname = "paris"\n')
    proc = subprocess.run([sys.executable, "-m", "netcheck", "check", "--no-progress", "--site-profile", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 4 and "two site profiles are named 'Paris'" in proc.stderr


@needs_sandbox
@pytest.mark.timeout(180)
def test_several_sites_answer_per_site_and_site_down_shows_just_that_case(tmp_path: Path) -> None:
    profiles = str(_profiles(tmp_path))
    args = ["-m", "netcheck", "check", "--no-progress", "--deadline", "4", "--tenant", "contoso",
            "--site-profile", profiles]
    every = run_sandboxed([*args, "--json"], tmp_path)
    assert every.returncode in (1, 2), every.stderr
    outage = json.loads(every.stdout)["outage"]
    assert [s["name"] for s in outage["sites"]] == ["Paris", "Dublin DC"]
    assert [c["down"] for c in outage["cases"]] == [["Paris"], ["Dublin DC"], ["Paris", "Dublin DC"]]
    assert outage["facts"]["profiles"][0]["vpn_failover"] == ["Dublin DC"]
    assert outage["facts"]["vpn_sites"] == ["Paris", "Dublin DC"]
    text = run_sandboxed(args, tmp_path)
    assert "If one of your sites went down" in text.stdout
    assert "If Paris went down:" in text.stdout and "If Dublin DC went down:" in text.stdout
    one = run_sandboxed([*args, "--site-down", "dublin dc"], tmp_path)
    assert "If Dublin DC went down:" in one.stdout and "If Paris went down:" not in one.stdout
    asked = run_sandboxed([*args, "--json", "--site-down", "Paris", "--site-down", "Dublin DC"], tmp_path)
    assert [c["down"] for c in json.loads(asked.stdout)["outage"]["cases"]] == [["Paris", "Dublin DC"]]
