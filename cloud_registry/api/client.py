"""Clients of the registry's v1 gRPC API for integrators and operators: async and sync.

    async with AsyncRegistryClient("registry.example:50051") as registry:
        device = await registry.get_device("meter-17")
        async for change in registry.watch(device_ids=[device.id]):
            ...

    with RegistryClient("127.0.0.1:50051") as registry:
        for model in registry.iter_models(prefix="com.acme"):
            ...

Both clients have the same methods and return the typed results of
:mod:`cloud_registry.api.types`; failures raise the exceptions of
:mod:`cloud_registry.api.errors`. :class:`AsyncRegistryClient` runs on a ``grpc.aio`` channel,
:class:`RegistryClient` on a plain (thread-based) gRPC channel. Every RPC except the edge agents'
``EdgeSync`` is covered.

Each operation is described once, without I/O (an :class:`_Op`: method path, request message,
result conversion); the two clients only differ in how they carry it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar

import grpc
from google.protobuf.message import Message
from grpc import aio

from cloud_registry.api.errors import RegistryError, Unavailable, from_rpc_error
from cloud_registry.api.types import (
    Change,
    ChangeKind,
    Command,
    CommandKind,
    Device,
    Event,
    ExportedModel,
    History,
    JsonValue,
    Location,
    Model,
    ModelDiff,
    ModelSummary,
    Page,
    PublishedModel,
    Twin,
)
from cloud_registry.api.v1 import (
    commands_pb2,
    common_pb2,
    devices_pb2,
    models_pb2,
    twins_pb2,
    watch_pb2,
)
from thing_models.messages import value_to_protobuf

__all__ = [
    "DEFAULT_TARGET",
    "AsyncRegistryClient",
    "AsyncWatchStream",
    "OfflinePolicy",
    "RegistryClient",
    "WatchStream",
]

#: Where the CLI and ``thing-model publish`` look for a registry by default.
DEFAULT_TARGET = "127.0.0.1:50051"

T = TypeVar("T")
OfflinePolicy = Literal["queue", "fail_fast"]

_PACKAGE = "/community.registry.v1"
_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
)


# --------------------------------------------------------------------------- operations (no I/O)


@dataclass(frozen=True, slots=True)
class _Op(Generic[T]):
    """One unary call: where, what, how long, and how to turn the answer into a result."""

    method: str
    request: Message
    response: type[Message]
    convert: Callable[[Any], T]
    timeout: float | None = None  # None: the client's


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _page(items: Iterable[T], token: str) -> Page[T]:
    return Page(tuple(items), token)


def _values(values: Mapping[str, JsonValue], path: str) -> dict[str, Any]:
    return {name: value_to_protobuf(value, f"{path}.{name}") for name, value in values.items()}


_MODELS = f"{_PACKAGE}.ModelService"
_DEVICES = f"{_PACKAGE}.DeviceService"
_TWINS = f"{_PACKAGE}.TwinService"
_COMMANDS = f"{_PACKAGE}.CommandService"
_WATCH = f"{_PACKAGE}.WatchService/Watch"
_ONLINE = {
    None: devices_pb2.ONLINE_FILTER_ANY,
    True: devices_pb2.ONLINE_FILTER_ONLINE,
    False: devices_pb2.ONLINE_FILTER_OFFLINE,
}
_OFFLINE = {
    "queue": commands_pb2.OFFLINE_POLICY_QUEUE,
    "fail_fast": commands_pb2.OFFLINE_POLICY_FAIL_FAST,
}


class _Ops:
    """Builders of every operation, shared by both clients."""

    @staticmethod
    def publish_model(document: str, dry_run: bool) -> _Op[PublishedModel]:
        return _Op(
            f"{_MODELS}/PublishModel",
            models_pb2.PublishModelRequest(document=document, dry_run=dry_run),
            models_pb2.PublishModelResponse,
            PublishedModel.from_pb,
        )

    @staticmethod
    def get_model(ref: str) -> _Op[Model]:
        return _Op(
            f"{_MODELS}/GetModel",
            models_pb2.GetModelRequest(ref=ref),
            common_pb2.ModelRecord,
            Model.from_pb,
        )

    @staticmethod
    def list_models(prefix: str, page_size: int, page_token: str) -> _Op[Page[ModelSummary]]:
        def convert(pb: models_pb2.ListModelsResponse) -> Page[ModelSummary]:
            return _page(map(ModelSummary.from_pb, pb.models), pb.next_page_token)

        return _Op(
            f"{_MODELS}/ListModels",
            models_pb2.ListModelsRequest(
                name_prefix=prefix, page_size=page_size, page_token=page_token
            ),
            models_pb2.ListModelsResponse,
            convert,
        )

    @staticmethod
    def list_model_versions(name: str) -> _Op[tuple[Model, ...]]:
        def convert(pb: models_pb2.ListModelVersionsResponse) -> tuple[Model, ...]:
            return tuple(map(Model.from_pb, pb.versions))

        return _Op(
            f"{_MODELS}/ListModelVersions",
            models_pb2.ListModelVersionsRequest(name=name),
            models_pb2.ListModelVersionsResponse,
            convert,
        )

    @staticmethod
    def diff_models(old_ref: str, new_ref: str) -> _Op[ModelDiff]:
        return _Op(
            f"{_MODELS}/DiffModels",
            models_pb2.DiffModelsRequest(old_ref=old_ref, new_ref=new_ref),
            models_pb2.DiffModelsResponse,
            ModelDiff.from_pb,
        )

    @staticmethod
    def export_model(ref: str, fmt: str) -> _Op[ExportedModel]:
        return _Op(
            f"{_MODELS}/ExportModel",
            models_pb2.ExportModelRequest(ref=ref, format=fmt),
            models_pb2.ExportModelResponse,
            ExportedModel.from_pb,
        )

    @staticmethod
    def register_device(device: Device) -> _Op[Device]:
        return _Op(
            f"{_DEVICES}/RegisterDevice",
            devices_pb2.RegisterDeviceRequest(device=device.to_pb()),
            common_pb2.Device,
            Device.from_pb,
        )

    @staticmethod
    def get_device(device_id: str) -> _Op[Device]:
        return _Op(
            f"{_DEVICES}/GetDevice",
            devices_pb2.GetDeviceRequest(id=device_id),
            common_pb2.Device,
            Device.from_pb,
        )

    @staticmethod
    def list_devices(
        *,
        model: str,
        site: str,
        edge_id: str,
        building: str,
        label_selector: str,
        online: bool | None,
        page_size: int,
        page_token: str,
    ) -> _Op[Page[Device]]:
        def convert(pb: devices_pb2.ListDevicesResponse) -> Page[Device]:
            return _page(map(Device.from_pb, pb.devices), pb.next_page_token)

        return _Op(
            f"{_DEVICES}/ListDevices",
            devices_pb2.ListDevicesRequest(
                model=model,
                site=site,
                edge_id=edge_id,
                building=building,
                label_selector=label_selector,
                online=_ONLINE[online],
                page_size=page_size,
                page_token=page_token,
            ),
            devices_pb2.ListDevicesResponse,
            convert,
        )

    @staticmethod
    def update_device(
        device: Device, expected_revision: int | None, update_mask: Sequence[str]
    ) -> _Op[Device]:
        revision = device.revision if expected_revision is None else expected_revision
        return _Op(
            f"{_DEVICES}/UpdateDevice",
            devices_pb2.UpdateDeviceRequest(
                device=device.to_pb(), expected_revision=revision, update_mask=list(update_mask)
            ),
            common_pb2.Device,
            Device.from_pb,
        )

    @staticmethod
    def delete_device(device_id: str, expected_revision: int) -> _Op[None]:
        return _Op(
            f"{_DEVICES}/DeleteDevice",
            devices_pb2.DeleteDeviceRequest(id=device_id, expected_revision=expected_revision),
            devices_pb2.DeleteDeviceResponse,
            lambda _pb: None,
        )

    @staticmethod
    def move_device(device_id: str, edge_id: str, expected_revision: int) -> _Op[Device]:
        return _Op(
            f"{_DEVICES}/MoveDevice",
            devices_pb2.MoveDeviceRequest(
                id=device_id, edge_id=edge_id, expected_revision=expected_revision
            ),
            common_pb2.Device,
            Device.from_pb,
        )

    @staticmethod
    def get_twin(device_id: str) -> _Op[Twin]:
        return _Op(
            f"{_TWINS}/GetTwin",
            twins_pb2.GetTwinRequest(device_id=device_id),
            twins_pb2.Twin,
            Twin.from_pb,
        )

    @staticmethod
    def set_desired(
        device_id: str, values: Mapping[str, JsonValue], expected_revision: int
    ) -> _Op[Twin]:
        return _Op(
            f"{_TWINS}/SetDesired",
            twins_pb2.SetDesiredRequest(
                device_id=device_id,
                desired=_values(values, "desired"),
                expected_revision=expected_revision,
            ),
            twins_pb2.Twin,
            Twin.from_pb,
        )

    @staticmethod
    def get_history(
        device_id: str, prop: str, from_ms: int, to_ms: int, bucket_ms: int, limit: int
    ) -> _Op[History]:
        return _Op(
            f"{_TWINS}/GetHistory",
            twins_pb2.GetHistoryRequest(
                device_id=device_id,
                property=prop,
                from_ms=from_ms,
                to_ms=to_ms,
                bucket_ms=bucket_ms,
                limit=limit,
            ),
            twins_pb2.GetHistoryResponse,
            History.from_pb,
        )

    @staticmethod
    def list_events(
        *,
        device_id: str,
        site: str,
        levels: Sequence[str],
        from_ms: int,
        to_ms: int,
        unacknowledged_only: bool,
        page_size: int,
        page_token: str,
    ) -> _Op[Page[Event]]:
        def convert(pb: twins_pb2.ListEventsResponse) -> Page[Event]:
            return _page(map(Event.from_pb, pb.events), pb.next_page_token)

        return _Op(
            f"{_TWINS}/ListEvents",
            twins_pb2.ListEventsRequest(
                device_id=device_id,
                site=site,
                levels=list(levels),
                from_ms=from_ms,
                to_ms=to_ms,
                unacknowledged_only=unacknowledged_only,
                page_size=page_size,
                page_token=page_token,
            ),
            twins_pb2.ListEventsResponse,
            convert,
        )

    @staticmethod
    def ack_alarm(event_id: str, comment: str) -> _Op[Event]:
        return _Op(
            f"{_TWINS}/AckAlarm",
            twins_pb2.AckAlarmRequest(event_id=event_id, comment=comment),
            common_pb2.EventRecord,
            Event.from_pb,
        )

    @staticmethod
    def send_command(
        device_id: str,
        *,
        set_properties: Mapping[str, JsonValue] | None,
        service: str | None,
        params: Mapping[str, JsonValue] | None,
        wait: bool,
        timeout: float | None,
        offline: OfflinePolicy,
        ttl: float | None,
        client_timeout: float,
    ) -> _Op[Command]:
        if (set_properties is None) == (service is None):
            raise ValueError("send_command: give exactly one of set_properties= or service=")
        if set_properties is not None and params:
            raise ValueError("send_command: params= goes with service=, not set_properties=")
        if offline not in _OFFLINE:
            raise ValueError(f"send_command: offline must be 'queue' or 'fail_fast': {offline!r}")
        if service is not None:
            kind, values = CommandKind.INVOKE_SERVICE, params or {}
        else:
            kind, values = CommandKind.SET_PROPERTIES, set_properties or {}
        request = commands_pb2.SendCommandRequest(
            device_id=device_id,
            kind=kind.to_pb(),
            service=service or "",
            params=_values(values, "params"),
            wait=wait,
            timeout_ms=_ms(timeout),
            offline=_OFFLINE[offline],
            ttl_ms=_ms(ttl),
        )
        # A waited command may take its whole wait: the call's deadline comes after it.
        deadline = (timeout if timeout is not None else 10.0) + client_timeout if wait else None
        return _Op(
            f"{_COMMANDS}/SendCommand", request, common_pb2.Command, Command.from_pb, deadline
        )

    @staticmethod
    def get_command(command_id: str) -> _Op[Command]:
        return _Op(
            f"{_COMMANDS}/GetCommand",
            commands_pb2.GetCommandRequest(id=command_id),
            common_pb2.Command,
            Command.from_pb,
        )


def _ms(seconds: float | None) -> int:
    return 0 if seconds is None else max(1, round(seconds * 1000))


def _new_device(
    device_id: str,
    model: str,
    edge_id: str,
    site: str,
    building: str,
    labels: Mapping[str, str] | None,
    location: Location | None,
) -> Device:
    return Device(
        id=device_id,
        model=model,
        edge_id=edge_id,
        site=site,
        building=building,
        labels=dict(labels or {}),
        location=location or Location(),
    )


@dataclass(frozen=True, slots=True)
class _WatchSpec:
    kinds: tuple[ChangeKind, ...]
    device_ids: tuple[str, ...]
    site: str
    model: str

    @classmethod
    def of(
        cls,
        kinds: Iterable[ChangeKind | str],
        device_ids: Iterable[str],
        site: str,
        model: str,
    ) -> _WatchSpec:
        return cls(tuple(ChangeKind(k) for k in kinds), tuple(device_ids), site, model)

    def request(self, resume_token: str) -> watch_pb2.WatchRequest:
        return watch_pb2.WatchRequest(
            kinds=[k.to_pb() for k in self.kinds],
            device_ids=list(self.device_ids),
            site=self.site,
            model=self.model,
            resume_token=resume_token,
        )


def _resume_point(error: RegistryError, token: str) -> str:
    """Where to resume after ``error``: the server names it when it cuts a stream (so a stream
    that saw no change yet resumes from where it started, not from a later "now")."""
    return error.metadata.get("resume_token") or token


def _reconnect_delay(attempt: int, first: float) -> float:
    return float(min(first * 2 ** max(attempt - 1, 0), 8.0))


def _options(extra: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [*_CHANNEL_OPTIONS, *extra]


# --------------------------------------------------------------------------- async client


class AsyncRegistryClient:
    """The registry API over a ``grpc.aio`` channel; use ``async with`` (or ``await close()``).

    ``target`` is ``host:port``; ``credentials`` (``grpc.ssl_channel_credentials(...)``) makes
    the channel TLS; ``metadata`` is sent with every call (e.g. ``("x-principal", "ops")``);
    ``timeout`` is each unary call's deadline in seconds.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float = 10.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._credentials = credentials
        self._metadata = tuple(metadata)
        self._options = _options(options)
        self._channel: aio.Channel | None = None  # opened in the event loop, on first use
        self._callables: dict[str, aio.UnaryUnaryMultiCallable[Any, Any]] = {}
        self._closed = False

    def _open(self) -> aio.Channel:
        if self._closed:
            raise RuntimeError("the registry client is closed")
        if self._channel is None:
            if self._credentials is None:
                self._channel = aio.insecure_channel(self.target, options=self._options)
            else:
                self._channel = aio.secure_channel(
                    self.target, self._credentials, options=self._options
                )
        return self._channel

    async def __aenter__(self) -> Self:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._closed = True
        self._callables.clear()
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    async def _call(self, op: _Op[T]) -> T:
        method = None if self._closed else self._callables.get(op.method)
        if method is None:
            method = self._open().unary_unary(
                op.method,
                request_serializer=_serialize,
                response_deserializer=op.response.FromString,
            )
            self._callables[op.method] = method
        try:
            response = await method(
                op.request,
                timeout=self.timeout if op.timeout is None else op.timeout,
                metadata=self._metadata,
            )
        except aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        return op.convert(response)

    async def _pages(self, op_for: Callable[[str], _Op[Page[T]]]) -> AsyncIterator[T]:
        token = ""
        while True:
            page = await self._call(op_for(token))
            for item in page.items:
                yield item
            token = page.next_page_token
            if not token:
                return

    # ---- models

    async def publish_model(self, document: str, *, dry_run: bool = False) -> PublishedModel:
        """Publish a model version (our YAML, Alibaba TSL JSON or WoT TM/TD JSON text).
        Invalid: :class:`InvalidArgument` with one violation per problem; a version bump too
        small: :class:`PreconditionFailed`; that version with another text: AlreadyExists."""
        return await self._call(_Ops.publish_model(document, dry_run))

    async def get_model(self, ref: str) -> Model:
        """``name@version``, or ``name`` for the newest version."""
        return await self._call(_Ops.get_model(ref))

    async def list_models(
        self, prefix: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> Page[ModelSummary]:
        """One page of model names (newest version of each), ordered by name."""
        return await self._call(_Ops.list_models(prefix, page_size, page_token))

    def iter_models(self, prefix: str = "", *, page_size: int = 0) -> AsyncIterator[ModelSummary]:
        """Every model name, page after page."""
        return self._pages(lambda token: _Ops.list_models(prefix, page_size, token))

    async def list_model_versions(self, name: str) -> tuple[Model, ...]:
        """Every version of a model, newest first (without their documents)."""
        return await self._call(_Ops.list_model_versions(name))

    async def diff_models(self, old_ref: str, new_ref: str) -> ModelDiff:
        return await self._call(_Ops.diff_models(old_ref, new_ref))

    async def export_model(self, ref: str, format: str = "yaml") -> ExportedModel:
        """The model in ``yaml``, ``tsl``, ``wot-td`` or ``wot-tm`` form."""
        return await self._call(_Ops.export_model(ref, format))

    # ---- devices

    async def register_device(
        self,
        device_id: str,
        *,
        model: str,
        edge_id: str,
        site: str,
        building: str = "",
        labels: Mapping[str, str] | None = None,
        location: Location | None = None,
    ) -> Device:
        """Register a device (``model``: exact ``name@version``); AlreadyExists for a taken id."""
        device = _new_device(device_id, model, edge_id, site, building, labels, location)
        return await self._call(_Ops.register_device(device))

    async def get_device(self, device_id: str) -> Device:
        return await self._call(_Ops.get_device(device_id))

    async def list_devices(
        self,
        *,
        model: str = "",
        site: str = "",
        edge_id: str = "",
        building: str = "",
        label_selector: str = "",
        online: bool | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[Device]:
        """One page of devices matching every given filter, ordered by id. ``label_selector``:
        ``key=value,key!=value,key,!key,key in (a,b),key notin (a,b)``."""
        return await self._call(
            _Ops.list_devices(
                model=model,
                site=site,
                edge_id=edge_id,
                building=building,
                label_selector=label_selector,
                online=online,
                page_size=page_size,
                page_token=page_token,
            )
        )

    def iter_devices(
        self,
        *,
        model: str = "",
        site: str = "",
        edge_id: str = "",
        building: str = "",
        label_selector: str = "",
        online: bool | None = None,
        page_size: int = 0,
    ) -> AsyncIterator[Device]:
        """Every matching device, page after page."""
        return self._pages(
            lambda token: _Ops.list_devices(
                model=model,
                site=site,
                edge_id=edge_id,
                building=building,
                label_selector=label_selector,
                online=online,
                page_size=page_size,
                page_token=token,
            )
        )

    async def update_device(
        self,
        device: Device,
        *,
        expected_revision: int | None = None,
        update_mask: Sequence[str] = (),
    ) -> Device:
        """Write the fields named in ``update_mask`` (every mutable field when empty) if the
        stored revision is ``expected_revision`` (default: ``device.revision``), else
        :class:`StaleRevision`."""
        return await self._call(_Ops.update_device(device, expected_revision, update_mask))

    async def delete_device(self, device_id: str, *, expected_revision: int = 0) -> None:
        await self._call(_Ops.delete_device(device_id, expected_revision))

    async def move_device(
        self, device_id: str, edge_id: str, *, expected_revision: int = 0
    ) -> Device:
        """Hand the device to another edge agent."""
        return await self._call(_Ops.move_device(device_id, edge_id, expected_revision))

    # ---- twins, history, events

    async def get_twin(self, device_id: str) -> Twin:
        return await self._call(_Ops.get_twin(device_id))

    async def set_desired(
        self, device_id: str, values: Mapping[str, JsonValue], *, expected_revision: int = 0
    ) -> Twin:
        """Set desired property values (None clears one), validated against the model."""
        return await self._call(_Ops.set_desired(device_id, values, expected_revision))

    async def get_history(
        self,
        device_id: str,
        property: str,
        *,
        from_ms: int = 0,
        to_ms: int = 0,
        bucket_ms: int = 0,
        limit: int = 0,
    ) -> History:
        """Raw points in ``[from_ms, to_ms)`` (to_ms 0: now), or min/max/avg per bucket."""
        return await self._call(
            _Ops.get_history(device_id, property, from_ms, to_ms, bucket_ms, limit)
        )

    async def list_events(
        self,
        device_id: str = "",
        *,
        site: str = "",
        levels: Sequence[str] = (),
        from_ms: int = 0,
        to_ms: int = 0,
        unacknowledged_only: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[Event]:
        """One page of events, newest first."""
        return await self._call(
            _Ops.list_events(
                device_id=device_id,
                site=site,
                levels=levels,
                from_ms=from_ms,
                to_ms=to_ms,
                unacknowledged_only=unacknowledged_only,
                page_size=page_size,
                page_token=page_token,
            )
        )

    def iter_events(
        self,
        device_id: str = "",
        *,
        site: str = "",
        levels: Sequence[str] = (),
        from_ms: int = 0,
        to_ms: int = 0,
        unacknowledged_only: bool = False,
        page_size: int = 0,
    ) -> AsyncIterator[Event]:
        """Every matching event, newest first, page after page."""
        return self._pages(
            lambda token: _Ops.list_events(
                device_id=device_id,
                site=site,
                levels=levels,
                from_ms=from_ms,
                to_ms=to_ms,
                unacknowledged_only=unacknowledged_only,
                page_size=page_size,
                page_token=token,
            )
        )

    async def ack_alarm(self, event_id: str, comment: str = "") -> Event:
        """Acknowledge an alarm (idempotent)."""
        return await self._call(_Ops.ack_alarm(event_id, comment))

    # ---- commands

    async def send_command(
        self,
        device_id: str,
        *,
        set_properties: Mapping[str, JsonValue] | None = None,
        service: str | None = None,
        params: Mapping[str, JsonValue] | None = None,
        wait: bool = False,
        timeout: float | None = None,
        offline: OfflinePolicy = "queue",
        ttl: float | None = None,
    ) -> Command:
        """Write properties (``set_properties={...}``) or call a service (``service=``,
        ``params=``). ``wait``: return when it is over or ``timeout`` seconds passed
        (:class:`DeadlineExceeded`; the command goes on). ``offline="fail_fast"``:
        :class:`Unavailable` when the device's edge is not connected; otherwise it is queued
        for ``ttl`` seconds (default: the registry's, one hour)."""
        return await self._call(
            _Ops.send_command(
                device_id,
                set_properties=set_properties,
                service=service,
                params=params,
                wait=wait,
                timeout=timeout,
                offline=offline,
                ttl=ttl,
                client_timeout=self.timeout,
            )
        )

    async def get_command(self, command_id: str) -> Command:
        return await self._call(_Ops.get_command(command_id))

    # ---- watch

    def watch(
        self,
        *,
        kinds: Iterable[ChangeKind | str] = (),
        device_ids: Iterable[str] = (),
        site: str = "",
        model: str = "",
        resume_token: str = "",
        auto_resume: bool = False,
        reconnect_delay: float = 0.25,
        max_reconnects: int | None = None,
    ) -> AsyncWatchStream:
        """Changes in commit order, from now (or after ``resume_token``), matching every filter.

        With ``auto_resume`` the stream reconnects after :class:`Unavailable` from the last
        change's token (delays doubling from ``reconnect_delay`` up to 8 s; at most
        ``max_reconnects`` failures in a row, None: no limit) and misses nothing."""
        spec = _WatchSpec.of(kinds, device_ids, site, model)
        return AsyncWatchStream(
            self, spec, resume_token, auto_resume, reconnect_delay, max_reconnects
        )

    def _watch_call(self, request: watch_pb2.WatchRequest) -> Any:
        method = self._open().unary_stream(
            _WATCH,
            request_serializer=_serialize,
            response_deserializer=watch_pb2.Change.FromString,
        )
        return method(request, metadata=self._metadata)


class AsyncWatchStream:
    """An async iterator of :class:`Change`; ``resume_token`` is the last one seen. Close it
    with ``aclose()`` or ``async with`` when stopping early."""

    def __init__(
        self,
        client: AsyncRegistryClient,
        spec: _WatchSpec,
        resume_token: str,
        auto_resume: bool,
        reconnect_delay: float,
        max_reconnects: int | None,
    ) -> None:
        self.resume_token = resume_token
        self._client = client
        self._spec = spec
        self._auto_resume = auto_resume
        self._reconnect_delay = reconnect_delay
        self._max_reconnects = max_reconnects
        self._call: Any = None
        self._failures = 0
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()
            self._call = None

    async def __anext__(self) -> Change:
        while not self._closed:
            if self._call is None:
                self._call = self._client._watch_call(self._spec.request(self.resume_token))
            try:
                message = await self._call.read()
            except aio.AioRpcError as exc:
                self._call = None
                if exc.code() == grpc.StatusCode.CANCELLED and self._closed:
                    break
                error = from_rpc_error(exc)
                if not self._should_resume(error):
                    raise error from exc
                self.resume_token = _resume_point(error, self.resume_token)
                self._failures += 1
                await asyncio.sleep(_reconnect_delay(self._failures, self._reconnect_delay))
                continue
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed and task is not None and not task.cancelling():
                    break  # aclose() from another task cancelled the read: the stream ends
                await self.aclose()
                raise
            if message is aio.EOF:
                self._call = None
                self._closed = True
                break
            self._failures = 0
            change = Change.from_pb(message)
            self.resume_token = change.resume_token
            return change
        raise StopAsyncIteration

    def _should_resume(self, error: RegistryError) -> bool:
        if not self._auto_resume or not isinstance(error, Unavailable):
            return False
        return self._max_reconnects is None or self._failures < self._max_reconnects


# --------------------------------------------------------------------------- sync client


class RegistryClient:
    """The registry API over a plain (blocking) gRPC channel; same methods and arguments as
    :class:`AsyncRegistryClient`. Use ``with`` (or ``close()``); safe to share between
    threads."""

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float = 10.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._metadata = tuple(metadata)
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=_options(options))
        else:
            self._channel = grpc.secure_channel(target, credentials, options=_options(options))
        self._callables: dict[str, grpc.UnaryUnaryMultiCallable[Any, Any]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        with self._lock:
            self._closed = True
            self._callables.clear()
        self._channel.close()

    def _call(self, op: _Op[T]) -> T:
        with self._lock:
            if self._closed:
                raise RuntimeError("the registry client is closed")
            method = self._callables.get(op.method)
            if method is None:
                method = self._channel.unary_unary(
                    op.method,
                    request_serializer=_serialize,
                    response_deserializer=op.response.FromString,
                )
                self._callables[op.method] = method
        try:
            response = method(
                op.request,
                timeout=self.timeout if op.timeout is None else op.timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return op.convert(response)

    def _pages(self, op_for: Callable[[str], _Op[Page[T]]]) -> Iterator[T]:
        token = ""
        while True:
            page = self._call(op_for(token))
            yield from page.items
            token = page.next_page_token
            if not token:
                return

    # ---- models

    def publish_model(self, document: str, *, dry_run: bool = False) -> PublishedModel:
        """See :meth:`AsyncRegistryClient.publish_model`."""
        return self._call(_Ops.publish_model(document, dry_run))

    def get_model(self, ref: str) -> Model:
        """``name@version``, or ``name`` for the newest version."""
        return self._call(_Ops.get_model(ref))

    def list_models(
        self, prefix: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> Page[ModelSummary]:
        return self._call(_Ops.list_models(prefix, page_size, page_token))

    def iter_models(self, prefix: str = "", *, page_size: int = 0) -> Iterator[ModelSummary]:
        return self._pages(lambda token: _Ops.list_models(prefix, page_size, token))

    def list_model_versions(self, name: str) -> tuple[Model, ...]:
        return self._call(_Ops.list_model_versions(name))

    def diff_models(self, old_ref: str, new_ref: str) -> ModelDiff:
        return self._call(_Ops.diff_models(old_ref, new_ref))

    def export_model(self, ref: str, format: str = "yaml") -> ExportedModel:
        return self._call(_Ops.export_model(ref, format))

    # ---- devices

    def register_device(
        self,
        device_id: str,
        *,
        model: str,
        edge_id: str,
        site: str,
        building: str = "",
        labels: Mapping[str, str] | None = None,
        location: Location | None = None,
    ) -> Device:
        device = _new_device(device_id, model, edge_id, site, building, labels, location)
        return self._call(_Ops.register_device(device))

    def get_device(self, device_id: str) -> Device:
        return self._call(_Ops.get_device(device_id))

    def list_devices(
        self,
        *,
        model: str = "",
        site: str = "",
        edge_id: str = "",
        building: str = "",
        label_selector: str = "",
        online: bool | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[Device]:
        return self._call(
            _Ops.list_devices(
                model=model,
                site=site,
                edge_id=edge_id,
                building=building,
                label_selector=label_selector,
                online=online,
                page_size=page_size,
                page_token=page_token,
            )
        )

    def iter_devices(
        self,
        *,
        model: str = "",
        site: str = "",
        edge_id: str = "",
        building: str = "",
        label_selector: str = "",
        online: bool | None = None,
        page_size: int = 0,
    ) -> Iterator[Device]:
        return self._pages(
            lambda token: _Ops.list_devices(
                model=model,
                site=site,
                edge_id=edge_id,
                building=building,
                label_selector=label_selector,
                online=online,
                page_size=page_size,
                page_token=token,
            )
        )

    def update_device(
        self,
        device: Device,
        *,
        expected_revision: int | None = None,
        update_mask: Sequence[str] = (),
    ) -> Device:
        return self._call(_Ops.update_device(device, expected_revision, update_mask))

    def delete_device(self, device_id: str, *, expected_revision: int = 0) -> None:
        self._call(_Ops.delete_device(device_id, expected_revision))

    def move_device(self, device_id: str, edge_id: str, *, expected_revision: int = 0) -> Device:
        return self._call(_Ops.move_device(device_id, edge_id, expected_revision))

    # ---- twins, history, events

    def get_twin(self, device_id: str) -> Twin:
        return self._call(_Ops.get_twin(device_id))

    def set_desired(
        self, device_id: str, values: Mapping[str, JsonValue], *, expected_revision: int = 0
    ) -> Twin:
        return self._call(_Ops.set_desired(device_id, values, expected_revision))

    def get_history(
        self,
        device_id: str,
        property: str,
        *,
        from_ms: int = 0,
        to_ms: int = 0,
        bucket_ms: int = 0,
        limit: int = 0,
    ) -> History:
        return self._call(_Ops.get_history(device_id, property, from_ms, to_ms, bucket_ms, limit))

    def list_events(
        self,
        device_id: str = "",
        *,
        site: str = "",
        levels: Sequence[str] = (),
        from_ms: int = 0,
        to_ms: int = 0,
        unacknowledged_only: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[Event]:
        return self._call(
            _Ops.list_events(
                device_id=device_id,
                site=site,
                levels=levels,
                from_ms=from_ms,
                to_ms=to_ms,
                unacknowledged_only=unacknowledged_only,
                page_size=page_size,
                page_token=page_token,
            )
        )

    def iter_events(
        self,
        device_id: str = "",
        *,
        site: str = "",
        levels: Sequence[str] = (),
        from_ms: int = 0,
        to_ms: int = 0,
        unacknowledged_only: bool = False,
        page_size: int = 0,
    ) -> Iterator[Event]:
        return self._pages(
            lambda token: _Ops.list_events(
                device_id=device_id,
                site=site,
                levels=levels,
                from_ms=from_ms,
                to_ms=to_ms,
                unacknowledged_only=unacknowledged_only,
                page_size=page_size,
                page_token=token,
            )
        )

    def ack_alarm(self, event_id: str, comment: str = "") -> Event:
        return self._call(_Ops.ack_alarm(event_id, comment))

    # ---- commands

    def send_command(
        self,
        device_id: str,
        *,
        set_properties: Mapping[str, JsonValue] | None = None,
        service: str | None = None,
        params: Mapping[str, JsonValue] | None = None,
        wait: bool = False,
        timeout: float | None = None,
        offline: OfflinePolicy = "queue",
        ttl: float | None = None,
    ) -> Command:
        """See :meth:`AsyncRegistryClient.send_command`."""
        return self._call(
            _Ops.send_command(
                device_id,
                set_properties=set_properties,
                service=service,
                params=params,
                wait=wait,
                timeout=timeout,
                offline=offline,
                ttl=ttl,
                client_timeout=self.timeout,
            )
        )

    def get_command(self, command_id: str) -> Command:
        return self._call(_Ops.get_command(command_id))

    # ---- watch

    def watch(
        self,
        *,
        kinds: Iterable[ChangeKind | str] = (),
        device_ids: Iterable[str] = (),
        site: str = "",
        model: str = "",
        resume_token: str = "",
        auto_resume: bool = False,
        reconnect_delay: float = 0.25,
        max_reconnects: int | None = None,
    ) -> WatchStream:
        """See :meth:`AsyncRegistryClient.watch`; close the stream (``with`` or ``close()``),
        from any thread, to stop it."""
        spec = _WatchSpec.of(kinds, device_ids, site, model)
        return WatchStream(self, spec, resume_token, auto_resume, reconnect_delay, max_reconnects)

    def _watch_call(self, request: watch_pb2.WatchRequest) -> Any:
        method = self._channel.unary_stream(
            _WATCH,
            request_serializer=_serialize,
            response_deserializer=watch_pb2.Change.FromString,
        )
        return method(request, metadata=self._metadata)


class WatchStream:
    """An iterator of :class:`Change`; ``resume_token`` is the last one seen. ``close()`` (from
    any thread) ends the iteration."""

    def __init__(
        self,
        client: RegistryClient,
        spec: _WatchSpec,
        resume_token: str,
        auto_resume: bool,
        reconnect_delay: float,
        max_reconnects: int | None,
    ) -> None:
        self.resume_token = resume_token
        self._client = client
        self._spec = spec
        self._auto_resume = auto_resume
        self._reconnect_delay = reconnect_delay
        self._max_reconnects = max_reconnects
        self._call: Any = None
        self._failures = 0
        self._closed = threading.Event()
        self._lock = threading.Lock()

    def __iter__(self) -> Self:
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            call, self._call = self._call, None
        if call is not None:
            call.cancel()

    def _current(self) -> Any:
        with self._lock:
            if self._call is None and not self._closed.is_set():
                self._call = self._client._watch_call(self._spec.request(self.resume_token))
            return self._call

    def __next__(self) -> Change:
        while not self._closed.is_set():
            call = self._current()
            if call is None:
                break
            try:
                message = next(call)
            except StopIteration:
                self.close()
                break
            except grpc.RpcError as exc:
                with self._lock:
                    if self._call is call:
                        self._call = None
                if self._closed.is_set():
                    break
                error = from_rpc_error(exc)
                if not self._should_resume(error):
                    raise error from exc
                self.resume_token = _resume_point(error, self.resume_token)
                self._failures += 1
                self._closed.wait(_reconnect_delay(self._failures, self._reconnect_delay))
                continue
            self._failures = 0
            change = Change.from_pb(message)
            self.resume_token = change.resume_token
            return change
        raise StopIteration

    def _should_resume(self, error: RegistryError) -> bool:
        if not self._auto_resume or not isinstance(error, Unavailable):
            return False
        return self._max_reconnects is None or self._failures < self._max_reconnects
