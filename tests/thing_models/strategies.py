"""Hypothesis strategies for valid ThingModels, reusable by every test of the thing-model package.

:func:`thing_models_strategy` generates models that pass :func:`thing_models.checks.check_model`:
every data type, struct/array nested up to depth 3, enums with int or str values, bool labels,
events and services, components and ``extends``, and (``with_bindings``) Modbus, BACnet, MQTT and
CoAP bindings with reporting groups: Modbus registers never overlap, counts agree with types,
write functions fit their tables, enum maps name members of the property's enum.

Strings deliberately include words YAML 1.1 would read as booleans, nulls, numbers or dates
("on", "yes", "null", "1.0", "2020-01-01") and a merge key ("<<"), so that writers are made to
quote them.
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any

from hypothesis import strategies as st

from thing_models.checks import BACNET_OBJECT_TYPES
from thing_models.model import (
    INT_RANGES,
    Access,
    BacnetBinding,
    BacnetPoint,
    Bindings,
    ByteOrder,
    CallType,
    CoapBinding,
    CoapMode,
    CoapPoint,
    Component,
    ContentFormat,
    DataSchema,
    DataType,
    DeadbandMode,
    EnumValue,
    Event,
    EventLevel,
    Field,
    ModbusBinding,
    ModbusPoint,
    ModbusServiceWrite,
    ModbusTable,
    ModbusType,
    ModelRef,
    MqttBinding,
    MqttEventRoute,
    MqttPoint,
    Property,
    ReportGroup,
    Reporting,
    ReportPolicy,
    SemVer,
    Service,
    ThingModel,
)

__all__ = [
    "MAX_SCHEMA_DEPTH",
    "TRICKY_WORDS",
    "data_schemas",
    "identifiers",
    "json_values",
    "model_refs",
    "report_policies",
    "texts",
    "thing_models_strategy",
]

#: Struct/array nesting generated at most (a property's own schema is depth 1).
MAX_SCHEMA_DEPTH = 3

#: Plain words a YAML 1.1 reader (or a careless writer) would turn into something else.
TRICKY_WORDS = (
    "on",
    "off",
    "yes",
    "no",
    "y",
    "n",
    "true",
    "False",
    "null",
    "Null",
    "~",
    "1.0",
    "0x1F",
    "0o17",
    "1_000",
    "1e3",
    ".inf",
    ".NaN",
    "2020-01-01",
    "2001-12-14t21:59:43.10-05:00",
    "<<",
    "=",
    "- a",
    "#c",
    "a: b",
    "*ref",
    "&anchor",
    "!tag",
    "%YAML",
    "@",
    "`",
    "'",
    '"',
    "",
    " ",
    "trailing ",
    "\t",
    "line\nbreak",
    "\u2028",
    "\ufeff",
    "\x00\x07\x1b",
    "é漢字🙂",
)


def _word(first: str, rest: str, max_rest: int) -> st.SearchStrategy[str]:
    """A first character from ``first`` and up to ``max_rest`` from ``rest`` (faster than
    ``from_regex``)."""
    return st.builds(str.__add__, st.sampled_from(first), st.text(rest, max_size=max_rest))


_IDENT_WORDS = ("on", "yes", "no", "off", "y", "n", "true", "False", "null", "NULL", "NaN", "inf")

identifiers: st.SearchStrategy[str] = st.one_of(
    _word(string.ascii_letters + "_", string.ascii_letters + string.digits + "_", 11),
    st.sampled_from(_IDENT_WORDS),
    st.just("x" * 50),
)

#: Free text: anything but lone surrogates (which are not Unicode scalar values).
texts: st.SearchStrategy[str] = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=12),
    st.sampled_from(TRICKY_WORDS),
)

_finite = st.floats(allow_nan=False, allow_infinity=False)

#: JSON-like plain data (what an ``extensions`` mapping may hold).
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | _finite | texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=6,
)

_extensions = st.dictionaries(texts, json_values, max_size=3)
#: Affordances carry extensions less often (they cost generation time).
_some_extensions: st.SearchStrategy[dict[str, Any]] = st.just({}) | _extensions


def _model_names() -> st.SearchStrategy[str]:
    segment = _word(string.ascii_lowercase, string.ascii_lowercase + string.digits + "-", 6)
    return st.builds(
        lambda namespace, name: ".".join(namespace) + "/" + name,
        st.lists(segment, min_size=1, max_size=3),
        segment,
    )


_semvers = st.builds(
    SemVer,
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 999),
    st.sampled_from(("", "alpha", "beta.2", "rc.1", "0.3.7", "x-y")),
)


@st.composite
def model_refs(draw: st.DrawFn) -> ModelRef:
    """References with exact, partial or no versions."""
    version = draw(
        st.one_of(
            st.just(""),
            st.integers(0, 99).map(str),
            st.tuples(st.integers(0, 99), st.integers(0, 99)).map(lambda v: f"{v[0]}.{v[1]}"),
            _semvers.map(str),
        )
    )
    return ModelRef(draw(_model_names()), version)


# --------------------------------------------------------------------------- data schemas


def _ordered(values: list[Any]) -> tuple[Any, Any]:
    low, high = sorted(values)
    return low, high


@st.composite
def _numeric_schema(draw: st.DrawFn, dtype: DataType) -> DataSchema:
    if dtype in INT_RANGES:
        low, high = INT_RANGES[dtype]
        number: st.SearchStrategy[Any] = st.integers(low, high)
        step: st.SearchStrategy[Any] = st.integers(1, 1000)
    else:
        number = _finite
        step = st.floats(min_value=1e-9, max_value=1e9, allow_nan=False)
    minimum = maximum = None
    bounds = draw(st.sampled_from(("none", "min", "max", "both")))
    if bounds == "both":
        minimum, maximum = _ordered([draw(number), draw(number)])
    elif bounds == "min":
        minimum = draw(number)
    elif bounds == "max":
        maximum = draw(number)
    return DataSchema(
        dtype,
        minimum=minimum,
        maximum=maximum,
        step=draw(st.none() | step),
        unit=draw(st.none() | texts.filter(bool)),
        unit_name=draw(st.none() | texts.filter(bool)),
    )


@st.composite
def _enum_schema(draw: st.DrawFn) -> DataSchema:
    values: st.SearchStrategy[Any] = draw(st.sampled_from((st.integers(), texts)))
    members = draw(st.lists(values, min_size=1, max_size=5, unique_by=str))
    described = draw(st.booleans())
    enum = tuple(
        EnumValue(value, draw(texts), draw(texts) if described else "") for value in members
    )
    return DataSchema(DataType.ENUM, enum=enum)


def data_schemas(depth: int = 1) -> st.SearchStrategy[DataSchema]:
    """Data schemas of every type; struct and array only while ``depth < MAX_SCHEMA_DEPTH``."""
    leaves: list[st.SearchStrategy[DataSchema]] = [
        st.builds(
            DataSchema,
            st.just(DataType.BOOL),
            bool_labels=st.none() | st.tuples(texts, texts),
        ),
        st.builds(
            DataSchema,
            st.just(DataType.TEXT),
            max_length=st.none() | st.integers(1, 10_000),
        ),
        _enum_schema(),
        *(
            _numeric_schema(t)
            for t in (
                DataType.INT32,
                DataType.INT64,
                DataType.FLOAT,
                DataType.DOUBLE,
                DataType.TIMESTAMP,
            )
        ),
    ]
    if depth >= MAX_SCHEMA_DEPTH:
        return st.one_of(leaves)
    inner = st.deferred(lambda: data_schemas(depth + 1))
    struct = st.builds(
        DataSchema,
        st.just(DataType.STRUCT),
        fields=_fields(inner, min_size=1),
    )
    array = st.builds(
        DataSchema,
        st.just(DataType.ARRAY),
        items=inner,
        max_items=st.none() | st.integers(1, 1000),
    )
    return st.one_of(*leaves, struct, array)


def _fields(
    schemas: st.SearchStrategy[DataSchema], min_size: int = 0, max_size: int = 3
) -> st.SearchStrategy[tuple[Field, ...]]:
    return st.lists(
        st.builds(
            Field,
            identifiers,
            schemas,
            title=texts,
            description=texts,
            required=st.booleans(),
        ),
        min_size=min_size,
        max_size=max_size,
        unique_by=lambda f: f.id,
    ).map(tuple)


# --------------------------------------------------------------------------- affordances

_properties = st.lists(
    st.builds(
        Property,
        identifiers,
        data_schemas(),
        title=texts,
        description=texts,
        access=st.sampled_from(Access),
        required=st.booleans(),
        extensions=_some_extensions,
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda p: p.id,
).map(tuple)

_events = st.lists(
    st.builds(
        Event,
        identifiers,
        st.sampled_from(EventLevel),
        _fields(data_schemas(2), max_size=2),
        title=texts,
        description=texts,
        extensions=_some_extensions,
    ),
    max_size=2,
    unique_by=lambda e: e.id,
).map(tuple)

_services = st.lists(
    st.builds(
        Service,
        identifiers,
        st.sampled_from(CallType),
        _fields(data_schemas(2), max_size=2),
        _fields(data_schemas(2), max_size=2),
        title=texts,
        description=texts,
        extensions=_some_extensions,
    ),
    max_size=2,
    unique_by=lambda s: s.id,
).map(tuple)

_components = st.lists(
    st.builds(Component, identifiers, model_refs(), title=texts, description=texts),
    max_size=2,
    unique_by=lambda c: c.instance,
).map(tuple)


# --------------------------------------------------------------------------- reporting

_durations = st.floats(min_value=0.001, max_value=1e6, allow_nan=False)


@st.composite
def report_policies(draw: st.DrawFn) -> ReportPolicy:
    """Policies that pass the checks: heartbeat >= poll interval, percent deadband <= 100."""
    poll = draw(st.none() | _durations)
    heartbeat = draw(st.none() | _durations)
    if poll is not None and heartbeat is not None and heartbeat < poll:
        poll, heartbeat = heartbeat, poll
    mode = draw(st.sampled_from(DeadbandMode))
    top = 100.0 if mode is DeadbandMode.PERCENT else 1e9
    return ReportPolicy(
        poll_interval_s=poll,
        on_change=draw(st.booleans()),
        deadband=draw(st.floats(min_value=0.0, max_value=top)),
        deadband_mode=mode,
        heartbeat_s=heartbeat,
    )


@st.composite
def _reporting(draw: st.DrawFn) -> Reporting:
    if draw(st.booleans()):
        return Reporting()
    names = draw(st.lists(identifiers, min_size=1, max_size=3, unique=True))
    return Reporting(
        draw(report_policies()),
        tuple(ReportGroup(name, draw(report_policies())) for name in names),
    )


# --------------------------------------------------------------------------- bindings

_REGISTER_TYPES = [t for t in ModbusType if t is not ModbusType.BIT]
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


class _Binder:
    """Draws binding points for one model, keeping them consistent with it."""

    def __init__(self, draw: st.DrawFn, model: ThingModel, reporting: Reporting) -> None:
        self.draw = draw
        self.model = model
        self.groups = [g.name for g in reporting.groups]
        prefixed = [f"{c.instance}:{name}" for c in model.components for name in ("state", "value")]
        self.targets = [p.id for p in model.properties] + prefixed

    def pick_targets(self) -> list[str]:
        """A distinct subset of bindable targets (one point per property per protocol)."""
        if not self.targets:
            return []
        return self.draw(
            st.lists(st.sampled_from(self.targets), unique=True, min_size=1, max_size=4)
        )

    def group_and_report(self) -> dict[str, Any]:
        draw = self.draw
        return {
            "group": draw(st.none() | st.sampled_from(self.groups)) if self.groups else None,
            "report": draw(st.none() | report_policies()),
        }

    def json_path(self) -> str:
        step = st.one_of(
            _word(string.ascii_letters + "_", string.ascii_letters + "_-0", 6).map(".".__add__),
            st.integers(0, 99).map(lambda i: f"[{i}]"),
            st.text("ab9 .:", min_size=1, max_size=6).map(lambda key: f"['{key}']"),
        )
        steps = self.draw(st.lists(step, max_size=3))
        return self.draw(st.sampled_from(("", "$"))) + "".join(steps)

    # ------------------------------------------------------------------ Modbus

    def modbus(self) -> ModbusBinding:
        draw = self.draw
        zero_based = draw(st.booleans())
        # One-based addressing has no address 0.
        next_free = {table: draw(st.integers(1 - zero_based, 1000)) for table in ModbusTable}
        points = []
        for target in self.pick_targets():
            prop = self.model.property(target)
            writable = prop is not None and prop.access is Access.READ_WRITE
            tables = (
                [ModbusTable.COIL, ModbusTable.HOLDING_REGISTER] if writable else list(ModbusTable)
            )
            table = draw(st.sampled_from(tables))
            point = self._modbus_point(target, table, next_free[table], prop)
            next_free[table] += point.register_count + draw(st.integers(0, 3))
            points.append(point)
        services = []
        chosen = (
            draw(
                st.lists(st.sampled_from(self.model.services), min_size=1, unique_by=lambda s: s.id)
            )
            if self.model.services
            else []
        )
        for service in chosen:
            table = draw(st.sampled_from((ModbusTable.COIL, ModbusTable.HOLDING_REGISTER)))
            mtype = (
                ModbusType.BIT
                if table is ModbusTable.COIL
                else draw(st.sampled_from(_REGISTER_TYPES))
            )
            param = None
            value: int | float | bool | None = None
            if service.inputs and draw(st.sampled_from(("param", "value"))) == "param":
                param = draw(st.sampled_from(service.inputs)).id
            else:
                value = draw(st.booleans() | st.integers(-(2**31), 2**31) | _finite)
            functions = self._write_functions(table, mtype.register_count or 1)
            services.append(
                ModbusServiceWrite(
                    service.id,
                    table,
                    draw(st.integers(0, 65535)),
                    mtype,
                    value=value,
                    param=param,
                    write_function=draw(st.none() | st.sampled_from(functions)),
                )
            )
        return ModbusBinding(
            unit_id=draw(st.integers(0, 255)),
            zero_based=zero_based,
            byte_order=draw(st.sampled_from(ByteOrder)),
            word_order=draw(st.sampled_from(ByteOrder)),
            points=tuple(points),
            services=tuple(services),
            max_registers_per_read=draw(st.integers(1, 125)),
            max_coils_per_read=draw(st.integers(1, 2000)),
            max_gap=draw(st.integers(0, 124)),
        )

    @staticmethod
    def _write_functions(table: ModbusTable, count: int) -> tuple[int, ...]:
        if table is ModbusTable.COIL:
            return (5, 15)
        if table is ModbusTable.HOLDING_REGISTER:
            return (6, 16) if count == 1 else (16,)
        return ()

    def _modbus_point(
        self, target: str, table: ModbusTable, address: int, prop: Property | None
    ) -> ModbusPoint:
        draw = self.draw
        if table.is_bit_table:
            mtype = ModbusType.BIT
            count = draw(st.none() | st.just(1))
        else:
            # Integer types (which take bit and mask) half of the time.
            mtype = draw(st.sampled_from(list(_TYPE_BITS)) | st.sampled_from(_REGISTER_TYPES))
            natural = mtype.register_count
            count = (
                draw(st.integers(1, 10)) if natural is None else draw(st.none() | st.just(natural))
            )
        bit = mask = None
        picks = draw(st.sampled_from(("bit", "mask", "none"))) if mtype in _TYPE_BITS else "none"
        if picks == "bit":
            bit = draw(st.integers(0, min(63, 16 * (mtype.register_count or 1) - 1)))
        elif picks == "mask":
            mask = draw(st.integers(1, 2 ** _TYPE_BITS[mtype] - 1))
        valid = sorted(draw(st.lists(_finite, min_size=2, max_size=2)))
        has_valid = draw(st.sampled_from(("none", "min", "max", "both")))
        enum_map: tuple[tuple[int, int | str | bool], ...] = ()
        if draw(st.sampled_from(("map", "none"))) == "map":
            if prop is not None and prop.schema.type is DataType.ENUM:
                # Raw values map to members of the property's enum.
                raws = draw(st.lists(st.integers(0, 65535), min_size=1, max_size=4, unique=True))
                members = st.sampled_from(prop.schema.enum)
                enum_map = tuple((raw, draw(members).value) for raw in raws)
            else:
                raws = draw(st.lists(st.integers(-5, 5), max_size=3, unique=True))
                scalars = st.integers() | st.booleans() | texts
                enum_map = tuple((raw, draw(scalars)) for raw in raws)
        writable = table.writable
        return ModbusPoint(
            property=target,
            table=table,
            address=address,
            type=mtype,
            count=count,
            unit_id=draw(st.none() | st.integers(0, 255)),
            byte_order=draw(st.none() | st.sampled_from(ByteOrder)),
            word_order=draw(st.none() | st.sampled_from(ByteOrder)),
            bit=bit,
            scale=draw(_finite.filter(lambda x: x != 0) | st.just(1.0)),
            offset=draw(_finite | st.just(0.0)),
            mask=mask,
            shift=draw(st.integers(0, 63)),
            rounding=draw(st.none() | st.integers(0, 15)),
            enum_map=enum_map,
            sentinel=draw(st.none() | st.integers(-(2**63), 2**64) | _finite),
            valid_min=valid[0] if has_valid in ("min", "both") else None,
            valid_max=valid[1] if has_valid in ("max", "both") else None,
            read_function=draw(st.none() | st.just(table.read_function)),
            write_function=draw(
                st.none()
                | st.sampled_from(self._write_functions(table, count or mtype.register_count or 1))
            )
            if writable
            else None,
            encoding=draw(st.sampled_from(("ascii", "utf-8", "latin-1"))),
            **self.group_and_report(),
        )

    # ------------------------------------------------------------------ BACnet, MQTT, CoAP

    def bacnet(self) -> BacnetBinding:
        draw = self.draw
        object_types = st.sampled_from(sorted(BACNET_OBJECT_TYPES)) | st.integers(128, 1023).map(
            str
        )
        points = tuple(
            BacnetPoint(
                property=target,
                object_type=draw(object_types),
                instance=draw(st.integers(0, 4194302)),
                property_id=draw(
                    st.sampled_from(("present-value", "status-flags", "85"))
                    | _word(string.ascii_lowercase, string.ascii_lowercase + "0-", 15)
                ),
                array_index=draw(st.none() | st.integers(0, 100)),
                write_priority=draw(st.none() | st.integers(1, 16)),
                cov_increment=draw(
                    st.none() | st.floats(min_value=1e-6, max_value=1e6, allow_nan=False)
                ),
                **self.group_and_report(),
            )
            for target in self.pick_targets()
        )
        return BacnetBinding(
            device_instance=draw(st.none() | st.integers(0, 4194302)),
            points=points,
            use_cov=draw(st.booleans()),
        )

    def topic(self, *, wildcards: bool = True) -> str:
        level = st.one_of(
            st.text(string.ascii_lowercase + "09_-", min_size=1, max_size=8),
            st.just("{device_id}"),
            st.just(""),
            st.sampled_from(("on", "yes", "null", "é")),
        )
        if wildcards:
            level = level | st.just("+")
        levels = self.draw(st.lists(level, min_size=1, max_size=5))
        if wildcards and self.draw(st.booleans()):
            levels.append("#")
        topic = "/".join(levels)
        return topic or "t"

    def mqtt(self) -> MqttBinding:
        draw = self.draw
        points = tuple(
            MqttPoint(target, self.topic(), self.json_path(), **self.group_and_report())
            for target in self.pick_targets()
        )
        event_ids = [e.id for e in self.model.events] + [
            f"{c.instance}:alarm" for c in self.model.components
        ]
        events = tuple(
            MqttEventRoute(name, self.topic(), self.json_path())
            for name in (
                draw(st.lists(st.sampled_from(event_ids), unique=True)) if event_ids else ()
            )
        )
        return MqttBinding(
            points=points,
            events=events,
            command_topic=self.topic(wildcards=False) if draw(st.booleans()) else None,
            reply_topic=self.topic() if draw(st.booleans()) else None,
            qos=draw(st.integers(0, 2)),
        )

    def coap(self) -> CoapBinding:
        draw = self.draw
        resource = st.lists(
            st.text(string.ascii_letters + "09_.~-", min_size=1, max_size=8), max_size=4
        ).map(lambda parts: "/" + "/".join(parts))
        points = tuple(
            CoapPoint(
                target,
                draw(resource),
                draw(st.sampled_from(CoapMode)),
                self.json_path(),
                draw(st.sampled_from(ContentFormat)),
                **self.group_and_report(),
            )
            for target in self.pick_targets()
        )
        return CoapBinding(points)


@st.composite
def _bindings(draw: st.DrawFn, model: ThingModel) -> Bindings:
    reporting = draw(_reporting())
    binder = _Binder(draw, model, reporting)
    protocols = draw(st.sets(st.sampled_from(("modbus", "bacnet", "mqtt", "coap"))))
    return Bindings(
        modbus=binder.modbus() if "modbus" in protocols else None,
        bacnet=binder.bacnet() if "bacnet" in protocols else None,
        mqtt=binder.mqtt() if "mqtt" in protocols else None,
        coap=binder.coap() if "coap" in protocols else None,
        reporting=reporting,
    )


# --------------------------------------------------------------------------- models


@st.composite
def _thing_models(draw: st.DrawFn, with_bindings: bool) -> ThingModel:
    model = ThingModel(
        name=draw(_model_names()),
        version=draw(_semvers),
        title=draw(texts),
        description=draw(texts),
        vendor=draw(texts),
        extends=draw(st.none() | model_refs()),
        components=draw(_components),
        properties=draw(_properties),
        events=draw(_events),
        services=draw(_services),
        extensions=draw(_extensions),
    )
    if not with_bindings:
        return model
    return dataclasses.replace(model, bindings=draw(_bindings(model)))


def thing_models_strategy(with_bindings: bool = True) -> st.SearchStrategy[ThingModel]:
    """Valid ThingModels (they pass ``check_model``), with protocol bindings unless told not."""
    return _thing_models(with_bindings)
