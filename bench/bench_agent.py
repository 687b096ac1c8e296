"""Benchmark: what `netcheck agent` costs a laptop.

1. Idle: an enrolled agent (its real loop, threads and sleeps) against a real
   collector on loopback, after its first check and upload, measured for
   ``--idle-seconds``: CPU seconds used, wake-ups (context switches of every
   thread, not only the main one) and memory.
   The check itself is a stand-in (a sample report), so nothing leaves the host.
   Target (issue 5): no measurable CPU between runs.
2. Checking: the agent process running one real check (`perform_check`) in the
   lab's ``bench-25ms`` world (network namespaces; needs root), then spooling and
   trying to upload: peak resident memory of that process. Target: under 80 MB.
   The peak is the process's own high-water mark (``VmHWM`` in /proc/self/status).
   Not ``getrusage().ru_maxrss``: Linux carries that figure across fork and exec,
   so a child started by this (large, collector-importing) benchmark would report
   at least this benchmark's own resident size. Both are printed.

    .venv/bin/python bench/bench_agent.py [--idle-seconds 60] [--json]

Prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
MEMORY_LIMIT_MB = 80.0


# -- children (run in their own process, measured from outside) --------------------

def peak_rss_mb() -> tuple[float, float]:
    """(this process's own peak RSS, ``ru_maxrss``) in MB; see the module docstring.

    The first is VmHWM where /proc has it (Linux), else ``ru_maxrss``.
    """
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1), round(maxrss, 1)
    except OSError:
        pass
    return round(maxrss, 1), round(maxrss, 1)


def child_idle(interval_s: float) -> None:
    """`netcheck agent` as the CLI wires it, with a stand-in check; first check at once."""
    import random

    sys.path.insert(0, str(REPO_ROOT))
    from netcheck.agent.cli import setup_logging
    from netcheck.agent.config import AgentStore
    from netcheck.agent.loop import boot_clock, build_agent, run_forever
    from netcheck.agent.schedule import Schedule
    from netcheck.agent.spool import Spool
    from netcheck.agent.upload import open_uploader
    from tests.agent.helpers import fake_report

    setup_logging(False, Path(os.environ["HOME"]) / "agent.log")
    spool = Spool()
    client, uploader = open_uploader(AgentStore(), spool)
    agent = build_agent(run_check=lambda req: fake_report(), spool=spool, client=client, uploader=uploader,
                        schedule=Schedule(interval_s, 0.0), pinned_schedule=True, rng=random.Random(),
                        first_check_at=boot_clock())
    original = agent.net_lane.upload

    def upload(now: float) -> Any:
        got = original(now)
        if got.acked:
            print("uploaded", flush=True)
        return got

    agent.net_lane.upload = upload  # type: ignore[method-assign]
    run_forever(agent, threading.Event())


def child_check(endpoints_file: str, tenant: str, whoami: str, relay: str, deadline: float,
                bare: bool = False) -> None:
    """One real check inside the agent machinery (spool, unreachable collector), then exit.

    ``bare``: the same check without the agent around it, to see what the agent itself adds.
    """
    sys.path.insert(0, str(REPO_ROOT))
    if bare:
        from netcheck.check import CheckOptions, perform_check
        from netcheck.render.json import report_to_dict

        report_to_dict(perform_check(CheckOptions(endpoints_file=Path(endpoints_file), tenant=tenant,
                                                  whoami_name=whoami, teams_relay=relay, deadline_s=deadline)))
        peak, maxrss = peak_rss_mb()
        print(json.dumps({"checks": 1, "spooled": 0, "peak_mb_self": peak, "ru_maxrss_mb": maxrss}))
        return
    from netcheck.agent.loop import build_agent, run_once
    from netcheck.agent.schedule import Schedule
    from netcheck.agent.spool import Spool
    from netcheck.agent.transport import CollectorClient, Timeouts
    from netcheck.agent.uploader import Uploader
    from netcheck.check import CheckOptions, perform_check
    from netcheck.render.json import report_to_dict

    options = CheckOptions(endpoints_file=Path(endpoints_file), tenant=tenant, whoami_name=whoami,
                           teams_relay=relay, deadline_s=deadline)
    spool = Spool()
    client = CollectorClient("http://127.0.0.1:9", token="bench-no-collector", timeouts=Timeouts(1, 1, 1, 2))
    agent = build_agent(run_check=lambda req: report_to_dict(perform_check(options)), spool=spool,
                        client=client, uploader=Uploader(spool, client), schedule=Schedule())
    result = run_once(agent, upload_deadline_s=2, sleep=lambda s: None)
    peak, maxrss = peak_rss_mb()
    print(json.dumps({"checks": result.checks, "spooled": result.spooled, "peak_mb_self": peak,
                      "ru_maxrss_mb": maxrss}))


# -- the parent ----------------------------------------------------------------------

def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of ``pid`` (its wake-ups).

    Linux keeps them per thread (/proc/PID/task/TID/status); psutil's figure is the main
    thread's alone. Elsewhere, psutil's.
    """
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():
        import psutil

        ctx = psutil.Process(pid).num_ctx_switches()
        return int(ctx.voluntary + ctx.involuntary)
    total = 0
    for task in tasks.iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
        except (OSError, ValueError):  # a thread that ended meanwhile
            continue
    return total


def bench_idle(idle_seconds: float) -> dict[str, Any]:
    import psutil

    sys.path.insert(0, str(REPO_ROOT))
    from tests.collector.conftest import NO_LIMITS, create_secret
    from tests.collector.harness import CollectorProcess

    work = Path(tempfile.mkdtemp(prefix="netcheck-bench-agent-"))
    home = work / "home"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETCHECK_")}
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                "XDG_DATA_HOME": str(home / ".local/share"), "XDG_CACHE_HOME": str(home / ".cache"),
                "PYTHONPATH": str(REPO_ROOT)})
    collector = CollectorProcess(f"sqlite:///{work}/collector.db", env=NO_LIMITS, workdir=work)
    try:
        _, secret = create_secret(collector.database_url)
        subprocess.run([sys.executable, "-m", "netcheck", "enroll", collector.url],
                       env={**env, "NETCHECK_ENROLL_SECRET": secret}, check=True, capture_output=True)
        child = subprocess.Popen([sys.executable, __file__, "--child", "idle"], env=env, stdout=subprocess.PIPE,
                                 text=True)
        assert child.stdout is not None
        try:
            line = child.stdout.readline().strip()
            if line != "uploaded":
                return {"error": f"agent did not upload its first report: {line!r}"}
            proc = psutil.Process(child.pid)
            time.sleep(1.0)  # let the first run settle (the sweep poll and policy fetch go with it)
            cpu0, ctx0 = proc.cpu_times(), context_switches(child.pid)
            t0 = time.monotonic()
            time.sleep(idle_seconds)
            cpu1, ctx1 = proc.cpu_times(), context_switches(child.pid)
            wall = time.monotonic() - t0
            used = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            wakeups = ctx1 - ctx0
            rss = proc.memory_info().rss / 2**20
            threads = proc.num_threads()
        finally:
            child.terminate()
            child.wait(30)
        return {"idle_s": round(wall, 1), "cpu_s": round(used, 4), "cpu_pct": round(100 * used / wall, 4),
                "context_switches": wakeups, "wakeups_per_min": round(60 * wakeups / wall, 1),
                "rss_mb": round(rss, 1), "threads": threads}
    finally:
        collector.stop()
        shutil.rmtree(work, ignore_errors=True)


def bench_check(bare: bool = False) -> dict[str, Any]:
    if os.geteuid() != 0:
        return {"skipped": "the lab needs root (network namespaces)"}
    sys.path.insert(0, str(REPO_ROOT))
    from tests.lab import addressing as A
    from tests.lab import scenario as sc
    from tests.lab.world import World

    world_def = sc.load(REPO_ROOT / "tests" / "lab" / "scenarios" / "bench-25ms.toml")
    with World(world_def) as world:
        env = world.laptop_env() | {"PYTHONPATH": str(REPO_ROOT)}
        argv = world.laptop_argv([world.python, str(Path(__file__).resolve()), "--child", "check",
                                  "--endpoints-file", str(world.endpoints_file), "--tenant",
                                  world.scenario.netcheck.tenant, "--whoami", A.WHOAMI_NAME,
                                  "--relay", A.TEAMS_RELAY_NAME, "--deadline", f"{world.scenario.netcheck.deadline:g}"]
                                 + (["--bare"] if bare else []))
        start = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=300)
        wall = time.monotonic() - start
    try:
        facts = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"agent check failed ({proc.returncode}): {err.strip()[-500:]}"}
    return {"wall_s": round(wall, 2), **facts, "limit_mb": MEMORY_LIMIT_MB,
            "ok": facts["peak_mb_self"] <= MEMORY_LIMIT_MB}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=["idle", "check"], help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=3600.0, help=argparse.SUPPRESS)
    parser.add_argument("--endpoints-file", help=argparse.SUPPRESS)
    parser.add_argument("--tenant", help=argparse.SUPPRESS)
    parser.add_argument("--whoami", help=argparse.SUPPRESS)
    parser.add_argument("--relay", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=30.0, help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "idle":
        child_idle(args.interval)
        return 0
    if args.child == "check":
        child_check(args.endpoints_file, args.tenant, args.whoami, args.relay, args.deadline, args.bare)
        return 0
    result: dict[str, Any] = {}
    try:
        result["idle"] = bench_idle(args.idle_seconds)
    except Exception as exc:  # a figure we could not take is reported, not a traceback
        result["idle"] = {"error": f"{type(exc).__name__}: {exc}"}
    for key, bare in (("checking", False), ("bare_check", True)):
        try:
            result[key] = bench_check(bare)
        except Exception as exc:
            result[key] = {"error": f"{type(exc).__name__}: {exc}"}
    result["environment"] = {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
                             "python": sys.version.split()[0], "platform": sys.platform}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    env = result["environment"]
    print(f"machine: {env['cpus']} CPUs, {env['platform']}, Python {env['python']}, load average {env['loadavg']} "
          "(other work on the machine shows here)")
    idle, chk = result["idle"], result["checking"]
    if "error" in idle:
        print(f"idle: {idle['error']}")
    else:
        print(f"idle agent ({idle['idle_s']} s after its first check and upload): CPU {idle['cpu_s']} s "
              f"({idle['cpu_pct']} %), {idle['wakeups_per_min']} wake-ups/min (all threads), RSS {idle['rss_mb']} MB, "
              f"{idle['threads']} threads")
    if "wall_s" in chk:
        print(f"agent running one real check (lab bench-25ms): peak RSS {chk['peak_mb_self']} MB "
              f"(limit {MEMORY_LIMIT_MB:.0f} MB: {'PASS' if chk['ok'] else 'MISS'}), {chk['wall_s']} s, "
              f"{chk['checks']} check(s), {chk['spooled']} spooled "
              f"(ru_maxrss {chk.get('ru_maxrss_mb')} MB, inherited from this benchmark's own size)")
    else:
        print(f"checking: {chk.get('skipped') or chk.get('error')}")
    bare_chk = result["bare_check"]
    if "wall_s" in bare_chk:
        print(f"the same check without the agent (perform_check alone): peak RSS {bare_chk['peak_mb_self']} MB "
              f"(ru_maxrss {bare_chk.get('ru_maxrss_mb')} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
