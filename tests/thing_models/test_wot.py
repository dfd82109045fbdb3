"""W3C WoT TM/TD conversion: conformance files, hand-written vectors, hostile input, and
hypothesis round trips (ours -> TM -> ours is equal; every export validates against the W3C
JSON Schemas)."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from referencing import Registry, Resource

from thing_models.errors import HostileInputError, ModelLoadError, UnresolvedReferenceError
from thing_models.formats import (
    wot,
    wot_export,
    wot_import,
    wot_links,
    wot_modbus,
    wot_modbus_import,
    wot_plain,
    wot_refs,
    wot_schema,
    wot_terms,
)
from thing_models.formats.wot import model_from_wot, model_to_wot
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
    Component,
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

ELEVATOR_VALUES = {
    "THING_NAME": "elevator-7",
    "PROTOCOL": "modbus+tcp",
    "HOSTNAME": "10.0.0.5",
    "PORT_NUMBER": "502",
    "UNIT_ID": "1",
}
PLAYGROUND = "https://raw.githubusercontent.com/eclipse-thingweb/playground/master/examples/tm"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def validators(conformance_dir: Path) -> dict[str, Validator]:
    """Validators for the W3C TD, TM and Modbus schemas; remote $refs served from the files."""
    folder = conformance_dir / "wot-schemas"
    schemas = {
        kind: json.loads((folder / f"{name}.json").read_text())
        for kind, name in (
            ("td", "td-json-schema-validation"),
            ("tm", "tm-json-schema-validation"),
            ("modbus", "modbus.schema"),
        )
    }
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas.values() if "$id" in s
    )
    out: dict[str, Validator] = {}
    for kind, schema in schemas.items():
        cls = validator_for(schema)
        cls.check_schema(schema)
        out[kind] = cls(schema, registry=registry)
    return out


def assert_valid(validator: Validator, doc: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def load(conformance_dir: Path, name: str) -> Any:
    return json.loads((conformance_dir / "thing-models" / name).read_text())


def via_json(doc: dict[str, Any]) -> Any:
    return json.loads(json.dumps(doc))


def write_tm(folder: Path, name: str, doc: dict[str, Any]) -> None:
    body = {"@context": "https://www.w3.org/2022/wot/td/v1.1", "@type": "tm:ThingModel", **doc}
    (folder / name).write_text(json.dumps(body))


def simple_model(**changes: Any) -> ThingModel:
    base = ThingModel(
        name="com.acme.test/meter",
        version=SemVer(1, 2, 3),
        title="Meter",
        properties=(Property("power", DataSchema(DataType.FLOAT, unit="W")),),
    )
    return ThingModel(**{**{f: getattr(base, f) for f in base.__slots__}, **changes})


# --------------------------------------------------------------------------- conformance files


def test_every_wot_conformance_file_is_covered(conformance_dir: Path) -> None:
    names = sorted(p.name for p in (conformance_dir / "thing-models").iterdir())
    wot_files = [n for n in names if n.startswith("wot_") or n.endswith(".jsonld")]
    assert wot_files == [
        "wot_td_elevator_modbus.td.json",
        "wot_tm_elevator_placeholders.tm.json",
        "wot_tm_extend_and_import.tm.jsonld",
        "wot_tm_submodel_composition.tm.jsonld",
    ]


def test_elevator_tm_with_placeholders(conformance_dir: Path) -> None:
    doc = load(conformance_dir, "wot_tm_elevator_placeholders.tm.json")
    result = model_from_wot(doc, source="elevator.tm.json", placeholders=ELEVATOR_VALUES)
    model = result.model
    assert (model.name, model.title) == ("wot.import/elevator-7", "elevator-7")
    assert model.extensions["wot"]["base"] == "modbus+tcp://10.0.0.5:502/1"
    assert [(p.id, p.schema.type, p.access) for p in model.properties] == [
        ("lightSwitch", DataType.BOOL, Access.READ_WRITE),
        ("onTheMove", DataType.BOOL, Access.READ),
        ("floorNumber", DataType.INT32, Access.READ_WRITE),
    ]
    floor = model.property("floorNumber")
    assert floor is not None
    assert (floor.schema.minimum, floor.schema.maximum, floor.required) == (0, 15, True)
    assert not any("placeholder" in n for n in result.notes)


def test_elevator_tm_without_values_keeps_and_lists_placeholders(conformance_dir: Path) -> None:
    doc = load(conformance_dir, "wot_tm_elevator_placeholders.tm.json")
    result = model_from_wot(doc, placeholders={"THING_NAME": "lift"})
    assert result.model.title == "lift"
    base = result.model.extensions["wot"]["base"]
    assert base == "{{PROTOCOL}}://{{HOSTNAME}}:{{PORT_NUMBER}}/{{UNIT_ID}}"
    for name in ("PROTOCOL", "HOSTNAME", "PORT_NUMBER", "UNIT_ID"):
        assert any(f"{{{{{name}}}}}" in n and "$.base" in n for n in result.notes), name


def test_elevator_td_with_modbus_forms(conformance_dir: Path) -> None:
    doc = load(conformance_dir, "wot_td_elevator_modbus.td.json")
    result = model_from_wot(doc, source="elevator.td.json")
    modbus = result.model.bindings.modbus
    assert modbus is not None
    assert (modbus.unit_id, modbus.zero_based) == (1, True)
    light, moving, floor = modbus.points
    assert light == ModbusPoint(
        "lightSwitch", ModbusTable.COIL, 1, ModbusType.BIT, read_function=1, write_function=5
    )
    assert moving == ModbusPoint(
        "onTheMove",
        ModbusTable.DISCRETE_INPUT,
        10001,
        ModbusType.BIT,
        read_function=2,
        report=ReportPolicy(poll_interval_s=1.0),
    )
    assert floor == ModbusPoint(
        "floorNumber",
        ModbusTable.HOLDING_REGISTER,
        40001,
        ModbusType.INT32,
        read_function=3,
        write_function=6,
    )
    assert any("Modicon" in n and "floorNumber" in n for n in result.notes)
    assert any("no modv:type" in n for n in result.notes)
    # every form was a Modbus form: none is left over in the extensions
    assert all("forms" not in p.extensions.get("wot", {}) for p in result.model.properties)


def test_elevator_td_exports_valid_and_stable(
    conformance_dir: Path, validators: dict[str, Validator]
) -> None:
    model = model_from_wot(load(conformance_dir, "wot_td_elevator_modbus.td.json")).model
    td = model_to_wot(model, kind="td")
    tm = model_to_wot(model, kind="tm")
    assert (td.losses, tm.losses) == ((), ())
    assert_valid(validators["td"], td.document)
    assert_valid(validators["modbus"], td.document)
    assert_valid(validators["tm"], tm.document)
    assert td.document["base"] == "modbus+tcp://0.0.0.0:8502/1"
    assert {"modv": "https://www.w3.org/2019/wot/modbus"}.items() <= td.document["@context"][
        -1
    ].items()
    assert model_from_wot(via_json(td.document)).model == model
    assert model_from_wot(via_json(tm.document)).model == model


def test_remote_references_are_named_when_unresolved(conformance_dir: Path) -> None:
    doc = load(conformance_dir, "wot_tm_extend_and_import.tm.jsonld")
    with pytest.raises(UnresolvedReferenceError) as info:
        model_from_wot(doc, source="lamp.tm.jsonld")
    text = str(info.value)
    for url, where in (
        (f"{PLAYGROUND}/1-basic/basic-on-off-tm.tm.jsonld", "$.links[0].href"),
        (f"{PLAYGROUND}/1-basic/basic-tm.tm.jsonld", '$.properties.status["tm:ref"]'),
        (
            f"{PLAYGROUND}/3-tm-extends-imports/extends-basic.tm.jsonld",
            '$.properties.dimming["tm:ref"]',
        ),
    ):
        assert f"{url} (at {where})" in text
        assert url in info.value.reference
    assert "lamp.tm.jsonld" in text


def test_submodel_references_are_named_when_unresolved(
    conformance_dir: Path, tmp_path: Path
) -> None:
    doc = load(conformance_dir, "wot_tm_submodel_composition.tm.jsonld")
    with pytest.raises(UnresolvedReferenceError) as info:
        model_from_wot(doc, ref_dir=tmp_path)
    for index, name in enumerate(("basic-ventilation-tm", "basic-led-tm")):
        url = f"{PLAYGROUND}/5-tm-submodel/{name}.tm.jsonld"
        assert f"{url} (at $.links[{index}].href): no file '{name}.tm.jsonld'" in str(info.value)


def _playground_files(folder: Path) -> None:
    write_tm(
        folder,
        "basic-on-off-tm.tm.jsonld",
        {"title": "Basic On/Off", "version": {"model": "1.0"}, "properties": {}},
    )
    write_tm(
        folder,
        "basic-tm.tm.jsonld",
        {"title": "Basic", "properties": {"status": {"type": "string", "readOnly": True}}},
    )
    dim = {"title": "Dimming", "type": "integer", "minimum": 0, "maximum": 100, "unit": "%"}
    write_tm(folder, "extends-basic.tm.jsonld", {"properties": {"dim": dim}})


def test_extends_and_ref_resolve_from_ref_dir(
    conformance_dir: Path, tmp_path: Path, validators: dict[str, Validator]
) -> None:
    _playground_files(tmp_path)
    doc = load(conformance_dir, "wot_tm_extend_and_import.tm.jsonld")
    result = model_from_wot(doc, ref_dir=tmp_path)
    model = result.model
    assert model.extends == ModelRef("wot.import/basic-on-off", "1.0.0")
    assert model.name == "wot.import/smart-lamp-control"
    status, dimming = model.properties
    assert (status.id, status.schema.type, status.access) == ("status", DataType.TEXT, Access.READ)
    assert dimming.id == "dimming"
    assert dimming.title == "Dimming"
    assert dimming.schema == DataSchema(DataType.INT32, minimum=0, maximum=100, unit="%")
    exported = model_to_wot(model, kind="tm")
    assert_valid(validators["tm"], exported.document)
    (link,) = exported.document["links"]
    assert link["rel"] == "tm:extends"
    assert link["href"] == f"{PLAYGROUND}/1-basic/basic-on-off-tm.tm.jsonld"
    assert model_from_wot(via_json(exported.document)).model == model
    td = model_to_wot(model, kind="td")
    assert td.losses == (
        "extends wot.import/basic-on-off@1.0.0 (a TD cannot use tm:extends: "
        "export the resolved model)",
    )
    assert_valid(validators["td"], td.document)


def test_submodels_resolve_from_ref_dir(
    conformance_dir: Path, tmp_path: Path, validators: dict[str, Validator]
) -> None:
    write_tm(tmp_path, "basic-ventilation-tm.tm.jsonld", {"title": "Ventilation"})
    write_tm(tmp_path, "basic-led-tm.tm.jsonld", {"title": "LED", "version": {"model": "2.1.0"}})
    doc = load(conformance_dir, "wot_tm_submodel_composition.tm.jsonld")
    model = model_from_wot(doc, ref_dir=tmp_path).model
    assert model.version == SemVer(1, 0, 0)
    assert model.components == (
        Component("ventilation", ModelRef("wot.import/ventilation", "")),
        Component("led", ModelRef("wot.import/led", "2.1.0")),
    )
    assert model.property("status") is not None
    for kind in ("tm", "td"):
        exported = model_to_wot(model, kind=kind)
        assert_valid(validators[kind], exported.document)
        assert model_from_wot(via_json(exported.document)).model.components == model.components


def test_allow_unresolved_imports_the_rest_and_keeps_references(
    conformance_dir: Path, validators: dict[str, Validator]
) -> None:
    doc = load(conformance_dir, "wot_tm_extend_and_import.tm.jsonld")
    result = model_from_wot(doc, allow_unresolved=True)
    assert result.model.properties == ()
    assert result.model.extends is None
    assert sum("unresolved reference" in n for n in result.notes) == 3
    exported = model_to_wot(result.model, kind="tm").document
    assert_valid(validators["tm"], exported)
    assert exported["links"] == doc["links"]
    assert exported["properties"] == doc["properties"]


# --------------------------------------------------------------------------- vectors


@pytest.mark.parametrize(
    ("schema", "terms"),
    [
        (DataSchema(DataType.BOOL), {"type": "boolean"}),
        (
            DataSchema(DataType.BOOL, bool_labels=("off", "on")),
            {"type": "boolean", "tmx:boolLabels": ["off", "on"]},
        ),
        (
            DataSchema(DataType.INT32, minimum=0, maximum=15),
            {"type": "integer", "minimum": 0, "maximum": 15},
        ),
        (DataSchema(DataType.INT32), {"type": "integer", "tmx:dataType": "int32"}),
        (DataSchema(DataType.INT64), {"type": "integer"}),
        (
            DataSchema(DataType.INT64, minimum=0, maximum=9),
            {"type": "integer", "minimum": 0, "maximum": 9, "tmx:dataType": "int64"},
        ),
        (DataSchema(DataType.DOUBLE, step=0.5), {"type": "number", "multipleOf": 0.5}),
        (
            DataSchema(DataType.FLOAT, unit="W"),
            {"type": "number", "unit": "W", "tmx:dataType": "float"},
        ),
        (DataSchema(DataType.TIMESTAMP), {"type": "integer", "tmx:dataType": "timestamp"}),
        (DataSchema(DataType.TEXT, max_length=8), {"type": "string", "maxLength": 8}),
        (
            DataSchema(DataType.ENUM, enum=(EnumValue(0, "0"), EnumValue(1, "1"))),
            {"type": "integer", "enum": [0, 1]},
        ),
        (
            DataSchema(DataType.ENUM, enum=(EnumValue("a", "Auto", "automatic"),)),
            {
                "type": "string",
                "enum": ["a"],
                "oneOf": [{"const": "a", "title": "Auto", "description": "automatic"}],
            },
        ),
        (DataSchema(DataType.ENUM), {"type": "string", "tmx:dataType": "enum"}),
        (
            DataSchema(
                DataType.STRUCT,
                fields=(
                    Field("a", DataSchema(DataType.TEXT), "A"),
                    Field("b", DataSchema(DataType.BOOL), required=False),
                ),
            ),
            {
                "type": "object",
                "properties": {"a": {"title": "A", "type": "string"}, "b": {"type": "boolean"}},
                "required": ["a"],
            },
        ),
        (
            DataSchema(DataType.ARRAY, items=DataSchema(DataType.DOUBLE), max_items=4),
            {"type": "array", "items": {"type": "number"}, "maxItems": 4},
        ),
    ],
)
def test_data_schema_vectors(schema: DataSchema, terms: dict[str, Any]) -> None:
    model = simple_model(properties=(Property("p", schema, required=True),))
    doc = model_to_wot(model, kind="tm").document
    assert doc["properties"]["p"] == {**terms, "readOnly": True}
    assert model_from_wot(via_json(doc)).model == model


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        ({"type": "string", "format": "date-time"}, DataType.TIMESTAMP),
        ({"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}, DataType.INT32),
        ({"type": "integer", "minimum": 0, "maximum": 2**31}, DataType.INT64),
        ({"type": "integer", "minimum": 0}, DataType.INT64),
        ({"oneOf": [{"const": 1, "title": "one"}]}, DataType.ENUM),
        ({"properties": {"x": {"type": "number"}}}, DataType.STRUCT),
        ({"type": "null"}, DataType.TEXT),
    ],
)
def test_foreign_schema_inference(terms: dict[str, Any], expected: DataType) -> None:
    doc = {"@context": "https://www.w3.org/2022/wot/td/v1.1", "properties": {"p": terms}}
    prop = model_from_wot(doc).model.properties[0]
    assert prop.schema.type is expected
    if expected is DataType.ENUM:
        assert prop.schema.enum == (EnumValue(1, "one"),)


def test_events_and_actions(validators: dict[str, Validator]) -> None:
    fields = (Field("code", DataSchema(DataType.INT32, minimum=0, maximum=99)),)
    model = simple_model(
        events=(Event("fault", EventLevel.ERROR, fields, "Fault"),),
        services=(Service("reset", CallType.SYNC, fields, fields, description="Reset it"),),
    )
    doc = model_to_wot(model, kind="tm").document
    assert doc["events"]["fault"]["tmx:level"] == "error"
    assert doc["events"]["fault"]["data"]["required"] == ["code"]
    action = doc["actions"]["reset"]
    assert action["synchronous"] is True
    assert action["input"]["properties"]["code"] == {"type": "integer", "minimum": 0, "maximum": 99}
    assert_valid(validators["tm"], doc)
    assert model_from_wot(via_json(doc)).model == model


def test_foreign_action_with_scalar_input_becomes_one_field() -> None:
    doc = {
        "@type": "tm:ThingModel",
        "actions": {"fade": {"input": {"type": "integer", "minimum": 0}}},
        "events": {"overheat": {"data": {"type": "number", "unit": "degC"}}},
    }
    result = model_from_wot(doc)
    fade = result.model.service("fade")
    overheat = result.model.event("overheat")
    assert fade is not None
    assert overheat is not None
    assert fade.inputs == (Field("value", DataSchema(DataType.INT64, minimum=0)),)
    assert fade.call_type is CallType.ASYNC
    assert overheat.outputs[0].schema.unit == "degC"
    assert sum("read as one field named 'value'" in n for n in result.notes) == 2


def test_unknown_terms_are_kept_and_restored() -> None:
    doc: dict[str, Any] = {
        "@context": [
            "https://www.w3.org/2022/wot/td/v1.1",
            {"saref": "https://saref.etsi.org/core/"},
        ],
        "@type": ["tm:ThingModel", "saref:Meter"],
        "id": "urn:dev:meter",
        "support": "mailto:ops@example.com",
        "properties": {
            "power": {
                "@type": "saref:Power",
                "type": "number",
                "observable": True,
                "forms": [{"href": "http://meter/power", "op": "readproperty"}],
            }
        },
        "tm:optional": ["/properties/power", "/events/alarm"],
    }
    model = model_from_wot(doc).model
    power = model.properties[0]
    assert power.required is False
    assert power.extensions["wot"] == {
        "@type": "saref:Power",
        "observable": True,
        "forms": [{"href": "http://meter/power", "op": "readproperty"}],
    }
    out = model_to_wot(model, kind="tm").document
    for key in ("id", "support", "@type", "tm:optional"):
        assert out[key] == doc[key], key
    assert out["@context"][:2] == doc["@context"]
    assert out["properties"]["power"] == doc["properties"]["power"]


def test_modbus_vocabularies_and_href_forms() -> None:
    doc = {
        "@context": "https://www.w3.org/2022/wot/td/v1.1",
        "title": "Meter",
        "base": "modbus+tcp://10.0.0.9:502/7",
        "properties": {
            "energy": {
                "type": "number",
                "readOnly": True,
                "forms": [
                    {
                        "href": "100?quantity=2",
                        "op": "readproperty",
                        "modbus:function": 4,
                        "modbus:pollingTime": 2500,
                        "modv:type": "xsd:float",
                        "modv:mostSignificantWord": False,
                    }
                ],
            },
            "name": {
                "type": "string",
                "forms": [
                    {
                        "href": "modbus+tcp://10.0.0.9:502/9/5?quantity=8",
                        "modv:entity": "HoldingRegister",
                        "modv:zeroBasedAddressing": False,
                    }
                ],
            },
        },
    }
    result = model_from_wot(doc)
    modbus = result.model.bindings.modbus
    assert modbus is not None
    assert (modbus.unit_id, modbus.zero_based) == (7, True)
    energy, name = modbus.points
    assert energy == ModbusPoint(
        "energy",
        ModbusTable.INPUT_REGISTER,
        100,
        ModbusType.FLOAT32,
        word_order=ByteOrder.LITTLE,
        read_function=4,
        report=ReportPolicy(poll_interval_s=2.5),
    )
    # one-based address 5 in a zero-based binding is PDU address 4; the type from the schema
    assert name == ModbusPoint(
        "name", ModbusTable.HOLDING_REGISTER, 4, ModbusType.STRING, count=8, unit_id=9
    )


def test_service_writes_and_orphan_points_round_trip(validators: dict[str, Validator]) -> None:
    binding = ModbusBinding(
        unit_id=3,
        zero_based=False,
        word_order=ByteOrder.LITTLE,
        points=(
            ModbusPoint("sub:temp", ModbusTable.INPUT_REGISTER, 8, ModbusType.INT16, scale=0.1),
            ModbusPoint(
                "power",
                ModbusTable.HOLDING_REGISTER,
                1,
                ModbusType.FLOAT16,
                count=1,
                enum_map=((1, True),),
                group="fast",
            ),
        ),
        services=(ModbusServiceWrite("reset", ModbusTable.COIL, 9, ModbusType.BIT, value=True),),
    )
    model = simple_model(
        services=(Service("reset"),),
        bindings=Bindings(
            modbus=binding,
            reporting=Reporting(groups=(ReportGroup("fast", ReportPolicy(1.0, on_change=True)),)),
        ),
    )
    doc = model_to_wot(model, kind="tm").document
    assert_valid(validators["tm"], doc)
    assert_valid(validators["modbus"], model_to_wot(model, kind="td").document)
    (form,) = doc["actions"]["reset"]["forms"]
    assert (form["op"], form["modv:entity"], form["tmx:write"]) == (
        "invokeaction",
        "Coil",
        {"value": True},
    )
    assert doc["tmx:modbus"]["points"][0]["property"] == "sub:temp"
    assert doc["tmx:modbus"]["pointOrder"] == [1, 0]
    assert model_from_wot(via_json(doc)).model == model


def test_td_defaults_and_placeholder_forms(validators: dict[str, Validator]) -> None:
    model = simple_model(events=(Event("tick"),), services=(Service("ping"),))
    doc = model_to_wot(model, kind="td", base="https://meter.local/").document
    assert_valid(validators["td"], doc)
    assert doc["base"] == "https://meter.local/"
    assert doc["securityDefinitions"] == {"nosec_sc": {"scheme": "nosec"}}
    assert doc["security"] == "nosec_sc"
    assert doc["properties"]["power"]["forms"] == [{"href": "properties/power"}]
    assert doc["events"]["tick"]["forms"] == [{"href": "events/tick"}]
    again = model_from_wot(via_json(doc)).model
    assert again.properties == model.properties
    assert model_to_wot(again, kind="td", base="https://meter.local/").document == doc


def test_name_and_version_overrides_and_derivation() -> None:
    doc = {"@type": "tm:ThingModel", "title": "Ünïcode Lamp 3000!", "version": {"model": "v2.1"}}
    result = model_from_wot(doc)
    assert (result.model.name, result.model.version) == (
        "wot.import/n-code-lamp-3000",
        SemVer(2, 1, 0),
    )
    named = model_from_wot(doc, name="com.acme/lamp", version="3.0.0").model
    assert (named.name, str(named.version)) == ("com.acme/lamp", "3.0.0")
    td = {"id": "urn:uuid:0b5b0dc9", "version": {"instance": "1.0.0"}}
    assert model_from_wot(td).model.name == "wot.import/urn-uuid-0b5b0dc9"
    with pytest.raises(ModelLoadError, match="name: not a model name"):
        model_from_wot(doc, name="Not A Name")


def test_losses_name_what_cannot_be_written() -> None:
    model = simple_model(
        extends=ModelRef("com.acme/base", "1"),
        extensions={"raw": b"bytes", "ok": [1, 2]},
    )
    tm = model_to_wot(model, kind="tm")
    assert tm.losses == ("extensions.raw (not JSON data)",)
    assert tm.document["tmx:extensions"] == {"ok": [1, 2]}
    td = model_to_wot(model, kind="td")
    assert td.losses[0].startswith("extends com.acme/base@1 (a TD cannot use tm:extends")
    with pytest.raises(ValueError, match="kind must be"):
        model_to_wot(model, kind="xml")  # type: ignore[arg-type]


def test_json_text_input() -> None:
    text = json.dumps({"@type": "tm:ThingModel", "title": "T", "properties": {}})
    assert model_from_wot(text).model.title == "T"
    assert model_from_wot(text.encode()).model.title == "T"


def test_local_and_chained_tm_ref(tmp_path: Path) -> None:
    write_tm(
        tmp_path, "a.tm.jsonld", {"properties": {"x": {"tm:ref": "b.tm.jsonld#/properties/y"}}}
    )
    write_tm(tmp_path, "b.tm.jsonld", {"properties": {"y": {"type": "integer", "title": "Y"}}})
    doc = {
        "@type": "tm:ThingModel",
        "properties": {
            "base": {"type": "string", "maxLength": 4},
            "copy": {"tm:ref": "#/properties/base", "title": "Copy"},
            "chained": {"tm:ref": "https://example.com/models/a.tm.jsonld#/properties/x"},
        },
    }
    model = model_from_wot(doc, ref_dir=tmp_path).model
    copy, chained = model.properties[1:]
    assert (copy.title, copy.schema) == ("Copy", DataSchema(DataType.TEXT, max_length=4))
    assert (chained.title, chained.schema.type) == ("Y", DataType.INT64)


# --------------------------------------------------------------------------- bad input


def _error_text(doc: Any, **kwargs: Any) -> str:
    with pytest.raises(ModelLoadError) as info:
        model_from_wot(doc, source="bad.json", **kwargs)
    return str(info.value)


@pytest.mark.parametrize("doc", [[], "[1]", 3, None, b"{not json"])
def test_not_an_object(doc: Any) -> None:
    text = _error_text(doc)
    assert "bad.json" in text
    assert "JSON object" in text or "not valid JSON" in text


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"properties": []}, "$.properties: wrong type (got []); expected a JSON object"),
        ({"properties": {"p": 5}}, "$.properties.p: wrong type (got 5)"),
        (
            {"properties": {"p": {"type": "integer", "minimum": "0"}}},
            "$.properties.p.minimum: wrong type",
        ),
        ({"properties": {"p": {"type": "int"}}}, "$.properties.p.type: unknown type"),
        ({"properties": {"p": {"readOnly": "yes"}}}, "$.properties.p.readOnly: wrong type"),
        ({"properties": {"p": {"enum": [1, 1]}}}, "$.properties.p.enum[1]: duplicate enum value"),
        ({"properties": {"p": {"enum": [1.5]}}}, "enum values must be integers or strings"),
        ({"properties": {"p": {"multipleOf": 0}}}, "multipleOf: must be greater than 0"),
        ({"properties": {"p": {"tmx:dataType": "int128"}}}, 'p["tmx:dataType"]: unknown data type'),
        ({"events": {"e": {"tmx:level": "panic"}}}, "unknown event level"),
        ({"links": [{"rel": "tm:submodel", "tmx:model": "Bad Name"}]}, "is not a model reference"),
        ({"tmx:mqtt": {"qos": "high"}}, '$["tmx:mqtt"].qos: wrong type'),
        ({"tmx:modbus": {"points": [{"property": "x"}]}}, "ModbusPoint field 'table' is missing"),
    ],
)
def test_wrong_types_name_the_path(doc: dict[str, Any], expected: str) -> None:
    assert expected in _error_text({"@context": "https://www.w3.org/2022/wot/td/v1.1", **doc})


def test_all_errors_are_reported_together() -> None:
    doc = {"properties": {"a": {"type": "int"}, "b": {"maximum": "x"}, "c": 1}}
    with pytest.raises(ModelLoadError) as info:
        model_from_wot(doc)
    assert len(info.value.diagnostics) == 3


def _modbus_doc(form: dict[str, Any]) -> dict[str, Any]:
    return {"properties": {"p": {"type": "integer", "forms": [form]}}}


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"modv:entity": "Register", "modv:address": 1}, '["modv:entity"]: unknown Modbus entity'),
        ({"modv:entity": "Coil", "modv:address": -1}, '["modv:address"]: must be at least 0'),
        ({"href": "modbus+tcp://h:502/1/-4", "modv:entity": "Coil"}, "negative Modbus address"),
        ({"modv:entity": "Coil"}, "no Modbus address"),
        ({"href": "modbus://h/1/2"}, "needs modv:entity or modv:function"),
        (
            {"modv:entity": "Coil", "modv:function": "readHoldingRegisters", "modv:address": 1},
            "does not act on Coil",
        ),
        (
            {"modbus:entity": "Coil", "modbus:function": "explode", "modv:address": 1},
            "unknown Modbus function",
        ),
        (
            {"modv:entity": "Coil", "modv:address": 1, "modv:type": "xsd:dateTime"},
            "unknown Modbus type",
        ),
        (
            {"href": "modbus://h/1/2?quantity=0", "modv:entity": "Coil"},
            "quantity must be a positive",
        ),
    ],
)
def test_bad_modbus_forms(form: dict[str, Any], expected: str) -> None:
    text = _error_text(_modbus_doc(form))
    assert expected in text
    assert "$.properties.p.forms[0]" in text


def test_deep_nesting_is_refused_without_recursion_error() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(500):
        deep = {"type": "object", "properties": {"x": deep}}
    with pytest.raises(HostileInputError, match="nested deeper than 64 levels"):
        model_from_wot({"properties": {"p": deep}})
    with pytest.raises(HostileInputError, match="nested too deeply"):
        model_from_wot("[" * 200_000)


def test_placeholder_cycle_is_refused() -> None:
    doc = {"@type": "tm:ThingModel", "title": "{{A}}"}
    with pytest.raises(ModelLoadError, match="placeholder cycle: A -> B -> A"):
        model_from_wot(doc, placeholders={"A": "x{{B}}", "B": "{{A}}"})


def test_placeholder_bomb_is_refused_early() -> None:
    values = {"L0": "x" * 1000}
    for level in range(1, 8):
        values[f"L{level}"] = f"{{{{L{level - 1}}}}}" * 100
    doc = {"@type": "tm:ThingModel", "title": "{{L7}}"}
    with pytest.raises(HostileInputError, match="placeholders expand to too much text"):
        model_from_wot(doc, placeholders=values)
    wide = {"@type": "tm:ThingModel", "title": "{{L2}}" * 1000}
    with pytest.raises(HostileInputError):
        model_from_wot(wide, placeholders={k: values[k] for k in ("L0", "L1", "L2")})


def test_typed_placeholders() -> None:
    doc = {
        "@type": "tm:ThingModel",
        "properties": {"p": {"type": "integer", "minimum": "{{MIN}}", "maximum": "{{MAX}}"}},
    }
    prop = model_from_wot(doc, placeholders={"MIN": "-5", "MAX": "70000"}).model.properties[0]
    assert (prop.schema.minimum, prop.schema.maximum) == (-5, 70000)
    result = model_from_wot(doc, placeholders={"MIN": "0"})
    assert result.model.properties[0].schema.maximum is None
    assert any("{{MAX}}" in n and "maximum" in n for n in result.notes)


def test_tm_ref_to_missing_pointer(tmp_path: Path) -> None:
    write_tm(tmp_path, "other.tm.jsonld", {"properties": {"x": {"type": "string"}}})
    doc = {
        "@type": "tm:ThingModel",
        "properties": {"p": {"tm:ref": "other.tm.jsonld#/properties/y"}},
    }
    text = _error_text(doc, ref_dir=tmp_path)
    assert (
        "$.properties.p[\"tm:ref\"]: tm:ref points to nothing: no object at '/properties/y'" in text
    )
    cycle = {
        "@type": "tm:ThingModel",
        "properties": {"a": {"tm:ref": "#/properties/b"}, "b": {"tm:ref": "#/properties/a"}},
    }
    assert "tm:ref cycle" in _error_text(cycle)
    assert "tm:ref must be a URI with a JSON pointer" in _error_text(
        {"properties": {"p": {"tm:ref": "other.tm.jsonld"}}}
    )


def test_ref_dir_lookup_never_leaves_the_folder(tmp_path: Path) -> None:
    inner = tmp_path / "refs"
    inner.mkdir()
    write_tm(tmp_path, "secret.tm.jsonld", {"properties": {"s": {"type": "string"}}})
    doc = {
        "@type": "tm:ThingModel",
        "properties": {"p": {"tm:ref": "../secret.tm.jsonld#/properties/s"}},
    }
    # "../secret.tm.jsonld" names the file "secret.tm.jsonld" *in* ref_dir, which is not there
    with pytest.raises(UnresolvedReferenceError, match=re.escape("no file 'secret.tm.jsonld'")):
        model_from_wot(doc, ref_dir=inner)


# --------------------------------------------------------------------------- hypothesis

IDENT = st.from_regex(r"[a-z][a-zA-Z0-9_]{0,7}", fullmatch=True)
TEXT = st.text(string.ascii_letters + " {}-é", max_size=8)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
NUMBER = st.one_of(st.integers(-(2**40), 2**40), FINITE)
POSITIVE = st.one_of(st.integers(1, 1000), st.floats(0.001, 1e6))
MODEL_NAME = st.from_regex(r"[a-z]{1,4}(\.[a-z]{1,4}){0,2}/[a-z][a-z0-9-]{0,6}", fullmatch=True)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | FINITE | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
EXTENSIONS = st.dictionaries(IDENT.filter(lambda k: not k.startswith("wot")), JSON, max_size=2)


@st.composite
def enum_values(draw: st.DrawFn) -> tuple[EnumValue, ...]:
    values = draw(
        st.lists(st.integers(-99, 99) | IDENT, max_size=4, unique_by=lambda v: (type(v), v))
    )
    return tuple(
        EnumValue(v, draw(st.just(str(v)) | TEXT), draw(st.just("") | TEXT)) for v in values
    )


def schemas(depth: int = 2) -> st.SearchStrategy[DataSchema]:
    optional_number = st.none() | NUMBER
    scalar = st.one_of(
        st.builds(
            DataSchema, st.just(DataType.BOOL), bool_labels=st.none() | st.tuples(TEXT, TEXT)
        ),
        st.builds(
            DataSchema,
            st.sampled_from(
                [
                    DataType.INT32,
                    DataType.INT64,
                    DataType.FLOAT,
                    DataType.DOUBLE,
                    DataType.TIMESTAMP,
                ]
            ),
            minimum=optional_number,
            maximum=optional_number,
            step=st.none() | POSITIVE,
            unit=st.none() | TEXT,
            unit_name=st.none() | TEXT,
        ),
        st.builds(DataSchema, st.just(DataType.TEXT), max_length=st.none() | st.integers(0, 999)),
        st.builds(DataSchema, st.just(DataType.ENUM), enum=enum_values()),
    )
    if depth == 0:
        return scalar
    return st.one_of(
        scalar,
        st.builds(DataSchema, st.just(DataType.STRUCT), fields=field_lists(depth - 1)),
        st.builds(
            DataSchema,
            st.just(DataType.ARRAY),
            items=st.none() | schemas(depth - 1),
            max_items=st.none() | st.integers(0, 99),
        ),
    )


def field_lists(depth: int) -> st.SearchStrategy[tuple[Field, ...]]:
    field = st.builds(Field, IDENT, schemas(depth), TEXT, TEXT, st.booleans())
    return st.lists(field, max_size=3, unique_by=lambda f: f.id).map(tuple)


POLICY = st.builds(
    ReportPolicy,
    st.none() | POSITIVE,
    st.booleans(),
    st.floats(0, 100),
    st.sampled_from(DeadbandMode),
    st.none() | POSITIVE,
)
_READS = {
    ModbusTable.COIL: (1, (5, 15)),
    ModbusTable.DISCRETE_INPUT: (2, ()),
    ModbusTable.INPUT_REGISTER: (4, ()),
    ModbusTable.HOLDING_REGISTER: (3, (6, 16)),
}


@st.composite
def modbus_points(draw: st.DrawFn, prop: str) -> ModbusPoint:
    table = draw(st.sampled_from(ModbusTable))
    read, writes = _READS[table]
    opt = st.none()
    return ModbusPoint(
        prop,
        table,
        draw(st.integers(0, 65535)),
        draw(st.sampled_from(ModbusType)),
        count=draw(opt | st.integers(1, 16)),
        unit_id=draw(opt | st.integers(0, 247)),
        byte_order=draw(opt | st.sampled_from(ByteOrder)),
        word_order=draw(opt | st.sampled_from(ByteOrder)),
        bit=draw(opt | st.integers(0, 15)),
        scale=draw(FINITE),
        offset=draw(st.just(0.0) | FINITE),
        mask=draw(opt | st.integers(0, 0xFFFF)),
        shift=draw(st.integers(0, 15)),
        rounding=draw(opt | st.integers(0, 6)),
        enum_map=tuple(
            draw(
                st.lists(
                    st.tuples(st.integers(0, 9), st.integers() | TEXT | st.booleans()), max_size=2
                )
            )
        ),
        sentinel=draw(opt | NUMBER),
        valid_min=draw(opt | FINITE),
        valid_max=draw(opt | FINITE),
        read_function=draw(opt | st.just(read)),
        write_function=draw(opt | st.sampled_from(writes)) if writes else None,
        encoding=draw(st.sampled_from(["ascii", "utf-8"])),
        group=draw(opt | IDENT),
        report=draw(opt | POLICY),
    )


@st.composite
def modbus_bindings(draw: st.DrawFn, props: list[str], services: list[str]) -> ModbusBinding:
    chosen = draw(st.lists(st.sampled_from(props), unique=True)) if props else []
    chosen += draw(st.lists(st.just("sub:orphan"), max_size=1))
    points = draw(st.permutations([draw(modbus_points(p)) for p in chosen]))
    targets = draw(st.lists(st.sampled_from(services), unique=True)) if services else []
    writes = [
        ModbusServiceWrite(
            s,
            table := draw(st.sampled_from([ModbusTable.COIL, ModbusTable.HOLDING_REGISTER])),
            draw(st.integers(0, 65535)),
            draw(st.sampled_from(ModbusType)),
            value=draw(st.none() | st.booleans() | st.integers(0, 99) | FINITE),
            param=draw(st.none() | IDENT),
            write_function=draw(st.none() | st.sampled_from(_READS[table][1])),
        )
        for s in targets
    ]
    return ModbusBinding(
        unit_id=draw(st.integers(0, 247)),
        zero_based=draw(st.booleans()),
        byte_order=draw(st.sampled_from(ByteOrder)),
        word_order=draw(st.sampled_from(ByteOrder)),
        points=tuple(points),
        services=tuple(writes),
        max_registers_per_read=draw(st.integers(1, 125)),
        max_gap=draw(st.integers(0, 16)),
    )


OTHER_BINDINGS = st.fixed_dictionaries(
    {},
    optional={
        "bacnet": st.builds(
            BacnetBinding,
            st.none() | st.integers(0, 4194302),
            st.lists(
                st.builds(
                    BacnetPoint,
                    IDENT,
                    st.just("analog-input"),
                    st.integers(0, 99),
                    cov_increment=st.none() | FINITE,
                ),
                max_size=2,
            ).map(tuple),
            st.booleans(),
        ),
        "mqtt": st.builds(
            MqttBinding,
            st.lists(
                st.builds(MqttPoint, IDENT, TEXT, TEXT, report=st.none() | POLICY), max_size=2
            ).map(tuple),
            st.lists(st.builds(MqttEventRoute, IDENT, TEXT), max_size=1).map(tuple),
            st.none() | TEXT,
            qos=st.integers(0, 2),
        ),
        "coap": st.builds(
            CoapBinding,
            st.lists(st.builds(CoapPoint, IDENT, TEXT, st.sampled_from(CoapMode)), max_size=2).map(
                tuple
            ),
        ),
        "reporting": st.builds(
            Reporting,
            POLICY,
            st.lists(st.builds(ReportGroup, IDENT, POLICY), max_size=2).map(tuple),
        ),
    },
)


@st.composite
def models(draw: st.DrawFn) -> ThingModel:
    props = draw(
        st.lists(
            st.builds(
                Property,
                IDENT,
                schemas(),
                TEXT,
                TEXT,
                st.sampled_from(Access),
                st.booleans(),
                EXTENSIONS,
            ),
            max_size=4,
            unique_by=lambda p: p.id,
        )
    )
    events = draw(
        st.lists(
            st.builds(
                Event, IDENT, st.sampled_from(EventLevel), field_lists(1), TEXT, TEXT, EXTENSIONS
            ),
            max_size=2,
            unique_by=lambda e: e.id,
        )
    )
    services = draw(
        st.lists(
            st.builds(
                Service,
                IDENT,
                st.sampled_from(CallType),
                field_lists(1),
                field_lists(1),
                TEXT,
                TEXT,
                EXTENSIONS,
            ),
            max_size=2,
            unique_by=lambda s: s.id,
        )
    )
    ref = st.builds(ModelRef, MODEL_NAME, st.sampled_from(["", "1", "1.2", "1.2.3", "2.0.0-rc.1"]))
    components = draw(
        st.lists(
            st.builds(Component, IDENT, ref, TEXT, TEXT), max_size=2, unique_by=lambda c: c.instance
        )
    )
    others: dict[str, Any] = draw(OTHER_BINDINGS)
    modbus = draw(st.none() | modbus_bindings([p.id for p in props], [s.id for s in services]))
    return ThingModel(
        name=draw(MODEL_NAME),
        version=draw(
            st.builds(
                SemVer,
                st.integers(0, 9),
                st.integers(0, 9),
                st.integers(0, 9),
                st.sampled_from(["", "rc.1"]),
            )
        ),
        title=draw(TEXT),
        description=draw(TEXT),
        vendor=draw(TEXT),
        extends=draw(st.none() | ref),
        components=tuple(components),
        properties=tuple(props),
        events=tuple(events),
        services=tuple(services),
        bindings=Bindings(modbus=modbus, **others),
        extensions=draw(EXTENSIONS),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=models())
def test_round_trips(model: ThingModel, validators: dict[str, Validator]) -> None:
    """ours -> TM -> ours is equal; the TD is valid and reads back to the same TD."""
    tm = model_to_wot(model, kind="tm")
    assert tm.losses == ()
    assert_valid(validators["tm"], tm.document)
    assert model_from_wot(via_json(tm.document)).model == model
    td = model_to_wot(model, kind="td", base="modbus+tcp://192.0.2.1:502/")
    assert_valid(validators["td"], td.document)
    assert len(td.losses) == (model.extends is not None)
    again = model_from_wot(via_json(td.document)).model
    assert (again.properties, again.bindings) == (model.properties, model.bindings)
    assert model_to_wot(again, kind="td").document == td.document


def test_public_names() -> None:
    assert wot.__all__ == ["model_from_wot", "model_to_wot"]
    modules = (wot, wot_export, wot_import, wot_links, wot_modbus, wot_modbus_import)
    for module in (*modules, wot_plain, wot_refs, wot_schema, wot_terms):
        assert all(hasattr(module, name) for name in module.__all__), module.__name__
