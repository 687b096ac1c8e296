"""Errors raised outside probes (probes return outcomes, never raise).

    NetcheckError
     +-- ConfigError          bad flag, config file, policy or site profile
     +-- CatalogError         endpoint data that cannot be loaded or is malformed
     +-- PlatformError        an OS facility that could not be read
     +-- CollectorError       talking to the fleet collector
          +-- CollectorUnreachable
          +-- CollectorRejected

Every message says what went wrong and what to do next; the CLI prints it as
one line and exits with the documented code. Any other exception is a bug:
the CLI exits with :data:`INTERNAL_ERROR` (see :mod:`netcheck.crash`).
"""

from __future__ import annotations

#: The exit code of a crash (an exception that is not a NetcheckError): never a verdict's code.
INTERNAL_ERROR = 5


class NetcheckError(Exception):
    """Base of every error netcheck raises on purpose."""

    exit_code = 4


class ConfigError(NetcheckError):
    pass


class CatalogError(NetcheckError):
    pass


class PlatformError(NetcheckError):
    pass


class CollectorError(NetcheckError):
    pass


class CollectorUnreachable(CollectorError):
    pass


class CollectorRejected(CollectorError):
    pass
