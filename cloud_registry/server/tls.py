"""The registry's own credentials in secure mode: TLS certificate, CA, command-signing key.

grpcio's Python API either requires and verifies a client certificate on a port, or never
asks for one (``require_client_auth=False`` does not request it at all: measured). So a
secure replica listens twice with the same server certificate:

* ``listen``: mutual TLS; the TLS layer refuses peers without a certificate of the CA
  (unknown CA, self-signed, expired in real time: the handshake fails before any RPC, so
  grpcio gives us nothing to audit); the interceptor then checks validity with its own clock
  and skew, revocation, identity and authorization for every call.
* ``enroll_listen``: one-way TLS for what needs no client certificate: ``Enroll``,
  ``GetCrl``, health, and integrators presenting an API key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cloud_registry.ca_admin import COMMAND_KEY, SERVER_CERT, SERVER_KEY
from security.ca import DEFAULT_LEAF_VALIDITY, CertificateAuthority, Clock, utc_now
from security.commands import CommandSigner
from security.errors import KeyStoreError
from security.identity import load_private_key
from security.verify import DEFAULT_SKEW

__all__ = ["ServerSecurity"]


@dataclass(frozen=True)
class ServerSecurity:
    """Everything a secure replica needs; build it with :meth:`from_ca_dir`."""

    ca: CertificateAuthority
    server_key_pem: bytes
    server_cert_pem: bytes
    command_key: ec.EllipticCurvePrivateKey
    extra_chain_pems: tuple[bytes, ...] = ()  # archived intermediates still trusted
    clock: Clock = utc_now
    skew: timedelta = DEFAULT_SKEW
    leaf_validity: timedelta = DEFAULT_LEAF_VALIDITY
    envelope_ttl: timedelta = timedelta(minutes=50)

    @classmethod
    def from_ca_dir(
        cls,
        folder: Path,
        *,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        clock: Clock = utc_now,
        skew: timedelta = DEFAULT_SKEW,
        leaf_validity: timedelta = DEFAULT_LEAF_VALIDITY,
    ) -> ServerSecurity:
        """Load the CA folder (``root.key`` not needed) and the TLS certificate (default:
        ``server.pem`` / ``server.key`` of the folder)."""
        cert_path = tls_cert or folder / SERVER_CERT
        key_path = tls_key or folder / SERVER_KEY
        try:
            cert = cert_path.read_bytes()
        except OSError as exc:
            raise KeyStoreError(
                f"{cert_path}: cannot read the registry's TLS certificate ({exc.strerror}); "
                "make one with `cloud-registry ca server-cert`"
            ) from exc
        key = load_private_key(key_path)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        archived = tuple(p.read_bytes() for p in sorted(folder.glob("intermediate-*.pem")))
        return cls(
            ca=CertificateAuthority.load(folder, clock=clock),
            server_key_pem=key_pem,
            server_cert_pem=cert,
            command_key=load_private_key(folder / COMMAND_KEY),
            extra_chain_pems=archived,
            clock=clock,
            skew=skew,
            leaf_validity=leaf_validity,
        )

    @property
    def trust_roots(self) -> list[bytes]:
        return [self.ca.root_pem]

    @property
    def intermediates(self) -> list[bytes]:
        """The issuing certificates a client's leaf may chain through."""
        return [*self.ca.chain_pems, *self.extra_chain_pems]

    def server_credentials(self, *, mutual: bool) -> grpc.ServerCredentials:
        chain = self.server_cert_pem + b"".join(self.ca.chain_pems)
        return grpc.ssl_server_credentials(
            [(self.server_key_pem, chain)],
            root_certificates=b"".join(self.trust_roots),
            require_client_auth=mutual,
        )

    @cached_property
    def signer(self) -> CommandSigner:
        return CommandSigner(self.command_key)

    def command_keys_pem(self) -> dict[str, str]:
        """Public command keys by key id (hex), as sent in ``EnrollResponse``."""
        signer = self.signer
        pem = self.command_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {signer.key_id.hex(): pem.decode("ascii")}
