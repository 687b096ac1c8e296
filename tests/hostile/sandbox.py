"""Run a command in a throw-away network and mount namespace: a laptop that looks online but
reaches nothing.

Inside: loopback up; a veth pair with 198.18.0.2/24 and 2001:db8::2/64 and default routes to
.1 / ::1 where nobody answers (so netcheck sees routes to Microsoft 365 and probes, and every
packet stays in the namespace); ``/etc/resolv.conf`` replaced (bind mount, private to the
namespace) by one naming ``nameserver`` -- 127.0.0.1 by default, where nothing listens unless
the test starts something there. Needs root (as the rest of the lab).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_SETUP = ("ip link set lo up && ip link add v0 type veth peer name v1 && ip addr add 198.18.0.2/24 dev v0 && "
          "ip link set v0 up && ip link set v1 up && ip route add default via 198.18.0.1 && "
          "ip -6 addr add 2001:db8::2/64 dev v0 nodad && ip -6 route add default via 2001:db8::1 && "
          'mount --bind "$NC_RESOLV" /etc/resolv.conf && exec "$@"')


def why_not() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux to make namespaces"
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare (util-linux) and ip (iproute2)"
    return None


needs_sandbox = pytest.mark.skipif(why_not() is not None, reason=str(why_not()))


def run_sandboxed(argv: Sequence[str], tmp_path: Path, *, nameserver: str = "127.0.0.1",
                  env: Mapping[str, str] | None = None, timeout: float = 120,
                  stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``argv`` (a Python script and its arguments, run with this interpreter) in a fresh sandbox."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {nameserver}\n")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
                "XDG_CACHE_HOME": str(home / "cache"), "XDG_DATA_HOME": str(home / "data"),
                "XDG_CONFIG_HOME": str(home / "config"), "PYTHONPATH": str(REPO), "NC_RESOLV": str(resolv),
                **(env or {})}
    cmd = ["unshare", "--net", "--mount", "sh", "-c", _SETUP, "sandbox", sys.executable, *argv]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          input=stdin)
