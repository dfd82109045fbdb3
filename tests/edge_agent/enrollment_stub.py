"""A small TLS ``EnrollmentService`` on 127.0.0.1 built from the security library (a CA in a
temporary folder, in-memory tokens), for the edge's enrollment and renewal tests.

grpcio's Python API cannot make client certificates optional (``require_client_auth=False``
does not even request one), so the stub listens twice: ``address`` with one-way TLS (Enroll)
and ``mtls_address`` requiring a client certificate of the CA (Renew reads it from
``context.auth_context()`` and verifies it). ``mode`` makes it
misbehave: ``"foreign-key"`` issues the certificate for another key than the CSR's.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cloud_registry.api.v1 import security_pb2, security_pb2_grpc
from edge_agent.identity_store import IdentityStore
from security.ca import CertificateAuthority, init_ca
from security.commands import CommandSigner, key_id
from security.errors import EnrollmentError, SecurityError
from security.identity import Identity, make_csr
from security.tokens import MemoryTokenStore, new_token, redeem
from security.verify import verify_chain

__all__ = ["StubRegistry", "offline_identity", "stub_registry"]


def _now() -> datetime:
    return datetime.now(UTC)


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class StubRegistry(security_pb2_grpc.EnrollmentServiceServicer):
    ca: CertificateAuthority
    signer: CommandSigner
    validity: timedelta = timedelta(days=30)
    mode: str = ""
    tokens: MemoryTokenStore = field(default_factory=MemoryTokenStore)
    address: str = ""
    mtls_address: str = ""
    renewed: list[str] = field(default_factory=list)

    def token(self, edge_id: str, *, ttl: timedelta = timedelta(hours=1)) -> str:
        text, record = new_token(edge_id, "site-a", _now(), ttl=ttl)
        self.tokens.add(record)
        return text

    @property
    def root_pem(self) -> bytes:
        return self.ca.root_pem

    def _response(self, csr_pem: str, edge_id: str) -> security_pb2.EnrollResponse:
        csr = csr_pem.encode()
        if self.mode == "foreign-key":
            csr = make_csr(ec.generate_private_key(ec.SECP256R1()), Identity("edge", edge_id))
        cert = self.ca.issue_from_csr(csr, Identity("edge", edge_id), validity=self.validity)
        public = self.signer_public_pem
        return security_pb2.EnrollResponse(
            edge_id=edge_id,
            site="site-a",
            certificate_pem=cert.decode(),
            chain_pem=[c.decode() for c in self.ca.chain_pems],
            trust_roots_pem=[self.ca.root_pem.decode()],
            command_keys_pem={self.signer.key_id.hex(): public.decode()},
        )

    @property
    def signer_public_pem(self) -> bytes:
        return self.signer._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def Enroll(self, request: Any, context: Any) -> security_pb2.EnrollResponse:
        try:
            record = redeem(request.token, self.tokens, _now())
        except EnrollmentError as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        return self._response(request.csr_pem, record.edge_id)

    def Renew(self, request: Any, context: Any) -> security_pb2.EnrollResponse:
        pems = context.auth_context().get("x509_pem_cert")
        if not pems:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "Renew needs a client certificate")
        try:
            identity = verify_chain(pems[0], self.ca.chain_pems, [self.ca.root_pem], _now())
        except SecurityError as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        self.renewed.append(identity.id)
        return self._response(request.csr_pem, identity.id)


@contextmanager
def stub_registry(
    folder: Path, *, validity: timedelta = timedelta(days=30), mode: str = ""
) -> Iterator[StubRegistry]:
    """A running stub on 127.0.0.1 (TLS, server certificate for 127.0.0.1)."""
    ca = init_ca(folder / "ca", "Stub")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = ca.issue_server_certificate(server_key.public_key(), ["127.0.0.1"])
    signing_key = ec.generate_private_key(ec.SECP256R1())
    stub = StubRegistry(ca, CommandSigner(signing_key), validity, mode)
    assert key_id(signing_key.public_key()) == stub.signer.key_id
    pairs = [(_pem(server_key), server_cert + b"".join(ca.chain_pems))]
    server = grpc.server(ThreadPoolExecutor(4))
    security_pb2_grpc.add_EnrollmentServiceServicer_to_server(stub, server)  # type: ignore[no-untyped-call]
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(pairs))
    mtls = grpc.ssl_server_credentials(pairs, ca.root_pem, require_client_auth=True)
    mtls_port = server.add_secure_port("127.0.0.1:0", mtls)
    server.start()
    stub.address = f"127.0.0.1:{port}"
    stub.mtls_address = f"127.0.0.1:{mtls_port}"
    try:
        yield stub
    finally:
        server.stop(None).wait()


def offline_identity(
    folder: Path, edge_id: str, command_keys: dict[str, bytes] | None = None
) -> IdentityStore:
    """``folder/identity`` as enrollment leaves it, made straight from a CA in ``folder/ca``
    (no registry): a certificate for ``edge_id`` and the given command keys."""
    ca = init_ca(folder / "ca", "Offline")
    store = IdentityStore(folder / "identity")
    generation, key = store.new_generation()
    identity = Identity("edge", edge_id)
    store.commit(
        generation,
        edge_id=edge_id,
        site="site-a",
        cert_pem=ca.issue_from_csr(make_csr(key, identity), identity),
        chain_pems=ca.chain_pems,
        trust_roots_pems=[ca.root_pem],
        command_keys=command_keys or {},
    )
    return store
