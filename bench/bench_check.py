"""Benchmark: a full worldwide ``netcheck check`` at a given round trip, against a curl + dig loop.

Runs in the lab (root needed), in a world built from the ``bench-25ms``
scenario with its home link set to ``--rtt`` ms of round trip (half each way)
and ``--loss`` % loss each way.  In one world:

* ``netcheck check --json`` over the lab's copy of the whole worldwide
  catalog, as the laptop's user, ``--runs`` times.  The first check in a fresh
  world pays for the lab's own warm-up (first SYNs through the NAT, the
  delay element's first packets, the STUN relay's first exchange), so it is
  reported apart from the repeated checks (min / median / max);
* the loop an admin would script: for every host of the same catalog,
  ``kdig`` then ``curl https://HOST/``, one after the other (``--loop-hosts``
  limits it, ``--loop-hosts 0`` skips it).

Per netcheck run: wall time of the process, probing time (the report's
``duration_s``), CPU time (user + system, children included) and peak memory
(largest resident set; Linux counts a forked child's starting size, i.e. this
benchmark's own, in that figure, so it is printed too as ``rss_floor_mb``: a
peak at that value says nothing).  The critical path is 4 RTT (DNS, TCP,
TLS 1.3, HTTP) plus netcheck's media sampling window.  Also printed: the
machine (cores, load average before and after: other work on the machine
shows there), ``netcheck --help`` time and pings across the link while
netcheck runs, to show the emulated link holds its RTT under load.

``--profile FILE`` runs one more check under cProfile and writes its stats to
FILE (read with ``python -m pstats FILE``); that run is not in the figures.

    sudo .venv/bin/python bench/bench_check.py [--rtt 50] [--loss 0] [--runs 5] [--loop-hosts N] [--json]

Prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENARIO = REPO_ROOT / "tests" / "lab" / "scenarios" / "bench-25ms.toml"

#: Targets from issue 16.
WALL_FACTOR = 1.25
LOSSY_SLACK_S = 0.5
CPU_LIMIT_S = 0.6
MEMORY_LIMIT_MB = 80.0
HELP_LIMIT_S = 0.3


@dataclass
class Usage:
    """What one process tree cost."""

    wall_s: float
    cpu_s: float
    user_s: float
    sys_s: float
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
    return Usage(round(wall, 3), round(cpu, 3), round(rusage.ru_utime, 3), round(rusage.ru_stime, 3),
                 round(rusage.ru_maxrss / 1024, 1), proc.returncode), out


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


def environment() -> dict[str, Any]:
    """The machine the figures come from."""
    return {
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def bench(rtt_ms: float, loss_pct: float, runs: int, loop_hosts: int | None,
          profile: Path | None, reports: Path | None = None) -> dict[str, Any]:
    sys.path.insert(0, str(REPO_ROOT))
    from tests.lab import scenario as sc
    from tests.lab.netcheck_runner import find_netcheck, netcheck_argv
    from tests.lab.world import World

    base = sc.load(SCENARIO)
    home = dataclasses.replace(base.link("home"), delay_ms=rtt_ms / 2, loss_pct=loss_pct)
    world_def = dataclasses.replace(base, name=f"bench-{rtt_ms:g}ms-{loss_pct:g}loss",
                                    links={**base.links, "home": home})
    link_rtt = 2 * world_def.link("home").delay_ms + 2 * world_def.link("wifi").delay_ms
    result: dict[str, Any] = {"scenario": world_def.name, "link_rtt_ms": link_rtt, "loss_pct_each_way": loss_pct,
                              "environment_before": environment()}
    with World(world_def) as world:
        env = world.laptop_env()
        relay = str(world.catalog.teams_relay(4))
        idle = subprocess.run(world.laptop_argv(["ping", "-n", "-c", "10", "-i", "0.05", relay]),
                              env=env, capture_output=True, text=True, check=False)
        result["ping_idle"] = ping_stats(idle.stdout)
        exe = find_netcheck(world.python)
        if exe is None:
            result["netcheck"] = {"error": "netcheck is not installed (pip install -e .)"}
        else:
            compile_bytecode(world.python)
            argv, dropped = netcheck_argv(world, exe)
            pinger = subprocess.Popen(world.laptop_argv(["ping", "-n", "-i", "0.05", "-w", "600", relay]),
                                      env=env, stdout=subprocess.PIPE, text=True)
            result["rss_floor_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            checks = []
            for i in range(runs):
                usage, out = measure(world.laptop_argv(argv), env)
                if reports is not None:
                    reports.mkdir(parents=True, exist_ok=True)
                    (reports / f"check-{i + 1}.json").write_text(out)
                checks.append(asdict(usage) | _report_facts(out))
            pinger.terminate()
            result["ping_during_netcheck"] = ping_stats(pinger.communicate()[0])
            result["netcheck"] = {"first": checks[0], "repeated": checks[1:]}
            if dropped:
                result["netcheck"]["flags_not_supported"] = dropped
            result["netcheck_help"] = time_help(exe)
            if profile is not None:
                result["profile"] = _profile(world, argv, env, profile)
        if loop_hosts != 0:
            hosts = sorted({world.catalog.concretize(u) for s in world.catalog.sets for u in s.urls})
            if loop_hosts is not None:
                hosts = hosts[:loop_hosts]
            script = world.user_home / "tmp" / "loop.sh"
            script.write_text(loop_script(hosts))
            usage, _ = measure(world.laptop_argv(["bash", str(script)]), env, timeout=3600)
            result["curl_dig_loop"] = asdict(usage) | {"hosts": len(hosts)}
    result["environment_after"] = environment()
    checks = [result["netcheck"]["first"], *result["netcheck"]["repeated"]] if "first" in result.get(
        "netcheck", {}) else []
    window = max((c.get("media_window_s", 1.0) for c in checks), default=1.0)
    result["critical_path_s"] = round(4 * link_rtt / 1000 + window, 3)
    result["summary"] = summary(result)
    result["targets"] = targets(result)
    return result


def compile_bytecode(python: str) -> None:
    """Write the bytecode of the netcheck that ``python`` imports, as pip does at install. The check
    runs as a user who cannot write ``__pycache__``: a module edited since its ``.pyc`` was written
    would otherwise be compiled again in every check (~3 ms of CPU a module), which no installed
    netcheck does."""
    where = subprocess.run([python, "-I", "-c", "import netcheck, os; print(os.path.dirname(netcheck.__file__))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([python, "-I", "-m", "compileall", "-q", where], capture_output=True, check=True)


def _profile(world: Any, argv: list[str], env: dict[str, str], out: Path) -> str:
    """One more check under cProfile, its stats copied to ``out``."""
    stats = world.user_home / "tmp" / "check.prof"
    script = world.user_home / "tmp" / "profiled.py"
    script.write_text("import sys\nfrom netcheck.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    usage, _ = measure(world.laptop_argv([world.python, "-m", "cProfile", "-o", str(stats), str(script),
                                          *argv[1:]]), env)
    if not stats.exists():
        return f"no profile written (exit {usage.exit_code})"
    shutil.copyfile(stats, out)
    return str(out)


def _report_facts(stdout: str) -> dict[str, Any]:
    try:
        report = json.loads(stdout)
    except ValueError:
        return {"report": "no JSON report"}
    probes = report.get("probes", [])
    windows = [p.get("detail", {}).get("window_s") for p in probes if p.get("kind") == "stun"]
    facts: dict[str, Any] = {"verdict": report.get("verdict"), "probes": len(probes),
                             "not_ok": sum(1 for p in probes if p.get("outcome") != "ok")}
    if report.get("duration_s") is not None:
        facts["probing_s"] = report["duration_s"]
    facts["media_window_s"] = max((w for w in windows if w), default=1.0)
    return facts


def summary(r: dict[str, Any]) -> dict[str, Any]:
    """Repeated checks: min / median / max of each figure, and wall over critical path."""
    repeated = r.get("netcheck", {}).get("repeated", [])
    out: dict[str, Any] = {}
    for key in ("wall_s", "probing_s", "cpu_s", "user_s", "sys_s", "peak_mb"):
        values = [c[key] for c in repeated if isinstance(c.get(key), int | float)]
        if values:
            out[key] = spread(values)
    bound = r["critical_path_s"]
    for key in ("wall_s", "probing_s"):
        if key in out:
            out[key.replace("_s", "_ratio")] = {k: round(v / bound, 2) for k, v in out[key].items()}
    return out


def targets(r: dict[str, Any]) -> dict[str, Any]:
    s = r.get("summary", {})
    if "wall_s" not in s:
        return {}
    bound = r["critical_path_s"]
    checks: dict[str, tuple[float | None, float]] = {}
    for key, what in (("probing_s", "probing"), ("wall_s", "process wall")):
        if r["loss_pct_each_way"]:
            checks[f"{what} median <= critical path + 0.5 s"] = (s.get(key, {}).get("median"), bound + LOSSY_SLACK_S)
        else:
            checks[f"{what} median <= 1.25 x critical path"] = (s.get(key, {}).get("median"), WALL_FACTOR * bound)
    checks["cpu median <= 0.6 s"] = (s["cpu_s"]["median"], CPU_LIMIT_S)
    checks["peak memory max < 80 MB"] = (s["peak_mb"]["max"], MEMORY_LIMIT_MB)
    checks["--help <= 0.3 s"] = (r.get("netcheck_help", {}).get("median_s"), HELP_LIMIT_S)
    return {k: {"value": v, "limit": round(lim, 3), "ok": v is not None and v <= lim} for k, (v, lim) in checks.items()}


def print_text(r: dict[str, Any]) -> None:
    env0, env1 = r["environment_before"], r["environment_after"]
    print(f"machine: {env0['cpus']} CPUs, {env0['machine']}, Linux {env0['kernel']}, Python {env0['python']}; "
          f"load average {env0['loadavg']} before, {env1['loadavg']} after (other work on the machine shows here)")
    print(
        f"scenario {r['scenario']}: link RTT {r['link_rtt_ms']:g} ms, loss {r['loss_pct_each_way']:g} % each way "
        f"(ping idle median {r.get('ping_idle', {}).get('median_ms', 'n/a')} ms, "
        f"during netcheck median {r.get('ping_during_netcheck', {}).get('median_ms', 'n/a')} ms, "
        f"p95 {r.get('ping_during_netcheck', {}).get('p95_ms', 'n/a')} ms)"
    )
    print(f"critical path: 4 x RTT + media window = {r['critical_path_s']:.2f} s")
    print(f"peak memory figures include at least {r.get('rss_floor_mb')} MB, this benchmark's own size "
          "(Linux carries it into a forked child's maxrss)")
    nc = r.get("netcheck", {})
    if "first" not in nc:
        print(f"netcheck check: {nc.get('error')}")
    else:
        print(f"{'netcheck check':26}{'wall s':>9}{'probing s':>11}{'cpu s':>8}{'peak MB':>9}  notes")
        for i, c in enumerate([nc["first"], *nc["repeated"]]):
            label = "first (fresh world)" if i == 0 else f"repeated #{i}"
            probing = c.get("probing_s")
            print(f"  {label:24}{c['wall_s']:>9.2f}{probing if probing is not None else '-':>11}"
                  f"{c['cpu_s']:>8.2f}{c['peak_mb']:>9.1f}  {c.get('probes')} probes ({c.get('not_ok')} not ok), "
                  f"verdict {c.get('verdict')}, exit {c['exit_code']}")
        for key, what in (("wall_s", "wall"), ("probing_s", "probing"), ("cpu_s", "cpu"), ("user_s", "cpu user"),
                          ("sys_s", "cpu system"), ("peak_mb", "peak MB")):
            if key in r["summary"]:
                s = r["summary"][key]
                ratio = r["summary"].get(key.replace("_s", "_ratio")) if key in ("wall_s", "probing_s") else None
                extra = f"  = {ratio['min']} / {ratio['median']} / {ratio['max']} x critical path" if ratio else ""
                print(f"  repeated {what} min / median / max: {s['min']} / {s['median']} / {s['max']}{extra}")
    if "curl_dig_loop" in r:
        lp = r["curl_dig_loop"]
        print(f"curl + dig loop: wall {lp['wall_s']:.2f} s, cpu {lp['cpu_s']:.2f} s, peak {lp['peak_mb']:.1f} MB, "
              f"{lp['hosts']} hosts, sequential")
    if r.get("netcheck_help"):
        print(f"netcheck --help: median {r['netcheck_help']['median_s']:.3f} s "
              f"(min {r['netcheck_help']['min_s']:.3f} s)")
    if r.get("profile"):
        print(f"profile of one more check: {r['profile']}")
    for name, t in r.get("targets", {}).items():
        print(f"  {'PASS' if t['ok'] else 'MISS'}  {name}: {t['value']} (limit {t['limit']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="netcheck vs a curl + dig loop, in a lab world of a given RTT")
    parser.add_argument("--rtt", type=float, default=50.0, help="home link round trip in ms (default 50)")
    parser.add_argument("--loss", type=float, default=0.0, help="home link loss in %% each way (default 0)")
    parser.add_argument("--runs", type=int, default=6, help="checks in the same world: the first, then repeated")
    parser.add_argument("--loop-hosts", type=int, default=None, help="only the first N hosts in the loop (0: none)")
    parser.add_argument("--profile", type=Path, default=None, help="also profile one check, stats to this file")
    parser.add_argument("--reports", type=Path, default=None, help="write each check's JSON report here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.rtt < 0 or not 0 <= args.loss <= 100 or args.runs < 2:
        parser.error("need --rtt >= 0, --loss between 0 and 100 and --runs >= 2")
    if os.geteuid() != 0:
        print("bench: the lab needs root to create network namespaces", file=sys.stderr)
        return 2
    try:
        result = bench(args.rtt, args.loss, args.runs, args.loop_hosts, args.profile, args.reports)
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
