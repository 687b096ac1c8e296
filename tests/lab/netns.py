"""Low-level plumbing: commands, network namespaces, processes, cleanup.

Everything the lab creates is registered with a :class:`Janitor`, which
removes it again in reverse order: processes (killed by process group),
namespaces (which takes their interfaces and routes with them), the
per-namespace ``/etc/netns/<name>`` directories and temporary files.
The janitor runs from the world's context manager, from ``atexit`` and from
the signal handlers installed by :func:`install_signal_handlers`, so a
failing test or a Ctrl-C leaves nothing behind.  A run that was killed with
SIGKILL leaves a state directory under :data:`STATE_ROOT`; ``python -m
tests.lab cleanup`` removes what such runs left.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger("lab")

#: Namespace names start with this prefix followed by the run id.
NS_PREFIX = "ncl"
#: Where each run records what it created (for crash recovery).
STATE_ROOT = Path("/run/netcheck-lab")
NETNS_ETC = Path("/etc/netns")
NETNS_RUN = Path("/run/netns")
#: wireguard-go's control sockets (shared by all namespaces).
WG_SOCKET_DIR = Path("/var/run/wireguard")

_CLONE_NEWNET = 0x40000000


class LabError(Exception):
    """A failure the lab reports to its user as one line, without a traceback."""


@dataclass(frozen=True)
class Result:
    """The outcome of one command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run(
    argv: Sequence[str],
    *,
    ns: str | None = None,
    check: bool = True,
    input: str | None = None,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> Result:
    """Run a command, optionally inside network namespace ``ns``.

    Raises :class:`LabError` when ``check`` is set and the command fails.
    """
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            full,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError(f"command not found: {full[0]} (is its package installed?)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"command timed out after {timeout:.0f}s: {' '.join(full)}") from exc
    result = Result(tuple(full), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
    if check and not result.ok:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"command failed ({proc.returncode}): {' '.join(full)}: {detail[-1] if detail else ''}")
    return result


def ip_batch(ns: str, commands: Sequence[str], *, force: bool = False) -> None:
    """Run many ``ip`` commands with few processes (``ip -batch``).

    A command may start with ``-4`` or ``-6`` (which ``-batch`` lines cannot
    carry); consecutive commands of one family share a process, in order.
    ``force`` keeps going past failing commands (for undoing things).
    """
    groups: list[tuple[str, list[str]]] = []
    for cmd in commands:
        fam, rest = ("", cmd)
        if cmd.startswith(("-4 ", "-6 ")):
            fam, rest = cmd[:2], cmd[3:]
        if not groups or groups[-1][0] != fam:
            groups.append((fam, []))
        groups[-1][1].append(rest)
    for fam, cmds in groups:
        argv = ["ip", "-n", ns, *([fam] if fam else []), *(["-force"] if force else []), "-batch", "-"]
        run(argv, input="\n".join(cmds) + "\n", check=not force)


def sysctl(ns: str, settings: dict[str, str]) -> None:
    """Write sysctls in a namespace (via /proc/sys inside ``ip netns exec``)."""
    args = [f"{k}={v}" for k, v in settings.items()]
    run(["sysctl", "-q", "-w", *args], ns=ns)


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """Switch the *calling thread* into network namespace ``ns``.

    Sockets created inside the block belong to ``ns`` and keep working after
    the block ends.  Only used for readiness checks of the lab's own servers.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net", "rb") as home_fd, open(NETNS_RUN / ns, "rb") as target:
        if libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise LabError(f"setns({ns}) failed: {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            if libc.setns(home_fd.fileno(), _CLONE_NEWNET) != 0:  # pragma: no cover - fatal
                raise LabError("could not return to the original network namespace")


@dataclass
class Proc:
    """A long-running lab process (a server) and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])


@dataclass
class Janitor:
    """Records everything a run creates and removes it again (LIFO)."""

    run_id: str
    state_dir: Path
    procs: list[Proc] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    _done: bool = False

    @classmethod
    def create(cls, run_id: str) -> Janitor:
        state_dir = STATE_ROOT / run_id
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}")
        return cls(run_id=run_id, state_dir=state_dir)

    # -- registration ---------------------------------------------------
    def add_namespace(self, ns: str) -> None:
        self.namespaces.append(ns)
        self._save()

    def add_path(self, path: Path) -> None:
        self.paths.append(path)
        self._save()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ns: str | None,
        log_dir: Path,
        env: dict[str, str] | None = None,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    ) -> Proc:
        """Start a server in its own process group, output to ``log_dir/name.log``."""
        full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
        log_path = log_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            try:
                popen = subprocess.Popen(
                    full, stdin=stdin, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
            except FileNotFoundError as exc:
                raise LabError(f"cannot start {name}: {full[0]} not found") from exc
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        self._save()
        return proc

    def stop(self, proc: Proc) -> None:
        """Stop one process early (e.g. the VPN client when the tunnel drops)."""
        _kill_group(proc.popen.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=3)
        if proc in self.procs:
            self.procs.remove(proc)
            self._save()

    # -- teardown -------------------------------------------------------
    def cleanup(self) -> list[str]:
        """Remove everything; returns problems (never raises)."""
        if self._done:
            return []
        self._done = True
        problems: list[str] = []
        for proc in reversed(self.procs):
            _kill_group(proc.popen.pid)
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(timeout=3)
            except subprocess.TimeoutExpired:
                _kill_group(proc.popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(timeout=2)
                if proc.popen.poll() is None:
                    problems.append(f"process {proc.name} (pid {proc.popen.pid}) would not die")
        self.procs.clear()
        for ns in reversed(self.namespaces):
            problems += remove_namespace(ns)
        self.namespaces.clear()
        for path in reversed(self.paths):
            shutil.rmtree(path, ignore_errors=True)
        self.paths.clear()
        remove_wg_sockets(self.run_id)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        return problems

    def _save(self) -> None:
        state = {
            "pids": [p.popen.pid for p in self.procs],
            "namespaces": self.namespaces,
            "paths": [str(p) for p in self.paths],
        }
        tmp = self.state_dir / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_dir / "state.json")


def _kill_group(pid: int, sig: signal.Signals = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def remove_namespace(ns: str) -> list[str]:
    """Kill whatever still runs in ``ns``, delete it and its /etc/netns dir."""
    problems: list[str] = []
    if (NETNS_RUN / ns).exists():
        pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        res = run(["ip", "netns", "delete", ns], check=False)
        if not res.ok:
            problems.append(f"could not delete namespace {ns}: {res.stderr.strip()}")
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
    return problems


def cleanup_stale() -> list[str]:
    """Remove leftovers of runs whose owner process is gone.  Returns what was removed."""
    removed: list[str] = []
    if STATE_ROOT.exists():
        for state_dir in sorted(STATE_ROOT.iterdir()):
            if _owner_alive(state_dir / "owner"):
                continue
            removed += _cleanup_state_dir(state_dir)
    live_runs = {d.name for d in STATE_ROOT.iterdir()} if STATE_ROOT.exists() else set()
    if NETNS_RUN.exists():
        for entry in sorted(NETNS_RUN.iterdir()):
            name = entry.name
            if name.startswith(NS_PREFIX) and name[len(NS_PREFIX) :].split("-")[0] not in live_runs:
                remove_namespace(name)
                removed.append(f"namespace {name}")
    return removed


def _cleanup_state_dir(state_dir: Path) -> list[str]:
    removed: list[str] = []
    try:
        state = json.loads((state_dir / "state.json").read_text())
    except (OSError, ValueError):
        state = {}
    for pid in state.get("pids", []):
        if _pid_alive(pid):
            _kill_group(pid, signal.SIGKILL)
            removed.append(f"process group {pid}")
    for ns in state.get("namespaces", []):
        remove_namespace(ns)
        removed.append(f"namespace {ns}")
    for path in state.get("paths", []):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(f"directory {path}")
    removed += [f"socket {s}" for s in remove_wg_sockets(state_dir.name)]
    shutil.rmtree(state_dir, ignore_errors=True)
    return removed


def remove_wg_sockets(run_id: str) -> list[Path]:
    """wireguard-go leaves its socket behind when SIGKILLed; names carry the run id."""
    gone = []
    for sock in WG_SOCKET_DIR.glob(f"wg{run_id}?.sock") if WG_SOCKET_DIR.exists() else []:
        with contextlib.suppress(OSError):
            sock.unlink()
            gone.append(sock)
    return gone


def _owner_alive(path: Path) -> bool:
    """Is the process that wrote ``path`` ("PID STARTTIME") still running?"""
    try:
        pid_text, start = path.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return False
    return _pid_alive(pid) and _start_time(pid) == start


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks (guards against a reused pid)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _pid_alive(pid: int) -> bool:
    """True for a running process (a zombie counts as gone)."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


_handlers_installed = False


def install_signal_handlers(on_signal: Callable[[], None]) -> None:
    """Turn SIGTERM and SIGHUP into SystemExit so context managers unwind.

    SIGINT already raises KeyboardInterrupt.  ``on_signal`` runs first
    (used to stop an in-flight child quickly).
    """
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: object) -> None:
        on_signal()
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
    _handlers_installed = True


def require_root() -> str | None:
    """Return why the lab cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "lab needs root to create network namespaces"
    probe = f"{NS_PREFIX}probe{os.getpid()}"
    res = run(["ip", "netns", "add", probe], check=False)
    if not res.ok:
        return f"lab needs root to create network namespaces ({res.stderr.strip()})"
    run(["ip", "netns", "delete", probe], check=False)
    return None


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until true or raise LabError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
