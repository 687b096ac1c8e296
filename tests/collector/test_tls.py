"""The collector serves HTTPS itself (TLS 1.2 or newer) from a PEM certificate and key (C13)."""

from __future__ import annotations

import socket
import ssl
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trustme

from tests.collector.conftest import sample_report, upload
from tests.collector.harness import CollectorProcess


def test_https_with_tls_1_2_or_newer(backend: str, tmp_path: Path,
                                     start_collector: Callable[..., CollectorProcess]) -> None:
    if backend != "sqlite":
        pytest.skip("TLS does not depend on the database")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    proc = start_collector(args=("--tls-cert", str(cert_path), "--tls-key", str(key_path)))
    assert proc.url.startswith("https://127.0.0.1:")
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    context = ssl.create_default_context(cafile=str(ca_path))
    with httpx.Client(base_url=proc.url, verify=context, timeout=30) as client:
        assert client.get("/readyz").json()["status"] == "ready"
        response = client.post("/api/v1/reports", json=upload(sample_report()))
        assert response.status_code == 401  # plain JSON error over TLS, no server banner
        assert "server" not in response.headers

    host, port = urlsplit(proc.url).hostname, urlsplit(proc.url).port
    assert host and port
    with socket.create_connection((host, port)) as raw, context.wrap_socket(raw, server_hostname=host) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(ca_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # that is the point: an old client
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection((host, port)) as raw, pytest.raises(ssl.SSLError):
        old.wrap_socket(raw, server_hostname=host).close()
    # plain HTTP on the TLS port gets nothing useful
    with pytest.raises(httpx.HTTPError):
        httpx.get(proc.url.replace("https://", "http://") + "/healthz", timeout=5).raise_for_status()
