"""Enrollment: the hashed hardware id, what is sent, where the credential is kept, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from netcheck.agent.config import AgentConfig, AgentStore, parse_tags, validate_collector_url
from netcheck.agent.enrollment import (
    enroll,
    hash_machine_id,
    parse_ioreg,
    parse_machine_guid,
    parse_machine_id,
)
from netcheck.errors import CollectorRejected, CollectorUnreachable, ConfigError
from tests.agent.collector_double import CollectorDouble

IOREG = """+-o J314sAP  <class IOPlatformExpertDevice, id 0x100000254, registered, matched, active, busy 0>
    {
      "IOPlatformSerialNumber" = "C02XXXXXXX"
      "IOPlatformUUID" = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
      "model" = <"MacBookPro18,1">
    }
"""


def test_machine_id_parsers_on_real_shapes() -> None:
    assert parse_machine_id("3f2504e04f8911d39a0c0305e82c3301\n") == "3f2504e04f8911d39a0c0305e82c3301"
    assert parse_machine_id("uninitialized\n") is None
    assert parse_machine_id("0" * 32) is None
    assert parse_ioreg(IOREG) == "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    assert parse_ioreg("nothing here") is None
    assert parse_machine_guid("{3F2504E0-4F89-11D3-9A0C-0305E82C3301}") == "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    assert parse_machine_guid("garbage") is None


def test_hardware_id_is_salted_so_the_raw_id_never_leaves() -> None:
    raw = "3f2504e04f8911d39a0c0305e82c3301"
    hid = hash_machine_id(raw)
    assert len(hid) == 64 and int(hid, 16) >= 0
    assert hid != hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in hid
    assert hash_machine_id(raw.upper() + "\n") == hid


def test_collector_url_rules() -> None:
    assert validate_collector_url("https://c.example.org/") == "https://c.example.org"
    assert validate_collector_url("https://c.example.org/netcheck") == "https://c.example.org/netcheck"
    assert validate_collector_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert validate_collector_url("http://[::1]:8080") == "http://[::1]:8080"
    for bad in ("http://c.example.org", "ftp://c", "https://user:pw@c.example.org", "https://c?x=1", "c.example"):
        with pytest.raises(ConfigError):
            validate_collector_url(bad)


def test_tags() -> None:
    assert parse_tags(["site=paris", "Dept = Finance "]) == {"site": "paris", "dept": "Finance"}
    for bad in (["site"], ["=x"], ["site="], ["9x=1"], ["a=1", "a=2"]):
        with pytest.raises(ConfigError):
            parse_tags(bad)


def test_config_round_trips_through_toml() -> None:
    cfg = AgentConfig("https://c.example.org", "dev-1", Path("/etc/ca.pem"), Path("/etc/secret"), 'Lab "7"',
                      {"site": "paris", "dept": "ünïcode"})
    assert AgentConfig.from_toml(cfg.to_toml()) == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        AgentConfig.from_toml("extra = 1\n" + cfg.to_toml())


def test_enroll_stores_a_private_token_and_sends_no_host_or_user_name(double: CollectorDouble,
                                                                       store: AgentStore) -> None:
    cfg = enroll(store, double.url, double.secret, tags={"site": "paris"})
    assert cfg.device_id and store.enrolled()
    assert stat.S_IMODE(store.token_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) & 0o077 == 0
    token = store.load_token()
    assert token in double.tokens
    sent = double.enrollments[0]
    assert set(sent) == {"secret", "device"}
    assert set(sent["device"]) == {"hardware_id", "name", "os", "agent_version", "tags"}
    assert sent["device"]["name"] is None and sent["device"]["tags"] == {"site": "paris"}
    wire = double.seen[0].body.decode()
    for private in {socket.gethostname(), socket.getfqdn(), os.environ.get("USER", ""),
                    os.environ.get("LOGNAME", "")} - {"", "localhost"}:
        assert private not in wire
    assert token not in store.config_path.read_text() and double.secret not in store.config_path.read_text()


def test_device_name_is_sent_only_when_given(double: CollectorDouble, store: AgentStore) -> None:
    enroll(store, double.url, double.secret, tags={}, device_name="LAB-07")
    assert double.enrollments[0]["device"]["name"] == "LAB-07"


def test_enroll_refuses_a_directory_others_can_write(double: CollectorDouble, tmp_path: Path) -> None:
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o777)
    with pytest.raises(ConfigError, match="other users can write"):
        enroll(AgentStore(d), double.url, double.secret, tags={})
    assert double.seen == []  # refused before any token was asked for


def test_wrong_secret_stores_nothing(double: CollectorDouble, store: AgentStore) -> None:
    with pytest.raises(CollectorRejected, match="refused the enrollment secret"):
        enroll(store, double.url, "wrong", tags={})
    assert not store.enrolled()


def test_unreachable_collector(store: AgentStore) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CollectorUnreachable, match="refused"):
        enroll(store, f"http://127.0.0.1:{port}", "x", tags={})


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netcheck", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60, check=False)


def test_cli_enroll_with_secret_file_never_prints_secret_or_token(double: CollectorDouble,
                                                                   tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(double.secret + "\n")
    got = _cli("enroll", double.url, "--secret-file", str(secret_file), "--tag", "site=paris", "-v")
    assert got.returncode == 0, got.stderr
    assert "Enrolled with" in got.stdout
    token = next(iter(double.tokens))
    for text in (got.stdout, got.stderr):
        assert double.secret not in text and token not in text
    store = AgentStore()
    assert store.load_config().secret_file == secret_file.resolve()
    assert double.secret not in store.config_path.read_text()


def test_cli_enroll_secret_from_environment(double: CollectorDouble) -> None:
    got = _cli("enroll", double.url, env={"NETCHECK_ENROLL_SECRET": double.secret})
    assert got.returncode == 0, got.stderr
    assert double.secret not in got.stdout + got.stderr


def test_cli_enroll_errors_are_one_line_with_documented_codes(double: CollectorDouble) -> None:
    got = _cli("enroll", double.url, "--secret", "wrong")
    assert got.returncode == 4 and got.stderr.strip().count("\n") == 0 and "refused" in got.stderr
    assert "wrong" not in got.stderr
    got = _cli("enroll", double.url)
    assert got.returncode == 4 and "secret is missing" in got.stderr
    got = _cli("enroll", "http://collector.example.org", "--secret", "x")
    assert got.returncode == 4 and "https" in got.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    got = _cli("enroll", f"http://127.0.0.1:{port}", "--secret", "x")
    assert got.returncode == 3 and "Traceback" not in got.stderr
    json.dumps(got.stderr)


def test_log_filter_scrubs_known_secrets_as_a_second_guard() -> None:
    import logging

    from netcheck.agent.cli import Redact

    f = Redact()
    f.secrets.add("tok-123456")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "sent %s to %s", ("tok-123456", "c"), None)
    assert f.filter(record) and record.getMessage() == "sent [redacted] to c"
