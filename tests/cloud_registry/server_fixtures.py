"""The ``registry`` fixture: a real :class:`RegistryServer` on 127.0.0.1 (port 0) over the
``storage`` fixture, with synchronous gRPC stubs.

The server runs in its own event loop on a background thread; tests are plain synchronous
functions calling it through a blocking ``grpc`` channel (pytest-asyncio is not used). Helpers
publish the example models and register devices; :meth:`Registry.call` runs a coroutine on the
server's loop when a test needs to reach inside (e.g. to stop the server).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
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
from cloud_registry.server.app import RegistryServer, build_server
from cloud_registry.server.context import RegistrySettings
from cloud_registry.storage.base import DeviceFilter, Storage

__all__ = [
    "EXAMPLES",
    "METER",
    "Registry",
    "error_info",
    "expect_error",
    "field_violations",
    "precondition_violations",
    "registry",
    "running_registry",
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
    storage: Storage, settings: RegistrySettings = TEST_SETTINGS, **changes: Any
) -> Iterator[Registry]:
    """A registry serving ``storage`` on 127.0.0.1 (port 0) in a background event loop."""
    settings = replace(settings, **changes)
    assert settings.listen.startswith("127.0.0.1:")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="registry-loop", daemon=True)
    thread.start()

    async def start() -> RegistryServer:
        server = build_server(storage, settings)
        await server.start()
        return server

    def call(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    server = call(start())
    channel = grpc.insecure_channel(server.address)
    registry = Registry(server, storage, loop, channel)
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
