"""The whole command-line flow, run inside a private network namespace (``unshare -n``).

Only loopback exists there, so `netcheck agent` can run the real check (which then
finds no route and reports "could not assess") without a packet leaving the host.
Prints one JSON object with what happened; tests/agent/test_cli_agent.py reads it.

    unshare -n python -m tests.agent.netns_flow WORKDIR
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.collector.conftest import NO_LIMITS, create_secret, sql
from tests.collector.harness import CollectorProcess


def private_home(work: Path) -> tuple[Path, dict[str, str]]:
    """A fresh home directory under ``work`` and the environment of a user living in it (no
    ``NETCHECK_*`` variable from the test run)."""
    home = work / "home"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETCHECK_")}
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                "XDG_DATA_HOME": str(home / ".local/share"), "XDG_CACHE_HOME": str(home / ".cache")})
    return home, env


def main() -> None:
    work = Path(sys.argv[1])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    home, env = private_home(work)
    out: dict[str, object] = {}
    collector = CollectorProcess(f"sqlite:///{work}/collector.db", env=NO_LIMITS, workdir=work)
    try:
        _, secret = create_secret(collector.database_url)
        (work / "secret").write_text(secret)
        nc = [sys.executable, "-m", "netcheck"]

        def run(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*nc, *args], capture_output=True, text=True, env={**env, **(extra or {})},
                                  timeout=120, check=False)

        enroll = run("enroll", collector.url, "--secret-file", str(work / "secret"), "--tag", "site=paris")
        once = run("agent", "--once")
        devices = run("admin", "devices", "--json", "--database-url", collector.database_url)
        log_file = work / "agent.log"
        agent = subprocess.Popen([*nc, "agent", "--interval", "1", "--log-file", str(log_file), "-v"],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and \
                sql(collector.database_url, "SELECT count(*) FROM reports")[0][0] < 4:
            time.sleep(0.2)
        agent.send_signal(signal.SIGTERM)
        agent_out, agent_err = agent.communicate(timeout=60)
        token = (home / ".config" / "netcheck" / "token").read_text().strip()
        log_text = log_file.read_text()
        rows = sql(collector.database_url, "SELECT verdict, seq FROM reports ORDER BY id")
        out.update({
            "enroll": [enroll.returncode, enroll.stdout, enroll.stderr],
            "once": [once.returncode, once.stdout, once.stderr],
            "devices": json.loads(devices.stdout) if devices.returncode == 0 else devices.stderr,
            "agent": [agent.returncode, agent_out, agent_err],
            "reports": [[r.verdict, r.seq] for r in rows],
            "log_has_token": token in log_text, "log_has_secret": secret in log_text,
            "log_tail": log_text[-3000:], "stopped": "agent stopped" in log_text,
            "token_mode": oct((home / ".config" / "netcheck" / "token").stat().st_mode & 0o777),
        })
    finally:
        collector.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
