"""Real collectors and real PostgreSQL clusters on loopback, for tests and the benchmark.

``PgCluster`` runs a private PostgreSQL cluster: ``initdb`` into a temporary directory (as the
``postgres`` or ``nobody`` user when we are root, since PostgreSQL refuses to run as root),
listening on 127.0.0.1 on a free port, no Unix socket. It can be stopped and started again
(the outage tests do that) and is deleted by ``close()``.

``CollectorProcess`` runs ``python -m netcheck serve --port 0`` in a subprocess, reads the URL
from the one line it prints, and waits for ``/readyz``. Its stderr is kept in a file so a test
can check that no traceback was logged.

Importable from other test packages: ``from tests.collector.harness import CollectorProcess``.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import httpx

PG_USER = "netcheck"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pg_bindir() -> Path | None:
    """Directory of the PostgreSQL server binaries (initdb, pg_ctl), or None."""
    override = os.environ.get("NETCHECK_TEST_PG_BIN")
    candidates = [override] if override else []
    found = shutil.which("initdb")
    if found:
        candidates.append(str(Path(found).parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for cand in candidates:
        if cand and (Path(cand) / "initdb").exists() and (Path(cand) / "pg_ctl").exists():
            return Path(cand)
    return None


def _unprivileged() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root and there is no postgres or nobody user to run PostgreSQL as")


class PgCluster:
    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="netcheck-pg-"))
        self.datadir = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self._ids = _unprivileged()
        if self._ids is not None:
            os.chown(self.root, *self._ids)
        options = [f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories=''",
                   "-c max_connections=200"]
        if not durable:
            options.append("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._options = " ".join(options)
        self._run("initdb", "-D", str(self.datadir), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
                  "--no-locale", "-N")
        atexit.register(self.close)  # even if the test run dies before its teardown
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self._ids is not None:
            uid, gid = self._ids
            cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-o", self._options,
                  "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "60", "stop")

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "collector") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={PG_USER} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.admin_url(name)

    def close(self) -> None:
        if not self.datadir.exists():
            return
        try:
            self.stop()
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class CollectorProcess:
    """``netcheck serve`` in a subprocess on 127.0.0.1 with a free port."""

    def __init__(self, database_url: str | None, *, env: Mapping[str, str] | None = None,
                 args: tuple[str, ...] = (), workdir: Path | None = None, wait: bool = True,
                 ready_timeout: float = 60.0) -> None:
        """``database_url=None`` runs with no --database-url: SQLite in the (private) data directory."""
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="netcheck-collector-"))
        self.database_url = database_url or f"sqlite:///{self.workdir / 'data' / 'netcheck' / 'collector.db'}"
        self.stderr_path = self.workdir / f"collector-{uuid.uuid4().hex[:8]}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("NETCHECK_")}
        full_env.update({"HOME": str(self.workdir), "XDG_DATA_HOME": str(self.workdir / "data"),
                         "PYTHONUNBUFFERED": "1"})
        full_env.update(env or {})
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.env = full_env
        db_args = ("--database-url", database_url) if database_url else ()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netcheck", "serve", "--host", "127.0.0.1", "--port", "0", *db_args, *args],
            stdout=subprocess.PIPE, stderr=self._stderr, env=full_env, cwd=self.workdir,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode("utf-8", "replace")
        if "listening on " not in line:
            self.stop()
            raise RuntimeError(f"collector did not start: {line!r}\n{self.log()[-3000:]}")
        self.url = line.split("listening on ", 1)[1].split()[0]
        self.first_line = line
        if wait:
            self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        with httpx.Client(base_url=self.url, timeout=5.0, verify=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"collector exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
                try:
                    response = client.get("/readyz")
                    if response.status_code == 200:
                        return
                    last = response.text
                except httpx.TransportError as exc:
                    last = repr(exc)
                time.sleep(0.1)
        raise RuntimeError(f"collector not ready after {timeout}s: {last}\n{self.log()[-3000:]}")

    def log(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text("utf-8", "replace")

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> CollectorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
