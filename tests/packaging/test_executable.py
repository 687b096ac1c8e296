"""The single-file agent executable (PyInstaller): runs with no Python, its PAC sandbox child
works frozen, it cannot assess without a network (exit 3), and inside a lab scenario its
prediction matches the measured truth."""

from __future__ import annotations

import ast
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netcheck import __version__
from netcheck.proxy.pac import CHILD_ARG, child_argv
from tests.lab.netns import require_root
from tests.packaging.conftest import ROOT, record, run
from tests.test_offline import empty_netns  # noqa: F401 - the fixture (a namespace with nothing up)

pytestmark = pytest.mark.packaging

PAC = """function FindProxyForURL(url, host) {
  if (isInNet(dnsResolve(host), "10.0.0.0", "255.0.0.0")) return "DIRECT";
  return "PROXY proxy.example.net:8080; DIRECT";
}"""
#: the environment of a user's session: no Python anywhere on it
BARE = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def test_version(agent_exe: Path, tmp_path: Path) -> None:
    out = run([str(agent_exe), "--version"], env={**BARE, "HOME": str(tmp_path)}, cwd=tmp_path)
    assert out.stdout.strip() == f"netcheck, version {__version__}"


def test_endpoint_data_is_inside(agent_exe: Path, tmp_path: Path) -> None:
    out = run([str(agent_exe), "endpoints", "show", "--instance", "USGovDoD"], env={**BARE, "HOME": str(tmp_path)},
              cwd=tmp_path)
    assert "USGovDoD endpoint data" in out.stdout and "bundled snapshot" in out.stdout, out.stdout[:500]


def test_the_collector_is_not_inside(agent_exe: Path, tmp_path: Path) -> None:
    out = run([str(agent_exe), "serve"], env={**BARE, "HOME": str(tmp_path)}, cwd=tmp_path, check=False)
    assert out.returncode == 4 and "not available in this installation" in out.stderr, out.stderr


def test_every_agent_module_is_inside(agent_exe: Path) -> None:
    """netcheck imports subcommands and per-OS modules lazily: each must be in the executable (the
    collector's must not)."""
    toc = ast.literal_eval((agent_exe.parent / "modules.toc").read_text())
    inside = {entry[0] for entry in toc[1]}
    package = ROOT / "netcheck"
    modules = {".".join(("netcheck", *p.relative_to(package).with_suffix("").parts)).removesuffix(".__init__")
               for p in package.rglob("*.py")}
    agent = {m for m in modules if not m.startswith("netcheck.collector")}
    assert agent - inside == set()
    assert {m for m in inside if m.startswith("netcheck.collector")} == set()
    assert {"dns.rdtypes.IN.A", "dns.rdtypes.ANY.CNAME", "dukpy", "pypac.parser_functions"} <= inside


def test_pac_child_runs_frozen(agent_exe: Path, tmp_path: Path) -> None:
    """What netcheck.proxy.pac starts when frozen (child_argv), fed the request the parent sends."""
    request = {"pac": PAC, "urls": ["https://in.example/", "https://out.example/"], "my_ip": "10.0.0.5",
               "resolve": {"in.example": ["10.1.2.3"], "out.example": ["192.0.2.1"]}}
    out = run([str(agent_exe), CHILD_ARG], input=json.dumps(request), env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines == [{"ready": True, "entry": "FindProxyForURL"},
                     {"url": "https://in.example/", "result": "DIRECT"},
                     {"url": "https://out.example/", "result": "PROXY proxy.example.net:8080; DIRECT"}]


def test_the_entry_point_is_the_pac_child_unfrozen_too(tmp_path: Path) -> None:
    """netcheck/__main__.py, which PyInstaller freezes, run by Python: the same child."""
    request = {"pac": PAC, "urls": ["https://out.example/"], "resolve": {"out.example": ["192.0.2.1"]}}
    out = run([sys.executable, "-m", "netcheck", CHILD_ARG], input=json.dumps(request), cwd=ROOT)
    assert [json.loads(line) for line in out.stdout.splitlines()][-1] == {
        "url": "https://out.example/", "result": "PROXY proxy.example.net:8080; DIRECT"}


def test_child_argv_in_a_frozen_build(monkeypatch: pytest.MonkeyPatch) -> None:
    assert child_argv() == [sys.executable, "-m", "netcheck.proxy.pac"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/opt/netcheck/netcheck")
    assert child_argv() == ["/opt/netcheck/netcheck", CHILD_ARG]


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_check_without_a_network_cannot_assess(agent_exe: Path, empty_netns: str, tmp_path: Path) -> None:  # noqa: F811
    """In a namespace with nothing but a loopback that is down, as a standard user: exit 3."""
    tmp_path.chmod(0o777)
    argv = ["ip", "netns", "exec", empty_netns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            "env", "-i", *[f"{k}={v}" for k, v in BARE.items()], f"HOME={tmp_path}",
            str(agent_exe), "check", "--json", "--no-progress"]
    out = run(argv, check=False, cwd=tmp_path, timeout=120)
    assert out.returncode == 3, f"exit {out.returncode}: {out.stderr[-2000:]}"
    report = json.loads(out.stdout)
    assert report["verdict"] == "UNKNOWN" and report["exit_code"] == 3
    assert report["tool"] == {"name": "netcheck", "version": __version__}


@pytest.mark.lab
def test_lab_scenario_from_the_executable(agent_exe: Path) -> None:
    """pac-at-site (the PAC child runs for real) with the executable as the laptop's netcheck."""
    from tests.lab.preflight import missing_tools
    from tests.lab.runner import SCENARIO_DIR, run_scenario

    reason = require_root()
    if reason:
        pytest.skip(reason)
    missing = missing_tools()
    if missing:
        pytest.fail("lab tools missing: " + "; ".join(missing))
    result = run_scenario(SCENARIO_DIR / "pac-at-site.toml", netcheck=str(agent_exe))
    nc = result["netcheck"]
    assert nc["status"] == "ok" and nc.get("has_outage"), nc
    assert not result["lab_problems"], result["lab_problems"]
    outage = [r for r in result["rows"] if r["phase"] != "site_up" and r["prediction_source"] == "outage"]
    assert outage, "the report has no outage predictions"
    wrong = [f"{r['phase']}/{r['workload']}: predicted {r['predicted']}, truth {r['truth']}" for r in outage
             if not r["match"]]
    assert not wrong, wrong
    record("executable in lab scenario pac-at-site: netcheck check", f"{nc['seconds']} s, exit {nc['exit_code']}")


def _startup(argv: list[str], env: dict[str, str], runs: int = 10) -> str:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return f"median {statistics.median(times) * 1000:.0f} ms, min {min(times) * 1000:.0f} ms ({runs} runs)"


def test_startup_time_printed(agent_exe: Path, tmp_path: Path) -> None:
    """`--version` from the executable and from the virtual environment: printed, not asserted."""
    env = {**BARE, "HOME": str(tmp_path)}
    venv_netcheck = Path(sys.executable).parent / "netcheck"
    assert venv_netcheck.exists()
    record("start-up `netcheck --version`, executable", _startup([str(agent_exe), "--version"], env))
    record("start-up `netcheck --version`, venv", _startup([str(venv_netcheck), "--version"],
                                                           {**env, "PATH": f"{venv_netcheck.parent}:/usr/bin:/bin"}))
    record("machine load during start-up runs", f"{os.getloadavg()[0]:.1f} (1-min load average, 2 cores shared)")
