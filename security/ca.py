"""A private certificate authority per deployment (ECDSA P-256, SHA-256).

Folder layout written by :func:`init_ca`::

    root.key          offline root key (0600): move it off the registry host after init
    root.pem          root certificate: the trust anchor every party is given
    intermediate.key  issuing key (0600), the only key the registry needs online
    intermediate.pem  issuing certificate, signed by the root
    cross.pem         (after a root rollover) the new root cross-signed by the old one

Key rotation, both kept simple:

* *Intermediate*: :func:`rotate_intermediate` (needs ``root.key``) makes a new issuing key and
  certificate, archives the old certificate as ``intermediate-<serial>.pem`` and destroys the
  old key. Certificates already issued stay valid: they carry their own chain.
* *Root rollover*: :func:`rollover_root` makes a new CA (root + intermediate) in a new folder and
  has the old root cross-sign the new root (``cross.pem``). During the overlap the new CA hands
  out the chain ``[intermediate, cross]``, so parties that still trust only the old root accept
  new certificates, while parties that trust the new root verify the same chain directly. Once
  every party trusts the new root, delete ``cross.pem`` and retire the old root.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from security.errors import CsrInvalid, KeyStoreError
from security.files import read_private, write_private, write_public
from security.identity import Identity, load_certificate

__all__ = [
    "DEFAULT_LEAF_VALIDITY",
    "CertificateAuthority",
    "Clock",
    "CrlBuilder",
    "init_ca",
    "rollover_root",
    "rotate_intermediate",
    "utc_now",
]

Clock = Callable[[], datetime]
DEFAULT_LEAF_VALIDITY = timedelta(days=30)
ROOT_VALIDITY = timedelta(days=3650)
INTERMEDIATE_VALIDITY = timedelta(days=730)
_PEM = serialization.Encoding.PEM


def utc_now() -> datetime:
    """The default clock: now, timezone-aware UTC."""
    return datetime.now(UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(read_private(path), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyStoreError(f"{path}: not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyStoreError(f"{path}: expected an EC private key")
    return key


def _read_cert(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyStoreError(f"{path}: cannot read certificate: {exc.strerror}") from exc
    return load_certificate(data, str(path))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_cert(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    validity: timedelta,
    path_length: int | None,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


def _new_intermediate(
    folder: Path,
    name: str,
    root: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    validity: timedelta,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _ca_cert(
        _name(f"{name} Issuing CA"), key.public_key(), root.subject, root_key, now, validity, 0
    )
    write_private(folder / "intermediate.key", _key_pem(key))
    write_public(folder / "intermediate.pem", cert.public_bytes(_PEM))


def init_ca(
    folder: Path,
    name: str,
    *,
    clock: Clock = utc_now,
    root_validity: timedelta = ROOT_VALIDITY,
    intermediate_validity: timedelta = INTERMEDIATE_VALIDITY,
) -> CertificateAuthority:
    """Create a root and an issuing intermediate in ``folder`` (refused if a CA is there)."""
    if (folder / "root.pem").exists() or (folder / "intermediate.pem").exists():
        raise KeyStoreError(f"{folder}: a CA already exists there; refusing to overwrite it")
    folder.mkdir(parents=True, exist_ok=True)
    now = clock()
    root_key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(f"{name} Root CA")
    # No path length limit on the root: a rollover adds the cross cert between it and a leaf.
    root = _ca_cert(subject, root_key.public_key(), subject, root_key, now, root_validity, None)
    write_private(folder / "root.key", _key_pem(root_key))
    write_public(folder / "root.pem", root.public_bytes(_PEM))
    _new_intermediate(folder, name, root, root_key, now, intermediate_validity)
    return CertificateAuthority.load(folder, clock=clock)


def _ca_name(root: x509.Certificate) -> str:
    cn = root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return str(cn).removesuffix(" Root CA")


def rotate_intermediate(
    folder: Path, *, clock: Clock = utc_now, validity: timedelta = INTERMEDIATE_VALIDITY
) -> CertificateAuthority:
    """Replace the issuing key and certificate (needs the offline ``root.key``)."""
    root_key = _load_key(folder / "root.key")
    root = _read_cert(folder / "root.pem")
    old = _read_cert(folder / "intermediate.pem")
    write_public(folder / f"intermediate-{old.serial_number:x}.pem", old.public_bytes(_PEM))
    _new_intermediate(folder, _ca_name(root), root, root_key, clock(), validity)
    return CertificateAuthority.load(folder, clock=clock)


def rollover_root(
    old_folder: Path, new_folder: Path, name: str, *, clock: Clock = utc_now
) -> CertificateAuthority:
    """Make a new CA in ``new_folder`` whose root is cross-signed by the old root."""
    old_key = _load_key(old_folder / "root.key")
    old_root = _read_cert(old_folder / "root.pem")
    new = init_ca(new_folder, name, clock=clock)
    new_root_key = _load_key(new_folder / "root.key")
    cross = _ca_cert(
        new.root.subject,
        new_root_key.public_key(),
        old_root.subject,
        old_key,
        clock(),
        min(ROOT_VALIDITY, old_root.not_valid_after_utc - clock()),
        1,
    )
    write_public(new_folder / "cross.pem", cross.public_bytes(_PEM))
    return CertificateAuthority.load(new_folder, clock=clock)


@dataclass(frozen=True)
class CertificateAuthority:
    """The online issuing side: the intermediate's key and certificate, the root certificate."""

    folder: Path
    root: x509.Certificate
    intermediate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cross: x509.Certificate | None
    clock: Clock

    @classmethod
    def load(cls, folder: Path, *, clock: Clock = utc_now) -> CertificateAuthority:
        """Load the CA in ``folder``; ``root.key`` is not needed (keep it offline)."""
        cross_path = folder / "cross.pem"
        return cls(
            folder=folder,
            root=_read_cert(folder / "root.pem"),
            intermediate=_read_cert(folder / "intermediate.pem"),
            key=_load_key(folder / "intermediate.key"),
            cross=_read_cert(cross_path) if cross_path.exists() else None,
            clock=clock,
        )

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(_PEM)

    @property
    def chain_pems(self) -> list[bytes]:
        """The chain handed out with each certificate: intermediate (and cross cert)."""
        chain = [self.intermediate.public_bytes(_PEM)]
        if self.cross is not None:
            chain.append(self.cross.public_bytes(_PEM))
        return chain

    def issue_from_csr(
        self,
        csr_pem: bytes,
        identity: Identity,
        *,
        validity: timedelta = DEFAULT_LEAF_VALIDITY,
    ) -> bytes:
        """Check ``csr_pem`` and issue a certificate naming ``identity`` (the CSR's names are
        ignored: the CA decides the identity, from the enrollment record)."""
        try:
            identity.check()
        except ValueError as exc:
            raise CsrInvalid(f"CSR for {identity}: {exc}") from exc
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise CsrInvalid(f"CSR for {identity}: not a PEM certificate request: {exc}") from exc
        try:
            valid = csr.is_signature_valid
            public_key = csr.public_key()
        except (ValueError, InvalidSignature) as exc:
            raise CsrInvalid(f"CSR for {identity}: unreadable: {exc}") from exc
        if not valid:
            raise CsrInvalid(f"CSR for {identity}: its signature does not verify")
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != (
            "secp256r1"
        ):
            raise CsrInvalid(f"CSR for {identity}: key must be EC P-256")
        return self._issue(public_key, identity, validity, [])

    def issue_server_certificate(
        self,
        public_key: ec.EllipticCurvePublicKey,
        names: Iterable[str],
        *,
        registry_id: str = "registry",
        validity: timedelta = DEFAULT_LEAF_VALIDITY,
    ) -> bytes:
        """A registry certificate for ``names`` (host names or IP addresses, e.g. 127.0.0.1)."""
        general: list[x509.GeneralName] = []
        for name in names:
            try:
                general.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                general.append(x509.DNSName(name))
        return self._issue(public_key, Identity("registry", registry_id).check(), validity, general)

    def _issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        identity: Identity,
        validity: timedelta,
        extra_names: Sequence[x509.GeneralName],
    ) -> bytes:
        now = self.clock()
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if identity.role == "registry":
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri), *extra_names]
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, identity.id),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.role),
                    ]
                )
            )
            .issuer_name(self.intermediate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(min(now + validity, self.intermediate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(_PEM)

    def crl_builder(self) -> CrlBuilder:
        return CrlBuilder(self.intermediate, self.key, self.clock)


@dataclass(frozen=True)
class CrlBuilder:
    """Signs certificate revocation lists with the issuing key."""

    issuer: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    clock: Clock = utc_now

    def signed_crl(
        self, revoked_serials: Iterable[int], *, next_update: timedelta = timedelta(days=1)
    ) -> bytes:
        """A PEM CRL listing ``revoked_serials``, valid until now + ``next_update``."""
        now = self.clock()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.issuer.subject)
            .last_update(now)
            .next_update(now + next_update)
        )
        for serial in sorted(set(revoked_serials)):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(_PEM)
