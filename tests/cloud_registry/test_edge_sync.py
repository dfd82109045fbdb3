"""EdgeSync over a real registry (every storage engine): hello rules, durable acks, exactly-once
storage of resent batches, resume, flow control, refused messages, downlink of desired state."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import pytest

from cloud_registry.api.v1 import edge_sync_pb2
from cloud_registry.storage.base import EventFilter, IngestBatch, IngestResult, Storage
from tests.cloud_registry.edge_client import EdgeClient, event, report, seed
from tests.cloud_registry.server_fixtures import Registry, running_registry
from thing_models.proto import thing_message_pb2 as tpb

T = TypeVar("T")
EDGES = {"edge-1": ["d1", "d2"], "edge-2": ["x1"]}
FAR = 2**62


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def history(storage: Storage, device_id: str, prop: str) -> list[Any]:
    points, _more = storage.history(device_id, prop, 0, FAR, 10_000)
    return [p.value for p in points]


@pytest.fixture
def seeded(registry: Registry) -> Registry:
    seed(registry.storage, EDGES)
    return registry


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- hello


def test_hello_must_come_first(seeded: Registry) -> None:
    async def go() -> grpc.StatusCode:
        edge = EdgeClient(seeded.target, "edge-1")
        edge.open_stream()
        try:
            await edge.send_batch(1, [report("d1", {"temperature": 1.0})])
            return await edge.wait_end()
        finally:
            await edge.close()

    assert run(go()) == grpc.StatusCode.FAILED_PRECONDITION


def test_hello_edge_id_must_be_the_callers(seeded: Registry) -> None:
    async def go(hello: edge_sync_pb2.Hello, identify: bool = True) -> grpc.StatusCode:
        edge = EdgeClient(seeded.target, "edge-1", identify=identify)
        try:
            with pytest.raises(RuntimeError, match="stream ended before Welcome"):
                await edge.connect(hello)
            return await edge.wait_end()
        finally:
            await edge.close()

    assert run(go(edge_sync_pb2.Hello(edge_id="edge-2"))) == grpc.StatusCode.PERMISSION_DENIED
    assert run(go(edge_sync_pb2.Hello(edge_id=""))) == grpc.StatusCode.INVALID_ARGUMENT


def test_welcome_window_and_inventory_and_lease(seeded: Registry) -> None:
    storage = seeded.storage
    settings = seeded.server.ctx.settings

    async def go() -> None:
        async with EdgeClient(seeded.target, "edge-1", devices=["d1", "d2"]) as edge:
            welcome = edge.welcome
            assert welcome is not None
            assert welcome.last_sequence == 0
            assert welcome.max_in_flight == settings.sync_max_in_flight
            assert welcome.max_batch_messages == settings.sync_max_batch_messages
            assert storage.get_device("d1").online
            assert storage.get_device("d2").online
            lease_ms = int(settings.edge_lease_s * 1000)
            holder = storage.edge_connection("edge-1", seeded.server.ctx.now_ms(), lease_ms)
            assert holder == settings.replica_id
            # A device status message updates one device.
            status = edge_sync_pb2.DeviceStatus(device_id="d2", online=False)
            await edge.write(edge_sync_pb2.EdgeMessage(device_status=status))
            await wait_until(lambda: not storage.get_device("d2").online)
        await wait_until(
            lambda: storage.edge_connection("edge-1", seeded.server.ctx.now_ms(), 60_000) is None
        )
        # The edge went away: its devices are offline (not left "online" forever).
        await wait_until(lambda: not storage.get_device("d1").online)

    run(go())


def test_a_second_stream_replaces_the_first(seeded: Registry) -> None:
    async def go() -> None:
        async with (
            EdgeClient(seeded.target, "edge-1") as first,
            EdgeClient(seeded.target, "edge-1") as second,
        ):
            assert await first.wait_end() == grpc.StatusCode.ABORTED
            await second.send_batch(1, [report("d1", {"temperature": 20.5})])
            assert (await second.wait_ack(1)).stored == 1

    run(go())


# --------------------------------------------------------------------------- batches


def test_ack_arrives_after_the_values_are_stored(seeded: Registry) -> None:
    storage = seeded.storage

    async def go() -> None:
        async with EdgeClient(seeded.target, "edge-1") as edge:
            for sequence in range(1, 6):
                values = {"temperature": 20.0 + sequence, "humidity": sequence}
                await edge.send_batch(sequence, [report("d1", values, 1_000 + sequence)])
                ack = await edge.wait_ack(sequence)
                # Checked the moment the ack arrives: the rows are there.
                assert history(storage, "d1", "temperature")[-1] == 20.0 + sequence
                assert ack.stored == 1
                assert not ack.duplicate
                assert not ack.rejected
            twin = storage.get_twin("d1")
            assert twin.reported["temperature"].value == 25.0
            assert twin.reported["humidity"].value == 5
            assert storage.last_sequence("edge-1") == 5

    run(go())


def test_a_duplicate_batch_is_acknowledged_and_stored_once(seeded: Registry) -> None:
    storage = seeded.storage
    batch = [
        report("d1", {"temperature": 30.5}, 5_000),
        event("d1", "overheat", {"temperature": 30.5}, 5_000),
    ]

    async def go() -> None:
        async with EdgeClient(seeded.target, "edge-1") as edge:
            await edge.send_batch(1, batch)
            first = await edge.wait_ack(1)
            assert not first.duplicate
            assert first.stored == 2
            await edge.send_batch(1, batch)
            again = await edge.wait_ack(1)
            assert again.duplicate
            assert again.stored == 0
        async with EdgeClient(seeded.target, "edge-1") as edge:  # resent after a reconnect
            await edge.send_batch(1, batch)
            assert (await edge.wait_ack(1)).duplicate

    run(go())
    assert history(storage, "d1", "temperature") == [30.5]
    events = storage.list_events(EventFilter(device_id="d1"), "", 100).items
    assert [(e.name, e.level) for e in events] == [("overheat", "alert")]


def test_resume_after_disconnect_from_last_sequence(seeded: Registry) -> None:
    storage = seeded.storage

    def batch(sequence: int) -> list[tpb.ThingMessage]:
        return [report("d2", {"humidity": sequence}, 10_000 + sequence)]

    async def go() -> None:
        async with EdgeClient(seeded.target, "edge-1") as edge:
            for sequence in range(1, 6):  # pipelined: the window is 8
                await edge.send_batch(sequence, batch(sequence))
            for sequence in range(1, 6):
                await edge.wait_ack(sequence)
        async with EdgeClient(seeded.target, "edge-1") as edge:
            assert edge.welcome is not None
            assert edge.welcome.last_sequence == 5
            # An edge that did not see the last acks resends them: they are duplicates.
            for sequence in range(4, 9):
                await edge.send_batch(sequence, batch(sequence))
            acks = [await edge.wait_ack(sequence) for sequence in range(4, 9)]
            assert [a.duplicate for a in acks] == [True, True, False, False, False]

    run(go())
    assert history(storage, "d2", "humidity") == list(range(1, 9))


def test_messages_that_are_wrong_are_refused_and_the_rest_stored(seeded: Registry) -> None:
    storage = seeded.storage
    wrong_kind = report("d1", {"temperature": 1.0})
    wrong_kind.kind = tpb.MESSAGE_KIND_SERVICE_CALL
    no_quality = report("d1", {"temperature": 2.0})
    no_quality.quality = tpb.QUALITY_UNSPECIFIED
    no_value = report("d1", {})
    no_value.params["temperature"].SetInParent()  # a Value with no kind set
    messages = [
        report("d1", {"temperature": 21.0, "humidity": 40}, 100),  # 0 ok
        report("nope", {"temperature": 1.0}),  # 1 unknown device
        report("d1", {"temperature": math.nan}),  # 2 NaN
        wrong_kind,  # 3 a service call in a telemetry batch
        report("x1", {"temperature": 1.0}),  # 4 another edge's device
        no_quality,  # 5
        report("d1", {"bad name": 1.0}),  # 6 not a parameter name
        event("d1", "no_such_event"),  # 7 undeclared event
        report("", {"temperature": 1.0}),  # 8 no device id
        no_value,  # 9
        report("d1", {"temperature": math.inf}),  # 10
        report(
            "d2", {"temperature": 22.0, "humidity": 41}, 100, param_quality={"humidity": "bad"}
        ),  # 11 ok
        event("d2", "overheat", {"temperature": 99.5}, 100),  # 12 ok
    ]

    async def go() -> edge_sync_pb2.BatchAck:
        async with EdgeClient(seeded.target, "edge-1") as edge:
            await edge.send_batch(1, messages)
            return await edge.wait_ack(1)

    ack = run(go())
    refused = {int(item.split(":", 1)[0]): item for item in ack.rejected}
    assert sorted(refused) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert "unknown" in refused[1]
    assert "finite" in refused[2]
    assert "finite" in refused[10]
    assert "MESSAGE_KIND_SERVICE_CALL" in refused[3]
    assert "another edge" in refused[4]
    assert ack.stored == 3
    assert history(storage, "d1", "temperature") == [21.0]
    assert history(storage, "d2", "humidity") == [41]
    assert storage.get_twin("d2").reported["humidity"].quality == "bad"
    assert storage.get_twin("d2").reported["temperature"].quality == "good"
    assert history(storage, "x1", "temperature") == []
    events = storage.list_events(EventFilter(device_id="d2"), "", 10).items
    assert [(e.name, e.level, dict(e.params)) for e in events] == [
        ("overheat", "alert", {"temperature": 99.5})
    ]


def test_sequence_zero_is_invalid(seeded: Registry) -> None:
    async def go() -> grpc.StatusCode:
        async with EdgeClient(seeded.target, "edge-1") as edge:
            await edge.send_batch(0, [report("d1", {"temperature": 1.0})])
            return await edge.wait_end()

    assert run(go()) == grpc.StatusCode.INVALID_ARGUMENT


def test_half_close_acknowledges_the_outstanding_batches_then_ends(seeded: Registry) -> None:
    async def go() -> None:
        async with EdgeClient(seeded.target, "edge-1") as edge:
            for sequence in range(1, 5):
                await edge.send_batch(sequence, [report("d1", {"humidity": sequence}, sequence)])
            await edge.done_writing()
            assert await edge.wait_end() == grpc.StatusCode.OK
            assert sorted(edge.acks) == [1, 2, 3, 4]

    run(go())
    assert history(seeded.storage, "d1", "humidity") == [1, 2, 3, 4]


# --------------------------------------------------------------------------- limits


class GatedStorage:
    """A storage whose ingest waits until ``gate`` is set (everything else passes through)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.ingests = 0

    def ingest(self, batch: IngestBatch, now_ms: int) -> IngestResult:
        self.ingests += 1
        self.gate.wait(30)
        return self.inner.ingest(batch, now_ms)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def gated(storage: Storage) -> Iterator[tuple[Registry, GatedStorage]]:
    seed(storage, EDGES)
    wrapper = GatedStorage(storage)
    with running_registry(wrapper, sync_max_in_flight=2, sync_max_batch_messages=10) as reg:
        try:
            yield reg, wrapper
        finally:
            # Release ingests still waiting, or stopping the server waits on their threads.
            wrapper.gate.set()


def test_no_ack_before_ingest_returns(gated: tuple[Registry, GatedStorage]) -> None:
    registry, wrapper = gated

    async def go() -> None:
        async with EdgeClient(registry.target, "edge-1") as edge:
            await edge.send_batch(1, [report("d1", {"temperature": 1.5})])
            await wait_until(lambda: wrapper.ingests == 1)
            await asyncio.sleep(0.3)
            assert edge.acks == {}
            wrapper.gate.set()
            assert (await edge.wait_ack(1)).stored == 1

    run(go())


def test_more_batches_in_flight_than_the_window_ends_the_stream(
    gated: tuple[Registry, GatedStorage],
) -> None:
    registry, _wrapper = gated

    async def go() -> tuple[grpc.StatusCode, str]:
        async with EdgeClient(registry.target, "edge-1") as edge:
            assert edge.welcome is not None
            assert edge.welcome.max_in_flight == 2
            for sequence in (1, 2, 3):
                await edge.send_batch(sequence, [report("d1", {"temperature": 1.5})])
            code = await edge.wait_end()
            return code, edge.end_details

    code, details = run(go())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_in_flight=2" in details


def test_an_oversize_batch_ends_the_stream(gated: tuple[Registry, GatedStorage]) -> None:
    registry, wrapper = gated
    wrapper.gate.set()

    async def go() -> tuple[grpc.StatusCode, str]:
        async with EdgeClient(registry.target, "edge-1") as edge:
            await edge.send_batch(1, [report("d1", {"humidity": i}, i) for i in range(10)])
            assert (await edge.wait_ack(1)).stored == 10
            await edge.send_batch(2, [report("d1", {"humidity": i}, i) for i in range(11)])
            return await edge.wait_end(), edge.end_details

    code, details = run(go())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_batch_messages=10" in details


# --------------------------------------------------------------------------- downlink


def test_desired_changes_are_pushed_to_the_connected_edge(seeded: Registry) -> None:
    storage = seeded.storage

    async def go() -> None:
        async with EdgeClient(seeded.target, "edge-1", devices=["d1"]) as edge:
            await asyncio.to_thread(storage.set_desired, "d1", {"setpoint": 21.5}, 0, 1)
            change = await asyncio.wait_for(edge.desired.get(), 10)
            assert change.device_id == "d1"
            assert change.desired["setpoint"].double_value == 21.5
            assert change.revision > 0
            # Another edge's device is not sent here.
            await asyncio.to_thread(storage.set_desired, "x1", {"setpoint": 9.0}, 0, 1)
            await asyncio.sleep(0.5)
            assert edge.desired.empty()

    run(go())


def test_desired_values_set_while_offline_are_sent_on_connect(seeded: Registry) -> None:
    seeded.storage.set_desired("d2", {"mode": "heat"}, 0, 1)

    async def go() -> edge_sync_pb2.DesiredChange:
        async with EdgeClient(seeded.target, "edge-1", devices=["d1", "d2"]) as edge:
            return await asyncio.wait_for(edge.desired.get(), 10)

    change = run(go())
    assert change.device_id == "d2"
    assert change.desired["mode"].string_value == "heat"


def test_the_edges_reserved_diagnostic_event_is_stored_as_an_alert(seeded: Registry) -> None:
    """No model declares ``_diagnostic``: the edge's own diagnostics are accepted anyway."""
    diagnostic = event(
        "d1", "_diagnostic", {"property": "temperature", "code": "range", "message": "too hot"}
    )

    async def go() -> edge_sync_pb2.BatchAck:
        async with EdgeClient(seeded.target, "edge-1") as edge:
            await edge.send_batch(1, [diagnostic])
            return await edge.wait_ack(1)

    ack = run(go())
    assert ack.stored == 1
    assert list(ack.rejected) == []
    events = seeded.storage.list_events(EventFilter(device_id="d1"), "", 100).items
    assert [(e.name, e.level, e.params["code"]) for e in events] == [
        ("_diagnostic", "alert", "range")
    ]
