"""A small edge agent for tests and benchmarks: speaks the EdgeSync protocol over grpc.aio.

It sends Hello, then batches (``send_batch``), and sorts what the registry sends into queues:
acks by sequence, commands, desired changes, config updates. ``answer`` (optional) answers each
command as it arrives. Helpers build property reports and events as protobuf ThingMessages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc
from grpc import aio

from cloud_registry.api.v1 import common_pb2, edge_sync_pb2, edge_sync_pb2_grpc
from thing_models.messages import value_to_protobuf
from thing_models.proto import thing_message_pb2 as tpb

__all__ = ["EdgeClient", "event", "report"]

CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)
_ids = itertools.count(1)
_QUALITY = {"good": tpb.QUALITY_GOOD, "uncertain": tpb.QUALITY_UNCERTAIN, "bad": tpb.QUALITY_BAD}


def report(
    device_id: str,
    values: Mapping[str, Any],
    ts_ms: int = 1_700_000_000_000,
    *,
    quality: str = "good",
    param_quality: Mapping[str, str] | None = None,
    model: str = "test.acme/thermostat@1.0.0",
) -> tpb.ThingMessage:
    """A property report; floats may be NaN here (the registry must refuse them)."""
    msg = tpb.ThingMessage(
        id=f"m{next(_ids)}",
        kind=tpb.MESSAGE_KIND_PROPERTY_REPORT,
        model=model,
        device_id=device_id,
        ts_ms=ts_ms,
        quality=_QUALITY[quality],
    )
    for key, value in values.items():
        if isinstance(value, float):
            msg.params[key].double_value = value  # no finiteness check on purpose
        else:
            msg.params[key].CopyFrom(value_to_protobuf(value))
    for key, item in (param_quality or {}).items():
        msg.param_quality[key] = _QUALITY[item]
    return msg


def event(
    device_id: str,
    name: str,
    params: Mapping[str, Any] | None = None,
    ts_ms: int = 1_700_000_000_000,
    *,
    model: str = "test.acme/thermostat@1.0.0",
) -> tpb.ThingMessage:
    msg = tpb.ThingMessage(
        id=f"m{next(_ids)}",
        kind=tpb.MESSAGE_KIND_EVENT,
        model=model,
        device_id=device_id,
        ts_ms=ts_ms,
        quality=tpb.QUALITY_GOOD,
        name=name,
    )
    for key, value in (params or {}).items():
        msg.params[key].CopyFrom(value_to_protobuf(value))
    return msg


Answer = Callable[[common_pb2.Command], edge_sync_pb2.CommandResult | None]


class EdgeClient:
    """One edge's sync stream. Use ``async with EdgeClient(...) as edge`` or connect/close."""

    def __init__(
        self,
        target: str,
        edge_id: str,
        *,
        devices: Iterable[str] = (),
        identify: bool = True,
        answer: Answer | None = None,
        channel: aio.Channel | None = None,
    ) -> None:
        self.target = target
        self.edge_id = edge_id
        self.devices = list(devices)
        self.identify = identify
        self.answer = answer
        self._own_channel = channel is None
        self._channel = channel
        self.call: Any = None
        self.welcome: edge_sync_pb2.Welcome | None = None
        self.acks: dict[int, edge_sync_pb2.BatchAck] = {}
        self.ack_queue: asyncio.Queue[edge_sync_pb2.BatchAck] = asyncio.Queue()
        self.commands: asyncio.Queue[common_pb2.Command] = asyncio.Queue()
        self.desired: asyncio.Queue[edge_sync_pb2.DesiredChange] = asyncio.Queue()
        self.configs: asyncio.Queue[edge_sync_pb2.ConfigUpdate] = asyncio.Queue()
        self._ack_event = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.ended: asyncio.Future[grpc.StatusCode] | None = None
        self.end_details = ""

    async def __aenter__(self) -> EdgeClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def open_stream(self) -> None:
        """Open the stream without sending anything (for protocol-violation tests)."""
        if self._channel is None:
            self._channel = aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        stub = edge_sync_pb2_grpc.EdgeSyncStub(self._channel)  # type: ignore[no-untyped-call]
        metadata = (("x-edge-id", self.edge_id),) if self.identify else ()
        self.call = stub.Sync(metadata=metadata)
        self.ended = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

    async def connect(
        self, hello: edge_sync_pb2.Hello | None = None, timeout: float = 10.0
    ) -> edge_sync_pb2.Welcome:
        """Open the stream, say Hello, wait for Welcome."""
        self.open_stream()
        if hello is None:
            hello = edge_sync_pb2.Hello(
                edge_id=self.edge_id,
                agent_version="test-1",
                config_version="c1",
                devices=[
                    edge_sync_pb2.InventoryItem(device_id=d, model="", online=True)
                    for d in self.devices
                ],
            )
        await self.write(edge_sync_pb2.EdgeMessage(hello=hello))
        deadline = asyncio.get_running_loop().time() + timeout
        while self.welcome is None:
            assert self.ended is not None
            if self.ended.done():
                raise RuntimeError(f"stream ended before Welcome: {self.ended.result()}")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("no Welcome")
            await asyncio.sleep(0.005)
        return self.welcome

    async def write(self, message: edge_sync_pb2.EdgeMessage) -> None:
        await self.call.write(message)

    async def send_batch(self, sequence: int, messages: Iterable[tpb.ThingMessage]) -> None:
        batch = edge_sync_pb2.TelemetryBatch(sequence=sequence, messages=list(messages))
        await self.write(edge_sync_pb2.EdgeMessage(batch=batch))

    async def send_raw_batch(self, data: bytes) -> None:
        """Send an already serialized EdgeMessage (benchmarks)."""
        await self.call.write(data)

    async def wait_ack(self, sequence: int, timeout: float = 10.0) -> edge_sync_pb2.BatchAck:
        """The ack of ``sequence`` (consumed: a later ack of the same sequence is new)."""

        async def wait() -> edge_sync_pb2.BatchAck:
            while sequence not in self.acks:
                assert self.ended is not None
                if self.ended.done():
                    raise RuntimeError(
                        f"stream ended ({self.ended.result()}: {self.end_details}) "
                        f"before ack {sequence}"
                    )
                self._ack_event.clear()
                await self._ack_event.wait()
            return self.acks.pop(sequence)

        return await asyncio.wait_for(wait(), timeout)

    async def send_result(
        self,
        command_id: str,
        status: int = common_pb2.COMMAND_STATUS_SUCCEEDED,
        result: Mapping[str, Any] | None = None,
        error: str = "",
    ) -> None:
        message = edge_sync_pb2.CommandResult(command_id=command_id, status=status, error=error)  # type: ignore[arg-type]
        for key, value in (result or {}).items():
            message.result[key].CopyFrom(value_to_protobuf(value))
        await self.write(edge_sync_pb2.EdgeMessage(command_result=message))

    async def wait_end(self, timeout: float = 10.0) -> grpc.StatusCode:
        """The status the stream ended with."""
        assert self.ended is not None
        return await asyncio.wait_for(asyncio.shield(self.ended), timeout)

    async def done_writing(self) -> None:
        await self.call.done_writing()

    async def close(self) -> None:
        if self.call is not None:
            self.call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._own_channel and self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _read(self) -> None:
        assert self.ended is not None
        code = grpc.StatusCode.OK
        try:
            while True:
                message = await self.call.read()
                if message is aio.EOF:
                    break
                which = message.WhichOneof("kind")
                if which == "ack":
                    self.acks[message.ack.sequence] = message.ack
                    self.ack_queue.put_nowait(message.ack)
                    self._ack_event.set()
                elif which == "welcome":
                    self.welcome = message.welcome
                elif which == "command":
                    self.commands.put_nowait(message.command)
                    if self.answer is not None:
                        result = self.answer(message.command)
                        if result is not None:
                            await self.write(edge_sync_pb2.EdgeMessage(command_result=result))
                elif which == "desired":
                    self.desired.put_nowait(message.desired)
                elif which == "config":
                    self.configs.put_nowait(message.config)
        except aio.AioRpcError as exc:
            code = exc.code()
            self.end_details = exc.details() or ""
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            if not self.ended.done():
                with contextlib.suppress(Exception):
                    if code is grpc.StatusCode.OK and self.call is not None:
                        code = await asyncio.wait_for(self.call.code(), 1.0)
                        self.end_details = await self.call.details() or ""
                self.ended.set_result(code)
            self._ack_event.set()


# --------------------------------------------------------------------------- test data


def thermostat_model() -> Any:
    """``test.acme/thermostat@1.0.0``: temperature (r), setpoint/mode (rw), an alert event
    and a service with a required input."""
    from thing_models.model import (
        Access,
        DataSchema,
        DataType,
        EnumValue,
        Event,
        EventLevel,
        Field,
        Property,
        SemVer,
        Service,
        ThingModel,
    )

    s = DataSchema
    return ThingModel(
        name="test.acme/thermostat",
        version=SemVer.parse("1.0.0"),
        title="Thermostat",
        properties=(
            Property("temperature", s(DataType.DOUBLE, minimum=-50, maximum=100)),
            Property("humidity", s(DataType.INT32, minimum=0, maximum=100)),
            Property(
                "setpoint",
                s(DataType.DOUBLE, minimum=5, maximum=35),
                access=Access.READ_WRITE,
            ),
            Property(
                "mode",
                s(DataType.ENUM, enum=(EnumValue("heat", "Heat"), EnumValue("off", "Off"))),
                access=Access.READ_WRITE,
            ),
        ),
        events=(
            Event(
                "overheat",
                level=EventLevel.ALERT,
                outputs=(Field("temperature", s(DataType.DOUBLE)),),
            ),
        ),
        services=(Service("reboot", inputs=(Field("delay_s", s(DataType.INT32, minimum=0)),)),),
    )


MODEL_REF = "test.acme/thermostat@1.0.0"


def seed(storage: Any, edges: Mapping[str, Iterable[str]]) -> None:
    """Publish the thermostat model and create the devices of each edge."""
    from cloud_registry.storage.base import AlreadyExists, DeviceRecord, ModelEntry
    from thing_models.yaml_format import model_to_dict

    model = thermostat_model()
    with contextlib.suppress(AlreadyExists):
        storage.put_model(
            ModelEntry(
                name=model.name,
                version=str(model.version),
                document=model_to_dict(model),
                published_ms=1,
                title=model.title,
                property_count=len(model.properties),
                event_count=len(model.events),
                service_count=len(model.services),
            )
        )
    for edge_id, devices in edges.items():
        for device_id in devices:
            with contextlib.suppress(AlreadyExists):
                storage.create_device(
                    DeviceRecord(id=device_id, model=MODEL_REF, edge_id=edge_id, site="s1"),
                    1,
                )
