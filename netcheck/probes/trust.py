"""Trust stores: the public root set and the machine's store, as cached SSLContexts.

Loading a PEM bundle costs ~20 ms of CPU; a worldwide check makes hundreds of
TLS connections, so each context is built once per (bundle, environment) and
shared. SSLContexts are safe to share between concurrent connections.

* public: the Mozilla root set (certifi), or ``ProbeSpec.public_roots``, or the
  file named by ``NETCHECK_PUBLIC_ROOTS``. A chain that verifies here is what
  any client on the internet would accept.
* system: the machine's store as the laptop's apps see it
  (``ssl.create_default_context()``, which honours ``SSL_CERT_FILE`` /
  ``SSL_CERT_DIR``), or ``ProbeSpec.system_roots``. A chain that verifies only
  here was signed by a locally added root: TLS inspection.
* http: the machine's store again, as a separate instance offering ALPN
  ``http/1.1`` (what the HTTP and realm probes speak). The public instance offers
  it too: a front door's HTTPS probe may send its request on the TLS probe's
  connection (:func:`netcheck.probes.http.probe_tls_and_https`), when the machine's
  store holds every public root (:func:`machine_holds_public`).
* unverified: no verification at all, only to read the certificate a server
  presents when neither store accepts it.

The probes use them through memory buffers
(:class:`netcheck.probes._connect.TlsConn`), never asyncio's TLS transport, which
also decoded each verified certificate into a dict nothing read (about 0.3 ms of
CPU for a certificate of a hundred names) and kept a 256 KiB buffer per connection.
"""

from __future__ import annotations

import functools
import os
import ssl

import certifi

from netcheck.models import ProbeSpec

PUBLIC_ROOTS_ENV = "NETCHECK_PUBLIC_ROOTS"
_SSL_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def public_roots_path(spec: ProbeSpec) -> str:
    """The PEM bundle treated as the public root set."""
    return spec.public_roots or os.environ.get(PUBLIC_ROOTS_ENV) or certifi.where()


@functools.lru_cache(maxsize=16)
def _verifying(purpose: str, cafile: str | None, env: tuple[str | None, ...]) -> ssl.SSLContext:
    # Separate instances per use (``purpose``), rebuilt when SSL_CERT_FILE /
    # SSL_CERT_DIR change (``env``, a cache key only).
    del env
    ctx = ssl.create_default_context(cafile=cafile)
    if purpose in ("http", "public"):  # the public one: a front door's HTTPS probe may use its handshake
        ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def public_context(spec: ProbeSpec) -> ssl.SSLContext:
    """Verifies against the public root set only. Raises OSError/ssl.SSLError if unreadable."""
    return _verifying("public", public_roots_path(spec), ())


def system_context(spec: ProbeSpec) -> ssl.SSLContext:
    """Verifies against the machine's store (for the TLS probe)."""
    return _verifying("system", spec.system_roots, _env_key(spec))


def http_context(spec: ProbeSpec) -> ssl.SSLContext:
    """Verifies against the machine's store and offers ALPN ``http/1.1`` (for HTTP requests)."""
    return _verifying("http", spec.system_roots, _env_key(spec))


def machine_holds_public(spec: ProbeSpec) -> bool:
    """Whether the machine's store (as the HTTP probes load it) holds every root of the public set, so
    that a chain the public roots verify verifies there too. False when either cannot be read, and
    when a public root is only in a directory of the machine's store (``SSL_CERT_DIR``, a
    ``capath``): OpenSSL reads such a root when it needs it, so it cannot be listed beforehand."""
    try:
        return _holds(public_context(spec), http_context(spec))
    except (OSError, ssl.SSLError):
        return False


@functools.lru_cache(maxsize=16)
def _holds(public: ssl.SSLContext, machine: ssl.SSLContext) -> bool:
    # Cached per pair of (cached) contexts; certificates are compared as DER. A store with more
    # roots still has the path the public set found (OpenSSL tries other paths when one fails).
    mine = set(machine.get_ca_certs(binary_form=True))
    return all(der in mine for der in public.get_ca_certs(binary_form=True))


@functools.lru_cache(maxsize=1)
def unverified_context() -> ssl.SSLContext:
    """Accepts any certificate: used only to read what a rejected server presents."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _env_key(spec: ProbeSpec) -> tuple[str | None, ...]:
    if spec.system_roots:
        return ()
    return tuple(os.environ.get(name) for name in _SSL_ENV)


def clear_cache() -> None:
    """Forget every loaded store (after a bundle file changed on disk)."""
    _verifying.cache_clear()
    _holds.cache_clear()
    unverified_context.cache_clear()
