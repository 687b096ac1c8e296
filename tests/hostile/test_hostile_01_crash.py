"""Item 1: a crash is never a verdict. Any exception that is not a NetcheckError exits 5 with one
line naming a crash log, and with --json still prints a JSON object that says the check failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: A real netcheck process whose check hits a bug (an exception no code expects).
_CRASHING = """
import os, sys
import netcheck.check
def broken(*args, **kwargs):
    raise RuntimeError("a bug deep inside the check reading " + os.environ["HOME"] + "/x")
netcheck.check.perform_check = broken
from netcheck.cli import main
main(sys.argv[1:])
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home" / "alexw"
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "XDG_CACHE_HOME": str(home / ".cache"), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", _CRASHING, *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)


def test_hostile_crash_exits_5_with_one_line_and_a_crash_log(tmp_path: Path) -> None:
    proc = _run(tmp_path, "check", "--no-progress")
    assert proc.returncode == 5, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: internal error in netcheck (RuntimeError")
    log = Path(lines[0].split("details in ", 1)[1].split(";", 1)[0])
    assert log.is_file() and log.parent == tmp_path / "home" / "alexw" / ".cache" / "netcheck" / "crashes"
    text = log.read_text()
    assert "Traceback" in text and "RuntimeError: a bug deep inside the check" in text
    assert str(tmp_path / "home" / "alexw") not in text  # the home directory is replaced by ~


def test_hostile_crash_with_json_prints_a_json_error(tmp_path: Path) -> None:
    proc = _run(tmp_path, "check", "--json", "--no-progress")
    assert proc.returncode == 5
    doc = json.loads(proc.stdout)
    assert doc["schema_version"] == 2
    assert doc["error"]["kind"] == "internal" and doc["error"]["exit_code"] == 5
    assert "RuntimeError" in doc["error"]["message"]
    assert Path(doc["error"]["crash_log"]).is_file()
    assert "verdict" not in doc  # never mistaken for a report


def test_hostile_help_documents_exit_code_5(tmp_path: Path) -> None:
    for args in (["--help"], ["check", "--help"]):
        proc = subprocess.run([sys.executable, "-m", "netcheck", *args], capture_output=True, text=True,
                              timeout=60, cwd=REPO)
        assert proc.returncode == 0
        assert "5 internal error" in " ".join(proc.stdout.split())
