"""Enrollment: an organisation's secret exchanged for this device's own token.

What the collector learns about the device, and nothing else:

- ``hardware_id``: SHA-256 of the OS's stable machine id with a netcheck-specific
  salt, so the raw id (which other software may use) never leaves the laptop;
- ``name``: only when IT passes ``--device-name`` (host names often contain a
  person's name, so none is sent by default);
- ``os``, ``agent_version`` and the tags IT chose (site, department).

The machine id comes from ``/etc/machine-id`` (Linux), ``IOPlatformUUID`` via
``ioreg`` (macOS) or the ``MachineGuid`` registry value (Windows). Where none can
be read, a random id is created once and kept in the config directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from netcheck import __version__
from netcheck.agent.config import AgentConfig, AgentStore, ensure_private_dir
from netcheck.agent.transport import CollectorClient, Disposition, Exchange
from netcheck.deadline import Deadline
from netcheck.errors import CollectorRejected, CollectorUnreachable, ConfigError
from netcheck.paths import atomic_write
from netcheck.proxy.decision import proxy_choice

log = logging.getLogger(__name__)

SALT = b"netcheck/hardware-id/v1\x00"
FALLBACK_ID_FILE = "hardware-id"
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_IOREG_UUID = re.compile(r'"IOPlatformUUID"\s*=\s*"([0-9A-Fa-f-]{32,36})"')
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def hash_machine_id(raw: str) -> str:
    """The 64-hex hardware id sent to the collector: never the raw machine id."""
    return hashlib.sha256(SALT + raw.strip().lower().encode("utf-8")).hexdigest()


def parse_machine_id(text: str) -> str | None:
    """``/etc/machine-id``: 32 lower-case hex digits on one line."""
    value = text.strip().lower()
    return value if _HEX32.match(value) and value != "0" * 32 else None


def parse_ioreg(text: str) -> str | None:
    """``ioreg -rd1 -c IOPlatformExpertDevice`` output -> the IOPlatformUUID."""
    m = _IOREG_UUID.search(text)
    return m.group(1).lower() if m else None


def parse_machine_guid(value: str) -> str | None:
    value = value.strip().strip("{}")
    return value.lower() if _GUID.match(value) else None


def read_machine_id() -> str | None:
    """The OS's stable machine id, or None where it cannot be read."""
    if sys.platform.startswith("linux"):
        for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
            try:
                value = parse_machine_id(Path(path).read_text(encoding="ascii"))
            except (OSError, UnicodeDecodeError):
                continue
            if value:
                return value
        return None
    if sys.platform == "darwin":  # pragma: no cover - macOS only
        try:
            out = subprocess.run(["/usr/sbin/ioreg", "-rd1", "-c", "IOPlatformExpertDevice"],
                                 capture_output=True, text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        return parse_ioreg(out)
    if sys.platform == "win32":  # pragma: no cover - Windows only
        import winreg
        try:
            with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography", 0,
                                winreg.KEY_READ | winreg.KEY_WOW64_64KEY) as key:
                value, _ = winreg.QueryValueEx(key, "MachineGuid")
        except OSError:
            return None
        return parse_machine_guid(str(value))
    return None  # pragma: no cover


def hardware_id(directory: Path) -> str:
    """This machine's hashed id; a random one kept in ``directory`` if the OS has none."""
    raw = read_machine_id()
    if raw is None:
        path = directory / FALLBACK_ID_FILE
        try:
            raw = path.read_text(encoding="ascii").strip() or None
        except (OSError, UnicodeDecodeError):
            raw = None
        if raw is None:
            raw = secrets.token_hex(16)
            ensure_private_dir(directory)
            atomic_write(path, raw.encode() + b"\n", mode=0o600)
            log.info("no OS machine id; created a random one in %s", path)
    return hash_machine_id(raw)


def os_name() -> str:
    from netcheck.check import host_info
    return host_info().os


def enroll_body(secret: str, *, hardware_id: str, device_name: str | None, tags: Mapping[str, str],
                os: str, agent_version: str = __version__) -> dict[str, Any]:
    """The enrollment request. Every field is listed; nothing about the user or the host name."""
    return {"secret": secret,
            "device": {"hardware_id": hardware_id, "name": device_name, "os": os,
                       "agent_version": agent_version, "tags": dict(tags)}}


@dataclass(frozen=True)
class Enrollment:
    device_id: str
    token: str


def _failure(ex: Exchange, url: str) -> Exception:
    if ex.error_code == "device_revoked":
        return CollectorRejected("the collector's administrator revoked this device: ask your IT team to "
                                 "re-admit it")
    if ex.disposition is Disposition.UNAUTHORIZED:
        return CollectorRejected("the collector refused the enrollment secret (HTTP 401): check the secret "
                                 "with your IT team")
    if ex.disposition is Disposition.REJECT:
        return CollectorRejected(f"the collector refused the enrollment: {ex.reason}")
    if ex.status == 429:
        wait = f" (try again in {int(ex.retry_after_s)} s)" if ex.retry_after_s else ""
        return CollectorUnreachable(f"the collector is busy enrolling other devices{wait}")
    return CollectorUnreachable(f"cannot enroll with {url}: {ex.reason}")


def request_enrollment(client: CollectorClient, secret: str, *, hardware_id: str,
                       device_name: str | None, tags: Mapping[str, str],
                       deadline: Deadline | None = None) -> Enrollment:
    """Ask the collector for a device token. Raises CollectorError on failure."""
    body = enroll_body(secret, hardware_id=hardware_id, device_name=device_name, tags=tags, os=os_name())
    ex = client.enroll(json.dumps(body).encode("utf-8"), deadline)
    if not ex.ok:
        raise _failure(ex, client.base_url)
    device_id, token = ex.body.get("device_id"), ex.body.get("token")
    if not isinstance(device_id, str) or not device_id or not isinstance(token, str) or len(token) < 16:
        raise CollectorUnreachable(f"{client.base_url} answered the enrollment without a device id and "
                                   "token: is this a netcheck collector?")
    return Enrollment(device_id, token)


def enroll(store: AgentStore, collector_url: str, secret: str, *, tags: Mapping[str, str],
           device_name: str | None = None, ca_bundle: Path | None = None, secret_file: Path | None = None,
           client: CollectorClient | None = None, deadline: Deadline | None = None,
           machine: str | None = None) -> AgentConfig:
    """Enroll this device and store the credential (token 0600, config next to it).

    ``machine`` overrides the hashed hardware id (simulated fleets in tests, cloned VM images).
    """
    ensure_private_dir(store.directory)  # refuse an unsafe directory before asking for a token
    if ca_bundle is not None and not ca_bundle.is_file():
        raise ConfigError(f"--ca-bundle {ca_bundle}: no such file")
    own = client is None
    cli = client or CollectorClient(collector_url, ca_bundle=ca_bundle, chooser=proxy_choice)
    hw = machine or hardware_id(store.directory)
    try:
        got = request_enrollment(cli, secret, hardware_id=hw, device_name=device_name, tags=tags,
                                 deadline=deadline)
    finally:
        if own:
            cli.close()
    config = AgentConfig(collector_url=collector_url, device_id=got.device_id,
                         ca_bundle=ca_bundle.resolve() if ca_bundle else None,
                         secret_file=secret_file.resolve() if secret_file else None,
                         device_name=device_name, tags=dict(tags), hardware_id=hw)
    store.save(config, got.token)
    log.info("enrolled with %s as device %s", collector_url, got.device_id)
    return config


def reenroll(store: AgentStore, config: AgentConfig, secret: str, client: CollectorClient,
             deadline: Deadline | None = None) -> str:
    """Get a new token for this device; it replaces the old one only once it is stored.

    Returns the new token. On any failure the old credential is left untouched.
    """
    hw = config.hardware_id or hardware_id(store.directory)
    got = request_enrollment(client, secret, hardware_id=hw, device_name=config.device_name, tags=config.tags,
                             deadline=deadline)
    new_config = replace(config, device_id=got.device_id, hardware_id=hw)
    store.save(new_config, got.token)
    log.warning("re-enrolled with %s after repeated 401s; device %s has a new token",
                config.collector_url, got.device_id)
    return got.token
