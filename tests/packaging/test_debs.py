"""The Debian packages on this machine: dpkg -i, systemd-analyze verify, the programs run as their
service users with their units' settings (the agent enrolls with the collector from the other
package and uploads a report), then dpkg --purge leaves nothing behind but the two system users
(Debian policy keeps them); the test removes those itself.

systemd is not running here (CI is a container), so the services are not started by systemd:
the test runs each unit's ExecStartPre/ExecStart as its User= with its Environment=, inside a
private network namespace (loopback only: the agent's check reaches nothing outside).
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from netcheck import __version__
from tests.lab.netns import require_root
from tests.packaging.conftest import run

pytestmark = pytest.mark.packaging

UNITS = {"netcheck-agent": "/lib/systemd/system/netcheck-agent.service",
         "netcheck-collector": "/lib/systemd/system/netcheck-collector.service"}
USERS = ("netcheck", "netcheck-collector")
#: where a package could leave something behind
ROOTS = ("/etc", "/var/lib", "/var/cache", "/var/log", "/opt", "/usr/bin", "/usr/sbin", "/usr/lib", "/lib/systemd",
         "/usr/share/doc", "/run")


def _netcheck_paths() -> set[str]:
    found = run(["find", *[r for r in ROOTS if os.path.exists(r)], "-xdev", "-name", "*netcheck*"], check=False)
    return {p for p in found.stdout.split() if not p.startswith("/run/netcheck-lab")}  # the lab's, not ours


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def unit_settings(unit: Path) -> tuple[str, dict[str, str], list[str], list[str]]:
    """(User, environment, ExecStartPre commands, ExecStart commands) as the unit file says."""
    env: dict[str, str] = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    user, pre, start = "", [], []
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "User":
            user = value
        elif key == "Environment":
            env.update(item.split("=", 1) for item in value.split())  # type: ignore[misc]
        elif key == "EnvironmentFile":
            path = Path(value.lstrip("-"))
            if path.exists():
                for entry in path.read_text().splitlines():
                    if entry.strip() and not entry.lstrip().startswith("#"):
                        k, _, v = entry.partition("=")
                        env[k.strip()] = v.strip()
        elif key == "ExecStartPre":
            pre.append(value)
        elif key == "ExecStart":
            start.append(value)
    return user, env, pre, start


@pytest.fixture
def machine() -> Iterator[None]:
    """Root on Debian; one such test at a time on this machine; the packages and users gone after."""
    reason = require_root()
    if reason:
        pytest.skip(reason)
    if not all(shutil.which(tool) for tool in ("dpkg", "systemd-analyze", "curl")):
        pytest.fail("dpkg, systemd-analyze and curl are needed (Debian; .ci/apt-packages.txt)")
    with open("/tmp/netcheck-deb-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        users_before = {u for u in USERS if _user_exists(u)}
        try:
            yield
        finally:
            subprocess.run(["dpkg", "--purge", "netcheck-agent", "netcheck-collector"], capture_output=True,
                           check=False)
            for user in USERS:
                if user not in users_before and _user_exists(user):
                    subprocess.run(["userdel", user], capture_output=True, check=False)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"nc-deb-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def as_user(netns: str, user: str, env: dict[str, str], argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, "setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
            "env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv]


def test_install_run_purge(machine: None, debs: dict[str, Path], netns: str, tmp_path: Path) -> None:
    before = _netcheck_paths()
    run(["dpkg", "-i", str(debs["netcheck-agent"]), str(debs["netcheck-collector"])], timeout=300)
    for package in debs:
        status = run(["dpkg-query", "-W", "-f=${Status} ${Version}", package]).stdout
        assert status == f"install ok installed {__version__}", status

    # the service users: system accounts that cannot log in
    for user in USERS:
        entry = pwd.getpwnam(user)
        assert entry.pw_uid < 1000 and entry.pw_shell == "/usr/sbin/nologin", entry
    assert oct(Path("/etc/netcheck-collector/collector.env").stat().st_mode & 0o777) == "0o640"

    # the units as systemd reads them (commands present and executable, directives known)
    verify = run(["systemd-analyze", "verify", *UNITS.values()], check=False, cwd="/")
    complaints = [ln for ln in (verify.stdout + verify.stderr).splitlines() if "netcheck" in ln]
    assert verify.returncode == 0 and not complaints, verify.stdout + verify.stderr
    for unit in UNITS.values():  # enabled at install
        assert Path(f"/etc/systemd/system/multi-user.target.wants/{Path(unit).name}").is_symlink()

    assert run(["/usr/bin/netcheck", "--version"]).stdout.strip() == f"netcheck, version {__version__}"
    assert run(["/opt/netcheck-collector/bin/netcheck", "--version"]).stdout.strip() == \
        f"netcheck, version {__version__}"

    # the collector as its unit runs it (on port 0 instead of the configured one)
    user, env, _, start = unit_settings(Path(UNITS["netcheck-collector"]))
    assert user == "netcheck-collector" and start == ["/opt/netcheck-collector/bin/netcheck serve"]
    log = open(tmp_path / "collector.log", "wb")  # noqa: SIM115 - closed below
    collector = subprocess.Popen(as_user(netns, user, env, [*start[0].split(), "--port", "0"]),
                                 stdout=subprocess.PIPE, stderr=log, cwd="/")
    try:
        assert collector.stdout is not None
        first = collector.stdout.readline().decode()
        assert "listening on http://127.0.0.1:" in first, first + (tmp_path / "collector.log").read_text()
        url = first.split("listening on ", 1)[1].split()[0]
        assert "/var/lib/netcheck-collector/collector.db" in first  # the data directory of the package
        in_ns = ["ip", "netns", "exec", netns]
        # the socket is bound before that line, and listens once the server has started
        curl = [*in_ns, "curl", "-sf", "--retry", "60", "--retry-delay", "1", "--retry-connrefused"]
        health = run([*curl, f"{url}/healthz"], check=False)
        assert health.returncode == 0, (tmp_path / "collector.log").read_text()[-3000:]
        assert json.loads(health.stdout) == {"status": "ok", "version": __version__}
        ready = json.loads(run([*curl, f"{url}/readyz"]).stdout)
        assert ready["status"] == "ready" and ready["version"] == __version__
        secret = run(as_user(netns, user, env, ["/usr/sbin/netcheck-collector", "admin", "secret", "create",
                                                "--site", "lab"])).stdout.strip()
        assert re.fullmatch(r"\S{20,}", secret), "no secret printed"

        # the agent: IT's deployment puts the URL and the secret in place, then the unit's commands run
        default = Path("/etc/default/netcheck-agent")
        default.write_text(default.read_text().replace("NETCHECK_COLLECTOR_URL=", f"NETCHECK_COLLECTOR_URL={url}"))
        secret_file = Path("/etc/netcheck/enroll-secret")
        secret_file.write_text(secret + "\n")
        secret_file.chmod(0o640)
        shutil.chown(secret_file, "root", "netcheck")
        user, env, pre, start = unit_settings(Path(UNITS["netcheck-agent"]))
        assert user == "netcheck" and pre == ["/usr/lib/netcheck-agent/enroll-if-needed"]
        assert start == ["/usr/bin/netcheck agent"]
        enrolled = run(as_user(netns, user, env, pre), cwd="/")
        assert "Enrolled with" in enrolled.stdout, enrolled.stdout + enrolled.stderr
        token = Path("/var/lib/netcheck/config/netcheck/token")
        assert token.stat().st_uid == pwd.getpwnam("netcheck").pw_uid and token.stat().st_mode & 0o077 == 0
        again = run(as_user(netns, user, env, pre), cwd="/")  # enrolled: nothing to do
        assert again.stdout == "" and token.exists()
        once = run(as_user(netns, user, env, [*start[0].split(), "--once"]), cwd="/", check=False, timeout=180)
        assert once.returncode == 0, once.stdout + once.stderr
        devices = json.loads(run(as_user(netns, "netcheck-collector", unit_settings(
            Path(UNITS["netcheck-collector"]))[1], ["/usr/sbin/netcheck-collector", "admin", "devices", "--json"])
                                    ).stdout)
        assert len(devices) == 1 and devices[0]["agent_version"] == __version__, devices
        assert devices[0]["tags"] == {"site": "lab"} and devices[0]["last_verdict"] == "UNKNOWN", devices
    finally:
        collector.terminate()
        collector.wait(timeout=30)
        if collector.stdout is not None:
            collector.stdout.close()
        log.close()
    assert "Traceback" not in (tmp_path / "collector.log").read_text()

    run(["dpkg", "--purge", "netcheck-agent", "netcheck-collector"], timeout=300)
    for package in debs:
        gone = run(["dpkg-query", "-W", "-f=${Status}", package], check=False)
        assert gone.returncode != 0 or "not-installed" in gone.stdout, gone.stdout
    left = sorted(_netcheck_paths() - before)
    assert not left, f"left behind after purge: {left}"
    for user in USERS:  # Debian policy: system users stay (files they owned may remain on backups, NFS...)
        assert _user_exists(user)
