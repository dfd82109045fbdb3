"""Pure certificate-chain verification on bytes.

:func:`verify_chain` builds and checks the path with ``cryptography.x509.verification``
(``PolicyBuilder``: signatures, CA constraints, key usage and extended key usage, the
web-PKI profile) and adds what that does not do: a clock-skew tolerance at both edges of the
leaf's validity, revocation against a set of serials (from :func:`revoked_serials`, a checked
CRL, or the registry's own list: grpcio has no CRL option), and the identity check.
Each refusal is a precise :class:`~security.errors.CertificateError` subclass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification as xv

from security.errors import (
    CertificateError,
    CrlError,
    ExpiredCertificate,
    IdentityMismatch,
    NotYetValid,
    RevokedCertificate,
    SelfSignedCertificate,
    UnknownIssuer,
    WrongKeyUsage,
)
from security.identity import Identity, identity_of, load_certificate

__all__ = ["DEFAULT_SKEW", "revoked_serials", "verify_chain"]

DEFAULT_SKEW = timedelta(minutes=5)


def _subject(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string())


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_validity(cert: x509.Certificate, now: datetime, skew: timedelta, what: str) -> None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start - skew:
        raise NotYetValid(
            f"{what} {_subject(cert)} is not valid before {start.isoformat()} "
            f"(now {now.isoformat()}, skew allowed {skew})"
        )
    if now > end + skew:
        raise ExpiredCertificate(
            f"{what} {_subject(cert)} expired at {end.isoformat()} "
            f"(now {now.isoformat()}, skew allowed {skew})"
        )


def verify_chain(
    leaf_pem: bytes,
    chain_pems: Sequence[bytes],
    trust_roots: Sequence[bytes],
    now: datetime,
    *,
    revoked: Collection[int] | None = None,
    skew: timedelta = DEFAULT_SKEW,
    purpose: Literal["client", "server"] = "client",
    server_name: str | None = None,
    expected: Identity | None = None,
) -> Identity:
    """Verify ``leaf_pem`` up to one of ``trust_roots`` at ``now`` and return its identity.

    ``purpose="client"`` requires the clientAuth usage; ``"server"`` requires serverAuth and
    that ``server_name`` (a DNS name or IP address) is in the certificate. ``revoked`` is a set
    of serial numbers refused anywhere in the verified chain; ``expected`` the identity the
    caller was told to expect (e.g. the edge named in the sync hello).
    """
    if now.tzinfo is None:
        raise ValueError("verify_chain needs a timezone-aware 'now'")
    leaf = load_certificate(leaf_pem, "leaf certificate")
    chain = [load_certificate(pem, f"chain certificate {i}") for i, pem in enumerate(chain_pems)]
    roots = [load_certificate(pem, f"trust root {i}") for i, pem in enumerate(trust_roots)]
    if not roots:
        raise UnknownIssuer(f"leaf {_subject(leaf)}: no trust roots given")
    if _is_self_signed(leaf):
        raise SelfSignedCertificate(f"leaf {_subject(leaf)} is self-signed, refused as a leaf")
    _check_validity(leaf, now, skew, "leaf")
    # The skew is handled above: verify the path at a time inside the leaf's validity.
    at = min(max(now, leaf.not_valid_before_utc), leaf.not_valid_after_utc)
    builder = xv.PolicyBuilder().store(xv.Store(roots)).time(at)
    try:
        if purpose == "client":
            verified = builder.build_client_verifier().verify(leaf, chain)
            path = verified.chain
        else:
            if server_name is None:
                raise ValueError("purpose='server' needs a server_name")
            subject = _server_subject(server_name)
            path = builder.build_server_verifier(subject).verify(leaf, chain)
    except xv.VerificationError as exc:
        raise _diagnose(leaf, chain + roots, at, skew, exc) from exc
    if revoked:
        for cert in path:
            if cert.serial_number in revoked:
                raise RevokedCertificate(
                    f"certificate {_subject(cert)} serial {cert.serial_number:x} is revoked"
                )
    identity = identity_of(leaf)
    if expected is not None and identity != expected:
        raise IdentityMismatch(f"certificate names {identity}, expected {expected}")
    return identity


def _server_subject(name: str) -> x509.DNSName | x509.IPAddress:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _diagnose(
    leaf: x509.Certificate,
    others: Sequence[x509.Certificate],
    at: datetime,
    skew: timedelta,
    exc: xv.VerificationError,
) -> CertificateError:
    """Turn a path-building failure into the most precise error we can name."""
    text = str(exc)
    where = f"leaf {_subject(leaf)}"
    for cert in others:
        if cert.subject == leaf.issuer or any(o.subject == cert.issuer for o in others):
            try:
                _check_validity(cert, at, skew, "CA certificate")
            except CertificateError as err:
                return err
    lowered = text.lower()
    if "key usage" in lowered or "eku" in lowered or "extendedkeyusage" in lowered:
        return WrongKeyUsage(f"{where}: key usage does not allow this use: {text}")
    if "san" in lowered or "subject" in lowered:
        return IdentityMismatch(f"{where}: names do not match: {text}")
    if "candidates exhausted" in lowered or "issuer" in lowered:
        return UnknownIssuer(f"{where}: no path to a trusted root: {text}")
    return CertificateError(f"{where}: refused: {text}")


def revoked_serials(crl_pem: bytes, issuers: Sequence[bytes], now: datetime) -> frozenset[int]:
    """The serials listed by ``crl_pem`` after checking it is signed by one of ``issuers``
    and not past its next update."""
    try:
        crl = x509.load_pem_x509_crl(crl_pem)
    except ValueError as exc:
        raise CrlError(f"CRL: not a PEM certificate revocation list: {exc}") from exc
    issuer_subject = repr(crl.issuer.rfc4514_string())
    for i, pem in enumerate(issuers):
        cert = load_certificate(pem, f"CRL issuer {i}")
        key = cert.public_key()
        if (
            cert.subject == crl.issuer
            and isinstance(key, ec.EllipticCurvePublicKey)
            and crl.is_signature_valid(key)
        ):
            break
    else:
        raise CrlError(f"CRL of {issuer_subject}: not signed by any known issuer")
    next_update = crl.next_update_utc
    if next_update is None or now > next_update:
        raise CrlError(f"CRL of {issuer_subject}: stale (next update {next_update}, now {now})")
    return frozenset(entry.serial_number for entry in crl)
