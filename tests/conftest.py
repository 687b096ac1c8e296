"""Fixtures shared by every test.

``clean_environ`` (autouse) removes the proxy, TLS and netcheck settings a
developer's shell or a CI runner may carry, so no test depends on them and no
test reaches a proxy or trust store by accident. Tests that need one set it
with ``monkeypatch.setenv``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

#: Environment variables removed for every test (compared case-insensitively).
CLEARED = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY", "SOCKS_PROXY",
           "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
#: ... and every variable starting with one of these.
CLEARED_PREFIXES = ("NETCHECK_",)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        upper = name.upper()
        if upper in CLEARED or upper.startswith(CLEARED_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    yield
