"""Alibaba TSL JSON <-> the canonical model: vectors, conformance files, round trips, bad input."""

from __future__ import annotations

import copy
import json
import operator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thing_models.errors import ModelLoadError
from thing_models.formats import Imported, tsl
from thing_models.formats.tsl import (
    EXTENSION_KEY,
    MAX_DEPTH,
    SCHEMA_URLS,
    is_tsl,
    model_from_tsl,
    model_to_tsl,
)
from thing_models.model import (
    Access,
    Bindings,
    CallType,
    Component,
    DataSchema,
    DataType,
    EnumValue,
    Event,
    EventLevel,
    Field,
    ModbusBinding,
    ModelRef,
    MqttBinding,
    Property,
    Reporting,
    ReportPolicy,
    SemVer,
    Service,
    ThingModel,
)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
ALIBABA_FILES = (
    "alibaba_tsl_countdown_date_struct.extracted.json",
    "alibaba_tsl_light_iotkit_model.json",
    "alibaba_tsl_linkkit_python_demo.json",
)


# --------------------------------------------------------------------------- helpers


def load(conformance_dir: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((conformance_dir / "thing-models" / name).read_text("utf-8"))
    return data


def prop_doc(data_type: Any, **extra: Any) -> dict[str, Any]:
    """A minimal TSL document with one property ``p`` of ``data_type``."""
    prop = {"identifier": "p", "name": "P", "accessMode": "rw", "required": False}
    prop.update(extra)
    if data_type is not None:
        prop["dataType"] = data_type
    return {"schema": SCHEMA_URLS[0], "profile": {"productKey": "pk"}, "properties": [prop]}


def read_schema(data_type: dict[str, Any]) -> DataSchema:
    prop = model_from_tsl(prop_doc(data_type)).model.properties[0]
    return prop.schema


def errors_of(doc: Any, **kwargs: Any) -> list[tuple[str, str]]:
    """(path, message) of every diagnostic a bad document raises."""
    with pytest.raises(ModelLoadError) as info:
        model_from_tsl(doc, source="bad.json", **kwargs)
    for diagnostic in info.value.diagnostics:
        assert diagnostic.location.file == "bad.json"
    return [(d.path, d.message) for d in info.value.diagnostics]


def simple_model(**kwargs: Any) -> ThingModel:
    defaults: dict[str, Any] = {"name": "aliyun.tsl/pk", "version": SemVer(1, 0, 0)}
    defaults.update(kwargs)
    return ThingModel(**defaults)


def int_prop(prop_id: str = "p", **schema: Any) -> Property:
    return Property(prop_id, DataSchema(DataType.INT32, **schema))


# --------------------------------------------------------------------------- conformance files


@pytest.mark.parametrize("file_name", ALIBABA_FILES)
def test_alibaba_file_imports_and_exports_unchanged(conformance_dir: Path, file_name: str) -> None:
    doc = load(conformance_dir, file_name)
    imported = model_from_tsl(copy.deepcopy(doc), source=file_name)
    assert imported.notes == ()
    exported = model_to_tsl(imported.model)
    assert exported.losses == ()
    assert exported.document == doc
    again = model_from_tsl(exported.document)
    assert again.model == imported.model


def test_light_file_maps_every_tsl_fact(conformance_dir: Path) -> None:
    model = model_from_tsl(load(conformance_dir, "alibaba_tsl_light_iotkit_model.json")).model
    assert model.name == "aliyun.tsl/a1h88dsziay"
    assert model.version == SemVer(1, 0, 0)
    assert model.extensions == {EXTENSION_KEY: {"profile": {"productKey": "a1h88DsZIaY"}}}
    status, level, alias = model.properties
    assert status == Property(
        "LightStatus", DataSchema(DataType.BOOL, bool_labels=("关闭", "打开")), "工作状态",
        access=Access.READ_WRITE,
    )  # fmt: skip
    assert level.schema == DataSchema(DataType.INT32, 0, 100, 1, unit="%")
    assert level.description == "调光等级采用百分比表示"
    assert alias.schema == DataSchema(DataType.TEXT, max_length=32)
    assert [e.id for e in model.events] == ["Error", "TamperAlarm"]
    error = model.events[0]
    assert error.level is EventLevel.ALERT
    assert error.outputs == (
        Field("ErrorCode", DataSchema(DataType.ENUM, enum=(EnumValue(0, "恢复正常"),)), "故障代码"),
    )
    assert model.services == ()


def test_countdown_file_struct_with_date_member(conformance_dir: Path) -> None:
    doc = load(conformance_dir, "alibaba_tsl_countdown_date_struct.extracted.json")
    model = model_from_tsl(doc).model
    countdown = model.property("CountDown")
    assert countdown is not None
    assert [f.id for f in countdown.schema.fields] == [
        "IsRunning", "TimeLeft", "PowerSwitch", "Timestamp",
    ]  # fmt: skip
    assert countdown.schema.fields[3].schema == DataSchema(DataType.TIMESTAMP)
    time_left = countdown.schema.fields[1].schema
    assert (time_left.unit, time_left.unit_name, time_left.maximum) == ("s", "秒", 86399)
    rssi = model.property("WiFI_RSSI")
    assert rssi is not None
    assert (rssi.schema.minimum, rssi.schema.maximum, rssi.required) == (-127, -1, True)
    (error,) = model.events
    assert error.level is EventLevel.ERROR
    assert error.extensions == {EXTENSION_KEY: {"required": True}}


def test_linkkit_file_sync_and_async_services(conformance_dir: Path) -> None:
    model = model_from_tsl(load(conformance_dir, "alibaba_tsl_linkkit_python_demo.json")).model
    assert [(s.id, s.call_type) for s in model.services] == [
        ("attack", CallType.ASYNC), ("test1", CallType.SYNC), ("test2", CallType.ASYNC),
    ]  # fmt: skip
    attack = model.services[0]
    assert (attack.title, attack.description) == ("攻击", "质子攻击")
    assert attack.inputs[0].schema.unit == "kW"
    assert model.services[1].title == ""  # TSL name equal to the identifier: no title
    power = model.event("power_state")
    assert power is not None
    assert power.outputs[1].schema.enum_label(3) == "const"


@pytest.mark.parametrize("file_name", ALIBABA_FILES)
def test_alibaba_files_are_detected(conformance_dir: Path, file_name: str) -> None:
    assert is_tsl(load(conformance_dir, file_name))


# --------------------------------------------------------------------------- type vectors

TYPE_VECTORS: list[tuple[dict[str, Any], DataSchema]] = [
    (
        {"type": "int",
         "specs": {"min": "0", "max": "100", "step": "1", "unit": "%", "unitName": "百分比"}},
        DataSchema(DataType.INT32, 0, 100, 1, "%", "百分比"),
    ),
    ({"type": "int", "specs": {"min": "-2147483648", "max": "2147483647"}},
     DataSchema(DataType.INT32, INT32_MIN, INT32_MAX)),
    ({"type": "float", "specs": {"min": "-1.5", "max": "2.25", "step": "0.25"}},
     DataSchema(DataType.FLOAT, -1.5, 2.25, 0.25)),
    ({"type": "double", "specs": {"min": "1e-07", "max": "1e+300"}},
     DataSchema(DataType.DOUBLE, 1e-7, 1e300)),
    ({"type": "text", "specs": {"length": "32"}}, DataSchema(DataType.TEXT, max_length=32)),
    ({"type": "text", "specs": {}}, DataSchema(DataType.TEXT)),
    ({"type": "bool", "specs": {"0": "off", "1": "on"}},
     DataSchema(DataType.BOOL, bool_labels=("off", "on"))),
    ({"type": "enum", "specs": {"1": "sine", "2": "triangle", "-3": "neg"}},
     DataSchema(DataType.ENUM, enum=(EnumValue(1, "sine"), EnumValue(2, "triangle"),
                                     EnumValue(-3, "neg")))),
    ({"type": "date", "specs": {}}, DataSchema(DataType.TIMESTAMP)),
    ({"type": "struct", "specs": [
        {"identifier": "a", "name": "A", "dataType": {"type": "int", "specs": {}}},
        {"identifier": "b", "name": "b", "desc": "B!", "dataType": {"type": "date", "specs": {}}},
    ]}, DataSchema(DataType.STRUCT, fields=(
        Field("a", DataSchema(DataType.INT32), "A"),
        Field("b", DataSchema(DataType.TIMESTAMP), "", "B!"),
    ))),
    ({"type": "array", "specs": {"size": "10", "item": {"type": "int", "specs": {"min": "1"}}}},
     DataSchema(DataType.ARRAY, items=DataSchema(DataType.INT32, 1), max_items=10)),
    ({"type": "array", "specs": {"size": "2", "item": {"type": "struct", "specs": [
        {"identifier": "x", "name": "X", "dataType": {"type": "double", "specs": {}}}]}}},
     DataSchema(DataType.ARRAY, max_items=2, items=DataSchema(DataType.STRUCT, fields=(
         Field("x", DataSchema(DataType.DOUBLE), "X"),)))),
]  # fmt: skip


@pytest.mark.parametrize(("data_type", "schema"), TYPE_VECTORS)
def test_data_type_vectors_both_ways(data_type: dict[str, Any], schema: DataSchema) -> None:
    assert read_schema(data_type) == schema
    exported = model_to_tsl(simple_model(properties=(Property("p", schema, "P"),)))
    assert exported.losses == ()
    assert exported.document["properties"][0]["dataType"] == data_type


def test_numeric_specs_accept_json_numbers_and_export_strings() -> None:
    schema = read_schema({"type": "float", "specs": {"min": 0, "max": 10.5, "step": 1}})
    assert schema == DataSchema(DataType.FLOAT, 0.0, 10.5, 1.0)
    written = model_to_tsl(simple_model(properties=(Property("p", schema),))).document
    assert written["properties"][0]["dataType"]["specs"] == {"min": "0", "max": "10.5", "step": "1"}


def test_integer_values_read_as_int_and_floats_as_float() -> None:
    int_schema = read_schema({"type": "int", "specs": {"min": "-5", "max": "+5"}})
    assert (type(int_schema.minimum), int_schema.maximum) == (int, 5)
    float_schema = read_schema({"type": "float", "specs": {"min": "3"}})
    assert type(float_schema.minimum) is float


# --------------------------------------------------------------------------- affordances


def test_property_fields_and_unknown_keys_round_trip() -> None:
    doc = prop_doc({"type": "int", "specs": {}}, desc="d", required=True, accessMode="r",
                   vendorNote={"k": [1, 2]})  # fmt: skip
    prop = model_from_tsl(doc).model.properties[0]
    assert (prop.title, prop.description, prop.access, prop.required) == (
        "P", "d", Access.READ, True,
    )  # fmt: skip
    assert prop.extensions == {EXTENSION_KEY: {"vendorNote": {"k": [1, 2]}}}
    assert model_to_tsl(model_from_tsl(doc).model).document["properties"] == doc["properties"]


def test_event_and_service_required_and_method_kept_in_extensions() -> None:
    doc: dict[str, Any] = {
        "profile": {"productKey": "pk"},
        "events": [{"identifier": "Fault", "name": "F", "type": "error", "required": True,
                    "method": "thing.event.Fault.post", "outputData": []}],
        "services": [{"identifier": "reboot", "name": "R", "callType": "sync", "required": False,
                      "method": "custom.reboot", "inputData": [], "outputData": [], "x": 1}],
    }  # fmt: skip
    imported = model_from_tsl(doc)
    (event,), (service,) = imported.model.events, imported.model.services
    assert event.extensions == {EXTENSION_KEY: {"required": True}}
    assert service.extensions == {EXTENSION_KEY: {"method": "custom.reboot", "x": 1}}
    assert any("custom.reboot" in note for note in imported.notes)
    written = model_to_tsl(imported.model).document
    assert written["events"][1] == doc["events"][0]
    assert written["services"][2] == doc["services"][0]


def test_builtins_are_skipped_on_import_and_generated_on_export() -> None:
    rw = Property("a", DataSchema(DataType.BOOL), "A", access=Access.READ_WRITE)
    ro = Property("b", DataSchema(DataType.TEXT, max_length=4), "B")
    model = simple_model(properties=(rw, ro), events=(Event("Alarm", EventLevel.ALERT),))
    doc = model_to_tsl(model).document
    post = doc["events"][0]
    assert (post["identifier"], post["method"]) == ("post", "thing.event.property.post")
    assert [o["identifier"] for o in post["outputData"]] == ["a", "b"]
    assert doc["events"][1]["method"] == "thing.event.Alarm.post"
    set_service, get_service = doc["services"]
    assert [i["identifier"] for i in set_service["inputData"]] == ["a"]
    assert get_service["inputData"] == ["a", "b"]
    assert [o["identifier"] for o in get_service["outputData"]] == ["a", "b"]
    assert model_from_tsl(doc).model == model


def test_stale_builtins_are_noted() -> None:
    doc = prop_doc({"type": "int", "specs": {}})
    doc["services"] = [{"identifier": "get", "inputData": ["p", "gone"], "outputData": []}]
    notes = model_from_tsl(doc).notes
    assert any(n.startswith("services[0].inputData: built-in 'get' differs") for n in notes)
    assert any(n.startswith("services[0].outputData: built-in 'get' differs") for n in notes)


def test_post_event_is_not_a_model_event() -> None:
    doc = prop_doc({"type": "int", "specs": {}})
    doc["events"] = [{"identifier": "post", "method": "thing.event.property.post",
                      "outputData": [{"identifier": "p", "name": "P",
                                      "dataType": {"type": "int", "specs": {}}}]}]  # fmt: skip
    assert model_from_tsl(doc).model.events == ()


# --------------------------------------------------------------------------- identity


@pytest.mark.parametrize("url", SCHEMA_URLS)
def test_both_schema_urls_are_accepted_and_restored(url: str) -> None:
    doc = prop_doc({"type": "date", "specs": {}})
    doc["schema"] = url
    model = model_from_tsl(doc).model
    assert model_to_tsl(model).document["schema"] == url


def test_default_schema_url_and_profile_for_a_new_model() -> None:
    exported = model_to_tsl(simple_model(name="com.acme.energy/meter-3p"))
    assert exported.document["schema"] == SCHEMA_URLS[0]
    assert exported.document["profile"] == {"productKey": "meter-3p"}
    assert exported.losses == (
        "name 'com.acme.energy/meter-3p' (TSL keeps only profile.productKey 'meter-3p')",
    )
    back = model_from_tsl(exported.document, name="com.acme.energy/meter-3p").model
    assert back == simple_model(name="com.acme.energy/meter-3p")


@pytest.mark.parametrize(
    ("product_key", "name"),
    [("a1ikrQdGiG8", "aliyun.tsl/a1ikrqdgig8"), ("1abc_DEF", "aliyun.tsl/p1abc-def"),
     ("!!!", "aliyun.tsl/unnamed")],
)  # fmt: skip
def test_default_name_comes_from_product_key(product_key: str, name: str) -> None:
    doc = {"profile": {"productKey": product_key}, "properties": []}
    assert model_from_tsl(doc).model.name == name


def test_name_and_version_arguments() -> None:
    model = model_from_tsl({"properties": []}, name="com.acme/lamp", version="2.1.0").model
    assert (model.name, str(model.version)) == ("com.acme/lamp", "2.1.0")


def test_missing_profile_is_noted() -> None:
    imported = model_from_tsl({"properties": []})
    assert imported.model.name == "aliyun.tsl/unnamed"
    assert any("productKey missing" in note for note in imported.notes)


def test_module_function_block_kept_and_reported() -> None:
    doc = prop_doc({"type": "int", "specs": {}})
    doc.update(functionBlockId="Meter1", functionBlockName="Meter")
    imported = model_from_tsl(doc)
    ext = imported.model.extensions[EXTENSION_KEY]
    assert (ext["functionBlockId"], ext["functionBlockName"]) == ("Meter1", "Meter")
    assert any("functionBlockId 'Meter1'" in note for note in imported.notes)
    written = model_to_tsl(imported.model)
    assert written.losses == ()
    assert written.document["functionBlockId"] == "Meter1"


def test_unknown_schema_url_kept_with_note() -> None:
    doc = {"schema": "https://example.com/tsl.json", "profile": {"productKey": "pk"}}
    imported = model_from_tsl(doc)
    assert any("unrecognised TSL schema URL" in note for note in imported.notes)
    assert model_to_tsl(imported.model).document["schema"] == "https://example.com/tsl.json"


# --------------------------------------------------------------------------- losses


LOSS_CASES: list[tuple[ThingModel, str]] = [
    (simple_model(properties=(Property("big", DataSchema(DataType.INT64, 0, 10)),)),
     "property 'big': int64 exported as int (32-bit)"),
    (simple_model(properties=(Property("big", DataSchema(DataType.INT64, 0, 2**40)),)),
     "property 'big': int64 range [0, 1099511627776] clamped to 32 bits"),
    (simple_model(properties=(Property("mode", DataSchema(
        DataType.ENUM, enum=(EnumValue("auto", "Auto"), EnumValue("eco", "Eco")))),)),
     "property 'mode': enum with text values (exported as text)"),
    (simple_model(properties=(Property("mode", DataSchema(
        DataType.ENUM, enum=(EnumValue(1, "One", "the first"),))),)),
     "property 'mode': enum member descriptions"),
    (simple_model(properties=(int_prop(max_length=3),)), "property 'p': max_length on int32"),
    (simple_model(properties=(Property("t", DataSchema(DataType.TIMESTAMP, unit="ms")),)),
     "property 't': unit on timestamp"),
    (simple_model(properties=(Property("m", DataSchema(DataType.ARRAY, items=DataSchema(
        DataType.ARRAY, items=DataSchema(DataType.INT32)))),)),
     "property 'm': array of arrays"),
    (simple_model(properties=(Property("flags", DataSchema(
        DataType.ARRAY, items=DataSchema(DataType.BOOL))),)),
     "property 'flags': array of bool (TSL arrays hold int, float, double, text, struct)"),
    (simple_model(properties=(Property("a", DataSchema(DataType.ARRAY)),)),
     "property 'a': array without an item type (exported as text items)"),
    (simple_model(events=(Event("e", outputs=(Field("o", DataSchema(DataType.INT32),
                                                    required=False),)),)),
     "event 'e' output 'o': optional (TSL parameters are always present)"),
    (simple_model(properties=(Property("s", DataSchema(DataType.STRUCT, fields=(
        Field("n", DataSchema(DataType.INT64)),))),)),
     "property 's' field 'n': int64 exported as int (32-bit)"),
    (simple_model(events=(Event("post"),)),
     "event 'post': clashes with TSL's built-in property event (not exported)"),
    (simple_model(services=(Service("set"),)),
     "service 'set': clashes with TSL's built-in property service (not exported)"),
    (simple_model(bindings=Bindings(modbus=ModbusBinding(), mqtt=MqttBinding())),
     "bindings (modbus, mqtt)"),
    (simple_model(extends=ModelRef("com.acme/base", "1")), "extends (com.acme/base@1)"),
    (simple_model(components=(Component("left", ModelRef("com.acme/fan")),)),
     "components (left)"),
    (simple_model(extensions={"wot": {"@context": "x"}}), "model: extensions (wot)"),
    (simple_model(properties=(Property("p", DataSchema(DataType.BOOL), extensions={"k": 1}),)),
     "property 'p': extensions (k)"),
    (simple_model(extensions={EXTENSION_KEY: {"properties": []}}),
     "model: extensions['tsl'] keys (properties)"),
    (simple_model(extensions={EXTENSION_KEY: "junk"}), "model: extensions (tsl)"),
    (simple_model(bindings=Bindings(reporting=Reporting(ReportPolicy(poll_interval_s=1.0)))),
     "bindings (reporting)"),
    (simple_model(services=(Service("s", inputs=(Field("i", DataSchema(DataType.BOOL),
                                                      required=False),)),)),
     "service 's' input 'i': optional (TSL parameters are always present)"),
    (simple_model(version=SemVer(2, 0, 0)), "version 2.0.0"),
    (simple_model(description="A lamp"), "description"),
    (simple_model(title="Lamp"), "title"),
    (simple_model(vendor="ACME"), "vendor"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "loss"), LOSS_CASES)
def test_inexpressible_parts_are_named(model: ThingModel, loss: str) -> None:
    exported = model_to_tsl(model)
    assert loss in exported.losses
    json.dumps(exported.document)  # still a plain JSON document
    model_from_tsl(exported.document)  # which our importer still reads


def test_int64_is_clamped_to_int32() -> None:
    model = simple_model(properties=(Property("big", DataSchema(DataType.INT64, -(2**40), 5)),))
    specs = model_to_tsl(model).document["properties"][0]["dataType"]["specs"]
    assert specs == {"min": str(INT32_MIN), "max": "5"}


def test_text_enum_exported_as_text() -> None:
    schema = DataSchema(DataType.ENUM, enum=(EnumValue("auto", "A"), EnumValue("heat", "H")))
    data_type = model_to_tsl(simple_model(properties=(Property("m", schema),))).document[
        "properties"
    ][0]["dataType"]
    assert data_type == {"type": "text", "specs": {"length": "4"}}


# --------------------------------------------------------------------------- bad input

BAD_CASES: list[tuple[Any, str, str]] = [
    ([1, 2], "", "expected a JSON object"),
    ({"properties": {"identifier": "p"}}, "properties", "expected a list"),
    ({"properties": ["p"]}, "properties[0]", "expected an object"),
    (prop_doc({"type": "int", "specs": {}}, identifier=None), "properties[0].identifier",
     "missing identifier"),
    (prop_doc({"type": "int", "specs": {}}, identifier="9lives"), "properties[0].identifier",
     "invalid identifier"),
    (prop_doc({"type": "int", "specs": {}}, identifier="a-b"), "properties[0].identifier",
     "invalid identifier"),
    (prop_doc({"type": "int", "specs": {}}, identifier="x" * 51), "properties[0].identifier",
     "invalid identifier"),
    (prop_doc(None), "properties[0]", "missing dataType"),
    (prop_doc("int"), "properties[0].dataType", "expected a dataType object"),
    (prop_doc({"type": "uint8", "specs": {}}), "properties[0].dataType.type", "unknown data type"),
    (prop_doc({"specs": {}}), "properties[0].dataType.type", "unknown data type"),
    (prop_doc({"type": "int", "specs": {"min": "abc"}}), "properties[0].dataType.specs.min",
     "min is not an integer"),
    (prop_doc({"type": "int", "specs": {"min": "1.5"}}), "properties[0].dataType.specs.min",
     "min is not an integer"),
    (prop_doc({"type": "float", "specs": {"max": "nan"}}), "properties[0].dataType.specs.max",
     "max is not a number"),
    (prop_doc({"type": "double", "specs": {"max": "1e999"}}), "properties[0].dataType.specs.max",
     "max is not a number"),
    (prop_doc({"type": "double", "specs": {"step": "1_000"}}),
     "properties[0].dataType.specs.step", "step is not a number"),
    (prop_doc({"type": "int", "specs": {"min": True}}), "properties[0].dataType.specs.min",
     "min is not an integer"),
    (prop_doc({"type": "int", "specs": {"min": "10", "max": "5"}}),
     "properties[0].dataType.specs.min", "min 10 is greater than max 5"),
    (prop_doc({"type": "int", "specs": {"max": "2147483648"}}),
     "properties[0].dataType.specs.max", "max is outside the 32-bit int range"),
    (prop_doc({"type": "int", "specs": {"step": "-1"}}), "properties[0].dataType.specs.step",
     "step is negative"),
    (prop_doc({"type": "int", "specs": {"unit": 5}}), "properties[0].dataType.specs.unit",
     "unit must be a string"),
    (prop_doc({"type": "int", "specs": []}), "properties[0].dataType.specs", "expected an object"),
    (prop_doc({"type": "struct", "specs": {"identifier": "a"}}), "properties[0].dataType.specs",
     "struct specs must be a list of members"),
    (prop_doc({"type": "struct", "specs": [{"identifier": "a", "name": "A"}]}),
     "properties[0].dataType.specs[0]", "missing dataType"),
    (prop_doc({"type": "enum", "specs": {"on": "On"}}), 'properties[0].dataType.specs.on',
     "value is not an integer"),
    (prop_doc({"type": "enum", "specs": {"1": "One", "01": "Also one"}}),
     'properties[0].dataType.specs["01"]', "value listed twice"),
    (prop_doc({"type": "enum", "specs": {"1": 1}}), 'properties[0].dataType.specs["1"]',
     "label must be a string"),
    (prop_doc({"type": "bool", "specs": {"0": "off"}}), "properties[0].dataType.specs",
     "bool specs must label both 0 and 1"),
    (prop_doc({"type": "bool", "specs": {"0": "off", "1": "on", "2": "?"}}),
     "properties[0].dataType.specs", "bool specs must label both 0 and 1"),
    (prop_doc({"type": "text", "specs": {"length": "-1"}}), "properties[0].dataType.specs.length",
     "length is not a count"),
    (prop_doc({"type": "array", "specs": {"size": "3"}}), "properties[0].dataType.specs",
     "array specs need an item type"),
    (prop_doc({"type": "array", "specs": {"item": {"type": "blob"}}}),
     "properties[0].dataType.specs.item.type", "unknown data type"),
    (prop_doc({"type": "int", "specs": {}}, accessMode="w"), "properties[0].accessMode",
     "invalid accessMode"),
    (prop_doc({"type": "int", "specs": {}}, required="yes"), "properties[0].required",
     "expected true or false"),
    (prop_doc({"type": "int", "specs": {}}, name=7), "properties[0].name", "expected a string"),
    ({"events": [{"identifier": "e", "type": "fatal"}]}, "events[0].type", "invalid type"),
    ({"events": [{"identifier": "e", "outputData": {}}]}, "events[0].outputData",
     "expected a list"),
    ({"services": [{"identifier": "s", "callType": "later"}]}, "services[0].callType",
     "invalid callType"),
    ({"services": [{"identifier": "s", "inputData": ["x"]}]}, "services[0].inputData[0]",
     "expected a parameter object"),
    ({"schema": 5}, "schema", "expected the TSL schema URL"),
    ({"profile": []}, "profile", "expected an object"),
    ({"profile": {"productKey": 5}}, "profile.productKey", "expected a string"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "path", "message"), BAD_CASES)
def test_bad_input_names_what_and_where(doc: Any, path: str, message: str) -> None:
    problems = errors_of(doc)
    assert any(p == path and m.startswith(message) for p, m in problems), problems


def test_duplicate_identifiers_are_reported_at_the_second() -> None:
    doc = prop_doc({"type": "int", "specs": {}})
    doc["properties"].append(dict(doc["properties"][0]))
    struct = {"type": "struct", "specs": [
        {"identifier": "a", "dataType": {"type": "int", "specs": {}}},
        {"identifier": "a", "dataType": {"type": "int", "specs": {}}},
    ]}  # fmt: skip
    doc["events"] = [{"identifier": "e", "outputData": [{"identifier": "s", "dataType": struct}]}]
    problems = errors_of(doc)
    assert ("properties[1].identifier", "duplicate identifier (first at properties[0])") in problems
    assert (
        "events[0].outputData[0].dataType.specs[1].identifier",
        "duplicate identifier (first at events[0].outputData[0].dataType.specs[0])",
    ) in problems


def test_every_problem_is_reported_not_only_the_first() -> None:
    doc = {
        "properties": [
            {"identifier": "1bad", "dataType": {"type": "int", "specs": {"min": "abc"}}},
            {"identifier": "ok", "dataType": {"type": "struct", "specs": {}}},
        ],
        "events": [{"identifier": "e", "type": "panic"}],
        "services": [{"identifier": "", "required": 1}],
    }
    paths = {path for path, _ in errors_of(doc)}
    assert paths == {
        "properties[0].identifier",
        "properties[0].dataType.specs.min",
        "properties[1].dataType.specs",
        "events[0].type",
        "services[0].identifier",
        "services[0].required",
    }


def nested_struct(depth: int) -> dict[str, Any]:
    data_type: dict[str, Any] = {"type": "int", "specs": {}}
    for _ in range(depth):
        data_type = {"type": "struct", "specs": [{"identifier": "s", "dataType": data_type}]}
    return data_type


def test_nesting_up_to_the_limit_is_accepted() -> None:
    schema = read_schema(nested_struct(MAX_DEPTH - 1))
    for _ in range(MAX_DEPTH - 1):
        schema = schema.fields[0].schema
    assert schema.type is DataType.INT32


@pytest.mark.parametrize("depth", [MAX_DEPTH, 5000])
def test_deep_nesting_is_refused_without_recursion_error(depth: int) -> None:
    problems = errors_of(prop_doc(nested_struct(depth)))
    assert len(problems) == 1
    path, message = problems[0]
    assert message == f"struct/array nesting deeper than {MAX_DEPTH} levels"
    assert path == "properties[0].dataType" + ".specs[0].dataType" * MAX_DEPTH


def test_deep_array_nesting_is_refused() -> None:
    data_type: dict[str, Any] = {"type": "int", "specs": {}}
    for _ in range(100):
        data_type = {"type": "array", "specs": {"size": "1", "item": data_type}}
    ((_, message),) = errors_of(prop_doc(data_type))
    assert "nesting deeper" in message


def test_deeply_nested_unknown_value_is_refused() -> None:
    value: Any = "leaf"
    for _ in range(tsl.MAX_KEPT_DEPTH + 5):
        value = {"k": value}
    problems = errors_of(prop_doc({"type": "int", "specs": {}}, vendorNote=value))
    path = "properties[0].vendorNote" + ".k" * (tsl.MAX_KEPT_DEPTH + 1)
    assert problems == [(path, f"value nested deeper than {tsl.MAX_KEPT_DEPTH} levels")]


def test_model_does_not_share_the_documents_values() -> None:
    doc = prop_doc({"type": "int", "specs": {}}, vendorNote={"k": [1]})
    doc["functionBlockId"] = {"id": "fb"}
    model = model_from_tsl(doc).model
    doc["properties"][0]["vendorNote"]["k"].append(2)
    doc["functionBlockId"]["id"] = "changed"
    doc["profile"]["productKey"] = "changed"
    assert model.properties[0].extensions == {EXTENSION_KEY: {"vendorNote": {"k": [1]}}}
    written = model_to_tsl(model).document
    written["functionBlockId"]["id"] = "again"
    assert model.extensions[EXTENSION_KEY] == {"functionBlockId": {"id": "fb"}}


def test_a_flood_of_problems_is_capped() -> None:
    bad = [{"identifier": f"{i}x", "dataType": {"type": "int", "specs": {}}} for i in range(1000)]
    with pytest.raises(ModelLoadError) as info:
        model_from_tsl({"properties": bad})
    diagnostics = info.value.diagnostics
    assert len(diagnostics) == tsl.MAX_DIAGNOSTICS + 1
    assert diagnostics[-1].message == f"{1000 - tsl.MAX_DIAGNOSTICS} more problems not listed"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"name": "Not A Name"}, "model name is not namespace/name"),
     ({"version": "one"}, "'one' is not a semantic version")],
)  # fmt: skip
def test_bad_name_or_version_argument(kwargs: dict[str, str], message: str) -> None:
    problems = errors_of({"properties": []}, **kwargs)
    assert any(m.startswith(message) for _, m in problems)


def test_diagnostic_text_carries_file_path_value_and_expectation() -> None:
    with pytest.raises(ModelLoadError) as info:
        model_from_tsl(prop_doc({"type": "int", "specs": {"min": "abc"}}), source="lamp.json")
    text = str(info.value)
    assert text.startswith("lamp.json: error: properties[0].dataType.specs.min: min is not")
    assert "(got 'abc')" in text
    assert 'expected an integer as a string, e.g. "10"' in text


def test_unknown_spec_keys_are_noted_not_fatal() -> None:
    imported = model_from_tsl(prop_doc({"type": "int", "specs": {"precision": "2"}}))
    assert imported.notes == ("properties[0].dataType.specs.precision: unknown key ignored",)


def test_non_standard_array_item_type_is_read_with_note() -> None:
    doc = prop_doc({"type": "array", "specs": {"size": "2", "item": {"type": "bool"}}})
    imported = model_from_tsl(doc)
    assert imported.model.properties[0].schema.items == DataSchema(DataType.BOOL)
    assert any("array of bool is not standard TSL" in n for n in imported.notes)


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("doc", "expected"),
    [({"schema": SCHEMA_URLS[1]}, True),
     ({"properties": [{"identifier": "p", "dataType": {}}]}, True),
     ({"events": [{"identifier": "e", "outputData": []}]}, True),
     ({"services": [{"identifier": "s", "callType": "sync"}]}, True),
     ({"@context": "https://www.w3.org/2022/wot/td/v1.1", "properties": {"p": {}}}, False),
     ({"model": "com.acme/x", "properties": [{"id": "p"}]}, False),
     ([], False), ("tsl", False)],
)  # fmt: skip
def test_is_tsl(doc: Any, expected: bool) -> None:
    assert is_tsl(doc) is expected


def test_public_names() -> None:
    assert all(hasattr(tsl, name) for name in tsl.__all__)
    assert {"model_from_tsl", "model_to_tsl", "is_tsl"} <= set(tsl.__all__)


# --------------------------------------------------------------------------- properties

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
ids = st.builds(
    operator.add, st.sampled_from(LETTERS), st.text(LETTERS + "0123456789", max_size=11)
)
lower = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=5)
model_names = st.builds("{}.{}/{}".format, lower, lower, lower)
texts = st.text(st.characters(codec="utf-8"), max_size=8)
int32s = st.integers(INT32_MIN, INT32_MAX)
finite = st.floats(allow_nan=False, allow_infinity=False)


def ordered(pair: tuple[Any, Any]) -> tuple[Any, Any]:
    low, high = pair
    if low is not None and high is not None and low > high:
        return high, low
    return low, high


@st.composite
def numeric_schemas(draw: st.DrawFn) -> DataSchema:
    data_type = draw(st.sampled_from([DataType.INT32, DataType.FLOAT, DataType.DOUBLE]))
    numbers = int32s if data_type is DataType.INT32 else finite
    steps = st.integers(0, INT32_MAX) if data_type is DataType.INT32 else finite.map(abs)
    low, high = ordered(draw(st.tuples(st.none() | numbers, st.none() | numbers)))
    return DataSchema(data_type, low, high, draw(st.none() | steps),
                      draw(st.none() | texts), draw(st.none() | texts))  # fmt: skip


def enum_schemas() -> st.SearchStrategy[DataSchema]:
    members = st.dictionaries(int32s, texts, max_size=4)
    return members.map(
        lambda m: DataSchema(DataType.ENUM, enum=tuple(EnumValue(v, t) for v, t in m.items()))
    )


def titled(ident: str, title: str) -> str:
    return "" if title == ident else title


def fields_of(schemas: st.SearchStrategy[DataSchema]) -> st.SearchStrategy[tuple[Field, ...]]:
    one = st.builds(lambda i, s, t, d: Field(i, s, titled(i, t), d), ids, schemas, texts, texts)
    return st.lists(one, max_size=3, unique_by=lambda f: f.id).map(tuple)


SCALARS = st.one_of(
    numeric_schemas(),
    st.builds(lambda n: DataSchema(DataType.TEXT, max_length=n), st.none() | st.integers(0, 10240)),
    enum_schemas(),
    st.builds(lambda labels: DataSchema(DataType.BOOL, bool_labels=labels),
              st.none() | st.tuples(texts, texts)),
    st.just(DataSchema(DataType.TIMESTAMP)),
)  # fmt: skip
ARRAY_ITEMS = numeric_schemas() | st.builds(lambda n: DataSchema(DataType.TEXT, max_length=n),
                                            st.none() | st.integers(1, 64))  # fmt: skip


def extend(children: st.SearchStrategy[DataSchema]) -> st.SearchStrategy[DataSchema]:
    structs = fields_of(children).map(lambda f: DataSchema(DataType.STRUCT, fields=f))
    array_items = ARRAY_ITEMS | structs
    arrays = st.builds(lambda item, size: DataSchema(DataType.ARRAY, items=item, max_items=size),
                       array_items, st.none() | st.integers(1, 512))  # fmt: skip
    return structs | arrays


SCHEMAS = st.recursive(SCALARS, extend, max_leaves=6)
tsl_ext = st.sampled_from([{}, {EXTENSION_KEY: {"required": True}}])


@st.composite
def tsl_models(draw: st.DrawFn) -> ThingModel:
    """ThingModels that TSL can express entirely."""
    props = st.builds(
        lambda i, s, t, d, a, r: Property(i, s, titled(i, t), d, a, r),
        ids, SCHEMAS, texts, texts, st.sampled_from(Access), st.booleans(),
    )  # fmt: skip
    events = st.builds(
        lambda i, lv, o, t, d, x: Event(i, lv, o, titled(i, t), d, x),
        ids.filter(lambda i: i != "post"), st.sampled_from(EventLevel), fields_of(SCHEMAS),
        texts, texts, tsl_ext,
    )  # fmt: skip
    services = st.builds(
        lambda i, c, inp, out, t, d, x: Service(i, c, inp, out, titled(i, t), d, x),
        ids.filter(lambda i: i not in ("set", "get")), st.sampled_from(CallType),
        fields_of(SCHEMAS), fields_of(SCHEMAS), texts, texts, tsl_ext,
    )  # fmt: skip
    top = draw(st.sampled_from([{}, {EXTENSION_KEY: {"schema": SCHEMA_URLS[1]}},
                                {EXTENSION_KEY: {"functionBlockId": "fb1"}}]))  # fmt: skip
    return ThingModel(
        name=draw(model_names),
        version=draw(st.builds(SemVer, st.integers(0, 9), st.integers(0, 9), st.integers(0, 9))),
        properties=tuple(draw(st.lists(props, max_size=4, unique_by=lambda p: p.id))),
        events=tuple(draw(st.lists(events, max_size=2, unique_by=lambda e: e.id))),
        services=tuple(draw(st.lists(services, max_size=2, unique_by=lambda s: s.id))),
        extensions=top,
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tsl_models())
def test_expressible_models_round_trip_equal(model: ThingModel) -> None:
    exported = model_to_tsl(model)
    assert all(loss.startswith(("name ", "version ")) for loss in exported.losses)
    assert numeric_specs_are_strings(exported.document)
    text = json.dumps(exported.document, ensure_ascii=False)
    back = model_from_tsl(json.loads(text), name=model.name, version=str(model.version))
    assert back.model == model
    assert model_to_tsl(back.model).document == exported.document


def numeric_specs_are_strings(node: Any) -> bool:
    """True when every min/max/step/length/size in the document is a string."""
    if isinstance(node, list):
        return all(numeric_specs_are_strings(item) for item in node)
    if not isinstance(node, dict):
        return True
    specs = node.get("specs") if "type" in node else None
    if isinstance(specs, dict):
        keys = ("min", "max", "step", "length", "size")
        if not all(isinstance(specs[k], str) for k in keys if k in specs):
            return False
    return all(numeric_specs_are_strings(value) for value in node.values())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)


def slots(node: Any, found: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key) pair of a JSON document."""
    pairs = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in pairs:
        found.append((node, key))
        if isinstance(value, dict | list):
            slots(value, found)
    return found


def outcome(doc: Any) -> Imported | ModelLoadError:
    """The import's result, or the load error it raised (any other exception propagates)."""
    try:
        return model_from_tsl(doc)
    except ModelLoadError as exc:
        return exc


def is_clean_outcome(result: Imported | ModelLoadError) -> bool:
    if isinstance(result, Imported):
        return isinstance(result.model, ThingModel)
    return bool(result.diagnostics) and all(d.message for d in result.diagnostics)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tsl_models(), st.data())
def test_corrupted_documents_load_or_raise_model_load_error(model: ThingModel, data: Any) -> None:
    doc = model_to_tsl(model).document
    container, key = data.draw(st.sampled_from(slots(doc, [])))
    container[key] = data.draw(json_values)
    assert is_clean_outcome(outcome(doc))


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_arbitrary_json_loads_or_raises_model_load_error(doc: Any) -> None:
    assert is_clean_outcome(outcome(doc))


@settings(max_examples=100, deadline=None)
@given(SCHEMAS.filter(lambda s: s.type in (DataType.STRUCT, DataType.ARRAY)))
def test_int64_anywhere_is_a_named_loss(schema: DataSchema) -> None:
    widened = DataSchema(DataType.STRUCT, fields=(Field("w", DataSchema(DataType.INT64)),
                                                  Field("s", schema)))  # fmt: skip
    losses = model_to_tsl(simple_model(properties=(Property("p", widened),))).losses
    assert "property 'p' field 'w': int64 exported as int (32-bit)" in losses
