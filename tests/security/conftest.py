"""Shared fixtures: a fixed clock, a CA in a temporary folder, and a builder of odd leaves."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from security.ca import CertificateAuthority, init_ca
from security.identity import Identity, generate_key, make_csr

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A settable clock."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ca(tmp_path: Path, clock: Clock) -> CertificateAuthority:
    return init_ca(tmp_path / "ca", "Test Deployment", clock=clock)


def enroll(ca: CertificateAuthority, folder: Path, identity: Identity) -> bytes:
    """Key on the 'box', CSR, certificate: the PEM leaf."""
    folder.mkdir(parents=True, exist_ok=True)
    key = generate_key(folder / f"{identity.id}.key")
    return ca.issue_from_csr(make_csr(key, identity), identity)


def custom_leaf(
    issuer_name: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    start: datetime = NOW,
    days: int = 30,
    usages: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    uri: str = "urn:community-iot:edge:odd",
    self_signed: bool = False,
) -> bytes:
    """A leaf built by hand, for the cases the CA never issues."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")])
    if self_signed:
        issuer_name, issuer_key = subject, key
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)
