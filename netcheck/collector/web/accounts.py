"""Dashboard accounts and sessions: argon2 password hashes, roles, lock-out, session cookies.

A session cookie is 32 random bytes; the database keeps its SHA-256 digest (as for device
tokens, ``collector.auth``), with the session's CSRF token and expiry. After ``MAX_FAILURES``
wrong passwords in a row an account is locked for ``LOCK_FOR``; a right password during the
lock is refused too (the lock is not an oracle). An unknown name costs the same argon2 work as a
known one.

Users who sign in with Entra ID (``web.oidc``) get an account too, found by their tenant and
object id (``subject``), named ``entra/<their user name>``, with an unusable password hash and
the role their app roles or groups grant at each sign-in; the lock-out is Entra ID's business.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Connection

from netcheck.collector import auth
from netcheck.collector.db import ui_sessions, ui_users
from netcheck.errors import ConfigError

ROLES = ("admin", "read-only")
MAX_FAILURES = 5
LOCK_FOR = dt.timedelta(minutes=15)
SESSION_FOR = dt.timedelta(hours=8)
MIN_PASSWORD = 12
#: the password hash of an Entra ID user's account: no password matches it
EXTERNAL_HASH = "!external"
EXTERNAL_PREFIX = "entra/"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")

_HASHER = PasswordHasher()
#: verified against when the name is unknown, so that it takes as long as a known one
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    @property
    def external(self) -> bool:
        """Signed in with Entra ID (a local account's name cannot hold a slash)."""
        return self.name.startswith(EXTERNAL_PREFIX)


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"{name!r} is not a user name (letters, digits, _ . @ -; at most 64)")
    return name


def add_user(conn: Connection, name: str, password: str, role: str, now: dt.datetime) -> None:
    check_name(name)
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    if conn.execute(sa.select(ui_users.c.id).where(ui_users.c.name == name)).first() is not None:
        raise ConfigError(f"there is already a user {name!r} (remove it first)")
    conn.execute(sa.insert(ui_users).values(name=name, password_hash=_HASHER.hash(password), role=role,
                                            created_at=now, failed_logins=0))


def remove_user(conn: Connection, name: str) -> bool:
    """Remove an account and its sessions (cascade); False if there was none."""
    return bool(conn.execute(sa.delete(ui_users).where(ui_users.c.name == name)).rowcount)


def list_users(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(ui_users).order_by(ui_users.c.name)).all()
    return [{"name": r.name, "role": r.role, "created_at": r.created_at, "last_login_at": r.last_login_at,
             "failed_logins": r.failed_logins, "locked_until": r.locked_until} for r in rows]


def sign_in(conn: Connection, name: str, password: str, now: dt.datetime) -> tuple[str, Session] | None:
    """A new session (cookie value, session) for the right name and password, else None."""
    row = conn.execute(sa.select(ui_users).where(ui_users.c.name == name, ui_users.c.subject.is_(None))).first()
    if row is None:
        _verify(_DUMMY_HASH, password)
        return None
    locked = row.locked_until is not None and row.locked_until > now
    if not _verify(row.password_hash, password) or locked:
        failures = row.failed_logins + 1
        values: dict[str, Any] = {"failed_logins": failures}
        if failures >= MAX_FAILURES and not locked:
            values = {"failed_logins": 0, "locked_until": now + LOCK_FOR}
        conn.execute(sa.update(ui_users).where(ui_users.c.id == row.id).values(**values))
        return None
    values = {"failed_logins": 0, "locked_until": None, "last_login_at": now}
    if _HASHER.check_needs_rehash(row.password_hash):
        values["password_hash"] = _HASHER.hash(password)
    conn.execute(sa.update(ui_users).where(ui_users.c.id == row.id).values(**values))
    return _open_session(conn, User(row.id, row.name, row.role), now)


def sign_in_external(conn: Connection, subject: str, name: str, role: str, now: dt.datetime) -> tuple[str, Session]:
    """A new session for a user the identity provider vouched for (``subject``: "entra:<tid>:<oid>"),
    with the role it grants now; the account is made on the first sign-in. ``name`` is shown only:
    ``entra/<name>``, or ``entra/<object id>`` if another account has that name."""
    if role not in ROLES:
        raise ValueError(role)
    row = conn.execute(sa.select(ui_users.c.id, ui_users.c.name).where(ui_users.c.subject == subject)).first()
    wanted = f"{EXTERNAL_PREFIX}{name}"[:64]
    taken = conn.execute(sa.select(ui_users.c.id).where(ui_users.c.name == wanted)).first()
    if taken is not None and (row is None or taken.id != row.id):
        wanted = f"{EXTERNAL_PREFIX}{subject.rpartition(':')[2]}"[:64]
    if row is None:
        made = conn.execute(sa.insert(ui_users).values(
            name=wanted, password_hash=EXTERNAL_HASH, role=role, created_at=now, failed_logins=0,
            last_login_at=now, subject=subject))
        key = made.inserted_primary_key
        assert key is not None
        user_id = int(key[0])
    else:
        user_id = row.id
        conn.execute(sa.update(ui_users).where(ui_users.c.id == row.id).values(name=wanted, role=role,
                                                                              last_login_at=now))
    return _open_session(conn, User(user_id, wanted, role), now)


def _open_session(conn: Connection, user: User, now: dt.datetime) -> tuple[str, Session]:
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    conn.execute(sa.delete(ui_sessions).where(ui_sessions.c.expires_at <= now))
    conn.execute(sa.insert(ui_sessions).values(digest=auth.digest(cookie), user_id=user.id, csrf=csrf,
                                               created_at=now, expires_at=now + SESSION_FOR))
    return cookie, Session(user, csrf)


def _verify(hashed: str, password: str) -> bool:
    try:
        return bool(_HASHER.verify(hashed, password))
    except (VerificationError, InvalidHashError):
        return False


def session(conn: Connection, cookie: str | None, now: dt.datetime) -> Session | None:
    if not cookie or len(cookie) > 100:
        return None
    row = conn.execute(
        sa.select(ui_sessions.c.digest, ui_sessions.c.csrf, ui_users.c.id, ui_users.c.name, ui_users.c.role)
        .select_from(ui_sessions.join(ui_users, ui_users.c.id == ui_sessions.c.user_id))
        .where(ui_sessions.c.digest == auth.digest(cookie), ui_sessions.c.expires_at > now)).first()
    if row is None or not auth.same_digest(row.digest, auth.digest(cookie)):
        return None
    return Session(User(row.id, row.name, row.role), row.csrf)


def sign_out(conn: Connection, cookie: str) -> None:
    conn.execute(sa.delete(ui_sessions).where(ui_sessions.c.digest == auth.digest(cookie)))
