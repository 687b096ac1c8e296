"""Response classification (pure) and the client's safety rules."""

from __future__ import annotations

import json

import httpx
import pytest

from netcheck.agent.transport import CollectorClient, Disposition, classify_response
from netcheck.agent.uploader import is_ack
from netcheck.deadline import Deadline
from netcheck.errors import ConfigError
from netcheck.proxy.decision import ProxyChoice
from tests.agent.collector_double import CollectorDouble


def _h(**headers: str) -> httpx.Headers:
    return httpx.Headers({k.replace("_", "-"): v for k, v in headers.items()})


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 404, 405, 407])
def test_retryable_statuses_keep_the_report(status: int) -> None:
    ex = classify_response(status, _h(retry_after="7"), b'{"error":{"code":"x","message":"m"}}')
    assert ex.disposition is Disposition.RETRY
    assert ex.retry_after_s == 7
    assert ex.error_code == "x"


@pytest.mark.parametrize("status", [400, 409, 410, 413, 415, 422])
def test_refusals_set_the_report_aside(status: int) -> None:
    assert classify_response(status, _h(), b"").disposition is Disposition.REJECT


@pytest.mark.parametrize("status", [401, 403])
def test_auth_refusals_are_their_own_kind(status: int) -> None:
    assert classify_response(status, _h(), b"").disposition is Disposition.UNAUTHORIZED


def test_a_captive_portal_200_with_html_is_a_failure() -> None:
    ex = classify_response(200, _h(content_type="text/html"), b"<html><body>Sign in to Hotel WiFi</body></html>")
    assert ex.disposition is Disposition.RETRY
    assert "captive portal" in ex.reason and "text/html" in ex.reason


def test_json_200_must_acknowledge_this_very_report() -> None:
    body = {"status": "stored", "report_id": "a", "device_id": "d"}
    ex = classify_response(200, _h(), json.dumps(body).encode())
    assert ex.ok
    assert is_ack(ex, "a") == "stored"
    assert is_ack(ex, "b") is None
    assert is_ack(classify_response(200, _h(), b'{"status":"ok","report_id":"a"}'), "a") is None
    assert is_ack(classify_response(200, _h(), b'["stored"]'), "a") is None


def test_redirects_are_never_followed_and_a_downgrade_reads_as_tls() -> None:
    ex = classify_response(301, _h(location="http://collector.example/api/v1/reports"), b"")
    assert ex.disposition is Disposition.RETRY and ex.tls and ex.reason.startswith("TLS")
    ex = classify_response(307, _h(location="https://elsewhere.example/"), b"")
    assert ex.disposition is Disposition.RETRY and not ex.tls and "not followed" in ex.reason


def test_unreadable_proxy_settings_mean_direct_not_a_failed_upload(double: CollectorDouble) -> None:
    def broken(url: str, deadline: Deadline) -> ProxyChoice:
        raise ConfigError("gsettings said something unreadable")

    with CollectorClient(double.url, token=double.issue_token("dev-1"), chooser=broken) as client:
        got = client.get_policy(Deadline.after(10))
        assert got.ok, got.reason
        choice = client.proxy_choice
        assert choice is not None and choice.proxy is None and "could not be read" in choice.how
