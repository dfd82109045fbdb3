"""Consistency checks on a built ThingModel, whatever format it came from.

Each :class:`Problem` carries the path of the offending value in our YAML form (e.g.
``properties[2].max``) so the YAML loader can turn it into ``file:line:column``; importers of
other formats report the path alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from thing_models.model import (
    INT_RANGES,
    BacnetBinding,
    BacnetPoint,
    BacnetServiceWrite,
    Bindings,
    CoapBinding,
    CoapPoint,
    ContentFormat,
    DataSchema,
    DataType,
    Field,
    ModbusBinding,
    ModbusPoint,
    ModbusTable,
    ModbusType,
    MqttBinding,
    MqttEventRoute,
    MqttPoint,
    ReportPolicy,
    Service,
    ThingModel,
)
from thing_models.yaml_source import Path

__all__ = [
    "BACNET_OBJECT_TYPES",
    "RESERVED_EVENT_IDS",
    "Problem",
    "check_model",
    "check_schema",
    "mqtt_topic_problem",
]

BACNET_OBJECT_TYPES = frozenset(
    {
        "accumulator",
        "analog-input",
        "analog-output",
        "analog-value",
        "averaging",
        "binary-input",
        "binary-output",
        "binary-value",
        "bitstring-value",
        "calendar",
        "characterstring-value",
        "command",
        "date-value",
        "datetime-value",
        "device",
        "elevator-group",
        "escalator",
        "event-enrollment",
        "file",
        "group",
        "integer-value",
        "large-analog-value",
        "life-safety-point",
        "life-safety-zone",
        "lift",
        "load-control",
        "loop",
        "multi-state-input",
        "multi-state-output",
        "multi-state-value",
        "notification-class",
        "octetstring-value",
        "positive-integer-value",
        "program",
        "pulse-converter",
        "schedule",
        "staging",
        "structured-view",
        "time-value",
        "trend-log",
        "trend-log-multiple",
    }
)
_BACNET_PROPERTY_RE = re.compile(r"^(?:[a-z][a-z0-9-]*|[0-9]+)\Z")
_JSON_PATH_RE = re.compile(r"^\$?(\.[A-Za-z_][A-Za-z0-9_-]*|\[[0-9]+\]|\[['\"][^'\"]+['\"]\])*\Z")
_TYPE_BITS = {
    ModbusType.INT8: 8,
    ModbusType.UINT8: 8,
    ModbusType.INT16: 16,
    ModbusType.UINT16: 16,
    ModbusType.INT32: 32,
    ModbusType.UINT32: 32,
    ModbusType.INT64: 64,
    ModbusType.UINT64: 64,
}
_WRITE_FUNCTIONS = {ModbusTable.COIL: (5, 15), ModbusTable.HOLDING_REGISTER: (6, 16)}


_Point = ModbusPoint | BacnetPoint | MqttPoint | CoapPoint


@dataclass(frozen=True, slots=True)
class Problem:
    path: Path
    message: str
    value: Any = None
    expected: str = ""


#: Event ids the runtime itself uses (the edge agent's diagnostics); models may not declare them.
RESERVED_EVENT_IDS = frozenset({"_diagnostic"})


def check_model(model: ThingModel) -> list[Problem]:
    """Every consistency problem of ``model``."""
    problems: list[Problem] = [
        Problem(
            ("events", i, "id"),
            f"event id {event.id!r} is reserved for the edge agent's diagnostics",
            event.id,
            "another event id",
        )
        for i, event in enumerate(model.events)
        if event.id in RESERVED_EVENT_IDS
    ]
    problems += _duplicates(
        ((p.id, ("properties", i, "id")) for i, p in enumerate(model.properties)), "property"
    )
    problems += _duplicates(
        ((e.id, ("events", i, "id")) for i, e in enumerate(model.events)), "event"
    )
    problems += _duplicates(
        ((s.id, ("services", i, "id")) for i, s in enumerate(model.services)), "service"
    )
    problems += _duplicates(
        ((c.instance, ("components", i, "instance")) for i, c in enumerate(model.components)),
        "component instance",
    )
    for i, prop in enumerate(model.properties):
        problems += check_schema(prop.schema, ("properties", i))
    for i, event in enumerate(model.events):
        problems += _check_fields(event.outputs, ("events", i, "outputs"))
    for i, service in enumerate(model.services):
        problems += _check_fields(service.inputs, ("services", i, "inputs"))
        problems += _check_fields(service.outputs, ("services", i, "outputs"))
    problems += _check_bindings(model, model.bindings, ("bindings",))
    return problems


def _duplicates(items: Iterable[tuple[str, Path]], what: str) -> Iterator[Problem]:
    seen: dict[str, Path] = {}
    for ident, path in items:
        if ident in seen:
            yield Problem(
                path,
                f"duplicate {what} id {ident!r}",
                ident,
                f"unique ids (first defined at {_fmt(seen[ident])})",
            )
        else:
            seen[ident] = path


def _fmt(path: Path) -> str:
    from thing_models.yaml_source import format_path

    return format_path(path)


def _check_fields(fields: Sequence[Field], path: Path) -> list[Problem]:
    problems = list(_duplicates(((f.id, (*path, i, "id")) for i, f in enumerate(fields)), "field"))
    for i, item in enumerate(fields):
        problems += check_schema(item.schema, (*path, i))
    return problems


def check_schema(schema: DataSchema, path: Path) -> list[Problem]:
    """Constraint problems of one data schema (and of its fields and items)."""
    problems: list[Problem] = []
    t = schema.type
    numeric = t.is_numeric or t is DataType.TIMESTAMP
    for key, value in (("min", schema.minimum), ("max", schema.maximum), ("step", schema.step)):
        if value is not None and not numeric:
            problems.append(
                Problem(
                    (*path, key),
                    f"{key} does not apply to type {t.value}",
                    value,
                    "min/max/step only on numeric types",
                )
            )
    if numeric:
        if (
            schema.minimum is not None
            and schema.maximum is not None
            and schema.minimum > schema.maximum
        ):
            problems.append(
                Problem(
                    (*path, "min"),
                    "min is greater than max",
                    schema.minimum,
                    f"min <= max ({schema.maximum})",
                )
            )
        if schema.step is not None and schema.step <= 0:
            problems.append(
                Problem((*path, "step"), "step must be positive", schema.step, "step > 0")
            )
        if t in INT_RANGES:
            low, high = INT_RANGES[t]
            for key, value in (("min", schema.minimum), ("max", schema.maximum)):
                if value is not None and not low <= value <= high:
                    problems.append(
                        Problem(
                            (*path, key),
                            f"{key} outside the {t.value} range",
                            value,
                            f"{low} <= {key} <= {high}",
                        )
                    )
            for key, value in (
                ("min", schema.minimum),
                ("max", schema.maximum),
                ("step", schema.step),
            ):
                if isinstance(value, float) and not value.is_integer():
                    problems.append(
                        Problem(
                            (*path, key),
                            f"{key} of an integer type must be an integer",
                            value,
                            "an integer",
                        )
                    )
    if schema.max_length is not None and (t is not DataType.TEXT or schema.max_length <= 0):
        problems.append(
            Problem(
                (*path, "max_length"),
                "max_length must be positive and only on text",
                schema.max_length,
                "a positive integer on type text",
            )
        )
    if t is DataType.ENUM:
        if not schema.enum:
            problems.append(
                Problem((*path, "values"), "enum has no values", None, "at least one value: label")
            )
        problems += _duplicates(
            ((str(m.value), (*path, "values", m.value)) for m in schema.enum), "enum value"
        )
    elif schema.enum:
        problems.append(
            Problem(
                (*path, "values"),
                f"values do not apply to type {t.value}",
                None,
                "values only on type enum",
            )
        )
    if schema.bool_labels is not None and t is not DataType.BOOL:
        problems.append(
            Problem(
                (*path, "labels"),
                f"labels do not apply to type {t.value}",
                None,
                "labels only on type bool",
            )
        )
    if t is DataType.STRUCT:
        if not schema.fields:
            problems.append(
                Problem((*path, "fields"), "struct has no fields", None, "at least one field")
            )
        problems += _check_fields(schema.fields, (*path, "fields"))
    elif schema.fields:
        problems.append(
            Problem(
                (*path, "fields"),
                f"fields do not apply to type {t.value}",
                None,
                "fields only on type struct",
            )
        )
    if t is DataType.ARRAY:
        if schema.items is None:
            problems.append(Problem(path, "array needs items", None, "items: {type: ...}"))
        else:
            problems += check_schema(schema.items, (*path, "items"))
        if schema.max_items is not None and schema.max_items <= 0:
            problems.append(
                Problem(
                    (*path, "max_items"),
                    "max_items must be positive",
                    schema.max_items,
                    "a positive integer",
                )
            )
    elif schema.items is not None or schema.max_items is not None:
        problems.append(
            Problem(
                (*path, "items" if schema.items is not None else "max_items"),
                f"items/max_items do not apply to type {t.value}",
                None,
                "items and max_items only on type array",
            )
        )
    return problems


# --------------------------------------------------------------------------- bindings


def _check_bindings(model: ThingModel, bindings: Bindings, path: Path) -> list[Problem]:
    problems: list[Problem] = []
    groups = {g.name for g in bindings.reporting.groups}
    problems += _check_policy(bindings.reporting.default, (*path, "reporting", "default"))
    for group in bindings.reporting.groups:
        problems += _check_policy(group.policy, (*path, "reporting", "groups", group.name))
    known = {p.id for p in model.properties}
    instances = {c.instance for c in model.components}
    point_lists: tuple[tuple[str, Sequence[_Point]], ...] = (
        ("modbus", bindings.modbus.points if bindings.modbus else ()),
        ("bacnet", bindings.bacnet.points if bindings.bacnet else ()),
        ("mqtt", bindings.mqtt.points if bindings.mqtt else ()),
        ("coap", bindings.coap.points if bindings.coap else ()),
    )
    for protocol, points in point_lists:
        seen: set[str] = set()
        for i, point in enumerate(points):
            ppath = (*path, protocol, "points", i)
            target: str = point.property
            if not _target_known(target, known, instances, inherits=model.extends is not None):
                problems.append(
                    Problem(
                        (*ppath, "property"),
                        "binding names a property the model does not define",
                        target,
                        "one of " + ", ".join(sorted(known))
                        if known
                        else "a property of the model",
                    )
                )
            if target in seen:
                problems.append(
                    Problem(
                        (*ppath, "property"),
                        f"property bound twice in {protocol}",
                        target,
                        "one point per property",
                    )
                )
            seen.add(target)
            if point.group is not None and point.group not in groups:
                problems.append(
                    Problem(
                        (*ppath, "group"),
                        "unknown reporting group",
                        point.group,
                        "a group defined in bindings.reporting."
                        "groups" + (f" ({', '.join(sorted(groups))})" if groups else ""),
                    )
                )
            if point.report is not None:
                problems += _check_policy(point.report, (*ppath, "report"))
    if bindings.modbus is not None:
        problems += _check_modbus(model, bindings.modbus, (*path, "modbus"))
    if bindings.bacnet is not None:
        problems += _check_bacnet(model, bindings.bacnet, (*path, "bacnet"))
    if bindings.mqtt is not None:
        problems += _check_mqtt(model, bindings.mqtt, (*path, "mqtt"))
    if bindings.coap is not None:
        problems += _check_coap(model, bindings.coap, (*path, "coap"))
    return problems


def _target_known(target: str, known: set[str], instances: set[str], *, inherits: bool) -> bool:
    """A binding target is known when defined here, in a component, or maybe by the parent."""
    if ":" in target:
        return target.split(":", 1)[0] in instances
    return target in known or inherits


def _check_policy(policy: ReportPolicy, path: Path) -> list[Problem]:
    problems: list[Problem] = []
    if policy.deadband_mode.value == "percent" and policy.deadband > 100:
        problems.append(
            Problem((*path, "deadband"), "percent deadband over 100", policy.deadband, "0 to 100")
        )
    if (
        policy.heartbeat_s is not None
        and policy.poll_interval_s is not None
        and policy.heartbeat_s < policy.poll_interval_s
    ):
        problems.append(
            Problem(
                (*path, "heartbeat"),
                "heartbeat shorter than the poll interval",
                policy.heartbeat_s,
                f">= poll_interval ({policy.poll_interval_s})",
            )
        )
    return problems


def _check_modbus(model: ThingModel, binding: ModbusBinding, path: Path) -> list[Problem]:
    problems: list[Problem] = []
    spans: dict[tuple[int, ModbusTable], list[tuple[int, int, int, ModbusPoint]]] = {}
    for i, point in enumerate(binding.points):
        ppath = (*path, "points", i)
        problems += _check_modbus_point(model, point, ppath)
        if not binding.zero_based and point.address == 0:
            problems.append(
                Problem(
                    (*ppath, "address"),
                    "address 0 does not exist with one-based addressing",
                    0,
                    "an address >= 1 (or addressing: zero-based)",
                )
            )
        count = point.register_count
        if point.address + count - 1 > 65535:
            problems.append(
                Problem(
                    (*ppath, "address"),
                    "register range runs past 65535",
                    point.address,
                    f"address + {count} - 1 <= 65535",
                )
            )
        unit = point.unit_id if point.unit_id is not None else binding.unit_id
        spans.setdefault((unit, point.table), []).append((point.address, count, i, point))
    for (unit, table), items in spans.items():
        items.sort(key=lambda item: (item[0], item[2]))
        widest: tuple[int, int, int, ModbusPoint] | None = None  # the span reaching furthest
        for item in items:
            b_addr, b_count, b_i, b = item
            if widest is not None:
                a_addr, a_count, a_i, a = widest
                if b_addr < a_addr + a_count and not _shares_register(a, b):
                    problems.append(
                        Problem(
                            (*path, "points", b_i, "address"),
                            f"register range overlaps points[{a_i}] ({a.property}, "
                            f"{table.value} {a_addr}..{a_addr + a_count - 1}, unit {unit})",
                            b_addr,
                            f"an address >= {a_addr + a_count}, or bit/mask on both points",
                        )
                    )
            if widest is None or b_addr + b_count > widest[0] + widest[1]:
                widest = item
    for i, write in enumerate(binding.services):
        spath = (*path, "services", i)
        service = model.service(write.service)
        if service is None and not _target_known(
            write.service,
            set(),
            {c.instance for c in model.components},
            inherits=model.extends is not None,
        ):
            problems.append(
                Problem(
                    (*spath, "service"),
                    "service-write names a service the model does not define",
                    write.service,
                    "a service of the model",
                )
            )
        if not write.table.writable:
            problems.append(
                Problem(
                    (*spath, "table"),
                    f"{write.table.value} is read-only",
                    write.table.value,
                    "coil or holding_register",
                )
            )
        if (write.value is None) == (write.param is None):
            problems.append(
                Problem(
                    spath,
                    "give exactly one of value or param",
                    None,
                    "value: <constant> or param: <input id>",
                )
            )
        if (
            write.param is not None
            and service is not None
            and not any(f.id == write.param for f in service.inputs)
        ):
            problems.append(
                Problem(
                    (*spath, "param"),
                    "param is not an input of the service",
                    write.param,
                    "an input id of " + write.service,
                )
            )
        problems += _check_write_function(
            write.table, write.write_function, write.type.register_count or 1, (*spath,)
        )
    return problems


def _shares_register(a: ModbusPoint, b: ModbusPoint) -> bool:
    """Two points may read the same register when both pick bits out of it."""
    picks = (a.bit is not None or a.mask is not None) and (b.bit is not None or b.mask is not None)
    return picks and a.address == b.address and a.register_count == b.register_count


def _check_modbus_point(model: ThingModel, point: ModbusPoint, path: Path) -> list[Problem]:
    problems: list[Problem] = []
    mtype = point.type
    if point.table.is_bit_table and mtype is not ModbusType.BIT:
        problems.append(
            Problem(
                (*path, "type"), f"{point.table.value} holds single bits", mtype.value, "type: bit"
            )
        )
    expected_count = mtype.register_count
    if mtype in (ModbusType.STRING, ModbusType.BYTES):
        if point.count is None and not point.table.is_bit_table:
            problems.append(
                Problem(
                    (*path, "count"),
                    f"{mtype.value} needs a register count",
                    None,
                    "count: <registers> (2 characters per register)",
                )
            )
    elif point.count is not None and expected_count is not None and point.count != expected_count:
        problems.append(
            Problem(
                (*path, "count"),
                f"count disagrees with type {mtype.value}",
                point.count,
                f"{expected_count} register(s) for {mtype.value}",
            )
        )
    if point.bit is not None:
        width = 16 * (expected_count or 1)
        if point.table.is_bit_table or point.bit >= width:
            problems.append(
                Problem(
                    (*path, "bit"),
                    "bit index outside the register value",
                    point.bit,
                    f"0..{width - 1} on a register table",
                )
            )
    if point.mask is not None and mtype in _TYPE_BITS and point.mask >= 2 ** _TYPE_BITS[mtype]:
        problems.append(
            Problem(
                (*path, "mask"),
                f"mask wider than {mtype.value}",
                hex(point.mask),
                f"a mask below 2**{_TYPE_BITS[mtype]}",
            )
        )
    if point.mask is not None and mtype not in _TYPE_BITS:
        problems.append(
            Problem(
                (*path, "mask"),
                f"mask does not apply to {mtype.value}",
                point.mask,
                "mask only on integer types",
            )
        )
    if point.read_function is not None and point.read_function != point.table.read_function:
        problems.append(
            Problem(
                (*path, "read_function"),
                f"function {point.read_function} does not read {point.table.value}",
                point.read_function,
                f"{point.table.read_function} for {point.table.value}",
            )
        )
    if point.scale == 0:
        problems.append(
            Problem((*path, "scale"), "scale must not be zero", 0.0, "a non-zero factor")
        )
    if (
        point.valid_min is not None
        and point.valid_max is not None
        and point.valid_min > point.valid_max
    ):
        problems.append(
            Problem(
                (*path, "valid_min"),
                "valid_min is greater than valid_max",
                point.valid_min,
                f"<= {point.valid_max}",
            )
        )
    prop = model.property(point.property)
    if prop is not None:
        if prop.access.value == "rw" and not point.table.writable:
            problems.append(
                Problem(
                    (*path, "table"),
                    f"property {prop.id} is writable but {point.table.value} is read-only",
                    point.table.value,
                    "coil or holding_register for a read-write property",
                )
            )
        problems += _check_write_function(
            point.table, point.write_function, point.register_count, path
        )
        if point.enum_map and prop.schema.type is DataType.ENUM:
            members = {m.value for m in prop.schema.enum}
            for raw, mapped in point.enum_map:
                if mapped not in members:
                    problems.append(
                        Problem(
                            (*path, "enum", raw),
                            "maps to a value the property enum does not have",
                            mapped,
                            "one of " + ", ".join(map(str, sorted(members, key=str))),
                        )
                    )
    return problems


def _check_write_function(
    table: ModbusTable, function: int | None, count: int, path: Path
) -> list[Problem]:
    if function is None:
        return []
    allowed = _WRITE_FUNCTIONS.get(table, ())
    if function not in allowed:
        return [
            Problem(
                (*path, "write_function"),
                f"function {function} cannot write {table.value}",
                function,
                " or ".join(map(str, allowed)) if allowed else "a writable table",
            )
        ]
    if function == 6 and count != 1:
        return [
            Problem(
                (*path, "write_function"),
                "function 6 writes a single register",
                function,
                f"16 for a {count}-register value",
            )
        ]
    return []


def _check_bacnet(model: ThingModel, binding: BacnetBinding, path: Path) -> list[Problem]:
    problems: list[Problem] = []
    for i, point in enumerate(binding.points):
        ppath = (*path, "points", i)
        problems += _check_bacnet_object(point.object_type, point.property_id, ppath)
    for i, write in enumerate(binding.services):
        spath = (*path, "services", i)
        problems += _check_bacnet_object(write.object_type, write.property_id, spath)
        problems += _check_bacnet_service(model, write, spath)
    return problems


def _check_bacnet_object(object_type: str, property_id: str, path: Path) -> list[Problem]:
    problems: list[Problem] = []
    if object_type not in BACNET_OBJECT_TYPES and not object_type.isdigit():
        problems.append(
            Problem(
                (*path, "object_type"),
                "unknown BACnet object type" + _did_you_mean(object_type, BACNET_OBJECT_TYPES),
                object_type,
                "a BACnet object type like analog-input",
            )
        )
    if not _BACNET_PROPERTY_RE.match(property_id):
        problems.append(
            Problem(
                (*path, "property_id"),
                "invalid BACnet property",
                property_id,
                "a property name like present-value",
            )
        )
    return problems


def _did_you_mean(value: str, choices: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(value, sorted(choices), 1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _service_target(
    model: ThingModel, service_id: str, path: Path, what: str
) -> tuple[Service | None, list[Problem]]:
    """The service a binding entry names (None for a component's or a parent's), or a problem."""
    service = model.service(service_id)
    known = _target_known(
        service_id,
        set(),
        {c.instance for c in model.components},
        inherits=model.extends is not None,
    )
    if service is not None or known:
        return service, []
    ids = [s.id for s in model.services]
    return None, [
        Problem(
            (*path, "service"),
            f"{what} names a service the model does not define" + _did_you_mean(service_id, ids),
            service_id,
            "one of " + ", ".join(sorted(ids)) if ids else "a service of the model",
        )
    ]


_BACNET_WRITE_VALUES = {
    "binary": "true, false, active or inactive",
    "analog": "a number",
    "multi-state": "a state number >= 1",
}


def _bacnet_value_problem(object_type: str, value: object) -> str | None:
    """Which values a fixed write to ``object_type`` takes, when ``value`` is not one."""
    family = (
        object_type.rsplit("-", 1)[0]
        if object_type.endswith(("-input", "-output", "-value"))
        else ""
    )
    if family == "binary":
        ok = (isinstance(value, bool | int) and value in (0, 1)) or value in ("active", "inactive")
    elif family == "analog":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif family == "multi-state":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    else:
        return None
    return None if ok else _BACNET_WRITE_VALUES[family]


def _check_bacnet_service(
    model: ThingModel, write: BacnetServiceWrite, path: Path
) -> list[Problem]:
    service, problems = _service_target(model, write.service, path, "service-write")
    given = [
        key
        for key, on in (
            ("value", write.value is not None),
            ("param", write.param is not None),
            ("relinquish", write.relinquish),
        )
        if on
    ]
    if len(given) != 1:
        problems.append(
            Problem(
                path,
                "give exactly one of value, param or relinquish"
                + (f" (got {', '.join(given)})" if given else ""),
                None,
                "value: <constant>, param: <input id> or relinquish: true",
            )
        )
    if write.param is not None and service is not None:
        inputs = [f.id for f in service.inputs]
        if write.param not in inputs:
            problems.append(
                Problem(
                    (*path, "param"),
                    f"param is not an input of service {service.id}"
                    + _did_you_mean(write.param, inputs),
                    write.param,
                    "one of " + ", ".join(inputs) if inputs else f"{service.id} has no inputs",
                )
            )
    if write.value is not None:
        expected = _bacnet_value_problem(write.object_type, write.value)
        if expected is not None:
            problems.append(
                Problem(
                    (*path, "value"),
                    f"value does not fit a {write.object_type}",
                    write.value,
                    expected,
                )
            )
    if write.priority is not None and (write.priority == 6 or not 1 <= write.priority <= 16):
        problems.append(
            Problem(
                (*path, "priority"),
                "priority 6 is reserved for minimum on/off time"
                if write.priority == 6
                else "priority outside 1..16",
                write.priority,
                "1..16 except 6 (8 = manual operator, 16 = lowest)",
            )
        )
    return problems


def _check_coap(model: ThingModel, binding: CoapBinding, path: Path) -> list[Problem]:
    problems: list[Problem] = []
    for i, cpoint in enumerate(binding.points):
        problems += _check_resource(cpoint.resource, (*path, "points", i, "resource"))
        if cpoint.path and not _JSON_PATH_RE.match(cpoint.path):
            problems.append(
                Problem(
                    (*path, "points", i, "path"),
                    "invalid payload path",
                    cpoint.path,
                    "a JSON path like $.state.value or $.items[0]",
                )
            )
    seen: dict[str, int] = {}
    for i, call in enumerate(binding.services):
        spath = (*path, "services", i)
        service, found = _service_target(model, call.service, spath, "service binding")
        problems += found
        problems += _check_resource(call.resource, (*spath, "resource"))
        if call.service in seen:
            problems.append(
                Problem(
                    (*spath, "service"),
                    f"service bound twice in coap (first at services[{seen[call.service]}])",
                    call.service,
                    "one request per service",
                )
            )
        seen.setdefault(call.service, i)
        if (
            call.content_format is ContentFormat.TEXT
            and service is not None
            and (len(service.inputs) > 1 or len(service.outputs) > 1)
        ):
            problems.append(
                Problem(
                    (*spath, "content_format"),
                    f"a text payload carries one value but {service.id} has "
                    f"{len(service.inputs)} inputs and {len(service.outputs)} outputs",
                    call.content_format.value,
                    "json or cbor (text: at most one input and one output)",
                )
            )
    return problems


def _check_resource(resource: str, path: Path) -> list[Problem]:
    if resource.startswith("/") and " " not in resource:
        return []
    return [
        Problem(
            path, "invalid CoAP resource path", resource, "an absolute path like /sensors/occupancy"
        )
    ]


def mqtt_topic_problem(topic: str, *, filter_allowed: bool = True) -> str | None:
    """What is wrong with an MQTT topic (filter), or None when it is valid."""
    if not topic or len(topic.encode()) > 65535 or "\x00" in topic:
        return "topic must be 1..65535 bytes without NUL"
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if level in ("+", "#"):
            if not filter_allowed:
                return "wildcards are not allowed here"
            if level == "#" and i != len(levels) - 1:
                return "'#' must be the last level"
        elif "+" in level or "#" in level:
            return f"wildcard inside level {level!r}: '+' and '#' must fill a whole level"
    return None


def _check_mqtt(model: ThingModel, binding: MqttBinding, path: Path) -> list[Problem]:
    problems: list[Problem] = []
    routes: tuple[tuple[str, Sequence[MqttPoint | MqttEventRoute]], ...] = (
        ("points", binding.points),
        ("events", binding.events),
    )
    for key, entries in routes:
        for i, entry in enumerate(entries):
            problem = mqtt_topic_problem(entry.topic)
            if problem:
                problems.append(
                    Problem(
                        (*path, key, i, "topic"),
                        f"invalid MQTT topic: {problem}",
                        entry.topic,
                        "levels separated by /, wildcards + and #, {device_id} placeholder",
                    )
                )
            if entry.path and not _JSON_PATH_RE.match(entry.path):
                problems.append(
                    Problem(
                        (*path, key, i, "path"),
                        "invalid payload path",
                        entry.path,
                        "a JSON path like $.smoke.state or $.items[0]",
                    )
                )
    for i, route in enumerate(binding.events):
        if model.event(route.event) is None and not _target_known(
            route.event,
            set(),
            {c.instance for c in model.components},
            inherits=model.extends is not None,
        ):
            problems.append(
                Problem(
                    (*path, "events", i, "event"),
                    "binding names an event the model does not define",
                    route.event,
                    "an event of the model",
                )
            )
    for key in ("command_topic", "reply_topic"):
        topic = getattr(binding, key)
        if topic is not None:
            problem = mqtt_topic_problem(topic, filter_allowed=key == "reply_topic")
            if problem:
                problems.append(
                    Problem(
                        (*path, key),
                        f"invalid MQTT topic: {problem}",
                        topic,
                        "a topic without wildcards",
                    )
                )
    return problems
