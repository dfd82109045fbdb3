"""Enrollment over one-way TLS, renewal over mTLS, the CRL, and the signed commands an
enrolled edge receives: against a real secure registry on 127.0.0.1."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from grpc import aio

from cloud_registry.api.command_envelope import command_payload
from cloud_registry.api.v1 import (
    commands_pb2,
    commands_pb2_grpc,
    common_pb2,
    security_pb2,
    security_pb2_grpc,
)
from security.commands import CommandVerifier
from security.errors import ReplayedCommand
from security.identity import Identity, identity_of, make_csr
from security.verify import verify_chain
from tests.cloud_registry.edge_client import EdgeClient, seed
from tests.cloud_registry.server_fixtures import SecureRegistry
from thing_models.messages import value_to_protobuf


def _enroll_stub(secure: SecureRegistry) -> tuple[grpc.Channel, Any]:
    channel = grpc.secure_channel(secure.enroll_address, secure.one_way())
    return channel, security_pb2_grpc.EnrollmentServiceStub(channel)  # type: ignore[no-untyped-call]


def _csr(edge_id: str) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, make_csr(key, Identity("edge", edge_id)).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _audit(secure: SecureRegistry, kind: str) -> list[Any]:
    return list(secure.storage.security.list_audit(kind=kind).items)


def enroll(secure: SecureRegistry, edge_id: str, site: str = "site-a") -> tuple[bytes, bytes, Any]:
    """(key PEM, certificate chain PEM, response) of a fresh enrollment of ``edge_id``."""
    token = secure.make_token(edge_id, site)
    key, csr = _csr(edge_id)
    channel, stub = _enroll_stub(secure)
    with channel:
        response = stub.Enroll(security_pb2.EnrollRequest(token=token, csr_pem=csr), timeout=10)
    chain = response.certificate_pem.encode() + "".join(response.chain_pem).encode()
    return _key_pem(key), chain, response


def test_enroll_issues_a_certificate_for_the_token_edge(secure_registry: SecureRegistry) -> None:
    _key, _chain, response = enroll(secure_registry, "edge-7", "site-b")
    assert (response.edge_id, response.site) == ("edge-7", "site-b")
    cert = response.certificate_pem.encode()
    assert identity_of(cert) == Identity("edge", "edge-7")
    now = datetime.now(UTC)
    verify_chain(
        cert,
        [c.encode() for c in response.chain_pem],
        [r.encode() for r in response.trust_roots_pem],
        now,
        expected=Identity("edge", "edge-7"),
    )
    days = (response.not_after_ms / 1000 - now.timestamp()) / 86400
    assert 29.9 < days <= 30.0
    assert len(response.command_keys_pem) == 1
    edge = secure_registry.storage.security.get_edge("edge-7")
    assert [c.not_after_ms for c in edge.certificates] == [response.not_after_ms]
    events = _audit(secure_registry, "enrolled")
    assert [e.subject for e in events] == ["edge:edge-7"]


def test_enrolled_edge_syncs_over_mtls_and_commands_are_signed(
    secure_registry: SecureRegistry,
) -> None:
    secure = secure_registry
    key, chain, response = enroll(secure, "edge-1")
    seed(secure.storage, {"edge-1": ["dev-1"]})
    commands: Any = commands_pb2_grpc.CommandServiceStub(secure.registry.channel)  # type: ignore[no-untyped-call]
    request = commands_pb2.SendCommandRequest(
        device_id="dev-1",
        kind=common_pb2.COMMAND_KIND_INVOKE_SERVICE,
        service="reboot",
        params={"delay_s": value_to_protobuf(5)},
    )

    async def scenario() -> common_pb2.Command:
        creds = grpc.ssl_channel_credentials(secure.root_pem, key, chain)
        async with aio.secure_channel(secure.address, creds) as channel:
            edge = EdgeClient(secure.address, "edge-1", devices=["dev-1"], channel=channel)
            async with edge:
                await asyncio.to_thread(commands.SendCommand, request, timeout=10)
                return await asyncio.wait_for(edge.commands.get(), 10)

    command = asyncio.run(scenario())
    keys = [load_pem_public_key(pem.encode()) for pem in response.command_keys_pem.values()]
    verifier = CommandVerifier(
        [k for k in keys if isinstance(k, ec.EllipticCurvePublicKey)], "edge-1"
    )
    verified = verifier.verify(command.envelope)
    assert (verified.edge_id, verified.device_id) == ("edge-1", "dev-1")
    assert verified.sequence == command.sequence > 0
    assert verified.payload == command_payload(command)
    assert verified.key_id.hex() in response.command_keys_pem
    with pytest.raises(ReplayedCommand):
        verifier.verify(command.envelope)
