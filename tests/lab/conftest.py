"""pytest configuration for the lab tests."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: builds network namespaces (needs root); see docs/lab.md")
