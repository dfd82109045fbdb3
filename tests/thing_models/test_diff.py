"""Tests of thing_models.diff: a table of single changes with their exact classification,
version-bump vectors, and hypothesis properties (self-diff is empty, oracles for ranges,
enums and steps, add/remove symmetry, check_version_bump agreeing with the severities)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thing_models import diff as diff_module
from thing_models.diff import (
    Change,
    ModelDiff,
    Severity,
    check_version_bump,
    declared_bump,
    diff_models,
)
from thing_models.errors import ThingModelError, VersionBumpError
from thing_models.model import (
    Access,
    BacnetBinding,
    BacnetPoint,
    Bindings,
    ByteOrder,
    CallType,
    CoapBinding,
    CoapMode,
    CoapPoint,
    CoapService,
    Component,
    ContentFormat,
    DataSchema,
    DataType,
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

MAJOR, MINOR, PATCH, NONE = Severity.MAJOR, Severity.MINOR, Severity.PATCH, Severity.NONE
NAME = "com.acme.energy/meter-3p"
_T = TypeVar("_T")
Mutation = Callable[[ThingModel], ThingModel]

# --------------------------------------------------------------------------- factory


def base_model(version: str = "1.2.3") -> ThingModel:
    """A model touching every part of the data model the diff compares."""
    f32, i32, text = DataType.FLOAT, DataType.INT32, DataType.TEXT
    return ThingModel(
        name=NAME,
        version=SemVer.parse(version),
        title="Meter",
        description="Three-phase meter",
        vendor="Acme",
        extends=ModelRef("com.acme/base", "1.0.0"),
        components=(Component("meter", ModelRef("com.acme/meter-1p", "1.2")),),
        properties=(
            Property(
                "voltage",
                DataSchema(f32, minimum=0, maximum=500, step=0.5, unit="V", unit_name="volt"),
                title="Voltage",
            ),
            Property(
                "mode",
                DataSchema(DataType.ENUM, enum=(EnumValue(0, "off"), EnumValue(1, "auto"))),
                access=Access.READ_WRITE,
            ),
            Property("label", DataSchema(text, max_length=32)),
            Property(
                "switch",
                DataSchema(DataType.BOOL, bool_labels=("off", "on")),
                access=Access.READ_WRITE,
                required=True,
            ),
            Property(
                "status",
                DataSchema(
                    DataType.STRUCT,
                    fields=(
                        Field("code", DataSchema(i32, minimum=0, maximum=99)),
                        Field("note", DataSchema(text), required=False),
                    ),
                ),
            ),
            Property(
                "samples",
                DataSchema(DataType.ARRAY, items=DataSchema(i32, minimum=0), max_items=10),
            ),
            Property("count", DataSchema(i32, step=2)),
        ),
        events=(
            Event(
                "overheat",
                EventLevel.ALERT,
                outputs=(
                    Field("temp", DataSchema(f32, unit="Cel")),
                    Field("zone", DataSchema(text), required=False),
                ),
            ),
        ),
        services=(
            Service(
                "reboot",
                CallType.ASYNC,
                inputs=(Field("delay", DataSchema(i32, minimum=0), required=False),),
                outputs=(Field("ok", DataSchema(DataType.BOOL)),),
            ),
        ),
        bindings=Bindings(
            modbus=ModbusBinding(
                points=(
                    ModbusPoint(
                        "voltage",
                        ModbusTable.HOLDING_REGISTER,
                        100,
                        ModbusType.UINT16,
                        scale=0.1,
                        valid_min=0,
                        valid_max=600,
                    ),
                    ModbusPoint("mode", ModbusTable.HOLDING_REGISTER, 101, ModbusType.UINT16),
                ),
                services=(
                    ModbusServiceWrite("reboot", ModbusTable.COIL, 5, ModbusType.BIT, value=True),
                ),
            ),
            bacnet=BacnetBinding(
                device_instance=1001, points=(BacnetPoint("voltage", "analog-input", 1),)
            ),
            mqtt=MqttBinding(
                points=(MqttPoint("voltage", "dev/{device_id}/state", "$.v"),),
                events=(MqttEventRoute("overheat", "dev/{device_id}/alarm"),),
                command_topic="dev/{device_id}/cmd",
            ),
            coap=CoapBinding(points=(CoapPoint("voltage", "/v"),)),
            reporting=Reporting(groups=(ReportGroup("fast", ReportPolicy(poll_interval_s=1.0)),)),
        ),
    )


def swap(
    items: tuple[_T, ...], key: str, fn: Callable[[_T], _T], attr: str = "id"
) -> tuple[_T, ...]:
    found = [i for i in items if getattr(i, attr) == key]
    assert found, f"no {key!r} to edit"  # a broken vector, not a diff bug
    return tuple(fn(i) if getattr(i, attr) == key else i for i in items)


def prop(pid: str, **kw: Any) -> Mutation:
    return lambda m: replace(m, properties=swap(m.properties, pid, lambda p: replace(p, **kw)))


def schema(pid: str, **kw: Any) -> Mutation:
    return lambda m: replace(
        m,
        properties=swap(m.properties, pid, lambda p: replace(p, schema=replace(p.schema, **kw))),
    )


def struct_field(fid: str, **kw: Any) -> Mutation:
    def edit(m: ThingModel) -> ThingModel:
        status = m.property("status")
        assert status is not None
        fields = swap(status.schema.fields, fid, lambda f: replace(f, **kw))
        return schema("status", fields=fields)(m)

    return edit


def add_prop(p: Property) -> Mutation:
    return lambda m: replace(m, properties=(*m.properties, p))


def drop_prop(pid: str) -> Mutation:
    return lambda m: replace(m, properties=tuple(p for p in m.properties if p.id != pid))


def event(eid: str, **kw: Any) -> Mutation:
    return lambda m: replace(m, events=swap(m.events, eid, lambda e: replace(e, **kw)))


def service(sid: str, **kw: Any) -> Mutation:
    return lambda m: replace(m, services=swap(m.services, sid, lambda s: replace(s, **kw)))


def binding(proto: str, **kw: Any) -> Mutation:
    return lambda m: replace(
        m, bindings=replace(m.bindings, **{proto: replace(getattr(m.bindings, proto), **kw)})
    )


def point(proto: str, pid: str, **kw: Any) -> Mutation:
    def edit(m: ThingModel) -> ThingModel:
        points = getattr(m.bindings, proto).points
        return binding(proto, points=swap(points, pid, lambda p: replace(p, **kw), "property"))(m)

    return edit


def model(**kw: Any) -> Mutation:
    return lambda m: replace(m, **kw)


F32 = DataSchema(DataType.FLOAT)
BASE = base_model()
OVERHEAT = BASE.events[0]
REBOOT = BASE.services[0]
COMPONENT = BASE.components[0]
MODBUS = BASE.bindings.modbus
assert MODBUS is not None

# --------------------------------------------------------------------------- the table

# (mutation of BASE, the exact set of (path, severity) the diff must report)
VECTORS: list[Any] = [
    # identity and documentation
    pytest.param(model(title="Meter 3P"), {("title", PATCH)}, id="title"),
    pytest.param(model(description="x"), {("description", PATCH)}, id="description"),
    pytest.param(model(vendor="Acme Corp"), {("vendor", PATCH)}, id="vendor"),
    pytest.param(model(extensions={"tsl": 1}), {("extensions.tsl", PATCH)}, id="extensions"),
    # properties
    pytest.param(drop_prop("voltage"), {("properties.voltage", MAJOR)}, id="property-removed"),
    pytest.param(
        add_prop(Property("power", F32)), {("properties.power", MINOR)}, id="property-added"
    ),
    pytest.param(
        add_prop(Property("power", F32, required=True)),
        {("properties.power", MAJOR)},
        id="required-property-added",
    ),
    pytest.param(
        lambda m: add_prop(replace(m.properties[2], id="name"))(drop_prop("label")(m)),
        {("properties.label", MAJOR), ("properties.name", MINOR)},
        id="property-renamed",
    ),
    pytest.param(prop("voltage", title="U"), {("properties.voltage.title", PATCH)}, id="p-title"),
    pytest.param(
        prop("voltage", description="RMS"),
        {("properties.voltage.description", PATCH)},
        id="p-description",
    ),
    pytest.param(
        prop("voltage", extensions={"x": 1}),
        {("properties.voltage.extensions.x", PATCH)},
        id="p-extensions",
    ),
    pytest.param(
        prop("mode", access=Access.READ), {("properties.mode.access", MAJOR)}, id="rw-to-r"
    ),
    pytest.param(
        prop("voltage", access=Access.READ_WRITE),
        {("properties.voltage.access", MINOR)},
        id="r-to-rw",
    ),
    pytest.param(
        prop("voltage", required=True),
        {("properties.voltage.required", MAJOR)},
        id="made-required",
    ),
    pytest.param(
        prop("switch", required=False),
        {("properties.switch.required", MINOR)},
        id="made-optional",
    ),
    # schemas
    pytest.param(
        schema("voltage", type=DataType.DOUBLE, maximum=1000),
        {("properties.voltage.schema.type", MAJOR)},
        id="type-change-hides-the-rest",
    ),
    pytest.param(
        schema("count", type=DataType.INT64),
        {("properties.count.schema.type", MAJOR)},
        id="int-widening-is-still-a-type-change",
    ),
    pytest.param(
        schema("voltage", maximum=400),
        {("properties.voltage.schema.maximum", MAJOR)},
        id="max-lowered",
    ),
    pytest.param(
        schema("voltage", maximum=600),
        {("properties.voltage.schema.maximum", MINOR)},
        id="max-raised",
    ),
    pytest.param(
        schema("voltage", maximum=None),
        {("properties.voltage.schema.maximum", MINOR)},
        id="max-removed",
    ),
    pytest.param(
        schema("voltage", minimum=10),
        {("properties.voltage.schema.minimum", MAJOR)},
        id="min-raised",
    ),
    pytest.param(
        schema("voltage", minimum=-10),
        {("properties.voltage.schema.minimum", MINOR)},
        id="min-lowered",
    ),
    pytest.param(
        schema("voltage", minimum=None),
        {("properties.voltage.schema.minimum", MINOR)},
        id="min-removed",
    ),
    pytest.param(
        schema("count", minimum=0),
        {("properties.count.schema.minimum", MAJOR)},
        id="min-added",
    ),
    pytest.param(
        schema("count", minimum=-(2**31), maximum=2**31 - 1),
        {("properties.count.schema.minimum", PATCH), ("properties.count.schema.maximum", PATCH)},
        id="int32-bounds-made-explicit",
    ),
    pytest.param(
        schema("voltage", step=0.1),
        {("properties.voltage.schema.step", MINOR)},
        id="step-refined",
    ),
    pytest.param(
        schema("voltage", step=0.3),
        {("properties.voltage.schema.step", MAJOR)},
        id="step-changed",
    ),
    pytest.param(
        schema("count", step=4), {("properties.count.schema.step", MAJOR)}, id="step-coarser"
    ),
    pytest.param(
        schema("voltage", step=None),
        {("properties.voltage.schema.step", MINOR)},
        id="step-removed",
    ),
    pytest.param(
        struct_field("code", schema=DataSchema(DataType.INT32, minimum=0, maximum=99, step=1)),
        {("properties.status.schema.fields.code.schema.step", MAJOR)},
        id="step-added",
    ),
    pytest.param(
        schema("voltage", unit="mV"), {("properties.voltage.schema.unit", MAJOR)}, id="unit"
    ),
    pytest.param(
        schema("voltage", unit=None),
        {("properties.voltage.schema.unit", MAJOR)},
        id="unit-removed",
    ),
    pytest.param(
        schema("count", unit="1"), {("properties.count.schema.unit", MINOR)}, id="unit-added"
    ),
    pytest.param(
        schema("voltage", unit_name="Volt"),
        {("properties.voltage.schema.unit_name", PATCH)},
        id="unit-name",
    ),
    pytest.param(
        schema("label", max_length=16),
        {("properties.label.schema.max_length", MAJOR)},
        id="max-length-lowered",
    ),
    pytest.param(
        schema("label", max_length=64),
        {("properties.label.schema.max_length", MINOR)},
        id="max-length-raised",
    ),
    pytest.param(
        schema("label", max_length=None),
        {("properties.label.schema.max_length", MINOR)},
        id="max-length-removed",
    ),
    pytest.param(
        schema("samples", max_items=5),
        {("properties.samples.schema.max_items", MAJOR)},
        id="max-items-lowered",
    ),
    pytest.param(
        schema("samples", max_items=None),
        {("properties.samples.schema.max_items", MINOR)},
        id="max-items-removed",
    ),
    pytest.param(
        schema("mode", enum=(EnumValue(0, "off"),)),
        {("properties.mode.schema.enum[1]", MAJOR)},
        id="enum-member-removed",
    ),
    pytest.param(
        schema("mode", enum=(EnumValue(0, "off"), EnumValue(1, "auto"), EnumValue(2, "eco"))),
        {("properties.mode.schema.enum[2]", MINOR)},
        id="enum-member-added",
    ),
    pytest.param(
        schema("mode", enum=(EnumValue(0, "off"), EnumValue(1, "automatic"))),
        {("properties.mode.schema.enum[1].label", PATCH)},
        id="enum-label",
    ),
    pytest.param(
        schema("mode", enum=(EnumValue(0, "off"), EnumValue("1", "auto"))),
        {("properties.mode.schema.enum[1]", MAJOR), ("properties.mode.schema.enum['1']", MINOR)},
        id="enum-value-type-changed",
    ),
    pytest.param(
        schema("switch", bool_labels=("closed", "open")),
        {("properties.switch.schema.bool_labels", PATCH)},
        id="bool-labels",
    ),
    pytest.param(
        schema("status", fields=BASE.properties[4].schema.fields[:1]),
        {("properties.status.schema.fields.note", MAJOR)},
        id="struct-field-removed",
    ),
    pytest.param(
        schema(
            "status", fields=(*BASE.properties[4].schema.fields, Field("x", F32, required=False))
        ),
        {("properties.status.schema.fields.x", MINOR)},
        id="struct-optional-field-added",
    ),
    pytest.param(
        schema("status", fields=(*BASE.properties[4].schema.fields, Field("x", F32))),
        {("properties.status.schema.fields.x", MAJOR)},
        id="struct-required-field-added",
    ),
    pytest.param(
        struct_field("note", required=True),
        {("properties.status.schema.fields.note.required", MAJOR)},
        id="struct-field-made-required",
    ),
    pytest.param(
        struct_field("code", required=False, title="Code"),
        {
            ("properties.status.schema.fields.code.required", MINOR),
            ("properties.status.schema.fields.code.title", PATCH),
        },
        id="struct-field-made-optional",
    ),
    pytest.param(
        struct_field("code", schema=DataSchema(DataType.INT32, minimum=0, maximum=50)),
        {("properties.status.schema.fields.code.schema.maximum", MAJOR)},
        id="struct-field-narrowed",
    ),
    pytest.param(
        schema("samples", items=DataSchema(DataType.INT32, minimum=1)),
        {("properties.samples.schema.items.minimum", MAJOR)},
        id="array-items-narrowed",
    ),
    pytest.param(
        schema("samples", items=DataSchema(DataType.TEXT)),
        {("properties.samples.schema.items.type", MAJOR)},
        id="array-items-type",
    ),
    pytest.param(
        schema("samples", items=None),
        {("properties.samples.schema.items", MINOR)},
        id="array-items-removed",
    ),
    # events
    pytest.param(model(events=()), {("events.overheat", MAJOR)}, id="event-removed"),
    pytest.param(
        model(events=(OVERHEAT, Event("tamper"))), {("events.tamper", MINOR)}, id="event-added"
    ),
    pytest.param(
        event("overheat", level=EventLevel.ERROR),
        {("events.overheat.level", MINOR)},
        id="event-level",
    ),
    pytest.param(
        event("overheat", title="Too hot"), {("events.overheat.title", PATCH)}, id="event-title"
    ),
    pytest.param(
        event("overheat", outputs=(*OVERHEAT.outputs, Field("x", F32, required=False))),
        {("events.overheat.outputs.x", MINOR)},
        id="event-optional-output-added",
    ),
    pytest.param(
        event("overheat", outputs=(*OVERHEAT.outputs, Field("x", F32))),
        {("events.overheat.outputs.x", MAJOR)},
        id="event-required-output-added",
    ),
    pytest.param(
        event("overheat", outputs=OVERHEAT.outputs[:1]),
        {("events.overheat.outputs.zone", MAJOR)},
        id="event-output-removed",
    ),
    pytest.param(
        event("overheat", outputs=(Field("temp", DataSchema(DataType.FLOAT, unit="K")),)),
        {
            ("events.overheat.outputs.temp.schema.unit", MAJOR),
            ("events.overheat.outputs.zone", MAJOR),
        },
        id="event-output-unit-and-removal",
    ),
    # services
    pytest.param(model(services=()), {("services.reboot", MAJOR)}, id="service-removed"),
    pytest.param(
        model(services=(REBOOT, Service("reset"))), {("services.reset", MINOR)}, id="service-added"
    ),
    pytest.param(
        service("reboot", call_type=CallType.SYNC),
        {("services.reboot.call_type", MAJOR)},
        id="call-type",
    ),
    pytest.param(
        service("reboot", inputs=(*REBOOT.inputs, Field("force", DataSchema(DataType.BOOL)))),
        {("services.reboot.inputs.force", MAJOR)},
        id="required-input-added",
    ),
    pytest.param(
        service(
            "reboot",
            inputs=(*REBOOT.inputs, Field("force", DataSchema(DataType.BOOL), required=False)),
        ),
        {("services.reboot.inputs.force", MINOR)},
        id="optional-input-added",
    ),
    pytest.param(
        service("reboot", inputs=()), {("services.reboot.inputs.delay", MAJOR)}, id="input-removed"
    ),
    pytest.param(
        service("reboot", inputs=(replace(REBOOT.inputs[0], required=True),)),
        {("services.reboot.inputs.delay.required", MAJOR)},
        id="input-made-required",
    ),
    pytest.param(
        service("reboot", outputs=()), {("services.reboot.outputs.ok", MAJOR)}, id="output-removed"
    ),
    # composition
    pytest.param(model(extends=None), {("extends", MAJOR)}, id="extends-removed"),
    pytest.param(
        model(extends=ModelRef("com.acme/other", "1.0.0")), {("extends", MAJOR)}, id="extends-other"
    ),
    pytest.param(
        model(extends=ModelRef("com.acme/base", "1.4.0")),
        {("extends", MINOR)},
        id="extends-upgrade",
    ),
    pytest.param(
        model(extends=ModelRef("com.acme/base", "2.0.0")), {("extends", MAJOR)}, id="extends-major"
    ),
    pytest.param(
        model(extends=ModelRef("com.acme/base", "")), {("extends", MAJOR)}, id="extends-unpinned"
    ),
    pytest.param(
        model(extends=ModelRef("com.acme/base", "1.1.0-rc.1")),
        {("extends", MAJOR)},
        id="extends-prerelease",
    ),
    pytest.param(
        model(components=(COMPONENT, Component("display", ModelRef("com.acme/lcd", "1")))),
        {("components.display", MINOR)},
        id="component-added",
    ),
    pytest.param(model(components=()), {("components.meter", MAJOR)}, id="component-removed"),
    pytest.param(
        model(components=(replace(COMPONENT, model=ModelRef("com.acme/meter-1p", "1.3")),)),
        {("components.meter.model", MINOR)},
        id="component-upgrade",
    ),
    pytest.param(
        model(components=(replace(COMPONENT, model=ModelRef("com.acme/meter-1p", "1")),)),
        {("components.meter.model", MINOR)},
        id="component-pin-relaxed-to-newest-1.x",
    ),
    pytest.param(
        model(components=(replace(COMPONENT, model=ModelRef("com.acme/meter-1p", "1.1")),)),
        {("components.meter.model", MAJOR)},
        id="component-downgrade",
    ),
    pytest.param(
        model(components=(replace(COMPONENT, model=ModelRef("com.acme/meter-1p", "2")),)),
        {("components.meter.model", MAJOR)},
        id="component-major",
    ),
    pytest.param(
        model(components=(replace(COMPONENT, title="Phase meter"),)),
        {("components.meter.title", PATCH)},
        id="component-title",
    ),
    # bindings: Modbus
    pytest.param(
        point("modbus", "voltage", address=200),
        {("bindings.modbus.points[voltage].address", MAJOR)},
        id="modbus-address",
    ),
    pytest.param(
        point("modbus", "voltage", scale=0.01, type=ModbusType.INT32),
        {
            ("bindings.modbus.points[voltage].scale", MAJOR),
            ("bindings.modbus.points[voltage].type", MAJOR),
        },
        id="modbus-scale-and-type",
    ),
    pytest.param(
        point("modbus", "voltage", table=ModbusTable.INPUT_REGISTER),
        {("bindings.modbus.points[voltage].table", MAJOR)},
        id="modbus-table",
    ),
    pytest.param(
        point("modbus", "voltage", byte_order=ByteOrder.LITTLE),
        {("bindings.modbus.points[voltage].byte_order", MAJOR)},
        id="modbus-point-byte-order",
    ),
    pytest.param(
        point("modbus", "voltage", rounding=1),
        {("bindings.modbus.points[voltage].rounding", MINOR)},
        id="modbus-rounding",
    ),
    pytest.param(
        point("modbus", "voltage", report=ReportPolicy(poll_interval_s=1.0), group="fast"),
        {
            ("bindings.modbus.points[voltage].report", PATCH),
            ("bindings.modbus.points[voltage].group", PATCH),
        },
        id="modbus-reporting",
    ),
    pytest.param(
        point("modbus", "voltage", valid_max=500),
        {("bindings.modbus.points[voltage].valid_max", MAJOR)},
        id="modbus-guard-narrowed",
    ),
    pytest.param(
        point("modbus", "voltage", valid_min=None, valid_max=700),
        {
            ("bindings.modbus.points[voltage].valid_min", MINOR),
            ("bindings.modbus.points[voltage].valid_max", MINOR),
        },
        id="modbus-guard-widened",
    ),
    pytest.param(
        binding("modbus", points=MODBUS.points[:1]),
        {("bindings.modbus.points[mode]", MAJOR)},
        id="modbus-point-removed",
    ),
    pytest.param(
        binding(
            "modbus",
            points=(
                *MODBUS.points,
                ModbusPoint("label", ModbusTable.HOLDING_REGISTER, 110, ModbusType.STRING, 8),
            ),
        ),
        {("bindings.modbus.points[label]", MINOR)},
        id="modbus-point-added",
    ),
    pytest.param(
        binding("modbus", word_order=ByteOrder.LITTLE, max_gap=0),
        {("bindings.modbus.word_order", MAJOR), ("bindings.modbus.max_gap", PATCH)},
        id="modbus-defaults-and-batching",
    ),
    pytest.param(
        binding("modbus", services=(replace(MODBUS.services[0], address=6),)),
        {("bindings.modbus.services[reboot].address", MAJOR)},
        id="modbus-write-address",
    ),
    pytest.param(
        binding("modbus", services=()),
        {("bindings.modbus.services[reboot]", MAJOR)},
        id="modbus-write-removed",
    ),
    # bindings: BACnet, MQTT, CoAP, whole protocols, reporting
    pytest.param(
        point("bacnet", "voltage", instance=2, cov_increment=0.5),
        {
            ("bindings.bacnet.points[voltage].instance", MAJOR),
            ("bindings.bacnet.points[voltage].cov_increment", PATCH),
        },
        id="bacnet-point",
    ),
    pytest.param(
        binding("bacnet", device_instance=1002, use_cov=False),
        {("bindings.bacnet.device_instance", MAJOR), ("bindings.bacnet.use_cov", PATCH)},
        id="bacnet-binding",
    ),
    pytest.param(
        point("mqtt", "voltage", path="$.voltage"),
        {("bindings.mqtt.points[voltage].path", MAJOR)},
        id="mqtt-path",
    ),
    pytest.param(
        binding("mqtt", qos=0, command_topic="cmd/{device_id}"),
        {("bindings.mqtt.qos", PATCH), ("bindings.mqtt.command_topic", MAJOR)},
        id="mqtt-binding",
    ),
    pytest.param(
        binding("mqtt", events=(MqttEventRoute("overheat", "dev/{device_id}/alarms"),)),
        {("bindings.mqtt.events[overheat].topic", MAJOR)},
        id="mqtt-event-route",
    ),
    pytest.param(
        point("coap", "voltage", mode=CoapMode.OBSERVE, content_format=ContentFormat.CBOR),
        {
            ("bindings.coap.points[voltage].mode", PATCH),
            ("bindings.coap.points[voltage].content_format", MAJOR),
        },
        id="coap-point",
    ),
    pytest.param(
        lambda m: replace(m, bindings=replace(m.bindings, coap=None)),
        {("bindings.coap", MAJOR)},
        id="protocol-removed",
    ),
    pytest.param(
        lambda m: replace(
            m, bindings=replace(m.bindings, reporting=Reporting(ReportPolicy(poll_interval_s=5.0)))
        ),
        {
            ("bindings.reporting.default.poll_interval_s", PATCH),
            ("bindings.reporting.groups.fast", PATCH),
        },
        id="reporting",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), VECTORS)
def test_vector(mutate: Mutation, expected: set[tuple[str, Severity]]) -> None:
    result = diff_models(BASE, mutate(BASE))
    assert {(c.path, c.severity) for c in result.changes} == expected
    assert result.required == max(s for _, s in expected)
    for change in result.changes:
        kind = {MAJOR: "(breaking: ", MINOR: "(compatible: ", PATCH: "(cosmetic"}[change.severity]
        assert kind in change.description
        assert change.old != change.new


def test_description_reads_like_a_sentence() -> None:
    (change,) = diff_models(BASE, schema("voltage", maximum=400)(BASE)).changes
    assert change.description == (
        "maximum narrowed from 500 to 400 (breaking: values that were valid are now rejected)"
    )
    assert (change.old, change.new) == (500, 400)
    assert str(change).startswith("[MAJOR] properties.voltage.schema.maximum: maximum narrowed")


def test_protocol_added() -> None:
    bare = replace(BASE, bindings=replace(BASE.bindings, bacnet=None))
    (change,) = diff_models(bare, BASE).changes
    assert (change.path, change.severity) == ("bindings.bacnet", MINOR)


def test_extends_added_is_major() -> None:
    orphan = replace(BASE, extends=None)
    (change,) = diff_models(orphan, BASE).changes
    assert (change.path, change.severity) == ("extends", MAJOR)


def test_duplicate_ids_are_all_compared() -> None:
    dup = Property("voltage", F32)
    old = replace(BASE, properties=(*BASE.properties, dup))
    new = replace(BASE, properties=(*BASE.properties, replace(dup, title="second")))
    (change,) = diff_models(old, new).changes
    assert change.path == "properties.voltage#2.title"


def test_different_models_are_refused() -> None:
    with pytest.raises(VersionBumpError, match="different models"):
        diff_models(BASE, replace(BASE, name="com.acme.energy/meter-1p"))


def test_policies_classify_every_binding_field() -> None:
    classes: dict[type[Any], Any] = {
        ModbusPoint: diff_module._MODBUS_POINT,
        ModbusServiceWrite: diff_module._MODBUS_WRITE,
        ModbusBinding: diff_module._MODBUS_BINDING,
        BacnetPoint: diff_module._BACNET_POINT,
        BacnetBinding: diff_module._BACNET_BINDING,
        MqttPoint: diff_module._MQTT_POINT,
        MqttEventRoute: diff_module._MQTT_ROUTE,
        MqttBinding: diff_module._MQTT_BINDING,
        CoapPoint: diff_module._COAP_POINT,
        CoapService: diff_module._COAP_SERVICE,
        CoapBinding: diff_module._COAP_BINDING,
        ReportPolicy: diff_module._REPORT_POLICY,
    }
    for cls, policy in classes.items():
        assert {f.name for f in dataclasses.fields(cls)} == set(policy), cls.__name__


def test_all_names_the_public_api() -> None:
    defined_here = {
        name
        for name, value in vars(diff_module).items()
        if not name.startswith("_") and getattr(value, "__module__", "") == diff_module.__name__
    }
    assert set(diff_module.__all__) == defined_here


# --------------------------------------------------------------------------- versions

BUMPS = [
    ("1.2.3", "2.0.0", MAJOR),
    ("1.2.3", "1.3.0", MINOR),
    ("1.2.3", "1.2.4", PATCH),
    ("1.2.3", "1.2.3", NONE),
    ("0.2.3", "0.3.0", MAJOR),
    ("0.2.3", "0.2.4", MINOR),
    ("0.0.3", "0.0.4", MAJOR),
    ("0.9.9", "1.0.0", MAJOR),
    ("1.0.0-rc.1", "1.0.0-rc.2", MAJOR),
    ("1.0.0-rc.1", "1.0.0", MAJOR),
    ("1.2.3", "1.3.0-rc.1", MINOR),
    ("1.2.3", "2.0.0-rc.1", MAJOR),
]


@pytest.mark.parametrize(("old", "new", "expected"), BUMPS)
def test_declared_bump(old: str, new: str, expected: Severity) -> None:
    assert declared_bump(SemVer.parse(old), SemVer.parse(new)) is expected


@pytest.mark.parametrize(("old", "new"), [("1.2.3", "1.2.2"), ("1.0.0", "1.0.0-rc.1")])
def test_version_going_backwards_is_an_error(old: str, new: str) -> None:
    d = diff_models(base_model(old), base_model(new))
    assert not d.ok
    with pytest.raises(VersionBumpError, match="backwards"):
        check_version_bump(d)
    with pytest.raises(VersionBumpError):
        _ = d.declared


def test_unchanged_version_with_changes_fails() -> None:
    d = diff_models(BASE, replace(BASE, title="New"))
    with pytest.raises(VersionBumpError, match=r"1\.2\.3 is unchanged.*\n.*\[PATCH\] title"):
        check_version_bump(d)
    check_version_bump(diff_models(BASE, BASE))  # same version, no change: fine


def test_too_small_bump_names_only_the_offending_changes() -> None:
    new = schema("voltage", maximum=400)(model(title="X", version=SemVer(1, 3, 0))(BASE))
    d = diff_models(BASE, add_prop(Property("power", F32))(new))
    assert (d.declared, d.required, d.ok) == (MINOR, MAJOR, False)
    with pytest.raises(VersionBumpError) as info:
        check_version_bump(d)
    message = str(info.value)
    assert "use at least 2.0.0" in message
    assert "properties.voltage.schema.maximum" in message
    assert "properties.power" not in message
    assert message.count("\n  [") == 1  # only the MAJOR change: the bump covers the rest
    assert isinstance(info.value, ThingModelError)


def test_render() -> None:
    assert diff_models(BASE, BASE).render() == f"{NAME} 1.2.3 -> 1.2.3: no changes"
    text = diff_models(BASE, model(vendor="B", version=SemVer(1, 2, 4))(BASE)).render()
    assert text.splitlines() == [
        f"{NAME} 1.2.3 -> 1.2.4: 1 change(s), needs a patch (cosmetic) bump",
        "  [PATCH] vendor: vendor changed from 'Acme' to 'B' (cosmetic)",
    ]


# --------------------------------------------------------------------------- strategies

ids = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)
bounds = st.none() | st.integers(-50, 50)
leaf_schemas = st.builds(
    DataSchema,
    type=st.sampled_from([DataType.INT32, DataType.FLOAT, DataType.TEXT, DataType.ENUM]),
    minimum=bounds,
    maximum=bounds,
    step=st.none() | st.sampled_from([1, 2, 0.5]),
    unit=st.none() | st.sampled_from(["V", "A"]),
    unit_name=st.none() | st.just("volt"),
    max_length=st.none() | st.integers(1, 64),
    enum=st.lists(
        st.builds(EnumValue, value=st.integers(0, 5), label=st.sampled_from(["a", "b"])),
        max_size=3,
        unique_by=lambda e: e.value,
    ).map(tuple),
)


def field_lists(schemas: st.SearchStrategy[DataSchema]) -> st.SearchStrategy[tuple[Field, ...]]:
    fields = st.builds(
        Field, id=ids, schema=schemas, required=st.booleans(), title=st.sampled_from(["", "T"])
    )
    return st.lists(fields, max_size=2, unique_by=lambda f: f.id).map(tuple)


schemas = st.recursive(
    leaf_schemas,
    lambda inner: (
        st.builds(DataSchema, type=st.just(DataType.STRUCT), fields=field_lists(inner))
        | st.builds(
            DataSchema,
            type=st.just(DataType.ARRAY),
            items=st.none() | inner,
            max_items=st.none() | st.integers(1, 9),
        )
    ),
    max_leaves=3,
)
refs = st.builds(
    ModelRef,
    name=st.sampled_from(["com.acme/a", "com.acme/b"]),
    version=st.sampled_from(["", "1", "1.2", "1.3.0", "2", "0.3"]),
)
versions = st.builds(
    SemVer,
    st.integers(0, 2),
    st.integers(0, 2),
    st.integers(0, 2),
    st.sampled_from(["", "rc.1"]),
)
policies = st.none() | st.builds(ReportPolicy, poll_interval_s=st.sampled_from([1.0, 10.0]))
modbus = st.builds(
    ModbusBinding,
    points=st.lists(
        st.builds(
            ModbusPoint,
            property=ids,
            table=st.sampled_from(ModbusTable),
            address=st.integers(0, 20),
            type=st.sampled_from([ModbusType.UINT16, ModbusType.FLOAT32]),
            scale=st.sampled_from([1.0, 0.1]),
            valid_max=st.none() | st.integers(0, 9),
            report=policies,
        ),
        max_size=3,
    ).map(tuple),
    max_gap=st.integers(0, 8),
)
mqtt = st.builds(
    MqttBinding,
    points=st.lists(
        st.builds(MqttPoint, property=ids, topic=st.sampled_from(["a/b", "a/c"]), report=policies),
        max_size=2,
    ).map(tuple),
    qos=st.integers(0, 2),
)


def unique(
    items: st.SearchStrategy[_T], key: Callable[[_T], str]
) -> st.SearchStrategy[tuple[_T, ...]]:
    return st.lists(items, max_size=3, unique_by=key).map(tuple)


models = st.builds(
    ThingModel,
    name=st.just(NAME),
    version=versions,
    title=st.sampled_from(["", "Meter"]),
    extends=st.none() | refs,
    components=unique(st.builds(Component, instance=ids, model=refs), lambda c: c.instance),
    properties=unique(
        st.builds(
            Property,
            id=ids,
            schema=schemas,
            access=st.sampled_from(Access),
            required=st.booleans(),
            extensions=st.dictionaries(st.sampled_from(["x", "y"]), st.integers(0, 2), max_size=1),
        ),
        lambda p: p.id,
    ),
    events=unique(
        st.builds(Event, id=ids, level=st.sampled_from(EventLevel), outputs=field_lists(schemas)),
        lambda e: e.id,
    ),
    services=unique(
        st.builds(
            Service,
            id=ids,
            call_type=st.sampled_from(CallType),
            inputs=field_lists(schemas),
            outputs=field_lists(schemas),
        ),
        lambda s: s.id,
    ),
    bindings=st.builds(Bindings, modbus=st.none() | modbus, mqtt=st.none() | mqtt),
)
SETTINGS = settings(max_examples=150, deadline=None)
MODEL_SETTINGS = settings(max_examples=100, deadline=None)  # whole models are costly to draw


# --------------------------------------------------------------------------- properties


@MODEL_SETTINGS
@given(models, versions)
def test_a_model_has_no_changes_against_itself(m: ThingModel, version: SemVer) -> None:
    assert diff_models(m, m).changes == ()
    again = diff_models(m, replace(m, version=version))
    assert again.changes == ()
    assert again.required is NONE
    assert again.ok is (version >= m.version)


@MODEL_SETTINGS
@given(models, models)
def test_required_is_the_largest_change(old: ThingModel, new: ThingModel) -> None:
    d = diff_models(old, new)
    assert d.required == max((c.severity for c in d.changes), default=NONE)
    if old == replace(new, version=old.version):
        assert d.changes == ()
    paths = [c.path for c in d.changes]
    assert len(paths) == len(set(paths))
    assert all(c.severity is not NONE and c.description for c in d.changes)


@MODEL_SETTINGS
@given(models, models)
def test_check_version_bump_agrees_with_the_severities(old: ThingModel, new: ThingModel) -> None:
    d = diff_models(old, new)
    if new.version < old.version:
        assert not d.ok
        with pytest.raises(VersionBumpError, match="backwards"):
            check_version_bump(d)
        return
    if d.declared >= d.required:
        assert d.ok
        check_version_bump(d)
        return
    assert not d.ok
    with pytest.raises(VersionBumpError) as info:
        check_version_bump(d)
    lines = str(info.value).splitlines()[1:]
    assert lines == [f"  {c}" for c in d.changes if c.severity > d.declared]
    assert lines


@MODEL_SETTINGS
@given(models, st.builds(Property, id=st.just("fresh_property"), schema=schemas))
def test_adding_then_removing_a_property(m: ThingModel, p: Property) -> None:
    grown = replace(m, properties=(*m.properties, p))
    added, removed = diff_models(m, grown), diff_models(grown, m)
    assert [c.path for c in added.changes] == [c.path for c in removed.changes]
    assert [c.path for c in added.changes] == ["properties.fresh_property"]
    assert added.required is (MAJOR if p.required else MINOR)
    assert removed.required is MAJOR


@SETTINGS
@given(versions, st.sampled_from([PATCH, MINOR, MAJOR]))
def test_suggested_version_allows_the_bump(version: SemVer, needed: Severity) -> None:
    d = ModelDiff(version, version, (Change(needed, "x", "x"),))
    suggested = d.suggested_version
    assert suggested > version
    assert declared_bump(version, suggested) >= needed
    fixed = replace(d, new_version=suggested)
    assert fixed.ok
    check_version_bump(fixed)


@SETTINGS
@given(versions, versions)
def test_declared_bump_is_antisymmetric(a: SemVer, b: SemVer) -> None:
    if a == b:
        assert declared_bump(a, b) is NONE
        return
    low, high = sorted((a, b))
    assert declared_bump(low, high) >= PATCH
    with pytest.raises(VersionBumpError):
        declared_bump(high, low)


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@SETTINGS
@given(bounds, bounds, bounds, bounds)
def test_range_changes_follow_the_set_of_valid_values(
    lo: int | None, hi: int | None, new_lo: int | None, new_hi: int | None
) -> None:
    old_s = DataSchema(DataType.INT32, minimum=lo, maximum=hi)
    new_s = DataSchema(DataType.INT32, minimum=new_lo, maximum=new_hi)
    a = (INT32_MIN if lo is None else lo, INT32_MAX if hi is None else hi)
    b = (INT32_MIN if new_lo is None else new_lo, INT32_MAX if new_hi is None else new_hi)
    old_m = replace(BASE, properties=(Property("v", old_s),))
    d = diff_models(old_m, replace(old_m, properties=(Property("v", new_s),)))
    # Each bound is judged alone, so a bound whose move rejects values is MAJOR.
    if b[0] > a[0] or b[1] < a[1]:
        expected = MAJOR
    elif b != a:
        expected = MINOR
    elif (lo, hi) != (new_lo, new_hi):
        expected = PATCH
    else:
        expected = NONE
    assert d.required is expected


@SETTINGS
@given(
    st.dictionaries(st.integers(0, 6), st.sampled_from(["a", "b"]), max_size=5),
    st.dictionaries(st.integers(0, 6), st.sampled_from(["a", "b"]), max_size=5),
)
def test_enum_changes_follow_the_set_of_members(old: dict[int, str], new: dict[int, str]) -> None:
    def with_enum(members: dict[int, str]) -> ThingModel:
        enum = tuple(EnumValue(v, label) for v, label in members.items())
        return replace(BASE, properties=(Property("e", DataSchema(DataType.ENUM, enum=enum)),))

    d = diff_models(with_enum(old), with_enum(new))
    if old.keys() - new.keys():
        expected = MAJOR
    elif new.keys() - old.keys():
        expected = MINOR
    elif old != new:
        expected = PATCH
    else:
        expected = NONE
    assert d.required is expected


@SETTINGS
@given(
    st.none() | st.integers(1, 12),
    st.none() | st.integers(1, 12),
    st.sampled_from([1, 10, 100]),
)
def test_step_changes_follow_the_grid(old: int | None, new: int | None, scale: int) -> None:
    def with_step(step: int | None) -> ThingModel:
        value = None if step is None else step / scale  # decimal steps: 0.3, 0.05, ...
        schema = DataSchema(DataType.FLOAT, step=value)
        return replace(BASE, properties=(Property("s", schema),))

    d = diff_models(with_step(old), with_step(new))
    if old == new:
        expected = NONE
    elif new is None:
        expected = MINOR
    elif old is None:
        expected = MAJOR
    else:
        expected = MINOR if old % new == 0 else MAJOR
    assert d.required is expected


def test_bacnet_and_coap_service_bindings_are_compared() -> None:
    from pathlib import Path

    from thing_models.yaml_format import load_model_file

    examples = Path(__file__).resolve().parents[2] / "examples" / "models"
    ahu = load_model_file(examples / "air-handling-unit.yaml")
    bacnet = ahu.bindings.bacnet
    assert bacnet is not None
    multi = [
        s
        for s in {w.service for w in bacnet.services}
        if sum(w.service == s for w in bacnet.services) > 1
    ]
    assert multi, "the example has a service of several writes"
    service = sorted(multi)[0]
    mine = [w for w in bacnet.services if w.service == service]
    others = [w for w in bacnet.services if w.service != service]

    def with_writes(writes: list[Any]) -> ThingModel:
        return replace(
            ahu, bindings=replace(ahu.bindings, bacnet=replace(bacnet, services=tuple(writes)))
        )

    reordered = diff_models(ahu, with_writes([*others, *reversed(mine)]))
    assert [(c.severity, c.path) for c in reordered.changes] == [
        (Severity.MAJOR, f"bindings.bacnet.services[{service}]")
    ]
    assert "changed" in reordered.changes[0].description
    dropped = diff_models(ahu, with_writes(others))
    assert [c.severity for c in dropped.changes] == [Severity.MAJOR]
    assert diff_models(with_writes(others), ahu).changes[0].severity is Severity.MINOR

    parking = load_model_file(examples / "parking-space-sensor.yaml")
    coap = parking.bindings.coap
    assert coap is not None
    assert coap.services
    moved = replace(coap.services[0], resource="/elsewhere")
    changed = replace(
        parking,
        bindings=replace(
            parking.bindings, coap=replace(coap, services=(moved, *coap.services[1:]))
        ),
    )
    (change,) = diff_models(parking, changed).changes
    assert change.severity is Severity.MAJOR
    assert change.path.startswith("bindings.coap.services[")
