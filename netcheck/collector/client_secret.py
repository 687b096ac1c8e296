"""An Entra app registration's client secret: read from a file or one environment variable, never a
setting (settings are handed to worker processes in the environment and printed), never logged,
never stored. Every error text that may carry it goes through :func:`scrub` first.

Used by service health (``health``, the Graph app) and the dashboard's sign-in (``web.oidc``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from netcheck.errors import ConfigError
from netcheck.files import read_user_text

SECRET_FILE_LIMIT = 64 * 1024


def read(path: str | None, env_name: str, what: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The secret in ``path`` (``what`` names it in errors), else in ``env_name``; None if neither."""
    if path:
        secret = read_user_text(path, limit=SECRET_FILE_LIMIT, what=what).strip()
        if not secret:
            raise ConfigError(f"{what} {path} is empty")
        return secret
    value = (os.environ if environ is None else environ).get(env_name, "").strip()
    return value or None


def scrub(text: str, secret: str | None) -> str:
    """``text`` on one line of at most 400 characters, without the secret."""
    line = " ".join(str(text).split())[:400]
    return line.replace(secret, "[redacted]") if secret else line
