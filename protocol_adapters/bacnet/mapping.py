"""Pure BACnet mapping: identifiers, application values <-> thing-model values, quality.

No sockets here. Values in are bacpypes3 application values (``Real``, ``Unsigned``,
``Enumerated`` such as ``BinaryPV``, ``CharacterString``, ``Boolean``, ``Null``, ``BitString``
such as ``StatusFlags``, arrays) or the plain Python values they subclass; values out for
writes are bacpypes3 values typed for the object (``Real`` for analog objects, ``BinaryPV``
for binary ones, ``Unsigned`` for multi-state ones, ``Null`` to relinquish).

Every function maps its input or raises :class:`BacnetConfigError` /
:class:`BacnetMappingError` naming what and where, never anything else.

Quality from ``status-flags`` and ``reliability`` (BACnet clause 12; OPC UA's BACnet mapping):
fault, or a reliability other than no-fault-detected -> bad; out-of-service or overridden ->
uncertain (the value does not follow the physical point); in-alarm alone -> good (the value is
real, the alarm is the device's opinion of it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from bacpypes3.basetypes import (
    BinaryPV,
    ObjectType,
    PropertyIdentifier,
)
from bacpypes3.primitivedata import (
    Atomic,
    BitString,
    Boolean,
    CharacterString,
    Double,
    Enumerated,
    Integer,
    Null,
    Real,
    Unsigned,
)

from protocol_adapters.bacnet.errors import BacnetConfigError, BacnetMappingError
from thing_models.messages import Quality
from thing_models.model import (
    INT_RANGES,
    Access,
    BacnetBinding,
    BacnetPoint,
    BacnetServiceWrite,
    Bindings,
    DataSchema,
    DataType,
    EnumValue,
    Property,
    SemVer,
    ThingModel,
)

__all__ = [
    "STATUS_FLAGS",
    "UNIT_SYMBOLS",
    "DiscoveredDevice",
    "DiscoveredObject",
    "ObjectId",
    "ServiceWrite",
    "check_priority",
    "compile_service_writes",
    "draft_model",
    "fixed_bacnet_value",
    "parse_object_id",
    "parse_property_ref",
    "point_object_id",
    "quality_of",
    "to_bacnet_value",
    "to_model_value",
]

#: The bits of a StatusFlags bit string, in order (clause 12.50.x).
STATUS_FLAGS: Final = ("in-alarm", "fault", "overridden", "out-of-service")
_MAX_INSTANCE: Final = 4194302
_OBJECT_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9-]*|[0-9]+)\s*[,:]\s*([0-9]+)\s*\Z")
_PROPERTY_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9-]*|[0-9]+)\s*(?:\[\s*([0-9]+)\s*\])?\s*\Z")
_ANALOG: Final = frozenset({"analog-input", "analog-output", "analog-value"})
_BINARY: Final = frozenset({"binary-input", "binary-output", "binary-value"})
_MULTISTATE: Final = frozenset({"multi-state-input", "multi-state-output", "multi-state-value"})
#: object types whose present-value is commandable or writable (drafts mark them rw)
_WRITABLE: Final = frozenset(
    {
        "analog-output",
        "analog-value",
        "binary-output",
        "binary-value",
        "multi-state-output",
        "multi-state-value",
        "characterstring-value",
        "integer-value",
        "positive-integer-value",
        "large-analog-value",
    }
)


# --------------------------------------------------------------------------- identifiers


@dataclass(frozen=True, slots=True, order=True)
class ObjectId:
    """A BACnet object identifier: type name (``analog-input``) and instance."""

    type: str
    instance: int

    def __str__(self) -> str:
        return f"{self.type},{self.instance}"


def _object_type_name(text: str, where: str) -> str:
    try:
        value = ObjectType(int(text) if text.isdigit() else text)
    except (ValueError, TypeError, KeyError):
        raise BacnetConfigError(
            f"{where}: {text!r} is not a BACnet object type (e.g. analog-input, binary-value)"
        ) from None
    if str(value).isdigit() and not 128 <= int(value) <= 1023:
        raise BacnetConfigError(f"{where}: object type {text!r} is not defined")
    return str(value)


def parse_object_id(text: object, where: str = "object identifier") -> ObjectId:
    """``analog-input,1`` (or ``analog-input:1``, ``0,1``) as an :class:`ObjectId`."""
    match = _OBJECT_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise BacnetConfigError(f"{where}: {text!r} is not 'object-type,instance'")
    instance = int(match.group(2))
    if instance > _MAX_INSTANCE:
        raise BacnetConfigError(f"{where}: instance {instance} is above {_MAX_INSTANCE}")
    return ObjectId(_object_type_name(match.group(1), where), instance)


def parse_property_ref(text: object, where: str = "property") -> tuple[str, int | None]:
    """``present-value`` or ``priority-array[8]`` as (canonical name, array index or None)."""
    match = _PROPERTY_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise BacnetConfigError(f"{where}: {text!r} is not a property identifier")
    name, index = match.groups()
    try:
        prop = PropertyIdentifier(int(name) if name.isdigit() else name)
    except (ValueError, TypeError, KeyError):
        raise BacnetConfigError(
            f"{where}: {name!r} is not a BACnet property identifier (e.g. present-value)"
        ) from None
    if str(prop).isdigit() and not 512 <= int(prop) <= 4194303:
        raise BacnetConfigError(f"{where}: property {name!r} is not defined")
    return str(prop), None if index is None else int(index)


def point_object_id(point: BacnetPoint) -> ObjectId:
    """The object of ``point``, checked."""
    where = f"{point.property}: object_type"
    return parse_object_id(f"{point.object_type},{point.instance}", where)


def check_priority(priority: object, where: str = "priority") -> int:
    """A write priority 1..16 (6 is reserved for minimum on/off and is refused)."""
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 16:
        raise BacnetConfigError(f"{where}: priority must be an integer 1..16 (got {priority!r})")
    if priority == 6:
        raise BacnetConfigError(f"{where}: priority 6 is reserved for minimum on/off time")
    return priority


# --------------------------------------------------------------------------- quality


def quality_of(status_flags: Sequence[int] | None, reliability: str | None) -> tuple[Quality, str]:
    """The quality and reason of a value from its status flags and reliability."""
    flags = list(status_flags or ())[: len(STATUS_FLAGS)]
    flags += [0] * (len(STATUS_FLAGS) - len(flags))
    on = {name for name, bit in zip(STATUS_FLAGS, flags, strict=True) if bit}
    reliable = reliability in (None, "", "no-fault-detected")
    if "fault" in on or not reliable:
        detail = f" ({reliability})" if not reliable else ""
        return Quality.BAD, f"fault{detail}"
    uncertain = [name for name in ("out-of-service", "overridden") if name in on]
    if uncertain:
        return Quality.UNCERTAIN, ", ".join(uncertain)
    return Quality.GOOD, ""


# --------------------------------------------------------------------------- reading


def _number(raw: object, where: str) -> float | int:
    if isinstance(raw, Null | str) or not isinstance(raw, int | float):
        raise BacnetMappingError(f"{where}: expected a number, got {_show(raw)}")
    return raw


def _show(raw: object) -> str:
    text = repr(raw)
    return f"{type(raw).__name__} {text[:60]}"


def _integer(raw: object, schema: DataSchema, where: str) -> int:
    number = _number(raw, where)
    if isinstance(number, float):
        if not math.isfinite(number):
            raise BacnetMappingError(f"{where}: {number} is not an integer")
        number = round(number)
    low, high = INT_RANGES.get(schema.type, INT_RANGES[DataType.INT64])
    if not low <= number <= high:
        raise BacnetMappingError(f"{where}: {number} is outside the {schema.type} range")
    return int(number)


def _enum_member(raw: object, schema: DataSchema, where: str) -> int | str:
    if isinstance(raw, Null) or not isinstance(raw, int | str):
        raise BacnetMappingError(f"{where}: expected an enumeration value, got {_show(raw)}")
    names_wanted = any(isinstance(m.value, str) for m in schema.enum)
    value: int | str
    if names_wanted and isinstance(raw, Enumerated):
        value = str(raw)
    elif isinstance(raw, str | bool):
        value = raw if isinstance(raw, str) else int(raw)
    else:
        value = int(raw)
    if schema.enum and schema.enum_label(value) is None:
        raise BacnetMappingError(f"{where}: {value!r} is not one of the model's enum values")
    return value


def _boolean(raw: object, where: str) -> bool:
    if isinstance(raw, str) and not isinstance(raw, Enumerated):
        if raw in ("active", "inactive"):
            return raw == "active"
    elif isinstance(raw, int | float) and not isinstance(raw, Null) and raw in (0, 1):
        return bool(raw)
    raise BacnetMappingError(f"{where}: expected active/inactive or a boolean, got {_show(raw)}")


def _struct(raw: object, schema: DataSchema, where: str) -> dict[str, Any]:
    if not isinstance(raw, BitString | list | tuple) or isinstance(raw, Null):
        raise BacnetMappingError(f"{where}: expected a bit string for a struct, got {_show(raw)}")
    bits = list(raw)
    if not all(isinstance(b, int) and b in (0, 1) for b in bits):
        raise BacnetMappingError(f"{where}: a bit string holds 0 and 1 only")
    if len(bits) < len(schema.fields):
        raise BacnetMappingError(
            f"{where}: {len(bits)} bits for a struct of {len(schema.fields)} fields"
        )
    result: dict[str, Any] = {}
    for item, bit in zip(schema.fields, bits, strict=False):
        if item.schema.type is not DataType.BOOL:
            raise BacnetMappingError(f"{where}: struct field {item.id} must be bool")
        result[item.id] = bool(bit)
    return result


def to_model_value(raw: object, schema: DataSchema, where: str) -> Any:
    """The thing-model value of BACnet value ``raw`` for a property of type ``schema``."""
    kind = schema.type
    if kind is DataType.BOOL:
        return _boolean(raw, where)
    if kind in (DataType.INT32, DataType.INT64, DataType.TIMESTAMP):
        return _integer(raw, schema, where)
    if kind in (DataType.FLOAT, DataType.DOUBLE):
        return float(_number(raw, where))
    if kind is DataType.ENUM:
        return _enum_member(raw, schema, where)
    if kind is DataType.TEXT:
        if isinstance(raw, Null) or not isinstance(raw, str | int | float):
            raise BacnetMappingError(f"{where}: expected a character string, got {_show(raw)}")
        text = str(raw)
        if schema.max_length is not None and len(text) > schema.max_length:
            raise BacnetMappingError(f"{where}: text longer than {schema.max_length}")
        return text
    if kind is DataType.STRUCT:
        return _struct(raw, schema, where)
    if kind is DataType.ARRAY:
        if schema.items is None or not isinstance(raw, list | tuple) or isinstance(raw, Null):
            raise BacnetMappingError(f"{where}: expected an array, got {_show(raw)}")
        items = schema.items
        return [to_model_value(item, items, f"{where}[{i + 1}]") for i, item in enumerate(raw)]
    raise BacnetMappingError(f"{where}: type {kind} has no BACnet mapping")


# --------------------------------------------------------------------------- writing


def _check_range(value: float | int, schema: DataSchema, where: str) -> None:
    if schema.minimum is not None and value < schema.minimum:
        raise BacnetMappingError(f"{where}: {value} is below the minimum {schema.minimum}")
    if schema.maximum is not None and value > schema.maximum:
        raise BacnetMappingError(f"{where}: {value} is above the maximum {schema.maximum}")


def _model_value(value: object, schema: DataSchema, where: str) -> Any:
    """``value`` checked against ``schema`` (type, range, enum, length)."""
    kind = schema.type
    if kind is DataType.BOOL:
        if not isinstance(value, bool):
            raise BacnetMappingError(f"{where}: expected a bool, got {_show(value)}")
        return value
    if kind.is_integer:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BacnetMappingError(f"{where}: expected an integer, got {_show(value)}")
        low, high = INT_RANGES[kind]
        if not low <= value <= high:
            raise BacnetMappingError(f"{where}: {value} is outside the {kind} range")
        _check_range(value, schema, where)
        return value
    if kind in (DataType.FLOAT, DataType.DOUBLE):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BacnetMappingError(f"{where}: expected a number, got {_show(value)}")
        if not math.isfinite(value):
            raise BacnetMappingError(f"{where}: {value} is not a finite number")
        _check_range(value, schema, where)
        return float(value)
    if kind is DataType.ENUM:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise BacnetMappingError(f"{where}: expected an enum value, got {_show(value)}")
        if schema.enum and schema.enum_label(value) is None:
            raise BacnetMappingError(f"{where}: {value!r} is not one of the model's enum values")
        return value
    if kind is DataType.TEXT:
        if not isinstance(value, str):
            raise BacnetMappingError(f"{where}: expected text, got {_show(value)}")
        if schema.max_length is not None and len(value) > schema.max_length:
            raise BacnetMappingError(f"{where}: text longer than {schema.max_length}")
        return value
    raise BacnetMappingError(f"{where}: a {kind} property cannot be written over BACnet")


def to_bacnet_value(value: object, schema: DataSchema, object_type: str, where: str) -> Atomic:
    """The BACnet value to write for model value ``value`` (None: relinquish, a Null)."""
    if value is None:
        return Null(())
    checked = _model_value(value, schema, where)
    try:
        if object_type in _BINARY:
            if not isinstance(checked, bool | int) or checked not in (0, 1):
                raise BacnetMappingError(f"{where}: a binary object takes a bool")
            return BinaryPV(int(checked))
        if object_type in _ANALOG:
            if not isinstance(checked, int | float):
                raise BacnetMappingError(f"{where}: an analog object takes a number")
            return Real(float(checked))
        if object_type in _MULTISTATE:
            if isinstance(checked, bool) or not isinstance(checked, int) or checked < 1:
                raise BacnetMappingError(f"{where}: a multi-state object takes a state >= 1")
            return Unsigned(checked)
        if object_type == "large-analog-value":
            return Double(float(checked))
        return _by_type(checked, where)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BacnetMappingError(f"{where}: {value!r} does not fit: {exc}") from exc


def _by_type(value: Any, where: str) -> Atomic:
    if isinstance(value, bool):
        return Boolean(value)
    if isinstance(value, int):
        if not -(2**31) <= value < 2**32:
            raise BacnetMappingError(f"{where}: {value} does not fit 32 bits")
        return Unsigned(value) if value >= 0 else Integer(value)
    if isinstance(value, float):
        return Real(value)
    return CharacterString(str(value))


# --------------------------------------------------------------------------- services

_FIXED_TYPES: Final = {bool: DataType.BOOL, int: DataType.INT64, float: DataType.DOUBLE}


def fixed_bacnet_value(value: object, object_type: str, where: str) -> Atomic:
    """The BACnet value of a binding's fixed service value: a bool (or ``active`` /
    ``inactive`` for binary objects), a number or a string, typed for ``object_type``."""
    if isinstance(value, str) and object_type in _BINARY and value in ("active", "inactive"):
        value = value == "active"
    kind = DataType.TEXT if isinstance(value, str) else _FIXED_TYPES.get(type(value))
    if kind is None:
        raise BacnetMappingError(f"{where}: a fixed value must be a scalar, got {_show(value)}")
    return to_bacnet_value(value, DataSchema(kind), object_type, where)


@dataclass(frozen=True, slots=True)
class ServiceWrite:
    """One compiled WriteProperty of a service: the target, and a fixed value (Null to
    relinquish) or the input whose value is written."""

    service: str
    object_id: ObjectId
    property_id: str
    array_index: int | None
    priority: int | None
    value: Atomic | None = None
    param: str | None = None
    schema: DataSchema | None = None

    @property
    def where(self) -> str:
        index = "" if self.array_index is None else f"[{self.array_index}]"
        return f"{self.service} ({self.object_id} {self.property_id}{index})"

    def bacnet_value(self, args: Mapping[str, object]) -> Atomic:
        """The value to write for the call's ``args``; raises :class:`BacnetMappingError`
        for a missing or unfit input."""
        if self.value is not None:
            return self.value
        if self.param is None or self.schema is None:
            raise BacnetConfigError(f"{self.where}: neither a value nor an input to write")
        if self.param not in args or args[self.param] is None:
            raise BacnetMappingError(f"{self.where}: input {self.param!r} is missing")
        where = f"{self.where}: input {self.param!r}"
        return to_bacnet_value(args[self.param], self.schema, self.object_id.type, where)


def _service_write(write: BacnetServiceWrite, model: ThingModel) -> ServiceWrite:
    where = f"service {write.service}"
    service = model.service(write.service)
    if service is None:
        raise BacnetConfigError(f"{where}: the model has no such service")
    oid = parse_object_id(f"{write.object_type},{write.instance}", f"{where}: object_type")
    prop, index = parse_property_ref(write.property_id, f"{where}: property_id")
    priority = None
    if write.priority is not None:
        priority = check_priority(write.priority, f"{where}: priority")
    given = sum((write.value is not None, write.param is not None, write.relinquish))
    if given != 1:
        raise BacnetConfigError(f"{where}: give exactly one of value, param or relinquish")
    base = ServiceWrite(write.service, oid, prop, index, priority)
    if write.relinquish:
        return replace(base, value=Null(()))
    if write.param is not None:
        field = next((f for f in service.inputs if f.id == write.param), None)
        if field is None:
            raise BacnetConfigError(f"{where}: {write.param!r} is not an input of the service")
        return replace(base, param=write.param, schema=field.schema)
    return replace(base, value=fixed_bacnet_value(write.value, oid.type, base.where))


def compile_service_writes(
    binding: BacnetBinding, model: ThingModel
) -> dict[str, tuple[ServiceWrite, ...]]:
    """The binding's service writes by service id, in binding order; raises
    :class:`BacnetConfigError` (or :class:`BacnetMappingError` for an unfit fixed value)."""
    services: dict[str, list[ServiceWrite]] = {}
    for write in binding.services:
        services.setdefault(write.service, []).append(_service_write(write, model))
    return {name: tuple(writes) for name, writes in services.items()}


# --------------------------------------------------------------------------- drafts


@dataclass(frozen=True, slots=True)
class DiscoveredObject:
    """One object of a discovered device, as far as discovery read it."""

    object_id: ObjectId
    name: str = ""
    description: str = ""
    units: str | None = None
    state_texts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DiscoveredDevice:
    """A device that answered Who-Is, with what discovery read from it."""

    instance: int
    address: str
    name: str = ""
    vendor: str = ""
    vendor_id: int = 0
    objects: tuple[DiscoveredObject, ...] = ()


#: A few common engineering units (BACnet name -> unit symbol); others keep the BACnet name.
UNIT_SYMBOLS: Final[Mapping[str, str]] = {
    "degrees-celsius": "°C",
    "degrees-fahrenheit": "°F",
    "percent": "%",
    "percent-relative-humidity": "%RH",
    "parts-per-million": "ppm",
    "pascals": "Pa",
    "kilopascals": "kPa",
    "watts": "W",
    "kilowatts": "kW",
    "kilowatt-hours": "kWh",
    "volts": "V",
    "amperes": "A",
    "hertz": "Hz",
    "liters-per-second": "l/s",
    "cubic-meters-per-hour": "m³/h",
    "seconds": "s",
    "minutes": "min",
    "hours": "h",
}


def _identifier(name: str, fallback: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]+", "_", name.strip()).strip("_").lower() or fallback
    if not re.match(r"[A-Za-z_]", base):
        base = f"p_{base}"
    base = base[:44]
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _draft_schema(obj: DiscoveredObject) -> DataSchema | None:
    kind = obj.object_id.type
    unit = UNIT_SYMBOLS.get(obj.units, obj.units) if obj.units else None
    if kind in _ANALOG or kind == "large-analog-value":
        return DataSchema(DataType.FLOAT if kind in _ANALOG else DataType.DOUBLE, unit=unit)
    if kind in _BINARY:
        return DataSchema(DataType.BOOL)
    if kind in _MULTISTATE:
        texts = obj.state_texts or ("state 1",)
        members = tuple(EnumValue(i, text or f"state {i}") for i, text in enumerate(texts, 1))
        return DataSchema(DataType.ENUM, enum=members)
    if kind == "integer-value":
        return DataSchema(DataType.INT32, unit=unit)
    if kind == "positive-integer-value":
        return DataSchema(DataType.INT64, minimum=0, unit=unit)
    if kind == "characterstring-value":
        return DataSchema(DataType.TEXT)
    return None


def draft_model(device: DiscoveredDevice, name: str | None = None) -> ThingModel:
    """A draft thing model of ``device``: one property per value object (analog, binary,
    multi-state, integer, character string), named after the object names, bound to its
    present-value; outputs and values are writable at priority 16. Other objects (device,
    network port, schedules, trend logs ...) are left out."""
    taken: set[str] = set()
    properties: list[Property] = []
    points: list[BacnetPoint] = []
    for obj in sorted(device.objects, key=lambda o: o.object_id):
        schema = _draft_schema(obj)
        if schema is None:
            continue
        oid = obj.object_id
        prop_id = _identifier(obj.name, f"{oid.type.replace('-', '_')}_{oid.instance}", taken)
        writable = oid.type in _WRITABLE
        properties.append(
            Property(
                id=prop_id,
                schema=schema,
                title=(obj.description or obj.name)[:200],
                access=Access.READ_WRITE if writable else Access.READ,
            )
        )
        points.append(
            BacnetPoint(
                property=prop_id,
                object_type=oid.type,
                instance=oid.instance,
                write_priority=16 if writable else None,
            )
        )
    model_name = name or f"discovered.bacnet/device-{device.instance}"
    return ThingModel(
        name=model_name,
        version=SemVer(0, 1, 0),
        title=(device.name or f"BACnet device {device.instance}")[:200],
        description=f"Draft model discovered from BACnet device {device.instance} "
        f"at {device.address}; review names, types, ranges and access before use.",
        vendor=device.vendor[:200],
        properties=tuple(properties),
        bindings=Bindings(
            bacnet=BacnetBinding(device_instance=device.instance, points=tuple(points))
        ),
    )
