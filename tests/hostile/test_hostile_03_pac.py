"""Item 3: a broken PAC file is a finding with a fix, and the report says which proxy decision was
used instead. Whole checks in the sandbox, with the PAC file given as NETCHECK_PAC_URL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.hostile.sandbox import needs_sandbox, run_sandboxed


def _check(tmp_path: Path, pac_url: str) -> tuple[dict[str, Any], str, str]:
    html = tmp_path / "report.html"
    out = tmp_path / "report.json"
    proc = run_sandboxed(["-m", "netcheck", "check", "--no-progress", "--deadline", "8", "-o", str(out),
                          "--html", str(html)], tmp_path, env={"NETCHECK_PAC_URL": pac_url})
    assert proc.returncode in (1, 2), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout, html.read_text()


def _finding(report: dict[str, Any], code: str) -> dict[str, Any]:
    found = [f for f in report["findings"] if f["code"] == code]
    assert len(found) == 1, [f["code"] for f in report["findings"]]
    return dict(found[0])


@needs_sandbox
@pytest.mark.timeout(180)
def test_hostile_pac_with_a_syntax_error_is_a_finding_and_says_what_was_used(tmp_path: Path) -> None:
    pac = tmp_path / "broken.pac"
    pac.write_text("function FindProxyForURL(url, host) { return 'DIRECT' ")  # no closing brace
    report, text, html = _check(tmp_path, pac.as_uri())
    finding = _finding(report, "pac.load_failed")
    assert finding["severity"] == "warning" and finding["remediation"]
    assert "DIRECT (no proxy)" in finding["detail"]
    assert report["network"]["pac_fallback"] == "DIRECT (no proxy)"
    assert "The PAC file does not load" in text
    assert "Proxy chosen by the PAC file" not in html
    assert "could not be used: tested with DIRECT (no proxy) instead" in html


@needs_sandbox
@pytest.mark.timeout(180)
def test_hostile_pac_returning_a_number_is_a_finding(tmp_path: Path) -> None:
    pac = tmp_path / "number.pac"
    pac.write_text("function FindProxyForURL(url, host) { return 42; }")
    report, text, _ = _check(tmp_path, pac.as_uri())
    finding = _finding(report, "pac.bad_result")
    assert "not a string" in " ".join(finding["evidence"])
    assert "gives no usable answer" in text


@needs_sandbox
@pytest.mark.timeout(180)
def test_hostile_pac_that_cannot_be_fetched_is_a_finding(tmp_path: Path) -> None:
    report, text, _ = _check(tmp_path, "http://127.0.0.1:9/proxy.pac")  # nothing listens there
    finding = _finding(report, "pac.fetch_failed")
    assert "connection refused" in finding["detail"] and "DIRECT (no proxy)" in finding["detail"]
    assert "The PAC file could not be fetched" in text


@pytest.mark.timeout(60)
def test_hostile_pac_evaluator_that_cannot_start_is_a_pac_error(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab found it: a standard user who may not run the interpreter got a crash, not a finding."""
    import sys

    from netcheck.proxy.pac import PacError, evaluate_each

    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(PacError, match="the PAC evaluator cannot start"):
        evaluate_each("function FindProxyForURL(u, h) { return 'DIRECT'; }", ["https://a.example/"])
