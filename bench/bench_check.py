"""Benchmark: a full worldwide ``netcheck check`` against a sequential curl + dig loop.

Runs in the lab (root needed): the ``bench-25ms`` scenario, whose home link
adds 25 ms each way (50 ms RTT).  In one world, side by side:

* ``netcheck check --json`` over the lab's copy of the whole worldwide
  catalog, as the laptop's user;
* the loop an admin would script: for every host of the same catalog,
  ``kdig`` then ``curl https://HOST/``, one after the other.

For both it prints wall time, CPU time (user + system, children included)
and peak memory (largest resident set; Linux counts a forked child's starting
size, i.e. this benchmark's own, in that figure, so it is printed too as
``rss_floor_mb``: a peak at that value says nothing), plus the critical-path bound: about
4 RTT (DNS, TCP, TLS 1.3, HTTP) plus netcheck's media sampling window, and
checks netcheck against its targets (issue 3).  It also times
``netcheck --help`` and pings across the link while netcheck runs, to show
the emulated link holds its 50 ms under load.

    sudo .venv/bin/python bench/bench_check.py [--json] [--loop-hosts N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENARIO = REPO_ROOT / "tests" / "lab" / "scenarios" / "bench-25ms.toml"

#: Targets from issue 3.
PROBING_FACTOR = 1.5
PROCESS_SLACK_S = 1.0
CPU_LIMIT_S = 1.0
MEMORY_LIMIT_MB = 80.0
HELP_LIMIT_S = 0.3


@dataclass
class Usage:
    """What one process tree cost."""

    wall_s: float
    cpu_s: float
    peak_mb: float
    exit_code: int


def measure(argv: list[str], env: dict[str, str], timeout: float = 600) -> tuple[Usage, str]:
    """Run ``argv`` and read its rusage (children included) with wait4."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = rusage.ru_utime + rusage.ru_stime
    return Usage(round(wall, 3), round(cpu, 3), round(rusage.ru_maxrss / 1024, 1), proc.returncode), out


def loop_script(hosts: list[str]) -> str:
    """The admin's loop: DNS, then HTTPS, host after host."""
    lines = ["set +e"]
    for h in hosts:
        lines.append(f"kdig +short +time=2 +retry=0 {h} A >/dev/null")
        lines.append(f"curl -s -o /dev/null --max-time 5 https://{h}/")
    return "\n".join(lines) + "\n"


def ping_stats(output: str) -> dict[str, float]:
    rtts = sorted(float(x) for x in re.findall(r"time=([\d.]+)", output))
    if not rtts:
        return {}
    return {
        "samples": len(rtts),
        "median_ms": statistics.median(rtts),
        "p95_ms": rtts[int(0.95 * (len(rtts) - 1))],
        "max_ms": rtts[-1],
    }


def time_help(exe: str, runs: int = 5) -> dict[str, float]:
    walls = []
    for _ in range(runs):
        start = time.monotonic()
        subprocess.run([exe, "--help"], capture_output=True, check=False)
        walls.append(time.monotonic() - start)
    return {"min_s": round(min(walls), 3), "median_s": round(statistics.median(walls), 3)}


def bench(loop_hosts: int | None) -> dict[str, Any]:
    sys.path.insert(0, str(REPO_ROOT))
    from tests.lab import scenario as sc
    from tests.lab.netcheck_runner import find_netcheck, netcheck_argv
    from tests.lab.world import World

    world_def = sc.load(SCENARIO)
    rtt_ms = 2 * world_def.link("home").delay_ms + 2 * world_def.link("wifi").delay_ms
    result: dict[str, Any] = {"scenario": world_def.name, "link_rtt_ms": rtt_ms}
    with World(world_def) as world:
        env = world.laptop_env()
        relay = str(world.catalog.teams_relay(4))
        base = subprocess.run(
            world.laptop_argv(["ping", "-n", "-c", "10", "-i", "0.05", relay]),
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        result["ping_idle"] = ping_stats(base.stdout)
        exe = find_netcheck(world.python)
        if exe is None:
            result["netcheck"] = {"error": "netcheck is not installed (pip install -e .)"}
        else:
            argv, dropped = netcheck_argv(world, exe)
            pinger = subprocess.Popen(
                world.laptop_argv(["ping", "-n", "-i", "0.02", "-w", "60", relay]),
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            result["rss_floor_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            usage, out = measure(world.laptop_argv(argv), env)
            pinger.terminate()
            result["ping_during_netcheck"] = ping_stats(pinger.communicate()[0])
            result["netcheck"] = asdict(usage) | ({"flags_not_supported": dropped} if dropped else {})
            result["netcheck"] |= _report_facts(out)
            result["netcheck_help"] = time_help(exe)
        hosts = sorted({world.catalog.concretize(u) for s in world.catalog.sets for u in s.urls})
        if loop_hosts is not None:
            hosts = hosts[:loop_hosts]
        script = world.user_home / "tmp" / "loop.sh"
        script.write_text(loop_script(hosts))
        usage, _ = measure(world.laptop_argv(["bash", str(script)]), env, timeout=3600)
        result["curl_dig_loop"] = asdict(usage) | {"hosts": len(hosts)}
    window = result.get("netcheck", {}).get("media_window_s", 1.0)
    result["critical_path_bound_s"] = round(4 * rtt_ms / 1000 + window, 3)
    result["targets"] = targets(result)
    return result


def _report_facts(stdout: str) -> dict[str, Any]:
    try:
        report = json.loads(stdout)
    except ValueError:
        return {"report": "no JSON report"}
    windows = [p.get("detail", {}).get("window_s") for p in report.get("probes", []) if p.get("kind") == "stun"]
    facts: dict[str, Any] = {"verdict": report.get("verdict"), "probes": len(report.get("probes", []))}
    if report.get("duration_s") is not None:
        facts["probing_s"] = report["duration_s"]
    facts["media_window_s"] = max((w for w in windows if w), default=1.0)
    return facts


def targets(r: dict[str, Any]) -> dict[str, Any]:
    nc = r.get("netcheck", {})
    if "wall_s" not in nc:
        return {}
    bound = r["critical_path_bound_s"]
    checks = {
        "probing <= 1.5 x bound": (nc.get("probing_s"), PROBING_FACTOR * bound),
        "process <= bound + 1 s": (nc["wall_s"], bound + PROCESS_SLACK_S),
        "cpu <= 1 s": (nc["cpu_s"], CPU_LIMIT_S),
        "peak memory <= 80 MB": (nc["peak_mb"], MEMORY_LIMIT_MB),
        "--help <= 0.3 s": (r.get("netcheck_help", {}).get("median_s"), HELP_LIMIT_S),
    }
    return {k: {"value": v, "limit": round(lim, 3), "ok": v is not None and v <= lim} for k, (v, lim) in checks.items()}


def print_text(r: dict[str, Any]) -> None:
    print(
        f"scenario {r['scenario']}: link RTT {r['link_rtt_ms']:.0f} ms "
        f"(ping idle median {r.get('ping_idle', {}).get('median_ms', 'n/a')} ms, "
        f"during netcheck median {r.get('ping_during_netcheck', {}).get('median_ms', 'n/a')} ms, "
        f"p95 {r.get('ping_during_netcheck', {}).get('p95_ms', 'n/a')} ms)"
    )
    print(f"critical-path bound: 4 x RTT + media window = {r['critical_path_bound_s']:.2f} s")
    print(f"peak memory figures include at least {r.get('rss_floor_mb')} MB, this benchmark's own size "
          "(Linux carries it into a forked child's maxrss)")
    print(f"{'':22}{'wall s':>9}{'cpu s':>9}{'peak MB':>9}  notes")
    nc = r.get("netcheck", {})
    if "wall_s" in nc:
        notes = (
            f"probing {nc.get('probing_s')} s, {nc.get('probes')} probes, "
            f"verdict {nc.get('verdict')}, exit {nc['exit_code']}"
        )
        print(f"{'netcheck check':22}{nc['wall_s']:>9.2f}{nc['cpu_s']:>9.2f}{nc['peak_mb']:>9.1f}  {notes}")
    else:
        print(f"{'netcheck check':22}{'-':>9}{'-':>9}{'-':>9}  {nc.get('error')}")
    lp = r["curl_dig_loop"]
    cells = f"{lp['wall_s']:>9.2f}{lp['cpu_s']:>9.2f}{lp['peak_mb']:>9.1f}"
    print(f"{'curl + dig loop':22}{cells}  {lp['hosts']} hosts, sequential")
    if r.get("netcheck_help"):
        print(
            f"netcheck --help: median {r['netcheck_help']['median_s']:.3f} s (min {r['netcheck_help']['min_s']:.3f} s)"
        )
    for name, t in r.get("targets", {}).items():
        print(f"  {'PASS' if t['ok'] else 'MISS'}  {name}: {t['value']} (limit {t['limit']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="netcheck vs a curl + dig loop, in the lab's 50 ms world")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--loop-hosts", type=int, default=None, help="only the first N hosts in the loop")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: the lab needs root to create network namespaces", file=sys.stderr)
        return 2
    try:
        result = bench(args.loop_hosts)
    except Exception as exc:  # report, do not dump a traceback on the user
        print(f"bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_text(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
