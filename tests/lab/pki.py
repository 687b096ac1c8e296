"""Certificates for the lab: a "public" CA, the front doors, AD FS, and the
corporate TLS-inspection CA used by squid's ssl-bump.

Trust is arranged the way an enterprise laptop has it:

* ``public-roots.pem``: the lab public CA only (netcheck's
  ``NETCHECK_PUBLIC_ROOTS``, the stand-in for certifi);
* ``machine-roots.pem``: the lab public CA plus the inspection CA (the OS
  store with the enterprise root pushed to it; ``SSL_CERT_FILE``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Pki:
    """Paths of every PEM file the lab uses."""

    dir: Path
    public_ca: Path
    inspection_ca: Path  # certificate + key in one file (squid wants that)
    inspection_ca_cert: Path
    frontdoor_cert: Path
    frontdoor_key: Path
    adfs_cert: Path
    adfs_key: Path
    public_roots: Path
    machine_roots: Path


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "netcheck lab"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(cn: str, key: PrivateKey) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(_now() + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def make_leaf(names: list[str], ca: x509.Certificate, ca_key: PrivateKey, key: PrivateKey) -> x509.Certificate:
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    return (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(_now() + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def build(dir: Path, frontdoor_names: list[str], adfs_names: list[str]) -> Pki:
    """Create all lab certificates under ``dir`` (private keys mode 0600)."""
    dir.mkdir(parents=True, exist_ok=True)
    pub_key = ec.generate_private_key(ec.SECP256R1())
    pub_ca = make_ca("netcheck lab public root CA", pub_key)
    insp_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    insp_ca = make_ca("Contoso corporate TLS inspection CA", insp_key)
    fd_key = ec.generate_private_key(ec.SECP256R1())
    fd_cert = make_leaf(frontdoor_names, pub_ca, pub_key, fd_key)
    adfs_key = ec.generate_private_key(ec.SECP256R1())
    adfs_cert = make_leaf(adfs_names, pub_ca, pub_key, adfs_key)

    pki = Pki(
        dir=dir,
        public_ca=dir / "public-ca.pem",
        inspection_ca=dir / "inspection-ca-with-key.pem",
        inspection_ca_cert=dir / "inspection-ca.pem",
        frontdoor_cert=dir / "frontdoor.pem",
        frontdoor_key=dir / "frontdoor.key",
        adfs_cert=dir / "adfs.pem",
        adfs_key=dir / "adfs.key",
        public_roots=dir / "public-roots.pem",
        machine_roots=dir / "machine-roots.pem",
    )
    public = {
        pki.public_ca: _pem_cert(pub_ca),
        pki.inspection_ca_cert: _pem_cert(insp_ca),
        pki.frontdoor_cert: _pem_cert(fd_cert),
        pki.adfs_cert: _pem_cert(adfs_cert),
        pki.public_roots: _pem_cert(pub_ca),
        pki.machine_roots: _pem_cert(pub_ca) + _pem_cert(insp_ca),
    }
    private = {
        pki.frontdoor_key: _pem_key(fd_key),
        pki.adfs_key: _pem_key(adfs_key),
        pki.inspection_ca: _pem_cert(insp_ca) + _pem_key(insp_key),
    }
    for path, data in public.items():
        path.write_bytes(data)
        path.chmod(0o644)
    for path, data in private.items():
        path.write_bytes(data)
        path.chmod(0o600)
    return pki
