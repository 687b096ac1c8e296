"""Run netcheck on the laptop, as its unprivileged user, and read its report."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import addressing as A
from .world import LAPTOP_UID, World

#: netcheck's per-workload status -> the lab's truth vocabulary.
STATUS_TO_TRUTH = {"ok": "works", "degraded": "degraded", "failed": "fails"}
EXIT_MEANING = {0: "ready", 1: "at risk", 2: "not ready", 3: "could not assess"}
TRUTH_VALUES = ("works", "degraded", "fails")


@dataclass
class NetcheckRun:
    """What happened when netcheck ran (``status``: ok | unavailable | error)."""

    status: str
    message: str = ""
    exit_code: int | None = None
    report: dict[str, Any] | None = None
    seconds: float = 0.0
    argv: list[str] = field(default_factory=list)
    stderr: str = ""
    dropped_flags: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "seconds": round(self.seconds, 2)}
        if self.message:
            out["message"] = self.message
        if self.exit_code is not None:
            out["exit_code"] = self.exit_code
        if self.dropped_flags:
            out["flags_not_supported"] = self.dropped_flags
        if self.report:
            out["verdict"] = self.report.get("verdict")
            out["has_outage"] = isinstance(self.report.get("outage"), dict)
        return out


def find_netcheck(python: str) -> str | None:
    """netcheck's console script: beside the lab's Python first, then on PATH."""
    beside = Path(python).parent / "netcheck"
    if beside.exists():
        return str(beside)
    return shutil.which("netcheck")


#: Options the lab passes when netcheck supports them (with their values).
OPTIONAL_FLAGS = ("--no-progress", "--user", "--deadline", "--whoami-name", "--teams-relay", "--site-profile")


@functools.lru_cache(maxsize=8)
def supported_options(exe: str) -> frozenset[str] | None:
    """Long options ``netcheck check --help`` lists (None if help fails)."""
    try:
        res = subprocess.run([exe, "check", "--help"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    return frozenset(re.findall(r"(--[a-z][a-z0-9-]*)", res.stdout))


def netcheck_argv(world: World, exe: str) -> tuple[list[str], list[str]]:
    """The command line, and the optional flags left out because netcheck lacks them."""
    s = world.scenario
    optional = {
        "--no-progress": [],
        "--user": [s.netcheck.user],
        "--deadline": [f"{s.netcheck.deadline:g}"],
        "--whoami-name": [A.WHOAMI_NAME],
        "--teams-relay": [A.TEAMS_RELAY_NAME],
        "--site-profile": [str(world.site_profile_file())] if s.netcheck.site_profile else [],
    }
    known = supported_options(exe)
    argv = [exe, "check", "--json", "--endpoints-file", str(world.endpoints_file), "--tenant", s.netcheck.tenant]
    dropped = []
    for flag in OPTIONAL_FLAGS:
        if flag == "--site-profile" and not s.netcheck.site_profile:
            continue
        if known is None or flag in known:
            argv += [flag, *optional[flag]]
        else:
            dropped.append(flag)
    return argv + list(s.netcheck.args), dropped


def run_netcheck(world: World, exe: str | None = None) -> NetcheckRun:
    """Run netcheck's check on the laptop: ``exe`` (e.g. the frozen executable) or the one beside the lab's Python."""
    exe = exe or find_netcheck(world.python)
    if exe is None:
        return NetcheckRun("unavailable", "netcheck unavailable: no 'netcheck' command installed (pip install -e .)")
    argv, dropped = netcheck_argv(world, exe)
    start = time.monotonic()
    res = world.laptop_run(argv, timeout=world.scenario.netcheck.deadline + 60)
    elapsed = time.monotonic() - start
    if res.returncode in (126, 127) or (not res.stdout.strip() and "Permission denied" in res.stderr):
        return NetcheckRun(
            "unavailable",
            f"netcheck unavailable: the laptop's user (uid {LAPTOP_UID}) cannot run {exe}: install the project "
            "where every user can read it",
            exit_code=res.returncode,
            seconds=elapsed,
            argv=argv,
            stderr=res.stderr[-4000:],
        )
    run = NetcheckRun(
        "ok", exit_code=res.returncode, seconds=elapsed, argv=argv, stderr=res.stderr[-4000:], dropped_flags=dropped
    )
    if res.returncode == 4 or (res.returncode == 2 and not res.stdout.strip()):
        last = (res.stderr.strip().splitlines() or ["usage error"])[-1]
        run.status, run.message = "unavailable", f"netcheck unavailable: usage/config error: {last[:300]}"
        return run
    try:
        report = json.loads(res.stdout)
    except ValueError:
        last = (res.stderr.strip().splitlines() or [res.stdout.strip()[:200] or "no output"])[-1]
        run.status, run.message = "error", f"netcheck printed no JSON report (exit {res.returncode}): {last[:300]}"
        return run
    if not isinstance(report, dict):
        run.status, run.message = "error", "netcheck's report is not a JSON object"
        return run
    run.report = report
    if res.returncode not in EXIT_MEANING:
        run.message = f"unexpected exit code {res.returncode}"
    return run


def _possible(row: dict[str, Any], key: str) -> list[str]:
    """The fates an "uncertain" prediction allows (netcheck's ``possible`` for that behaviour)."""
    values = (row.get("possible") or {}).get(key.removeprefix("if_vpn_"))
    return [str(v) for v in values if v in TRUTH_VALUES] if isinstance(values, list) else []


def predictions(run: NetcheckRun, phases: tuple[str, ...]) -> dict[str, dict[str, tuple[str | None, str]]]:
    """Per workload and phase: (predicted truth value, where it came from).

    Site up: netcheck's status. Site down: only ``outage``, with the key of that
    behaviour (``no_vpn`` reads ``if_vpn_drops``: without a VPN the laptop is
    already in the "dropped" state). Nothing is substituted: a workload missing
    from ``outage``, or a behaviour missing from its row, is (None, why), a miss.
    An "uncertain" prediction reads ``uncertain:works|fails`` (the fates it allows).
    """
    out: dict[str, dict[str, tuple[str | None, str]]] = {}
    if run.report is None:
        return out
    site_up = {w.get("id"): w.get("status") for w in run.report.get("workloads", []) if isinstance(w, dict)}
    outage = run.report.get("outage")
    outage_rows = (
        {w.get("id"): w for w in outage.get("workloads", []) if isinstance(w, dict)} if isinstance(outage, dict) else {}
    )
    for wid in dict.fromkeys([*site_up, *outage_rows]):
        status = site_up.get(wid)
        row: dict[str, tuple[str | None, str]] = {
            "site_up": (STATUS_TO_TRUTH.get(str(status)), "site_up_status" if wid in site_up else "not in workloads")
        }
        for phase in phases:
            o = outage_rows.get(wid)
            key = "if_vpn_stays" if phase == "vpn_stays" else "if_vpn_drops"
            if not isinstance(outage, dict):
                row[phase] = (None, "no outage section in netcheck's report")
            elif o is None:
                row[phase] = (None, "not in netcheck's outage section")
            elif o.get(key) == "uncertain" and _possible(o, key):
                row[phase] = ("uncertain:" + "|".join(_possible(o, key)), "outage")
            elif o.get(key) not in TRUTH_VALUES:
                row[phase] = (None, f"outage row has no valid {key}")
            else:
                row[phase] = (str(o[key]), "outage")
        out[str(wid)] = row
    return out
