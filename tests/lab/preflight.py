"""Is everything the lab needs installed?  (Package names match .ci/lab-apt-packages.txt.)"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

#: command -> Debian package that provides it
TOOLS = {
    "ip": "iproute2",
    "iptables-restore": "iptables",
    "ip6tables-restore": "iptables",
    "dnsmasq": "dnsmasq-base",
    "squid": "squid-openssl",
    "wireguard-go": "wireguard-go",
    "wg": "wireguard-tools",
    "curl": "curl",
    "kdig": "knot-dnsutils",
    "ping": "iputils-ping",
    "setpriv": "util-linux",
    "sysctl": "procps",
    "chromium": "chromium",  # the PAC client the truth measures when the PAC file cannot be fetched
}
CERTGEN = Path("/usr/lib/squid/security_file_certgen")
SYSTEM_PYTHON = Path("/usr/bin/python3")


def missing_tools() -> list[str]:
    """Human-readable lines, one per missing tool, naming its package."""
    missing = [f"{cmd} (Debian package {pkg})" for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None]
    if not CERTGEN.exists():
        missing.append(f"{CERTGEN} (Debian package squid-openssl)")
    if importlib.util.find_spec("netfilterqueue") is None:
        missing.append("Python module netfilterqueue (pip package NetfilterQueue, needs libnetfilter-queue-dev)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("Python module playwright (pip install -e '.[test]'), to drive Chromium as the PAC client")
    if (
        not SYSTEM_PYTHON.exists()
        or subprocess.run([str(SYSTEM_PYTHON), "-c", "import pacparser"], capture_output=True, check=False).returncode
        != 0
    ):
        missing.append("pacparser for /usr/bin/python3 (Debian package python3-pacparser)")
    return missing
