"""Revocation reaches every replica through the database (both engines): an edge streaming to
replica B is cut off when the revocation is committed by another process's handle (as the
``cloud-registry edges revoke`` command does), and B refuses it from then on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc import aio

from cloud_registry.api.v1 import devices_pb2, devices_pb2_grpc, security_pb2, security_pb2_grpc
from cloud_registry.storage.base import Storage
from security.identity import Identity, make_csr
from tests.cloud_registry.edge_client import EdgeClient, seed
from tests.cloud_registry.server_fixtures import running_secure_registry


def _another_handle(request: pytest.FixtureRequest, storage: Storage, engine: str) -> Storage:
    if engine == "sqlite":
        from cloud_registry.storage.sqlite import SqliteStorage

        return SqliteStorage(storage.path)  # type: ignore[attr-defined]
    from cloud_registry.storage.postgres import PostgresStorage

    return PostgresStorage(request.getfixturevalue("fresh_postgres_dsn"), replica_id="other")


def test_revocation_closes_streams_on_other_replicas(
    request: pytest.FixtureRequest, storage: Storage, storage_engine: str, tmp_path: Path
) -> None:
    second = _another_handle(request, storage, storage_engine)
    operator = _another_handle(request, storage, storage_engine)
    ca = tmp_path / "ca"
    try:
        with (
            running_secure_registry(storage, ca, replica_id="a") as a,
            running_secure_registry(second, ca, replica_id="b") as b,
        ):
            seed(storage, {"edge-1": ["dev-1"]})
            token = a.make_token("edge-1")
            key = ec.generate_private_key(ec.SECP256R1())
            csr = make_csr(key, Identity("edge", "edge-1")).decode()
            with grpc.secure_channel(a.enroll_address, a.one_way()) as channel:
                stub: Any = security_pb2_grpc.EnrollmentServiceStub(channel)  # type: ignore[no-untyped-call]
                response = stub.Enroll(
                    security_pb2.EnrollRequest(token=token, csr_pem=csr), timeout=10
                )
            key_pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            chain = (response.certificate_pem + "".join(response.chain_pem)).encode()
            creds = grpc.ssl_channel_credentials(b.root_pem, key_pem, chain)

            async def scenario() -> tuple[grpc.StatusCode, str]:
                channel = aio.secure_channel(b.address, creds)
                async with channel, EdgeClient(b.address, "edge-1", channel=channel) as edge:
                    await asyncio.to_thread(
                        operator.security.revoke_edge, "edge-1", int(time.time() * 1000)
                    )
                    code = await edge.wait_end(timeout=15)
                    return code, edge.end_details

            code, details = asyncio.run(scenario())
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert "revoked" in details
            for replica in (a, b):
                with grpc.secure_channel(replica.address, creds) as channel:
                    hello: Any = devices_pb2_grpc.DeviceServiceStub(channel)  # type: ignore[no-untyped-call]
                    with pytest.raises(grpc.RpcError) as info:
                        hello.ListDevices(devices_pb2.ListDevicesRequest(), timeout=10)
                    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        second.close()
        operator.close()
