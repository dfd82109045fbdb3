"""The ``registry`` fixture: a real :class:`RegistryServer` on 127.0.0.1 (port 0) over the
``storage`` fixture, with synchronous gRPC stubs.

The server runs in its own event loop on a background thread; tests are plain synchronous
functions calling it through a blocking ``grpc`` channel (pytest-asyncio is not used). Helpers
publish the example models and register devices; :meth:`Registry.call` runs a coroutine on the
server's loop when a test needs to reach inside (e.g. to stop the server).

Secure mode: :func:`running_secure_registry` (fixture ``secure_registry``) makes a fresh CA in a
temporary folder (``cloud_registry.ca_admin``: CA, command key, server certificate for
127.0.0.1) and starts a replica with mutual TLS on ``address`` and one-way TLS on
``enroll_address``. :class:`SecureRegistry` gives ``(address, ca_dir, make_token)`` and more: its
``registry`` talks mTLS as an integrator with every scope (``ops``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from cloud_registry.api.v1 import (
    common_pb2,
    devices_pb2,
    devices_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    twins_pb2_grpc,
    watch_pb2_grpc,
)
from cloud_registry.ca_admin import init_registry_ca, issue_server_certificate
from cloud_registry.server.app import RegistryServer, build_server
from cloud_registry.server.context import RegistrySettings
from cloud_registry.server.tls import ServerSecurity
from cloud_registry.storage.base import DeviceFilter, Storage
from security.ca import CertificateAuthority, Clock, utc_now
from security.identity import Identity, make_csr
from security.tokens import new_token

__all__ = [
    "EXAMPLES",
    "METER",
    "Registry",
    "SecureRegistry",
    "error_info",
    "expect_error",
    "field_violations",
    "precondition_violations",
    "registry",
    "running_registry",
    "running_secure_registry",
    "secure_registry",
    "status_details",
]

T = TypeVar("T")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
METER = "community.energy/meter-3p"
#: Settings of test servers: loopback, port 0, a small message limit to test oversize requests.
TEST_SETTINGS = RegistrySettings(
    listen="127.0.0.1:0",
    max_message_bytes=4 * 1024 * 1024,
    max_concurrent_streams=16,
    storage_threads=4,
)


@dataclass
class Registry:
    """A running registry and blocking stubs to call it."""

    server: RegistryServer
    storage: Storage
    loop: asyncio.AbstractEventLoop
    channel: grpc.Channel
    channels: list[grpc.Channel] = field(default_factory=list)
    credentials: grpc.ChannelCredentials | None = None  # secure mode: the channel's TLS

    def __post_init__(self) -> None:
        # generated stubs are untyped: Any
        self.models: Any = models_pb2_grpc.ModelServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.devices: Any = devices_pb2_grpc.DeviceServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.twins: Any = twins_pb2_grpc.TwinServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.watch: Any = watch_pb2_grpc.WatchServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.health: Any = health_pb2_grpc.HealthStub(self.channel)

    @property
    def target(self) -> str:
        return self.server.address

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def new_channel(self, *, own_connection: bool = True) -> grpc.Channel:
        """Another channel (closed at teardown); ``own_connection``: not shared with others."""
        options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else []
        if self.credentials is not None:
            channel = grpc.secure_channel(self.target, self.credentials, options=options)
        else:
            channel = grpc.insecure_channel(self.target, options=options)
        self.channels.append(channel)
        return channel

    # ----------------------------------------------------------------- helpers

    def snapshot(self) -> tuple[Any, ...]:
        """Everything stored that a request could corrupt: models (every version), devices,
        twins. Compare before and after a hostile request."""
        storage = self.storage
        models = storage.list_models("", "", 1000).items
        versions = tuple(tuple(storage.list_model_versions(m.name)) for m in models)
        devices = storage.list_devices(DeviceFilter(), "", 1000).items
        twins = tuple(storage.get_twin(d.id) for d in devices)
        return versions, devices, twins

    def assert_serving(self) -> None:
        """The server still answers (health SERVING)."""
        response = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING

    def publish_file(self, path: Path | str) -> models_pb2.PublishModelResponse:
        text = Path(path).read_text(encoding="utf-8")
        response: models_pb2.PublishModelResponse = self.models.PublishModel(
            models_pb2.PublishModelRequest(document=text), timeout=30
        )
        return response

    def publish_meter(self) -> models_pb2.PublishModelResponse:
        return self.publish_file(EXAMPLES / "versions" / "energy-meter-3p-1.0.0.yaml")

    def register(
        self,
        device_id: str,
        *,
        model: str = f"{METER}@1.0.0",
        edge_id: str = "edge-1",
        site: str = "site-a",
        labels: dict[str, str] | None = None,
        building: str = "",
    ) -> common_pb2.Device:
        device: common_pb2.Device = self.devices.RegisterDevice(
            devices_pb2.RegisterDeviceRequest(
                device=common_pb2.Device(
                    id=device_id,
                    model=model,
                    edge_id=edge_id,
                    site=site,
                    building=building,
                    labels=labels or {},
                )
            ),
            timeout=10,
        )
        return device


def status_details(error: grpc.RpcError) -> Any:
    """The ``google.rpc.Status`` the server attached to a failed call (None if none)."""
    return rpc_status.from_call(error)  # type: ignore[arg-type]


def expect_error(code: grpc.StatusCode, method: Any, request: Any, **kwargs: Any) -> Any:
    """Call ``method(request)``; it must fail with ``code``. Returns the error (a grpc.Call)."""
    with pytest.raises(grpc.RpcError) as info:
        method(request, timeout=kwargs.pop("timeout", 30), **kwargs)
    error: Any = info.value
    assert error.code() == code, f"{error.code()}: {error.details()}"
    return error


def field_violations(error: Any) -> list[tuple[str, str]]:
    """(field, description) of the BadRequest detail of a failed call."""
    status = status_details(error)
    assert status is not None, "no rich status attached"
    out: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.extend((v.field, v.description) for v in bad.field_violations)
    return out


def precondition_violations(error: Any) -> list[tuple[str, str, str]]:
    """(type, subject, description) of the PreconditionFailure detail of a failed call."""
    status = status_details(error)
    assert status is not None, "no rich status attached"
    out: list[tuple[str, str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            out.extend((v.type, v.subject, v.description) for v in failure.violations)
    return out


def error_info(error: Any) -> tuple[str, dict[str, str]]:
    """(reason, metadata) of the ErrorInfo detail of a failed call (("", {}) if none)."""
    status = status_details(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason, dict(info.metadata)
    return "", {}


@contextmanager
def running_registry(
    storage: Storage,
    settings: RegistrySettings = TEST_SETTINGS,
    *,
    security: ServerSecurity | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    **changes: Any,
) -> Iterator[Registry]:
    """A registry serving ``storage`` on 127.0.0.1 (port 0) in a background event loop:
    plain text (``security`` None, the insecure mode the functional tests use), or secure
    with ``security``, its channel using ``credentials``."""
    settings = replace(settings, **changes)
    assert settings.listen.startswith("127.0.0.1:")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="registry-loop", daemon=True)
    thread.start()

    async def start() -> RegistryServer:
        server = build_server(storage, settings, security)
        await server.start()
        return server

    def call(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    server = call(start())
    if credentials is not None:
        channel = grpc.secure_channel(server.address, credentials)
    else:
        channel = grpc.insecure_channel(server.address)
    registry = Registry(server, storage, loop, channel, credentials=credentials)
    try:
        yield registry
    finally:
        for extra in registry.channels:
            extra.close()
        channel.close()
        try:
            call(server.stop(0.5))
        finally:
            call(loop.shutdown_asyncgens())
            call(loop.shutdown_default_executor())
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            loop.close()


@pytest.fixture
def registry(storage: Storage) -> Iterator[Registry]:
    """A running registry over the ``storage`` fixture (every engine)."""
    with running_registry(storage) as running:
        yield running


# --------------------------------------------------------------------------- secure mode


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class SecureRegistry:
    """A secure registry with a fresh CA; ``registry`` calls it as integrator ``ops`` (mTLS)."""

    registry: Registry
    ca_dir: Path
    security: ServerSecurity

    @property
    def address(self) -> str:
        """The mutual-TLS address (edge sync, Renew, integrators with certificates)."""
        return self.registry.server.address

    @property
    def enroll_address(self) -> str:
        """The one-way TLS address (Enroll, GetCrl, integrators with API keys)."""
        return self.registry.server.enroll_address

    @property
    def root_pem(self) -> bytes:
        return (self.ca_dir / "root.pem").read_bytes()

    @property
    def storage(self) -> Storage:
        return self.registry.storage

    def make_token(
        self, edge_id: str, site: str = "site-a", ttl: timedelta = timedelta(hours=1)
    ) -> str:
        """A one-time enrollment token for ``edge_id`` (as ``cloud-registry edges add``)."""
        text, record = new_token(edge_id, site, datetime.now(UTC), ttl=ttl)
        self.storage.security.add_edge(edge_id, site, record, int(time.time() * 1000))
        return text

    def issue(
        self, identity: Identity, *, clock: Clock = utc_now, validity: timedelta | None = None
    ) -> tuple[bytes, bytes]:
        """``(key PEM, certificate chain PEM)`` for ``identity`` from this CA (``clock``: the
        CA's time, to make certificates valid in the past or future)."""
        ca = CertificateAuthority.load(self.ca_dir, clock=clock)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = ca.issue_from_csr(
            make_csr(key, identity), identity, validity=validity or timedelta(days=30)
        )
        return _key_pem(key), cert + b"".join(ca.chain_pems)

    def credentials(self, identity: Identity, **kwargs: Any) -> grpc.ChannelCredentials:
        """Client TLS credentials with a fresh certificate for ``identity``."""
        key, chain = self.issue(identity, **kwargs)
        return grpc.ssl_channel_credentials(self.root_pem, key, chain)

    def one_way(self) -> grpc.ChannelCredentials:
        """Server-authenticated TLS only (enrollment, API keys)."""
        return grpc.ssl_channel_credentials(self.root_pem)


def make_test_ca(folder: Path, *, clock: Clock = utc_now) -> Path:
    """A CA folder with the command key and a server certificate for 127.0.0.1."""
    init_registry_ca(folder, "Test", clock=clock)
    issue_server_certificate(folder, ["127.0.0.1"], clock=clock)
    return folder


@contextmanager
def running_secure_registry(
    storage: Storage,
    folder: Path,
    *,
    clock: Clock = utc_now,
    **changes: Any,
) -> Iterator[SecureRegistry]:
    """A secure registry over ``storage`` with a new CA in ``folder`` (made if absent);
    ``clock`` is the registry's clock (certificate validity, tokens, envelopes)."""
    if not (folder / "root.pem").exists():
        make_test_ca(folder)
    security = ServerSecurity.from_ca_dir(folder, clock=clock)
    ca = CertificateAuthority.load(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    ops = Identity("integrator", "ops")
    cert = ca.issue_from_csr(make_csr(key, ops), ops)
    creds = grpc.ssl_channel_credentials(ca.root_pem, _key_pem(key), cert + b"".join(ca.chain_pems))
    changes.setdefault("enroll_listen", "127.0.0.1:0")
    with running_registry(storage, security=security, credentials=creds, **changes) as reg:
        yield SecureRegistry(reg, folder, security)


@pytest.fixture
def secure_registry(tmp_path: Path) -> Iterator[SecureRegistry]:
    """A secure registry over a fresh SQLite database, with a fresh CA in ``tmp_path/ca``.
    ``(address, ca_dir, make_token)`` are ``secure_registry.address``, ``.ca_dir`` and
    ``.make_token(edge_id, site="site-a")``; enroll at ``.enroll_address``."""
    from cloud_registry.storage.sqlite import SqliteStorage

    storage = SqliteStorage(tmp_path / "secure-registry.db")
    storage.migrate()
    try:
        with running_secure_registry(storage, tmp_path / "ca") as secure:
            yield secure
    finally:
        storage.close()
