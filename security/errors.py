"""The one exception tree of :mod:`security`.

Every refusal raises a subclass of :class:`SecurityError`; third-party errors (``cryptography``,
``OSError``, ``json``) are translated once, where they occur, with ``raise ... from exc``. Each
message names what was refused and where (file, certificate subject, edge, command)::

    SecurityError
    +-- CertificateError            a certificate or chain is refused
    |   +-- ExpiredCertificate      now > not_after (+ skew)
    |   +-- NotYetValid             now < not_before (- skew)
    |   +-- UnknownIssuer           no path to a trusted root
    |   +-- SelfSignedCertificate   the leaf signs itself
    |   +-- RevokedCertificate      serial on the revocation list
    |   +-- WrongKeyUsage           key usage / extended key usage does not fit the purpose
    |   +-- IdentityMismatch        valid, but not the identity expected (another edge's)
    |   +-- CrlError                a CRL that is unsigned, stale or unreadable
    +-- EnrollmentError             bootstrap refused
    |   +-- TokenInvalid            malformed or unknown token, wrong secret
    |   +-- TokenExpired
    |   +-- TokenReused             single use: already redeemed
    |   +-- CsrInvalid              bad signature, wrong key type, unreadable CSR
    +-- CommandRejected             a signed command envelope is refused
    |   +-- MalformedCommand        cannot be parsed
    |   +-- UnknownSigningKey       signed by a key the verifier does not trust
    |   +-- TamperedCommand         signature does not match
    |   +-- WrongTarget             addressed to another edge
    |   +-- ExpiredCommand          past its expiry (+ skew) or expiry too far ahead
    |   +-- ReplayedCommand         nonce already seen, or sequence not above the last one
    +-- KeyStoreError               key / secret files
    |   +-- KeyFilePermissionError  group/other bits set on a private file
    +-- StateFileError              a persisted state file (replay state) is unreadable
    +-- DecryptionError             at-rest data fails authentication or is malformed
    +-- AuditError                  an audit record that cannot be read
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "CertificateError",
    "CommandRejected",
    "CrlError",
    "CsrInvalid",
    "DecryptionError",
    "EnrollmentError",
    "ExpiredCertificate",
    "ExpiredCommand",
    "IdentityMismatch",
    "KeyFilePermissionError",
    "KeyStoreError",
    "MalformedCommand",
    "NotYetValid",
    "ReplayedCommand",
    "RevokedCertificate",
    "SecurityError",
    "SelfSignedCertificate",
    "StateFileError",
    "TamperedCommand",
    "TokenExpired",
    "TokenInvalid",
    "TokenReused",
    "UnknownIssuer",
    "UnknownSigningKey",
    "WrongKeyUsage",
    "WrongTarget",
]


class SecurityError(Exception):
    """Base of every error raised by :mod:`security`."""


class CertificateError(SecurityError):
    """A certificate or chain is refused."""


class ExpiredCertificate(CertificateError):
    """The certificate's validity ended (beyond the allowed clock skew)."""


class NotYetValid(CertificateError):
    """The certificate's validity has not begun (beyond the allowed clock skew)."""


class UnknownIssuer(CertificateError):
    """No chain leads to a trusted root."""


class SelfSignedCertificate(CertificateError):
    """A self-signed certificate was presented as a leaf."""


class RevokedCertificate(CertificateError):
    """A certificate of the chain is revoked."""


class WrongKeyUsage(CertificateError):
    """The certificate's (extended) key usage does not allow this use."""


class IdentityMismatch(CertificateError):
    """The certificate is valid but names another identity than the one expected."""


class CrlError(CertificateError):
    """A certificate revocation list is unreadable, wrongly signed or stale."""


class EnrollmentError(SecurityError):
    """Enrollment (bootstrap token, CSR) refused."""


class TokenInvalid(EnrollmentError):
    """The bootstrap token is malformed, unknown, or its secret does not match."""


class TokenExpired(EnrollmentError):
    """The bootstrap token is past its expiry."""


class TokenReused(EnrollmentError):
    """The bootstrap token was already used (tokens are single use)."""


class CsrInvalid(EnrollmentError):
    """The certificate signing request is unreadable, wrongly signed or of a refused key type."""


class CommandRejected(SecurityError):
    """A signed command envelope is refused."""


class MalformedCommand(CommandRejected):
    """The envelope cannot be parsed."""


class UnknownSigningKey(CommandRejected):
    """The envelope names a signing key the verifier does not trust."""


class TamperedCommand(CommandRejected):
    """The signature does not match the envelope's content."""


class WrongTarget(CommandRejected):
    """The command is addressed to another edge."""


class ExpiredCommand(CommandRejected):
    """The command is past its expiry, or its expiry lies too far ahead."""


class ReplayedCommand(CommandRejected):
    """The nonce was seen before, or the sequence number is not above the last accepted one."""


class KeyStoreError(SecurityError):
    """A key or secret file cannot be created, read or trusted."""


class KeyFilePermissionError(KeyStoreError):
    """A private file is readable or writable by group or others."""


class StateFileError(SecurityError):
    """A persisted state file (e.g. the command replay state) is unreadable or unwritable."""


class DecryptionError(SecurityError):
    """Data encrypted at rest is malformed or fails authentication."""


class AuditError(SecurityError):
    """An audit record cannot be read."""
