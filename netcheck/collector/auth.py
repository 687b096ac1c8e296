"""Enrollment secrets and device tokens: made random, stored only as SHA-256 digests.

A secret or token is 32 random bytes, URL-safe base64, behind a short prefix that tells an
administrator (and secret scanners) what it is: ``ncs_`` for enrollment secrets, ``nct_`` for
device tokens. The database keeps ``sha256(value)`` only, so a dump of it holds nothing usable.
Digests are looked up by index and then compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

SECRET_PREFIX = "ncs_"
TOKEN_PREFIX = "nct_"
RANDOM_BYTES = 32
#: 32 bytes in unpadded URL-safe base64
_B64_LEN = 43
_TOKEN_RE = re.compile(rf"^{TOKEN_PREFIX}[A-Za-z0-9_-]{{{_B64_LEN}}}$")
_SECRET_RE = re.compile(rf"^{SECRET_PREFIX}[A-Za-z0-9_-]{{{_B64_LEN}}}$")


def _new(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(RANDOM_BYTES)


def new_secret() -> str:
    return _new(SECRET_PREFIX)


def new_token() -> str:
    return _new(TOKEN_PREFIX)


def new_secret_id() -> str:
    """A short public identifier for a secret, used by ``admin secret revoke``."""
    return "sec_" + secrets.token_hex(6)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))


def is_token(value: str) -> bool:
    return _TOKEN_RE.match(value) is not None


def is_secret(value: str) -> bool:
    return _SECRET_RE.match(value) is not None


def bearer_token(header: str | None) -> str | None:
    """The token in an ``Authorization: Bearer <token>`` header, or None if absent or malformed."""
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value if is_token(value) else None
