"""Every refusal of a secure registry, over real TLS on 127.0.0.1, and its audit event.

Certificates the TLS layer itself refuses (no certificate, unknown CA, self-signed, expired in
real time) fail the handshake: grpcio then gives the server no call, so nothing can be
audited (see cloud_registry.server.tls). Everything the registry decides is audited: validity
with its own clock and skew (tested at both edges), revocation, identity, authorization.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud_registry.api.v1 import (
    devices_pb2,
    devices_pb2_grpc,
    security_pb2,
    security_pb2_grpc,
    twins_pb2,
    twins_pb2_grpc,
    watch_pb2,
    watch_pb2_grpc,
)
from cloud_registry.ca_admin import new_api_key
from cloud_registry.storage.security_store import ApiKeyRecord
from cloud_registry.storage.sqlite import SqliteStorage
from security.ca import init_ca
from security.identity import Identity, make_csr
from security.verify import DEFAULT_SKEW
from tests.cloud_registry.edge_client import EdgeClient, report, seed
from tests.cloud_registry.server_fixtures import SecureRegistry, running_secure_registry


class Clock:
    """The registry's clock: real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def secure(tmp_path: Path, clock: Clock) -> Iterator[SecureRegistry]:
    storage = SqliteStorage(tmp_path / "registry.db")
    storage.migrate()
    try:
        with running_secure_registry(storage, tmp_path / "ca", clock=clock) as running:
            yield running
    finally:
        storage.close()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _audit(secure: SecureRegistry, kind: str, subject: str = "") -> list[Any]:
    return list(secure.storage.security.list_audit(kind=kind, subject=subject).items)


def _health(target: str, creds: grpc.ChannelCredentials) -> grpc.StatusCode:
    with grpc.secure_channel(target, creds) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def _list_devices(target: str, creds: grpc.ChannelCredentials, **kw: Any) -> grpc.StatusCode:
    with grpc.secure_channel(target, creds) as channel:
        stub: Any = devices_pb2_grpc.DeviceServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            stub.ListDevices(devices_pb2.ListDevicesRequest(), timeout=5, **kw)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


# --------------------------------------------------------------------------- TLS layer


def test_mtls_port_refuses_a_client_without_certificate(secure: SecureRegistry) -> None:
    assert _health(secure.address, secure.one_way()) == grpc.StatusCode.UNAVAILABLE
    assert _health(secure.enroll_address, secure.one_way()) == grpc.StatusCode.OK


def test_unknown_ca_is_refused(secure: SecureRegistry, tmp_path: Path) -> None:
    other = init_ca(tmp_path / "other", "Other")
    key = ec.generate_private_key(ec.SECP256R1())
    ident = Identity("edge", "edge-1")
    cert = other.issue_from_csr(make_csr(key, ident), ident)
    creds = grpc.ssl_channel_credentials(secure.root_pem, _key_pem(key), cert + other.chain_pems[0])
    assert _health(secure.address, creds) == grpc.StatusCode.UNAVAILABLE


def test_self_signed_certificate_is_refused(secure: SecureRegistry) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("urn:community-iot:edge:edge-1")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    creds = grpc.ssl_channel_credentials(secure.root_pem, _key_pem(key), pem)
    assert _health(secure.address, creds) == grpc.StatusCode.UNAVAILABLE


def test_certificate_expired_in_real_time_is_refused(secure: SecureRegistry) -> None:
    past = datetime.now(UTC) - timedelta(days=2)
    creds = secure.credentials(
        Identity("integrator", "old"), clock=lambda: past, validity=timedelta(days=1)
    )
    assert _health(secure.address, creds) == grpc.StatusCode.UNAVAILABLE


# --------------------------------------------------------------------------- validity, skew


@pytest.mark.parametrize(
    ("edge", "beyond", "expected"),
    [
        ("after", -timedelta(seconds=5), grpc.StatusCode.OK),
        ("after", timedelta(seconds=5), grpc.StatusCode.UNAUTHENTICATED),
        ("before", -timedelta(seconds=5), grpc.StatusCode.OK),
        ("before", timedelta(seconds=5), grpc.StatusCode.UNAUTHENTICATED),
    ],
    ids=["expiry-within-skew", "expired-beyond-skew", "start-within-skew", "not-yet-beyond-skew"],
)
def test_clock_skew_at_the_edges_of_validity(
    secure: SecureRegistry, clock: Clock, edge: str, beyond: timedelta, expected: grpc.StatusCode
) -> None:
    """The registry's own clock decides, with DEFAULT_SKEW (5 min) at both ends."""
    validity = timedelta(hours=1)
    issued = datetime.now(UTC)
    creds = secure.credentials(Identity("integrator", "ops2"), validity=validity)
    if edge == "after":
        clock.offset = validity + DEFAULT_SKEW + beyond
    else:
        clock.offset = -(DEFAULT_SKEW + beyond)
    # the certificate's not_before is 'issued' (the CA's clock was moved after it issued)
    del issued
    assert _list_devices(secure.address, creds) == expected
    refused = _audit(secure, "certificate_refused")
    if expected is grpc.StatusCode.OK:
        assert refused == []
    else:
        assert len(refused) == 1
        assert "expired" in refused[0].detail or "not valid before" in refused[0].detail


# --------------------------------------------------------------------------- enrollment tokens


def _enroll(secure: SecureRegistry, token: str, edge_id: str = "edge-1") -> grpc.StatusCode:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(key, Identity("edge", edge_id)).decode()
    with grpc.secure_channel(secure.enroll_address, secure.one_way()) as channel:
        stub: Any = security_pb2_grpc.EnrollmentServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            stub.Enroll(security_pb2.EnrollRequest(token=token, csr_pem=csr), timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_reused_token_is_refused_and_audited(secure: SecureRegistry) -> None:
    token = secure.make_token("edge-1")
    assert _enroll(secure, token) == grpc.StatusCode.OK
    assert _enroll(secure, token) == grpc.StatusCode.UNAUTHENTICATED
    [event] = _audit(secure, "token_refused")
    assert event.subject == "edge:edge-1"
    assert "already used" in event.detail


def test_expired_token_is_refused_and_audited(secure: SecureRegistry, clock: Clock) -> None:
    token = secure.make_token("edge-1", ttl=timedelta(minutes=10))
    clock.offset = timedelta(minutes=11)
    assert _enroll(secure, token) == grpc.StatusCode.UNAUTHENTICATED
    [event] = _audit(secure, "token_refused")
    assert "expired" in event.detail


@pytest.mark.parametrize(
    "token",
    [
        "",
        "nonsense",
        "ciot1.0123456789abcdef." + "A" * 43,
        "ciot1.0123456789abcdef." + "A" * 42 + "\x00",
        "\u202e" * 5000,
    ],
    ids=["empty", "garbage", "unknown", "nul", "huge-unicode"],
)
def test_unknown_or_malformed_token_is_refused(secure: SecureRegistry, token: str) -> None:
    assert _enroll(secure, token) == grpc.StatusCode.UNAUTHENTICATED
    assert len(_audit(secure, "token_refused")) == 1
    secure.registry.assert_serving()


def test_wrong_secret_for_a_known_token_is_refused(secure: SecureRegistry) -> None:
    token = secure.make_token("edge-1")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert _enroll(secure, forged) == grpc.StatusCode.UNAUTHENTICATED
    assert _enroll(secure, token) == grpc.StatusCode.OK


@pytest.mark.parametrize(
    "csr", ["", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"]
)
def test_bad_csr_is_invalid_argument_and_keeps_the_token(secure: SecureRegistry, csr: str) -> None:
    token = secure.make_token("edge-1")
    with grpc.secure_channel(secure.enroll_address, secure.one_way()) as channel:
        stub: Any = security_pb2_grpc.EnrollmentServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as info:
            stub.Enroll(security_pb2.EnrollRequest(token=token, csr_pem=csr), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _enroll(secure, token) == grpc.StatusCode.OK


# --------------------------------------------------------------------------- edges


def _edge_creds(secure: SecureRegistry, edge_id: str, site: str = "site-a") -> Any:
    """Enroll ``edge_id`` (through the API) and return its mTLS credentials."""
    token = secure.make_token(edge_id, site)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(key, Identity("edge", edge_id)).decode()
    with grpc.secure_channel(secure.enroll_address, secure.one_way()) as channel:
        stub: Any = security_pb2_grpc.EnrollmentServiceStub(channel)  # type: ignore[no-untyped-call]
        response = stub.Enroll(security_pb2.EnrollRequest(token=token, csr_pem=csr), timeout=10)
    chain = (response.certificate_pem + "".join(response.chain_pem)).encode()
    return grpc.ssl_channel_credentials(secure.root_pem, _key_pem(key), chain)


async def _sync_end(
    secure: SecureRegistry, creds: Any, edge_id: str, devices: list[str]
) -> tuple[grpc.StatusCode, str]:
    async with aio.secure_channel(secure.address, creds) as channel:
        edge = EdgeClient(secure.address, edge_id, devices=devices, channel=channel)
        with contextlib.suppress(RuntimeError):
            await edge.connect()
        code = await edge.wait_end()
        details = edge.end_details
        await edge.close()
        return code, details


def test_another_edges_certificate_is_refused_in_the_hello(secure: SecureRegistry) -> None:
    creds = _edge_creds(secure, "edge-1")
    secure.make_token("edge-2")
    code, details = asyncio.run(_sync_end(secure, creds, "edge-2", []))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "edge-1" in details
    assert "edge-2" in details
    [event] = _audit(secure, "access_refused", "edge:edge-1")
    assert "named edge edge-2" in event.detail


def test_edge_may_not_call_integrator_apis(secure: SecureRegistry) -> None:
    creds = _edge_creds(secure, "edge-1")
    assert _list_devices(secure.address, creds) == grpc.StatusCode.PERMISSION_DENIED
    [event] = _audit(secure, "access_refused", "edge:edge-1")
    assert "DeviceService/ListDevices" in event.detail


def test_edge_writes_only_its_own_devices(secure: SecureRegistry) -> None:
    seed(secure.storage, {"edge-1": ["dev-1"], "edge-2": ["dev-2"]})
    creds = _edge_creds(secure, "edge-1")

    async def scenario() -> Any:
        channel = aio.secure_channel(secure.address, creds)
        async with channel, EdgeClient(secure.address, "edge-1", channel=channel) as edge:
            await edge.send_batch(
                1,
                [
                    report("dev-1", {"temperature": 20.0}),
                    report("dev-2", {"temperature": 99.0}),
                ],
            )
            return await edge.wait_ack(1)

    ack = asyncio.run(scenario())
    assert ack.stored == 1
    assert len(ack.rejected) == 1
    assert "dev-2" in ack.rejected[0]
    assert "temperature" not in secure.storage.get_twin("dev-2").reported


def test_revoked_edge_new_connection_fails_and_open_stream_closes(secure: SecureRegistry) -> None:
    seed(secure.storage, {"edge-1": ["dev-1"]})
    creds = _edge_creds(secure, "edge-1")

    async def scenario() -> tuple[grpc.StatusCode, str]:
        channel = aio.secure_channel(secure.address, creds)
        async with channel, EdgeClient(secure.address, "edge-1", channel=channel) as edge:
            serials = await asyncio.to_thread(
                secure.storage.security.revoke_edge, "edge-1", int(time.time() * 1000)
            )
            assert len(serials) == 1
            code = await edge.wait_end(timeout=10)
            return code, edge.end_details

    code, details = asyncio.run(scenario())
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in details
    assert _list_devices(secure.address, creds) == grpc.StatusCode.UNAUTHENTICATED
    code, _ = asyncio.run(_sync_end(secure, creds, "edge-1", []))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    refused = _audit(secure, "certificate_refused")
    assert refused
    assert all("revoked" in e.detail for e in refused)
    # the CRL lists the serial
    with grpc.secure_channel(secure.enroll_address, secure.one_way()) as channel:
        stub: Any = security_pb2_grpc.EnrollmentServiceStub(channel)  # type: ignore[no-untyped-call]
        crl = stub.GetCrl(security_pb2.GetCrlRequest(), timeout=10).crl_pem.encode()
    listed = {e.serial_number for e in x509.load_pem_x509_crl(crl)}
    edge = secure.storage.security.get_edge("edge-1")
    assert {int(c.serial, 16) for c in edge.certificates} == listed


def test_renew_over_mtls_issues_a_new_certificate(secure: SecureRegistry) -> None:
    creds = _edge_creds(secure, "edge-1")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(key, Identity("edge", "edge-1")).decode()
    with grpc.secure_channel(secure.address, creds) as channel:
        stub: Any = security_pb2_grpc.EnrollmentServiceStub(channel)  # type: ignore[no-untyped-call]
        response = stub.Renew(security_pb2.RenewRequest(csr_pem=csr), timeout=10)
    assert response.edge_id == "edge-1"
    assert len(secure.storage.security.get_edge("edge-1").certificates) == 2
    [event] = _audit(secure, "renewed")
    assert event.subject == "edge:edge-1"


def test_integrator_may_not_renew(secure: SecureRegistry) -> None:
    stub: Any = security_pb2_grpc.EnrollmentServiceStub(secure.registry.channel)  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.RpcError) as info:
        stub.Renew(security_pb2.RenewRequest(csr_pem=""), timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_integrator_certificate_may_not_sync_as_an_edge(secure: SecureRegistry) -> None:
    creds = secure.credentials(Identity("integrator", "sneaky"))
    secure.make_token("edge-1")
    code, _ = asyncio.run(_sync_end(secure, creds, "edge-1", []))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    [event] = _audit(secure, "access_refused", "integrator:sneaky")
    assert "edges only" in event.detail


# --------------------------------------------------------------------------- API keys


def _api_key(secure: SecureRegistry, name: str, site: str, scopes: set[str]) -> str:
    text, key_id, digest = new_api_key()
    secure.storage.security.add_api_key(
        ApiKeyRecord(key_id, name, site, frozenset(scopes), digest, 1)
    )
    return text


def _twin(secure: SecureRegistry, key: str, device_id: str) -> grpc.StatusCode:
    with grpc.secure_channel(secure.enroll_address, secure.one_way()) as channel:
        stub: Any = twins_pb2_grpc.TwinServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            stub.GetTwin(
                twins_pb2.GetTwinRequest(device_id=device_id),
                timeout=10,
                metadata=(("x-api-key", key),),
            )
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_api_key_with_scope_reads_its_site(secure: SecureRegistry) -> None:
    seed(secure.storage, {"edge-1": ["dev-1"]})  # seeded devices are in site s1
    key = _api_key(secure, "dash", "s1", {"read-twins"})
    assert _twin(secure, key, "dev-1") == grpc.StatusCode.OK
    assert _audit(secure, "access_refused") == []


def test_cross_site_access_is_denied_and_audited(secure: SecureRegistry) -> None:
    seed(secure.storage, {"edge-1": ["dev-1"]})
    key = _api_key(secure, "other-site", "s2", {"read-twins"})
    assert _twin(secure, key, "dev-1") == grpc.StatusCode.PERMISSION_DENIED
    [event] = _audit(secure, "access_refused", "integrator:other-site")
    assert "site 's1'" in event.detail


def test_missing_scope_is_denied_and_audited(secure: SecureRegistry) -> None:
    seed(secure.storage, {"edge-1": ["dev-1"]})
    key = _api_key(secure, "models-only", "s1", {"read-models"})
    assert _twin(secure, key, "dev-1") == grpc.StatusCode.PERMISSION_DENIED
    [event] = _audit(secure, "access_refused", "integrator:models-only")
    assert "lacks scope read-twins" in event.detail


@pytest.mark.parametrize(
    "key",
    ["nonsense", "ciotk1.0123456789abcdef." + "A" * 43, "", "Bearer"],
    ids=["garbage", "unknown", "empty", "bearer-word"],
)
def test_bad_api_key_is_unauthenticated_and_audited(secure: SecureRegistry, key: str) -> None:
    seed(secure.storage, {"edge-1": ["dev-1"]})
    assert _twin(secure, key, "dev-1") == grpc.StatusCode.UNAUTHENTICATED
    assert len(_audit(secure, "access_refused")) == 1


def test_wrong_secret_of_a_known_api_key_is_refused(secure: SecureRegistry) -> None:
    seed(secure.storage, {"edge-1": ["dev-1"]})
    key = _api_key(secure, "dash", "s1", {"read-twins"})
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert _twin(secure, forged, "dev-1") == grpc.StatusCode.UNAUTHENTICATED


def test_audit_log_is_queryable_with_the_admin_scope(secure: SecureRegistry) -> None:
    seed(secure.storage, {"edge-1": ["dev-1"]})
    _twin(secure, "nonsense", "dev-1")
    stub: Any = security_pb2_grpc.SecurityAdminServiceStub(secure.registry.channel)  # type: ignore[no-untyped-call]
    response = stub.ListAuditEvents(
        security_pb2.ListAuditEventsRequest(kind="access_refused"), timeout=10
    )
    assert [e.kind for e in response.events] == ["access_refused"]
    key = _api_key(secure, "reader", "s1", {"read-twins"})
    with grpc.secure_channel(secure.enroll_address, secure.one_way()) as channel:
        keyed: Any = security_pb2_grpc.SecurityAdminServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as info:
            keyed.ListAuditEvents(
                security_pb2.ListAuditEventsRequest(), timeout=10, metadata=(("x-api-key", key),)
            )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("page_size", "page_token"),
    [(-1, ""), (1001, ""), (10, "abc"), (10, "9" * 40), (10, "-5")],
)
def test_list_audit_events_refuses_bad_paging(
    secure: SecureRegistry, page_size: int, page_token: str
) -> None:
    stub: Any = security_pb2_grpc.SecurityAdminServiceStub(secure.registry.channel)  # type: ignore[no-untyped-call]
    request = security_pb2.ListAuditEventsRequest(page_size=page_size, page_token=page_token)
    with pytest.raises(grpc.RpcError) as info:
        stub.ListAuditEvents(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_list_audit_events_pages(secure: SecureRegistry) -> None:
    for _ in range(3):
        _twin(secure, "nonsense", "dev-1")
    stub: Any = security_pb2_grpc.SecurityAdminServiceStub(secure.registry.channel)  # type: ignore[no-untyped-call]
    first = stub.ListAuditEvents(security_pb2.ListAuditEventsRequest(page_size=2), timeout=10)
    assert len(first.events) == 2
    rest = stub.ListAuditEvents(
        security_pb2.ListAuditEventsRequest(page_size=2, page_token=first.next_page_token),
        timeout=10,
    )
    assert len(rest.events) == 1
    assert rest.next_page_token == ""
    assert first.events[1].id < rest.events[0].id


def test_watch_never_shows_revocations(secure: SecureRegistry) -> None:
    """edge_revoked rides the change feed between replicas but is not a Watch change."""
    secure.make_token("edge-1")
    # real times: the change pruner drops changes older than the retention
    secure.storage.security.revoke_edge("edge-1", int(time.time() * 1000))
    secure.registry.publish_meter()
    stub: Any = watch_pb2_grpc.WatchServiceStub(secure.registry.channel)  # type: ignore[no-untyped-call]
    stream = stub.Watch(watch_pb2.WatchRequest(resume_token="0"), timeout=10)
    try:
        first = next(stream)
    finally:
        stream.cancel()
    assert first.resume_token == "2"
    assert first.kind == watch_pb2.CHANGE_KIND_MODEL_PUBLISHED
