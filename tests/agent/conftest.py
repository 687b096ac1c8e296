"""Agent test fixtures: private home directories, the collector double, real collectors.

The real-collector fixtures are the collector engineer's (tests/collector/conftest.py),
imported rather than copied: ``backend`` runs each reliability test on SQLite and on
a private PostgreSQL cluster, ``start_collector`` starts ``netcheck serve`` processes
whose logs are checked for tracebacks at teardown.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from netcheck.agent.config import AgentStore
from netcheck.agent.enrollment import enroll
from netcheck.agent.spool import Spool
from netcheck.agent.transport import CollectorClient, Timeouts
from netcheck.agent.upload import open_uploader
from netcheck.agent.uploader import Uploader
from tests.agent.collector_double import CollectorDouble
from tests.collector.conftest import (  # noqa: F401 - fixtures, registered by import
    NO_LIMITS,
    backend,
    create_secret,
    new_database,
    pg_cluster,
)
from tests.collector.harness import CollectorProcess


@pytest.fixture(autouse=True)
def private_homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """config_dir(), data_dir() and cache_dir() under tmp_path, never the developer's."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    return home


@pytest.fixture
def double() -> Iterator[CollectorDouble]:
    d = CollectorDouble().start()
    yield d
    d.stop()


@pytest.fixture
def store(tmp_path: Path) -> AgentStore:
    return AgentStore(tmp_path / "config")


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


@dataclass
class Real:
    """A real collector process and an enrollment secret for it."""

    proc: CollectorProcess
    secret: str
    secret_id: str

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def database_url(self) -> str:
        return self.proc.database_url


@pytest.fixture
def real(new_database: Callable[[], str], tmp_path: Path) -> Iterator[Callable[..., Real]]:  # noqa: F811
    """Start a real collector, ``netcheck serve`` in a subprocess (rate limits off unless ``env``
    turns them on). Every collector's log is checked for tracebacks at teardown."""
    started: list[CollectorProcess] = []

    def make(env: dict[str, str] | None = None, args: tuple[str, ...] = (),
             database_url: str | None = None) -> Real:
        proc = CollectorProcess(database_url or new_database(), env={**NO_LIMITS, **(env or {})}, args=args,
                                workdir=tmp_path)
        started.append(proc)
        secret_id, secret = create_secret(proc.database_url)
        return Real(proc, secret, secret_id)

    yield make
    for proc in started:
        proc.stop()
    for proc in started:
        text = proc.stderr_path.read_text("utf-8", "replace")
        assert "Traceback" not in text, f"the collector logged a traceback:\n{text[-5000:]}"


@dataclass
class Rig:
    """One enrolled agent (its own config dir and spool), wired as `netcheck agent` wires it."""

    store: AgentStore
    spool: Spool
    client: CollectorClient
    uploader: Uploader
    machine: str


def make_rig(root: Path, url: str, secret: str, *, upload_url: str | None = None,
             timeouts: Timeouts | None = None, wall: Callable[[], float] = time.time,
             spool_kwargs: dict[str, object] | None = None) -> Rig:
    """Enroll at ``url``; upload through ``upload_url`` (a fault proxy) if given."""
    store = AgentStore(root / "config")
    machine = secrets.token_hex(32)
    enroll(store, url, secret, tags={"site": "lab"}, machine=machine)
    if upload_url is not None:
        cfg = store.load_config()
        from dataclasses import replace
        store.save(replace(cfg, collector_url=upload_url), store.load_token())
    spool = Spool(root / "spool", wall=wall, **spool_kwargs or {})  # type: ignore[arg-type]
    client, uploader = open_uploader(store, spool, timeouts=timeouts, wall=wall)
    return Rig(store, spool, client, uploader, machine)


@pytest.fixture
def rigs(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """``rigs(url, secret, **kw)``: enrolled agents in their own directories; clients closed at teardown."""
    made: list[Rig] = []

    def make(url: str, secret: str, **kwargs: object) -> Rig:
        rig = make_rig(tmp_path / f"agent{len(made)}", url, secret, **kwargs)  # type: ignore[arg-type]
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.client.close()
