"""The agent's configuration and its credential.

Two files in ``config_dir()``, written by ``netcheck enroll``:

- ``agent.toml``: the collector URL, the device id, the pinned CA bundle (if any),
  where IT keeps the enrollment secret (a path, never a copy of the secret) and
  the device's tags. Not secret.
- ``token``: the device token, mode 0600, in a directory that no other user can
  write to (enrollment refuses a group- or world-writable one).

Token storage is this file on every OS; the OS keychain (macOS Keychain, Windows
Credential Manager) is not used yet. On Windows the file lives under the user's
``%LOCALAPPDATA%``, whose ACL already limits it to the user; POSIX modes are not
meaningful there.

The enrollment secret is never stored by netcheck. For re-enrollment the agent
reads it from ``NETCHECK_ENROLL_SECRET`` or from the ``secret_file`` IT deployed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from netcheck.errors import ConfigError
from netcheck.files import parse_toml, read_user_text
from netcheck.paths import atomic_write, config_dir

log = logging.getLogger(__name__)

CONFIG_FILE = "agent.toml"
TOKEN_FILE = "token"
#: The agent configuration, token and enrollment secret are small; larger files are refused.
MAX_SMALL_FILE = 64 * 1024
SECRET_ENV = "NETCHECK_ENROLL_SECRET"

_TAG_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_MAX_TAG_VALUE = 128
_MAX_TAGS = 16


def parse_tag(text: str) -> tuple[str, str]:
    """``site=paris`` -> ("site", "paris"), or ConfigError naming the problem."""
    key, sep, value = text.partition("=")
    key, value = key.strip().lower(), value.strip()
    if not sep or not key:
        raise ConfigError(f"--tag {text!r} is not KEY=VALUE (for example --tag site=paris)")
    if not _TAG_KEY.match(key):
        raise ConfigError(f"--tag key {key!r} must be lower-case letters, digits or _ (at most 32)")
    if not value or len(value) > _MAX_TAG_VALUE or not value.isprintable():
        raise ConfigError(f"--tag {key}: the value must be 1-{_MAX_TAG_VALUE} printable characters")
    return key, value


def parse_tags(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in items:
        key, value = parse_tag(item)
        if key in tags:
            raise ConfigError(f"--tag {key} is given twice")
        tags[key] = value
    if len(tags) > _MAX_TAGS:
        raise ConfigError(f"at most {_MAX_TAGS} tags")
    return tags


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_collector_url(url: str) -> str:
    """The collector's base URL, normalised (no trailing slash).

    HTTPS is required; plain HTTP is accepted only for a collector on this machine
    (loopback), where nothing crosses a network.
    """
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"collector URL {url!r} must look like https://collector.example.org")
    if parts.username or parts.password:
        raise ConfigError("the collector URL must not contain a user name or password")
    if parts.query or parts.fragment:
        raise ConfigError("the collector URL must not contain a query (?...) or fragment (#...)")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(f"collector URL {url!r} must use https:// (plain http:// is allowed only "
                          "for a collector on this machine)")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ConfigError(f"collector URL {url!r} has a bad port") from exc
    return text.rstrip("/")


@dataclass(frozen=True)
class AgentConfig:
    collector_url: str
    device_id: str
    ca_bundle: Path | None = None
    secret_file: Path | None = None
    device_name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    #: the hashed hardware id sent at enrollment (re-enrollment sends the same one)
    hardware_id: str | None = None

    def to_toml(self) -> str:
        def q(value: str) -> str:
            return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string

        lines = ["# netcheck agent configuration, written by `netcheck enroll`.",
                 "# The device token is kept apart, in the file 'token' (mode 0600).",
                 f"collector_url = {q(self.collector_url)}",
                 f"device_id = {q(self.device_id)}"]
        if self.ca_bundle is not None:
            lines.append(f"ca_bundle = {q(str(self.ca_bundle))}")
        if self.secret_file is not None:
            lines.append(f"secret_file = {q(str(self.secret_file))}")
        if self.device_name is not None:
            lines.append(f"device_name = {q(self.device_name)}")
        if self.hardware_id is not None:
            lines.append(f"hardware_id = {q(self.hardware_id)}")
        lines += ["", "[tags]"] + [f"{k} = {q(v)}" for k, v in sorted(self.tags.items())]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, source: str = CONFIG_FILE) -> AgentConfig:
        try:
            doc = parse_toml(text, where=source, what="the agent configuration")
        except ConfigError as exc:
            raise ConfigError(f"{exc}; run `netcheck enroll` again") from exc
        known = {"collector_url", "device_id", "ca_bundle", "secret_file", "device_name", "tags", "hardware_id"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
        for key in ("collector_url", "device_id"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise ConfigError(f"{source}: '{key}' is missing; run `netcheck enroll` again")
        for key in ("ca_bundle", "secret_file", "device_name", "hardware_id"):
            if key in doc and not isinstance(doc[key], str):
                raise ConfigError(f"{source}: '{key}' must be a string")
        tags = doc.get("tags", {})
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise ConfigError(f"{source}: [tags] must map names to strings")
        return cls(
            collector_url=validate_collector_url(doc["collector_url"]),
            device_id=doc["device_id"],
            ca_bundle=Path(doc["ca_bundle"]) if doc.get("ca_bundle") else None,
            secret_file=Path(doc["secret_file"]) if doc.get("secret_file") else None,
            device_name=doc.get("device_name") or None,
            tags=dict(tags),
            hardware_id=doc.get("hardware_id") or None,
        )


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700) or check that no other user can write to it.

    A directory others can write to lets them replace the token or the CA bundle
    path; the agent refuses to keep a credential there.
    """
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if sys.platform == "win32":  # pragma: no cover - ACLs, not modes, on Windows
        return
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path} is not a directory")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"refusing to keep the device token in {path}: other users can write to it "
                          f"(fix with: chmod go-w {path})")
    if st.st_uid != os.getuid():
        raise ConfigError(f"refusing to keep the device token in {path}: it belongs to another user")


class AgentStore:
    """``agent.toml`` and ``token`` in one directory (``config_dir()`` unless given)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else config_dir()

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_FILE

    @property
    def token_path(self) -> Path:
        return self.directory / TOKEN_FILE

    def enrolled(self) -> bool:
        return self.config_path.exists() and self.token_path.exists()

    def load_config(self) -> AgentConfig:
        if not self.config_path.exists():
            raise ConfigError("this laptop is not enrolled with a collector: run "
                              "`netcheck enroll https://COLLECTOR --secret-file FILE` first")
        text = read_user_text(self.config_path, limit=MAX_SMALL_FILE, what="the agent configuration")
        return AgentConfig.from_toml(text, str(self.config_path))

    def load_token(self) -> str:
        try:
            st = self.token_path.stat()
            if sys.platform != "win32" and st.st_mode & 0o077:
                log.warning("the device token file %s was readable by others; restricting it to mode 0600",
                            self.token_path)
                os.chmod(self.token_path, 0o600)
        except FileNotFoundError:
            raise ConfigError("the device token is missing: run `netcheck enroll` again") from None
        except OSError as exc:
            raise ConfigError(f"cannot read the device token file {self.token_path}: {exc}") from exc
        token = read_user_text(self.token_path, limit=MAX_SMALL_FILE, what="the device token file").strip()
        if not token:
            raise ConfigError("the device token file is empty: run `netcheck enroll` again")
        return token

    def save(self, config: AgentConfig, token: str) -> None:
        """Store a new credential: the token first (atomically replacing any old one), then the config.

        ``atomic_write`` renames the new file over the old one, so at every instant
        exactly one complete token is on disk: the old one until the new one is durable.
        """
        ensure_private_dir(self.directory)
        atomic_write(self.token_path, token.encode("utf-8") + b"\n", mode=0o600)
        if sys.platform != "win32":
            os.chmod(self.token_path, 0o600)
        atomic_write(self.config_path, config.to_toml().encode("utf-8"), mode=0o600)


def read_secret_file(path: Path) -> str:
    secret = read_user_text(path, limit=MAX_SMALL_FILE, what="the enrollment secret file").strip()
    if not secret:
        raise ConfigError(f"the enrollment secret file {path} is empty")
    return secret


def available_secret(config: AgentConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The enrollment secret if IT left one for re-enrollment (environment, then file), else None."""
    env = os.environ if environ is None else environ
    value = env.get(SECRET_ENV, "").strip()
    if value:
        return value
    if config.secret_file is not None:
        try:
            return read_secret_file(config.secret_file)
        except ConfigError as exc:
            log.warning("%s", exc)
    return None
