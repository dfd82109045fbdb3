"""Storage records <-> wire messages, and the checks every request goes through.

Pure functions (no I/O), shared by the servicers, the edge-sync session and the client:

* ``*_to_pb``: a storage record (``cloud_registry.storage.base``) as its protobuf message;
* ``*_from_pb``: a request's message as a checked record, raising
  :class:`~cloud_registry.server.errors.InvalidArgument` with one violation per bad field;
* ``check_*``: request fields (ids, names, page sizes, tokens, revisions, label selectors,
  enum numbers, values).

Rules: ids are 1-128 printable characters without whitespace; names and free text have no
control characters; page sizes follow AIP-158 (0: the default; negative: INVALID_ARGUMENT;
over the maximum: the maximum); ``expected_revision`` is never negative.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from cloud_registry.api.v1 import common_pb2, models_pb2, twins_pb2, watch_pb2
from cloud_registry.server.errors import InvalidArgument, Violation
from cloud_registry.storage.base import (
    ChangeEntry,
    ChangeKind,
    CommandEntry,
    CommandStatus,
    DeviceRecord,
    EventEntry,
    HistoryBucket,
    HistoryPoint,
    LabelRequirement,
    Location,
    ModelEntry,
    PropertyValue,
    TwinRecord,
)
from cloud_registry.storage.label_selector import (
    LabelSelectorError,
    parse_label_selector,
    validate_label_key,
    validate_label_value,
)
from thing_models.errors import MessageError
from thing_models.messages import (
    quality_from_protobuf,
    quality_to_protobuf,
    value_from_protobuf,
    value_to_protobuf,
)
from thing_models.model import ModelRef, SemVer
from thing_models.proto import thing_message_pb2

__all__ = [
    "COMMAND_KINDS",
    "EVENT_LEVELS",
    "MAX_ID_CHARS",
    "MAX_LABELS",
    "MAX_PAGE_TOKEN_CHARS",
    "MAX_TEXT_CHARS",
    "change_kind_from_pb",
    "change_kind_to_pb",
    "change_to_pb",
    "check_enum",
    "check_id",
    "check_labels",
    "check_model_ref",
    "check_name",
    "check_page_size",
    "check_page_token",
    "check_revision",
    "check_text",
    "command_kind_from_pb",
    "command_kind_to_pb",
    "command_status_from_pb",
    "command_status_to_pb",
    "command_to_pb",
    "device_from_payload",
    "device_from_pb",
    "device_to_pb",
    "event_to_pb",
    "first_violations",
    "history_bucket_to_pb",
    "history_point_to_pb",
    "location_from_pb",
    "location_to_pb",
    "model_record_to_pb",
    "model_summary_to_pb",
    "parse_selector",
    "property_state_to_pb",
    "quality_number",
    "quality_text",
    "twin_to_pb",
    "value_to_pb",
    "values_from_pb",
    "values_to_pb",
]

MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 1024
MAX_PAGE_TOKEN_CHARS = 1024
MAX_SELECTOR_CHARS = 4096
MAX_LABELS = 64
EVENT_LEVELS = frozenset({"info", "alert", "error"})
#: storage command kind <-> wire CommandKind
COMMAND_KINDS = {
    "set_properties": common_pb2.COMMAND_KIND_SET_PROPERTIES,
    "invoke_service": common_pb2.COMMAND_KIND_INVOKE_SERVICE,
}


# --------------------------------------------------------------------------- request checks


def _describe(value: str) -> str:
    if len(value) > 40:
        return f"{value[:40]!r}... ({len(value)} characters)"
    return repr(value)


def check_id(value: str, field: str, *, required: bool = True) -> str:
    """An id: 1-128 printable characters without whitespace (empty allowed when not
    ``required``)."""
    if not value:
        if required:
            raise InvalidArgument.field(field, "required")
        return value
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument.field(field, f"longer than {MAX_ID_CHARS} characters ({len(value)})")
    for ch in value:
        if not ch.isprintable() or ch.isspace():
            raise InvalidArgument.field(
                field,
                f"{_describe(value)} holds {ch!r}: ids are printable characters without whitespace",
            )
    return value


def check_name(value: str, field: str, *, required: bool = True) -> str:
    """A short name (site, building, floor...): at most 128 printable characters, spaces
    allowed but not only spaces."""
    if not value.strip():
        if required or value:
            raise InvalidArgument.field(field, "required" if not value else "blank")
        return value
    return check_text(value, field, limit=MAX_ID_CHARS)


def check_text(value: str, field: str, *, limit: int = MAX_TEXT_CHARS) -> str:
    """Free text: at most ``limit`` characters, no control characters (newlines and tabs
    allowed)."""
    if len(value) > limit:
        raise InvalidArgument.field(field, f"longer than {limit} characters ({len(value)})")
    for ch in value:
        if not ch.isprintable() and ch not in "\n\t ":
            raise InvalidArgument.field(field, f"holds the control character {ch!r}")
    return value


def check_page_size(
    value: int, field: str = "page_size", *, default: int = 100, maximum: int = 1000
) -> int:
    """0: ``default``; negative: INVALID_ARGUMENT; above ``maximum``: ``maximum``."""
    if value < 0:
        raise InvalidArgument.field(field, f"must not be negative (got {value})")
    if value == 0:
        return default
    return min(value, maximum)


def check_page_token(value: str, field: str = "page_token") -> str:
    """An opaque cursor as a previous response gave it: printable ASCII, bounded."""
    if len(value) > MAX_PAGE_TOKEN_CHARS:
        raise InvalidArgument.field(field, "not a page token from this registry (too long)")
    if value and not (value.isascii() and value.isprintable()):
        raise InvalidArgument.field(field, "not a page token from this registry")
    return value


def check_revision(value: int, field: str = "expected_revision", *, required: bool = False) -> int:
    """A revision: never negative; required: at least 1."""
    if value < 0:
        raise InvalidArgument.field(field, f"must not be negative (got {value})")
    if required and value == 0:
        raise InvalidArgument.field(field, "required: the revision you read")
    return value


def check_enum(value: int, enum: EnumTypeWrapper, field: str, *, allow_zero: bool = True) -> int:
    """A known number of a protobuf enum (proto3 keeps unknown numbers: refuse them)."""
    if value not in enum.DESCRIPTOR.values_by_number or (value == 0 and not allow_zero):
        known = ", ".join(v.name for v in enum.DESCRIPTOR.values if allow_zero or v.number != 0)
        raise InvalidArgument.field(field, f"unknown value {value}; expected one of {known}")
    return value


def check_model_ref(
    value: str, field: str, *, exact: bool = False, allow_partial: bool = True
) -> ModelRef:
    """A model reference ``namespace/name[@version]``. ``exact``: a full version is required;
    otherwise a partial version (``@1``, ``@1.2``) is allowed when ``allow_partial``."""
    if not value:
        raise InvalidArgument.field(field, "required")
    if len(value) > 2 * MAX_ID_CHARS:
        raise InvalidArgument.field(field, f"longer than {2 * MAX_ID_CHARS} characters")
    try:
        ref = ModelRef.parse(value)
    except ValueError as exc:
        raise InvalidArgument.field(field, str(exc)) from None
    if exact or (ref.version and not allow_partial):
        try:
            SemVer.parse(ref.version)
        except ValueError:
            raise InvalidArgument.field(
                field, f"{value!r}: an exact version is required (name@MAJOR.MINOR.PATCH)"
            ) from None
    return ref


def parse_selector(text: str, field: str = "label_selector") -> tuple[LabelRequirement, ...]:
    """A label selector's requirements; a parse error names the position."""
    if len(text) > MAX_SELECTOR_CHARS:
        raise InvalidArgument.field(field, f"longer than {MAX_SELECTOR_CHARS} characters")
    try:
        return parse_label_selector(text)
    except LabelSelectorError as exc:
        raise InvalidArgument.field(field, str(exc)) from None


def check_labels(labels: Mapping[str, str], field: str = "labels") -> dict[str, str]:
    """Labels with valid keys and values, at most :data:`MAX_LABELS`."""
    if len(labels) > MAX_LABELS:
        raise InvalidArgument.field(field, f"more than {MAX_LABELS} labels ({len(labels)})")
    violations: list[Violation] = []
    for key, value in labels.items():
        where = f"{field}[{_describe(key)}]" if len(key) > 63 else f"{field}.{key}"
        problem = validate_label_key(key) or validate_label_value(value)
        if problem:
            violations.append(Violation(where, problem))
    if violations:
        raise InvalidArgument.fields(violations)
    return dict(labels)


def values_from_pb(values: Mapping[str, thing_message_pb2.Value], field: str) -> dict[str, Any]:
    """A map of wire values as JSON values; every unusable value is one violation."""
    out: dict[str, Any] = {}
    violations: list[Violation] = []
    for key, value in values.items():
        where = f"{field}.{key}"
        try:
            out[key] = value_from_protobuf(value, where)
        except MessageError as exc:
            violations.append(Violation(where, str(exc).removeprefix(f"{where}: ")))
    if violations:
        raise InvalidArgument.fields(violations)
    return out


# --------------------------------------------------------------------------- values


def value_to_pb(value: Any, path: str = "value") -> thing_message_pb2.Value:
    """The wire form of a stored JSON value (a stored value that cannot travel becomes its
    text rather than breaking a response)."""
    try:
        return value_to_protobuf(value, path)
    except MessageError:
        return thing_message_pb2.Value(string_value=repr(value)[:MAX_TEXT_CHARS])


def values_to_pb(target: Any, values: Mapping[str, Any], path: str = "params") -> None:
    """Fill a protobuf ``map<string, Value>`` from JSON values."""
    for key, value in values.items():
        target[str(key)].CopyFrom(value_to_pb(value, f"{path}.{key}"))


def quality_number(quality: str) -> Any:
    """The wire number of a stored quality (unknown: QUALITY_UNSPECIFIED)."""
    try:
        return quality_to_protobuf(quality)
    except MessageError:
        return 0


def quality_text(number: int, field: str = "quality") -> str:
    """The stored quality of a wire number (unset or unknown: INVALID_ARGUMENT)."""
    try:
        return str(quality_from_protobuf(number).value)
    except MessageError as exc:
        raise InvalidArgument.field(field, str(exc)) from None


# --------------------------------------------------------------------------- devices


def location_to_pb(location: Location) -> common_pb2.Location:
    out = common_pb2.Location(floor=location.floor, room=location.room)
    if location.latitude is not None and location.longitude is not None:
        out.has_coordinates = True
        out.latitude = location.latitude
        out.longitude = location.longitude
    return out


def location_from_pb(location: common_pb2.Location, field: str = "location") -> Location:
    violations: list[Violation] = []
    latitude: float | None = None
    longitude: float | None = None
    if location.has_coordinates:
        latitude, longitude = location.latitude, location.longitude
        if not (math.isfinite(latitude) and -90.0 <= latitude <= 90.0):
            violations.append(Violation(f"{field}.latitude", f"{latitude} is not in [-90, 90]"))
        if not (math.isfinite(longitude) and -180.0 <= longitude <= 180.0):
            violations.append(Violation(f"{field}.longitude", f"{longitude} is not in [-180, 180]"))
    elif location.latitude or location.longitude:
        violations.append(
            Violation(f"{field}.has_coordinates", "set it when giving latitude and longitude")
        )
    for name in ("floor", "room"):
        try:
            check_name(getattr(location, name), f"{field}.{name}", required=False)
        except InvalidArgument as exc:
            violations.extend(exc.violations)
    if violations:
        raise InvalidArgument.fields(violations)
    return Location(latitude, longitude, location.floor, location.room)


def device_to_pb(device: DeviceRecord) -> common_pb2.Device:
    return common_pb2.Device(
        id=device.id,
        model=device.model,
        edge_id=device.edge_id,
        site=device.site,
        building=device.building,
        labels=dict(device.labels),
        location=location_to_pb(device.location),
        online=device.online,
        revision=device.revision,
        created_ms=device.created_ms,
        updated_ms=device.updated_ms,
        last_seen_ms=device.last_seen_ms,
    )


def device_from_pb(device: common_pb2.Device, field: str = "device") -> DeviceRecord:
    """A device to register, every field checked (all problems at once); read-only fields are
    ignored and the model reference is only checked for syntax (the caller resolves it)."""
    violations: list[Violation] = []

    def attempt(check: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return check(*args, **kwargs)
        except InvalidArgument as exc:
            violations.extend(exc.violations)
            return None

    attempt(check_id, device.id, f"{field}.id")
    attempt(check_model_ref, device.model, f"{field}.model")
    attempt(check_id, device.edge_id, f"{field}.edge_id")
    attempt(check_name, device.site, f"{field}.site")
    attempt(check_name, device.building, f"{field}.building", required=False)
    labels = attempt(check_labels, device.labels, f"{field}.labels")
    location = attempt(location_from_pb, device.location, f"{field}.location")
    if violations:
        raise InvalidArgument.fields(violations)
    return DeviceRecord(
        id=device.id,
        model=device.model,
        edge_id=device.edge_id,
        site=device.site,
        building=device.building,
        labels=labels,
        location=location,
    )


def device_from_payload(payload: Mapping[str, Any]) -> DeviceRecord:
    """A device from a change's payload (lenient: missing fields take their defaults)."""
    raw_location = payload.get("location")
    location = Location()
    if isinstance(raw_location, Mapping):
        location = Location(
            _float_or_none(raw_location.get("latitude")),
            _float_or_none(raw_location.get("longitude")),
            str(raw_location.get("floor") or ""),
            str(raw_location.get("room") or ""),
        )
    elif isinstance(raw_location, Location):
        location = raw_location
    labels = payload.get("labels")
    return DeviceRecord(
        id=str(payload.get("id", "")),
        model=str(payload.get("model", "")),
        edge_id=str(payload.get("edge_id", "")),
        site=str(payload.get("site", "")),
        building=str(payload.get("building", "") or ""),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {},
        location=location,
        online=bool(payload.get("online", False)),
        revision=_int(payload.get("revision")),
        created_ms=_int(payload.get("created_ms")),
        updated_ms=_int(payload.get("updated_ms")),
        last_seen_ms=_int(payload.get("last_seen_ms")),
    )


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return 0


# --------------------------------------------------------------------------- models


def model_record_to_pb(entry: ModelEntry, document_yaml: str = "") -> common_pb2.ModelRecord:
    return common_pb2.ModelRecord(
        name=entry.name,
        version=entry.version,
        title=entry.title,
        vendor=entry.vendor,
        description=entry.description,
        document_yaml=document_yaml,
        published_ms=entry.published_ms,
        property_count=entry.property_count,
        event_count=entry.event_count,
        service_count=entry.service_count,
    )


def model_summary_to_pb(entry: ModelEntry, version_count: int) -> models_pb2.ModelSummary:
    return models_pb2.ModelSummary(
        name=entry.name,
        latest_version=entry.version,
        title=entry.title,
        vendor=entry.vendor,
        version_count=version_count,
    )


# --------------------------------------------------------------------------- twins


def property_state_to_pb(state: PropertyValue, path: str = "value") -> common_pb2.PropertyState:
    return common_pb2.PropertyState(
        value=value_to_pb(state.value, path),
        ts_ms=state.ts_ms,
        quality=quality_number(state.quality),
    )


def twin_to_pb(twin: TwinRecord) -> twins_pb2.Twin:
    out = twins_pb2.Twin(device_id=twin.device_id, model=twin.model, revision=twin.revision)
    for name, state in twin.reported.items():
        out.reported[name].CopyFrom(property_state_to_pb(state, f"reported.{name}"))
    for name, state in twin.desired.items():
        out.desired[name].CopyFrom(property_state_to_pb(state, f"desired.{name}"))
    values_to_pb(out.delta, twin.delta, "delta")
    return out


def history_point_to_pb(point: HistoryPoint) -> twins_pb2.HistoryPoint:
    return twins_pb2.HistoryPoint(
        ts_ms=point.ts_ms, value=value_to_pb(point.value), quality=quality_number(point.quality)
    )


def history_bucket_to_pb(bucket: HistoryBucket) -> twins_pb2.HistoryBucket:
    return twins_pb2.HistoryBucket(
        start_ms=bucket.start_ms,
        min=bucket.min,
        max=bucket.max,
        avg=bucket.avg,
        count=bucket.count,
    )


# --------------------------------------------------------------------------- events


def event_to_pb(event: EventEntry) -> common_pb2.EventRecord:
    out = common_pb2.EventRecord(
        id=event.id,
        device_id=event.device_id,
        name=event.name,
        level=event.level,
        ts_ms=event.ts_ms,
        acknowledged=event.acknowledged,
        acknowledged_by=event.acknowledged_by,
        acknowledged_ms=event.acknowledged_ms,
        comment=event.comment,
    )
    values_to_pb(out.params, event.params)
    return out


def _event_from_payload(payload: Mapping[str, Any]) -> EventEntry:
    params = payload.get("params")
    return EventEntry(
        id=str(payload.get("id", "")),
        device_id=str(payload.get("device_id", "")),
        name=str(payload.get("name", "")),
        level=str(payload.get("level", "")),
        ts_ms=_int(payload.get("ts_ms")),
        params=dict(params) if isinstance(params, Mapping) else {},
        acknowledged=bool(payload.get("acknowledged", False)),
        acknowledged_by=str(payload.get("acknowledged_by", "") or ""),
        acknowledged_ms=_int(payload.get("acknowledged_ms")),
        comment=str(payload.get("comment", "") or ""),
    )


# --------------------------------------------------------------------------- commands

_COMMAND_KIND_NAMES: dict[int, str] = {int(n): name for name, n in COMMAND_KINDS.items()}
_COMMAND_STATUS = {
    CommandStatus.QUEUED: common_pb2.COMMAND_STATUS_QUEUED,
    CommandStatus.SENT: common_pb2.COMMAND_STATUS_SENT,
    CommandStatus.SUCCEEDED: common_pb2.COMMAND_STATUS_SUCCEEDED,
    CommandStatus.FAILED: common_pb2.COMMAND_STATUS_FAILED,
    CommandStatus.EXPIRED: common_pb2.COMMAND_STATUS_EXPIRED,
    CommandStatus.REJECTED: common_pb2.COMMAND_STATUS_REJECTED,
}
_COMMAND_STATUS_FROM: dict[int, CommandStatus] = {int(n): s for s, n in _COMMAND_STATUS.items()}


def command_kind_to_pb(kind: str) -> int:
    """``set_properties`` / ``invoke_service`` -> CommandKind (unknown: UNSPECIFIED)."""
    return int(COMMAND_KINDS.get(kind, common_pb2.COMMAND_KIND_UNSPECIFIED))


def command_kind_from_pb(number: int, field: str = "kind") -> str:
    """CommandKind -> storage kind; UNSPECIFIED or unknown: INVALID_ARGUMENT."""
    name = _COMMAND_KIND_NAMES.get(number)
    if name is None:
        raise InvalidArgument.field(
            field,
            f"unknown or unspecified command kind {number}; expected "
            "COMMAND_KIND_SET_PROPERTIES or COMMAND_KIND_INVOKE_SERVICE",
        )
    return name


def command_status_to_pb(status: CommandStatus | str) -> int:
    try:
        return int(_COMMAND_STATUS[CommandStatus(status)])
    except ValueError:
        return int(common_pb2.COMMAND_STATUS_UNSPECIFIED)


def command_status_from_pb(number: int, field: str = "status") -> CommandStatus:
    status = _COMMAND_STATUS_FROM.get(number)
    if status is None:
        raise InvalidArgument.field(field, f"unknown or unspecified command status {number}")
    return status


def command_to_pb(command: CommandEntry) -> common_pb2.Command:
    out = common_pb2.Command(
        id=command.id,
        device_id=command.device_id,
        edge_id=command.edge_id,
        kind=command_kind_to_pb(command.kind),  # type: ignore[arg-type]
        service=command.service,
        status=command_status_to_pb(command.status),  # type: ignore[arg-type]
        error=command.error,
        created_ms=command.created_ms,
        updated_ms=command.updated_ms,
        expires_ms=command.expires_ms,
        sequence=command.sequence,
    )
    values_to_pb(out.params, command.params, "params")
    values_to_pb(out.result, command.result, "result")
    return out


def _command_from_payload(payload: Mapping[str, Any]) -> CommandEntry:
    params = payload.get("params")
    result = payload.get("result")
    status_text = str(payload.get("status", ""))
    try:
        status = CommandStatus(status_text)
    except ValueError:
        status = CommandStatus.QUEUED
    return CommandEntry(
        id=str(payload.get("id", "")),
        device_id=str(payload.get("device_id", "")),
        edge_id=str(payload.get("edge_id", "")),
        kind=str(payload.get("kind", "")),
        service=str(payload.get("service", "") or ""),
        params=dict(params) if isinstance(params, Mapping) else {},
        status=status,
        created_ms=_int(payload.get("created_ms")),
        expires_ms=_int(payload.get("expires_ms")),
        updated_ms=_int(payload.get("updated_ms")),
        result=dict(result) if isinstance(result, Mapping) else {},
        error=str(payload.get("error", "") or ""),
        sequence=_int(payload.get("sequence")),
    )


# --------------------------------------------------------------------------- changes

_CHANGE_KIND = {
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
_CHANGE_KIND_FROM: dict[int, ChangeKind] = {int(n): kind for kind, n in _CHANGE_KIND.items()}


def change_kind_to_pb(kind: ChangeKind) -> int:
    return int(_CHANGE_KIND[kind])


def change_kind_from_pb(number: int, field: str = "kinds") -> ChangeKind:
    """ChangeKind -> storage kind; UNSPECIFIED or unknown: INVALID_ARGUMENT."""
    kind = _CHANGE_KIND_FROM.get(number)
    if kind is None:
        raise InvalidArgument.field(field, f"unknown or unspecified change kind {number}")
    return kind


def _twin_change(payload: Mapping[str, Any]) -> watch_pb2.TwinChange:
    out = watch_pb2.TwinChange(revision=_int(payload.get("revision")))
    properties = payload.get("properties")
    if isinstance(properties, Mapping):
        for name, raw in properties.items():
            if isinstance(raw, Mapping):
                state = PropertyValue(
                    raw.get("value"), _int(raw.get("ts_ms")), str(raw.get("quality") or "good")
                )
            else:
                state = PropertyValue(raw, 0)
            out.properties[str(name)].CopyFrom(property_state_to_pb(state, f"properties.{name}"))
    return out


def change_to_pb(change: ChangeEntry) -> watch_pb2.Change:
    """A committed change as a Watch message; ``resume_token`` is ``str(seq)``."""
    out = watch_pb2.Change(
        resume_token=str(change.seq),
        kind=change_kind_to_pb(change.kind),  # type: ignore[arg-type]
        ts_ms=change.ts_ms,
        device_id=change.device_id,
        site=change.site,
        model=change.model,
    )
    payload = change.payload
    kind = change.kind
    if kind in (ChangeKind.TWIN_REPORTED, ChangeKind.TWIN_DESIRED):
        out.twin.CopyFrom(_twin_change(payload))
    elif kind in (ChangeKind.EVENT, ChangeKind.ALARM_ACKNOWLEDGED):
        out.event.CopyFrom(event_to_pb(_event_from_payload(payload)))
    elif kind in (ChangeKind.DEVICE_CREATED, ChangeKind.DEVICE_UPDATED, ChangeKind.DEVICE_DELETED):
        out.device.CopyFrom(device_to_pb(device_from_payload(payload)))
    elif kind is ChangeKind.MODEL_PUBLISHED:
        out.model_record.CopyFrom(
            common_pb2.ModelRecord(
                name=str(payload.get("name", "")),
                version=str(payload.get("version", "")),
                title=str(payload.get("title", "") or ""),
                vendor=str(payload.get("vendor", "") or ""),
            )
        )
    elif kind is ChangeKind.COMMAND_UPDATED:
        out.command.CopyFrom(command_to_pb(_command_from_payload(payload)))
    return out


def first_violations(violations: Iterable[Violation], limit: int) -> list[Violation]:
    """At most ``limit`` violations (the rest summarised by a last one)."""
    items = list(violations)
    if len(items) <= limit:
        return items
    return [*items[:limit], Violation("", f"... and {len(items) - limit} more")]
