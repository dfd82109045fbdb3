"""The ``bindings:`` section of our YAML format: reporting policies and per-protocol points.

Reading checks shapes and types with located errors; cross-references (points naming missing
properties, register overlaps, register counts against types) are checked on the built model by
:mod:`thing_models.checks`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, TypeVar

from thing_models.document_reader import DocumentReader
from thing_models.model import (
    IDENTIFIER_RE,
    BacnetBinding,
    BacnetPoint,
    BacnetServiceWrite,
    Bindings,
    ByteOrder,
    CoapBinding,
    CoapMethod,
    CoapMode,
    CoapPoint,
    CoapService,
    ContentFormat,
    DeadbandMode,
    ModbusBinding,
    ModbusPoint,
    ModbusServiceWrite,
    ModbusTable,
    ModbusType,
    MqttBinding,
    MqttEventRoute,
    MqttPoint,
    ReportGroup,
    Reporting,
    ReportPolicy,
)
from thing_models.yaml_source import Path

__all__ = ["bindings_to_dict", "parse_bindings", "policy_to_dict"]

T = TypeVar("T")

_POLICY_KEYS = ("poll_interval", "on_change", "deadband", "deadband_mode", "heartbeat")
_MODBUS_KEYS = (
    "unit_id",
    "addressing",
    "byte_order",
    "word_order",
    "points",
    "services",
    "max_registers_per_read",
    "max_coils_per_read",
    "max_gap",
)
_MODBUS_POINT_KEYS = (
    "property",
    "table",
    "address",
    "type",
    "count",
    "unit_id",
    "byte_order",
    "word_order",
    "bit",
    "scale",
    "offset",
    "mask",
    "shift",
    "rounding",
    "enum",
    "sentinel",
    "valid_min",
    "valid_max",
    "read_function",
    "write_function",
    "encoding",
    "group",
    "report",
)
_MODBUS_SERVICE_KEYS = ("service", "table", "address", "type", "value", "param", "write_function")
_BACNET_KEYS = ("device_instance", "use_cov", "points", "services")
_BACNET_SERVICE_KEYS = (
    "service",
    "object_type",
    "instance",
    "property_id",
    "value",
    "param",
    "priority",
    "relinquish",
)
_BACNET_POINT_KEYS = (
    "property",
    "object_type",
    "instance",
    "property_id",
    "array_index",
    "write_priority",
    "cov_increment",
    "group",
    "report",
)
_MQTT_KEYS = ("points", "events", "command_topic", "reply_topic", "qos")
_COAP_POINT_KEYS = ("property", "resource", "mode", "path", "content_format", "group", "report")
_COAP_SERVICE_KEYS = ("service", "resource", "method", "content_format")
_ADDRESSING = {"zero-based": True, "one-based": False}
_TABLE_ALIASES = {
    "holding": ModbusTable.HOLDING_REGISTER,
    "input": ModbusTable.INPUT_REGISTER,
    "coils": ModbusTable.COIL,
    "discrete": ModbusTable.DISCRETE_INPUT,
}


def parse_bindings(r: DocumentReader, value: Any, path: Path) -> Bindings:
    """Read the ``bindings`` mapping (absent: no bindings)."""
    if value is None:
        return Bindings()
    obj = r.mapping(value, path)
    if obj is None:
        return Bindings()
    r.check_keys(obj, path, ("reporting", "modbus", "bacnet", "mqtt", "coap"))
    return Bindings(
        modbus=_section(r, obj, "modbus", path, _modbus),
        bacnet=_section(r, obj, "bacnet", path, _bacnet),
        mqtt=_section(r, obj, "mqtt", path, _mqtt),
        coap=_section(r, obj, "coap", path, _coap),
        reporting=_reporting(r, obj.get("reporting"), (*path, "reporting")),
    )


def _section(
    r: DocumentReader,
    obj: Mapping[Any, Any],
    key: str,
    path: Path,
    parse: Callable[[DocumentReader, dict[Any, Any], Path], T],
) -> T | None:
    if key not in obj:
        return None
    section = r.mapping(obj[key] if obj[key] is not None else {}, (*path, key))
    return parse(r, section, (*path, key)) if section is not None else None


def _items(
    r: DocumentReader,
    obj: Mapping[Any, Any],
    key: str,
    path: Path,
    parse: Callable[[dict[Any, Any], Path], T | None],
    what: str,
) -> tuple[T, ...]:
    def parse_item(item: Any, item_path: Path) -> T | None:
        entry = r.mapping(item, item_path, what)
        return parse(entry, item_path) if entry is not None else None

    return r.items(obj.get(key), (*path, key), parse_item)


# --------------------------------------------------------------------------- reporting


def parse_policy(r: DocumentReader, value: Any, path: Path) -> ReportPolicy | None:
    """A reporting policy mapping; missing keys take ReportPolicy's defaults."""
    obj = r.mapping(value, path, "a reporting policy mapping")
    if obj is None:
        return None
    r.check_keys(obj, path, _POLICY_KEYS)
    deadband = r.number(obj, "deadband", path, 0.0)
    if deadband is not None and deadband < 0:
        r.error((*path, "deadband"), "deadband must not be negative", deadband, "a number >= 0")
        deadband = 0.0
    return ReportPolicy(
        poll_interval_s=r.duration(obj, "poll_interval", path),
        on_change=r.boolean(obj, "on_change", path, False),
        deadband=float(deadband or 0.0),
        deadband_mode=r.choice(obj, "deadband_mode", path, DeadbandMode, DeadbandMode.ABSOLUTE),
        heartbeat_s=r.duration(obj, "heartbeat", path),
    )


def _reporting(r: DocumentReader, value: Any, path: Path) -> Reporting:
    if value is None:
        return Reporting()
    obj = r.mapping(value, path)
    if obj is None:
        return Reporting()
    r.check_keys(obj, path, ("default", "groups"))
    default = Reporting().default
    if "default" in obj:
        default = parse_policy(r, obj["default"], (*path, "default")) or default
    groups: list[ReportGroup] = []
    group_map = r.mapping(obj.get("groups", {}), (*path, "groups"), "a mapping of name: policy")
    for name, policy_value in (group_map or {}).items():
        if not isinstance(name, str) or not IDENTIFIER_RE.match(name):
            r.error(
                (*path, "groups", name), "invalid group name", name, "an identifier", at_key=True
            )
            continue
        policy = parse_policy(r, policy_value, (*path, "groups", name))
        if policy is not None:
            groups.append(ReportGroup(name, policy))
    return Reporting(default, tuple(groups))


def _point_report(
    r: DocumentReader, obj: Mapping[Any, Any], path: Path
) -> tuple[str | None, ReportPolicy | None]:
    group = r.string(obj, "group", path) or None
    report = parse_policy(r, obj["report"], (*path, "report")) if "report" in obj else None
    return group, report


def _text(r: DocumentReader, obj: Mapping[Any, Any], key: str, path: Path) -> str:
    """A required string; an empty one is reported (the item would be dropped silently)."""
    value = r.string(obj, key, path)
    if obj.get(key) == "":
        r.error((*path, key), f"{key} must not be empty", "", "a non-empty string")
    return value


def _target(r: DocumentReader, obj: Mapping[Any, Any], key: str, path: Path) -> str:
    if key not in obj:
        return ""
    # Component properties are named instance:property.
    value = _text(r, obj, key, path)
    if value and not all(IDENTIFIER_RE.match(part) for part in value.split(":")):
        r.error((*path, key), f"invalid {key} name", value, "an identifier (or instance:id)")
        return ""
    return value


# --------------------------------------------------------------------------- Modbus


def _modbus(r: DocumentReader, obj: dict[Any, Any], path: Path) -> ModbusBinding:
    r.check_keys(obj, path, _MODBUS_KEYS)
    addressing = obj.get("addressing", "zero-based")
    if not isinstance(addressing, str) or addressing not in _ADDRESSING:
        r.error(
            (*path, "addressing"),
            "invalid addressing",
            addressing,
            "zero-based (PDU addresses, the default) or one-based",
        )
        addressing = "zero-based"

    def point(entry: dict[Any, Any], p: Path) -> ModbusPoint | None:
        return _modbus_point(r, entry, p)

    def service(entry: dict[Any, Any], p: Path) -> ModbusServiceWrite | None:
        return _modbus_service(r, entry, p)

    defaults = ModbusBinding()
    return ModbusBinding(
        unit_id=r.integer(obj, "unit_id", path, 1, minimum=0, maximum=255) or 0,
        zero_based=_ADDRESSING[addressing],
        byte_order=r.choice(obj, "byte_order", path, ByteOrder, ByteOrder.BIG),
        word_order=r.choice(obj, "word_order", path, ByteOrder, ByteOrder.BIG),
        points=_items(r, obj, "points", path, point, "a Modbus point mapping"),
        services=_items(r, obj, "services", path, service, "a Modbus service-write mapping"),
        max_registers_per_read=r.integer(
            obj,
            "max_registers_per_read",
            path,
            defaults.max_registers_per_read,
            minimum=1,
            maximum=125,
        )
        or 125,
        max_coils_per_read=r.integer(
            obj, "max_coils_per_read", path, defaults.max_coils_per_read, minimum=1, maximum=2000
        )
        or 2000,
        max_gap=r.integer(obj, "max_gap", path, defaults.max_gap, minimum=0, maximum=124) or 0,
    )


def _modbus_point(r: DocumentReader, obj: dict[Any, Any], path: Path) -> ModbusPoint | None:
    r.check_keys(obj, path, _MODBUS_POINT_KEYS, required=("property", "table", "address", "type"))
    prop = _target(r, obj, "property", path)
    table = r.choice(obj, "table", path, ModbusTable, ModbusTable.HOLDING_REGISTER, _TABLE_ALIASES)
    address = r.integer(obj, "address", path, None, minimum=0, maximum=65535)
    mtype = r.choice(obj, "type", path, ModbusType, ModbusType.UINT16)
    enum_map = _enum_map(r, obj.get("enum"), (*path, "enum"))
    sentinel = r.number(obj, "sentinel", path)
    group, report = _point_report(r, obj, path)
    if not prop or address is None:
        return None
    return ModbusPoint(
        property=prop,
        table=table,
        address=address,
        type=mtype,
        count=r.integer(obj, "count", path, None, minimum=1, maximum=125),
        unit_id=r.integer(obj, "unit_id", path, None, minimum=0, maximum=255),
        byte_order=r.choice(obj, "byte_order", path, ByteOrder, ByteOrder.BIG)
        if "byte_order" in obj
        else None,
        word_order=r.choice(obj, "word_order", path, ByteOrder, ByteOrder.BIG)
        if "word_order" in obj
        else None,
        bit=r.integer(obj, "bit", path, None, minimum=0, maximum=63),
        scale=float(r.number(obj, "scale", path, 1.0) or 0.0),
        offset=float(r.number(obj, "offset", path, 0.0) or 0.0),
        mask=r.integer(obj, "mask", path, None, minimum=1, maximum=2**64 - 1),
        shift=r.integer(obj, "shift", path, 0, minimum=0, maximum=63) or 0,
        rounding=r.integer(obj, "rounding", path, None, minimum=0, maximum=15),
        enum_map=enum_map,
        sentinel=sentinel,
        valid_min=_float_or_none(r.number(obj, "valid_min", path)),
        valid_max=_float_or_none(r.number(obj, "valid_max", path)),
        read_function=r.integer(obj, "read_function", path, None, minimum=1, maximum=4),
        write_function=r.integer(obj, "write_function", path, None, minimum=5, maximum=16),
        encoding=r.string(obj, "encoding", path, "ascii"),
        group=group,
        report=report,
    )


def _float_or_none(value: float | int | None) -> float | None:
    return None if value is None else float(value)


def _enum_map(
    r: DocumentReader, value: Any, path: Path
) -> tuple[tuple[int, int | str | bool], ...]:
    if value is None:
        return ()
    obj = r.mapping(value, path, "a mapping of raw value: property value")
    result: list[tuple[int, int | str | bool]] = []
    for raw, mapped in (obj or {}).items():
        if isinstance(raw, bool) or not isinstance(raw, int):
            r.error(
                (*path, raw),
                "raw enum value must be an integer",
                raw,
                "an integer key",
                at_key=True,
            )
        elif not isinstance(mapped, int | str | bool):
            r.error(
                (*path, raw),
                "mapped value must be a scalar",
                mapped,
                "an integer, string or boolean",
            )
        else:
            result.append((raw, mapped))
    return tuple(result)


def _modbus_service(
    r: DocumentReader, obj: dict[Any, Any], path: Path
) -> ModbusServiceWrite | None:
    r.check_keys(obj, path, _MODBUS_SERVICE_KEYS, required=("service", "table", "address", "type"))
    service = _target(r, obj, "service", path)
    address = r.integer(obj, "address", path, None, minimum=0, maximum=65535)
    value = obj.get("value")
    if value is not None and not isinstance(value, int | float | bool):
        r.error((*path, "value"), "value must be a number or boolean", value, "a scalar")
        value = None
    if not service or address is None:
        return None
    return ModbusServiceWrite(
        service=service,
        table=r.choice(
            obj, "table", path, ModbusTable, ModbusTable.HOLDING_REGISTER, _TABLE_ALIASES
        ),
        address=address,
        type=r.choice(obj, "type", path, ModbusType, ModbusType.UINT16),
        value=value,
        param=r.string(obj, "param", path) or None,
        write_function=r.integer(obj, "write_function", path, None, minimum=5, maximum=16),
    )


# --------------------------------------------------------------------------- BACnet


def _bacnet(r: DocumentReader, obj: dict[Any, Any], path: Path) -> BacnetBinding:
    r.check_keys(obj, path, _BACNET_KEYS)

    def point(entry: dict[Any, Any], p: Path) -> BacnetPoint | None:
        r.check_keys(entry, p, _BACNET_POINT_KEYS, required=("property", "object_type", "instance"))
        prop = _target(r, entry, "property", p)
        object_type = _text(r, entry, "object_type", p)
        instance = r.integer(entry, "instance", p, None, minimum=0, maximum=4194302)
        cov = r.number(entry, "cov_increment", p)
        if cov is not None and cov <= 0:
            r.error((*p, "cov_increment"), "cov_increment must be positive", cov, "a number > 0")
            cov = None
        group, report = _point_report(r, entry, p)
        if not prop or not object_type or instance is None:
            return None
        return BacnetPoint(
            property=prop,
            object_type=object_type,
            instance=instance,
            property_id=r.string(entry, "property_id", p, "present-value"),
            array_index=r.integer(entry, "array_index", p, None, minimum=0),
            write_priority=r.integer(entry, "write_priority", p, None, minimum=1, maximum=16),
            cov_increment=_float_or_none(cov),
            group=group,
            report=report,
        )

    def service(entry: dict[Any, Any], p: Path) -> BacnetServiceWrite | None:
        return _bacnet_service(r, entry, p)

    return BacnetBinding(
        device_instance=r.integer(obj, "device_instance", path, None, minimum=0, maximum=4194302),
        points=_items(r, obj, "points", path, point, "a BACnet point mapping"),
        use_cov=r.boolean(obj, "use_cov", path, True),
        services=_items(r, obj, "services", path, service, "a BACnet service-write mapping"),
    )


def _bacnet_service(
    r: DocumentReader, obj: dict[Any, Any], path: Path
) -> BacnetServiceWrite | None:
    errors = len(r.diagnostics)  # a write the reader found fault with is not cross-checked
    r.check_keys(obj, path, _BACNET_SERVICE_KEYS, required=("service", "object_type", "instance"))
    service = _target(r, obj, "service", path)
    object_type = _text(r, obj, "object_type", path)
    instance = r.integer(obj, "instance", path, None, minimum=0, maximum=4194302)
    value = obj.get("value")
    if value is not None and (
        not isinstance(value, int | float | str)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        r.error(
            (*path, "value"), "value must be a finite scalar", value, "a number, boolean or string"
        )
        value = None
    param = r.string(obj, "param", path, pattern=IDENTIFIER_RE, expected="an input id")
    write = BacnetServiceWrite(
        service=service,
        object_type=object_type,
        instance=instance or 0,
        property_id=r.string(obj, "property_id", path, "present-value"),
        value=value,
        param=param or None,
        priority=r.integer(obj, "priority", path, None, minimum=1, maximum=16),
        relinquish=r.boolean(obj, "relinquish", path, False),
    )
    return write if len(r.diagnostics) == errors else None


# --------------------------------------------------------------------------- MQTT


def _mqtt(r: DocumentReader, obj: dict[Any, Any], path: Path) -> MqttBinding:
    r.check_keys(obj, path, _MQTT_KEYS)

    def point(entry: dict[Any, Any], p: Path) -> MqttPoint | None:
        r.check_keys(
            entry,
            p,
            ("property", "topic", "path", "group", "report"),
            required=("property", "topic"),
        )
        prop = _target(r, entry, "property", p)
        topic = _text(r, entry, "topic", p)
        group, report = _point_report(r, entry, p)
        if not prop or not topic:
            return None
        return MqttPoint(prop, topic, r.string(entry, "path", p), group, report)

    def event(entry: dict[Any, Any], p: Path) -> MqttEventRoute | None:
        r.check_keys(entry, p, ("event", "topic", "path"), required=("event", "topic"))
        name = _target(r, entry, "event", p)
        topic = _text(r, entry, "topic", p)
        if not name or not topic:
            return None
        return MqttEventRoute(name, topic, r.string(entry, "path", p))

    return MqttBinding(
        points=_items(r, obj, "points", path, point, "an MQTT point mapping"),
        events=_items(r, obj, "events", path, event, "an MQTT event mapping"),
        command_topic=r.string(obj, "command_topic", path) or None,
        reply_topic=r.string(obj, "reply_topic", path) or None,
        qos=r.integer(obj, "qos", path, 1, minimum=0, maximum=2) or 0,
    )


# --------------------------------------------------------------------------- CoAP


def _coap(r: DocumentReader, obj: dict[Any, Any], path: Path) -> CoapBinding:
    r.check_keys(obj, path, ("points", "services"))

    def point(entry: dict[Any, Any], p: Path) -> CoapPoint | None:
        r.check_keys(entry, p, _COAP_POINT_KEYS, required=("property", "resource"))
        prop = _target(r, entry, "property", p)
        resource = _text(r, entry, "resource", p)
        group, report = _point_report(r, entry, p)
        if not prop or not resource:
            return None
        return CoapPoint(
            property=prop,
            resource=resource,
            mode=r.choice(entry, "mode", p, CoapMode, CoapMode.POLL),
            path=r.string(entry, "path", p),
            content_format=r.choice(entry, "content_format", p, ContentFormat, ContentFormat.JSON),
            group=group,
            report=report,
        )

    def service(entry: dict[Any, Any], p: Path) -> CoapService | None:
        errors = len(r.diagnostics)
        r.check_keys(entry, p, _COAP_SERVICE_KEYS, required=("service", "resource"))
        call = CoapService(
            service=_target(r, entry, "service", p),
            resource=_text(r, entry, "resource", p),
            method=r.choice(entry, "method", p, CoapMethod, CoapMethod.POST),
            content_format=r.choice(entry, "content_format", p, ContentFormat, ContentFormat.JSON),
        )
        return call if len(r.diagnostics) == errors else None

    return CoapBinding(
        points=_items(r, obj, "points", path, point, "a CoAP point mapping"),
        services=_items(r, obj, "services", path, service, "a CoAP service mapping"),
    )


# =========================================================================== writing


def policy_to_dict(policy: ReportPolicy) -> dict[str, Any]:
    """A reporting policy with default values left out."""
    doc: dict[str, Any] = {}
    if policy.poll_interval_s is not None:
        doc["poll_interval"] = policy.poll_interval_s
    if policy.on_change:
        doc["on_change"] = True
    if policy.deadband:
        doc["deadband"] = policy.deadband
    if policy.deadband_mode is not DeadbandMode.ABSOLUTE:
        doc["deadband_mode"] = policy.deadband_mode.value
    if policy.heartbeat_s is not None:
        doc["heartbeat"] = policy.heartbeat_s
    return doc


_RENAMED = {
    "poll_interval_s": "poll_interval",
    "heartbeat_s": "heartbeat",
    "zero_based": None,
    "enum_map": "enum",
}


def _dataclass_dict(obj: Any) -> dict[str, Any]:
    """Fields of a binding dataclass that differ from their defaults, in YAML naming."""
    doc: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
        if value == default or value in ((), None):
            continue
        key = _RENAMED.get(f.name, f.name)
        if key is None:
            continue
        if isinstance(value, ReportPolicy):
            value = policy_to_dict(value)
        elif f.name == "enum_map":
            value = dict(value)
        elif isinstance(value, tuple):
            value = [_dataclass_dict(item) for item in value]
        elif isinstance(value, StrEnum):
            value = value.value
        doc[key] = value
    return doc


def bindings_to_dict(bindings: Bindings) -> dict[str, Any]:
    """The ``bindings`` section of the YAML form (empty when the model has no bindings)."""
    doc: dict[str, Any] = {}
    if bindings.reporting != Reporting():
        reporting: dict[str, Any] = {"default": policy_to_dict(bindings.reporting.default)}
        if bindings.reporting.groups:
            reporting["groups"] = {
                g.name: policy_to_dict(g.policy) for g in bindings.reporting.groups
            }
        doc["reporting"] = reporting
    if bindings.modbus is not None:
        modbus = _dataclass_dict(bindings.modbus)
        if not bindings.modbus.zero_based:
            modbus = {"addressing": "one-based", **modbus}
        doc["modbus"] = modbus
    for name in ("bacnet", "mqtt", "coap"):
        section = getattr(bindings, name)
        if section is not None:
            doc[name] = _dataclass_dict(section)
    return doc
