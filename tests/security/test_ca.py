"""The private CA: layout, permissions, issuing, CSR checks, CRLs and key rotation."""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from security.ca import CertificateAuthority, init_ca, rollover_root, rotate_intermediate
from security.errors import (
    CrlError,
    CsrInvalid,
    KeyFilePermissionError,
    KeyStoreError,
    RevokedCertificate,
    UnknownIssuer,
)
from security.identity import Identity, generate_key, identity_of, make_csr
from security.verify import revoked_serials, verify_chain

from .conftest import NOW, Clock, enroll

EDGE = Identity("edge", "gw-01")


def test_init_writes_private_keys_0600(ca: CertificateAuthority) -> None:
    for name in ("root.key", "intermediate.key"):
        assert stat.S_IMODE((ca.folder / name).stat().st_mode) == 0o600
    assert ca.intermediate.issuer == ca.root.subject
    assert ca.root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_init_refuses_to_overwrite(ca: CertificateAuthority, clock: Clock) -> None:
    with pytest.raises(KeyStoreError, match=r"already exists"):
        init_ca(ca.folder, "Again", clock=clock)


def test_load_needs_no_root_key(ca: CertificateAuthority, clock: Clock) -> None:
    (ca.folder / "root.key").unlink()  # taken offline
    loaded = CertificateAuthority.load(ca.folder, clock=clock)
    assert loaded.intermediate == ca.intermediate


def test_load_refuses_loose_intermediate_key(ca: CertificateAuthority) -> None:
    (ca.folder / "intermediate.key").chmod(0o640)
    with pytest.raises(KeyFilePermissionError, match=r"intermediate\.key.*0640"):
        CertificateAuthority.load(ca.folder)


def test_issue_from_csr_sets_identity_and_usage(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert = x509.load_pem_x509_certificate(enroll(ca, tmp_path, EDGE))
    assert identity_of(cert) == EDGE
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-01"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_csr_names_are_ignored_the_ca_decides(ca: CertificateAuthority, tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")
    csr = make_csr(key, Identity("edge", "someone-else"))
    assert identity_of(ca.issue_from_csr(csr, EDGE)) == EDGE


def test_csr_garbage_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(CsrInvalid, match=r"gw-01.*not a PEM"):
        ca.issue_from_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", EDGE)


def test_csr_bad_signature_refused(ca: CertificateAuthority, tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")
    csr = x509.load_pem_x509_csr(make_csr(key, EDGE))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature's integer
    pem = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrInvalid, match=r"signature|unreadable"):
        ca.issue_from_csr(pem, EDGE)


def test_csr_rsa_key_refused(ca: CertificateAuthority) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw-01")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(CsrInvalid, match=r"P-256"):
        ca.issue_from_csr(csr, EDGE)


def test_bad_identity_refused(ca: CertificateAuthority, tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")
    with pytest.raises(CsrInvalid, match=r"role"):
        ca.issue_from_csr(make_csr(key, EDGE), Identity("admin", "x"))


def test_server_certificate_for_loopback(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = ca.issue_server_certificate(key.public_key(), ["127.0.0.1", "localhost"])
    ident = verify_chain(
        pem, ca.chain_pems, [ca.root_pem], NOW, purpose="server", server_name="127.0.0.1"
    )
    assert ident == Identity("registry", "registry")
    assert verify_chain(pem, ca.chain_pems, [ca.root_pem], NOW) == ident  # also a client


def test_crl_round_trip(ca: CertificateAuthority, tmp_path: Path) -> None:
    leaf = enroll(ca, tmp_path, EDGE)
    serial = x509.load_pem_x509_certificate(leaf).serial_number
    crl = ca.crl_builder().signed_crl([serial, 12345])
    revoked = revoked_serials(crl, ca.chain_pems, NOW)
    assert revoked == {serial, 12345}
    with pytest.raises(RevokedCertificate, match=f"{serial:x}"):
        verify_chain(leaf, ca.chain_pems, [ca.root_pem], NOW, revoked=revoked)


def test_crl_stale_refused(ca: CertificateAuthority) -> None:
    crl = ca.crl_builder().signed_crl([1], next_update=timedelta(hours=1))
    with pytest.raises(CrlError, match=r"stale"):
        revoked_serials(crl, ca.chain_pems, NOW + timedelta(hours=2))


def test_crl_from_another_ca_refused(
    ca: CertificateAuthority, tmp_path: Path, clock: Clock
) -> None:
    other = init_ca(tmp_path / "other", "Test Deployment", clock=clock)  # same names!
    crl = other.crl_builder().signed_crl([1])
    with pytest.raises(CrlError, match=r"not signed"):
        revoked_serials(crl, ca.chain_pems, NOW)
    with pytest.raises(CrlError, match=r"not a PEM"):
        revoked_serials(b"garbage", ca.chain_pems, NOW)


def test_rotate_intermediate(ca: CertificateAuthority, tmp_path: Path, clock: Clock) -> None:
    old_leaf, old_chain = enroll(ca, tmp_path / "a", EDGE), ca.chain_pems
    clock.advance(timedelta(days=1))
    new = rotate_intermediate(ca.folder, clock=clock)
    assert new.intermediate.serial_number != ca.intermediate.serial_number
    assert (ca.folder / f"intermediate-{ca.intermediate.serial_number:x}.pem").exists()
    new_leaf = enroll(new, tmp_path / "b", Identity("edge", "gw-02"))
    now = clock()
    assert verify_chain(old_leaf, old_chain, [ca.root_pem], now) == EDGE
    assert verify_chain(new_leaf, new.chain_pems, [ca.root_pem], now).id == "gw-02"
    with pytest.raises(UnknownIssuer):  # the new leaf does not chain to the old intermediate
        verify_chain(new_leaf, old_chain, [ca.root_pem], now)


def test_rotate_intermediate_needs_root_key(ca: CertificateAuthority) -> None:
    (ca.folder / "root.key").unlink()
    with pytest.raises(KeyStoreError, match=r"root.key"):
        rotate_intermediate(ca.folder)


def test_root_rollover_with_cross_signing(
    ca: CertificateAuthority, tmp_path: Path, clock: Clock
) -> None:
    old_leaf = enroll(ca, tmp_path / "a", EDGE)
    new = rollover_root(ca.folder, tmp_path / "ca2", "Test Deployment 2", clock=clock)
    assert new.cross is not None
    assert new.cross.issuer == ca.root.subject
    new_leaf = enroll(new, tmp_path / "b", Identity("edge", "gw-02"))
    old_root, new_root = [ca.root_pem], [new.root_pem]
    # parties trusting only the old root accept new certificates through the cross cert
    assert verify_chain(new_leaf, new.chain_pems, old_root, NOW).id == "gw-02"
    # parties already on the new root verify the same chain directly
    assert verify_chain(new_leaf, new.chain_pems, new_root, NOW).id == "gw-02"
    # during the overlap both roots are trusted: old certificates still pass
    assert verify_chain(old_leaf, ca.chain_pems, old_root + new_root, NOW) == EDGE
    # once the old root is retired, old certificates are refused
    with pytest.raises(UnknownIssuer):
        verify_chain(old_leaf, ca.chain_pems, new_root, NOW)
    # and without the cross cert, old-root parties refuse new certificates
    with pytest.raises(UnknownIssuer):
        verify_chain(new_leaf, new.chain_pems[:1], old_root, NOW)
