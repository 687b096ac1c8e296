"""Item 7: offline with a local resolver that refuses (nothing on 127.0.0.1:53). The check says
"refused" instead of "did not answer in time", and does not wait for its deadline to say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hostile.sandbox import needs_sandbox, run_sandboxed

pytestmark = [needs_sandbox, pytest.mark.timeout(180)]


def test_hostile_refusing_local_resolver_is_reported_as_refused(tmp_path: Path) -> None:
    proc = run_sandboxed(["-m", "netcheck", "check", "--no-progress", "--json", "--deadline", "60"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    report = json.loads(proc.stdout)
    dns = [p for p in report["probes"] if p["kind"] == "dns"]
    assert dns and all(p["outcome"] == "no_resolver" and "refused" in p["reason"] for p in dns)
    assert not any(p["outcome"] == "dns_timeout" for p in dns)


def test_hostile_silent_local_resolver_is_still_a_timeout(tmp_path: Path) -> None:
    """The other case, for contrast: something takes the queries and never answers."""
    proc = run_sandboxed(["tests/hostile/child.py", "silent-dns", "check", "--no-progress", "--json",
                          "--deadline", "4"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    dns = [p for p in json.loads(proc.stdout)["probes"] if p["kind"] == "dns"]
    assert dns and all(p["outcome"] in ("dns_timeout", "timeout") for p in dns)
