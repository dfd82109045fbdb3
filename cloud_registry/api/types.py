"""Typed results of the registry client: frozen dataclasses over the v1 wire messages.

Each type converts from and to its protobuf message (``from_pb``/``to_pb``) and to plain JSON
data (``to_dict``, what ``--json`` prints). Values (twin properties, event and command
parameters) are JSON values as in :mod:`thing_models.messages`: integers and floats stay
distinct. Times are integers, milliseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeAlias, TypeVar

from cloud_registry.api.v1 import common_pb2, models_pb2, twins_pb2, watch_pb2
from thing_models.messages import (
    quality_from_protobuf,
    quality_to_protobuf,
    value_from_protobuf,
    value_to_protobuf,
)
from thing_models.proto import thing_message_pb2

__all__ = [
    "Change",
    "ChangeKind",
    "Command",
    "CommandKind",
    "CommandStatus",
    "Device",
    "Event",
    "ExportedModel",
    "History",
    "HistoryBucket",
    "HistoryPoint",
    "JsonValue",
    "Location",
    "Model",
    "ModelChange",
    "ModelDiff",
    "ModelSummary",
    "Page",
    "PropertyState",
    "PublishedModel",
    "Twin",
    "TwinChange",
]

JsonValue: TypeAlias = Any
T = TypeVar("T")


def _plain(value: Any) -> Any:
    """JSON-friendly form of a result: dataclasses to dicts, enums to their strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _values_from_pb(fields: Mapping[str, thing_message_pb2.Value], path: str) -> dict[str, Any]:
    return {
        name: value_from_protobuf(value, f"{path}.{name}") for name, value in sorted(fields.items())
    }


def _fill_values(target: Any, values: Mapping[str, JsonValue], path: str) -> None:
    for name, value in values.items():
        target[name].CopyFrom(value_to_protobuf(value, f"{path}.{name}"))


class _Plain:
    """Gives a dataclass ``to_dict`` (JSON-friendly plain data)."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = _plain(self)
        return result


# --------------------------------------------------------------------------- enums


class ChangeKind(StrEnum):
    """What a :class:`Change` is about (``CHANGE_KIND_*`` on the wire)."""

    TWIN_REPORTED = "twin_reported"
    TWIN_DESIRED = "twin_desired"
    EVENT = "event"
    DEVICE_CREATED = "device_created"
    DEVICE_UPDATED = "device_updated"
    DEVICE_DELETED = "device_deleted"
    MODEL_PUBLISHED = "model_published"
    COMMAND_UPDATED = "command_updated"
    ALARM_ACKNOWLEDGED = "alarm_acknowledged"

    def to_pb(self) -> watch_pb2.ChangeKind:
        return _CHANGE_KIND_TO_PB[self]

    @classmethod
    def from_pb(cls, number: int) -> ChangeKind | None:
        """The kind of a wire number; None for unspecified or one newer than this client."""
        return _CHANGE_KIND_FROM_PB.get(number)


class CommandKind(StrEnum):
    SET_PROPERTIES = "set_properties"
    INVOKE_SERVICE = "invoke_service"

    def to_pb(self) -> common_pb2.CommandKind:
        return _COMMAND_KIND_TO_PB[self]

    @classmethod
    def from_pb(cls, number: int) -> CommandKind | None:
        return _COMMAND_KIND_FROM_PB.get(number)


class CommandStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    REJECTED = "rejected"
    UNKNOWN = "unknown"  # unspecified on the wire, or a status newer than this client

    @property
    def final(self) -> bool:
        """Whether the command is over (it will not change any more)."""
        return self in (
            CommandStatus.SUCCEEDED,
            CommandStatus.FAILED,
            CommandStatus.EXPIRED,
            CommandStatus.REJECTED,
        )

    def to_pb(self) -> common_pb2.CommandStatus:
        return _COMMAND_STATUS_TO_PB[self]

    @classmethod
    def from_pb(cls, number: int) -> CommandStatus:
        return _COMMAND_STATUS_FROM_PB.get(number, cls.UNKNOWN)


_CHANGE_KIND_TO_PB: dict[ChangeKind, watch_pb2.ChangeKind] = {
    ChangeKind.TWIN_REPORTED: watch_pb2.CHANGE_KIND_TWIN_REPORTED,
    ChangeKind.TWIN_DESIRED: watch_pb2.CHANGE_KIND_TWIN_DESIRED,
    ChangeKind.EVENT: watch_pb2.CHANGE_KIND_EVENT,
    ChangeKind.DEVICE_CREATED: watch_pb2.CHANGE_KIND_DEVICE_CREATED,
    ChangeKind.DEVICE_UPDATED: watch_pb2.CHANGE_KIND_DEVICE_UPDATED,
    ChangeKind.DEVICE_DELETED: watch_pb2.CHANGE_KIND_DEVICE_DELETED,
    ChangeKind.MODEL_PUBLISHED: watch_pb2.CHANGE_KIND_MODEL_PUBLISHED,
    ChangeKind.COMMAND_UPDATED: watch_pb2.CHANGE_KIND_COMMAND_UPDATED,
    ChangeKind.ALARM_ACKNOWLEDGED: watch_pb2.CHANGE_KIND_ALARM_ACKNOWLEDGED,
}
_CHANGE_KIND_FROM_PB = {int(v): k for k, v in _CHANGE_KIND_TO_PB.items()}
_COMMAND_KIND_TO_PB: dict[CommandKind, common_pb2.CommandKind] = {
    CommandKind.SET_PROPERTIES: common_pb2.COMMAND_KIND_SET_PROPERTIES,
    CommandKind.INVOKE_SERVICE: common_pb2.COMMAND_KIND_INVOKE_SERVICE,
}
_COMMAND_KIND_FROM_PB = {int(v): k for k, v in _COMMAND_KIND_TO_PB.items()}
_COMMAND_STATUS_TO_PB: dict[CommandStatus, common_pb2.CommandStatus] = {
    CommandStatus.QUEUED: common_pb2.COMMAND_STATUS_QUEUED,
    CommandStatus.SENT: common_pb2.COMMAND_STATUS_SENT,
    CommandStatus.SUCCEEDED: common_pb2.COMMAND_STATUS_SUCCEEDED,
    CommandStatus.FAILED: common_pb2.COMMAND_STATUS_FAILED,
    CommandStatus.EXPIRED: common_pb2.COMMAND_STATUS_EXPIRED,
    CommandStatus.REJECTED: common_pb2.COMMAND_STATUS_REJECTED,
    CommandStatus.UNKNOWN: common_pb2.COMMAND_STATUS_UNSPECIFIED,
}
_COMMAND_STATUS_FROM_PB = {
    int(v): k for k, v in _COMMAND_STATUS_TO_PB.items() if k is not CommandStatus.UNKNOWN
}


# --------------------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class Model(_Plain):
    """A published model version. ``document_yaml`` is empty in version listings."""

    name: str
    version: str
    title: str = ""
    vendor: str = ""
    description: str = ""
    document_yaml: str = ""
    published_ms: int = 0
    property_count: int = 0
    event_count: int = 0
    service_count: int = 0

    @property
    def ref(self) -> str:
        """The exact reference ``name@version``."""
        return f"{self.name}@{self.version}"

    @classmethod
    def from_pb(cls, pb: common_pb2.ModelRecord) -> Model:
        return cls(
            name=pb.name,
            version=pb.version,
            title=pb.title,
            vendor=pb.vendor,
            description=pb.description,
            document_yaml=pb.document_yaml,
            published_ms=pb.published_ms,
            property_count=pb.property_count,
            event_count=pb.event_count,
            service_count=pb.service_count,
        )

    def to_pb(self) -> common_pb2.ModelRecord:
        return common_pb2.ModelRecord(
            name=self.name,
            version=self.version,
            title=self.title,
            vendor=self.vendor,
            description=self.description,
            document_yaml=self.document_yaml,
            published_ms=self.published_ms,
            property_count=self.property_count,
            event_count=self.event_count,
            service_count=self.service_count,
        )


@dataclass(frozen=True, slots=True)
class PublishedModel(_Plain):
    """What publishing returned: the stored version, importer notes, and whether this exact
    version and document were published before (nothing changed)."""

    model: Model
    notes: tuple[str, ...] = ()
    unchanged: bool = False

    @classmethod
    def from_pb(cls, pb: models_pb2.PublishModelResponse) -> PublishedModel:
        return cls(Model.from_pb(pb.model), tuple(pb.notes), pb.unchanged)

    def to_pb(self) -> models_pb2.PublishModelResponse:
        return models_pb2.PublishModelResponse(
            model=self.model.to_pb(), notes=self.notes, unchanged=self.unchanged
        )


@dataclass(frozen=True, slots=True)
class ModelSummary(_Plain):
    """One model name in a listing: its newest version and how many versions exist."""

    name: str
    latest_version: str
    title: str = ""
    vendor: str = ""
    version_count: int = 0

    @classmethod
    def from_pb(cls, pb: models_pb2.ModelSummary) -> ModelSummary:
        return cls(pb.name, pb.latest_version, pb.title, pb.vendor, pb.version_count)

    def to_pb(self) -> models_pb2.ModelSummary:
        return models_pb2.ModelSummary(
            name=self.name,
            latest_version=self.latest_version,
            title=self.title,
            vendor=self.vendor,
            version_count=self.version_count,
        )


@dataclass(frozen=True, slots=True)
class ModelChange(_Plain):
    severity: str  # major | minor | patch
    path: str
    description: str


@dataclass(frozen=True, slots=True)
class ModelDiff(_Plain):
    """Changes between two versions; ``ok`` when the declared bump covers the required one."""

    changes: tuple[ModelChange, ...]
    required: str  # none | patch | minor | major
    declared: str
    ok: bool

    @classmethod
    def from_pb(cls, pb: models_pb2.DiffModelsResponse) -> ModelDiff:
        changes = tuple(ModelChange(c.severity, c.path, c.description) for c in pb.changes)
        return cls(changes, pb.required, pb.declared, pb.ok)

    def to_pb(self) -> models_pb2.DiffModelsResponse:
        return models_pb2.DiffModelsResponse(
            changes=[
                models_pb2.ModelChange(severity=c.severity, path=c.path, description=c.description)
                for c in self.changes
            ],
            required=self.required,
            declared=self.declared,
            ok=self.ok,
        )


@dataclass(frozen=True, slots=True)
class ExportedModel(_Plain):
    """A model in another format; ``losses`` names what that format cannot express."""

    document: str
    media_type: str = ""
    losses: tuple[str, ...] = ()

    @classmethod
    def from_pb(cls, pb: models_pb2.ExportModelResponse) -> ExportedModel:
        return cls(pb.document, pb.media_type, tuple(pb.losses))

    def to_pb(self) -> models_pb2.ExportModelResponse:
        return models_pb2.ExportModelResponse(
            document=self.document, losses=self.losses, media_type=self.media_type
        )


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True, slots=True)
class Location(_Plain):
    """Where a device is; latitude and longitude are both set or both None."""

    latitude: float | None = None
    longitude: float | None = None
    floor: str = ""
    room: str = ""

    @classmethod
    def from_pb(cls, pb: common_pb2.Location) -> Location:
        if pb.has_coordinates:
            return cls(pb.latitude, pb.longitude, pb.floor, pb.room)
        return cls(None, None, pb.floor, pb.room)

    def to_pb(self) -> common_pb2.Location:
        if self.latitude is None or self.longitude is None:
            return common_pb2.Location(floor=self.floor, room=self.room)
        return common_pb2.Location(
            has_coordinates=True,
            latitude=self.latitude,
            longitude=self.longitude,
            floor=self.floor,
            room=self.room,
        )


@dataclass(frozen=True, slots=True)
class Device(_Plain):
    """A registered device; ``model`` is an exact reference ``name@version``. ``online``,
    ``revision`` and the times are maintained by the registry (ignored when sent)."""

    id: str
    model: str
    edge_id: str
    site: str
    building: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    location: Location = Location()
    online: bool = False
    revision: int = 0
    created_ms: int = 0
    updated_ms: int = 0
    last_seen_ms: int = 0

    #: The fields an update may change (``update_mask`` names).
    MUTABLE_FIELDS: ClassVar[tuple[str, ...]] = (
        "model",
        "edge_id",
        "site",
        "building",
        "labels",
        "location",
    )

    @property
    def model_name(self) -> str:
        return self.model.partition("@")[0]

    @classmethod
    def from_pb(cls, pb: common_pb2.Device) -> Device:
        return cls(
            id=pb.id,
            model=pb.model,
            edge_id=pb.edge_id,
            site=pb.site,
            building=pb.building,
            labels=dict(sorted(pb.labels.items())),
            location=Location.from_pb(pb.location),
            online=pb.online,
            revision=pb.revision,
            created_ms=pb.created_ms,
            updated_ms=pb.updated_ms,
            last_seen_ms=pb.last_seen_ms,
        )

    def to_pb(self) -> common_pb2.Device:
        return common_pb2.Device(
            id=self.id,
            model=self.model,
            edge_id=self.edge_id,
            site=self.site,
            building=self.building,
            labels=dict(self.labels),
            location=self.location.to_pb(),
            online=self.online,
            revision=self.revision,
            created_ms=self.created_ms,
            updated_ms=self.updated_ms,
            last_seen_ms=self.last_seen_ms,
        )


# --------------------------------------------------------------------------- twins


@dataclass(frozen=True, slots=True)
class PropertyState(_Plain):
    """A property's value as reported or desired, when, and how trustworthy (``good``,
    ``uncertain``, ``bad``)."""

    value: JsonValue
    ts_ms: int
    quality: str = "good"

    @classmethod
    def from_pb(cls, pb: common_pb2.PropertyState, path: str = "value") -> PropertyState:
        quality = str(quality_from_protobuf(pb.quality)) if pb.quality else "good"
        return cls(value_from_protobuf(pb.value, path), pb.ts_ms, quality)

    def to_pb(self) -> common_pb2.PropertyState:
        return common_pb2.PropertyState(
            value=value_to_protobuf(self.value),
            ts_ms=self.ts_ms,
            quality=quality_to_protobuf(self.quality),  # type: ignore[arg-type]
        )


def _states_from_pb(
    states: Mapping[str, common_pb2.PropertyState], path: str
) -> dict[str, PropertyState]:
    return {
        name: PropertyState.from_pb(state, f"{path}.{name}")
        for name, state in sorted(states.items())
    }


def _fill_states(target: Any, states: Mapping[str, PropertyState]) -> None:
    for name, state in states.items():
        target[name].CopyFrom(state.to_pb())


@dataclass(frozen=True, slots=True)
class Twin(_Plain):
    """A device's digital twin. ``delta``: desired values that differ from the reported."""

    device_id: str
    model: str
    reported: Mapping[str, PropertyState] = field(default_factory=dict)
    desired: Mapping[str, PropertyState] = field(default_factory=dict)
    delta: Mapping[str, JsonValue] = field(default_factory=dict)
    revision: int = 0

    @classmethod
    def from_pb(cls, pb: twins_pb2.Twin) -> Twin:
        return cls(
            device_id=pb.device_id,
            model=pb.model,
            reported=_states_from_pb(pb.reported, "reported"),
            desired=_states_from_pb(pb.desired, "desired"),
            delta=_values_from_pb(pb.delta, "delta"),
            revision=pb.revision,
        )

    def to_pb(self) -> twins_pb2.Twin:
        pb = twins_pb2.Twin(device_id=self.device_id, model=self.model, revision=self.revision)
        _fill_states(pb.reported, self.reported)
        _fill_states(pb.desired, self.desired)
        _fill_values(pb.delta, self.delta, "delta")
        return pb


@dataclass(frozen=True, slots=True)
class HistoryPoint(_Plain):
    ts_ms: int
    value: JsonValue
    quality: str = "good"

    @classmethod
    def from_pb(cls, pb: twins_pb2.HistoryPoint) -> HistoryPoint:
        quality = str(quality_from_protobuf(pb.quality)) if pb.quality else "good"
        return cls(pb.ts_ms, value_from_protobuf(pb.value), quality)

    def to_pb(self) -> twins_pb2.HistoryPoint:
        return twins_pb2.HistoryPoint(
            ts_ms=self.ts_ms,
            value=value_to_protobuf(self.value),
            quality=quality_to_protobuf(self.quality),  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class HistoryBucket(_Plain):
    """Aggregates of the numeric values in ``[start_ms, start_ms + bucket_ms)``."""

    start_ms: int
    min: float
    max: float
    avg: float
    count: int

    @classmethod
    def from_pb(cls, pb: twins_pb2.HistoryBucket) -> HistoryBucket:
        return cls(pb.start_ms, pb.min, pb.max, pb.avg, pb.count)

    def to_pb(self) -> twins_pb2.HistoryBucket:
        return twins_pb2.HistoryBucket(
            start_ms=self.start_ms, min=self.min, max=self.max, avg=self.avg, count=self.count
        )


@dataclass(frozen=True, slots=True)
class History(_Plain):
    """A property's history: raw ``points`` (oldest first; ``truncated`` when more existed than
    the limit) or, when a bucket size was asked, ``buckets``."""

    points: tuple[HistoryPoint, ...] = ()
    buckets: tuple[HistoryBucket, ...] = ()
    truncated: bool = False

    @classmethod
    def from_pb(cls, pb: twins_pb2.GetHistoryResponse) -> History:
        return cls(
            tuple(HistoryPoint.from_pb(p) for p in pb.points),
            tuple(HistoryBucket.from_pb(b) for b in pb.buckets),
            pb.truncated,
        )

    def to_pb(self) -> twins_pb2.GetHistoryResponse:
        return twins_pb2.GetHistoryResponse(
            points=[p.to_pb() for p in self.points],
            buckets=[b.to_pb() for b in self.buckets],
            truncated=self.truncated,
        )


@dataclass(frozen=True, slots=True)
class Event(_Plain):
    """A stored event; alarms are events of level ``alert`` or ``error``."""

    id: str
    device_id: str
    name: str
    level: str  # info | alert | error
    ts_ms: int
    params: Mapping[str, JsonValue] = field(default_factory=dict)
    acknowledged: bool = False
    acknowledged_by: str = ""
    acknowledged_ms: int = 0
    comment: str = ""

    @classmethod
    def from_pb(cls, pb: common_pb2.EventRecord) -> Event:
        return cls(
            id=pb.id,
            device_id=pb.device_id,
            name=pb.name,
            level=pb.level,
            ts_ms=pb.ts_ms,
            params=_values_from_pb(pb.params, "params"),
            acknowledged=pb.acknowledged,
            acknowledged_by=pb.acknowledged_by,
            acknowledged_ms=pb.acknowledged_ms,
            comment=pb.comment,
        )

    def to_pb(self) -> common_pb2.EventRecord:
        pb = common_pb2.EventRecord(
            id=self.id,
            device_id=self.device_id,
            name=self.name,
            level=self.level,
            ts_ms=self.ts_ms,
            acknowledged=self.acknowledged,
            acknowledged_by=self.acknowledged_by,
            acknowledged_ms=self.acknowledged_ms,
            comment=self.comment,
        )
        _fill_values(pb.params, self.params, "params")
        return pb


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Command(_Plain):
    """A property set or service invocation and what became of it."""

    id: str
    device_id: str
    edge_id: str
    kind: CommandKind | None
    status: CommandStatus
    service: str = ""
    params: Mapping[str, JsonValue] = field(default_factory=dict)
    result: Mapping[str, JsonValue] = field(default_factory=dict)
    error: str = ""
    created_ms: int = 0
    updated_ms: int = 0
    expires_ms: int = 0
    sequence: int = 0

    @property
    def final(self) -> bool:
        return self.status.final

    @classmethod
    def from_pb(cls, pb: common_pb2.Command) -> Command:
        return cls(
            id=pb.id,
            device_id=pb.device_id,
            edge_id=pb.edge_id,
            kind=CommandKind.from_pb(pb.kind),
            status=CommandStatus.from_pb(pb.status),
            service=pb.service,
            params=_values_from_pb(pb.params, "params"),
            result=_values_from_pb(pb.result, "result"),
            error=pb.error,
            created_ms=pb.created_ms,
            updated_ms=pb.updated_ms,
            expires_ms=pb.expires_ms,
            sequence=pb.sequence,
        )

    def to_pb(self) -> common_pb2.Command:
        pb = common_pb2.Command(
            id=self.id,
            device_id=self.device_id,
            edge_id=self.edge_id,
            kind=self.kind.to_pb() if self.kind else common_pb2.COMMAND_KIND_UNSPECIFIED,
            service=self.service,
            status=self.status.to_pb(),
            error=self.error,
            created_ms=self.created_ms,
            updated_ms=self.updated_ms,
            expires_ms=self.expires_ms,
            sequence=self.sequence,
        )
        _fill_values(pb.params, self.params, "params")
        _fill_values(pb.result, self.result, "result")
        return pb


# --------------------------------------------------------------------------- watch


@dataclass(frozen=True, slots=True)
class TwinChange(_Plain):
    """The twin properties a change set (a None value: a desired property cleared)."""

    properties: Mapping[str, PropertyState] = field(default_factory=dict)
    revision: int = 0

    @classmethod
    def from_pb(cls, pb: watch_pb2.TwinChange) -> TwinChange:
        return cls(_states_from_pb(pb.properties, "properties"), pb.revision)

    def to_pb(self) -> watch_pb2.TwinChange:
        pb = watch_pb2.TwinChange(revision=self.revision)
        _fill_states(pb.properties, self.properties)
        return pb


ChangePayload: TypeAlias = TwinChange | Event | Device | Model | Command | None


@dataclass(frozen=True, slots=True)
class Change(_Plain):
    """One committed change. Reconnect with ``resume_token`` of the last change seen to miss
    nothing. ``kind`` is None for a kind newer than this client. ``payload`` by kind: twin_*
    :class:`TwinChange`; event, alarm_acknowledged :class:`Event`; device_* :class:`Device`;
    model_published :class:`Model`; command_updated :class:`Command`."""

    resume_token: str
    kind: ChangeKind | None
    ts_ms: int
    device_id: str = ""
    site: str = ""
    model: str = ""
    payload: ChangePayload = None

    @classmethod
    def from_pb(cls, pb: watch_pb2.Change) -> Change:
        which = pb.WhichOneof("payload")
        payload: ChangePayload
        if which == "twin":
            payload = TwinChange.from_pb(pb.twin)
        elif which == "event":
            payload = Event.from_pb(pb.event)
        elif which == "device":
            payload = Device.from_pb(pb.device)
        elif which == "model_record":
            payload = Model.from_pb(pb.model_record)
        elif which == "command":
            payload = Command.from_pb(pb.command)
        else:
            payload = None
        return cls(
            resume_token=pb.resume_token,
            kind=ChangeKind.from_pb(pb.kind),
            ts_ms=pb.ts_ms,
            device_id=pb.device_id,
            site=pb.site,
            model=pb.model,
            payload=payload,
        )

    def to_pb(self) -> watch_pb2.Change:
        pb = watch_pb2.Change(
            resume_token=self.resume_token,
            kind=self.kind.to_pb() if self.kind else watch_pb2.CHANGE_KIND_UNSPECIFIED,
            ts_ms=self.ts_ms,
            device_id=self.device_id,
            site=self.site,
            model=self.model,
        )
        payload = self.payload
        if isinstance(payload, TwinChange):
            pb.twin.CopyFrom(payload.to_pb())
        elif isinstance(payload, Event):
            pb.event.CopyFrom(payload.to_pb())
        elif isinstance(payload, Device):
            pb.device.CopyFrom(payload.to_pb())
        elif isinstance(payload, Model):
            pb.model_record.CopyFrom(payload.to_pb())
        elif isinstance(payload, Command):
            pb.command.CopyFrom(payload.to_pb())
        return pb

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = _plain(self)
        result["payload_type"] = _PAYLOAD_TYPES.get(type(self.payload))
        return result


_PAYLOAD_TYPES: dict[type, str] = {
    TwinChange: "twin",
    Event: "event",
    Device: "device",
    Model: "model",
    Command: "command",
}


# --------------------------------------------------------------------------- pages


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; pass ``next_page_token`` back for the next (empty: last page)."""

    items: tuple[T, ...]
    next_page_token: str = ""

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def to_dict(self) -> dict[str, Any]:
        return {"items": _plain(self.items), "next_page_token": self.next_page_token}
