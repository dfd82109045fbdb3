"""Health checking, server reflection, the identity interceptor, shutdown, and ``serve``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from cloud_registry.api.v1 import devices_pb2, models_pb2, twins_pb2
from cloud_registry.server.app import SERVICE_NAMES
from cloud_registry.storage.base import EventEntry, IngestBatch, Storage
from tests.cloud_registry.server_fixtures import (
    METER,
    Registry,
    expect_error,
    running_registry,
)

REPO = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_reports_every_service_serving(registry: Registry) -> None:
    for name in ("", *SERVICE_NAMES):
        response = registry.health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert response.status == SERVING, name
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        registry.health.Check,
        health_pb2.HealthCheckRequest(service="no.such.Service"),
    )


def test_reflection_lists_and_describes_every_service(registry: Registry) -> None:
    database = ProtoReflectionDescriptorDatabase(registry.channel)
    services = set(database.get_services())
    assert set(SERVICE_NAMES) <= services
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    pool = DescriptorPool(database)
    models = pool.FindServiceByName("community.registry.v1.ModelService")
    assert {m.name for m in models.methods} >= {"PublishModel", "GetModel", "ExportModel"}
    watch = pool.FindServiceByName("community.registry.v1.WatchService")
    assert watch.methods_by_name["Watch"].server_streaming
    change = pool.FindMessageTypeByName("community.registry.v1.Change")
    assert "resume_token" in change.fields_by_name
    # the imported thing-model types resolve too (grpcurl needs them to encode requests)
    assert pool.FindMessageTypeByName("thingmodels.v1.Value").fields_by_name["int_value"]


def test_every_rpc_knows_its_caller(registry: Registry) -> None:
    registry.publish_meter()
    registry.register("m1")
    for number, (key, who) in enumerate(
        ((("x-edge-id", "edge-7"), "edge:edge-7"), (("x-principal", "ops"), "integrator:ops"))
    ):
        registry.storage.ingest(
            IngestBatch(
                "edge-1", number + 1, [], [EventEntry(f"e{number}", "m1", "x", "alert", 1)]
            ),
            2_000_000_000_000,
        )
        acked = registry.twins.AckAlarm(
            twins_pb2.AckAlarmRequest(event_id=f"e{number}"), metadata=(key,), timeout=10
        )
        assert acked.acknowledged_by == who
    anonymous = registry.storage.ingest(
        IngestBatch("edge-1", 9, [], [EventEntry("e9", "m1", "x", "alert", 1)]), 2_000_000_000_000
    )
    assert not anonymous.duplicate
    acked = registry.twins.AckAlarm(twins_pb2.AckAlarmRequest(event_id="e9"), timeout=10)
    assert acked.acknowledged_by == "integrator:anonymous"


def test_stopping_turns_health_not_serving_then_refuses_calls(storage: Storage) -> None:
    with running_registry(storage) as reg:
        stream = reg.health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)
        assert next(stream).status == SERVING
        stopper = threading.Thread(target=reg.call, args=(reg.server.stop(2.0),))
        stopper.start()
        assert next(stream).status == NOT_SERVING
        stopper.join(30)
        with pytest.raises(grpc.RpcError) as info:
            reg.devices.GetDevice(devices_pb2.GetDeviceRequest(id="x"), timeout=5)
        error: Any = info.value
        assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_two_replicas_bind_their_own_ports(storage: Storage) -> None:
    with running_registry(storage) as first, running_registry(storage) as second:
        assert first.server.port != second.server.port
        assert first.server.address == f"127.0.0.1:{first.server.port}"
        first.publish_meter()
        got = second.models.ListModelVersions(
            models_pb2.ListModelVersionsRequest(name=METER),
            timeout=10,
        )
        assert [v.version for v in got.versions] == ["1.0.0"]


_SERVE = """
import asyncio, sys
from cloud_registry.server.app import serve
from cloud_registry.server.context import RegistrySettings

def ready(server):
    print("ADDRESS", server.address, flush=True)

asyncio.run(serve(sys.argv[1], RegistrySettings(listen="127.0.0.1:0"), grace_s=2.0, ready=ready))
print("STOPPED", flush=True)
"""


def test_serve_runs_until_sigterm_and_closes_storage(tmp_path: Path) -> None:
    database = tmp_path / "registry.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE, f"sqlite:///{database}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("ADDRESS 127.0.0.1:"), line + (
            process.stderr.read() if process.stderr else ""
        )
        address = line.split()[1]
        with grpc.insecure_channel(address) as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
            assert status == SERVING
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert "STOPPED" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert database.exists()
