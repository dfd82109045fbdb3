"""What both storage engines share: JSON encoding of values, change payloads, and decoding of
result rows into records (both engines select columns in the same order)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cloud_registry.storage.base import (
    CommandEntry,
    CommandStatus,
    DeviceRecord,
    EventEntry,
    Location,
    ModelEntry,
)

__all__ = [
    "canonical_json",
    "command_from_row",
    "command_payload",
    "device_from_row",
    "device_payload",
    "dump_json",
    "encode_json_string",
    "event_from_row",
    "event_payload",
    "model_from_row",
    "numeric_value",
    "property_payload",
]

#: JSON text of a string (quotes and escapes), the fast C encoder.
encode_json_string: Callable[[str], str] = json.encoder.encode_basestring


def dump_json(value: Any) -> str:
    """The compact JSON text of ``value`` (fast for scalars; ``2`` and ``2.0`` stay apart)."""
    kind = type(value)
    if kind is str:
        return encode_json_string(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """JSON text with sorted keys: equal documents give equal text."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def numeric_value(value: Any) -> float | None:
    """The number history buckets aggregate (bool as 0/1), or None for non-numbers."""
    kind = type(value)
    if kind is float:
        return None if math.isnan(value) else float(value)
    if kind is int or kind is bool:
        try:
            return float(value)
        except OverflowError:
            return None
    return None


# --------------------------------------------------------------------------- change payloads


def device_payload(device: DeviceRecord) -> dict[str, Any]:
    """A device as plain JSON data (change payloads)."""
    loc = device.location
    return {
        "id": device.id,
        "model": device.model,
        "edge_id": device.edge_id,
        "site": device.site,
        "building": device.building,
        "labels": dict(device.labels),
        "location": {
            "latitude": loc.latitude,
            "longitude": loc.longitude,
            "floor": loc.floor,
            "room": loc.room,
        },
        "online": device.online,
        "revision": device.revision,
        "created_ms": device.created_ms,
        "updated_ms": device.updated_ms,
        "last_seen_ms": device.last_seen_ms,
    }


def event_payload(event: EventEntry) -> dict[str, Any]:
    """An event as plain JSON data (change payloads)."""
    return {
        "id": event.id,
        "device_id": event.device_id,
        "name": event.name,
        "level": event.level,
        "ts_ms": event.ts_ms,
        "params": dict(event.params),
        "acknowledged": event.acknowledged,
        "acknowledged_by": event.acknowledged_by,
        "acknowledged_ms": event.acknowledged_ms,
        "comment": event.comment,
    }


def command_payload(command: CommandEntry) -> dict[str, Any]:
    """A command as plain JSON data (change payloads); ``status`` as its string value."""
    return {
        "id": command.id,
        "device_id": command.device_id,
        "edge_id": command.edge_id,
        "kind": command.kind,
        "service": command.service,
        "params": dict(command.params),
        "status": command.status.value,
        "created_ms": command.created_ms,
        "expires_ms": command.expires_ms,
        "updated_ms": command.updated_ms,
        "result": dict(command.result),
        "error": command.error,
        "sequence": command.sequence,
    }


def property_payload(value_json: str, ts_ms: int, quality: str) -> dict[str, Any]:
    """One property of a twin change payload, from its stored JSON text."""
    return {"value": json.loads(value_json), "ts_ms": ts_ms, "quality": quality}


# --------------------------------------------------------------------------- rows


def _json(value: Any) -> Any:
    """A JSON column: text (SQLite, PostgreSQL json) or already decoded (jsonb)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def device_from_row(row: Sequence[Any]) -> DeviceRecord:
    labels: Mapping[str, str] = _json(row[5])
    return DeviceRecord(
        id=row[0],
        model=row[1],
        edge_id=row[2],
        site=row[3],
        building=row[4],
        labels=dict(labels),
        location=Location(row[6], row[7], row[8], row[9]),
        online=bool(row[10]),
        revision=row[11],
        created_ms=row[12],
        updated_ms=row[13],
        last_seen_ms=row[14],
    )


def event_from_row(row: Sequence[Any]) -> EventEntry:
    return EventEntry(
        id=row[0],
        device_id=row[1],
        name=row[2],
        level=row[3],
        ts_ms=row[4],
        params=_json(row[5]),
        acknowledged=bool(row[6]),
        acknowledged_by=row[7],
        acknowledged_ms=row[8],
        comment=row[9],
    )


def command_from_row(row: Sequence[Any]) -> CommandEntry:
    return CommandEntry(
        id=row[0],
        device_id=row[1],
        edge_id=row[2],
        kind=row[3],
        service=row[4],
        params=_json(row[5]),
        status=CommandStatus(row[6]),
        created_ms=row[7],
        expires_ms=row[8],
        updated_ms=row[9],
        result=_json(row[10]),
        error=row[11],
        sequence=row[12],
    )


def model_from_row(row: Sequence[Any]) -> ModelEntry:
    return ModelEntry(
        name=row[0],
        version=row[1],
        document=_json(row[2]),
        published_ms=row[3],
        title=row[4],
        vendor=row[5],
        description=row[6],
        property_count=row[7],
        event_count=row[8],
        service_count=row[9],
    )
