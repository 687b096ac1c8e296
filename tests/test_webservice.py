"""The endpoint web-service client and cache, against a real local HTTP server.

The server is tests/webservice_double.py (127.0.0.1, port 0, in a thread); time
is an injected clock, so "an hour later" needs no sleeping.
"""

from __future__ import annotations

import json
import socket
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from netcheck.errors import ConfigError
from netcheck.m365.catalog import data_dir, load_versions
from netcheck.m365.webservice import (
    BACKOFF,
    DEFAULT_BASE_URL,
    EndpointCache,
    Updater,
    UpdateStatus,
    client_request_id,
    current_catalog,
    is_newer,
    resolve_base_url,
)
from tests.webservice_double import WebServiceDouble

BUNDLED = load_versions(data_dir())["Worldwide"]
NEW = "2026090100"
NEWER = "2026100100"
T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
_REAL = json.loads((data_dir() / "worldwide.json").read_text(encoding="utf-8"))
_EXTRA = {"id": 999, "serviceArea": "Common", "serviceAreaDisplayName": "Test set",
          "urls": ["new.example.test"], "tcpPorts": "443", "category": "Default",
          "expressRoute": False, "required": True}


def dataset(*extra: dict[str, object]) -> bytes:
    """The real Worldwide data plus ``extra`` sets, CRLF and no final newline, as the service sends."""
    return json.dumps(_REAL + list(extra), indent=2).replace("\n", "\r\n").encode()


NEW_DATA = dataset(_EXTRA)
NEWER_DATA = dataset(_EXTRA, {**_EXTRA, "id": 1000, "urls": ["newer.example.test"]})


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                "all_proxy", "no_proxy", "NETCHECK_ENDPOINTS_URL", "SSL_CERT_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture
def ws() -> Iterator[WebServiceDouble]:
    with WebServiceDouble() as double:
        yield double


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False) as c:
        yield c


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "netcheck" / "endpoints"


@pytest.fixture
def config_root(tmp_path: Path) -> Path:
    return tmp_path / "config" / "netcheck"


def updater(client: httpx.Client, url: str, clock: Clock, cache_root: Path, config_root: Path,
            budget: float = 30.0) -> Updater:
    return Updater(client, url, cache_root=cache_root, config_root=config_root, clock=clock,
                   budget=budget)


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}"


def seed_cache(cache_root: Path, version: str, data: bytes, at: datetime = T0 - timedelta(days=3)) -> None:
    EndpointCache(cache_root).store("Worldwide", data, version, at, "http://seed.test/endpoints/Worldwide")


def snapshot(cache_root: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_ino) for p in sorted(cache_root.iterdir())
            if not p.name.endswith(".state.json")}


# --- the protocol ---------------------------------------------------------------

def test_unchanged_version_makes_no_endpoints_call(ws: WebServiceDouble, client: httpx.Client,
                                                   clock: Clock, cache_root: Path,
                                                   config_root: Path) -> None:
    ws.publish("Worldwide", BUNDLED, NEW_DATA)
    result = updater(client, ws.url, clock, cache_root, config_root).update("Worldwide")
    assert result.status is UpdateStatus.CURRENT
    assert ws.paths() == ["/version/Worldwide"]
    assert result.in_use.source == "bundled" and result.in_use.version == BUNDLED
    assert not (cache_root / "worldwide.json").exists()
    assert result.describe() == (
        f"The Worldwide endpoint data is up to date; using the bundled snapshot, version {BUNDLED} "
        "(no cached data yet).")


def test_changed_version_downloads_validates_and_caches(ws: WebServiceDouble, client: httpx.Client,
                                                        clock: Clock, cache_root: Path,
                                                        config_root: Path) -> None:
    ws.publish("Worldwide", NEW, NEW_DATA)
    result = updater(client, ws.url, clock, cache_root, config_root).update("worldwide")
    assert result.status is UpdateStatus.UPDATED
    assert ws.paths() == ["/version/Worldwide", "/endpoints/Worldwide"]
    assert (cache_root / "worldwide.json").read_bytes() == NEW_DATA  # byte for byte
    meta = json.loads((cache_root / "worldwide.meta.json").read_text())
    assert meta["version"] == NEW and meta["fetched_at"] == "2026-11-20T09:30:00Z"
    assert meta["instance"] == "Worldwide"
    assert sorted(p.name for p in cache_root.iterdir()) == [
        "worldwide.json", "worldwide.meta.json", "worldwide.state.json"]  # no temporary files left
    assert result.in_use.source == "cache" and result.in_use.version == NEW
    assert result.describe() == (
        f"Updated the Worldwide endpoint data to version {NEW} (was {BUNDLED}, bundled snapshot); "
        f"saved in {cache_root / 'worldwide.json'}.")
    catalog, warning = current_catalog("Worldwide", cache_root=cache_root)
    assert (catalog.source, catalog.version, warning) == ("cache", NEW, None)
    assert catalog.set_by_id(999).urls == ("new.example.test",)


def test_update_replaces_the_cache_atomically(ws: WebServiceDouble, client: httpx.Client,
                                              clock: Clock, cache_root: Path,
                                              config_root: Path) -> None:
    seed_cache(cache_root, NEW, NEW_DATA)
    path = cache_root / "worldwide.json"
    old_inode = path.stat().st_ino
    with path.open("rb") as reader:  # a reader that opened the old file ...
        ws.publish("Worldwide", NEWER, NEWER_DATA)
        result = updater(client, ws.url, clock, cache_root, config_root).update()
        assert result.status is UpdateStatus.UPDATED
        assert reader.read() == NEW_DATA  # ... still sees the whole old file: it was replaced, not rewritten
    assert path.stat().st_ino != old_inode
    assert path.read_bytes() == NEWER_DATA
    assert current_catalog(cache_root=cache_root)[0].version == NEWER


def test_version_check_asks_for_the_requested_instance(ws: WebServiceDouble, client: httpx.Client,
                                                       clock: Clock, cache_root: Path,
                                                       config_root: Path) -> None:
    china = (data_dir() / "china.json").read_bytes()
    ws.publish("China", "2026110100", china)
    result = updater(client, ws.url, clock, cache_root, config_root).update("china")
    assert result.status is UpdateStatus.UPDATED
    assert ws.paths() == ["/version/China", "/endpoints/China"]
    assert (cache_root / "china.json").read_bytes() == china
    assert current_catalog("China", cache_root=cache_root)[0].version == "2026110100"
    assert current_catalog("Worldwide", cache_root=cache_root)[0].source == "bundled"


# --- the machine's ClientRequestId -----------------------------------------------

def test_one_guid_on_every_request_and_across_runs(ws: WebServiceDouble, client: httpx.Client,
                                                   clock: Clock, cache_root: Path,
                                                   config_root: Path) -> None:
    ws.publish("Worldwide", NEW, NEW_DATA)
    updater(client, ws.url, clock, cache_root, config_root).update()
    ws.publish("Worldwide", NEWER, NEWER_DATA)
    with httpx.Client(trust_env=False) as other:  # a second run: new client, new updater
        updater(other, ws.url, clock, cache_root, config_root).update(force=True)
    guids = {r.guid for r in ws.requests}
    assert len(ws.requests) == 4 and len(guids) == 1
    guid = guids.pop()
    assert guid is not None and uuid.UUID(guid).version == 4
    path = config_root / "client-request-id"
    assert path.read_text().strip() == guid
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert client_request_id(config_root) == guid


def test_a_damaged_guid_file_is_replaced(config_root: Path) -> None:
    config_root.mkdir(parents=True)
    (config_root / "client-request-id").write_text("not-a-guid\n")
    guid = client_request_id(config_root)
    assert uuid.UUID(guid).version == 4
    assert client_request_id(config_root) == guid
    assert stat.S_IMODE((config_root / "client-request-id").stat().st_mode) == 0o600


def test_the_double_refuses_requests_without_a_guid(ws: WebServiceDouble) -> None:
    with httpx.Client(trust_env=False) as c:
        assert c.get(f"{ws.url}/version/Worldwide").status_code == 400
        assert c.get(f"{ws.url}/version/Nowhere", params={"clientrequestid": str(uuid.uuid4())}
                     ).status_code == 400


# --- politeness: once an hour, and 429 --------------------------------------------

def test_at_most_one_version_check_an_hour(ws: WebServiceDouble, client: httpx.Client, clock: Clock,
                                           cache_root: Path, config_root: Path) -> None:
    ws.publish("Worldwide", BUNDLED, NEW_DATA)
    up = updater(client, ws.url, clock, cache_root, config_root)
    assert up.update().status is UpdateStatus.CURRENT
    clock.advance(minutes=59)
    skipped = updater(client, ws.url, clock, cache_root, config_root).update()  # a new run
    assert skipped.status is UpdateStatus.SKIPPED
    assert len(ws.requests) == 1
    assert skipped.describe() == (
        "Checked the endpoint web service 59 minutes ago (at most once an hour; --force checks now); "
        f"using the bundled snapshot, version {BUNDLED} (no cached data yet).")
    assert up.update(force=True).status is UpdateStatus.CURRENT  # --force overrides the limit
    assert len(ws.requests) == 2
    clock.advance(minutes=59)
    assert up.update().status is UpdateStatus.SKIPPED  # the forced check counts as the last one
    clock.advance(minutes=2)
    assert up.update().status is UpdateStatus.CURRENT
    assert ws.paths() == ["/version/Worldwide"] * 3


def test_the_hour_is_per_instance(ws: WebServiceDouble, client: httpx.Client, clock: Clock,
                                  cache_root: Path, config_root: Path) -> None:
    ws.publish("Worldwide", BUNDLED, b"[]")
    ws.publish("USGovDoD", load_versions(data_dir())["USGovDoD"], b"[]")
    up = updater(client, ws.url, clock, cache_root, config_root)
    up.update("Worldwide")
    assert up.update("USGovDoD").status is UpdateStatus.CURRENT
    assert ws.paths() == ["/version/Worldwide", "/version/USGovDoD"]


def test_a_clock_that_went_back_does_not_block_checks(ws: WebServiceDouble, client: httpx.Client,
                                                      clock: Clock, cache_root: Path,
                                                      config_root: Path) -> None:
    ws.publish("Worldwide", BUNDLED, b"[]")
    up = updater(client, ws.url, clock, cache_root, config_root)
    clock.advance(days=30)
    up.update()
    clock.advance(days=-30)  # the last check now looks a month in the future
    assert up.update().status is UpdateStatus.CURRENT
    assert len(ws.requests) == 2


def test_429_backs_off_an_hour(ws: WebServiceDouble, client: httpx.Client, clock: Clock,
                               cache_root: Path, config_root: Path) -> None:
    ws.publish("Worldwide", NEW, NEW_DATA)
    ws.endpoints_status = 429
    result = updater(client, ws.url, clock, cache_root, config_root).update()
    assert result.status is UpdateStatus.BACKED_OFF
    assert result.not_before == T0 + BACKOFF
    assert result.describe() == (
        "The endpoint web service asked netcheck to slow down (HTTP 429); not asking again before "
        f"2026-11-20 10:30 UTC; using the bundled snapshot, version {BUNDLED} (no cached data yet).")
    assert ws.paths() == ["/version/Worldwide", "/endpoints/Worldwide"]
    assert not (cache_root / "worldwide.json").exists()

    ws.endpoints_status = 200
    for minutes in (1, 30, 28):  # within the hour: nothing is sent, not even with --force
        clock.advance(minutes=minutes)
        again = updater(client, ws.url, clock, cache_root, config_root).update(force=True)
        assert again.status is UpdateStatus.BACKED_OFF
        assert len(ws.requests) == 2
    clock.advance(minutes=2)  # an hour and a minute after the 429
    later = updater(client, ws.url, clock, cache_root, config_root).update(force=True)
    assert later.status is UpdateStatus.UPDATED
    assert ws.paths()[2:] == ["/version/Worldwide", "/endpoints/Worldwide"]


def test_429_on_version_also_backs_off(ws: WebServiceDouble, client: httpx.Client, clock: Clock,
                                       cache_root: Path, config_root: Path) -> None:
    ws.version_status = 429  # documented never to happen; handled the same way
    up = updater(client, ws.url, clock, cache_root, config_root)
    assert up.update().status is UpdateStatus.BACKED_OFF
    clock.advance(minutes=10)
    assert up.update(force=True).status is UpdateStatus.BACKED_OFF
    assert ws.paths() == ["/version/Worldwide"]


def test_a_failed_download_is_retried_only_after_the_hour(ws: WebServiceDouble, client: httpx.Client,
                                                          clock: Clock, cache_root: Path,
                                                          config_root: Path) -> None:
    ws.publish("Worldwide", NEW, NEW_DATA)
    ws.endpoints_status = 503
    up = updater(client, ws.url, clock, cache_root, config_root)
    failed = up.update()
    assert failed.status is UpdateStatus.UNREACHABLE and failed.reason == "HTTP 503 Service Unavailable"
    clock.advance(minutes=5)
    skipped = up.update()
    assert skipped.status is UpdateStatus.SKIPPED
    assert skipped.describe().endswith(f"Version {NEW} is published but was not downloaded.")
    ws.endpoints_status = 200
    assert up.update(force=True).status is UpdateStatus.UPDATED


# --- offline and bad answers --------------------------------------------------------

def test_offline_falls_back_to_the_cache(client: httpx.Client, clock: Clock, cache_root: Path,
                                         config_root: Path) -> None:
    seed_cache(cache_root, NEW, NEW_DATA, at=datetime(2026, 11, 17, 8, 0, tzinfo=UTC))
    result = updater(client, closed_port_url(), clock, cache_root, config_root).update()
    assert result.status is UpdateStatus.UNREACHABLE
    assert result.describe() == (
        "Could not reach the endpoint web service (connection refused); using the cached data, "
        f"version {NEW} fetched 2026-11-17.")
    assert (cache_root / "worldwide.json").read_bytes() == NEW_DATA


def test_offline_without_a_cache_falls_back_to_the_bundled_snapshot(
        client: httpx.Client, clock: Clock, cache_root: Path, config_root: Path) -> None:
    up = updater(client, closed_port_url(), clock, cache_root, config_root)
    result = up.update()
    assert result.status is UpdateStatus.UNREACHABLE
    assert result.describe() == (
        "Could not reach the endpoint web service (connection refused); using the bundled snapshot, "
        f"version {BUNDLED} (no cached data yet).")
    assert up.update().status is UpdateStatus.UNREACHABLE  # a failed check is not "the last check"


def test_a_service_that_never_answers_times_out(ws: WebServiceDouble, client: httpx.Client,
                                                clock: Clock, cache_root: Path,
                                                config_root: Path) -> None:
    ws.stall = True
    result = updater(client, ws.url, clock, cache_root, config_root, budget=0.5).update()
    assert result.status is UpdateStatus.UNREACHABLE
    assert result.reason == "timed out"
    assert result.in_use.source == "bundled"


def _bad_port_data() -> bytes:
    bad = [dict(s) for s in _REAL]
    bad[1] = {**bad[1], "tcpPorts": "443;80"}
    return json.dumps(bad).encode()


@pytest.mark.parametrize(("body", "reason"), [
    (b"<html>Service Unavailable</html>", "the endpoint data is not JSON"),
    (NEW_DATA[: len(NEW_DATA) // 2], "the endpoint data is not JSON"),
    (b"{}", "the endpoint data: expected a JSON array of endpoint sets"),
    (b"[]", "the endpoint data: holds no endpoint sets"),
    (_bad_port_data(), "the endpoint data: endpoint set 2: bad port '443;80'"),
    (b"[" * 100_000 + b"]" * 100_000, "the endpoint data is not JSON"),
])
def test_a_corrupt_answer_never_replaces_the_cache(ws: WebServiceDouble, client: httpx.Client,
                                                   clock: Clock, cache_root: Path, config_root: Path,
                                                   body: bytes, reason: str) -> None:
    seed_cache(cache_root, NEW, NEW_DATA)
    before = snapshot(cache_root)
    ws.publish("Worldwide", NEWER, NEWER_DATA)
    ws.endpoints_body = body
    result = updater(client, ws.url, clock, cache_root, config_root).update()
    assert result.status is UpdateStatus.BAD_ANSWER
    assert result.reason == reason
    assert snapshot(cache_root) == before  # same bytes, same files
    assert result.describe() == (
        f"The endpoint web service sent an answer netcheck cannot use ({reason}); using the cached "
        f"data, version {NEW} fetched 2026-11-17.")


@pytest.mark.parametrize(("body", "reason"), [
    (b"nope", "the version answer is not JSON"),
    (b'{"instance": "Worldwide", "latest": "2026-09-01"}',
     "the version answer's 'latest' is not a ten-digit version ('2026-09-01')"),
    (b'{"instance": "China", "latest": "2026090100"}', "the version answer is for China, not Worldwide"),
    (b'[{"instance": "China", "latest": "2026090100"}]', "the version answer has no entry for Worldwide"),
])
def test_a_corrupt_version_answer_fetches_nothing(ws: WebServiceDouble, client: httpx.Client,
                                                  clock: Clock, cache_root: Path, config_root: Path,
                                                  body: bytes, reason: str) -> None:
    ws.version_body = body
    result = updater(client, ws.url, clock, cache_root, config_root).update()
    assert (result.status, result.reason) == (UpdateStatus.BAD_ANSWER, reason)
    assert ws.paths() == ["/version/Worldwide"]


def test_the_all_instances_version_list_is_understood(ws: WebServiceDouble, client: httpx.Client,
                                                      clock: Clock, cache_root: Path,
                                                      config_root: Path) -> None:
    ws.version_body = json.dumps([{"instance": "China", "latest": "2026090100"},
                                  {"instance": "Worldwide", "latest": BUNDLED}]).encode()
    result = updater(client, ws.url, clock, cache_root, config_root).update()
    assert (result.status, result.latest) == (UpdateStatus.CURRENT, BUNDLED)


def test_http_errors_are_reasons(ws: WebServiceDouble, client: httpx.Client, clock: Clock,
                                 cache_root: Path, config_root: Path) -> None:
    result = updater(client, ws.url + "/wrong-prefix", clock, cache_root, config_root).update()
    assert (result.status, result.reason) == (UpdateStatus.UNREACHABLE, "HTTP 404 Not Found")


# --- the cache, read without the network --------------------------------------------

def test_a_corrupt_cache_is_repaired_even_when_the_version_is_unchanged(
        ws: WebServiceDouble, client: httpx.Client, clock: Clock, cache_root: Path,
        config_root: Path) -> None:
    seed_cache(cache_root, NEW, NEW_DATA)
    (cache_root / "worldwide.json").write_bytes(b"[{")  # damaged outside netcheck
    ws.publish("Worldwide", NEW, NEW_DATA)
    result = updater(client, ws.url, clock, cache_root, config_root).update()
    assert result.status is UpdateStatus.UPDATED
    assert result.warning is None
    assert (cache_root / "worldwide.json").read_bytes() == NEW_DATA


@pytest.mark.parametrize(("damage", "why"), [
    (lambda root: (root / "worldwide.json").write_bytes(b"[{"), "does not match worldwide.meta.json"),
    (lambda root: (root / "worldwide.meta.json").unlink(), "worldwide.meta.json cannot be read"),
    (lambda root: (root / "worldwide.json").unlink(), "worldwide.json cannot be read"),
    (lambda root: (root / "worldwide.meta.json").write_text('{"instance": "Worldwide"}'),
     "'version' must be ten digits"),
    (lambda root: (root / "worldwide.meta.json").write_text("[1"), "not valid JSON"),
])
def test_a_corrupt_cache_is_ignored_with_a_reason(cache_root: Path, damage: object, why: str) -> None:
    seed_cache(cache_root, NEW, NEW_DATA)
    assert callable(damage)
    damage(cache_root)
    catalog, warning = current_catalog("Worldwide", cache_root=cache_root)
    assert (catalog.source, catalog.version) == ("bundled", BUNDLED)
    assert warning is not None and why in warning
    assert warning.startswith("the cached Worldwide endpoint data is unusable (")
    assert warning.endswith("; using the bundled snapshot. `netcheck endpoints update` replaces it.")


def test_a_cache_with_valid_json_but_bad_data_is_ignored(cache_root: Path) -> None:
    seed_cache(cache_root, NEW, b'[{"id": 7, "serviceArea": "Common", "category": "Best"}]')
    catalog, warning = current_catalog("Worldwide", cache_root=cache_root)
    assert catalog.source == "bundled"
    assert warning is not None and "endpoint set 7: unknown category 'Best'" in warning


def test_a_cache_older_than_the_bundled_snapshot_is_not_used(cache_root: Path) -> None:
    seed_cache(cache_root, "2025010100", NEW_DATA)
    catalog, warning = current_catalog("Worldwide", cache_root=cache_root)
    assert (catalog.source, catalog.version, warning) == ("bundled", BUNDLED, None)


def test_the_default_cache_is_in_the_users_cache_dir(tmp_path: Path) -> None:
    seed_cache(tmp_path / "cache" / "netcheck" / "endpoints", NEW, NEW_DATA)
    catalog, warning = current_catalog()
    assert (catalog.source, catalog.version, warning) == ("cache", NEW, None)


def test_an_explicit_file_wins_and_takes_its_version_from_a_meta_file(tmp_path: Path,
                                                                      cache_root: Path) -> None:
    seed_cache(cache_root, NEW, NEW_DATA)
    path = tmp_path / "mine.json"
    path.write_bytes(NEWER_DATA)
    catalog, warning = current_catalog("Worldwide", path, cache_root=cache_root)
    assert (catalog.source, catalog.version, warning) == ("file", "unknown", None)
    assert catalog.set_by_id(1000).urls == ("newer.example.test",)
    (tmp_path / "mine.meta.json").write_text(json.dumps({"version": NEWER}))
    assert current_catalog("Worldwide", path)[0].version == NEWER
    (tmp_path / "mine.meta.json").write_text("{")
    catalog, warning = current_catalog("Worldwide", path)
    assert catalog.version == "unknown"
    assert warning == f"{tmp_path / 'mine.meta.json'} cannot be read; the endpoint data's version is unknown"


def test_a_cache_file_can_be_named_explicitly(cache_root: Path) -> None:
    seed_cache(cache_root, NEW, NEW_DATA)
    catalog, _ = current_catalog("Worldwide", cache_root / "worldwide.json")
    assert (catalog.source, catalog.version) == ("file", NEW)


# --- small pieces ---------------------------------------------------------------------

def test_base_url_flag_then_env_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_base_url() == DEFAULT_BASE_URL
    monkeypatch.setenv("NETCHECK_ENDPOINTS_URL", "http://127.0.0.1:8080/")
    assert resolve_base_url() == "http://127.0.0.1:8080"
    assert resolve_base_url("https://mirror.example.test/o365") == "https://mirror.example.test/o365"


@pytest.mark.parametrize("url", ["ftp://example.test", "endpoints.office.com", "https://",
                                 "https://example.test/?x=1", "http://[::1"])
def test_bad_base_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="endpoint web service URL"):
        resolve_base_url(url)


def test_version_order() -> None:
    assert is_newer("2026090100", "2026081400")
    assert not is_newer("2026081400", "2026081400")
    assert not is_newer("2026081400", "2026090100")
    assert is_newer("2026081400", "unknown")
    assert not is_newer("unknown", "2026081400")


def test_an_unwritable_cache_is_a_config_error(ws: WebServiceDouble, client: httpx.Client,
                                               clock: Clock, cache_root: Path,
                                               config_root: Path) -> None:
    cache_root.parent.mkdir(parents=True)
    cache_root.write_text("a file where the cache directory should be")
    ws.publish("Worldwide", NEW, NEW_DATA)
    with pytest.raises(ConfigError, match=r"^cannot write .*worldwide\.state\.json"):
        updater(client, ws.url, clock, cache_root, config_root).update()


def test_an_unwritable_config_dir_is_a_config_error(ws: WebServiceDouble, client: httpx.Client,
                                                    clock: Clock, cache_root: Path,
                                                    config_root: Path) -> None:
    config_root.parent.mkdir(parents=True)
    config_root.write_text("a file where the config directory should be")
    with pytest.raises(ConfigError, match="cannot store the endpoint web service client id"):
        updater(client, ws.url, clock, cache_root, config_root).update()
    assert ws.requests == []  # nothing is sent without the machine's id
