"""With no network at all, probes say "network unreachable" (the OS's own answer).

The probes run in a child process inside a fresh network namespace (``unshare
-rn``: no interfaces up, no routes), so the addresses below are unreachable by
construction and no packet leaves the namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from netcheck.models import Outcome

CHILD = textwrap.dedent("""
    import asyncio, json
    from netcheck.deadline import Deadline
    from netcheck.models import ProbeSpec, Target
    from netcheck.probes import probe_dns, probe_http, probe_tcp, probe_tls

    async def main():
        d = Deadline.after(10)
        lab = "198.18.0.1"
        results = {
            "dns": await probe_dns(Target("a.test"), ProbeSpec(nameservers=("198.18.0.53",)), d),
            "dns_os": await probe_dns(Target("a.test"), ProbeSpec(), d),
            "tcp": await probe_tcp(Target("a.test", port=443, address=lab), ProbeSpec(), d),
            "tls": await probe_tls(Target("a.test", port=443, address=lab), ProbeSpec(), d),
            "http": await probe_http(Target("a.test", port=80, scheme="http", address=lab),
                                     ProbeSpec(trust_env=False), d),
            "https": await probe_http(Target("a.test", port=443, scheme="https", address=lab),
                                      ProbeSpec(trust_env=False), d),
        }
        print(json.dumps({k: [str(r.outcome), r.reason] for k, r in results.items()}))

    asyncio.run(main())
""")


def _unshare() -> list[str]:
    tool = shutil.which("unshare")
    if tool is None or not sys.platform.startswith("linux"):
        pytest.skip("needs Linux network namespaces (unshare)")
    for argv in ([tool, "-rn"], [tool, "-n"]):
        probe = subprocess.run([*argv, "true"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return argv
    pytest.skip("cannot create a network namespace here (unshare -rn refused)")


@pytest.mark.timeout(60)
def test_everything_unreachable_in_an_empty_namespace() -> None:
    argv = _unshare()
    if not os.path.exists("/etc/resolv.conf"):
        pytest.skip("no /etc/resolv.conf")
    done = subprocess.run([*argv, sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    outcomes = json.loads(done.stdout)
    for kind, (outcome, reason) in outcomes.items():
        if kind == "dns_os" and outcome == Outcome.NO_RESOLVER.value:
            continue  # a machine whose resolv.conf names no server
        assert outcome == Outcome.NETWORK_UNREACHABLE.value, (kind, outcome, reason)
        assert "unreachable" in reason
