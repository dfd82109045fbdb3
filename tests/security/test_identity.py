"""The edge box's side: key file permissions, CSR, stored credentials, renewal, identity."""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from security.ca import CertificateAuthority
from security.errors import CertificateError, KeyFilePermissionError, KeyStoreError
from security.identity import (
    Identity,
    generate_key,
    identity_of,
    load_private_key,
    make_csr,
    renew_due,
    store_credentials,
)

from .conftest import NOW, custom_leaf, enroll


def test_key_file_is_0600_and_loads(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "edge.key")
    assert stat.S_IMODE((tmp_path / "edge.key").stat().st_mode) == 0o600
    loaded = load_private_key(tmp_path / "edge.key")
    assert loaded.public_key() == key.public_key()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o607])
def test_loose_key_file_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "edge.key"
    generate_key(path)
    path.chmod(mode)
    with pytest.raises(KeyFilePermissionError, match=rf"edge\.key.*{mode:04o}"):
        load_private_key(path)


def test_bad_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match=r"missing.key"):
        load_private_key(tmp_path / "missing.key")
    junk = tmp_path / "junk.key"
    junk.write_bytes(b"junk")
    junk.chmod(0o600)
    with pytest.raises(KeyStoreError, match=r"not an unencrypted PEM"):
        load_private_key(junk)


def test_csr_carries_identity(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")
    csr = x509.load_pem_x509_csr(make_csr(key, Identity("edge", "gw-01")))
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:community-iot:edge:gw-01"
    ]
    with pytest.raises(ValueError, match=r"id"):
        make_csr(key, Identity("edge", "bad id with spaces"))


def test_store_credentials(ca: CertificateAuthority, tmp_path: Path) -> None:
    leaf = enroll(ca, tmp_path, Identity("edge", "gw-01"))
    store_credentials(tmp_path, leaf, ca.chain_pems)
    assert (tmp_path / "cert.pem").read_bytes() == leaf
    assert (tmp_path / "chain.pem").read_bytes() == b"".join(ca.chain_pems)
    with pytest.raises(CertificateError):
        store_credentials(tmp_path, b"junk", ca.chain_pems)


def test_renew_due_after_two_thirds(ca: CertificateAuthority, tmp_path: Path) -> None:
    leaf = enroll(ca, tmp_path, Identity("edge", "gw-01"))
    assert not renew_due(leaf, NOW)
    assert not renew_due(leaf, NOW + timedelta(days=20) - timedelta(seconds=1))
    assert renew_due(leaf, NOW + timedelta(days=20))
    assert renew_due(x509.load_pem_x509_certificate(leaf), NOW + timedelta(days=29))


def test_identity_of_peer_certificate(ca: CertificateAuthority, tmp_path: Path) -> None:
    leaf = enroll(ca, tmp_path, Identity("integrator", "acme"))
    assert identity_of(leaf) == ("integrator", "acme")
    assert str(identity_of(leaf)) == "integrator 'acme'"


@pytest.mark.parametrize(
    "uri",
    [
        "urn:community-iot:admin:x",
        "urn:community-iot:edge",
        "urn:community-iot:edge:",
        "urn:community-iot:edge:a b",
        "https://example.invalid",
    ],
)
def test_identity_of_refuses_bad_uris(ca: CertificateAuthority, uri: str) -> None:
    pem = custom_leaf(ca.intermediate.subject, ca.key, uri=uri)
    with pytest.raises(CertificateError):
        identity_of(pem)


def test_identity_of_garbage() -> None:
    with pytest.raises(CertificateError, match=r"peer certificate"):
        identity_of(b"garbage")
