"""The canonical thing-model data model: one set of frozen dataclasses every format maps to.

A :class:`ThingModel` describes one device type: identity, properties, events, services,
composition (``extends`` and components) and protocol :class:`Bindings`. Loaders (YAML, Alibaba
TSL, W3C WoT) produce it and serializers consume it; nothing here does I/O.

Unknown or format-specific fields that have no place in the model are kept in ``extensions``
mappings so that a round trip through our YAML loses nothing.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import total_ordering
from typing import Any

__all__ = [
    "IDENTIFIER_RE",
    "MODEL_NAME_RE",
    "Access",
    "BacnetBinding",
    "BacnetPoint",
    "BacnetServiceWrite",
    "Bindings",
    "ByteOrder",
    "CallType",
    "CoapBinding",
    "CoapMethod",
    "CoapMode",
    "CoapPoint",
    "CoapService",
    "Component",
    "ContentFormat",
    "DataSchema",
    "DataType",
    "DeadbandMode",
    "EnumValue",
    "Event",
    "EventLevel",
    "Field",
    "ModbusBinding",
    "ModbusPoint",
    "ModbusServiceWrite",
    "ModbusTable",
    "ModbusType",
    "ModelRef",
    "MqttBinding",
    "MqttEventRoute",
    "MqttPoint",
    "Property",
    "ReportGroup",
    "ReportPolicy",
    "Reporting",
    "SemVer",
    "Service",
    "ThingModel",
]

#: Property, event, service, field and component identifiers (Alibaba TSL's rule: at most 50).
IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,49}\Z")
#: Model names: a dotted lowercase namespace, a slash, a lowercase name
#: (``com.acme.energy/meter-3p``).
MODEL_NAME_RE = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)*/[a-z][a-z0-9-]*(\.[a-z0-9-]+)*\Z")
_SEMVER_RE = re.compile(
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?\Z"
)


# --------------------------------------------------------------------------- identity


@total_ordering
@dataclass(frozen=True, slots=True)
class SemVer:
    """A semantic version ``MAJOR.MINOR.PATCH[-PRERELEASE]``."""

    major: int
    minor: int
    patch: int
    prerelease: str = ""

    @classmethod
    def parse(cls, text: str) -> SemVer:
        """Parse ``text``; raises ValueError naming the text when it is not a semantic version."""
        match = _SEMVER_RE.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH)")
        major, minor, patch, pre = match.groups()
        return cls(int(major), int(minor), int(patch), pre or "")

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{self.prerelease}" if self.prerelease else core

    def _key(self) -> tuple[int, int, int, int, str]:
        # A release sorts after its prereleases.
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, self.prerelease)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self._key() < other._key()


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A reference ``name@version``; ``version`` may be exact (``1.2.0``), partial (``1`` or
    ``1.2``, the newest matching) or empty (the newest of all)."""

    name: str
    version: str = ""

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, _, version = text.partition("@")
        if not MODEL_NAME_RE.match(name):
            raise ValueError(
                f"{text!r} is not a model reference (namespace/name@version, "
                "e.g. com.acme.energy/meter-3p@1.2.0)"
            )
        if version and not re.match(r"^[0-9]+(\.[0-9]+){0,2}(-[0-9A-Za-z.-]+)?\Z", version):
            raise ValueError(f"{text!r}: version {version!r} is not MAJOR[.MINOR[.PATCH]]")
        return cls(name, version)

    def matches(self, version: SemVer) -> bool:
        """True when ``version`` satisfies this reference's (possibly partial) version."""
        if not self.version:
            return True
        if "-" in self.version or self.version.count(".") == 2:
            return str(version) == self.version
        parts = [int(p) for p in self.version.split(".")]
        return [version.major, version.minor][: len(parts)] == parts

    def __str__(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name


# --------------------------------------------------------------------------- data schemas


class DataType(StrEnum):
    """Value types of properties, parameters and struct fields."""

    BOOL = "bool"
    INT32 = "int32"
    INT64 = "int64"
    FLOAT = "float"
    DOUBLE = "double"
    TEXT = "text"
    ENUM = "enum"
    TIMESTAMP = "timestamp"  # milliseconds since the Unix epoch, UTC (TSL "date")
    STRUCT = "struct"
    ARRAY = "array"

    @property
    def is_numeric(self) -> bool:
        return self in _NUMERIC

    @property
    def is_integer(self) -> bool:
        return self in (DataType.INT32, DataType.INT64, DataType.TIMESTAMP)


_NUMERIC = frozenset({DataType.INT32, DataType.INT64, DataType.FLOAT, DataType.DOUBLE})

#: Inclusive value ranges of the integer types.
INT_RANGES: Mapping[DataType, tuple[int, int]] = {
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.TIMESTAMP: (0, 2**63 - 1),
}


@dataclass(frozen=True, slots=True)
class EnumValue:
    """One member of an enum: the wire value and its label."""

    value: int | str
    label: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class DataSchema:
    """The type of a value with its constraints.

    Which fields apply depends on ``type``: numeric types use ``minimum``/``maximum``/``step``/
    ``unit``; text uses ``max_length``; enum uses ``enum``; bool may carry ``bool_labels``
    (false label, true label); struct uses ``fields``; array uses ``items`` and ``max_items``.
    """

    type: DataType
    minimum: int | float | None = None
    maximum: int | float | None = None
    step: int | float | None = None
    unit: str | None = None
    unit_name: str | None = None
    max_length: int | None = None
    enum: tuple[EnumValue, ...] = ()
    bool_labels: tuple[str, str] | None = None
    fields: tuple[Field, ...] = ()
    items: DataSchema | None = None
    max_items: int | None = None

    def enum_label(self, value: int | str) -> str | None:
        """The label of enum member ``value``, or None when it is not a member."""
        for member in self.enum:
            if member.value == value:
                return member.label
        return None

    def field(self, field_id: str) -> Field | None:
        for item in self.fields:
            if item.id == field_id:
                return item
        return None


@dataclass(frozen=True, slots=True)
class Field:
    """A named value: a struct member, an event output or a service parameter."""

    id: str
    schema: DataSchema
    title: str = ""
    description: str = ""
    required: bool = True


# --------------------------------------------------------------------------- affordances


class Access(StrEnum):
    READ = "r"
    READ_WRITE = "rw"


class EventLevel(StrEnum):
    INFO = "info"
    ALERT = "alert"
    ERROR = "error"


class CallType(StrEnum):
    SYNC = "sync"
    ASYNC = "async"


@dataclass(frozen=True, slots=True)
class Property:
    """A state variable of the device."""

    id: str
    schema: DataSchema
    title: str = ""
    description: str = ""
    access: Access = Access.READ
    required: bool = False
    extensions: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    """Something the device reports when it happens, with output parameters."""

    id: str
    level: EventLevel = EventLevel.INFO
    outputs: tuple[Field, ...] = ()
    title: str = ""
    description: str = ""
    extensions: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Service:
    """An operation the device performs, with input and output parameters."""

    id: str
    call_type: CallType = CallType.ASYNC
    inputs: tuple[Field, ...] = ()
    outputs: tuple[Field, ...] = ()
    title: str = ""
    description: str = ""
    extensions: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Component:
    """A sub-model included under an instance name; its affordances appear as ``instance:id``."""

    instance: str
    model: ModelRef
    title: str = ""
    description: str = ""


# --------------------------------------------------------------------------- reporting


class DeadbandMode(StrEnum):
    ABSOLUTE = "absolute"
    PERCENT = "percent"


@dataclass(frozen=True, slots=True)
class ReportPolicy:
    """How often a point is read and when its value is reported.

    ``poll_interval_s``: seconds between reads (None: the protocol pushes values).
    ``on_change``: report only when the value moved by more than ``deadband`` (absolute units,
    or percent of the last reported value); ``heartbeat_s``: report at least this often anyway.
    """

    poll_interval_s: float | None = None
    on_change: bool = False
    deadband: float = 0.0
    deadband_mode: DeadbandMode = DeadbandMode.ABSOLUTE
    heartbeat_s: float | None = None


@dataclass(frozen=True, slots=True)
class ReportGroup:
    name: str
    policy: ReportPolicy


@dataclass(frozen=True, slots=True)
class Reporting:
    """The default policy for every point, and named groups points may join with ``group:``."""

    default: ReportPolicy = ReportPolicy(poll_interval_s=10.0)
    groups: tuple[ReportGroup, ...] = ()

    def group(self, name: str) -> ReportGroup | None:
        for item in self.groups:
            if item.name == name:
                return item
        return None


# --------------------------------------------------------------------------- Modbus


class ModbusTable(StrEnum):
    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    INPUT_REGISTER = "input_register"
    HOLDING_REGISTER = "holding_register"

    @property
    def is_bit_table(self) -> bool:
        return self in (ModbusTable.COIL, ModbusTable.DISCRETE_INPUT)

    @property
    def writable(self) -> bool:
        return self in (ModbusTable.COIL, ModbusTable.HOLDING_REGISTER)

    @property
    def read_function(self) -> int:
        return _READ_FUNCTION[self]


_READ_FUNCTION = {
    ModbusTable.COIL: 1,
    ModbusTable.DISCRETE_INPUT: 2,
    ModbusTable.HOLDING_REGISTER: 3,
    ModbusTable.INPUT_REGISTER: 4,
}


class ModbusType(StrEnum):
    BIT = "bit"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT16 = "float16"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    BYTES = "bytes"

    @property
    def register_count(self) -> int | None:
        """Registers a value of this type occupies; None for string/bytes (set by ``count``)."""
        return _REGISTER_COUNT.get(self)


_REGISTER_COUNT = {
    ModbusType.BIT: 1,
    ModbusType.INT8: 1,
    ModbusType.UINT8: 1,
    ModbusType.INT16: 1,
    ModbusType.UINT16: 1,
    ModbusType.FLOAT16: 1,
    ModbusType.INT32: 2,
    ModbusType.UINT32: 2,
    ModbusType.FLOAT32: 2,
    ModbusType.INT64: 4,
    ModbusType.UINT64: 4,
    ModbusType.FLOAT64: 4,
}


class ByteOrder(StrEnum):
    """Order of bytes in a register (``byte_order``) or of registers in a value (``word_order``)."""

    BIG = "big"
    LITTLE = "little"


@dataclass(frozen=True, slots=True)
class ModbusPoint:
    """Where a property lives in a Modbus device and how raw registers become its value.

    Decoding order: raw registers -> (byte/word order) integer or float -> ``mask`` -> ``shift``
    (right) -> sentinel check against the raw value -> ``enum_map`` or ``value * scale + offset``
    -> ``rounding`` decimals -> ``valid_min``/``valid_max`` guards (outside: bad quality).
    ``address`` is zero-based (the PDU address) unless the binding says ``addressing: one-based``.
    ``count`` is the register count; required for string/bytes, checked against the type otherwise.
    """

    property: str
    table: ModbusTable
    address: int
    type: ModbusType
    count: int | None = None
    unit_id: int | None = None
    byte_order: ByteOrder | None = None
    word_order: ByteOrder | None = None
    bit: int | None = None
    scale: float = 1.0
    offset: float = 0.0
    mask: int | None = None
    shift: int = 0
    rounding: int | None = None
    enum_map: tuple[tuple[int, int | str | bool], ...] = ()
    sentinel: int | float | None = None
    valid_min: float | None = None
    valid_max: float | None = None
    read_function: int | None = None
    write_function: int | None = None
    encoding: str = "ascii"
    group: str | None = None
    report: ReportPolicy | None = None

    @builtins.property
    def register_count(self) -> int:
        """Registers (or coils) this point spans."""
        if self.table.is_bit_table:
            return 1
        if self.count is not None:
            return self.count
        return self.type.register_count or 1


@dataclass(frozen=True, slots=True)
class ModbusServiceWrite:
    """A service carried out as a Modbus write: ``value`` fixed, or taken from input ``param``."""

    service: str
    table: ModbusTable
    address: int
    type: ModbusType
    value: int | float | bool | None = None
    param: str | None = None
    write_function: int | None = None


@dataclass(frozen=True, slots=True)
class ModbusBinding:
    unit_id: int = 1
    zero_based: bool = True
    byte_order: ByteOrder = ByteOrder.BIG
    word_order: ByteOrder = ByteOrder.BIG
    points: tuple[ModbusPoint, ...] = ()
    services: tuple[ModbusServiceWrite, ...] = ()
    max_registers_per_read: int = 125
    max_coils_per_read: int = 2000
    max_gap: int = 8


# --------------------------------------------------------------------------- BACnet


@dataclass(frozen=True, slots=True)
class BacnetPoint:
    """A property read from a BACnet object property, e.g. analog-input,1 present-value."""

    property: str
    object_type: str
    instance: int
    property_id: str = "present-value"
    array_index: int | None = None
    write_priority: int | None = None
    cov_increment: float | None = None
    group: str | None = None
    report: ReportPolicy | None = None


@dataclass(frozen=True, slots=True)
class BacnetServiceWrite:
    """One WriteProperty of a service (a service runs its writes in binding order): ``value``
    fixed, taken from input ``param``, or Null with ``relinquish`` (release ``priority``)."""

    service: str
    object_type: str
    instance: int
    property_id: str = "present-value"
    value: int | float | bool | str | None = None
    param: str | None = None
    priority: int | None = None
    relinquish: bool = False


@dataclass(frozen=True, slots=True)
class BacnetBinding:
    device_instance: int | None = None
    points: tuple[BacnetPoint, ...] = ()
    use_cov: bool = True
    services: tuple[BacnetServiceWrite, ...] = ()


# --------------------------------------------------------------------------- MQTT


@dataclass(frozen=True, slots=True)
class MqttPoint:
    """A property taken from messages on ``topic`` (MQTT wildcards and ``{device_id}`` allowed),
    at ``path`` in the JSON payload (``$.a.b[0]``; empty: the whole payload)."""

    property: str
    topic: str
    path: str = ""
    group: str | None = None
    report: ReportPolicy | None = None


@dataclass(frozen=True, slots=True)
class MqttEventRoute:
    """An event raised by messages on ``topic``; outputs come from the object at ``path``."""

    event: str
    topic: str
    path: str = ""


@dataclass(frozen=True, slots=True)
class MqttBinding:
    points: tuple[MqttPoint, ...] = ()
    events: tuple[MqttEventRoute, ...] = ()
    command_topic: str | None = None
    reply_topic: str | None = None
    qos: int = 1


# --------------------------------------------------------------------------- CoAP


class CoapMode(StrEnum):
    OBSERVE = "observe"
    POLL = "poll"


class ContentFormat(StrEnum):
    JSON = "json"
    CBOR = "cbor"
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class CoapPoint:
    property: str
    resource: str
    mode: CoapMode = CoapMode.POLL
    path: str = ""
    content_format: ContentFormat = ContentFormat.JSON
    group: str | None = None
    report: ReportPolicy | None = None


class CoapMethod(StrEnum):
    POST = "post"
    PUT = "put"


@dataclass(frozen=True, slots=True)
class CoapService:
    """A service carried out as one request to ``resource``: the inputs as the payload, the
    reply's map (or text, for one output) as the outputs."""

    service: str
    resource: str
    method: CoapMethod = CoapMethod.POST
    content_format: ContentFormat = ContentFormat.JSON


@dataclass(frozen=True, slots=True)
class CoapBinding:
    points: tuple[CoapPoint, ...] = ()
    services: tuple[CoapService, ...] = ()


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class Bindings:
    """How the model's affordances map to the wire, per protocol; absent protocols are None."""

    modbus: ModbusBinding | None = None
    bacnet: BacnetBinding | None = None
    mqtt: MqttBinding | None = None
    coap: CoapBinding | None = None
    reporting: Reporting = Reporting()

    @property
    def protocols(self) -> tuple[str, ...]:
        return tuple(
            name
            for name, value in (
                ("modbus", self.modbus),
                ("bacnet", self.bacnet),
                ("mqtt", self.mqtt),
                ("coap", self.coap),
            )
            if value is not None
        )


@dataclass(frozen=True, slots=True)
class ThingModel:
    """A device type: identity, composition, affordances and protocol bindings."""

    name: str
    version: SemVer
    title: str = ""
    description: str = ""
    vendor: str = ""
    extends: ModelRef | None = None
    components: tuple[Component, ...] = ()
    properties: tuple[Property, ...] = ()
    events: tuple[Event, ...] = ()
    services: tuple[Service, ...] = ()
    bindings: Bindings = Bindings()
    extensions: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.name, str(self.version))

    def property(self, prop_id: str) -> Property | None:
        return next((p for p in self.properties if p.id == prop_id), None)

    def event(self, event_id: str) -> Event | None:
        return next((e for e in self.events if e.id == event_id), None)

    def service(self, service_id: str) -> Service | None:
        return next((s for s in self.services if s.id == service_id), None)
