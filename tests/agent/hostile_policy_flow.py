"""A real agent check under a hostile policy, inside a private network namespace (``unshare -n``).

The namespace holds loopback (with a real collector on it) and a veth pair whose two ends are
both inside it, one carrying the default route to a gateway that does not exist: the check is
online as far as the laptop can tell, so it plans and runs its probes, and every packet for
anything but loopback dies there unanswered (nothing can leave the namespace, let alone the
host). The collector refuses hostile values, so they are written into its database directly,
as an older collector or a hand edit would have left them. Prints one JSON object;
tests/agent/test_hostile_policy_check.py reads it.

    unshare -n python -m tests.agent.hostile_policy_flow WORKDIR
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from netcheck.collector.store import decode_report
from tests.agent.netns_flow import private_home
from tests.collector.conftest import NO_LIMITS, create_secret, sql
from tests.collector.harness import CollectorProcess

#: every threshold the agent cannot use, and top-level values it cannot either
HOSTILE_THRESHOLDS = {
    "check": {"concurrency": -5, "dns_concurrency": 0, "tcp_samples": "3", "tcp_samples_thorough": 10**9,
              "deadline_s": 0.001, "whoami_name": "not a name"},
    "exchange_score": {"points": [[10, 100], [10, 0]], "degraded_below": 1000},
    "latency": {"slow_ms": -1}, "dns": {"slow_ms": "fast"},
    "teams_media": {"rtt_ms": 0, "loss_pct": -1, "jitter_ms": [], "window_s": 1e308, "window_s_thorough": -1},
    "no_such_table": {"x": 1},
}
HOSTILE_TOP = {"tenant": "../../etc", "instance": "Mars", "user_domain": 42, "endpoints_url": "file:///etc/passwd",
               "schedule": {"interval_s": -5, "jitter_s": "soon"}, "site_profiles": "paris", "deadline_s": 5}


def _plant(database_url: str) -> None:
    now = dt.datetime.now(dt.UTC)
    for key, value in {**HOSTILE_TOP, "thresholds": HOSTILE_THRESHOLDS}.items():
        sql(database_url, "INSERT INTO policy (key, value_json, updated_at) VALUES (:k, :v, :t)",
            k=key, v=json.dumps(value), t=now)


def main() -> None:
    work = Path(sys.argv[1])
    for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "link", "add", "nc0", "type", "veth", "peer", "name", "nc1"],
                ["ip", "addr", "add", "198.18.0.2/24", "dev", "nc0"], ["ip", "link", "set", "nc0", "up"],
                ["ip", "link", "set", "nc1", "up"], ["ip", "route", "add", "default", "via", "198.18.0.1"]):
        subprocess.run(cmd, check=True)
    _, env = private_home(work)
    out: dict[str, object] = {}
    collector = CollectorProcess(f"sqlite:///{work}/collector.db", env=NO_LIMITS, workdir=work)
    try:
        _, secret = create_secret(collector.database_url)
        (work / "secret").write_text(secret)
        _plant(collector.database_url)
        nc = [sys.executable, "-m", "netcheck"]

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*nc, *args], capture_output=True, text=True, env=env, timeout=240, check=False)

        enroll = run("enroll", collector.url, "--secret-file", str(work / "secret"))
        once = run("agent", "--once", "-v")
        rows = sql(collector.database_url, "SELECT report_lz4 FROM reports")
        reports = [decode_report(bytes(r.report_lz4)) for r in rows]
        out.update({
            "enroll": [enroll.returncode, enroll.stderr[-2000:]],
            "once": [once.returncode, once.stderr[-6000:]],
            "reports": [{"verdict": r["verdict"], "probes": len(r["probes"]), "deadline_s": r["deadline_s"],
                         "instance": r["catalog"]["instance"], "tenant": r.get("tenant"),
                         "kinds": sorted({p["kind"] for p in r["probes"]})} for r in reports],
        })
    finally:
        collector.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
