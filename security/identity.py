"""The identity of a party, and the edge box's side of its credentials.

An identity is a role (``edge``, ``integrator``, ``registry``) and an id. Certificates carry it
twice: as the subject's common name (the id) and as a URI subject alternative name
``urn:community-iot:<role>:<id>``, which is the one read back (:func:`identity_of`).

On the edge box: :func:`generate_key` makes the private key (a 0600 file; it never leaves the
box), :func:`make_csr` the signing request, :func:`store_credentials` keeps the certificate and
its chain, and :func:`renew_due` says when to renew (after two thirds of the lifetime).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Final, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from security.errors import CertificateError, KeyStoreError
from security.files import read_private, write_private, write_public

__all__ = [
    "ROLES",
    "URI_PREFIX",
    "Identity",
    "generate_key",
    "identity_of",
    "load_certificate",
    "load_private_key",
    "make_csr",
    "renew_due",
    "store_credentials",
]

URI_PREFIX: Final = "urn:community-iot:"
ROLES: Final = frozenset({"edge", "integrator", "registry"})
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Identity(NamedTuple):
    """``(role, id)`` as carried by a certificate."""

    role: str
    id: str

    def check(self) -> Identity:
        """Return self, or raise ``ValueError`` for an unknown role or a malformed id."""
        if self.role not in ROLES:
            raise ValueError(f"identity role {self.role!r} is not one of {sorted(ROLES)}")
        if not _ID.fullmatch(self.id):
            raise ValueError(f"identity id {self.id!r} must match {_ID.pattern}")
        return self

    @property
    def uri(self) -> str:
        return f"{URI_PREFIX}{self.role}:{self.id}"

    @classmethod
    def from_uri(cls, uri: str) -> Identity:
        if not uri.startswith(URI_PREFIX):
            raise ValueError(f"URI {uri!r} is not a {URI_PREFIX} identity")
        role, sep, ident = uri[len(URI_PREFIX) :].partition(":")
        if not sep:
            raise ValueError(f"URI {uri!r} has no id")
        return cls(role, ident).check()

    def __str__(self) -> str:
        return f"{self.role} {self.id!r}"


def load_certificate(pem: bytes, where: str = "certificate") -> x509.Certificate:
    """Parse one PEM certificate, translating errors to :class:`CertificateError`."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{where}: not a PEM certificate: {exc}") from exc


def identity_of(cert: bytes | x509.Certificate) -> Identity:
    """The identity named by a certificate's ``urn:community-iot:`` URI SAN."""
    if isinstance(cert, bytes):
        cert = load_certificate(cert, "peer certificate")
    where = f"certificate {cert.subject.rfc4514_string()!r}"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise CertificateError(f"{where}: no subject alternative name") from exc
    uris = [
        u
        for u in san.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith(URI_PREFIX)
    ]
    if len(uris) != 1:
        raise CertificateError(f"{where}: expected one {URI_PREFIX} URI, found {len(uris)}")
    try:
        return Identity.from_uri(uris[0])
    except ValueError as exc:
        raise CertificateError(f"{where}: {exc}") from exc


def generate_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Make a P-256 private key and write it to ``path`` (PKCS#8 PEM, mode 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, pem)
    return key


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load a P-256 private key, refusing a file with group/other permission bits."""
    data = read_private(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyStoreError(f"{path}: not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise KeyStoreError(f"{path}: expected an EC P-256 private key")
    return key


def make_csr(key: ec.EllipticCurvePrivateKey, identity: Identity) -> bytes:
    """A PEM CSR for ``identity`` (CN = id, URI SAN = identity URI), signed by ``key``."""
    identity.check()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.id)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def store_credentials(folder: Path, cert_pem: bytes, chain_pems: list[bytes]) -> None:
    """Write ``cert.pem`` and ``chain.pem`` (intermediates, leaf's issuer first) to ``folder``."""
    load_certificate(cert_pem, f"{folder}/cert.pem")
    for i, pem in enumerate(chain_pems):
        load_certificate(pem, f"chain certificate {i}")
    write_public(folder / "cert.pem", cert_pem)
    write_public(folder / "chain.pem", b"".join(chain_pems))


def renew_due(cert: bytes | x509.Certificate, now: datetime) -> bool:
    """True once two thirds of the certificate's lifetime have passed at ``now``."""
    if isinstance(cert, bytes):
        cert = load_certificate(cert)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * 2 / 3
