"""Fixtures for the platform, proxy and PAC tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from plat_support import PROXY_VARS


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No proxy or netcheck variables leak in from the machine running the tests."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    yield
