"""Chain verification: each refusal listed in the issue, at library level."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from security.ca import CertificateAuthority, init_ca
from security.errors import (
    CertificateError,
    ExpiredCertificate,
    IdentityMismatch,
    NotYetValid,
    RevokedCertificate,
    SelfSignedCertificate,
    UnknownIssuer,
    WrongKeyUsage,
)
from security.identity import Identity
from security.verify import verify_chain

from .conftest import NOW, Clock, custom_leaf, enroll

EDGE = Identity("edge", "gw-01")
SKEW = timedelta(minutes=5)


@pytest.fixture
def leaf(ca: CertificateAuthority, tmp_path: Path) -> bytes:
    return enroll(ca, tmp_path / "box", EDGE)


def check(ca: CertificateAuthority, leaf: bytes, now: datetime = NOW, **kw: Any) -> Identity:
    return verify_chain(leaf, ca.chain_pems, [ca.root_pem], now, skew=SKEW, **kw)


def test_valid_leaf_gives_identity(ca: CertificateAuthority, leaf: bytes) -> None:
    assert check(ca, leaf, expected=EDGE) == EDGE


def test_expired(ca: CertificateAuthority, leaf: bytes) -> None:
    with pytest.raises(ExpiredCertificate, match=r"gw-01.*expired"):
        check(ca, leaf, NOW + timedelta(days=31))


@pytest.mark.parametrize(
    ("offset", "error"),
    [
        (-SKEW, None),  # exactly at not_before - skew: still accepted
        (-SKEW - timedelta(seconds=1), NotYetValid),
        (timedelta(days=30) + SKEW, None),  # exactly at not_after + skew
        (timedelta(days=30) + SKEW + timedelta(seconds=1), ExpiredCertificate),
    ],
)
def test_clock_skew_at_both_edges(
    ca: CertificateAuthority, leaf: bytes, offset: timedelta, error: type[Exception] | None
) -> None:
    if error is None:
        assert check(ca, leaf, NOW + offset) == EDGE
    else:
        with pytest.raises(error, match=r"skew allowed"):
            check(ca, leaf, NOW + offset)


def test_unknown_ca(ca: CertificateAuthority, leaf: bytes, tmp_path: Path, clock: Clock) -> None:
    other = init_ca(tmp_path / "other", "Test Deployment", clock=clock)  # same names
    with pytest.raises(UnknownIssuer, match=r"gw-01"):
        verify_chain(leaf, ca.chain_pems, [other.root_pem], NOW)
    with pytest.raises(UnknownIssuer):  # chain from the other CA, trust ours
        verify_chain(leaf, other.chain_pems, [ca.root_pem], NOW)
    with pytest.raises(UnknownIssuer, match=r"no trust roots"):
        verify_chain(leaf, ca.chain_pems, [], NOW)


def test_missing_intermediate(ca: CertificateAuthority, leaf: bytes) -> None:
    with pytest.raises(UnknownIssuer):
        verify_chain(leaf, [], [ca.root_pem], NOW)


def test_self_signed_leaf(ca: CertificateAuthority) -> None:
    pem = custom_leaf(ca.intermediate.subject, ca.key, self_signed=True)
    with pytest.raises(SelfSignedCertificate, match=r"self-signed"):
        check(ca, pem)
    with pytest.raises(SelfSignedCertificate):  # even when the party trusts it as a root
        verify_chain(pem, [], [pem], NOW)


def test_root_presented_as_leaf(ca: CertificateAuthority) -> None:
    with pytest.raises(SelfSignedCertificate):
        check(ca, ca.root_pem)


def test_intermediate_presented_as_leaf(ca: CertificateAuthority) -> None:
    with pytest.raises(CertificateError):
        check(ca, ca.chain_pems[0])


def test_revoked(ca: CertificateAuthority, leaf: bytes) -> None:
    serial = x509.load_pem_x509_certificate(leaf).serial_number
    with pytest.raises(RevokedCertificate, match=r"revoked"):
        check(ca, leaf, revoked={serial})
    assert check(ca, leaf, revoked={serial + 1}) == EDGE


def test_revoked_intermediate(ca: CertificateAuthority, leaf: bytes) -> None:
    with pytest.raises(RevokedCertificate):
        check(ca, leaf, revoked={ca.intermediate.serial_number})


def test_another_edges_certificate(ca: CertificateAuthority, tmp_path: Path) -> None:
    other = enroll(ca, tmp_path / "other", Identity("edge", "gw-02"))
    with pytest.raises(IdentityMismatch, match=r"gw-02.*expected edge 'gw-01'"):
        check(ca, other, expected=EDGE)


def test_integrator_posing_as_edge(ca: CertificateAuthority, tmp_path: Path) -> None:
    integ = enroll(ca, tmp_path / "i", Identity("integrator", "gw-01"))
    with pytest.raises(IdentityMismatch):
        check(ca, integ, expected=EDGE)


def test_wrong_key_usage(ca: CertificateAuthority) -> None:
    server_only = custom_leaf(
        ca.intermediate.subject, ca.key, usages=[ExtendedKeyUsageOID.SERVER_AUTH]
    )
    with pytest.raises(WrongKeyUsage, match=r"key usage"):
        check(ca, server_only)


def test_edge_certificate_is_not_a_server(ca: CertificateAuthority, leaf: bytes) -> None:
    with pytest.raises(CertificateError):
        check(ca, leaf, purpose="server", server_name="127.0.0.1")


def test_server_name_mismatch(ca: CertificateAuthority) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = ca.issue_server_certificate(key.public_key(), ["127.0.0.1"])
    with pytest.raises(IdentityMismatch):
        check(ca, pem, purpose="server", server_name="127.0.0.2")
    with pytest.raises(ValueError, match=r"server_name"):
        check(ca, pem, purpose="server")


def test_expired_intermediate(tmp_path: Path, clock: Clock) -> None:
    short = init_ca(tmp_path / "s", "Short", clock=clock, intermediate_validity=timedelta(days=10))
    clock.advance(timedelta(days=9))
    leaf = enroll(short, tmp_path / "b", EDGE)  # capped at the intermediate's end
    cert = x509.load_pem_x509_certificate(leaf)
    assert cert.not_valid_after_utc == short.intermediate.not_valid_after_utc
    with pytest.raises(ExpiredCertificate):
        verify_chain(leaf, short.chain_pems, [short.root_pem], NOW + timedelta(days=11))
    # a (hand-made) leaf outliving its issuer is refused for the issuer's expiry
    outliving = custom_leaf(short.intermediate.subject, short.key, start=clock())
    with pytest.raises(ExpiredCertificate, match=r"CA certificate.*Short Issuing CA"):
        verify_chain(outliving, short.chain_pems, [short.root_pem], NOW + timedelta(days=11))


def test_garbage_and_naive_time(ca: CertificateAuthority, leaf: bytes) -> None:
    with pytest.raises(CertificateError, match=r"leaf certificate: not a PEM"):
        check(ca, b"not a certificate")
    with pytest.raises(CertificateError, match=r"chain certificate 0"):
        verify_chain(leaf, [b"junk"], [ca.root_pem], NOW)
    with pytest.raises(ValueError, match=r"timezone"):
        check(ca, leaf, NOW.replace(tzinfo=None))


def test_leaf_without_identity_uri(ca: CertificateAuthority) -> None:
    pem = custom_leaf(ca.intermediate.subject, ca.key, uri="https://example.invalid/x")
    with pytest.raises(CertificateError, match=r"urn:community-iot"):
        check(ca, pem)
