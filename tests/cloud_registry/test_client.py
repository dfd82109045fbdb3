"""The registry client (sync and async) against a real registry on 127.0.0.1 (SQLite).

Every exception is provoked by the real condition (an unknown id, a duplicate, a stale
revision, an invalid model, a closed port, a waited command, a pruned resume token, an
oversized message); the status codes the registry never sends today come from a small real
gRPC server that answers with them.
"""

from __future__ import annotations

import ast
import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

import cloud_registry.api as api
from cloud_registry.api import (
    AlreadyExists,
    AsyncRegistryClient,
    Change,
    ChangeKind,
    Command,
    CommandKind,
    CommandStatus,
    DeadlineExceeded,
    Device,
    Event,
    ExportedModel,
    History,
    InvalidArgument,
    Location,
    Model,
    ModelDiff,
    ModelSummary,
    NotFound,
    OutOfRange,
    Page,
    PermissionDenied,
    PreconditionFailed,
    PropertyState,
    PublishedModel,
    RegistryClient,
    RegistryError,
    ResourceExhausted,
    StaleRevision,
    Twin,
    TwinChange,
    Unauthenticated,
    Unavailable,
)
from cloud_registry.storage.base import EventEntry, IngestBatch, ReportedValue, Storage
from cloud_registry.storage.sqlite import SqliteStorage
from tests.cloud_registry.server_fixtures import TEST_SETTINGS, Registry, running_registry

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
METER_YAML = EXAMPLES / "models" / "energy-meter-3p.yaml"
METER = "community.energy/meter-3p"
METER_REF = f"{METER}@1.0.0"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def sqlite_storage(tmp_path: Path) -> Iterator[Storage]:
    storage = SqliteStorage(tmp_path / "registry.db")
    storage.migrate()
    try:
        yield storage
    finally:
        storage.close()


@pytest.fixture
def reg(sqlite_storage: Storage) -> Iterator[Registry]:
    with running_registry(sqlite_storage) as running:
        yield running


@pytest.fixture
def client(reg: Registry) -> Iterator[RegistryClient]:
    with RegistryClient(reg.target, metadata=[("x-principal", "tests")]) as c:
        yield c


@pytest.fixture
def meter(client: RegistryClient) -> Model:
    return client.publish_model(METER_YAML.read_text(encoding="utf-8")).model


def _register(client: RegistryClient, device_id: str, **kw: Any) -> Device:
    args: dict[str, Any] = {"model": METER_REF, "edge_id": "edge-1", "site": "site-a"}
    args.update(kw)
    return client.register_device(device_id, **args)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- models


def test_publish_and_read_models_typed(client: RegistryClient) -> None:
    document = METER_YAML.read_text(encoding="utf-8")
    published = client.publish_model(document)
    assert isinstance(published, PublishedModel)
    assert published.unchanged is False
    model = published.model
    assert (model.name, model.version, model.ref) == (METER, "1.0.0", METER_REF)
    assert model.property_count == 14
    assert model.event_count == 1
    assert model.service_count == 1
    assert model.published_ms > 0

    again = client.publish_model(document)
    assert again.unchanged is True

    newest = client.get_model(METER)
    exact = client.get_model(METER_REF)
    assert newest == exact
    assert "voltage_a" in exact.document_yaml

    page = client.list_models()
    assert isinstance(page, Page)
    assert page.next_page_token == ""
    assert page.items == (ModelSummary(METER, "1.0.0", model.title, model.vendor, 1),)

    versions = client.list_model_versions(METER)
    assert [v.version for v in versions] == ["1.0.0"]
    assert all(isinstance(v, Model) for v in versions)

    exported = client.export_model(METER_REF, "wot-tm")
    assert isinstance(exported, ExportedModel)
    assert json.loads(exported.document)["title"] == model.title
    assert exported.media_type


def test_dry_run_stores_nothing(client: RegistryClient) -> None:
    result = client.publish_model(METER_YAML.read_text(encoding="utf-8"), dry_run=True)
    assert result.model.ref == METER_REF
    with pytest.raises(NotFound):
        client.get_model(METER)


def test_diff_models(client: RegistryClient, meter: Model) -> None:
    text = (EXAMPLES / "versions" / "energy-meter-3p-1.1.0.yaml").read_text(encoding="utf-8")
    client.publish_model(text.replace('version: "1.1.0"', 'version: "2.0.0"'))
    diff = client.diff_models(METER_REF, f"{METER}@2.0.0")
    assert isinstance(diff, ModelDiff)
    assert (diff.required, diff.declared, diff.ok) == ("major", "major", True)
    assert {c.severity for c in diff.changes} >= {"major", "minor"}


def test_iter_models_walks_every_page(client: RegistryClient) -> None:
    base = METER_YAML.read_text(encoding="utf-8")
    names = [f"community.test/meter-{i}" for i in range(5)]
    for name in names:
        client.publish_model(base.replace(f"model: {METER}", f"model: {name}"))
    first = client.list_models("community.test/", page_size=2)
    assert len(first) == 2
    assert first.next_page_token
    assert [m.name for m in client.iter_models("community.test/", page_size=2)] == names


# --------------------------------------------------------------------------- errors


def test_invalid_model_has_violations(client: RegistryClient) -> None:
    bad = 'model: x.y/z\nversion: "1.0.0"\nproperties:\n  - {id: a, type: floaty}\n'
    with pytest.raises(InvalidArgument) as info:
        client.publish_model(bad)
    error = info.value
    assert error.code == "INVALID_ARGUMENT"
    assert isinstance(error.__cause__, grpc.RpcError)
    assert [v.field for v in error.violations] == ["properties[0].type"]
    assert "floaty" in error.violations[0].description or "type" in error.violations[0].description


def test_invalid_arguments_list_every_field(client: RegistryClient, meter: Model) -> None:
    _register(client, "m1")
    with pytest.raises(InvalidArgument) as info:
        client.set_desired("m1", {"relay_closed": 3, "nope": 1})
    fields = sorted(v.field for v in info.value.violations)
    assert fields == ["desired.nope", "desired.relay_closed"]
    assert "desired.relay_closed" in str(info.value)


def test_version_bump_too_small_is_precondition_not_stale(
    client: RegistryClient, meter: Model
) -> None:
    text = (EXAMPLES / "versions" / "energy-meter-3p-1.1.0.yaml").read_text(encoding="utf-8")
    with pytest.raises(PreconditionFailed) as info:
        client.publish_model(text)
    assert not isinstance(info.value, StaleRevision)
    assert info.value.code == "FAILED_PRECONDITION"
    assert info.value.violations  # what needs the bigger bump


def test_already_exists(client: RegistryClient, meter: Model) -> None:
    _register(client, "m1")
    with pytest.raises(AlreadyExists):
        _register(client, "m1")
    other = METER_YAML.read_text(encoding="utf-8").replace(
        "title: Three-phase energy meter", "title: Another title", 1
    )
    with pytest.raises(AlreadyExists):
        client.publish_model(other)


def test_not_found(client: RegistryClient, meter: Model) -> None:
    with pytest.raises(NotFound) as info:
        client.get_device("ghost")
    assert info.value.code == "NOT_FOUND"
    with pytest.raises(NotFound):
        client.get_model(f"{METER}@9.9.9")
    with pytest.raises(NotFound):
        client.get_twin("ghost")
    with pytest.raises(NotFound):
        client.get_command("01ARZ3NDEKTSV4RRFFQ69G5FAV")


def test_stale_revision(client: RegistryClient, meter: Model) -> None:
    device = _register(client, "m1", labels={"floor": "1"})
    updated = client.update_device(replace(device, labels={"floor": "2"}), update_mask=["labels"])
    assert updated.revision == device.revision + 1
    with pytest.raises(StaleRevision) as info:
        client.update_device(replace(device, building="B"))  # read before the update
    assert isinstance(info.value, PreconditionFailed)
    assert info.value.current == updated.revision
    with pytest.raises(StaleRevision):
        client.delete_device("m1", expected_revision=device.revision)
    twin = client.set_desired("m1", {"relay_closed": True})
    with pytest.raises(StaleRevision):
        client.set_desired("m1", {"relay_closed": False}, expected_revision=twin.revision + 5)


def test_unavailable_when_nothing_listens() -> None:
    with RegistryClient(f"127.0.0.1:{_free_port()}", timeout=5) as c:
        started = time.monotonic()
        with pytest.raises(Unavailable) as info:
            c.get_model(METER)
        assert time.monotonic() - started < 5
    assert info.value.code == "UNAVAILABLE"
    with pytest.raises(RuntimeError, match="closed"):
        c.get_model(METER)


def test_unavailable_after_the_server_stopped(sqlite_storage: Storage) -> None:
    with running_registry(sqlite_storage) as running:
        c = RegistryClient(running.target)
        assert list(c.iter_models()) == []
        running.call(running.server.stop(0))
        with pytest.raises(Unavailable):
            c.list_models()
        c.close()


def test_deadline_exceeded_names_the_pending_command(client: RegistryClient, meter: Model) -> None:
    _register(client, "m1")
    with pytest.raises(DeadlineExceeded) as info:
        client.send_command("m1", set_properties={"relay_closed": True}, wait=True, timeout=0.3)
    command = client.get_command(info.value.command_id)
    assert command.status is CommandStatus.QUEUED


def test_out_of_range_for_a_pruned_resume_token(client: RegistryClient, reg: Registry) -> None:
    client.publish_model(METER_YAML.read_text(encoding="utf-8"))
    _register(client, "m1")
    _register(client, "m2")
    assert reg.storage.prune_changes(_now_ms() + 1000) >= 2
    _register(client, "m3")
    with client.watch(resume_token="1") as stream, pytest.raises(OutOfRange) as info:
        next(stream)
    assert info.value.metadata.get("oldest_token")


def test_resource_exhausted_for_an_oversized_message(client: RegistryClient) -> None:
    huge = "x" * (TEST_SETTINGS.max_message_bytes + 1024)
    with pytest.raises(ResourceExhausted):
        client.publish_model(huge)


def test_invalid_resume_token_and_client_side_checks(client: RegistryClient) -> None:
    with client.watch(resume_token="not-a-token") as stream, pytest.raises(InvalidArgument) as e:
        next(stream)
    assert [v.field for v in e.value.violations] == ["resume_token"]
    with pytest.raises(ValueError, match="exactly one"):
        client.send_command("m1", set_properties={"a": 1}, service="reboot")
    with pytest.raises(ValueError, match="exactly one"):
        client.send_command("m1")
    with pytest.raises(ValueError, match="offline"):
        client.send_command("m1", service="reboot", offline="later")  # type: ignore[arg-type]


# The codes the registry does not send today, from a real gRPC server that answers with them.
_CODES: list[tuple[grpc.StatusCode, type[RegistryError]]] = [
    (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
    (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
    (grpc.StatusCode.OUT_OF_RANGE, OutOfRange),
    (grpc.StatusCode.INTERNAL, RegistryError),
    (grpc.StatusCode.DATA_LOSS, RegistryError),
    (grpc.StatusCode.UNIMPLEMENTED, RegistryError),
]


@pytest.fixture(scope="module")
def refusing_server() -> Iterator[str]:
    """A gRPC server whose every unary method fails with the code named in ``x-code``."""

    def behavior(request: bytes, context: grpc.ServicerContext) -> bytes:
        value = dict(context.invocation_metadata()).get("x-code", "INTERNAL")
        code = value.decode() if isinstance(value, bytes) else value
        context.abort(grpc.StatusCode[code], f"refused with {code}")

    class Handler(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_unary_rpc_method_handler(behavior)

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((Handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait()


@pytest.mark.parametrize(("code", "exception"), _CODES, ids=[c.name for c, _ in _CODES])
def test_every_status_code_maps_to_its_exception(
    refusing_server: str, code: grpc.StatusCode, exception: type[RegistryError]
) -> None:
    client = RegistryClient(refusing_server, metadata=[("x-code", code.name)])
    with client, pytest.raises(exception) as info:
        client.get_device("d1")
    assert type(info.value) is exception
    assert info.value.code == code.name
    assert info.value.message == f"refused with {code.name}"
    if exception is RegistryError:
        assert str(info.value).startswith(f"{code.name}: ")

    async def run() -> None:
        async with AsyncRegistryClient(refusing_server, metadata=[("x-code", code.name)]) as c:
            with pytest.raises(exception):
                await c.get_device("d1")

    asyncio.run(run())


# --------------------------------------------------------------------------- devices


def test_device_lifecycle(client: RegistryClient, meter: Model) -> None:
    location = Location(latitude=48.85, longitude=2.35, floor="2", room="boiler")
    device = _register(client, "m1", building="B1", labels={"zone": "east"}, location=location)
    assert isinstance(device, Device)
    assert (device.id, device.model, device.edge_id, device.site) == (
        "m1",
        METER_REF,
        "edge-1",
        "site-a",
    )
    assert device.labels == {"zone": "east"}
    assert device.location == location
    assert device.revision == 1
    assert device.created_ms > 0
    assert device.online is False
    assert client.get_device("m1") == device

    moved = client.move_device("m1", "edge-2", expected_revision=1)
    assert moved.edge_id == "edge-2"
    assert moved.revision == 2
    relabeled = client.update_device(
        replace(moved, labels={"zone": "west"}, building="ignored"), update_mask=["labels"]
    )
    assert relabeled.labels == {"zone": "west"}
    assert relabeled.building == "B1"

    client.delete_device("m1", expected_revision=relabeled.revision)
    with pytest.raises(NotFound):
        client.get_device("m1")


def test_list_and_iter_devices(client: RegistryClient, meter: Model) -> None:
    for i in range(7):
        _register(
            client,
            f"m{i}",
            site="site-a" if i < 5 else "site-b",
            labels={"parity": "even" if i % 2 == 0 else "odd"},
        )
    page = client.list_devices(page_size=3)
    assert [d.id for d in page] == ["m0", "m1", "m2"]
    assert page.next_page_token
    rest = client.list_devices(page_size=10, page_token=page.next_page_token)
    assert [d.id for d in rest] == ["m3", "m4", "m5", "m6"]
    assert not rest.next_page_token
    assert [d.id for d in client.iter_devices(page_size=2)] == [f"m{i}" for i in range(7)]
    assert [d.id for d in client.iter_devices(site="site-b")] == ["m5", "m6"]
    selected = client.iter_devices(label_selector="parity=even", site="site-a", page_size=1)
    assert [d.id for d in selected] == ["m0", "m2", "m4"]
    assert list(client.iter_devices(online=True)) == []
    assert len(list(client.iter_devices(online=False, model=METER))) == 7
    with pytest.raises(InvalidArgument) as info:
        client.list_devices(label_selector="in (")
    assert info.value.violations


# --------------------------------------------------------------------------- twins, events


def _ingest(storage: Storage, sequence: int, ts: int) -> None:
    storage.ingest(
        IngestBatch(
            edge_id="edge-1",
            sequence=sequence,
            values=[
                ReportedValue("m1", "voltage_a", 230.5, ts),
                ReportedValue("m1", "tariff", 2, ts, "uncertain"),
                ReportedValue("m1", "relay_closed", False, ts),
            ],
            events=[
                EventEntry(f"ev-{sequence}", "m1", "phase_loss", "alert", ts, {"phase": 2}),
            ],
        ),
        ts,
    )


def test_twin_history_events(client: RegistryClient, reg: Registry, meter: Model) -> None:
    _register(client, "m1")
    start = _now_ms() - 10_000
    for seq in range(1, 4):
        _ingest(reg.storage, seq, start + seq * 1000)
    twin = client.set_desired("m1", {"relay_closed": True})
    assert isinstance(twin, Twin)
    assert twin.reported["voltage_a"] == PropertyState(230.5, start + 3000, "good")
    assert twin.reported["tariff"] == PropertyState(2, start + 3000, "uncertain")
    assert type(twin.reported["tariff"].value) is int
    assert twin.desired["relay_closed"].value is True
    assert twin.delta == {"relay_closed": True}
    assert client.get_twin("m1") == twin
    cleared = client.set_desired("m1", {"relay_closed": None}, expected_revision=twin.revision)
    assert cleared.desired == {}
    assert cleared.delta == {}
    assert cleared.revision > twin.revision

    history = client.get_history("m1", "voltage_a", from_ms=start)
    assert isinstance(history, History)
    assert [p.ts_ms for p in history.points] == [start + 1000, start + 2000, start + 3000]
    assert history.truncated is False
    limited = client.get_history("m1", "voltage_a", from_ms=start, limit=2)
    assert len(limited.points) == 2
    assert limited.truncated
    buckets = client.get_history("m1", "voltage_a", from_ms=start, bucket_ms=3_600_000)
    assert sum(b.count for b in buckets.buckets) == 3
    assert all(b.avg == pytest.approx(230.5) for b in buckets.buckets)

    events = client.list_events("m1", page_size=2)
    assert [e.id for e in events] == ["ev-3", "ev-2"]
    assert events.next_page_token
    every = list(client.iter_events("m1", page_size=2, levels=["alert"]))
    assert [e.id for e in every] == ["ev-3", "ev-2", "ev-1"]
    assert every[0] == Event("ev-3", "m1", "phase_loss", "alert", start + 3000, {"phase": 2})
    acked = client.ack_alarm("ev-2", "replaced the fuse")
    assert acked.acknowledged
    assert acked.acknowledged_by
    assert acked.comment == "replaced the fuse"
    unacked = list(client.iter_events(unacknowledged_only=True, site="site-a"))
    assert [e.id for e in unacked] == ["ev-3", "ev-1"]


# --------------------------------------------------------------------------- commands


def test_commands(client: RegistryClient, meter: Model) -> None:
    _register(client, "m1")
    command = client.send_command("m1", set_properties={"relay_closed": True}, ttl=60)
    assert isinstance(command, Command)
    assert command.kind is CommandKind.SET_PROPERTIES
    assert command.status is CommandStatus.QUEUED
    assert not command.final
    assert command.params == {"relay_closed": True}
    assert 59_000 <= command.expires_ms - command.created_ms <= 60_000
    assert client.get_command(command.id) == command

    service = client.send_command("m1", service="reset_energy")
    assert service.kind is CommandKind.INVOKE_SERVICE
    assert service.service == "reset_energy"

    with pytest.raises(Unavailable) as info:
        client.send_command("m1", service="reset_energy", offline="fail_fast")
    assert info.value.reason == "EDGE_OFFLINE"
    with pytest.raises(InvalidArgument) as bad:
        client.send_command("m1", set_properties={"voltage_a": 1.0})  # read-only
    assert [v.field for v in bad.value.violations] == ["params.voltage_a"]


# --------------------------------------------------------------------------- watch


def test_watch_from_a_token_and_resume(client: RegistryClient, meter: Model) -> None:
    for i in range(3):
        _register(client, f"m{i}")
    with client.watch(resume_token="0", kinds=[ChangeKind.DEVICE_CREATED]) as stream:
        seen = [next(stream) for _ in range(3)]
    assert [c.device_id for c in seen] == ["m0", "m1", "m2"]
    assert all(c.kind is ChangeKind.DEVICE_CREATED for c in seen)
    assert all(isinstance(c.payload, Device) for c in seen)
    assert stream.resume_token == seen[-1].resume_token

    with client.watch(resume_token=seen[0].resume_token, kinds=["device_created"]) as again:
        assert [next(again).device_id for _ in range(2)] == ["m1", "m2"]

    with client.watch(resume_token="0", kinds=["model_published"]) as models:
        change = next(models)
    assert change.kind is ChangeKind.MODEL_PUBLISHED
    assert isinstance(change.payload, Model)
    assert change.payload.ref == METER_REF


def test_watch_from_now_with_filters(client: RegistryClient, meter: Model) -> None:
    _register(client, "m1")
    _register(client, "m2")
    got: list[Change] = []
    stream = client.watch(device_ids=["m2"], kinds=["twin_desired"])

    def consume() -> None:
        got.extend(stream)  # until closed

    thread = threading.Thread(target=consume)
    thread.start()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:  # the stream subscribes asynchronously
        client.set_desired("m1", {"relay_closed": True})
        client.set_desired("m2", {"relay_closed": True})
        time.sleep(0.05)
    stream.close()
    thread.join(10)
    assert not thread.is_alive()
    assert got
    assert all(c.device_id == "m2" for c in got)
    assert isinstance(got[0].payload, TwinChange)
    assert got[0].payload.properties["relay_closed"].value is True


def test_watch_auto_resumes_after_a_restart(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "registry.db")
    storage.migrate()
    port = _free_port()
    listen = f"127.0.0.1:{port}"
    got: list[Change] = []
    try:
        with running_registry(storage, listen=listen) as first:
            c = RegistryClient(first.target)
            c.publish_model(METER_YAML.read_text(encoding="utf-8"))
            _register(c, "m1")
            stream = c.watch(resume_token="0", auto_resume=True, reconnect_delay=0.05)
            thread = threading.Thread(target=lambda: got.extend(stream))
            thread.start()
            deadline = time.monotonic() + 10
            while len(got) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(got) == 2
        # first replica stopped: the stream retries until the second one serves
        with running_registry(storage, listen=listen):
            _register(c, "m2")
            deadline = time.monotonic() + 15
            while len(got) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            stream.close()
            thread.join(10)
            c.close()
    finally:
        storage.close()
    assert [x.kind for x in got] == [
        ChangeKind.MODEL_PUBLISHED,
        ChangeKind.DEVICE_CREATED,
        ChangeKind.DEVICE_CREATED,
    ]
    assert [x.resume_token for x in got] == sorted({x.resume_token for x in got}, key=int)


def test_watch_without_auto_resume_raises_unavailable(sqlite_storage: Storage) -> None:
    with running_registry(sqlite_storage) as running:
        c = RegistryClient(running.target)
        c.publish_model(METER_YAML.read_text(encoding="utf-8"))
        stream = c.watch(resume_token="0")
        assert next(stream).kind is ChangeKind.MODEL_PUBLISHED
        running.call(running.server.stop(0))
        with pytest.raises(Unavailable):
            next(stream)
        c.close()


# --------------------------------------------------------------------------- async client


def test_async_client(reg: Registry) -> None:
    async def run() -> None:
        async with AsyncRegistryClient(reg.target, metadata=[("x-principal", "a")]) as c:
            published = await c.publish_model(METER_YAML.read_text(encoding="utf-8"))
            assert published.model.ref == METER_REF
            assert (await c.get_model(METER)).ref == METER_REF
            assert [m.name async for m in c.iter_models()] == [METER]
            assert (await c.list_model_versions(METER))[0].version == "1.0.0"
            for i in range(5):
                await c.register_device(f"m{i}", model=METER_REF, edge_id="e", site="s")
            ids = [d.id async for d in c.iter_devices(page_size=2)]
            assert ids == [f"m{i}" for i in range(5)]
            page = await c.list_devices(page_size=2)
            assert len(page) == 2
            assert page.next_page_token
            device = await c.get_device("m0")
            await c.update_device(replace(device, building="B"))
            with pytest.raises(StaleRevision):
                await c.update_device(replace(device, building="C"))
            with pytest.raises(NotFound):
                await c.get_device("ghost")
            with pytest.raises(InvalidArgument) as info:
                await c.set_desired("m0", {"nope": 1})
            assert info.value.violations[0].field == "desired.nope"
            twin = await c.set_desired("m0", {"relay_closed": True})
            assert (await c.get_twin("m0")).desired == twin.desired
            command = await c.send_command("m0", set_properties={"relay_closed": False})
            assert (await c.get_command(command.id)).status is CommandStatus.QUEUED
            with pytest.raises(DeadlineExceeded):
                await c.send_command("m0", service="reset_energy", wait=True, timeout=0.2)
            assert (await c.export_model(METER_REF, "tsl")).document
            assert (await c.diff_models(METER_REF, METER_REF)).required == "none"
            assert (await c.get_history("m0", "voltage_a")).points == ()
            assert len(await c.list_events("m0")) == 0
            assert [e async for e in c.iter_events()] == []
            with pytest.raises(NotFound):
                await c.ack_alarm("ghost")
            await c.move_device("m4", "e2")
            await c.delete_device("m4")

            async with c.watch(resume_token="0", kinds=["device_created"]) as stream:
                created = [change async for change, _ in _take(stream, 5)]
            assert [x.device_id for x in created] == [f"m{i}" for i in range(5)]
            assert stream.resume_token == created[-1].resume_token

            # from now: the stream subscribes asynchronously, so keep producing until seen
            watcher = c.watch(kinds=[ChangeKind.TWIN_DESIRED], device_ids=["m1"])

            async def first() -> Change:
                return await anext(watcher)

            task = asyncio.create_task(first())
            while not task.done():
                await c.set_desired("m1", {"relay_closed": True})
                await asyncio.wait({task}, timeout=0.05)
            change = task.result()
            await watcher.aclose()

            # closing from another task ends a pending iteration cleanly
            idle = c.watch(device_ids=["nobody"])

            async def drain() -> list[Change]:
                return [x async for x in idle]

            consumer = asyncio.create_task(drain())
            await asyncio.sleep(0.1)
            await idle.aclose()
            assert await asyncio.wait_for(consumer, 5) == []
            assert change.device_id == "m1"
            assert change.kind is ChangeKind.TWIN_DESIRED
        with pytest.raises(RuntimeError, match="closed"):
            await c.get_model(METER)

    asyncio.run(run())


async def _take(stream: api.AsyncWatchStream, n: int) -> Any:
    count = 0
    async for change in stream:
        yield change, count
        count += 1
        if count == n:
            return


def test_async_watch_auto_resume_and_unavailable(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "registry.db")
    storage.migrate()
    listen = f"127.0.0.1:{_free_port()}"

    async def run(target: str, stop_first: Any, start_second: Any) -> list[Change]:
        async with AsyncRegistryClient(target) as c:
            await c.publish_model(METER_YAML.read_text(encoding="utf-8"))
            plain = c.watch(resume_token="0")
            resuming = c.watch(resume_token="0", auto_resume=True, reconnect_delay=0.05)
            got = [await anext(resuming)]
            assert (await anext(plain)).kind is ChangeKind.MODEL_PUBLISHED
            await asyncio.to_thread(stop_first)
            with pytest.raises(Unavailable):
                await anext(plain)
            second = await asyncio.to_thread(start_second)
            await c.register_device("m1", model=METER_REF, edge_id="e", site="s")
            got.append(await asyncio.wait_for(anext(resuming), 15))
            await resuming.aclose()
            with pytest.raises(StopAsyncIteration):
                await anext(resuming)
            await asyncio.to_thread(second.__exit__, None, None, None)
            return got

    try:
        first = running_registry(storage, listen=listen)
        running = first.__enter__()
        got = asyncio.run(
            run(
                running.target,
                lambda: first.__exit__(None, None, None),
                lambda: _enter(running_registry(storage, listen=listen)),
            )
        )
    finally:
        storage.close()
    assert [c.kind for c in got] == [ChangeKind.MODEL_PUBLISHED, ChangeKind.DEVICE_CREATED]


def _enter(manager: Any) -> Any:
    manager.__enter__()
    return manager


# --------------------------------------------------------------------------- types, package


def test_types_round_trip_and_json(client: RegistryClient, reg: Registry, meter: Model) -> None:
    _register(client, "m1", labels={"a": "b"}, location=Location(1.5, 2.5, "3", "4"))
    _ingest(reg.storage, 1, _now_ms())
    client.set_desired("m1", {"relay_closed": True})
    client.send_command("m1", service="reset_energy")
    client.ack_alarm("ev-1")
    kinds = set()
    with client.watch(resume_token="0") as stream:
        for change in stream:
            kinds.add(change.kind)
            assert Change.from_pb(change.to_pb()) == change
            json.dumps(change.to_dict())
            if len(kinds) == 7:
                break
    assert kinds == {
        ChangeKind.MODEL_PUBLISHED,
        ChangeKind.DEVICE_CREATED,
        ChangeKind.TWIN_REPORTED,
        ChangeKind.EVENT,
        ChangeKind.TWIN_DESIRED,
        ChangeKind.COMMAND_UPDATED,
        ChangeKind.ALARM_ACKNOWLEDGED,
    }
    device = client.get_device("m1")
    assert Device.from_pb(device.to_pb()) == device
    assert device.to_dict()["location"] == {
        "latitude": 1.5,
        "longitude": 2.5,
        "floor": "3",
        "room": "4",
    }
    twin = client.get_twin("m1")
    assert Twin.from_pb(twin.to_pb()) == twin
    assert json.loads(json.dumps(twin.to_dict()))["desired"]["relay_closed"]["value"] is True
    history = client.get_history("m1", "tariff")
    assert History.from_pb(history.to_pb()) == history
    published = client.publish_model(METER_YAML.read_text(encoding="utf-8"))
    assert PublishedModel.from_pb(published.to_pb()) == published
    page = client.list_devices()
    assert page.to_dict()["items"][0]["id"] == "m1"


def test_public_names_match_all() -> None:
    tree = ast.parse(Path(api.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if node.module != "__future__"
    }
    assert set(api.__all__) == imported
    assert api.__all__ == sorted(api.__all__, key=lambda n: (not n.isupper(), n))
    for name in api.__all__:
        assert getattr(api, name) is not None


def test_client_imports_neither_server_nor_storage() -> None:
    code = (
        "import sys, cloud_registry.api, cloud_registry.api.client\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('cloud_registry.server', "
        "'cloud_registry.storage')))\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert result.stdout.strip() == "[]"
